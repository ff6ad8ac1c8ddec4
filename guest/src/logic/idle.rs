//! What an idle CPU does, as logic the host can test: the idle policies,
//! the haltpoll governor (how long to poll before halting, and how early
//! to program the timer so that a halted CPU is awake when its deadline
//! comes), and the polling flag that lets a waker skip the reschedule IPI
//! to a CPU that polls.
//!
//! Why: on this platform a CPU halted in the ring-0 shim wakes through the
//! hypervisor's halt path and the emulated shim exit, tens of µs slower
//! than a CPU that polls at CPL3, where an interrupt arrives as it does to
//! any busy vCPU. Polling all the time costs a host core per vCPU
//! (`idle=poll`); the governor polls only where it pays (anchors: Linux's
//! `cpuidle-haltpoll` governor with `guest_halt_poll_ns`, grown on a wake
//! that came soon after the halt and shrunk on a long one; KVM's
//! `lapic_timer_advance_ns`, which fires the timer early by the measured
//! injection cost and waits out the rest).
//!
//! ```text
//!  idle entry (masked), next timer deadline D (0: none), now T
//!    D != 0 and D - T <= advance:  poll until D + advance       (no halt: it would wake late)
//!    else poll for `window` (at most until D - advance), then
//!         halt with the timer programmed for D - advance (when D != 0);
//!         woken by that early timer: poll until D + advance, and learn
//!         `advance` from how late the halt woke
//! ```
//!
//! The polling flag ([`poll_while`], [`kick`]): an idle CPU sets
//! it before it polls and clears it before it halts; a waker sets the
//! target's need_resched and sends the IPI only if the target was not
//! polling (Linux's `TIF_POLLING_NRFLAG` and `set_nr_if_polling`). Both
//! sides store, then load the other's flag, with sequentially consistent
//! orderings (on x86 the stores are `xchg`, full barriers): either the
//! waker sees the flag set (and the poller, which loads need_resched after
//! its store, sees the wake before it can halt), or the poller had cleared
//! it (and the waker sends the IPI). The model checker runs these two
//! functions (`model/tests/idle.rs`).

use core::sync::atomic::Ordering;

use super::atomic::Atomic;

/// What an idle CPU does (the mode's `idle` dimension,
/// `switcher::profile::IdleMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdlePolicy {
    /// Halt in the shim at once (the cheapest for the host, the slowest wake).
    Halt,
    /// Poll adaptively, halt with the timer programmed early (the default).
    HaltPoll,
    /// Poll at CPL3 for ever: a host core per vCPU.
    Poll,
}

/// The governor's bounds, in TSC ticks (the kernel converts them from µs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The first poll window after a halt that ended soon (Linux:
    /// `guest_halt_poll_grow_start`).
    pub window_start: u64,
    /// The longest poll window (Linux: `guest_halt_poll_ns`).
    pub window_max: u64,
    /// The timer advance before anything was measured, and its bounds.
    pub advance_start: u64,
    pub advance_min: u64,
    pub advance_max: u64,
}

/// What the idle CPU does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Poll need_resched (interrupts on) until the TSC reaches `until`.
    Poll { until: u64 },
    /// Poll until `poll_until` (nothing when it is `now`), then halt,
    /// the timer programmed first for `early` when given.
    PollThenHalt { poll_until: u64, early: Option<u64> },
}

/// One CPU's governor state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Governor {
    /// The poll window before a halt.
    window: u64,
    /// The timer advance: the halt wake-up cost, learnt.
    advance: u64,
    /// The halt wake-ups' lateness, averaged (exponentially, weight 1/8).
    late_avg: u64,
}

impl Governor {
    pub const fn new(b: &Bounds) -> Self {
        Self { window: 0, advance: b.advance_start, late_avg: b.advance_start }
    }

    pub fn window(&self) -> u64 {
        self.window
    }

    pub fn advance(&self) -> u64 {
        self.advance
    }

    /// The step at idle entry at `now`, with the CPU's next timer deadline
    /// (0: none armed).
    pub fn plan(&self, policy: IdlePolicy, now: u64, deadline: u64) -> Step {
        match policy {
            IdlePolicy::Poll => Step::Poll { until: u64::MAX },
            IdlePolicy::Halt => Step::PollThenHalt { poll_until: now, early: None },
            IdlePolicy::HaltPoll => {
                if deadline != 0 && deadline.saturating_sub(now) <= self.advance {
                    // A halt now would wake after the deadline: wait for it here.
                    return Step::Poll { until: deadline.saturating_add(self.advance) };
                }
                let mut poll_until = now.saturating_add(self.window);
                let early = (deadline != 0).then(|| deadline - self.advance);
                if let Some(e) = early {
                    poll_until = poll_until.min(e);
                }
                Step::PollThenHalt { poll_until, early }
            }
        }
    }

    /// A halt ended at `woke`; it began at `halted` after an idle entry at
    /// `entered`, with the timer programmed for `early` (when it was).
    /// Returns how long to poll after it (until the real deadline and the
    /// advance again, when the early timer woke it: the real one comes
    /// next), and learns from it.
    pub fn after_halt(&mut self, b: &Bounds, entered: u64, woke: u64, early: Option<u64>, deadline: u64) -> u64 {
        let idle = woke.saturating_sub(entered);
        // The window (Linux's haltpoll governor): a wake soon after the
        // halt would have been caught by a longer poll; a long sleep says
        // polling would only have burned the host's time.
        if idle <= b.window_max {
            self.window =
                if self.window == 0 { b.window_start } else { self.window.saturating_mul(2) }.min(b.window_max);
        } else {
            self.window /= 2;
            if self.window < b.window_start {
                self.window = 0;
            }
        }
        match early {
            Some(e) if woke >= e => {
                // Woken once the early timer had expired: how late is the
                // halt's wake-up cost (or less, when something else woke
                // it first); the advance covers the average with half again.
                let late = woke - e;
                self.late_avg = self.late_avg - self.late_avg / 8 + late / 8;
                self.advance = (self.late_avg + self.late_avg / 2).clamp(b.advance_min, b.advance_max);
                deadline.saturating_add(self.advance).max(woke)
            }
            _ => woke,
        }
    }
}

/// The idle side of the polling flag: sets `polling`, polls while
/// `keep_polling()` says so and `need_resched` is clear, clears `polling`,
/// and returns whether need_resched was seen set (if not, the caller may
/// halt: a waker that came meanwhile sends the IPI).
pub fn poll_while<A: Atomic<bool>>(polling: &A, need_resched: &A, mut keep_polling: impl FnMut() -> bool) -> bool {
    polling.store(true, Ordering::SeqCst);
    while !need_resched.load(Ordering::SeqCst) && keep_polling() {
        core::hint::spin_loop();
    }
    polling.store(false, Ordering::SeqCst);
    need_resched.load(Ordering::SeqCst)
}

/// What a waker must do after [`kick`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kick {
    /// need_resched was set already: whoever set it sent what it needed.
    AlreadyAsked,
    /// The target polls: it sees the flag by itself, no IPI.
    Polling,
    /// Send the reschedule IPI.
    Ipi,
}

/// The waker's side: sets the target's `need_resched` and says whether
/// the target needs the reschedule IPI.
pub fn kick<A: Atomic<bool>>(need_resched: &A, polling: &A) -> Kick {
    if need_resched.swap(true, Ordering::SeqCst) {
        Kick::AlreadyAsked
    } else if polling.load(Ordering::SeqCst) {
        Kick::Polling
    } else {
        Kick::Ipi
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::AtomicBool;

    const B: Bounds =
        Bounds { window_start: 50, window_max: 200, advance_start: 30, advance_min: 10, advance_max: 150 };

    #[test]
    fn a_deadline_nearer_than_the_advance_is_polled_for() {
        let g = Governor::new(&B);
        assert_eq!(g.plan(IdlePolicy::HaltPoll, 1000, 1020), Step::Poll { until: 1050 });
        // Farther: halt with the timer programmed early by the advance.
        assert_eq!(
            g.plan(IdlePolicy::HaltPoll, 1000, 2000),
            Step::PollThenHalt { poll_until: 1000, early: Some(1970) }
        );
        // No timer: halt (the window is 0 until a short sleep grows it).
        assert_eq!(g.plan(IdlePolicy::HaltPoll, 1000, 0), Step::PollThenHalt { poll_until: 1000, early: None });
        assert_eq!(g.plan(IdlePolicy::Halt, 1000, 1020), Step::PollThenHalt { poll_until: 1000, early: None });
        assert_eq!(g.plan(IdlePolicy::Poll, 1000, 0), Step::Poll { until: u64::MAX });
    }

    #[test]
    fn the_window_grows_on_short_sleeps_and_shrinks_on_long_ones() {
        let mut g = Governor::new(&B);
        g.after_halt(&B, 0, 100, None, 0);
        assert_eq!(g.window(), 50);
        g.after_halt(&B, 0, 100, None, 0);
        g.after_halt(&B, 0, 100, None, 0);
        assert_eq!(g.window(), 200, "bounded by window_max");
        g.after_halt(&B, 0, 10_000, None, 0);
        assert_eq!(g.window(), 100);
        g.after_halt(&B, 0, 10_000, None, 0);
        g.after_halt(&B, 0, 10_000, None, 0);
        assert_eq!(g.window(), 0, "below window_start it stops polling");
        // The window never polls past the early timer.
        g.after_halt(&B, 0, 100, None, 0);
        assert_eq!(
            g.plan(IdlePolicy::HaltPoll, 1000, 1060),
            Step::PollThenHalt { poll_until: 1030, early: Some(1030) }
        );
    }

    #[test]
    fn the_advance_learns_the_halts_lateness_within_its_bounds() {
        let mut g = Governor::new(&B);
        // Woken 80 ticks after the early timer, many times: the advance
        // approaches 1.5 x 80 = 120.
        for k in 0..64u64 {
            let base = k * 10_000;
            let deadline = base + 5000 + g.advance();
            let poll_to = g.after_halt(&B, base, base + 5000 + 80, Some(base + 5000), deadline);
            assert_eq!(poll_to, (deadline + g.advance()).max(base + 5080), "it polls on past the real deadline");
        }
        assert!((115..=120).contains(&g.advance()), "{}", g.advance());
        for k in 0..64u64 {
            let base = 1_000_000 + k * 10_000;
            g.after_halt(&B, base, base + 5000 + 1000, Some(base + 5000), base + 5000 + g.advance() + 2000);
        }
        assert_eq!(g.advance(), 150, "bounded by advance_max");
        // A wake by something else teaches nothing.
        let before = g;
        assert_eq!(g.after_halt(&B, 0, 10, Some(500), 600), 10);
        assert_eq!(g.advance(), before.advance());
    }

    #[test]
    fn a_polling_target_needs_no_ipi_a_halting_one_does() {
        let (nr, polling) = (AtomicBool::new(false), AtomicBool::new(true));
        assert_eq!(kick(&nr, &polling), Kick::Polling);
        let (nr, polling) = (AtomicBool::new(false), AtomicBool::new(false));
        assert_eq!(kick(&nr, &polling), Kick::Ipi);
        assert_eq!(kick(&nr, &polling), Kick::AlreadyAsked, "the first waker's IPI serves");
        let (nr, polling) = (AtomicBool::new(true), AtomicBool::new(false));
        assert!(poll_while(&polling, &nr, || true));
        assert!(!polling.load(Ordering::SeqCst));
        let nr = AtomicBool::new(false);
        let mut n = 0;
        assert!(!poll_while(&polling, &nr, || {
            n += 1;
            n < 10
        }));
    }
}
