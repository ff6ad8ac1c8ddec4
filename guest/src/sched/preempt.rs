//! Preemption control and context assertions.
//!
//! Per CPU (in `arch::percpu`): the preempt count (0 = preemptible), the
//! hard-IRQ depth, and need_resched. A CPU may switch tasks only when its
//! preempt count and IRQ depth are 0; then a pending need_resched is acted
//! on at three points, which call the scheduler and so live in
//! `scheduler.rs`, above this file (which imports nothing of it):
//! - `preempt_enable` dropping the count to 0 (with interrupts on);
//! - the return from an interrupt, and an unmask that ran deferred
//!   interrupts (`irq_exit_work`);
//! - the idle loop.
//!
//! Every task switches out with preempt count 0 and IRQ depth 0, so the
//! per-CPU counts need no saving per task.
//!
//! Cost: `preempt_disable` is 1 instruction (`add dword ptr gs:[n], 1`),
//! `preempt_enable` 4 on its fast path (sub, jnz, cmp byte, jnz).

use super::task::current;
use crate::arch::{cpu, percpu};

/// Disables preemption on this CPU (nests).
#[inline(always)]
pub fn preempt_disable() {
    percpu::preempt_count_inc();
}

/// An unbalanced `preempt_enable`: a guest panic naming the task.
#[cold]
#[inline(never)]
pub(super) fn preempt_underflow() -> ! {
    let task = if percpu::current_ptr().is_null() { "<no task>" } else { current().name() };
    panic!("preempt count below zero on cpu {} in task '{task}': an unbalanced preempt_enable", percpu::cpu_id());
}

/// This CPU's preempt count.
#[inline]
pub fn preempt_count() -> u32 {
    percpu::preempt_count()
}

/// Whether the running code may be preempted: preempt count 0, not in
/// hard-IRQ context, interrupts unmasked.
pub fn preemptible() -> bool {
    percpu::preempt_count() == 0 && percpu::irq_depth() == 0 && cpu::interrupts_enabled()
}

/// Whether this CPU runs a hard-IRQ handler.
#[inline]
pub fn in_irq() -> bool {
    percpu::irq_depth() != 0
}

/// Entering a hard-IRQ handler (the interrupt dispatch path).
#[inline(always)]
pub fn irq_enter() {
    percpu::irq_depth_inc();
}

/// Leaving a hard-IRQ handler, after its EOI.
#[inline(always)]
pub fn irq_exit() {
    percpu::irq_depth_dec();
}

/// Panics (naming the task and, if one is held, the raw spinlock) when the
/// caller may not block here: preemption disabled, hard-IRQ context, a raw
/// spinlock held, interrupts off, or the idle task. `what` names the
/// blocking operation. Call it at the top of every blocking primitive.
#[track_caller]
pub fn might_sleep(what: &str) {
    let count = percpu::preempt_count();
    let irq = percpu::irq_depth();
    let raw = percpu::raw_locks_held();
    let irqs_on = cpu::interrupts_enabled();
    let p = percpu::current_ptr();
    if count == 0 && irq == 0 && raw == 0 && irqs_on && !p.is_null() && !current().is_idle() {
        return;
    }
    sleep_bug(what, count, irq, raw, irqs_on);
}

#[cold]
#[track_caller]
fn sleep_bug(what: &str, count: u32, irq: u32, raw: u32, irqs_on: bool) -> ! {
    let task = if percpu::current_ptr().is_null() { "<no task>" } else { current().name() };
    let cpu = percpu::cpu_id();
    if raw > 0 {
        let lock = crate::sched::raw_lock::last_taken_name().unwrap_or("?");
        panic!("might_sleep: {what} in task '{task}' on cpu {cpu} while holding raw spinlock '{lock}' ({raw} held)");
    }
    if irq > 0 {
        panic!("might_sleep: {what} in task '{task}' on cpu {cpu} in IRQ context");
    }
    if count > 0 {
        panic!("might_sleep: {what} in task '{task}' on cpu {cpu} with preemption disabled (count {count})");
    }
    if !irqs_on {
        panic!("might_sleep: {what} in task '{task}' on cpu {cpu} with interrupts disabled");
    }
    panic!("might_sleep: {what} in task '{task}' on cpu {cpu}: the idle task never blocks");
}
