//! The soft interrupt mask: `local_irq_disable()` without CLI.
//!
//! At CPL3 the kernel cannot clear IF (CLI and STI raise #GP when IOPL is
//! not honoured, and POPF silently keeps IF), so "interrupts disabled" is
//! a per-CPU word, `PerCpu::irq_masked`, as in Linux powerpc's lazy
//! soft-masking and Xen PV's event-channel upcall mask:
//!
//! - masking is one store (`mov gs:[irq_masked], 1`): no exit, no LAPIC access;
//! - an interrupt that arrives while masked is taken by the CPU, but its
//!   entry (`entry`) only records the vector in `irq_pending` and returns,
//!   without EOI: the LAPIC keeps it in service, which holds back every
//!   vector of its priority class and below until it is handled (no TPR
//!   write needed), and a higher class may still arrive and be recorded;
//! - unmasking is one store and one test of `irq_pending_any`; if anything
//!   was recorded, the vectors run now, highest first (the order the LAPIC
//!   itself would have delivered them, and the order in which their EOIs
//!   retire the in-service bits), masked as a handler always is, then the
//!   exit work (preemption) runs, and the mask drops again.
//!
//! So an interrupt that arrives while masked is never lost and never runs
//! inside the masked region. Handlers run masked, like under an interrupt
//! gate; one that unmasks would be a bug. Only the CPU itself reads or
//! writes its mask and pending words, with single instructions or atomics,
//! so an interrupt can never see them half-updated.
//!
//! Hooks: this module runs the kernel's handler and exit work through two
//! function pointers the kernel sets at boot ([`set_hooks`]), so that the
//! arch layer does not import the kernel's upper layers.

use super::percpu::{self, offset};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::logic::softmask::{self, SoftMaskCpu};
use switcher::abi::MAX_CPUS;

/// The kernel's interrupt handler (`fn(vector)`, runs masked).
static HANDLER: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
/// The kernel's interrupt exit work (`fn()`, runs masked: preemption).
static EXIT_WORK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Sets the handler of every interrupt vector and the exit work that
/// follows a batch of handlers. Once, at boot, before the first unmask.
pub fn set_hooks(handler: fn(u8), exit_work: fn()) {
    HANDLER.store(handler as *mut (), Ordering::Release);
    EXIT_WORK.store(exit_work as *mut (), Ordering::Release);
}

/// Masks interrupts on this CPU. A compiler barrier (no `nomem`): memory
/// accesses after it stay after it.
#[inline(always)]
pub fn disable() {
    // SAFETY: a store to this CPU's own per-CPU word through GS (set at boot).
    unsafe {
        core::arch::asm!("mov dword ptr gs:[{m}], 1", m = const offset::IRQ_MASKED, options(nostack, preserves_flags))
    };
}

/// Unmasks interrupts on this CPU and runs whatever arrived while masked.
#[inline(always)]
pub fn enable() {
    if unmask() {
        replay_on_unmask();
    }
}

/// Drops the mask; returns whether anything was recorded meanwhile. The
/// store comes first: an interrupt after it is taken directly, so a
/// vector recorded before it is seen by the load (the same CPU wrote it).
#[inline(always)]
fn unmask() -> bool {
    let any: u32;
    // SAFETY: this CPU's own per-CPU words through GS.
    unsafe {
        core::arch::asm!(
            "mov dword ptr gs:[{m}], 0",
            "mov {any:e}, dword ptr gs:[{p}]",
            m = const offset::IRQ_MASKED,
            p = const offset::IRQ_PENDING_ANY,
            any = out(reg) any,
            options(nostack, preserves_flags),
        )
    };
    any != 0
}

/// Whether interrupts are masked on this CPU.
#[inline(always)]
pub fn disabled() -> bool {
    let m: u32;
    // SAFETY: a load of this CPU's own per-CPU word through GS.
    unsafe {
        core::arch::asm!("mov {v:e}, dword ptr gs:[{m}]", v = out(reg) m, m = const offset::IRQ_MASKED,
            options(nostack, readonly, preserves_flags))
    };
    m != 0
}

/// Masks interrupts and returns whether they were unmasked before (the
/// "save" of irqsave).
#[inline(always)]
pub fn save() -> bool {
    let was_enabled = !disabled();
    disable();
    was_enabled
}

/// Unmasks interrupts if `was_enabled` (the value [`save`] returned).
#[inline(always)]
pub fn restore(was_enabled: bool) {
    if was_enabled {
        enable();
    }
}

/// Asks for the exit work (preemption check) to run at this CPU's next
/// unmask, as a self-IPI would, without one. Call masked.
#[inline]
pub fn request_exit_work() {
    percpu::this().irq_pending_any.store(1, Ordering::Relaxed);
}

/// Whether any vector is recorded as pending on this CPU (diagnostics, tests).
pub fn pending_vectors() -> [u64; 4] {
    let p = &percpu::this().irq_pending;
    [0, 1, 2, 3].map(|i| p[i].load(Ordering::Relaxed))
}

#[cold]
#[inline(never)]
fn replay_on_unmask() {
    loop {
        disable();
        replay_pending();
        if !unmask() {
            return;
        }
    }
}

/// This CPU's soft-mask words, as the replay core sees them.
struct ThisCpu(&'static percpu::PerCpu);

impl SoftMaskCpu for ThisCpu {
    type U32 = AtomicU32;
    type U64 = AtomicU64;

    fn pending(&self) -> &[AtomicU64; 4] {
        &self.0.irq_pending
    }

    fn pending_any(&self) -> &AtomicU32 {
        &self.0.irq_pending_any
    }

    fn eoi_owed(&self) -> &AtomicU32 {
        &self.0.irq_eoi_owed
    }

    fn handler(&self, vector: u8) {
        let h = HANDLER.load(Ordering::Acquire);
        if !h.is_null() {
            // SAFETY: only `set_hooks` stores here, from a `fn(u8)`.
            let h = unsafe { core::mem::transmute::<*mut (), fn(u8)>(h) };
            h(vector);
        }
    }

    fn exit_work(&self) {
        let w = EXIT_WORK.load(Ordering::Acquire);
        if !w.is_null() {
            // SAFETY: only `set_hooks` stores here, from a `fn()`.
            let w = unsafe { core::mem::transmute::<*mut (), fn()>(w) };
            w();
        }
    }

    fn eoi(&self) {
        super::apic::eoi();
    }

    fn set_replaying(&self, replaying: bool) {
        REPLAYING[percpu::cpu_id() as usize % MAX_CPUS].store(replaying, Ordering::Relaxed);
    }
}

/// Runs every recorded vector, highest first (including those recorded
/// while it runs), then the exit work (`softmask::replay_pending`). Masked.
pub(super) fn replay_pending() {
    softmask::replay_pending(&ThisCpu(percpu::this()));
}

/// Per CPU: a handler runs now for an interrupt that arrived while this
/// CPU was masked (it was deferred to the unmask).
static REPLAYING: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Whether the interrupt handler running now on this CPU serves an
/// interrupt that arrived while interrupts were soft-masked (diagnostics:
/// the latency probe and the scheduler trace record it).
#[inline]
pub fn replaying() -> bool {
    REPLAYING[percpu::cpu_id() as usize % MAX_CPUS].load(Ordering::Relaxed)
}

/// One interrupt taken on an unmasked CPU (from `entry`, now masked): its
/// handler, then whatever was recorded meanwhile, then the exit work
/// (`softmask::on_interrupt`).
pub(super) fn on_interrupt(vector: u8) {
    softmask::on_interrupt(&ThisCpu(percpu::this()), vector);
}
