//! One host CPU's noise record: every wake-up of its probe thread counted,
//! its lateness in a bounded distribution, and the wake-ups later than the
//! stall threshold kept as intervals of host TSC ticks in a bounded ring,
//! so that a window of time can be asked how long the host stalled across
//! it ([`CpuNoise::stall_across`]). Counts, the total stall time and the
//! worst stall are exact however long the run; the ring keeps the newest
//! [`STALL_RING`] stalls and says when a window reaches back past what it
//! forgot (the answer is then a lower bound).
//!
//! ```text
//!   deadline            wake-up (rdtsc)
//!      |<---- lateness ---->|          lateness >= threshold: a stall
//!      [start_tick, end_tick)         = end_tick - lateness in ticks
//! ```
//!
//! Pure accounting: no clock, no thread; `probe.rs` feeds it.

use std::collections::VecDeque;

use crate::switch::distribution::Distribution;

/// Stall intervals kept per host CPU (the newest; older ones are counted
/// in the totals and `forgotten`). At one stall a second, a quarter of an
/// hour of them; 16 bytes each.
pub const STALL_RING: usize = 1024;

/// A host stall: the probe's deadline to its late wake-up, host TSC ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stall {
    pub start_tick: u64,
    pub end_tick: u64,
}

/// How long the host stalled across a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Across {
    /// Stall time inside the window.
    pub ns: u64,
    /// False when the window reaches before the oldest stall the ring still
    /// holds, or outside the time the probe ran: `ns` is then a lower bound.
    pub complete: bool,
}

/// One host CPU's probe record.
#[derive(Clone, Debug)]
pub struct CpuNoise {
    /// TSC ticks per ms of the host (the TSC rate, kHz).
    khz: u64,
    threshold_ns: u64,
    pub wakeups: u64,
    /// Periods that passed without a wake-up (the probe woke more than a
    /// period late, and went on at the next period still ahead).
    pub skipped_periods: u64,
    pub stalls: u64,
    /// Sum of the stalls' lateness.
    pub stall_ns: u64,
    /// The longest stall (0: none).
    pub worst_ns: u64,
    /// Every wake-up's lateness, µs.
    pub lateness_us: Distribution,
    ring: VecDeque<Stall>,
    /// Stalls dropped from the ring, and the end of the newest of them.
    pub forgotten: u64,
    forgotten_until: u64,
    /// The first and the latest wake-up: the time the record covers.
    first_tick: Option<u64>,
    last_tick: u64,
}

impl CpuNoise {
    /// An empty record for a host whose TSC runs at `khz` (non-zero).
    pub fn new(khz: u64, threshold_ns: u64) -> Self {
        Self {
            khz: khz.max(1),
            threshold_ns,
            wakeups: 0,
            skipped_periods: 0,
            stalls: 0,
            stall_ns: 0,
            worst_ns: 0,
            lateness_us: Distribution::new(),
            ring: VecDeque::with_capacity(STALL_RING),
            forgotten: 0,
            forgotten_until: 0,
            first_tick: None,
            last_tick: 0,
        }
    }

    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        u64::try_from(u128::from(ticks) * 1_000_000 / u128::from(self.khz)).unwrap_or(u64::MAX)
    }

    pub fn ns_to_ticks(&self, ns: u64) -> u64 {
        u64::try_from(u128::from(ns) * u128::from(self.khz) / 1_000_000).unwrap_or(u64::MAX)
    }

    /// Records a wake-up at host TSC `tick`, `lateness_ns` after its
    /// deadline, which skipped `skipped` periods.
    pub fn record(&mut self, tick: u64, lateness_ns: u64, skipped: u64) {
        self.wakeups += 1;
        self.skipped_periods = self.skipped_periods.saturating_add(skipped);
        self.lateness_us.add(lateness_ns / 1000);
        if self.first_tick.is_none() {
            self.first_tick = Some(tick.saturating_sub(self.ns_to_ticks(lateness_ns)));
        }
        self.last_tick = self.last_tick.max(tick);
        if lateness_ns < self.threshold_ns {
            return;
        }
        self.stalls += 1;
        self.stall_ns = self.stall_ns.saturating_add(lateness_ns);
        self.worst_ns = self.worst_ns.max(lateness_ns);
        if self.ring.len() == STALL_RING
            && let Some(old) = self.ring.pop_front()
        {
            self.forgotten += 1;
            self.forgotten_until = self.forgotten_until.max(old.end_tick);
        }
        self.ring.push_back(Stall { start_tick: tick.saturating_sub(self.ns_to_ticks(lateness_ns)), end_tick: tick });
    }

    /// The stalls still held, oldest first.
    pub fn retained(&self) -> impl Iterator<Item = &Stall> {
        self.ring.iter()
    }

    /// The latest wake-up's host TSC (0: none yet).
    pub fn last_tick(&self) -> u64 {
        self.last_tick
    }

    /// How long this CPU stalled within `[from, to)` (host TSC ticks).
    pub fn stall_across(&self, from: u64, to: u64) -> Across {
        let ticks: u64 = self
            .ring
            .iter()
            .map(|s| s.end_tick.min(to).saturating_sub(s.start_tick.max(from)))
            .fold(0, u64::saturating_add);
        let covered = self.first_tick.is_some_and(|f| f <= from) && to <= self.last_tick;
        let forgot = self.forgotten > 0 && from < self.forgotten_until;
        Across { ns: self.ticks_to_ns(ticks), complete: covered && !forgot }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 GHz TSC: one tick per ns.
    const KHZ: u64 = 1_000_000;

    #[test]
    fn only_wakeups_past_the_threshold_are_stalls() {
        let mut n = CpuNoise::new(KHZ, 200_000);
        n.record(1_000_000, 30_000, 0);
        n.record(2_000_000, 199_999, 0);
        n.record(3_000_000, 200_000, 0);
        n.record(90_000_000, 80_000_000, 79);
        assert_eq!((n.wakeups, n.stalls, n.skipped_periods), (4, 2, 79));
        assert_eq!(n.stall_ns, 80_200_000);
        assert_eq!(n.worst_ns, 80_000_000);
        let s: Vec<_> = n.retained().copied().collect();
        assert_eq!(
            s,
            [
                Stall { start_tick: 2_800_000, end_tick: 3_000_000 },
                Stall { start_tick: 10_000_000, end_tick: 90_000_000 }
            ]
        );
        assert_eq!(n.lateness_us.summary().map(|s| s.max_us), Some(80_000));
    }

    #[test]
    fn a_window_gets_the_stall_time_inside_it() {
        let mut n = CpuNoise::new(KHZ, 100_000);
        n.record(1_000_000, 0, 0);
        n.record(20_000_000, 10_000_000, 9); // [10 ms, 20 ms)
        n.record(30_000_000, 500_000, 0); // [29.5 ms, 30 ms)
        n.record(40_000_000, 0, 0);
        assert_eq!(n.stall_across(12_000_000, 29_600_000), Across { ns: 8_100_000, complete: true });
        assert_eq!(n.stall_across(0, 9_000_000).ns, 0);
        assert_eq!(n.stall_across(20_000_000, 29_500_000).ns, 0, "the ends are open");
        // Before the first wake-up's deadline, or past the last wake-up: not covered.
        assert!(!n.stall_across(500_000, 2_000_000).complete);
        assert!(!n.stall_across(2_000_000, 41_000_000).complete);
        assert!(n.stall_across(1_000_000, 40_000_000).complete);
    }

    #[test]
    fn the_ring_is_bounded_and_says_what_it_forgot() {
        let mut n = CpuNoise::new(KHZ, 1_000);
        let extra = 10;
        for i in 1..=(STALL_RING as u64 + extra) {
            n.record(i * 10_000, 5_000, 0);
        }
        assert_eq!(n.retained().count(), STALL_RING);
        assert_eq!(n.forgotten, extra);
        assert_eq!(n.stalls, STALL_RING as u64 + extra, "the totals stay exact");
        assert_eq!(n.stall_ns, (STALL_RING as u64 + extra) * 5_000);
        // A window over the forgotten stalls is a lower bound; one after them is whole.
        let a = n.stall_across(0, 20 * 10_000);
        assert!(!a.complete && a.ns < 20 * 5_000, "{a:?}");
        let b = n.stall_across(extra * 10_000, (extra + 5) * 10_000);
        assert_eq!(b, Across { ns: 5 * 5_000, complete: true });
    }

    #[test]
    fn ticks_convert_at_the_tsc_rate() {
        let n = CpuNoise::new(2_596_000, 0);
        assert_eq!(n.ticks_to_ns(2_596_000), 1_000_000);
        assert_eq!(n.ns_to_ticks(1_000), 2_596);
        assert_eq!(u128::from(n.ticks_to_ns(u64::MAX)), u128::from(u64::MAX) * 1_000_000 / 2_596_000);
    }
}
