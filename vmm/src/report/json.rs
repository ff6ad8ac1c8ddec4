//! `--json FILE`: the whole result of a run. The schema is documented in
//! README.md ("Output files"); field names are stable, new fields may be
//! added (bump [`SCHEMA_VERSION`] only for incompatible changes).
//!
//! Version 2 (bounded history): `epochs` and `switches` list the newest
//! epochs and switch records only; `epoch_totals` and `switch_totals`
//! count everything, and `modes` are exact over every epoch (`epoch_count`;
//! `epochs` lists the indices still in `epochs`).

use serde::{Deserialize, Serialize};
use switcher::telemetry::{EpochKind, LoadKind, final_check};

use super::{CpuRow, EpochRows, LoadVerdict, Measurement, ReportError, RunInfo};
use crate::stats::{Histogram, LatencyStats};
use crate::vstate::telemetry::Worst;

pub const SCHEMA_VERSION: u32 = 2;

/// The report as its readers (bench, the tests) see it: the fields they
/// use, deserialized from [`RunReport`]'s output. Schema versions 1 and 2
/// both read (they differ only in lists not read here); fields a reader
/// can do without are optional.
#[derive(Debug, Deserialize)]
pub struct ReportView {
    pub schema_version: u32,
    pub config: ConfigView,
    pub guest: Option<GuestView>,
    pub workload: Option<WorkloadView>,
    pub modes: Vec<ModeView>,
    pub load_check: Option<LoadCheckView>,
}

#[derive(Debug, Deserialize)]
pub struct ConfigView {
    pub mode: String,
    pub hist_max_us: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct GuestView {
    /// From reset to the guest's ready line.
    pub ready_ms: Option<f64>,
    pub emulated: Option<bool>,
    pub calib_ratio: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct WorkloadView {
    pub interval_us: Option<u64>,
    pub cs_us: Option<u64>,
    pub load_threads: Option<u64>,
}

/// One entry of `modes[]`: all CPUs over every epoch of the mode.
#[derive(Debug, Deserialize)]
pub struct ModeView {
    pub mode: String,
    pub samples: u64,
    pub missed: u64,
    pub irq: HistView,
    pub thread: HistView,
}

#[derive(Debug, Deserialize)]
pub struct HistView {
    pub p50: Option<Pct>,
    pub p99: Option<Pct>,
    pub max_us: Option<u64>,
    #[serde(default)]
    pub overflow: u64,
    /// Non-empty buckets `[us, count]`.
    #[serde(default)]
    pub buckets: Vec<[u64; 2]>,
}

#[derive(Debug, Deserialize)]
pub struct LoadCheckView {
    /// `ok`, `violated` or `not_run`.
    pub result: String,
}

/// A percentile as the report writes it: `us`, or at least `us` when it
/// fell in the overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pct {
    pub us: u64,
    pub at_least: bool,
}

impl std::fmt::Display for Pct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = if self.at_least { format!(">={}", self.us) } else { self.us.to_string() };
        f.pad(&s)
    }
}

/// Why a `--json` report cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportReadError {
    #[error("unsupported schema_version {0}; this build reads 1 and 2 (re-run with this rtswitch)")]
    Version(serde_json::Value),
    #[error("the report does not match its schema ({0}); was it written by rtswitch run --json?")]
    Schema(#[from] serde_json::Error),
}

impl ReportView {
    /// Reads a parsed report, refusing a schema version this build does not know.
    pub fn from_value(v: &serde_json::Value) -> Result<Self, ReportReadError> {
        let version = v.get("schema_version").cloned().unwrap_or(serde_json::Value::Null);
        if !matches!(version.as_u64(), Some(1 | 2)) {
            return Err(ReportReadError::Version(version));
        }
        Ok(Self::deserialize(v)?)
    }
}

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub schema_version: u32,
    pub config: Config,
    pub host: Host,
    pub guest: Option<Guest>,
    pub workload: Option<Workload>,
    /// The newest epochs (at most `epoch_totals.retained_max`).
    pub epochs: Vec<Epoch>,
    pub epoch_totals: EpochTotals,
    /// Exact over every epoch of each mode.
    pub modes: Vec<ModeTotal>,
    pub load_check: LoadCheck,
    /// The newest runtime mode switches (at most 1024), in order.
    pub switches: Vec<crate::switch::SwitchRecord>,
    /// Every switch of the run, counted.
    pub switch_totals: crate::switch::history::SwitchTotals,
    pub outcome: Outcome,
    /// `ok`, `not ok` (with `reasons`) or `stopped above threshold`.
    pub result: super::RunResult,
    /// `--stop-above`: the sample that stopped the run and its cause.
    pub stop: Option<crate::vstate::telemetry::StopInfo>,
}

/// How many epochs there were, and how many `epochs` lists.
#[derive(Debug, Serialize)]
pub struct EpochTotals {
    /// Epochs seen (since the last `reset-latency`).
    pub seen: u64,
    pub listed: u64,
    /// The oldest epochs, not listed (their samples are in `modes`).
    pub forgotten: u64,
    /// Most epochs listed.
    pub retained_max: u64,
}

/// The command line as given (`null`: the guest's default).
#[derive(Debug, Serialize)]
pub struct Config {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub mode: &'static str,
    pub load: &'static str,
    pub interval_us: Option<u32>,
    pub cs_us: Option<u32>,
    pub load_threads: Option<u32>,
    pub hist_max_us: u32,
    pub duration_s: Option<f64>,
    pub workload_enabled: bool,
}

#[derive(Debug, Serialize)]
pub struct Host {
    pub tsc_khz: u32,
    pub calib_ps_per_iter: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Guest {
    pub kernel_version: String,
    pub ready_ms: Option<f64>,
    pub calib_ps_per_iter: u64,
    pub calib_iterations: u64,
    pub calib_tsc_ticks: u64,
    /// Guest ps/iteration over the host's.
    pub calib_ratio: Option<f64>,
    pub emulated: Option<bool>,
    /// Ring-0 shim entries per CPU and service over the run.
    pub shim: crate::vstate::shim_stats::ShimEntries,
}

/// The workload as the guest ran it (defaults resolved).
#[derive(Debug, Serialize)]
pub struct Workload {
    pub load: &'static str,
    pub interval_us: u32,
    pub cs_us: u32,
    pub load_threads: u32,
    pub load_ops: u64,
    pub current_epoch: u64,
    /// Epochs the guest recycled before the VMM read them (must be 0).
    pub epochs_recycled_unread: u32,
    /// Measurement thread priority, histogram bucket width (µs), the
    /// measured and the loaded CPUs (bit n = CPU n), `--stop-above` (µs, 0: off).
    pub measure_prio: u32,
    pub bucket_us: u32,
    pub measure_cpus: u64,
    pub load_cpus: u64,
    pub stop_above_us: u32,
}

#[derive(Debug, Serialize)]
pub struct Epoch {
    pub index: u64,
    pub mode: &'static str,
    /// `mode` or `switching` (then `mode` is the mode switched from).
    pub kind: &'static str,
    /// `mainline`, `rt`, or `sw:mainline` (switching from mainline).
    pub label: String,
    pub start_tsc: u64,
    /// `null` while the epoch is open.
    pub end_tsc: Option<u64>,
    /// Per CPU (left out of `query-latency` replies unless asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Vec<Cpu>>,
    pub all: Cpu,
}

#[derive(Debug, Serialize)]
pub struct Cpu {
    /// `null` for the all-CPUs entry.
    pub cpu: Option<usize>,
    pub samples: u64,
    /// Periods without an activation (skipped, or still overdue).
    pub missed: u64,
    /// Of `missed`: periods still waiting for a stalled thread.
    pub overdue: u64,
    /// Host steal time over the recorded periods.
    pub steal_ns: u64,
    /// Largest thread latency minus its period's steal time.
    pub max_net_ns: u64,
    /// The last activation (cyclictest `Act`).
    pub last_thread_ns: u64,
    pub irq: Hist,
    pub thread: Hist,
    /// Every elapsed period, missed ones at the latency that ended them
    /// (coordinated-omission corrected).
    pub corrected: Hist,
    /// Activation numbers of thread-latency overflows (the first few).
    pub overflow_cycles: Vec<u64>,
    pub worst: Option<WorstSample>,
    /// Why the figures are missing or from an earlier read.
    pub problem: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Hist {
    #[serde(flatten)]
    pub stats: LatencyStats,
    /// Non-empty buckets as `[us at the bucket's start, count]`, ascending (in the run's
    /// report; `query-latency` leaves them out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<[u64; 2]>>,
}

#[derive(Debug, Serialize)]
pub struct WorstSample {
    pub cpu: Option<usize>,
    pub deadline_tsc: u64,
    pub thread_ns: u64,
    pub irq_ns: u64,
    pub task: String,
    pub locks_held: u32,
    pub preempt_count: u32,
    /// Host steal time in the sample's period.
    pub steal_ns: u64,
    /// How long the timer IRQ waited for an unmask (0: not deferred).
    pub masked_ns: u64,
    pub cycle: u64,
}

#[derive(Debug, Serialize)]
pub struct ModeTotal {
    pub mode: &'static str,
    /// Every epoch of this mode (exact).
    pub epoch_count: u64,
    /// Those still listed in detail, by index.
    pub epochs: Vec<u64>,
    pub samples: u64,
    pub missed: u64,
    pub steal_ns: u64,
    pub irq: Hist,
    pub thread: Hist,
    pub corrected: Hist,
}

#[derive(Debug, Serialize)]
pub struct LoadCheck {
    /// `ok`, `violated` or `not_run`.
    pub result: &'static str,
    pub load_ops: Option<u64>,
    pub violations: Option<u64>,
    /// `pending`, `ok` or `violated`: the guest's own final check.
    pub final_check: Option<&'static str>,
    pub final_tally: Option<u64>,
    pub final_locked_total: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Outcome {
    pub exit_code: u8,
    pub exit_name: String,
    pub how: String,
    pub elapsed_s: f64,
}

/// What an epoch's or a mode's entry holds besides the all-CPU figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detail {
    /// Per-CPU rows.
    pub cpus: bool,
    /// Histogram buckets.
    pub buckets: bool,
}

impl Detail {
    /// Everything: the run's report.
    pub const FULL: Detail = Detail { cpus: true, buckets: true };
}

fn hist(h: &Histogram, d: Detail) -> Hist {
    Hist { stats: h.stats(), buckets: d.buckets.then(|| h.non_empty().map(|(us, c)| [us, c]).collect()) }
}

fn worst(w: &Worst, cpu: Option<usize>) -> WorstSample {
    WorstSample {
        cpu,
        deadline_tsc: w.deadline_tsc,
        thread_ns: w.thread_ns,
        irq_ns: w.irq_ns,
        task: w.task.clone(),
        locks_held: w.locks_held,
        preempt_count: w.preempt_count,
        steal_ns: w.steal_ns,
        masked_ns: w.masked_ns,
        cycle: w.cycle,
    }
}

fn cpu(r: &CpuRow, e: &EpochRows, d: Detail) -> Cpu {
    // The all-CPUs worst names the CPU it came from.
    let worst_cpu = r.cpu.or_else(|| {
        let w = r.figures.worst.as_ref()?;
        e.cpus.iter().find(|c| c.figures.worst.as_ref() == Some(w)).and_then(|c| c.cpu)
    });
    Cpu {
        cpu: r.cpu,
        samples: r.figures.samples,
        missed: r.figures.missed,
        overdue: r.figures.overdue,
        steal_ns: r.figures.steal_ns,
        max_net_ns: r.figures.max_net_ns,
        last_thread_ns: r.figures.last_thread_ns,
        irq: hist(&r.figures.irq, d),
        thread: hist(&r.figures.thread, d),
        corrected: hist(&r.figures.corrected, d),
        overflow_cycles: r.figures.overflow_cycles.clone(),
        worst: r.figures.worst.as_ref().map(|w| worst(w, worst_cpu)),
        problem: r.problem.clone(),
    }
}

/// One epoch's all-CPU figures, and what `d` asks for (also `query-latency`).
pub fn epoch_entry(e: &EpochRows, d: Detail) -> Epoch {
    Epoch {
        index: e.info.index,
        mode: e.info.mode.name(),
        kind: match e.info.kind {
            EpochKind::Mode => "mode",
            EpochKind::Switching => "switching",
        },
        label: e.info.label(),
        start_tsc: e.info.start_tsc,
        end_tsc: e.info.closed().then_some(e.info.end_tsc),
        cpus: d.cpus.then(|| e.cpus.iter().map(|r| cpu(r, e, d)).collect()),
        all: cpu(&e.all, e, d),
    }
}

/// Every listed epoch in full.
pub fn epochs(m: &Measurement) -> Vec<Epoch> {
    m.epochs.iter().map(|e| epoch_entry(e, Detail::FULL)).collect()
}

/// Every mode's exact totals (also `query-latency`, without buckets).
pub fn mode_totals(m: &Measurement, d: Detail) -> Vec<ModeTotal> {
    m.per_mode()
        .into_iter()
        .map(|t| ModeTotal {
            mode: t.mode.name(),
            epoch_count: t.epochs,
            epochs: t.listed,
            samples: t.all.figures.samples,
            missed: t.all.figures.missed,
            steal_ns: t.all.figures.steal_ns,
            irq: hist(&t.all.figures.irq, d),
            thread: hist(&t.all.figures.thread, d),
            corrected: hist(&t.all.figures.corrected, d),
        })
        .collect()
}

/// How many epochs `m` has and lists.
pub fn epoch_totals(m: &Measurement, retained_max: usize) -> EpochTotals {
    let listed = m.epochs.len() as u64;
    EpochTotals { seen: m.forgotten + listed, listed, forgotten: m.forgotten, retained_max: retained_max as u64 }
}

/// Builds the report.
pub fn build(m: &Measurement, info: &RunInfo) -> RunReport {
    let c = &info.settings;
    let opt = |v: u32| (v != 0).then_some(v);
    let config = Config {
        vcpus: c.vcpus,
        memory_mib: c.memory_bytes >> 20,
        mode: c.mode.name(),
        load: LoadKind::from_u32(c.workload.load).map_or("?", LoadKind::name),
        interval_us: opt(c.workload.interval_us),
        cs_us: opt(c.workload.cs_us),
        load_threads: opt(c.workload.load_threads),
        hist_max_us: c.hist_buckets * c.workload.bucket_us.max(1),
        duration_s: c.duration.map(|d| d.as_secs_f64()),
        workload_enabled: c.workload.enabled != 0,
    };
    let guest = info.guest.as_ref().map(|g| Guest {
        kernel_version: g.kernel_version.clone(),
        ready_ms: info.ready_ms,
        calib_ps_per_iter: g.calib_ps_per_iter,
        calib_iterations: g.calib_iterations,
        calib_tsc_ticks: g.calib_tsc_ticks,
        calib_ratio: info.host_ps_per_iter.filter(|&h| h > 0).map(|h| g.calib_ps_per_iter as f64 / h as f64),
        emulated: info.emulated(),
        shim: info.shim.clone(),
    });
    let workload = m.workload.as_ref().map(|w| Workload {
        load: w.load.name(),
        interval_us: w.interval_us,
        cs_us: w.cs_us,
        load_threads: w.load_threads,
        load_ops: w.load_ops,
        current_epoch: w.current_epoch,
        epochs_recycled_unread: w.unread_recycled,
        measure_prio: w.measure_prio,
        bucket_us: w.bucket_us,
        measure_cpus: w.measure_cpus,
        load_cpus: w.load_cpus,
        stop_above_us: w.stop_above_us,
    });
    let epochs = epochs(m);
    let modes = mode_totals(m, Detail::FULL);
    let w = m.workload.as_ref();
    let load_check = LoadCheck {
        result: match m.load_verdict() {
            LoadVerdict::Ok => "ok",
            LoadVerdict::Violated => "violated",
            LoadVerdict::NotRun => "not_run",
        },
        load_ops: w.map(|w| w.load_ops),
        violations: w.map(|w| w.load_violations),
        final_check: w.map(|w| match w.final_check {
            final_check::OK => "ok",
            final_check::VIOLATED => "violated",
            _ => "pending",
        }),
        final_tally: w.map(|w| w.final_tally),
        final_locked_total: w.map(|w| w.final_locked_total),
    };
    RunReport {
        schema_version: SCHEMA_VERSION,
        config,
        host: Host { tsc_khz: info.tsc_khz, calib_ps_per_iter: info.host_ps_per_iter },
        guest,
        workload,
        epochs,
        epoch_totals: epoch_totals(m, info.retained_epochs),
        modes,
        load_check,
        switches: info.switches.retained().cloned().collect(),
        switch_totals: info.switches.totals(),
        outcome: Outcome {
            exit_code: info.exit_code.code(),
            exit_name: format!("{:?}", info.exit_code),
            how: info.outcome.clone(),
            elapsed_s: info.elapsed_s,
        },
        result: info.result.clone(),
        stop: info.stop.clone(),
    }
}

/// The report as pretty-printed JSON.
pub fn render(m: &Measurement, info: &RunInfo) -> Result<String, ReportError> {
    let mut text = serde_json::to_string_pretty(&build(m, info))?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
pub mod tests {
    use switcher::abi::LockMode;

    use super::super::{GuestInfo, RunSettings, summary};
    use super::*;
    use crate::exit_code::ExitCode;
    use crate::vstate::telemetry::TelemetryReader;
    use crate::vstate::telemetry::synth::*;

    /// A run's settings as `rtswitch run --hist-max-us 100` gives them
    /// (2 vCPUs, mainline, the locks load, guest defaults otherwise).
    pub fn settings() -> RunSettings {
        RunSettings {
            vcpus: 2,
            memory_bytes: 128 << 20,
            mode: LockMode::Mainline,
            workload: switcher::telemetry::WorkloadRequest {
                load: LoadKind::Locks as u32,
                enabled: 1,
                measure_prio: 99,
                bucket_us: 1,
                ..Default::default()
            },
            hist_buckets: 100,
            duration: None,
            outputs: Default::default(),
        }
    }

    /// Two epochs (mainline, then rt) on two CPUs.
    pub fn measurement() -> Measurement {
        let (mem, layout) = region(2, 100);
        let mut h = header(&layout);
        h.current_epoch = 1;
        h.epochs[0] = epoch(0, LockMode::Mainline, EpochKind::Mode, 10);
        h.epochs[1] = epoch(1, LockMode::Rt, EpochKind::Mode, 0);
        h.final_check = final_check::OK;
        h.final_tally = 42;
        h.final_locked_total = 42;
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 0, &[1, 2], &[10, 250, 10]);
        write_record(&mem, &layout, 0, 1, &[1], &[30]);
        write_record(&mem, &layout, 1, 0, &[1], &[5]);
        write_record(&mem, &layout, 1, 1, &[1, 1], &[6, 7]);
        let mut r = TelemetryReader::new(mem.clone(), ADDR, layout);
        r.harvest();
        Measurement::from_reader(&r)
    }

    pub fn info(settings: RunSettings) -> RunInfo {
        RunInfo {
            settings,
            tsc_khz: 2_000_000,
            host_ps_per_iter: Some(300),
            guest: Some(GuestInfo {
                calib_ps_per_iter: 600_000,
                calib_iterations: 1000,
                calib_tsc_ticks: 5000,
                kernel_version: "rtswitch-guest 0.1.0".into(),
            }),
            ready_ms: Some(12.5),
            shim: Default::default(),
            elapsed_s: 3.2,
            outcome: "guest shut down cleanly".into(),
            exit_code: ExitCode::Ok,
            switches: crate::switch::history::SwitchHistory::default(),
            retained_epochs: 64,
            result: super::super::RunResult { result: super::super::result::Verdict::Ok, reasons: vec![] },
            stop: None,
        }
    }

    #[test]
    fn json_has_the_whole_result_and_agrees_with_the_table() {
        let mut settings = settings();
        settings.workload.cs_us = 300;
        let m = measurement();
        let text = render(&m, &info(settings)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema_version"], 2);
        assert_eq!(v["epoch_totals"], serde_json::json!({"seen": 2, "listed": 2, "forgotten": 0, "retained_max": 64}));
        assert_eq!(v["switch_totals"]["recorded"], 0);
        assert_eq!(v["modes"][0]["epoch_count"], 1);
        assert_eq!(v["modes"][0]["epochs"], serde_json::json!([0]));
        assert_eq!(v["config"]["cs_us"], 300);
        assert_eq!(v["config"]["interval_us"], serde_json::Value::Null);
        assert_eq!(v["config"]["mode"], "mainline");
        assert_eq!(v["guest"]["emulated"], true);
        assert_eq!(v["guest"]["calib_ratio"], 2000.0);
        assert_eq!(v["workload"]["interval_us"], 1000);
        let e0 = &v["epochs"][0];
        assert_eq!(
            (e0["index"].as_u64(), e0["mode"].as_str(), e0["kind"].as_str()),
            (Some(0), Some("mainline"), Some("mode"))
        );
        assert_eq!(e0["end_tsc"], 10);
        assert_eq!(e0["label"], "mainline");
        assert_eq!(v["epochs"][1]["end_tsc"], serde_json::Value::Null);
        let t = &e0["cpus"][0]["thread"];
        assert_eq!(t["count"], 3);
        assert_eq!(t["overflow"], 1);
        assert_eq!(t["buckets"], serde_json::json!([[10, 2]]));
        assert_eq!(t["p50"], serde_json::json!({"us": 10, "at_least": false}));
        assert_eq!(t["p99"], serde_json::json!({"us": 100, "at_least": true}));
        assert_eq!(t["max_us"], 250);
        assert_eq!(e0["all"]["cpu"], serde_json::Value::Null);
        assert_eq!(e0["all"]["samples"], 4);
        assert_eq!(e0["all"]["worst"]["cpu"], 0);
        assert_eq!(e0["all"]["worst"]["task"], "load0");
        assert_eq!(v["modes"][1]["mode"], "rt");
        assert_eq!(v["modes"][1]["thread"]["count"], 3);
        assert_eq!(v["load_check"]["result"], "ok");
        assert_eq!(v["outcome"]["exit_code"], 0);
        assert_eq!(v["result"]["result"], "ok");
        assert_eq!(e0["all"]["steal_ns"], 0);
        assert_eq!(e0["all"]["corrected"]["count"], e0["all"]["thread"]["count"]);
        // The table shows the same figures.
        let table = summary::render(&m);
        let all0 = table.lines().find(|l| l.split_whitespace().take(3).eq(["0", "mainline", "all"])).unwrap();
        let cells: Vec<&str> = all0.split_whitespace().collect();
        let all = &e0["all"]["thread"];
        assert_eq!(cells[15], all["min_us"].to_string());
        assert_eq!(cells[20], all["max_us"].to_string());
        assert_eq!(cells[21], all["overflow"].to_string());
    }
}
