//! Single CPU instructions and features: interrupt flag, halting, TSC,
//! control registers, and the CPUID checks this kernel depends on.

use raw_cpuid::CpuId;

/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

/// Disables interrupts.
#[inline]
pub fn disable_interrupts() {
    // SAFETY: `cli` only clears RFLAGS.IF; it has no memory effects, and
    // acts as a compiler barrier (no `nomem`) so code after it is not
    // hoisted above.
    unsafe { core::arch::asm!("cli", options(nostack)) };
}

/// Enables interrupts and halts until the next one, as one sequence: the
/// `sti` interrupt shadow covers the `hlt`, so an interrupt that became
/// pending after the caller's check (done with interrupts off) still wakes
/// this `hlt` instead of being taken before it. Returns with interrupts on.
#[inline]
pub fn enable_interrupts_and_halt() {
    // SAFETY: `sti; hlt` parks the CPU until an interrupt; handlers return
    // here. No `nomem`: state changed by handlers must be re-read after.
    unsafe { core::arch::asm!("sti", "hlt", options(nostack)) };
}

/// Disables interrupts and halts forever (NMIs wake it only to halt again).
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: halting with interrupts off parks this CPU for good.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Whether interrupts are enabled (RFLAGS.IF).
#[inline]
pub fn interrupts_enabled() -> bool {
    let rflags: u64;
    // SAFETY: `pushfq; pop` reads RFLAGS through the stack the asm owns.
    unsafe { core::arch::asm!("pushfq", "pop {}", out(reg) rflags, options(nomem, preserves_flags)) };
    rflags & RFLAGS_IF != 0
}

/// Reads the TSC, ordered against the instructions around it (`lfence`
/// on both sides). `rdtscp` is not used: it fails where ring 0 is emulated.
#[inline]
pub fn rdtsc_ordered() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: lfence/rdtsc read the time-stamp counter; no memory effects.
    unsafe {
        core::arch::asm!("lfence", "rdtsc", "lfence", out("eax") lo, out("edx") hi,
            options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// CR2: the linear address of the last page fault.
#[inline]
pub fn read_cr2() -> u64 {
    let cr2: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { core::arch::asm!("mov {}, cr2", out(reg) cr2, options(nomem, nostack, preserves_flags)) };
    cr2
}

/// Reads RFLAGS.IF and disables interrupts: the "save" of irqsave.
#[inline]
pub fn save_and_disable_interrupts() -> bool {
    let rflags: u64;
    // SAFETY: `pushfq; pop; cli` reads RFLAGS through the stack the asm
    // owns and clears IF. A compiler barrier (no `nomem`), like `cli`.
    unsafe { core::arch::asm!("pushfq", "pop {}", "cli", out(reg) rflags) };
    rflags & RFLAGS_IF != 0
}

/// Re-enables interrupts if `enabled` (the value saved by
/// [`save_and_disable_interrupts`]).
#[inline]
pub fn restore_interrupts(enabled: bool) {
    if enabled {
        enable_interrupts();
    }
}

/// CR0.WP: supervisor writes honour read-only pages.
const CR0_WP: u64 = 1 << 16;
/// EFER.NXE: PTE bit 63 is "no execute".
const EFER_NXE: u64 = 1 << 11;

/// Turns on what the kernel's page tables rely on (EFER.NXE, CR0.WP) and
/// loads `pml4` into CR3 (which flushes the TLB).
///
/// # Safety
/// `pml4` must be a complete page-table hierarchy that maps everything
/// this CPU uses (code, stacks, per-CPU data, tables) at the same address.
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

/// Whether CPUID reports the APIC timer's TSC-deadline mode (CPUID.1:ECX bit 24).
pub fn has_tsc_deadline() -> bool {
    CpuId::new().get_feature_info().is_some_and(|f| f.has_tsc_deadline())
}

/// Whether CPUID reports x2APIC support (CPUID.1:ECX bit 21).
pub fn has_x2apic() -> bool {
    CpuId::new().get_feature_info().is_some_and(|f| f.has_x2apic())
}

/// Enables interrupts.
#[inline]
pub fn enable_interrupts() {
    // SAFETY: `sti` sets RFLAGS.IF; the IDT and APIC are set up before any
    // caller runs with interrupts on. Compiler barrier (no `nomem`).
    unsafe { core::arch::asm!("sti", options(nostack)) };
}

/// Halts (interrupts on) until `done()` holds, checking it with interrupts
/// off so that a wake-up between the check and the `hlt` is not lost.
/// Returns with interrupts off.
pub fn halt_until(mut done: impl FnMut() -> bool) {
    loop {
        disable_interrupts();
        if done() {
            return;
        }
        enable_interrupts_and_halt();
    }
}

/// Executes a serializing instruction (`cpuid`): instruction fetch after it
/// sees code modified before it (cross-modifying code, SDM vol. 3 8.1.3).
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
