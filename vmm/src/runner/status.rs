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
                for line in self.watchdog.check(&run.mem) {
                    run.say(&line);
                }
                self.check_keepup();
            }
            State::Booting => {}
        }
        let (elapsed, mark) = (run.started.elapsed(), run.console.output_mark());
        let columns = report::status::terminal_columns();
        let text = self.printer.tick(&run.telemetry.borrow(), elapsed, mark, columns);
        if let Some(text) = text {
            run.console.report(&text);
            self.printer.printed(run.console.output_mark());
        }
    }

    /// Once, when the guest misses most periods of the first second: the
    /// interval is shorter than this host lets the guest keep.
    fn check_keepup(&mut self) {
        if self.keepup_warned {
            return;
        }
        let m = Measurement::from_reader_listing(&self.run.telemetry.borrow(), |_| false);
        let Some(w) = m.workload.as_ref().filter(|w| w.running) else { return };
        let rows = m.per_cpu_whole_run();
        let (samples, missed): (u64, u64) =
            rows.iter().map(|r| (r.figures.samples, r.figures.missed)).fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
        let steal_ms = rows.iter().map(|r| r.figures.steal_ns).sum::<u64>() / 1_000_000;
        let periods = samples + missed;
        if periods < 20 {
            return;
        }
        self.keepup_warned = true;
        if missed * 4 > periods {
            self.run.say(&format!(
                "warning: the guest missed {missed} of {periods} periods at --interval-us {} (host steal time so \
                 far: {steal_ms} ms over the vCPUs): when the host does not steal, this interval is shorter than \
                 this host lets the guest keep (each period costs a timer interrupt and a wake-up, which exit to \
                 the hypervisor); the figures count the misses, a longer --interval-us measures more",
                w.interval_us
            ));
        }
    }
}

impl MutEventSubscriber for Status {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.timer.wait();
        self.tick();
    }

    fn init(&mut self, ops: &mut EventOps) {
        super::fds::watch_all(ops, [self.timer.as_raw_fd()]);
    }
}
