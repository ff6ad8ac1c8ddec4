//! The 1 Hz status timer: reads the latency telemetry, checks the guest's
//! heartbeats (`watchdog`) and whether it keeps its measurement interval,
//! and prints the live status or the `--quiet` progress line
//! (`report::status`). Quiet once a shutdown was asked for.

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::timerfd::TimerFd;

use super::error::RunError;
use super::fds::timer;
use super::lifecycle::State;
use super::shared::Shared;
use crate::report::status::StatusPrinter;
use crate::report::{self, Measurement};
use crate::watchdog::Watchdog;
use switcher::profile::LockMode;
use switcher::telemetry::LoadKind;

/// How often the status timer fires.
const STATUS_PERIOD: std::time::Duration = std::time::Duration::from_secs(1);

pub struct Status {
    run: Shared,
    timer: TimerFd,
    printer: StatusPrinter,
    /// Lockup reports from the guest's heartbeats.
    watchdog: Watchdog,
    /// The interval warning was printed.
    keepup_warned: bool,
}

impl Status {
    pub fn new(run: &Shared, printer: StatusPrinter, watchdog: Watchdog) -> Result<Self, RunError> {
        let timer = timer(Some(STATUS_PERIOD), Some(STATUS_PERIOD))?;
        Ok(Self { run: run.clone(), timer, printer, watchdog, keepup_warned: false })
    }

    /// The heartbeat watchdog (the end report checks it a last time).
    pub fn watchdog(&mut self) -> &mut Watchdog {
        &mut self.watchdog
    }

    fn tick(&mut self) {
        let run = self.run.clone();
        run.harvest();
        match run.state() {
            State::ShuttingDown | State::Exited => return,
            State::Ready | State::Switching => {
                self.watchdog.note_tick(std::time::Instant::now(), STATUS_PERIOD);
                for line in self.watchdog.check(&run.mem) {
                    run.say(&line);
                }
                self.check_keepup();
            }
            State::Prelaunch | State::Booting => {}
        }
        let (elapsed, mark) = (run.started.elapsed(), run.console.output_mark());
        let columns = report::status::terminal_columns();
        let text = self.printer.tick(&run.telemetry.borrow(), elapsed, mark, columns);
        if let Some(text) = text {
            run.console.report(&text);
            self.printer.printed(run.console.output_mark());
        }
    }

    /// Once, when the guest misses more than a quarter of the periods of
    /// the first second: says why, from what was measured ([`keepup_warning`]).
    fn check_keepup(&mut self) {
        if self.keepup_warned {
            return;
        }
        let m = Measurement::from_reader_listing(&self.run.telemetry.borrow(), |_| false);
        let Some(w) = m.workload.as_ref().filter(|w| w.running) else { return };
        let rows = m.per_cpu_whole_run();
        let (samples, missed): (u64, u64) =
            // Guest-supplied counts: saturating, never wrapping (or panicking).
            rows.iter()
                .map(|r| (r.figures.samples, r.figures.missed))
                .fold((0u64, 0u64), |a, b| (a.0.saturating_add(b.0), a.1.saturating_add(b.1)));
        let steal_ns = rows.iter().fold(0u64, |a, r| a.saturating_add(r.figures.steal_ns));
        if samples.saturating_add(missed) < 20 {
            return;
        }
        self.keepup_warned = true;
        let mainline_locks = m.groups.iter().any(|g| g.mode.locks == LockMode::Mainline);
        let k = Keepup {
            samples,
            missed,
            steal_ns,
            interval_us: w.interval_us,
            cs_us: (w.load == LoadKind::Locks && mainline_locks).then_some(w.cs_us),
        };
        if let Some(text) = keepup_warning(&k) {
            self.run.say(&text);
        }
    }
}

/// What the first second measured, for the keep-up warning.
#[derive(Clone, Copy, Debug)]
pub struct Keepup {
    pub samples: u64,
    pub missed: u64,
    /// Host steal time over those periods, every CPU.
    pub steal_ns: u64,
    pub interval_us: u32,
    /// The lock load's critical section, when its sections keep
    /// preemption off (the lock load under mainline locking).
    pub cs_us: Option<u32>,
}

/// The warning when more than a quarter of the periods were missed,
/// naming the cause the figures point to: critical sections at least as
/// long as the period (preemption off throughout), host steal time (a
/// quarter of the vCPUs' time or more), or else the host's timer path.
pub fn keepup_warning(k: &Keepup) -> Option<String> {
    let periods = k.samples.saturating_add(k.missed);
    if periods == 0 || k.missed.saturating_mul(4) <= periods {
        return None;
    }
    // The vCPUs' time over the periods so far (every CPU's periods).
    let vcpu_ns = periods.saturating_mul(u64::from(k.interval_us)).saturating_mul(1000).max(1);
    let steal_pct = k.steal_ns as f64 * 100.0 / vcpu_ns as f64;
    let steal_ms = k.steal_ns as f64 / 1e6;
    let mut causes = Vec::new();
    if let Some(cs) = k.cs_us.filter(|&cs| cs >= k.interval_us) {
        causes.push(format!(
            "the load's critical sections (--cs-us {cs}) are not shorter than the period and keep preemption off \
             under mainline locking, so every period that falls in one is missed; give --cs-us below --interval-us"
        ));
    }
    if steal_pct >= 25.0 {
        causes.push(format!(
            "host steal time took {steal_pct:.0}% of the vCPUs' time ({steal_ms:.1} ms): the host ran other work on \
             their cores; a quieter host, or fewer vCPUs than host CPUs, measures more"
        ));
    }
    if causes.is_empty() {
        causes.push(format!(
            "neither the load's sections nor host steal time ({steal_ms:.1} ms, {steal_pct:.0}%) explain it: this \
             interval is shorter than the host's timer path lets the guest keep (each period costs a timer \
             interrupt and a wake-up, which exit to the hypervisor); a longer --interval-us measures more"
        ));
    }
    Some(format!(
        "warning: the guest missed {} of {periods} periods at --interval-us {}: {}; the figures count the misses",
        k.missed,
        k.interval_us,
        causes.join("; and ")
    ))
}

impl MutEventSubscriber for Status {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.timer.wait();
        // The counts of rate-limited warnings whose window closed.
        crate::ratelimit::flush(false);
        self.tick();
    }

    fn init(&mut self, ops: &mut EventOps) {
        super::fds::watch_all(ops, [self.timer.as_raw_fd()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(samples: u64, missed: u64, steal_ms: u64, cs_us: Option<u32>) -> Keepup {
        Keepup { samples, missed, steal_ns: steal_ms * 1_000_000, interval_us: 1000, cs_us }
    }

    #[test]
    fn the_keepup_warning_names_the_cause_it_measured() {
        // The run: --cs-us 2000 under mainline, 6 ms of steal.
        let w = keepup_warning(&k(868, 1116, 6, Some(2000))).expect("most periods missed");
        assert!(w.starts_with("warning: the guest missed 1116 of 1984 periods at --interval-us 1000: "), "{w}");
        assert!(w.contains("critical sections (--cs-us 2000)") && !w.contains("steal time took"), "{w}");
        assert!(!w.contains("timer path"), "{w}");
        // Steal: 1 s of 2 s of vCPU time.
        let w = keepup_warning(&k(1000, 1000, 1000, Some(500))).unwrap();
        assert!(w.contains("host steal time took 50%") && !w.contains("critical sections"), "{w}");
        // Both.
        let w = keepup_warning(&k(1000, 1000, 1000, Some(1000))).unwrap();
        assert!(w.contains("critical sections") && w.contains("; and host steal time"), "{w}");
        // Neither: the timer path (rt locks: no cs given).
        let w = keepup_warning(&k(1000, 1000, 2, None)).unwrap();
        assert!(w.contains("timer path") && w.contains("longer --interval-us"), "{w}");
        // A quarter or fewer missed: nothing to say.
        assert!(keepup_warning(&k(1500, 500, 0, Some(5000))).is_none());
        assert!(keepup_warning(&k(0, 0, 0, None)).is_none());
    }
}
