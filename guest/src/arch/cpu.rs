//! The kernel's CPU interface: interrupt masking (the soft mask of
//! `irqflags`), halting, and the single instructions of `instr` (the
//! current privilege level, TSC, CPUID), re-exported here.
//!
//! The kernel runs at CPL3, where CLI/STI/HLT/MOV CRn fault: masking is
//! the per-CPU soft mask, halting and control registers go through the
//! ring-0 shim. The functions here say which ring they need.

use super::{instr, irqflags, shim};

pub use instr::{current_cpl, has_nx, rdtsc_ordered, serialize};

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
    instr::halt_forever_cpl0()
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
