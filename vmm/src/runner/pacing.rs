//! `--switch-every` against what a switch takes: a warning at the start
//! when the period is below a switch's known floor, and one at the end when
//! ticks found the previous switch still running (they are skipped: one
//! switch at a time).

use std::time::Duration;

use switcher::telemetry::WorkloadRequest;

use crate::switch::history::SwitchHistory;

/// The guest's workload defaults (docs/latency.md, "Defaults"), used when
/// the command line leaves them to the guest.
const GUEST_DEFAULT_INTERVAL_US: u64 = 1000;
const GUEST_DEFAULT_CS_US: u64 = 500;
/// Messaging, the blackout, serializing and thawing: what a switch costs
/// beyond its freeze, at least (docs/benchmarks.md: 1 to 3 ms at p50 here).
const SWITCH_OVERHEAD_US: u64 = 2000;

/// The shortest period at which a switch can complete and leave the new
/// mode a measured epoch: the freeze waits out a critical section
/// (`--cs-us`, with a lock load), the rest of the switch costs
/// [`SWITCH_OVERHEAD_US`], and the new mode's epoch opens one measurement
/// period (`--interval-us`) after the thaw. Each mode epoch needs a few
/// periods of its own on top.
pub fn floor(w: &WorkloadRequest) -> Duration {
    let or = |v: u32, d: u64| if v == 0 { d } else { u64::from(v) };
    let cs = if w.load == switcher::telemetry::LoadKind::None as u32 { 0 } else { or(w.cs_us, GUEST_DEFAULT_CS_US) };
    let interval = or(w.interval_us, GUEST_DEFAULT_INTERVAL_US);
    Duration::from_micros(cs + SWITCH_OVERHEAD_US + 4 * interval)
}

/// The start warning, if `period` is below [`floor`].
pub fn start_warning(period: Duration, w: &WorkloadRequest) -> Option<String> {
    let floor = floor(w);
    (period < floor).then(|| {
        format!(
            "warning: --switch-every {} is shorter than a switch takes with this workload (about {} ms: the \
             critical section it waits out, ~{} ms of switching, and a few measurement periods for the new mode's \
             epoch); ticks that find a switch still running are skipped, and the mode epochs will be short",
            crate::units::show(period),
            floor.as_millis(),
            SWITCH_OVERHEAD_US / 1000
        )
    })
}

/// Ticks of the `--switch-every` timer, and those skipped.
#[derive(Debug, Default)]
pub struct Ticks {
    /// Timer expirations (a late read counts every one it covers).
    pub ticks: u64,
    /// Expirations that did not start a switch: the previous one was still
    /// running, or several expired at once.
    pub skipped: u64,
}

impl Ticks {
    /// One read of the timer: `expirations` since the last, `busy` when a
    /// switch is still in progress. True if a switch should start now.
    pub fn on_timer(&mut self, expirations: u64, busy: bool) -> bool {
        let n = expirations.max(1);
        self.ticks += n;
        self.skipped += if busy { n } else { n - 1 };
        !busy
    }

    /// The end warning, if ticks were skipped because switches took longer
    /// than the period.
    pub fn end_warning(&self, period: Duration, history: &SwitchHistory) -> Option<String> {
        if self.skipped == 0 {
            return None;
        }
        let took = history
            .totals()
            .total_us
            .map(|t| {
                format!(" (switch total p50 {:.1} ms, max {:.1} ms)", t.p50_us as f64 / 1e3, t.max_us as f64 / 1e3)
            })
            .unwrap_or_default();
        Some(format!(
            "warning: --switch-every {} was shorter than the switches took{took}: {} of {} ticks found the previous \
             switch still running and were skipped, so the mode toggled less often than asked; use a period above \
             the switch total",
            crate::units::show(period),
            self.skipped,
            self.ticks
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_follows_the_workload_and_skips_are_counted() {
        let locks = WorkloadRequest { load: switcher::telemetry::LoadKind::Locks as u32, ..Default::default() };
        assert_eq!(floor(&locks), Duration::from_micros(500 + 2000 + 4000));
        let none = WorkloadRequest { load: 0, interval_us: 100, ..Default::default() };
        assert_eq!(floor(&none), Duration::from_micros(2400));
        assert!(start_warning(Duration::from_millis(10), &locks).is_none());
        let w = start_warning(Duration::from_millis(5), &locks).expect("5 ms is below the floor");
        assert!(w.contains("--switch-every 5ms") && w.contains("about 6 ms"), "{w}");
        let mut t = Ticks::default();
        assert!(t.on_timer(1, false));
        assert!(!t.on_timer(1, true));
        assert!(t.on_timer(3, false));
        assert_eq!((t.ticks, t.skipped), (5, 3));
        let w = t.end_warning(Duration::from_millis(10), &SwitchHistory::new(4)).expect("skips warn");
        assert!(w.contains("3 of 5 ticks"), "{w}");
        assert!(Ticks::default().end_warning(Duration::from_millis(10), &SwitchHistory::new(4)).is_none());
    }
}
