//! Model-specific registers: `rdmsr`/`wrmsr` and the MSR numbers this
//! kernel uses. Other modules name MSRs only through the constants here.
//!
//! RDMSR and WRMSR need CPL0: only the boot prologue and the ring-0 shim
//! execute them (the kernel at CPL3 asks the shim: `shim::wrmsr`).

/// IA32_APIC_BASE: APIC enable (bit 11) and x2APIC mode (bit 10).
pub const IA32_APIC_BASE: u32 = 0x1b;
/// IA32_GS_BASE: the base of `gs:`, which points at this CPU's per-CPU data.
pub const IA32_GS_BASE: u32 = 0xc000_0101;
/// IA32_EFER: long mode, and NXE (bit 11), which makes PTE bit 63 mean
/// "no execute" instead of a reserved bit.
pub const IA32_EFER: u32 = 0xc000_0080;
/// KVM's steal-time area: guest-physical address | enable bit.
pub const MSR_KVM_STEAL_TIME: u32 = 0x4b56_4d03;
/// KVM's PV EOI word: guest-physical address | enable bit.
pub const MSR_KVM_PV_EOI_EN: u32 = 0x4b56_4d04;

/// Reads an MSR.
///
/// # Safety
/// CPL0 only; `msr` must exist on this CPU (an unknown MSR raises #GP).
#[inline]
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees CPL0 and that the MSR exists; rdmsr
    // touches no memory.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR.
///
/// # Safety
/// CPL0 only; `msr` must exist and `value` must be valid for it; the caller
/// owns the effect (e.g. moving GS base, registering a shared area).
#[inline]
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees CPL0, MSR and value. No `nomem`: some
    // MSR writes make the hypervisor read memory the kernel just wrote.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32,
            in("edx") (value >> 32) as u32, options(nostack, preserves_flags));
    }
}
