//! One CPU's timer device as the scheduler sees it (Linux's clockevent):
//! what the one-shot timer is armed for, and when to write it. Where the
//! hypervisor emulates the LAPIC every write is an exit (tens of µs), so
//! the rules keep writes off the path from a timer interrupt to the
//! thread it wakes, and write only when the armed deadline must change:
//!
//! - **Arm only for an earlier deadline.** A timer armed for an equal or
//!   earlier deadline serves a new sleeper already (Linux's hrtimer
//!   `expires_next`); the interrupt that fires re-arms for the rest.
//! - **Re-arm after the top task, not before it.** A timer interrupt that
//!   wakes a task which outranks what runs and which no sleeper on the
//!   CPU outranks, where what runs can be preempted at once (its preempt
//!   count 0), does not re-arm: that task runs next, and no other
//!   deadline could preempt it before it leaves the CPU. Where what runs
//!   holds preemption off (a mainline lock, a stuck task) the woken task
//!   waits for it: the timer is re-armed at once, while it waits, so the
//!   lockup watchdog's check still fires on a CPU stuck that way. Under
//!   the `voluntary` and `none` preemption models the woken task waits
//!   for the running one's next preemption point (the load passes one
//!   every 50 µs) with the re-arm deferred: writing it then would only
//!   delay that point by the exits. A task that runs long without
//!   reaching a point (the preemption self-test's bounded busy loop)
//!   leaves the timer unarmed as long, and a woken task waits for it
//!   anyway; one that never reached a point would be reported by the
//!   VMM's watchdog, which reads the heartbeats, not by the guest's. The timer is
//!   armed when it leaves ([`Rearm::AfterTop`]), which for a periodic
//!   thread merges with the arming for its own next deadline: one write
//!   per period instead of two, and none between the interrupt and the
//!   thread. (While the deferral lasts a sleeper's deadline can only be
//!   served late if a boost made it outrank the top task meanwhile; it
//!   is served when the top task leaves.)
//!   The interrupt's EOI waits with the re-arm ([`ClockEvent::eoi_owed`]):
//!   where the host does not offer a working PV EOI an EOI is an exit
//!   too. Until then the LAPIC holds back the timer's priority class
//!   (the timer, whose next firing is not armed anyway, and the device
//!   vector: a device interrupt waits for the top task to leave the CPU,
//!   as its threaded handler would in rt); IPIs and host requests, in
//!   higher classes, still come.
//! - **A stale interrupt arms nothing.** An interrupt that the timer raised
//!   for an earlier programming can be delivered after a later write
//!   (the write does not take back an interrupt already raised). One that
//!   comes well before the latest programming can fire (by more than an
//!   eighth of its span, and a fixed slack for the rate's conversion) is
//!   such a one: the timer still counts towards the armed deadline.
//! - **An idle CPU that polls to its deadline serves it itself.** The
//!   haltpoll governor arms the timer early by the halt's wake-up cost and
//!   polls the rest; once that early interrupt came, the idle loop expires
//!   the deadline in software when the TSC reaches it, and the timer stays
//!   unarmed until something leaves the idle loop ([`Rearm::Now`]).
//!
//! The writes happen after the run-queue lock is dropped, with interrupts
//! still off: only this CPU programs its timer, so nothing comes between
//! the decision under the lock and the write.
//!
//! Task identities are opaque `usize`s here (the scheduler's task
//! addresses), so the rules run on the host in unit tests too.

/// A re-arm the scheduler owes the timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rearm {
    None,
    /// At the next context switch, whatever leaves the CPU.
    Now,
    /// When this task (woken by the timer, outranked by no sleeper)
    /// leaves the CPU.
    AfterTop(usize),
}

/// One CPU's timer state (under its run-queue lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockEvent {
    /// TSC at the latest write that armed the timer, and when that
    /// programming fires (0: not armed by a write since the last fire).
    programmed_at: u64,
    fires_at: u64,
    /// The re-arm owed, if any.
    pub rearm: Rearm,
    /// The lockup watchdog's check deadline as of the last timer
    /// interrupt (0: none): a re-arm outside the interrupt includes it.
    pub check: u64,
    /// The idle loop armed the timer early and will serve the deadline
    /// by polling: the early interrupt re-arms nothing.
    pub idle_serves: bool,
    /// The EOI of the timer interrupt that deferred the re-arm, paid
    /// with it.
    pub eoi_owed: bool,
    /// Writes the rules spared, and stale interrupts seen (diagnostics).
    pub spared: u64,
    pub stale: u64,
}

impl Default for ClockEvent {
    fn default() -> Self {
        Self::new()
    }
}

impl ClockEvent {
    pub const fn new() -> Self {
        Self {
            programmed_at: 0,
            fires_at: 0,
            rearm: Rearm::None,
            check: 0,
            idle_serves: false,
            eoi_owed: false,
            spared: 0,
            stale: 0,
        }
    }

    /// Records a write at `now` arming the timer for `deadline`, where the
    /// counter reaches at most `reach` TSC ticks ahead (a farther deadline
    /// fires early, at the end of the range).
    pub fn programmed(&mut self, now: u64, deadline: u64, reach: u64) {
        self.programmed_at = now;
        self.fires_at = deadline.max(now).min(now.saturating_add(reach));
    }

    /// The timer fired, or will not fire for the latest programming.
    pub fn fired(&mut self) {
        self.programmed_at = 0;
        self.fires_at = 0;
    }

    /// Whether an interrupt entering at `now` is a stale one (module doc):
    /// it comes before the latest programming can fire by more than an
    /// eighth of that programming's span plus `slack` TSC ticks.
    pub fn is_stale(&self, now: u64, slack: u64) -> bool {
        if self.fires_at == 0 {
            return false;
        }
        let span = self.fires_at.saturating_sub(self.programmed_at);
        now.saturating_add(span / 8).saturating_add(slack) < self.fires_at
    }

    /// The deadline to arm the timer for, given the earliest sleeper's
    /// (`next`, 0: none) and what it is armed for now (`armed`, 0: none):
    /// `None` when no write is needed (nothing to arm, or armed for an
    /// equal or earlier deadline).
    pub fn arm_deadline(&mut self, next: u64, armed: u64) -> Option<u64> {
        let next = match (next, self.check) {
            (0, c) => c,
            (n, 0) => n,
            (n, c) => n.min(c),
        };
        if next == 0 {
            return None;
        }
        if armed != 0 && armed <= next && self.fires_at != 0 {
            self.spared += 1;
            return None;
        }
        Some(next)
    }

    /// At a context switch away from `prev`: whether the re-arm owed is
    /// due now (and it is then taken).
    pub fn rearm_due(&mut self, prev: usize) -> bool {
        let due = match self.rearm {
            Rearm::None => false,
            Rearm::Now => true,
            Rearm::AfterTop(t) => t == prev,
        };
        if due {
            self.rearm = Rearm::None;
        }
        due
    }

    /// After a timer interrupt (or the idle loop's expiry) woke tasks:
    /// whether to leave the timer unarmed until `top` leaves the CPU. `top`
    /// is the highest woken task with its priority, `curr_prio` the
    /// priority of what runs and `preemptible` whether it can be preempted
    /// at once (its preempt count 0), `sleeper_max` the highest priority
    /// still on the timer list (0: none), asked only when the rest holds
    /// (it walks the list).
    pub fn defer_after(
        &mut self,
        top: Option<(usize, u8)>,
        curr_prio: u8,
        preemptible: bool,
        sleeper_max: impl FnOnce() -> u8,
    ) -> bool {
        match top {
            Some((t, p)) if preemptible && p > curr_prio && p >= sleeper_max() => {
                self.rearm = Rearm::AfterTop(t);
                self.spared += 1;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_only_for_an_earlier_deadline() {
        let mut c = ClockEvent::new();
        assert_eq!(c.arm_deadline(0, 0), None, "nothing to arm");
        assert_eq!(c.arm_deadline(500, 0), Some(500));
        c.programmed(100, 500, 10_000);
        assert_eq!(c.arm_deadline(700, 500), None, "armed earlier already");
        assert_eq!(c.arm_deadline(500, 500), None, "armed for it already");
        assert_eq!(c.arm_deadline(300, 500), Some(300));
        c.fired();
        assert_eq!(c.arm_deadline(700, 500), Some(700), "once fired, the armed deadline is gone");
        c.check = 600;
        assert_eq!(c.arm_deadline(700, 0), Some(600), "the watchdog's check comes first");
        assert_eq!(c.arm_deadline(0, 0), Some(600));
    }

    #[test]
    fn a_stale_interrupt_is_one_well_before_the_programming_fires() {
        let mut c = ClockEvent::new();
        assert!(!c.is_stale(5, 0), "not armed: nothing is stale");
        // Armed at 1000 for 2000 (span 1000).
        c.programmed(1000, 2000, 1 << 40);
        assert!(c.is_stale(1040, 10), "the previous period's interrupt, delivered late");
        assert!(!c.is_stale(1900, 10), "early by the rate's error: the programming's own");
        assert!(!c.is_stale(2000, 10));
        assert!(!c.is_stale(2500, 10));
        // Beyond the counter's range it fires at the end of the range.
        c.programmed(1000, 1_000_000, 500);
        assert!(!c.is_stale(1500, 10), "fired early at the end of its range: re-arm");
    }

    #[test]
    fn the_timer_is_re_armed_when_the_top_task_leaves() {
        let mut c = ClockEvent::new();
        assert!(!c.defer_after(Some((7, 50)), 60, true, || 0), "does not outrank what runs");
        assert!(!c.defer_after(Some((7, 50)), 10, true, || 80), "a sleeper outranks it");
        assert!(!c.defer_after(None, 10, true, || 0));
        assert!(!c.defer_after(Some((7, 99)), 10, false, || 0), "what runs holds preemption off: it waits");
        assert_eq!(c.rearm, Rearm::None);
        assert!(c.defer_after(Some((7, 99)), 10, true, || 99), "equal to the highest sleeper");
        assert!(!c.rearm_due(3), "another task leaving is not the top one");
        assert!(c.rearm_due(7));
        assert!(!c.rearm_due(7), "taken once");
        c.rearm = Rearm::Now;
        assert!(c.rearm_due(3));
    }
}
