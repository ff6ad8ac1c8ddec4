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
//! The advance is a tail of the wake-up cost, not its mean: a halted
//! vCPU is a sleeping host thread, and how late the host runs it again has
//! a long tail (here p50 tens of µs, 1 wake in 100 several hundred). An
//! advance sized to the mean leaves every wake in that tail late by the
//! rest, and a CPU's p99 is made of those. So the governor tracks a high
//! quantile online, with one word and no history (the "frugal streaming"
//! quantile estimate of Ma, Muthukrishnan and Sandler): up by `step` on a
//! wake later than it, down by `step / (n - 1)` on one that was not, which
//! settles where one wake in `n` is later. One stall of the host moves it
//! one step, not to the stall's size.
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

impl IdlePolicy {
    /// The policy an idle CPU runs when the mode asks for this one:
    /// `haltpoll` polls only when every vCPU has a host CPU of its own
    /// (`dedicated_cpus`, the VMM's hint: Linux's `cpuidle-haltpoll` needs
    /// `KVM_HINTS_REALTIME`); on an overcommitted host it halts at once,
    /// since the host CPU it would poll on is one another vCPU of the same
    /// VM waits for. `poll` is an explicit choice and polls either way.
    pub fn effective(self, dedicated_cpus: bool) -> Self {
        match self {
            Self::HaltPoll if !dedicated_cpus => Self::Halt,
            p => p,
        }
    }
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
    /// How far one wake later than the advance raises it.
    pub advance_step: u64,
    /// The quantile the advance tracks: one wake in `advance_one_in` is
    /// later than it (at least 2).
    pub advance_one_in: u64,
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
    /// The timer advance: a high quantile of the halt wake-up cost, learnt.
    advance: u64,
}

impl Governor {
    pub const fn new(b: &Bounds) -> Self {
        Self { window: 0, advance: b.advance_start }
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
                // it first). The advance moves toward its quantile.
                let late = woke - e;
                let down = (b.advance_step / b.advance_one_in.saturating_sub(1).max(1)).max(1);
                self.advance = if late > self.advance {
                    self.advance.saturating_add(b.advance_step)
                } else {
                    self.advance.saturating_sub(down)
                }
                .clamp(b.advance_min, b.advance_max);
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

    #[test]
    fn haltpoll_polls_only_on_dedicated_host_cpus() {
        use IdlePolicy::*;
        assert_eq!(HaltPoll.effective(true), HaltPoll);
        assert_eq!(HaltPoll.effective(false), Halt);
        for p in [Halt, Poll] {
            assert_eq!((p.effective(true), p.effective(false)), (p, p));
        }
    }

    const B: Bounds = Bounds {
        window_start: 50,
        window_max: 200,
        advance_start: 30,
        advance_min: 10,
        advance_max: 150,
        advance_step: 4,
        advance_one_in: 101,
    };

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

    /// Advance bounds at a TSC-like scale (a step divides into its down steps).
    const Q: Bounds = Bounds {
        window_start: 5000,
        window_max: 20_000,
        advance_start: 3000,
        advance_min: 1000,
        advance_max: 15_000,
        advance_step: 400,
        advance_one_in: 101,
    };

    /// One early-timer wake `late` ticks after the early timer.
    fn wake(g: &mut Governor, k: u64, late: u64) {
        let base = k * 1_000_000;
        let deadline = base + 500_000 + g.advance();
        let poll_to = g.after_halt(&Q, base, base + 500_000 + late, Some(base + 500_000), deadline);
        assert_eq!(poll_to, (deadline + g.advance()).max(base + 500_000 + late), "it polls on past the real deadline");
    }

    #[test]
    fn the_advance_learns_a_tail_quantile_of_the_lateness_within_its_bounds() {
        // Lateness 2000 on 97 wakes in 100 and 12000 on 3 (a host that is
        // slow 3% of the time): an advance at the mean (2300) would leave
        // those 3 late by about 10000; the advance settles in the tail,
        // where about one wake in 101 is later, so at 12000 or just below.
        let mut g = Governor::new(&Q);
        for k in 0..20_000u64 {
            wake(&mut g, k, if k % 100 < 3 { 12_000 } else { 2000 });
        }
        assert!((11_000..=12_400).contains(&g.advance()), "{}", g.advance());
        // All wakes at 2000 now: it comes down to them, slowly (one step
        // per 100 wakes), and one stall moves it one step only.
        for k in 0..40_000u64 {
            wake(&mut g, k, 2000);
        }
        assert!((2000..=2400).contains(&g.advance()), "{}", g.advance());
        let settled = g.advance();
        wake(&mut g, 0, 500_000);
        assert_eq!(g.advance(), settled + 400, "one stall, one step");
        // Bounded.
        for k in 0..1000u64 {
            wake(&mut g, k, 100_000);
        }
        assert_eq!(g.advance(), 15_000, "bounded by advance_max");
        for k in 0..100_000u64 {
            wake(&mut g, k, 0);
        }
        assert_eq!(g.advance(), 1000, "bounded by advance_min");
        // A wake by something else teaches nothing.
        let before = g;
        assert_eq!(g.after_halt(&Q, 0, 10, Some(500), 600), 10);
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
