//! Time: the TSC clock, sleeping until an absolute TSC deadline, and the
//! timer interrupt that wakes sleepers.
//!
//! Each CPU keeps its sleepers on its run queue's timer list (sorted by
//! deadline) and programs its x2APIC TSC-deadline timer, one-shot, to the
//! earliest one. A sleeper is Blocked with `wake_deadline_tsc != 0`; the
//! timer interrupt (or an early `wake_up`) takes it off the list and makes
//! it Runnable. There is no periodic tick.
//!
//! ```text
//! sleep_until(d): [rq lock] insert(d), Blocked, arm if earliest  -> schedule
//! timer IRQ:      [rq lock] now = rdtsc; wake every d <= now; arm next
//! ```
//!
//! Timer IRQ hot path, with one sleeper woken: lock (~12), rdtsc, pop +
//! wake + enqueue (~40), re-arm check (~5), unlock (~8), plus the common
//! interrupt entry/exit and the switch to the woken task.

use super::preempt::might_sleep;
use super::scheduler::{RQS, schedule, set_current_blocked, wake_locked};
use super::task::current;
use crate::arch::{apic, cpu, percpu};
use crate::boot_info;
use core::sync::atomic::Ordering;

/// The TSC, ordered (`lfence; rdtsc; lfence`; RDTSCP faults on this host).
#[inline]
pub fn now_tsc() -> u64 {
    cpu::rdtsc_ordered()
}

/// TSC ticks in `us` microseconds.
pub fn us_to_tsc(us: u64) -> u64 {
    us.saturating_mul(boot_info::tsc_khz()) / 1000
}

/// Microseconds in `ticks` TSC ticks.
pub fn tsc_to_us(ticks: u64) -> u64 {
    ticks.saturating_mul(1000) / boot_info::tsc_khz().max(1)
}

/// Blocks the current task until the TSC reaches `deadline_tsc` (absolute;
/// returns at once if it has passed). Blocking: `might_sleep` applies.
#[track_caller]
pub fn sleep_until(deadline_tsc: u64) {
    might_sleep("sleep_until");
    let me = current();
    let cpu = me.cpu() as usize;
    while now_tsc() < deadline_tsc {
        {
            let mut rq = RQS[cpu].lock_irqsave();
            let earliest = rq.timer_insert(me, deadline_tsc);
            set_current_blocked();
            if earliest && (rq.armed_deadline_tsc == 0 || deadline_tsc < rq.armed_deadline_tsc) {
                rq.armed_deadline_tsc = deadline_tsc;
                apic::set_tsc_deadline(deadline_tsc);
            }
        }
        schedule();
    }
}

/// Sleeps for `us` microseconds from now.
#[track_caller]
pub fn sleep_us(us: u64) {
    sleep_until(now_tsc().saturating_add(us_to_tsc(us)));
}

/// The timer interrupt (`vector::TIMER`; interrupts off, EOI by the
/// caller): wakes every sleeper whose deadline has passed, re-arms for the
/// next one, and marks need_resched if a woken task outranks `curr`.
pub fn on_timer_interrupt() {
    let this = percpu::this();
    let mut rq = RQS[this.cpu_id() as usize].lock();
    let now = now_tsc();
    let armed = rq.armed_deadline_tsc;
    if armed != 0 && now >= armed {
        let late = now - armed;
        this.last_timer_late_tsc.store(late, Ordering::Relaxed);
        if late > this.max_timer_late_tsc.load(Ordering::Relaxed) {
            this.max_timer_late_tsc.store(late, Ordering::Relaxed);
        }
    }
    this.timer_irqs.fetch_add(1, Ordering::Relaxed);
    let curr_prio = rq.curr().prio();
    let mut resched = false;
    while let Some(t) = rq.timer_pop_expired(now) {
        // The deadline is already cleared: wake_locked must not cancel it.
        if wake_locked(&mut rq, t) && t.prio() > curr_prio {
            resched = true;
        }
    }
    // A fired TSC-deadline timer disarms itself: re-arm unless the next
    // deadline is the one still pending (a spurious or early vector).
    let next = rq.next_deadline();
    rq.armed_deadline_tsc = next;
    if next != 0 && (next != armed || now >= armed) {
        apic::set_tsc_deadline(next);
    }
    if resched {
        this.need_resched.store(true, Ordering::Relaxed);
    }
}
