//! Model-specific registers: `rdmsr`/`wrmsr` and the MSR numbers this
//! kernel uses. Other modules name MSRs only through the constants here.

/// IA32_APIC_BASE: APIC enable (bit 11) and x2APIC mode (bit 10).
pub const IA32_APIC_BASE: u32 = 0x1b;
/// IA32_GS_BASE: the base of `gs:`, which points at this CPU's per-CPU data.
pub const IA32_GS_BASE: u32 = 0xc000_0101;

/// IA32_EFER: long mode, and NXE (bit 11), which makes PTE bit 63 mean
/// "no execute" instead of a reserved bit.
pub const IA32_EFER: u32 = 0xc000_0080;
/// IA32_TSC_DEADLINE: the x2APIC timer fires when the TSC reaches it (0
/// disarms), in TSC-deadline mode.
pub const IA32_TSC_DEADLINE: u32 = 0x6e0;

/// x2APIC registers (MSR 0x800 + xAPIC offset / 16).
pub const X2APIC_ID: u32 = 0x802;
pub const X2APIC_TPR: u32 = 0x808;
pub const X2APIC_EOI: u32 = 0x80b;
pub const X2APIC_SVR: u32 = 0x80f;
pub const X2APIC_ICR: u32 = 0x830;
pub const X2APIC_LVT_TIMER: u32 = 0x832;
pub const X2APIC_SELF_IPI: u32 = 0x83f;

/// Reads an MSR.
///
/// # Safety
/// `msr` must exist on this CPU (an unknown MSR raises #GP).
#[inline]
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists; rdmsr touches no memory.
    unsafe {
        core::arch::asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR.
///
/// # Safety
/// `msr` must exist and `value` must be valid for it; the caller owns the
/// effect (e.g. moving GS base, enabling the APIC, sending an IPI).
#[inline]
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees MSR and value are valid. No `nomem`:
    // some MSR writes (ICR, EOI) order against memory the other side reads.
    unsafe {
        core::arch::asm!("wrmsr", in("ecx") msr, in("eax") value as u32,
            in("edx") (value >> 32) as u32, options(nostack, preserves_flags));
    }
}
