//! `--json FILE`: the whole result of a run. The schema is documented in
//! README.md ("Output files"); field names are stable, new fields may be
//! added (bump [`SCHEMA_VERSION`] only for incompatible changes).

use serde::Serialize;
use switcher::telemetry::{EpochKind, LoadKind, final_check};

use super::stats::{Histogram, LatencyStats};
use super::telemetry::Worst;
use super::{CpuRow, EpochRows, LoadVerdict, Measurement, ReportError, RunInfo};

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize)]
pub struct RunReport {
    pub schema_version: u32,
    pub config: Config,
    pub host: Host,
    pub guest: Option<Guest>,
    pub workload: Option<Workload>,
    pub epochs: Vec<Epoch>,
    pub modes: Vec<ModeTotal>,
    pub load_check: LoadCheck,
    /// Every runtime mode switch, in order.
    pub switches: Vec<crate::switch::SwitchRecord>,
    pub outcome: Outcome,
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
    pub scaled: bool,
    pub load_ops: u64,
    pub current_epoch: u64,
}

#[derive(Debug, Serialize)]
pub struct Epoch {
    pub index: u64,
    pub mode: &'static str,
    /// `mode` or `switching` (then `mode` is the mode switched from).
    pub kind: &'static str,
    /// `mainline`, `rt`, or `switching from mainline`.
    pub label: String,
    pub start_tsc: u64,
    /// `null` while the epoch is open.
    pub end_tsc: Option<u64>,
    pub cpus: Vec<Cpu>,
    pub all: Cpu,
}

#[derive(Debug, Serialize)]
pub struct Cpu {
    /// `null` for the all-CPUs entry.
    pub cpu: Option<usize>,
    pub samples: u64,
    pub missed: u64,
    pub irq: Hist,
    pub thread: Hist,
    pub worst: Option<WorstSample>,
    /// Why the figures are missing or from an earlier read.
    pub problem: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Hist {
    #[serde(flatten)]
    pub stats: LatencyStats,
    /// Non-empty 1 µs buckets as `[us, count]`, ascending.
    pub buckets: Vec<[u64; 2]>,
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
}

#[derive(Debug, Serialize)]
pub struct ModeTotal {
    pub mode: &'static str,
    pub epochs: Vec<u64>,
    pub samples: u64,
    pub missed: u64,
    pub irq: Hist,
    pub thread: Hist,
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

fn hist(h: &Histogram) -> Hist {
    Hist { stats: h.stats(), buckets: h.non_empty().map(|(us, c)| [us, c]).collect() }
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
    }
}

fn cpu(r: &CpuRow, e: &EpochRows) -> Cpu {
    // The all-CPUs worst names the CPU it came from.
    let worst_cpu = r.cpu.or_else(|| {
        let w = r.worst.as_ref()?;
        e.cpus.iter().find(|c| c.worst.as_ref() == Some(w)).and_then(|c| c.cpu)
    });
    Cpu {
        cpu: r.cpu,
        samples: r.samples,
        missed: r.missed,
        irq: hist(&r.irq),
        thread: hist(&r.thread),
        worst: r.worst.as_ref().map(|w| worst(w, worst_cpu)),
        problem: r.problem.clone(),
    }
}

/// Builds the report.
/// Every epoch's per-CPU and all-CPU figures (also `query-latency`).
pub fn epochs(m: &Measurement) -> Vec<Epoch> {
    m.epochs
        .iter()
        .map(|e| Epoch {
            index: e.info.index,
            mode: e.info.mode.name(),
            kind: match e.info.kind {
                EpochKind::Mode => "mode",
                EpochKind::Switching => "switching",
            },
            label: e.info.label(),
            start_tsc: e.info.start_tsc,
            end_tsc: e.info.closed().then_some(e.info.end_tsc),
            cpus: e.cpus.iter().map(|r| cpu(r, e)).collect(),
            all: cpu(&e.all, e),
        })
        .collect()
}

pub fn build(m: &Measurement, info: &RunInfo) -> RunReport {
    let c = info.config;
    let opt = |v: u32| (v != 0).then_some(v);
    let config = Config {
        vcpus: c.vcpus,
        memory_mib: c.memory_bytes >> 20,
        mode: c.mode.name(),
        load: LoadKind::from_u32(c.workload.load).map_or("?", LoadKind::name),
        interval_us: opt(c.workload.interval_us),
        cs_us: opt(c.workload.cs_us),
        load_threads: opt(c.workload.load_threads),
        hist_max_us: c.hist_buckets,
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
        scaled: w.scaled,
        load_ops: w.load_ops,
        current_epoch: w.current_epoch,
    });
    let epochs = epochs(m);
    let modes = m
        .per_mode()
        .into_iter()
        .map(|(mode, epochs, row)| ModeTotal {
            mode: mode.name(),
            epochs,
            samples: row.samples,
            missed: row.missed,
            irq: hist(&row.irq),
            thread: hist(&row.thread),
        })
        .collect();
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
        modes,
        load_check,
        switches: info.switches.clone(),
        outcome: Outcome {
            exit_code: info.exit_code.code(),
            exit_name: format!("{:?}", info.exit_code),
            how: info.outcome.clone(),
            elapsed_s: info.elapsed_s,
        },
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

    use super::super::telemetry::TelemetryReader;
    use super::super::telemetry::synth::*;
    use super::super::{GuestInfo, summary};
    use super::*;
    use crate::cli::{Cli, Command, RunConfig};
    use crate::exit_code::ExitCode;

    pub fn config(args: &[&str]) -> RunConfig {
        use clap::Parser;
        let mut argv = vec!["rtswitch", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(r) => r.into_config().unwrap(),
            other => panic!("not a run: {other:?}"),
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

    pub fn info(config: &RunConfig) -> RunInfo<'_> {
        RunInfo {
            config,
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
            switches: Vec::new(),
        }
    }

    #[test]
    fn json_has_the_whole_result_and_agrees_with_the_table() {
        let config = config(&["--cs-us", "300", "--hist-max-us", "100"]);
        let m = measurement();
        let text = render(&m, &info(&config)).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema_version"], 1);
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
        // The table shows the same figures.
        let table = summary::render(&m);
        let all0 = table.lines().find(|l| l.split_whitespace().take(3).eq(["0", "mainline", "all"])).unwrap();
        let cells: Vec<&str> = all0.split_whitespace().collect();
        let all = &e0["all"]["thread"];
        assert_eq!(cells[14], all["min_us"].to_string());
        assert_eq!(cells[19], all["max_us"].to_string());
        assert_eq!(cells[20], all["overflow"].to_string());
    }
}
