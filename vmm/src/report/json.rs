//! `--json FILE`: the whole result of a run. The schema is documented in
//! docs/reports.md; field names are stable, new fields may be
//! added (bump [`SCHEMA_VERSION`] only for incompatible changes).
//!
//! Version 2 (bounded history): `epochs` and `switches` list the newest
//! epochs and switch records only; `epoch_totals` and `switch_totals`
//! count everything, and `modes` are exact over every epoch (`epoch_count`;
//! `epochs` lists the indices still in `epochs`).
//!
//! One schema: the types here are what the writer fills ([`build`]) and
//! what every reader parses ([`RunReport::parse`]: bench, the end-to-end
//! tests), so a report read back equals the report written. `query-latency`
//! replies use the same entries ([`epoch_entry`], [`mode_totals`]).

use serde::{Deserialize, Serialize};
use switcher::telemetry::{EpochKind, LoadKind, final_check};

use super::exits::Exits;
use super::{CpuRow, EpochRows, LoadVerdict, Measurement, ReportError, RunInfo};
use crate::stats::{Histogram, LatencyStats};
use crate::telemetry::Worst;

pub const SCHEMA_VERSION: u32 = 2;

/// Why a `--json` report cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReportReadError {
    #[error("unsupported schema_version {0}; this build reads {SCHEMA_VERSION} (re-run with this rtswitch)")]
    Version(serde_json::Value),
    #[error("the report does not match its schema ({0}); was it written by rtswitch run --json?")]
    Schema(#[from] serde_json::Error),
}

impl RunReport {
    /// Reads a parsed report, refusing a schema version this build does not know.
    pub fn from_value(v: &serde_json::Value) -> Result<Self, ReportReadError> {
        let version = v.get("schema_version").cloned().unwrap_or(serde_json::Value::Null);
        if version.as_u64() != Some(u64::from(SCHEMA_VERSION)) {
            return Err(ReportReadError::Version(version));
        }
        Ok(Self::deserialize(v)?)
    }

    /// Reads a report from its text (what `--json` wrote).
    pub fn parse(text: &str) -> Result<Self, ReportReadError> {
        Self::from_value(&serde_json::from_str(text)?)
    }

    /// The exact totals of `mode` (`mainline`, `rt`), if it ran.
    pub fn mode(&self, mode: &str) -> Option<&ModeTotal> {
        self.modes.iter().find(|m| m.mode == mode)
    }
}

/// The whole report: written by [`render`], read by [`RunReport::parse`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    pub stop: Option<crate::telemetry::StopInfo>,
    /// `--irq-load`: what the VMM raised and what the guest took.
    pub irq_load: Option<IrqLoadReport>,
    /// The host CPU time the run's threads used.
    #[serde(default)]
    pub host_cpu: Option<super::host_cpu::HostCpu>,
    /// The host-noise probe: settings and totals per host CPU (`null`:
    /// `--host-noise off`, or a report older than the probe).
    #[serde(default)]
    pub host_noise: Option<super::host_noise::HostNoiseReport>,
}

/// The device interrupt load of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IrqLoadReport {
    /// Interrupts per second on every vCPU, work per interrupt, handler
    /// thread priority.
    pub rate_hz: u32,
    pub work_us: u32,
    pub thread_prio: u32,
    /// The VMM's side: timer periods acted on, missed, failed writes.
    pub injected: crate::vstate::irq_load::IrqLoadCounts,
    /// The guest's side, per CPU.
    pub cpus: Vec<crate::telemetry::IrqCounts>,
}

/// How many epochs there were, and how many `epochs` lists.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochTotals {
    /// Epochs seen (since the last `reset-latency`).
    pub seen: u64,
    pub listed: u64,
    /// The oldest epochs, not listed (their samples are in `modes`).
    pub forgotten: u64,
    /// Most epochs listed.
    pub retained_max: u64,
}

/// The command line as given (`null`: the guest's default): every option
/// that changes what runs, so that a report reproduces its run
/// (`command_line` is the whole of it; the fields after `workload_enabled`
/// are newer than the first schema 2 reports and read as their defaults
/// from those).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub vcpus: u32,
    pub memory_mib: u64,
    pub mode: String,
    pub load: String,
    pub interval_us: Option<u32>,
    pub cs_us: Option<u32>,
    pub load_threads: Option<u32>,
    pub hist_max_us: u32,
    pub duration_s: Option<f64>,
    pub workload_enabled: bool,
    /// `rtswitch run ...` as typed.
    #[serde(default)]
    pub command_line: Vec<String>,
    #[serde(default)]
    pub kernel: Option<String>,
    /// `--guest-arg` words, in order; `selftest`: `--selftest`.
    #[serde(default)]
    pub guest_args: Vec<String>,
    #[serde(default)]
    pub selftest: bool,
    /// `--switch-every` in ms, and the profile it toggles to (`--switch-to`, resolved).
    #[serde(default)]
    pub switch_every_ms: Option<f64>,
    #[serde(default)]
    pub switch_to: Option<String>,
    /// `--irq-load`: `{rate_hz, work_us}`; `--irq-prio` (`null`: the default).
    #[serde(default)]
    pub irq_load: Option<IrqLoadConfig>,
    #[serde(default)]
    pub irq_prio: Option<u32>,
    /// `--bucket-us`, `--priority`, `--stop-above` (`null`: off).
    #[serde(default)]
    pub bucket_us: Option<u32>,
    #[serde(default)]
    pub priority: Option<u32>,
    #[serde(default)]
    pub stop_above_us: Option<u32>,
    /// `--measure-cpus`, `--load-cpus` as CPU numbers (`null`: all).
    #[serde(default)]
    pub measure_cpus: Option<Vec<u32>>,
    #[serde(default)]
    pub load_cpus: Option<Vec<u32>>,
    #[serde(default)]
    pub api_sock: Option<String>,
    #[serde(default)]
    pub shutdown_timeout_s: Option<f64>,
    /// `--fast-switch` (`null`: a report older than the fast path).
    #[serde(default)]
    pub fast_switch: Option<bool>,
    /// `--control-fifo` (`null`: a report older than it).
    #[serde(default)]
    pub control_fifo: Option<bool>,
    #[serde(default)]
    pub switch_timeout_ms: Option<f64>,
    #[serde(default)]
    pub vcpu_stop_timeout_ms: Option<f64>,
    #[serde(default)]
    pub watchdog_s: Option<f64>,
    #[serde(default)]
    pub seccomp: Option<bool>,
    /// `--host-noise` in µs (`null`: off, or a report older than the probe).
    #[serde(default)]
    pub host_noise_period_us: Option<u64>,
}

/// `config.irq_load`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct IrqLoadConfig {
    pub rate_hz: u32,
    pub work_us: u32,
}

/// A CPU mask as CPU numbers; `None` for 0 (all).
fn cpus(mask: u64) -> Option<Vec<u32>> {
    (mask != 0).then(|| (0..64).filter(|i| mask & (1u64 << i) != 0).collect())
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub tsc_khz: u32,
    pub calib_ps_per_iter: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub load: String,
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Epoch {
    pub index: u64,
    pub mode: String,
    /// `mode` or `switching` (then `mode` is the mode switched from).
    pub kind: String,
    /// `mainline`, `rt`, or `sw:mainline` (switching from mainline).
    pub label: String,
    pub start_tsc: u64,
    /// `null` while the epoch is open.
    pub end_tsc: Option<u64>,
    /// Per CPU (left out of `query-latency` replies unless asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<Vec<Cpu>>,
    pub all: Cpu,
    /// How long the host itself stalled during the epoch (the run's
    /// report, with the host-noise probe; absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_stall: Option<crate::host_noise::HostStall>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Exits to the hypervisor over the activations, by cause.
    pub exits: Exits,
    pub worst: Option<WorstSample>,
    /// Why the figures are missing or from an earlier read.
    pub problem: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Hist {
    #[serde(flatten)]
    pub stats: LatencyStats,
    /// Non-empty buckets as `[us at the bucket's start, count]`, ascending (in the run's
    /// report; `query-latency` leaves them out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<[u64; 2]>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// How long the host itself stalled from the deadline to the thread's
    /// wake-up (the run's report, with the host-noise probe; absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_stall: Option<crate::host_noise::HostStall>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModeTotal {
    pub mode: String,
    /// Every epoch of this mode (exact).
    pub epoch_count: u64,
    /// Those still listed in detail, by index.
    pub epochs: Vec<u64>,
    pub samples: u64,
    pub missed: u64,
    pub steal_ns: u64,
    /// Exits to the hypervisor over the mode's activations, by cause.
    pub exits: Exits,
    pub irq: Hist,
    pub thread: Hist,
    pub corrected: Hist,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadCheck {
    /// `ok`, `violated` or `not_run`.
    pub result: String,
    pub load_ops: Option<u64>,
    pub violations: Option<u64>,
    /// `pending`, `ok` or `violated`: the guest's own final check.
    pub final_check: Option<String>,
    pub final_tally: Option<u64>,
    pub final_locked_total: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub exit_code: u8,
    pub exit_name: String,
    pub how: String,
    pub elapsed_s: f64,
    /// What the guest did against the platform's protocol: refusals per
    /// kind (empty for an honest guest; exit code 13 otherwise).
    #[serde(default)]
    pub guest_misbehaviour: std::collections::BTreeMap<String, u64>,
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
        host_stall: None,
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
        exits: Exits::of(&r.figures),
        worst: r.figures.worst.as_ref().map(|w| worst(w, worst_cpu)),
        problem: r.problem.clone(),
    }
}

/// One epoch's all-CPU figures, and what `d` asks for (also `query-latency`).
pub fn epoch_entry(e: &EpochRows, d: Detail) -> Epoch {
    Epoch {
        index: e.info.index,
        mode: e.info.mode.name().into(),
        kind: match e.info.kind {
            EpochKind::Mode => "mode",
            EpochKind::Switching => "switching",
        }
        .into(),
        label: e.info.label(),
        start_tsc: e.info.start_tsc,
        end_tsc: e.info.closed().then_some(e.info.end_tsc),
        cpus: d.cpus.then(|| e.cpus.iter().map(|r| cpu(r, e, d)).collect()),
        all: cpu(&e.all, e, d),
        host_stall: None,
    }
}

/// Puts each epoch's and each worst sample's host stall (the host-noise
/// probe's snapshot) in `epochs`.
fn annotate_host_stalls(epochs: &mut [Epoch], s: &crate::host_noise::Snapshot) {
    for e in epochs {
        e.host_stall = s.stall_between(None, e.start_tsc, e.end_tsc);
        let cpus = e.cpus.iter_mut().flatten().chain(std::iter::once(&mut e.all));
        for c in cpus {
            if let Some(w) = &mut c.worst {
                w.host_stall = super::host_noise::worst_stall(s, w.cpu, w.deadline_tsc, w.thread_ns);
            }
        }
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
            mode: t.mode.name().into(),
            epoch_count: t.epochs,
            epochs: t.listed,
            samples: t.all.figures.samples,
            missed: t.all.figures.missed,
            steal_ns: t.all.figures.steal_ns,
            exits: Exits::of(&t.all.figures),
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
    let o = &c.options;
    let opt = |v: u32| (v != 0).then_some(v);
    let config = Config {
        vcpus: c.vcpus,
        memory_mib: c.memory_bytes >> 20,
        mode: c.mode.name().into(),
        load: LoadKind::from_u32(c.workload.load).map_or("?", LoadKind::name).into(),
        interval_us: opt(c.workload.interval_us),
        cs_us: opt(c.workload.cs_us),
        load_threads: opt(c.workload.load_threads),
        hist_max_us: c.hist_buckets * c.workload.bucket_us.max(1),
        duration_s: c.duration.map(|d| d.as_secs_f64()),
        workload_enabled: c.workload.enabled != 0,
        command_line: o.command_line.clone(),
        kernel: o.kernel.clone(),
        guest_args: o.guest_args.clone(),
        selftest: o.selftest,
        switch_every_ms: o.switch_every.map(|d| d.as_secs_f64() * 1e3),
        switch_to: o.switch_to.map(|p| p.name().into()),
        irq_load: o.irq_load.map(|(rate_hz, work_us)| IrqLoadConfig { rate_hz, work_us }),
        irq_prio: o.irq_prio,
        bucket_us: Some(c.workload.bucket_us.max(1)),
        priority: Some(c.workload.measure_prio),
        stop_above_us: opt(c.workload.stop_above_us),
        measure_cpus: cpus(c.workload.measure_cpus),
        load_cpus: cpus(c.workload.load_cpus),
        api_sock: o.api_sock.clone(),
        shutdown_timeout_s: Some(o.shutdown_timeout.as_secs_f64()),
        fast_switch: Some(o.fast_switch),
        control_fifo: Some(o.control_fifo),
        switch_timeout_ms: Some(o.switch_timeout.as_secs_f64() * 1e3),
        vcpu_stop_timeout_ms: Some(o.vcpu_stop_timeout.as_secs_f64() * 1e3),
        watchdog_s: Some(o.watchdog.as_secs_f64()),
        seccomp: Some(o.seccomp),
        host_noise_period_us: o.host_noise.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
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
        load: w.load.name().into(),
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
    let mut epochs = epochs(m);
    if let Some(s) = &info.host_noise {
        annotate_host_stalls(&mut epochs, s);
    }
    let modes = mode_totals(m, Detail::FULL);
    let w = m.workload.as_ref();
    let load_check = LoadCheck {
        result: match m.load_verdict() {
            LoadVerdict::Ok => "ok",
            LoadVerdict::Violated => "violated",
            LoadVerdict::NotRun => "not_run",
        }
        .into(),
        load_ops: w.map(|w| w.load_ops),
        violations: w.map(|w| w.load_violations),
        final_check: w.map(|w| {
            match w.final_check {
                final_check::OK => "ok",
                final_check::VIOLATED => "violated",
                _ => "pending",
            }
            .into()
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
            guest_misbehaviour: info.misbehaviour.clone(),
        },
        result: info.result.clone(),
        stop: info.stop.clone(),
        irq_load: info.irq_load.and_then(|injected| {
            let w = m.workload.as_ref()?;
            Some(IrqLoadReport {
                rate_hz: w.irq_rate_hz,
                work_us: w.irq_work_us,
                thread_prio: w.irq_prio,
                injected,
                cpus: w.irqs.clone(),
            })
        }),
        host_cpu: info.host_cpu.clone(),
        host_noise: info.host_noise.as_ref().map(super::host_noise::build),
    }
}

/// The report as pretty-printed JSON.
pub fn render(m: &Measurement, info: &RunInfo) -> Result<String, ReportError> {
    let mut text = serde_json::to_string_pretty(&build(m, info))?;
    text.push('\n');
    Ok(text)
}

/// Fixtures (a run's settings, measurement, info and report) for this
/// crate's tests and, with the `fixtures` feature, for the tools crate's.
#[cfg(any(test, feature = "fixtures"))]
pub mod tests {
    use switcher::profile::Profile;

    #[cfg(test)]
    use super::super::summary;
    use super::super::{GuestInfo, RunSettings};
    use super::*;
    use crate::exit_code::ExitCode;
    #[cfg(test)]
    use crate::stats::Percentile;
    use crate::telemetry::TelemetryReader;
    use crate::telemetry::synth::*;

    /// A run's settings as `rtswitch run --hist-max-us 100` gives them
    /// (2 vCPUs, mainline, the locks load, guest defaults otherwise).
    pub fn settings() -> RunSettings {
        RunSettings {
            vcpus: 2,
            memory_bytes: 128 << 20,
            mode: Profile::MAINLINE,
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
            options: Default::default(),
        }
    }

    /// Two epochs (mainline, then rt) on two CPUs.
    pub fn measurement() -> Measurement {
        let (mem, layout) = region(2, 100);
        let mut h = header(&layout);
        h.current_epoch = 1;
        h.epochs[0] = epoch(0, Profile::MAINLINE, EpochKind::Mode, 10);
        h.epochs[1] = epoch(1, Profile::RT, EpochKind::Mode, 0);
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
            irq_load: None,
            misbehaviour: Default::default(),
            host_cpu: None,
            host_noise: None,
        }
    }

    /// [`info`] with a switch of each outcome and a `--stop-above` report:
    /// every part of the schema holds data.
    pub fn full_info() -> RunInfo {
        let mut info = info(settings());
        for (seq, ok) in [(1, true), (2, false)] {
            info.switches.push(crate::switch::SwitchRecord {
                seq,
                from: "mainline".into(),
                to: "rt".into(),
                ok,
                reason: if ok { String::new() } else { "deadline".into() },
                timings: crate::switch::SwitchTimings { freeze_us: 120, blackout_us: 35, total_us: 400 },
                sites_patched: if ok { 40 } else { 0 },
                requested_at_s: 1.25,
                phases: ok.then_some(crate::switch::GuestPhases {
                    guest_freeze_us: 100,
                    verdict_us: 50,
                    serialize_us: 3,
                    thaw_us: 7,
                    messaging_us: 240,
                }),
                path: crate::switch::SwitchPath {
                    fast: false,
                    holds: 1,
                    refused: Some("lock 'load.1' is held by task 'load' (owner word 0x101)".into()),
                    refused_by: Some("lock-word".into()),
                    blackout: None,
                    fast_us: 350,
                    serialized_by: ok.then(|| crate::switch::SERIALIZED_BY_VMM.into()),
                    vmm_serialize_refused: None,
                },
            });
        }
        info.shim = crate::vstate::shim_stats::ShimEntries {
            services: vec!["halt".into(), "wrmsr".into()],
            cpus: vec![crate::vstate::shim_stats::CpuShimEntries { cpu: 0, entries: vec![812, 2], rejected: 1 }],
        };
        info.stop = Some(crate::telemetry::StopInfo {
            cpu: 1,
            thread_ns: 250_300,
            irq_ns: Some(4_000),
            steal_ns: 17,
            locks_held: 1,
            preempt_count: 2,
            irq_masked: true,
            masked_ns: 900,
            deadline_tsc: 123_456,
            task: "load0".into(),
            task_addr: 0xffff_8000_0000_1000,
            trace: vec![(100, "switch to 'load0' (prio 10)".into()), (200, "irq vector 0xec".into())],
        });
        info.result = super::super::RunResult {
            result: super::super::result::Verdict::StoppedAbove,
            reasons: vec!["a reason".into()],
        };
        info.misbehaviour = [("unexpected vCPU exit".to_string(), 3)].into();
        info.host_cpu =
            Some(super::super::host_cpu::HostCpu { ran_s: 3.0, control_s: 0.05, vcpus_s: vec![Some(0.5), None] });
        info
    }

    /// The report of [`measurement`] and [`full_info`].
    pub fn report() -> RunReport {
        build(&measurement(), &full_info())
    }

    #[test]
    fn a_written_report_reads_back_as_written() {
        let written = report();
        let text = render(&measurement(), &full_info()).unwrap();
        let read = RunReport::parse(&text).unwrap();
        assert_eq!(read, written);
        // Nothing is lost on the way: written again, the same bytes.
        let mut again = serde_json::to_string_pretty(&read).unwrap();
        again.push('\n');
        assert_eq!(again, text);
        // `query-latency`'s short entries (no per-CPU rows, no buckets) read too.
        let m = measurement();
        let short = epoch_entry(&m.epochs[0], Detail { cpus: false, buckets: false });
        let back: Epoch = serde_json::from_value(serde_json::to_value(&short).unwrap()).unwrap();
        assert_eq!((back.cpus.as_ref(), back.all.thread.buckets.as_ref()), (None, None));
        assert_eq!(back, short);
        // Another schema version, or another shape, is refused, saying which.
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["schema_version"] = 3.into();
        assert!(RunReport::from_value(&v).unwrap_err().to_string().contains("unsupported schema_version 3"));
        let e = RunReport::parse(r#"{"schema_version": 2}"#).unwrap_err();
        assert!(matches!(e, ReportReadError::Schema(_)), "{e}");
    }

    #[test]
    fn json_has_the_whole_result_and_agrees_with_the_table() {
        let mut settings = settings();
        settings.workload.cs_us = 300;
        let m = measurement();
        let text = render(&m, &info(settings)).unwrap();
        let v = RunReport::parse(&text).unwrap();
        assert_eq!(v.schema_version, 2);
        let totals = &v.epoch_totals;
        assert_eq!((totals.seen, totals.listed, totals.forgotten, totals.retained_max), (2, 2, 0, 64));
        assert_eq!(v.switch_totals.recorded, 0);
        assert_eq!((v.modes[0].epoch_count, &v.modes[0].epochs[..]), (1, &[0][..]));
        assert_eq!((v.config.cs_us, v.config.interval_us, v.config.mode.as_str()), (Some(300), None, "mainline"));
        let guest = v.guest.as_ref().unwrap();
        assert_eq!((guest.emulated, guest.calib_ratio), (Some(true), Some(2000.0)));
        assert_eq!(v.workload.as_ref().unwrap().interval_us, 1000);
        let e0 = &v.epochs[0];
        assert_eq!((e0.index, e0.mode.as_str(), e0.kind.as_str()), (0, "mainline", "mode"));
        assert_eq!((e0.end_tsc, e0.label.as_str()), (Some(10), "mainline"));
        assert_eq!(v.epochs[1].end_tsc, None);
        let t = &e0.cpus.as_ref().unwrap()[0].thread;
        assert_eq!((t.stats.count, t.stats.overflow), (3, 1));
        assert_eq!(t.buckets, Some(vec![[10, 2]]));
        assert_eq!((t.stats.p50, t.stats.p99), (Some(Percentile::Us(10)), Some(Percentile::AtLeast(100))));
        assert_eq!(t.stats.max_us, Some(250));
        // The wire form of a percentile.
        let wire: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(wire["epochs"][0]["cpus"][0]["thread"]["p99"], serde_json::json!({"us": 100, "at_least": true}));
        let all = &e0.all;
        assert_eq!((all.cpu, all.samples, all.steal_ns), (None, 4, 0));
        let worst = all.worst.as_ref().unwrap();
        assert_eq!((worst.cpu, worst.task.as_str()), (Some(0), "load0"));
        assert_eq!((v.modes[1].mode.as_str(), v.modes[1].thread.stats.count), ("rt", 3));
        assert_eq!((v.load_check.result.as_str(), v.outcome.exit_code), ("ok", 0));
        assert_eq!(v.result.result, super::super::result::Verdict::Ok);
        assert_eq!(all.corrected.stats.count, all.thread.stats.count);
        // The table shows the same figures.
        let table = summary::render(&m, None);
        let all0 = table.lines().find(|l| l.split_whitespace().take(3).eq(["0", "mainline", "all"])).unwrap();
        let cells: Vec<&str> = all0.split_whitespace().collect();
        let all = &all.thread.stats;
        let n = |v: Option<u64>| v.map_or("null".to_string(), |v| v.to_string());
        assert_eq!((cells[15], cells[20], cells[21]), (&*n(all.min_us), &*n(all.max_us), &*all.overflow.to_string()));
    }
}
