//! The ablation family of `rtswitch bench`: which dimension of the RT
//! personality buys how much latency, and what the idle policy adds to
//! it. Eight runs of the real `rtswitch run`, all under the lock load and
//! the device interrupt load
//! (`--irq-load`), the same duration, vCPUs, interval and critical
//! section, each booted in one profile:
//!
//! | run | profile |
//! |-----|---------|
//! | mainline | `mainline` (spinning locks, voluntary, hard-IRQ handlers) |
//! | locks | `locks=rt` (rtmutexes alone) |
//! | preempt | `preempt=full` (full preemption alone) |
//! | irq | `irq=threaded` (threaded handlers alone) |
//! | locks+preempt | `locks=rt,preempt=full` |
//! | rt | `rt` (all three; idle CPUs `haltpoll`, the default) |
//! | rt+halt | `rt,idle=halt` (idle CPUs halt at once) |
//! | rt+poll | `rt,idle=poll` (idle CPUs poll: a host core each) |
//!
//! Each row gives thread latency p50/p99/max (all CPUs merged over the
//! boot profile's epochs) and its p99 gain over mainline (mainline p99 /
//! the row's p99); the device interrupts' hard/threaded split shows each
//! run handled them as its profile says. Nothing is judged: the figures
//! are the finding.

use std::path::Path;

use serde::Serialize;

use super::child::run_to_json;
use super::latency::{self, LatencyConfig, RunFigures, run_limit};
use super::ratio::{Ratio, pct_ratio};
use super::table::{cells, grid, opt};
use rtswitch::report::json::RunReport;

/// What a run's label means, in the table and the plot: which
/// dimensions it switched to their rt variant ("alone": that one only; a
/// bare `locks` would read as the lock load, which every run has).
pub fn title(label: &str) -> &'static str {
    match label {
        "mainline" => "mainline (none)",
        "locks" => "rt locks alone",
        "preempt" => "full preemption alone",
        "irq" => "threaded irqs alone",
        "locks+preempt" => "rt locks + full preemption",
        "rt" => "rt (all three)",
        "rt+halt" => "rt, idle=halt",
        "rt+poll" => "rt, idle=poll",
        _ => "?",
    }
}

/// The runs: (label, profile), in table order.
pub const RUNS: [(&str, &str); 8] = [
    ("mainline", "mainline"),
    ("locks", "locks=rt"),
    ("preempt", "preempt=full"),
    ("irq", "irq=threaded"),
    ("locks+preempt", "locks=rt,preempt=full"),
    ("rt", "rt"),
    ("rt+halt", "rt,idle=halt"),
    ("rt+poll", "rt,idle=poll"),
];

/// What every ablation run shares.
#[derive(Clone, Debug, Serialize)]
pub struct AblationConfig {
    pub latency: LatencyConfig,
    /// `--irq-load RATE,WORK_US` of every run.
    pub irq_rate_hz: u32,
    pub irq_work_us: u32,
}

/// One run as the benchmark saw it.
#[derive(Clone, Debug, Serialize)]
pub struct AblationRun {
    pub label: &'static str,
    /// The profile as given, and as the VMM named it.
    pub profile: &'static str,
    pub profile_name: Option<String>,
    pub exit_code: Option<i32>,
    pub elapsed_s: f64,
    /// Cut short by Ctrl-C on the suite: its figures cover `elapsed_s`.
    pub interrupted: bool,
    /// `Err`: why there are no figures.
    #[serde(serialize_with = "ser_figures")]
    pub figures: Result<RunFigures, String>,
    /// Device interrupts handled in hard-IRQ context and by threads.
    pub irq_hard: Option<u64>,
    pub irq_threaded: Option<u64>,
    /// mainline thread p99 / this run's (above 1: this profile is faster).
    pub p99_gain: Option<Ratio>,
}

/// A run's figures, or `{"error": why}` (every bench family's runs).
pub fn ser_figures<S: serde::Serializer>(f: &Result<RunFigures, String>, s: S) -> Result<S::Ok, S::Error> {
    match f {
        Ok(r) => r.serialize(s),
        Err(e) => serde_json::json!({ "error": e }).serialize(s),
    }
}

impl AblationRun {
    pub fn figures(&self) -> Option<&RunFigures> {
        self.figures.as_ref().ok()
    }
}

/// The `rtswitch run` arguments of one run (the caller adds `--json`).
/// A latency run's (`--mode` takes any profile) with the interrupt load.
pub fn run_args(cfg: &AblationConfig, profile: &str) -> Vec<String> {
    let mut v = latency::run_args(&cfg.latency, profile, "locks");
    v.extend(["--irq-load".into(), format!("{},{}", cfg.irq_rate_hz, cfg.irq_work_us)]);
    v
}

/// Makes one run.
pub fn run_one(
    exe: &Path,
    cfg: &AblationConfig,
    label: &'static str,
    profile: &'static str,
    json: &Path,
) -> AblationRun {
    let r = run_to_json(exe, &run_args(cfg, profile), json, run_limit(&cfg.latency));
    let (figures, name, irq) = match r.report {
        Ok(report) => (RunFigures::from_report(&report), Some(report.config.mode.clone()), irq_split(&report)),
        Err(e) => (Err(e), None, None),
    };
    AblationRun {
        label,
        profile,
        profile_name: name,
        exit_code: r.exit_code,
        elapsed_s: r.elapsed_s,
        interrupted: r.interrupted,
        figures,
        irq_hard: irq.map(|i| i.0),
        irq_threaded: irq.map(|i| i.1),
        p99_gain: None,
    }
}

/// (hard, threaded) device interrupts over every CPU.
fn irq_split(r: &RunReport) -> Option<(u64, u64)> {
    let total = rtswitch::telemetry::IrqCounts::total(&r.irq_load.as_ref()?.cpus);
    Some((total.hard, total.threaded))
}

/// Fills every run's p99 gain over the mainline run.
pub fn fill_gains(runs: &mut [AblationRun]) {
    let base = runs.iter().find(|r| r.label == "mainline").and_then(|r| r.figures()).and_then(|f| f.thread_p99);
    for r in runs.iter_mut() {
        r.p99_gain = match (base, r.figures().and_then(|f| f.thread_p99)) {
            (Some(b), Some(p)) => pct_ratio(b, p),
            _ => None,
        };
    }
}

/// The family's table.
pub fn render(runs: &[AblationRun]) -> String {
    let head = cells(&[
        "switched to rt",
        "profile",
        "samples",
        "missed",
        "|",
        "thread p50",
        "p99",
        "max",
        "|",
        "p99 gain",
        "|",
        "IRQs hard",
        "threaded",
        "|",
        "load check",
        "exit",
    ]);
    let mut rows = vec![head];
    for r in runs {
        let exit = r.exit_code.map_or_else(|| "killed".to_string(), |c| c.to_string());
        let mut row = vec![title(r.label).to_string(), r.profile_name.clone().unwrap_or_else(|| r.profile.to_string())];
        let gain = r.p99_gain.map_or_else(|| "-".to_string(), |g| g.to_string());
        match &r.figures {
            Ok(f) => row.extend(latency::thread_cells(f).into_iter().chain([
                "|".into(),
                gain,
                "|".into(),
                opt(r.irq_hard),
                opt(r.irq_threaded),
                "|".into(),
                f.load_check.clone(),
            ])),
            Err(_) => row.extend(cells(&["-", "-", "|", "-", "-", "-", "|", "-", "|", "-", "-", "|", "-"])),
        }
        row.push(exit);
        rows.push(row);
    }
    let mut out = grid(&rows, &[0, 1]);
    for r in runs {
        if let Err(e) = &r.figures {
            out.push_str(&format!("  {}: no figures: {e}\n", title(r.label)));
        }
        if r.interrupted {
            out.push_str(&format!("  {}: cut short by the interrupt after {:.1} s\n", title(r.label), r.elapsed_s));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtswitch::stats::Percentile::Us;

    fn cfg() -> AblationConfig {
        AblationConfig {
            latency: LatencyConfig {
                duration_s: 2.0,
                vcpus: 2,
                interval_us: Some(1000),
                cs_us: None,
                hist_max_us: 20_000,
                slices: 1,
            },
            irq_rate_hz: 1000,
            irq_work_us: 100,
        }
    }

    #[test]
    fn every_run_has_the_lock_and_interrupt_load_and_its_profile() {
        for (_, profile) in RUNS {
            let a = run_args(&cfg(), profile);
            let at = |k: &str| a.iter().position(|x| x == k).map(|i| a[i + 1].as_str());
            assert_eq!(at("--mode"), Some(profile));
            assert_eq!(at("--load"), Some("locks"));
            assert_eq!(at("--irq-load"), Some("1000,100"));
            assert_eq!(at("--interval-us"), Some("1000"));
            assert_eq!(at("--cs-us"), None);
        }
        // Each dimension alone, two together, all three, and the baseline;
        // then all three with each other idle policy.
        let profiles: Vec<switcher::profile::Profile> =
            RUNS.iter().map(|r| switcher::profile::Profile::parse(r.1).expect("a valid profile")).collect();
        let base = switcher::profile::Profile::MAINLINE;
        let changed: Vec<usize> = profiles.iter().map(|p| base.differs(*p).count()).collect();
        assert_eq!(changed, [0, 1, 1, 1, 2, 3, 4, 4]);
    }

    #[test]
    fn gains_are_over_mainline_p99() {
        let run = |label, p99| AblationRun {
            label,
            profile: label,
            profile_name: None,
            exit_code: Some(0),
            elapsed_s: 1.0,
            interrupted: false,
            figures: Ok(RunFigures {
                samples: 10,
                missed: 0,
                thread_p50: Some(Us(10)),
                thread_p99: Some(Us(p99)),
                thread_max_us: Some(p99 * 2),
                irq_p50: None,
                irq_p99: None,
                irq_max_us: None,
                thread_buckets: vec![],
                thread_overflow: 0,
                hist_max_us: None,
                load_check: "ok".into(),
                interval_us: None,
                cs_us: None,
                load_threads: None,
                emulated: None,
                calib_ratio: None,
                probe: Default::default(),
            }),
            irq_hard: Some(5),
            irq_threaded: Some(0),
            p99_gain: None,
        };
        let mut runs = vec![run("mainline", 800), run("locks", 400), run("rt", 100)];
        fill_gains(&mut runs);
        let g: Vec<f64> = runs.iter().map(|r| r.p99_gain.map_or(0.0, |g| g.value)).collect();
        assert_eq!(g, [1.0, 2.0, 8.0]);
        let t = render(&runs);
        assert!(t.contains("8.00x") && t.contains("p99 gain"), "{t}");
        assert!(t.contains("rt locks alone") && t.contains("rt (all three)"), "{t}");
        assert!(RUNS.iter().all(|(label, _)| title(label) != "?"));
    }
}
