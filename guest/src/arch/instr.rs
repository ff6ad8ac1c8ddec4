//! Single CPU instructions, the same in either ring unless they say
//! otherwise: the current privilege level, the TSC, control registers, the
//! page-table load, the CPUID checks this kernel depends on, and halting
//! for good at CPL0. A leaf of `arch`: the per-CPU data, the shim, the
//! exception path and the console (`hv::console`, which that path prints
//! through) use it; the rest of the kernel reaches it through `cpu`.

use super::msr;
use raw_cpuid::CpuId;

/// The privilege level this code runs at (CS.RPL).
#[inline]
pub fn current_cpl() -> u8 {
    let cs: u16;
    // SAFETY: reading CS has no side effects.
    unsafe { core::arch::asm!("mov {:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags)) };
    (cs & 3) as u8
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
        let efer = msr::rdmsr(msr::IA32_EFER);
        msr::wrmsr(msr::IA32_EFER, efer | EFER_NXE);
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

/// Halts this CPU forever at CPL0, interrupts off (NMIs wake it only to
/// halt again). At CPL3 use `cpu::halt_forever`, which stops through the
/// shim.
pub fn halt_forever_cpl0() -> ! {
    loop {
        // SAFETY: CPL0 (the caller's contract): halting with interrupts
        // off parks this CPU for good.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

// The VMM's serialization point after a switch in one blackout
// (`vmm/src/switch/fast.rs`): it resumes a held CPL3 vCPU here with an
// interrupt frame of the context it stopped in built below its rsp.
// IRETQ is architecturally serializing (Intel SDM vol. 3 "Serializing
// Instructions"; AMD APM vol. 2 "Serializing Instructions"), so the CPU
// serializes before it fetches the code it returns to. Nothing in the
// kernel calls it.
core::arch::global_asm!(
    ".section .text.serialize_iret, \"ax\"",
    ".global switch_serialize_iret",
    "switch_serialize_iret:",
    "iretq",
);
