//! The run's result: "ok", or "not ok" with its reasons, beside the exit
//! code. A run whose guest shut down cleanly is still not ok when its
//! measurement cannot be trusted: a measuring CPU without a single sample
//! (its thread never ran), a load that did no operation, a watchdog stall.
//! `--stop-above` ending the run is its own result.

use serde::{Deserialize, Serialize};

use super::Measurement;
use crate::exit_code::ExitCode;
use crate::telemetry::StopInfo;

/// The verdict, as the summary and the JSON (`result.result`) spell it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    #[serde(rename = "ok")]
    Ok,
    #[serde(rename = "not ok")]
    NotOk,
    #[serde(rename = "stopped above threshold")]
    StoppedAbove,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::NotOk => "not ok",
            Verdict::StoppedAbove => "stopped above threshold",
        }
    }
}

/// Periods a CPU's measurement (or, on the busiest measuring CPU, the
/// load) must have had before it is judged: the measurement and the load
/// start together, so a run stopped within its first periods (Ctrl-C as
/// soon as the guest is ready) has not shown whether they work.
const JUDGED_AFTER_PERIODS: u64 = 20;

/// What the run's measurement amounts to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResult {
    pub result: Verdict,
    /// Why not ok (empty when ok).
    pub reasons: Vec<String>,
}

impl RunResult {
    /// Judges a run; `workload` says whether a workload was asked for and
    /// the guest got to run it.
    pub fn judge(m: &Measurement, workload: bool, stalls: &[String], stop: Option<&StopInfo>) -> Self {
        let mut reasons = Vec::new();
        if workload && let Some(w) = m.workload.as_ref() {
            let rows = m.per_cpu_whole_run();
            // A CPU whose periods passed without a single activation: its
            // thread never ran. (A CPU with fewer periods than
            // JUDGED_AFTER_PERIODS in the window measured, e.g. a guest that
            // exits before its workload starts, a run stopped as soon as it
            // was ready or right after `reset-latency`, is not a stall.)
            for row in &rows {
                let Some(cpu) = row.cpu else { continue };
                if w.measures(cpu) && row.figures.samples == 0 && row.figures.missed >= JUDGED_AFTER_PERIODS {
                    reasons.push(format!(
                        "cpu {cpu} has no latency sample ({} missed periods): its measurement thread never ran",
                        row.figures.missed
                    ));
                }
            }
            // A load that did no operation is broken, once the run gave it
            // time.
            let periods = rows.iter().filter(|r| r.cpu.is_some()).map(|r| r.figures.samples + r.figures.missed).max();
            let load_had_time = periods.unwrap_or(0) >= JUDGED_AFTER_PERIODS;
            if w.load != switcher::telemetry::LoadKind::None && w.load_ops == 0 && load_had_time {
                reasons.push(format!("the {} load did no operation", w.load.name()));
            }
        } else if workload {
            reasons.push("the guest never published its measurement (no telemetry)".to_string());
        }
        reasons.extend(stalls.iter().cloned());
        let result = if !reasons.is_empty() {
            Verdict::NotOk
        } else if stop.is_some() {
            Verdict::StoppedAbove
        } else {
            Verdict::Ok
        };
        Self { result, reasons }
    }

    /// The exit code this result asks for (combined with the run's own by
    /// `ExitCode::worst`).
    pub fn exit_code(&self) -> ExitCode {
        match self.result {
            Verdict::NotOk => ExitCode::MeasurementNotOk,
            Verdict::StoppedAbove => ExitCode::StoppedAbove,
            Verdict::Ok => ExitCode::Ok,
        }
    }

    /// The summary line.
    pub fn line(&self) -> String {
        if self.reasons.is_empty() {
            format!("result: {}", self.result.name())
        } else {
            format!("result: {}: {}", self.result.name(), self.reasons.join("; "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::TelemetryReader;
    use crate::telemetry::synth::*;
    use switcher::profile::Profile;
    use switcher::telemetry::{CpuLatencyHeader, EpochKind};
    use vm_memory::Bytes;

    /// A locks run whose load did no operation, with `samples` periods
    /// measured on its one CPU.
    fn idle_load_run(samples: usize) -> RunResult {
        let (mem, layout) = region(1, 100);
        let mut h = header(&layout);
        h.load_ops = 0;
        h.epochs[0] = epoch(0, Profile::MAINLINE, EpochKind::Mode, 0);
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 0, &vec![1; samples], &vec![10; samples]);
        let mut r = TelemetryReader::new(mem.clone(), ADDR, layout);
        r.harvest();
        RunResult::judge(&Measurement::from_reader(&r), true, &[], None)
    }

    /// A run whose one CPU's measurement thread took no sample in
    /// `missed` periods (its load did work).
    fn silent_cpu_run(missed: u64) -> RunResult {
        let (mem, layout) = region(1, 100);
        let mut h = header(&layout);
        h.epochs[0] = epoch(0, Profile::MAINLINE, EpochKind::Mode, 0);
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 0, &[], &[]);
        let at = ADDR + (layout.record(0, 0) + std::mem::offset_of!(CpuLatencyHeader, missed)) as u64;
        mem.write_obj(missed, vm_memory::GuestAddress(at)).unwrap();
        let mut r = TelemetryReader::new(mem.clone(), ADDR, layout);
        r.harvest();
        RunResult::judge(&Measurement::from_reader(&r), true, &[], None)
    }

    #[test]
    fn a_cpu_without_samples_is_judged_once_the_run_gave_it_time() {
        assert_eq!(silent_cpu_run(1).result, Verdict::Ok, "stopped in the first period");
        let r = silent_cpu_run(JUDGED_AFTER_PERIODS);
        assert_eq!(r.result, Verdict::NotOk);
        assert!(r.reasons[0].contains("cpu 0 has no latency sample"), "{:?}", r.reasons);
    }

    #[test]
    fn a_load_without_operations_is_judged_once_the_run_gave_it_time() {
        // Stopped as soon as the guest was ready: a few periods, no verdict on the load.
        assert_eq!(idle_load_run(3).result, Verdict::Ok);
        let r = idle_load_run(JUDGED_AFTER_PERIODS as usize);
        assert_eq!(r.result, Verdict::NotOk);
        assert!(r.reasons[0].contains("locks load did no operation"), "{:?}", r.reasons);
    }
}
