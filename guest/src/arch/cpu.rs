//! Single CPU instructions and features: the current privilege level,
//! interrupt masking (the soft mask of `irqflags`), halting, TSC, control
//! registers, and the CPUID checks this kernel depends on.
//!
//! The kernel runs at CPL3, where CLI/STI/HLT/MOV CRn fault: masking is
//! the per-CPU soft mask, halting and control registers go through the
//! ring-0 shim. The functions here say which ring they need.

use super::{irqflags, shim};
use raw_cpuid::CpuId;

/// The privilege level this code runs at (CS.RPL).
#[inline]
pub fn current_cpl() -> u8 {
    let cs: u16;
    // SAFETY: reading CS has no side effects.
    unsafe { core::arch::asm!("mov {:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags)) };
    (cs & 3) as u8
}

/// Masks interrupts on this CPU (the soft mask).
#[inline(always)]
pub fn disable_interrupts() {
    irqflags::disable();
}

/// Unmasks interrupts on this CPU, running those that came meanwhile.
#[inline(always)]
pub fn enable_interrupts() {
    irqflags::enable();
}

/// Whether interrupts are unmasked on this CPU.
#[inline(always)]
pub fn interrupts_enabled() -> bool {
    !irqflags::disabled()
}

/// Masks interrupts; returns whether they were unmasked (irqsave).
#[inline(always)]
pub fn save_and_disable_interrupts() -> bool {
    irqflags::save()
}

/// Unmasks interrupts if `enabled` (the value saved by
/// [`save_and_disable_interrupts`]).
#[inline(always)]
pub fn restore_interrupts(enabled: bool) {
    irqflags::restore(enabled);
}

/// Halts until an interrupt arrives (returns at once if one is pending).
/// Call masked: the interrupt runs when the caller unmasks. An entry into
/// the ring-0 shim (counted as `halt`).
#[inline]
pub fn idle_halt() {
    shim::halt();
}

/// Halts this CPU forever, in either ring (NMIs wake it only to halt again).
pub fn halt_forever() -> ! {
    if current_cpl() == 3 {
        shim::stop();
    }
    loop {
        // SAFETY: CPL0 (checked above): halting with interrupts off parks
        // this CPU for good.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Reads the TSC, ordered against the instructions around it (`lfence`
/// on both sides). `rdtscp` is not used: it fails where ring 0 is emulated.
#[inline]
pub fn rdtsc_ordered() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: lfence/rdtsc read the time-stamp counter (allowed at CPL3:
    // CR4.TSD is off); no memory effects.
    unsafe {
        core::arch::asm!("lfence", "rdtsc", "lfence", out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// CR2: the linear address of the last page fault. CPL0 only (the
/// exception path runs there).
#[inline]
pub fn read_cr2() -> u64 {
    debug_assert_eq!(current_cpl(), 0);
    let cr2: u64;
    // SAFETY: reading CR2 at CPL0 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    cr2
}

/// CR0.WP: supervisor writes honour read-only pages.
const CR0_WP: u64 = 1 << 16;
/// EFER.NXE: PTE bit 63 is "no execute".
const EFER_NXE: u64 = 1 << 11;

/// Turns on what the kernel's page tables rely on (EFER.NXE, CR0.WP) and
/// loads `pml4` into CR3 (which flushes the TLB). The shim's
/// SET_PAGE_TABLES service, at CPL0.
///
/// # Safety
/// CPL0; `pml4` must be a complete page-table hierarchy that maps
/// everything this CPU uses (code, stacks, per-CPU data, tables) at the
/// same address.
pub unsafe fn load_page_tables(pml4: u64) {
    // SAFETY: NXE must be on before a table with bit 63 set is walked, WP
    // only tightens permissions; the caller vouches for the tables.
    unsafe {
        let efer = super::msr::rdmsr(super::msr::IA32_EFER);
        super::msr::wrmsr(super::msr::IA32_EFER, efer | EFER_NXE);
        let mut cr0: u64;
        core::arch::asm!("mov {}, cr0", out(reg) cr0, options(nomem, nostack, preserves_flags));
        cr0 |= CR0_WP;
        core::arch::asm!("mov cr0, {}", in(reg) cr0, options(nostack, preserves_flags));
        core::arch::asm!("mov cr3, {}", in(reg) pml4, options(nostack, preserves_flags));
    }
}

/// Whether CPUID reports the NX bit (CPUID.80000001h:EDX bit 20).
pub fn has_nx() -> bool {
    CpuId::new().get_extended_processor_and_feature_identifiers().is_some_and(|f| f.has_execute_disable())
}

/// Halts (unmasked between tries) until `done()` holds, checking it masked
/// so that a wake-up between the check and the halt is not lost (the shim
/// does not halt while a vector is pending). Returns masked.
pub fn halt_until(mut done: impl FnMut() -> bool) {
    loop {
        disable_interrupts();
        if done() {
            return;
        }
        idle_halt();
        enable_interrupts();
    }
}

/// Executes a serializing instruction (`cpuid`, allowed at CPL3):
/// instruction fetch after it sees code modified before it
/// (cross-modifying code, SDM vol. 3 8.1.3).
pub fn serialize() {
    // SAFETY: cpuid leaf 0 only reads identification registers; rbx is
    // saved and restored around it because LLVM reserves it.
    unsafe {
        core::arch::asm!(
            "mov {tmp}, rbx",
            "cpuid",
            "mov rbx, {tmp}",
            tmp = out(reg) _,
            inout("eax") 0u32 => _,
            out("ecx") _,
            out("edx") _,
            options(nostack, preserves_flags),
        );
    }
}
