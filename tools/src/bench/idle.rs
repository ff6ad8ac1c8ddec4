//! The idle family of `rtswitch bench`: what each idle policy (the
//! profile's `idle` dimension, `logic::idle` in the guest) buys and
//! costs. Three runs of the real `rtswitch run` in the rt profile
//! (`rt,idle=POLICY`) with no load, so
//! every measurement CPU is idle between its activations, the same
//! duration, vCPUs and interval, one per policy:
//!
//! | policy | an idle CPU |
//! |--------|-------------|
//! | halt | halts in the shim at once |
//! | haltpoll | polls an adaptive window, halts with the timer programmed early, polls the rest (the default) |
//! | poll | polls at CPL3 for ever |
//!
//! Each row gives IRQ and thread latency p50/p99 (all CPUs merged) and
//! the host CPU each vCPU thread used, as a share of a core over the time
//! the guest ran (the run report's `host_cpu`). Nothing is judged: the
//! figures are the trade.

use std::path::Path;

use serde::Serialize;

use super::ablation::ser_figures;
use super::child::run_to_json;
use super::latency::{self, LatencyConfig, RunFigures, run_limit};
use super::table::{cells, grid, opt};

/// The policies, in table order.
pub const POLICIES: [&str; 3] = ["halt", "haltpoll", "poll"];

/// One run as the benchmark saw it.
#[derive(Clone, Debug, Serialize)]
pub struct IdleRun {
    pub policy: &'static str,
    pub exit_code: Option<i32>,
    pub elapsed_s: f64,
    pub interrupted: bool,
    /// `Err`: why there are no figures.
    #[serde(serialize_with = "ser_figures")]
    pub figures: Result<RunFigures, String>,
    /// Host CPU per vCPU thread, percent of a core over the time the guest
    /// ran: the mean over the vCPUs, and the largest.
    pub vcpu_cpu_mean_pct: Option<f64>,
    pub vcpu_cpu_max_pct: Option<f64>,
}

/// The `rtswitch run` arguments of one run (the caller adds `--json`).
pub fn run_args(cfg: &LatencyConfig, policy: &str) -> Vec<String> {
    latency::run_args(cfg, &format!("rt,idle={policy}"), "none")
}

/// Makes one run.
pub fn run_one(exe: &Path, cfg: &LatencyConfig, policy: &'static str, json: &Path) -> IdleRun {
    let r = run_to_json(exe, &run_args(cfg, policy), json, run_limit(cfg));
    let (figures, cpu) = match r.report {
        Ok(report) => {
            let cpu = report.host_cpu.as_ref().and_then(|h| {
                let shares: Vec<f64> = h.vcpus_s.iter().flatten().map(|&s| h.share(s)).collect();
                (!shares.is_empty()).then(|| {
                    (shares.iter().sum::<f64>() / shares.len() as f64, shares.iter().copied().fold(0.0, f64::max))
                })
            });
            (RunFigures::from_report(&report), cpu)
        }
        Err(e) => (Err(e), None),
    };
    IdleRun {
        policy,
        exit_code: r.exit_code,
        elapsed_s: r.elapsed_s,
        interrupted: r.interrupted,
        figures,
        vcpu_cpu_mean_pct: cpu.map(|c| c.0),
        vcpu_cpu_max_pct: cpu.map(|c| c.1),
    }
}

/// The table.
pub fn render(runs: &[IdleRun]) -> String {
    let head = cells(&[
        "idle=",
        "samples",
        "missed",
        "|",
        "IRQ p50",
        "p99",
        "|",
        "thread p50",
        "p99",
        "max",
        "|",
        "host CPU/vCPU",
        "max",
        "exit",
    ]);
    let mut rows = vec![head];
    let pct = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |p| format!("{p:.0}%"));
    for r in runs {
        let exit = r.exit_code.map_or_else(|| "killed".to_string(), |c| c.to_string());
        let mut row = vec![r.policy.to_string()];
        match &r.figures {
            Ok(f) => {
                let t = latency::thread_cells(f);
                row.extend([t[0].clone(), t[1].clone(), "|".into(), opt(f.irq_p50), opt(f.irq_p99), "|".into()]);
                row.extend([t[3].clone(), t[4].clone(), t[5].clone()]);
            }
            Err(e) => {
                row.extend(["-", "-", "|", "-", "-", "|", "-", "-", "-"].map(String::from));
                row[1] = format!("no figures: {e}");
            }
        }
        row.extend(["|".into(), pct(r.vcpu_cpu_mean_pct), pct(r.vcpu_cpu_max_pct), exit]);
        rows.push(row);
    }
    grid(&rows, &[0])
}
