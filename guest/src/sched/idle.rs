//! What an idle CPU does: the idle loop of each CPU (its boot context,
//! after boot), under the idle policy (the mode's `idle` dimension,
//! switchable at run time: each pass of the loop reads it). The
//! policies, the haltpoll governor and the polling flag's protocol are
//! `logic::idle`; this file runs them on the run queues, the TSC, the
//! LAPIC timer and the shim's halt.

use super::scheduler::{Switch, schedule_loop};
use super::timer;
use crate::arch::{cpu, percpu};
use crate::hv::{boot_info, mode};
use crate::logic::idle::{self, Bounds, Governor, IdlePolicy, Step};
use core::sync::atomic::Ordering;
use switcher::profile::IdleMode;

/// What idle CPUs do now: the mode's `idle` dimension, as the lock
/// registry page publishes it (a runtime switch changes it with the rest
/// of the mode, the guest's or the VMM's), as the VMM's hint about its
/// host CPUs lets it run (`IdlePolicy::effective`).
pub fn idle_policy() -> IdlePolicy {
    let asked = match mode::idle() {
        IdleMode::Haltpoll => IdlePolicy::HaltPoll,
        IdleMode::Halt => IdlePolicy::Halt,
        IdleMode::Poll => IdlePolicy::Poll,
    };
    asked.effective(boot_info::dedicated_cpus())
}

/// The most the timer advance may reach (the tail it learns is bounded
/// by it: beyond it, a halt wakes late rather than a CPU polling most
/// of each period).
const ADVANCE_MAX_US: u64 = 400;

/// The haltpoll governor's bounds (Linux's haltpoll defaults where it has
/// one: a 200 µs window, grown from 50 µs). The advance is learnt from
/// every halt the early timer ends, as the wake-up cost that one wake in
/// 200 exceeds. It starts high (300 µs, near the tail seen on this
/// project's host) and comes down at most 40 µs a second at 1000 wakes a
/// second: started at the typical cost instead (tens of µs), the first
/// seconds after a boot woke late while it climbed (rt + none p99 of
/// 2.86 s runs, five each, interleaved: 26-184 µs from 60 µs with a 4 µs
/// step, 4-93 µs from 300 µs with an 8 µs step, the host CPU alike).
fn idle_bounds() -> Bounds {
    Bounds {
        window_start: timer::us_to_tsc(50),
        window_max: timer::us_to_tsc(200),
        advance_start: timer::us_to_tsc(300),
        advance_min: timer::us_to_tsc(10),
        advance_max: timer::us_to_tsc(ADVANCE_MAX_US),
        advance_step: timer::us_to_tsc(8),
        advance_one_in: 200,
    }
}

/// Polls need_resched with interrupts on (the polling flag set: wakers
/// skip the IPI) until the TSC reaches `until` (`u64::MAX`: while the
/// idle policy stays `poll`, so that a switch of the policy takes effect
/// without a wake-up); returns masked, with whether need_resched was seen.
fn idle_poll_until(until: u64) -> bool {
    let this = percpu::this();
    cpu::enable_interrupts();
    let woken = idle::poll_while(&this.polling, &this.need_resched, || {
        if until == u64::MAX { idle_policy() == IdlePolicy::Poll } else { timer::now_tsc() < until }
    });
    cpu::disable_interrupts();
    woken
}

/// The idle loop of this CPU (its boot context, after boot): runs the
/// scheduler when something is runnable; else, as the idle policy says
/// (`logic::idle`), halts in the ring-0 shim (masked: an interrupt that
/// arrives wakes the halt and runs at the unmask), polls at CPL3, or
/// both: polls for an adaptive window, then halts with the timer
/// programmed early by the learnt wake-up cost, polls the rest and serves
/// the deadline itself when the TSC reaches it (no interrupt, no re-arm
/// between it and the woken thread: `logic::clockevent`).
pub fn idle_loop() -> ! {
    let bounds = idle_bounds();
    let mut governor = Governor::new(&bounds);
    let this = percpu::this();
    loop {
        cpu::disable_interrupts();
        if percpu::need_resched() {
            schedule_loop(Switch::Preempt);
            cpu::enable_interrupts();
            continue;
        }
        let entered = timer::now_tsc();
        let deadline = timer::idle_next_deadline();
        match governor.plan(idle_policy(), entered, deadline) {
            Step::Poll { until } => {
                // Poll up to the deadline and serve it here (no
                // interrupt); without one, until something is runnable.
                let to = if deadline != 0 { until.min(deadline) } else { until };
                if !idle_poll_until(to) && deadline != 0 {
                    timer::expire_from_idle();
                }
            }
            Step::PollThenHalt { poll_until, early } => {
                if poll_until > entered && idle_poll_until(poll_until) {
                    cpu::enable_interrupts();
                    continue;
                }
                if let Some(e) = early {
                    if timer::now_tsc() >= e {
                        // The window ran up to the early deadline: no halt.
                        if !idle_poll_until(deadline) {
                            timer::expire_from_idle();
                        }
                        cpu::enable_interrupts();
                        continue;
                    }
                    // The hardware timer only: the run queue keeps the real
                    // deadline, which this loop serves by polling once the
                    // early interrupt came.
                    timer::arm_early_for_idle(e);
                }
                if !percpu::need_resched() {
                    this.idle_halts.fetch_add(1, Ordering::Relaxed);
                    cpu::idle_halt();
                }
                cpu::enable_interrupts();
                let woke = timer::now_tsc();
                let until = governor.after_halt(&bounds, entered, woke, early, deadline);
                if until > woke && !percpu::need_resched() {
                    // The early timer woke it: poll the rest and serve the
                    // deadline here.
                    cpu::disable_interrupts();
                    if !idle_poll_until(deadline) {
                        timer::expire_from_idle();
                    }
                }
            }
        }
        cpu::enable_interrupts();
    }
}
