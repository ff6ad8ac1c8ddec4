//! The preemption points, patched per preemption model (the `preempt`
//! dimension of the kernel's profile, `switcher::profile`), as Linux's
//! PREEMPT_DYNAMIC patches its static calls:
//!
//! | point | none | voluntary | full |
//! |-------|------|-----------|------|
//! | [`cond_resched`] (long kernel loops) | resched | resched | nop |
//! | `might_resched` (before a switchable lock, `sync::spinlock`) | nop | resched | nop |
//! | [`preempt_enable`] reaching 0 with a reschedule pending | nop | nop | preempt |
//! | [`irq_exit_work`] (interrupt return) with a reschedule pending | nop | nop | preempt |
//!
//! Under `full` a woken task that outranks the running one takes the CPU
//! at once (interrupt return, or the end of a preempt-disabled section);
//! under `voluntary` and `none` it waits until the running task blocks,
//! yields, or reaches a point its model keeps. The idle loop and blocking
//! always schedule.
//!
//! Each point is one patchable call (`crate::hv::site`); the build holds the
//! `voluntary` implementations (the build profile is `mainline`).

use super::preempt::preempt_underflow;
use super::scheduler::{flush_deferred_ipis, preempt_schedule, schedule_irqs_off_preempt};
use crate::arch::percpu;
use crate::hv::site::{switch_call0, switch_impls};
use switcher::abi::sites::SiteOp;
use switcher::profile::PreemptModel;

/// Re-enables preemption; if that makes the CPU preemptible and a
/// reschedule is pending, the `preempt_resched` point (full: schedules
/// now, interrupts permitting).
#[inline(always)]
pub fn preempt_enable() {
    percpu::preempt_count_dec();
    let count = percpu::preempt_count();
    if count == 0 && percpu::need_resched() {
        switch_call0!(SiteOp::PreemptResched, nop);
    } else if count > i32::MAX as u32 {
        preempt_underflow();
    }
}

/// The interrupt exit work (`arch::irqflags` runs it, masked, after a
/// batch of handlers, before the unmask, and at an unmask that asked for
/// it): the reschedule IPIs this CPU deferred are sent; if the interrupted
/// code is preemptible (count 0, not itself a handler: it was unmasked, or
/// the interrupt would have waited) and a reschedule is pending, the
/// `irq_exit_resched` point (full: switch now). The interrupted task's
/// frame stays on its stack until it is switched back in.
pub fn irq_exit_work() {
    flush_deferred_ipis();
    if percpu::need_resched() && percpu::preempt_count() == 0 && percpu::irq_depth() == 0 {
        switch_call0!(SiteOp::IrqExitResched, nop);
    }
}

/// An explicit preemption point in a long kernel loop (none, voluntary:
/// schedules if a reschedule is pending and the caller is preemptible).
#[inline(always)]
pub fn cond_resched() {
    switch_call0!(SiteOp::CondResched, resched);
}

/// `resched`: the cond_resched / might_resched implementation.
pub extern "C" fn resched() {
    super::park::point(super::park::IN_PREEMPT);
    if percpu::need_resched() && percpu::preempt_count() == 0 {
        preempt_schedule();
    }
}

/// The point does nothing in this model.
pub extern "C" fn nop() {}

/// `preempt_enable`'s point under `full`.
extern "C" fn preempt_full() {
    preempt_schedule();
}

/// The interrupt return's point under `full` (masked, count 0).
extern "C" fn irq_exit_full() {
    schedule_irqs_off_preempt();
}

switch_impls!(
    (SiteOp::CondResched, PreemptModel::None, resched),
    (SiteOp::CondResched, PreemptModel::Voluntary, resched),
    (SiteOp::CondResched, PreemptModel::Full, nop),
    (SiteOp::MightResched, PreemptModel::None, nop),
    (SiteOp::MightResched, PreemptModel::Voluntary, resched),
    (SiteOp::MightResched, PreemptModel::Full, nop),
    (SiteOp::PreemptResched, PreemptModel::None, nop),
    (SiteOp::PreemptResched, PreemptModel::Voluntary, nop),
    (SiteOp::PreemptResched, PreemptModel::Full, preempt_full),
    (SiteOp::IrqExitResched, PreemptModel::None, nop),
    (SiteOp::IrqExitResched, PreemptModel::Voluntary, nop),
    (SiteOp::IrqExitResched, PreemptModel::Full, irq_exit_full),
);
