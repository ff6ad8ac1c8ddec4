//! The lock-throughput family of `rtswitch bench`: lock operations per
//! second across all CPUs under `--load locks`, in mainline and in rt,
//! and in rt with adaptive spinning turned off (`--guest-arg no-spin`).
//! Mainline locks are spinning locks, so spinning on/off is an rt knob.
//!
//! Each configuration is one VM with a control socket: after a warm-up,
//! the load's operation count (`query-latency`, `load_ops`) is read once
//! a second for the window; the rate over the whole window is the figure,
//! with the spread of the one-second rates beside it. The load's own
//! consistency check must stay clean (no violation, exit 0), or the
//! figure is reported as failed: a fast lock that lets two holders in is
//! not a result.

use std::time::{Duration, Instant};

/// Target: rt lock throughput (with adaptive spinning) at least this share of mainline's.
pub const TARGET_RT_OVER_MAINLINE: f64 = 0.8;

use serde::Serialize;
use serde_json::json;

use super::switching::SwitchBenchError;
use rtswitch::api::child::ChildVm;

/// The configurations, in order: (name, mode, adaptive spinning).
pub const CONFIGS: [(&str, &str, bool); 3] =
    [("mainline", "mainline", true), ("rt", "rt", true), ("rt, no adaptive spinning", "rt", false)];

/// What every throughput run shares.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputConfig {
    pub vcpus: u32,
    /// Critical section of the load threads: short, so that the cost of
    /// taking and handing over a lock is a visible part of each operation.
    pub cs_us: u32,
    pub load_threads: u32,
    pub warmup_s: u32,
    pub window_s: u32,
}

/// One configuration's result.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputRun {
    pub name: &'static str,
    pub mode: &'static str,
    pub adaptive_spinning: bool,
    /// Lock operations per second across all CPUs over the window.
    pub ops_per_s: Option<f64>,
    pub ops: Option<u64>,
    pub window_s: Option<f64>,
    /// The one-second rates (ops/s).
    pub per_second: Vec<f64>,
    pub violations: Option<u64>,
    /// The VM's exit status after `quit` (`None`: it had to be killed).
    pub exit_code: Option<i32>,
    /// Why there is no figure.
    pub error: Option<String>,
    /// Ctrl-C on the suite ended the window early (the rate covers `window_s`).
    pub interrupted: bool,
}

fn ops(session: &mut rtswitch::api::client::Session) -> Result<(u64, u64), SwitchBenchError> {
    let r = session.execute(json!({"execute": "query-latency"}), &mut |_| {})?;
    let ret = &r["return"];
    match (ret["load_ops"].as_u64(), ret["load_violations"].as_u64()) {
        (Some(o), Some(v)) => Ok((o, v)),
        _ => Err(SwitchBenchError::Refused { what: "a load count", reply: r.to_string() }),
    }
}

fn measure(
    cfg: &ThroughputConfig,
    mode: &str,
    spinning: bool,
    run: &mut ThroughputRun,
) -> Result<(), SwitchBenchError> {
    let sock = super::scratch::path(&format!("tput-{mode}-{spinning}.sock"));
    let mut args: Vec<String> = ["--mode", mode, "--load", "locks"].iter().map(|s| s.to_string()).collect();
    args.extend(["--vcpus".into(), cfg.vcpus.to_string(), "--cs-us".into(), cfg.cs_us.to_string()]);
    args.extend(["--load-threads".into(), cfg.load_threads.to_string()]);
    if !spinning {
        args.extend(["--guest-arg".to_string(), "no-spin".to_string()]);
    }
    let mut vm = ChildVm::start(&sock, &args)?;
    let mut s = vm.wait_ready(Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(u64::from(cfg.warmup_s)));
    let (first, _) = ops(&mut s)?;
    let start = Instant::now();
    let (mut last, mut last_t) = (first, start);
    let mut violations = 0;
    for _ in 0..cfg.window_s {
        if rtswitch::signals::interrupted() {
            run.interrupted = true;
            break;
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(last_t.elapsed()));
        let (now, v) = ops(&mut s)?;
        let t = Instant::now();
        run.per_second.push(now.saturating_sub(last) as f64 / t.duration_since(last_t).as_secs_f64());
        (last, last_t, violations) = (now, t, v);
    }
    let window = last_t.duration_since(start).as_secs_f64();
    run.ops = Some(last - first);
    run.window_s = Some(window);
    run.violations = Some(violations);
    if window > 0.0 {
        run.ops_per_s = Some((last - first) as f64 / window);
    }
    let _ = s.execute(json!({"execute": "quit"}), &mut |_| {});
    run.exit_code = vm.wait_exit(Duration::from_secs(30));
    Ok(())
}

/// Runs one configuration.
pub fn run_one(cfg: &ThroughputConfig, (name, mode, spinning): (&'static str, &'static str, bool)) -> ThroughputRun {
    let mut run = ThroughputRun {
        name,
        mode,
        adaptive_spinning: spinning,
        ops_per_s: None,
        ops: None,
        window_s: None,
        per_second: Vec::new(),
        violations: None,
        exit_code: None,
        error: None,
        interrupted: false,
    };
    if let Err(e) = measure(cfg, mode, spinning, &mut run) {
        run.error = Some(e.to_string());
    } else if run.violations != Some(0) {
        run.error = Some(format!(
            "the load's consistency check saw {} violation(s): the figure does not count",
            super::table::opt(run.violations)
        ));
        run.ops_per_s = None;
    } else if run.exit_code != Some(0) {
        run.error = Some(match run.exit_code {
            Some(c) => {
                format!("the VM exited with status {c} (its final load check failed?): the figure does not count")
            }
            None => "the VM did not exit within 30 s of `quit`; it was killed: the figure does not count".to_string(),
        });
        run.ops_per_s = None;
    }
    run
}

/// `a / b` of two runs' rates.
pub fn ratio(runs: &[ThroughputRun], a: usize, b: usize) -> Option<f64> {
    match (runs.get(a)?.ops_per_s, runs.get(b)?.ops_per_s) {
        (Some(x), Some(y)) if y > 0.0 => Some(x / y),
        _ => None,
    }
}

/// The family's table.
pub fn render(cfg: &ThroughputConfig, runs: &[ThroughputRun]) -> String {
    use super::table::{cells, grid};
    let mut rows =
        vec![cells(&["locks", "ops/s", "|", "1 s min", "median", "max", "|", "ops", "window s", "violations"])];
    for r in runs {
        let f = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.0}"));
        let (lo, med, hi) =
            super::min_p50_max(&r.per_second).map_or((None, None, None), |(a, b, c)| (Some(a), Some(b), Some(c)));
        rows.push(vec![
            r.name.to_string(),
            f(r.ops_per_s),
            "|".into(),
            f(lo),
            f(med),
            f(hi),
            "|".into(),
            super::table::opt(r.ops),
            r.window_s.map_or_else(|| "-".to_string(), |w| format!("{w:.1}")),
            super::table::opt(r.violations),
        ]);
    }
    let mut out = grid(&rows, &[0]);
    for r in runs {
        if let Some(e) = &r.error {
            out.push_str(&format!("  {}: {e}\n", r.name));
        }
        if r.interrupted {
            out.push_str(&format!("  {}: window cut short by the interrupt\n", r.name));
        }
    }
    let x = |v: Option<f64>| v.map_or_else(|| "unknown".to_string(), |v| format!("{v:.2}x"));
    out.push_str(&format!(
        "  rt gain = rt / mainline ops/s (above 1x rt does more): {} with adaptive spinning, {} without; gain of \
         spinning in rt (on / off): {}   \
         ({} vCPUs, cs {} us, {} load threads per CPU over 4 locks)\n",
        x(ratio(runs, 1, 0)),
        x(ratio(runs, 2, 0)),
        x(ratio(runs, 1, 2)),
        cfg.vcpus,
        cfg.cs_us,
        cfg.load_threads
    ));
    let met = match ratio(runs, 1, 0) {
        Some(r) if r >= TARGET_RT_OVER_MAINLINE => "met",
        Some(_) => "NOT MET",
        None => "unknown",
    };
    out.push_str(&format!(
        "  rt lock throughput {} of mainline: target >= {TARGET_RT_OVER_MAINLINE}x: {met}\n",
        x(ratio(runs, 1, 0))
    ));
    out
}
