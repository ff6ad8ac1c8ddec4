//! The latency family of `rtswitch bench`: six runs of the real
//! `rtswitch run` (this executable), one after another, with the same
//! duration, vCPUs, interval and critical section: `--load none`, `cpu`
//! and `locks`, each in mainline and in rt. Each run's `--json` report
//! gives thread and IRQ latency (all CPUs merged over the boot mode's
//! epochs) and the thread-latency histogram for the plot.
//!
//! Ratios read one way everywhere, higher is better for rt: the rt gain
//! (mainline thread p99 / rt thread p99) for each load, and how near rt +
//! locks stays to the rt + cpu floor (the same busy work without a lock:
//! rt + cpu p99 / rt + locks p99, 1x at the floor). Two targets are judged
//! on p99, never adjusted:
//!
//! - rt gain under lock load: mainline + locks p99 / rt + locks p99 >= 10x;
//! - rt near the cpu floor: rt + cpu p99 / rt + locks p99 >= 1 / 1.5 (rt +
//!   locks at most 1.5 times the floor).
//!
//! Maxima are shown beside them: on a host with time slicing a max is
//! mostly host noise.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::child::run_to_json;
use super::table::{cells, grid, opt};
use rtswitch::report::json::RunReport;
use rtswitch::stats::Percentile;

/// Target: rt thread p99 at least this many times lower than mainline's under `--load locks`.
pub const TARGET_RT_GAIN: f64 = 10.0;
/// Target: rt thread p99 under `--load locks` at most this many times the `--load cpu` floor.
pub const TARGET_FLOOR_RATIO: f64 = 1.5;
/// The same target as a gain (floor p99 / rt + locks p99, higher is better).
pub const TARGET_FLOOR_GAIN: f64 = 1.0 / TARGET_FLOOR_RATIO;

/// What every latency run shares.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyConfig {
    pub duration_s: f64,
    pub vcpus: u32,
    /// `None`: the guest's default.
    pub interval_us: Option<u32>,
    pub cs_us: Option<u32>,
    pub hist_max_us: u32,
}

/// The six runs, in the order they are made and printed: (mode, load).
pub const RUNS: [(&str, &str); 6] =
    [("mainline", "none"), ("rt", "none"), ("mainline", "cpu"), ("rt", "cpu"), ("mainline", "locks"), ("rt", "locks")];

/// The loads, in table order.
pub const LOADS: [&str; 3] = ["none", "cpu", "locks"];

/// What the benchmark takes from one run's `--json` file. In `bench.json`
/// it is written with the run report's names ([`RunFigures::serialize`]):
/// `thread.p99.us` as in the report's `modes[].thread.p99.us`.
#[derive(Clone, Debug, PartialEq)]
pub struct RunFigures {
    pub samples: u64,
    pub missed: u64,
    pub thread_p50: Option<Percentile>,
    pub thread_p99: Option<Percentile>,
    pub thread_max_us: Option<u64>,
    pub irq_p50: Option<Percentile>,
    pub irq_p99: Option<Percentile>,
    pub irq_max_us: Option<u64>,
    /// Thread latency histogram (all CPUs merged): non-empty 1 µs buckets
    /// `[us, count]`, samples beyond the range, and the range (the
    /// buckets are for the plot, not written).
    pub thread_buckets: Vec<(u64, u64)>,
    pub thread_overflow: u64,
    pub hist_max_us: Option<u64>,
    /// `ok`, `violated` or `not_run`.
    pub load_check: String,
    /// The workload as the guest ran it.
    pub interval_us: Option<u64>,
    pub cs_us: Option<u64>,
    pub load_threads: Option<u64>,
    pub emulated: Option<bool>,
    /// Guest ring-0 time per calibration iteration over the host's.
    pub calib_ratio: Option<f64>,
}

impl Serialize for RunFigures {
    /// The run report's names and nesting (docs/reports.md; the
    /// schema of `bench.json` is docs/bench-json.md): `{samples, missed,
    /// thread: {p50, p99, max_us, overflow}, irq: {p50, p99, max_us},
    /// hist_max_us, load_check: {result}, workload: {interval_us, cs_us,
    /// load_threads}, guest: {emulated, calib_ratio}}`.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Hist {
            p50: Option<Percentile>,
            p99: Option<Percentile>,
            max_us: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            overflow: Option<u64>,
        }
        #[derive(Serialize)]
        struct LoadCheck<'a> {
            result: &'a str,
        }
        #[derive(Serialize)]
        struct Workload {
            interval_us: Option<u64>,
            cs_us: Option<u64>,
            load_threads: Option<u64>,
        }
        #[derive(Serialize)]
        struct Guest {
            emulated: Option<bool>,
            calib_ratio: Option<f64>,
        }
        #[derive(Serialize)]
        struct Figures<'a> {
            samples: u64,
            missed: u64,
            thread: Hist,
            irq: Hist,
            hist_max_us: Option<u64>,
            load_check: LoadCheck<'a>,
            workload: Workload,
            guest: Guest,
        }
        Figures {
            samples: self.samples,
            missed: self.missed,
            thread: Hist {
                p50: self.thread_p50,
                p99: self.thread_p99,
                max_us: self.thread_max_us,
                overflow: Some(self.thread_overflow),
            },
            irq: Hist { p50: self.irq_p50, p99: self.irq_p99, max_us: self.irq_max_us, overflow: None },
            hist_max_us: self.hist_max_us,
            load_check: LoadCheck { result: &self.load_check },
            workload: Workload { interval_us: self.interval_us, cs_us: self.cs_us, load_threads: self.load_threads },
            guest: Guest { emulated: self.emulated, calib_ratio: self.calib_ratio },
        }
        .serialize(s)
    }
}

impl RunFigures {
    /// Reads a run report (`rtswitch run --json`): all CPUs merged over
    /// the boot mode's epochs (`modes[]`).
    pub fn from_report(r: &RunReport) -> Result<Self, String> {
        let mode = r.config.mode.as_str();
        let total =
            r.mode(mode).ok_or_else(|| format!("no samples in the boot mode {mode} (modes[] has no entry for it)"))?;
        let (thread, irq) = (&total.thread.stats, &total.irq.stats);
        let w = r.workload.as_ref();
        let g = r.guest.as_ref();
        Ok(Self {
            samples: total.samples,
            missed: total.missed,
            thread_p50: thread.p50,
            thread_p99: thread.p99,
            thread_max_us: thread.max_us,
            irq_p50: irq.p50,
            irq_p99: irq.p99,
            irq_max_us: irq.max_us,
            thread_buckets: total.thread.buckets.iter().flatten().map(|&[us, n]| (us, n)).collect(),
            thread_overflow: thread.overflow,
            hist_max_us: Some(u64::from(r.config.hist_max_us)),
            load_check: r.load_check.result.clone(),
            interval_us: w.map(|w| u64::from(w.interval_us)),
            cs_us: w.map(|w| u64::from(w.cs_us)),
            load_threads: w.map(|w| u64::from(w.load_threads)),
            emulated: g.and_then(|g| g.emulated),
            calib_ratio: g.and_then(|g| g.calib_ratio),
        })
    }
}

/// One run as the benchmark saw it.
#[derive(Clone, Debug, Serialize)]
pub struct RunOutcome {
    pub mode: &'static str,
    pub load: &'static str,
    /// The process exit status (`None`: killed or never started).
    pub exit_code: Option<i32>,
    pub elapsed_s: f64,
    /// Cut short by Ctrl-C on the suite: its figures cover `elapsed_s`.
    pub interrupted: bool,
    /// `Err`: why there are no figures.
    #[serde(serialize_with = "ser_figures")]
    pub figures: Result<RunFigures, String>,
}

fn ser_figures<S: serde::Serializer>(f: &Result<RunFigures, String>, s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    #[serde(untagged)]
    enum F<'a> {
        Ok(&'a RunFigures),
        Err { error: &'a str },
    }
    match f {
        Ok(r) => F::Ok(r).serialize(s),
        Err(e) => F::Err { error: e }.serialize(s),
    }
}

impl RunOutcome {
    pub fn name(&self) -> String {
        format!("{} + {}", self.mode, self.load)
    }

    pub fn figures(&self) -> Option<&RunFigures> {
        self.figures.as_ref().ok()
    }
}

/// How far a ratio is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    Exact,
    /// The ratio is at least `value` (its numerator overflowed, or its denominator is below 1 µs).
    AtLeast,
    /// The ratio is at most `value` (its denominator overflowed).
    AtMost,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Ratio {
    pub value: f64,
    pub bound: Bound,
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefix = match self.bound {
            Bound::Exact => "",
            Bound::AtLeast => ">=",
            Bound::AtMost => "<=",
        };
        write!(f, "{prefix}{:.2}x", self.value)
    }
}

/// `num / den` of two percentiles, with how far it is known; `None` when
/// it is not (both overflowed, or both below 1 µs).
pub fn pct_ratio(num: Percentile, den: Percentile) -> Option<Ratio> {
    let (n, d) = (num.us() as f64, den.us());
    match (num.at_least(), den.at_least()) {
        (true, true) => None,
        (true, false) if d == 0 => Some(Ratio { value: n, bound: Bound::AtLeast }),
        (true, false) => Some(Ratio { value: n / d as f64, bound: Bound::AtLeast }),
        (false, true) => Some(Ratio { value: n / d.max(1) as f64, bound: Bound::AtMost }),
        (false, false) if d == 0 && num.us() == 0 => None,
        // A p99 in the [0, 1) µs bucket: the ratio is at least num / 1.
        (false, false) if d == 0 => Some(Ratio { value: n, bound: Bound::AtLeast }),
        (false, false) => Some(Ratio { value: n / d as f64, bound: Bound::Exact }),
    }
}

/// Whether a target was met, as far as the figures tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    NotMet,
    /// The figures do not decide it (a run failed, or a bound points the wrong way).
    Unknown,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "NOT MET",
            Verdict::Unknown => "unknown",
        }
    }
}

/// Target "ratio >= target".
pub fn at_least(r: Option<Ratio>, target: f64) -> Verdict {
    match r {
        None => Verdict::Unknown,
        Some(Ratio { value, bound: Bound::Exact }) => {
            if value >= target {
                Verdict::Met
            } else {
                Verdict::NotMet
            }
        }
        Some(Ratio { value, bound: Bound::AtLeast }) if value >= target => Verdict::Met,
        Some(Ratio { value, bound: Bound::AtMost }) if value < target => Verdict::NotMet,
        Some(_) => Verdict::Unknown,
    }
}

/// Target "ratio <= target".
pub fn at_most(r: Option<Ratio>, target: f64) -> Verdict {
    match r {
        None => Verdict::Unknown,
        Some(Ratio { value, bound: Bound::Exact }) => {
            if value <= target {
                Verdict::Met
            } else {
                Verdict::NotMet
            }
        }
        Some(Ratio { value, bound: Bound::AtMost }) if value <= target => Verdict::Met,
        Some(Ratio { value, bound: Bound::AtLeast }) if value > target => Verdict::NotMet,
        Some(_) => Verdict::Unknown,
    }
}

/// One of the two judged comparisons: p99 against its target, max beside it.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub what: &'static str,
    /// Run names: numerator, denominator.
    pub num: String,
    pub den: String,
    pub p99: Option<Ratio>,
    pub max: Option<f64>,
    /// `>=` or `<=`.
    pub target_op: &'static str,
    pub target: f64,
    pub verdict: Verdict,
}

fn find<'a>(runs: &'a [RunOutcome], mode: &str, load: &str) -> Option<&'a RunOutcome> {
    runs.iter().find(|r| r.mode == mode && r.load == load)
}

fn compare(
    what: &'static str,
    runs: &[RunOutcome],
    num: (&str, &str),
    den: (&str, &str),
    target_op: &'static str,
    target: f64,
) -> Comparison {
    let (n, d) = (
        find(runs, num.0, num.1).and_then(RunOutcome::figures),
        find(runs, den.0, den.1).and_then(RunOutcome::figures),
    );
    let p99 = match (n.and_then(|f| f.thread_p99), d.and_then(|f| f.thread_p99)) {
        (Some(a), Some(b)) => pct_ratio(a, b),
        _ => None,
    };
    let max = match (n.and_then(|f| f.thread_max_us), d.and_then(|f| f.thread_max_us)) {
        (Some(a), Some(b)) if b > 0 => Some(a as f64 / b as f64),
        _ => None,
    };
    // A run whose load check did not pass measured nothing worth comparing.
    let checked = [n, d].iter().all(|f| f.is_some_and(|f| f.load_check == "ok"));
    let verdict = if !checked {
        Verdict::Unknown
    } else if target_op == ">=" {
        at_least(p99, target)
    } else {
        at_most(p99, target)
    };
    let name = |(m, l): (&str, &str)| format!("{m} + {l}");
    Comparison { what, num: name(num), den: name(den), p99, max, target_op, target, verdict }
}

/// The two judged comparisons.
pub fn comparisons(runs: &[RunOutcome]) -> Vec<Comparison> {
    vec![
        compare("rt gain under lock load", runs, ("mainline", "locks"), ("rt", "locks"), ">=", TARGET_RT_GAIN),
        compare("rt near the cpu floor", runs, ("rt", "cpu"), ("rt", "locks"), ">=", TARGET_FLOOR_GAIN),
    ]
}

/// The rt gain under one load: mainline thread p99 / rt thread p99 (above
/// 1: rt is lower).
pub fn rt_gain(runs: &[RunOutcome], load: &str) -> Option<Ratio> {
    let p99 = |m| find(runs, m, load).and_then(RunOutcome::figures).and_then(|f| f.thread_p99);
    pct_ratio(p99("mainline")?, p99("rt")?)
}

/// A target as printed: `10`, `0.67`.
pub fn target_text(t: f64) -> String {
    let s = format!("{t:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The `rtswitch run` arguments of one latency run (the caller adds `--json`).
pub fn run_args(cfg: &LatencyConfig, mode: &str, load: &str) -> Vec<String> {
    let mut v = cells(&["run", "--quiet", "--serial", "none", "--mode", mode, "--load", load]);
    v.extend(["--vcpus".into(), cfg.vcpus.to_string(), "--duration".into(), cfg.duration_s.to_string()]);
    v.extend(["--hist-max-us".into(), cfg.hist_max_us.to_string()]);
    if let Some(i) = cfg.interval_us {
        v.extend(["--interval-us".to_string(), i.to_string()]);
    }
    if let Some(c) = cfg.cs_us {
        v.extend(["--cs-us".to_string(), c.to_string()]);
    }
    v
}

/// Seconds one run is given before it is killed: its duration, the
/// shutdown grace period, boot and slack.
pub fn run_limit(cfg: &LatencyConfig) -> Duration {
    Duration::from_secs_f64(cfg.duration_s + 70.0)
}

/// A run's first table cells: samples, missed, `|`, thread p50, p99, max.
pub fn thread_cells(f: &RunFigures) -> [String; 6] {
    [
        f.samples.to_string(),
        f.missed.to_string(),
        "|".into(),
        opt(f.thread_p50),
        opt(f.thread_p99),
        opt(f.thread_max_us),
    ]
}

/// Makes one run.
pub fn run_one(exe: &Path, cfg: &LatencyConfig, mode: &'static str, load: &'static str, json: &Path) -> RunOutcome {
    let r = run_to_json(exe, &run_args(cfg, mode, load), json, run_limit(cfg));
    let figures = r.report.and_then(|v| RunFigures::from_report(&v));
    RunOutcome { mode, load, exit_code: r.exit_code, elapsed_s: r.elapsed_s, interrupted: r.interrupted, figures }
}

/// The family's table: one row per run, then the ratios and targets.
pub fn render(runs: &[RunOutcome], cmp: &[Comparison]) -> String {
    let mut out = String::new();
    let head = cells(&[
        "run",
        "samples",
        "missed",
        "|",
        "thread p50",
        "p99",
        "max",
        "|",
        "IRQ p50",
        "p99",
        "max",
        "|",
        "load check",
        "exit",
    ]);
    let mut rows = vec![head];
    for r in runs {
        let exit = r.exit_code.map_or_else(|| "killed".to_string(), |c| c.to_string());
        let mut row = vec![r.name()];
        match &r.figures {
            Ok(f) => row.extend(thread_cells(f).into_iter().chain([
                "|".into(),
                opt(f.irq_p50),
                opt(f.irq_p99),
                opt(f.irq_max_us),
                "|".into(),
                f.load_check.clone(),
            ])),
            Err(_) => row.extend(cells(&["-", "-", "|", "-", "-", "-", "|", "-", "-", "-", "|", "-"])),
        }
        row.push(exit);
        rows.push(row);
    }
    out.push_str(&grid(&rows, &[0, 12]));
    for r in runs {
        if let Err(e) = &r.figures {
            out.push_str(&format!("  {}: no figures: {e}\n", r.name()));
        }
        if r.interrupted {
            out.push_str(&format!("  {}: cut short by the interrupt after {:.1} s\n", r.name(), r.elapsed_s));
        }
    }
    let ratios: Vec<String> = LOADS
        .iter()
        .map(|l| format!("{l} {}", rt_gain(runs, l).map_or_else(|| "unknown".to_string(), |r| r.to_string())))
        .collect();
    out.push_str(&format!("  rt gain = mainline / rt thread p99 (above 1x rt is lower): {}\n", ratios.join(", ")));
    for c in cmp {
        let ratio = c.p99.map_or_else(|| "unknown".to_string(), |r| r.to_string());
        let max = c.max.map_or_else(|| "unknown".to_string(), |r| format!("{r:.2}x"));
        out.push_str(&format!(
            "  {} ({} / {}): p99 {ratio}, target {} {}x: {}   (max {max}, not judged: mostly host noise)\n",
            c.what,
            c.num,
            c.den,
            c.target_op,
            target_text(c.target),
            c.verdict.text()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtswitch::stats::Percentile::{AtLeast, Us};

    fn cfg() -> LatencyConfig {
        LatencyConfig { duration_s: 2.5, vcpus: 4, interval_us: Some(2000), cs_us: Some(300), hist_max_us: 100_000 }
    }

    /// A run report as `rtswitch run --json` writes it, with the figures the benchmark reads.
    fn report(mode: &str, p50: u64, p99: (u64, bool), max: u64, load_check: &str) -> RunReport {
        let mut r = rtswitch::report::json::tests::report();
        r.config.mode = mode.into();
        r.config.hist_max_us = 100_000;
        let g = r.guest.as_mut().expect("the sample report has a guest");
        (g.emulated, g.calib_ratio) = (Some(true), Some(2440.4));
        let w = r.workload.as_mut().expect("the sample report has a workload");
        (w.interval_us, w.cs_us, w.load_threads) = (10_000, 5000, 2);
        r.load_check.result = load_check.into();
        let mut total = r.modes[0].clone();
        (total.mode, total.samples, total.missed) = (mode.into(), 1980, 3);
        let irq = &mut total.irq.stats;
        (irq.p50, irq.p99, irq.max_us) = (Some(Us(400)), Some(Us(1300)), Some(2000));
        let thread = &mut total.thread.stats;
        thread.p50 = Some(Us(p50));
        thread.p99 = Some(if p99.1 { AtLeast(p99.0) } else { Us(p99.0) });
        (thread.max_us, thread.overflow) = (Some(max), 2);
        total.thread.buckets = Some(vec![[p50, 1000], [p99.0, 20]]);
        r.modes = vec![total];
        r
    }

    fn six(reports: [RunReport; 6]) -> Vec<RunOutcome> {
        reports
            .iter()
            .zip(RUNS)
            .map(|(v, (mode, load))| RunOutcome {
                mode,
                load,
                exit_code: Some(0),
                elapsed_s: 10.3,
                interrupted: false,
                figures: RunFigures::from_report(v),
            })
            .collect()
    }

    fn runs(ml_locks: (u64, bool), rt_locks: (u64, bool), rt_cpu: (u64, bool)) -> Vec<RunOutcome> {
        six([
            report("mainline", 300, (900, false), 1000, "not_run"),
            report("rt", 300, (800, false), 1000, "not_run"),
            report("mainline", 700, (1600, false), 1800, "ok"),
            report("rt", 600, rt_cpu, 9600, "ok"),
            report("mainline", 3000, ml_locks, 10_600, "ok"),
            report("rt", 500, rt_locks, 4400, "ok"),
        ])
    }

    #[test]
    fn the_run_command_lines() {
        assert_eq!(
            run_args(&cfg(), "rt", "cpu").join(" "),
            "run --quiet --serial none --mode rt --load cpu --vcpus 4 --duration 2.5 --hist-max-us 100000 \
             --interval-us 2000 --cs-us 300"
        );
        let c = LatencyConfig { interval_us: None, cs_us: None, ..cfg() };
        assert!(!run_args(&c, "rt", "none").iter().any(|a| a == "--cs-us" || a == "--interval-us"));
    }

    #[test]
    fn figures_come_from_the_boot_modes_total() {
        let f = RunFigures::from_report(&report("rt", 700, (2600, false), 4400, "ok")).unwrap();
        assert_eq!(f.samples, 1980);
        assert_eq!(f.thread_p99, Some(Us(2600)));
        assert_eq!(f.thread_max_us, Some(4400));
        assert_eq!(f.irq_p99, Some(Us(1300)));
        assert_eq!((f.irq_p50.map(Percentile::us), f.irq_max_us), (Some(400), Some(2000)));
        assert_eq!(f.thread_buckets, vec![(700, 1000), (2600, 20)]);
        assert_eq!((f.thread_overflow, f.hist_max_us), (2, Some(100_000)));
        assert_eq!((f.cs_us, f.emulated), (Some(5000), Some(true)));
        let mut v = report("rt", 1, (1, false), 1, "ok");
        v.modes.clear();
        assert!(RunFigures::from_report(&v).unwrap_err().contains("no samples"));
    }

    #[test]
    fn ratios_carry_their_bounds() {
        let p = |us, at_least| if at_least { AtLeast(us) } else { Us(us) };
        assert_eq!(pct_ratio(p(9000, false), p(900, false)), Some(Ratio { value: 10.0, bound: Bound::Exact }));
        assert_eq!(pct_ratio(p(100_000, true), p(500, false)), Some(Ratio { value: 200.0, bound: Bound::AtLeast }));
        assert_eq!(pct_ratio(p(500, false), p(1000, true)), Some(Ratio { value: 0.5, bound: Bound::AtMost }));
        assert_eq!(pct_ratio(p(100, true), p(100, true)), None);
        assert_eq!(pct_ratio(p(40, false), p(0, false)), Some(Ratio { value: 40.0, bound: Bound::AtLeast }));
        assert_eq!(pct_ratio(p(0, false), p(0, false)), None);
        assert_eq!(Ratio { value: 3.594, bound: Bound::Exact }.to_string(), "3.59x");
        assert_eq!(Ratio { value: 200.0, bound: Bound::AtLeast }.to_string(), ">=200.00x");
    }

    #[test]
    fn verdicts_follow_the_targets_and_bounds() {
        let r = |value, bound| Some(Ratio { value, bound });
        assert_eq!(at_least(r(10.0, Bound::Exact), 10.0), Verdict::Met);
        assert_eq!(at_least(r(9.99, Bound::Exact), 10.0), Verdict::NotMet);
        assert_eq!(at_least(r(12.0, Bound::AtLeast), 10.0), Verdict::Met);
        assert_eq!(at_least(r(5.0, Bound::AtLeast), 10.0), Verdict::Unknown);
        assert_eq!(at_least(r(5.0, Bound::AtMost), 10.0), Verdict::NotMet);
        assert_eq!(at_least(r(12.0, Bound::AtMost), 10.0), Verdict::Unknown);
        assert_eq!(at_least(None, 10.0), Verdict::Unknown);
        assert_eq!(at_most(r(1.5, Bound::Exact), 1.5), Verdict::Met);
        assert_eq!(at_most(r(1.51, Bound::Exact), 1.5), Verdict::NotMet);
        assert_eq!(at_most(r(1.2, Bound::AtMost), 1.5), Verdict::Met);
        assert_eq!(at_most(r(2.0, Bound::AtMost), 1.5), Verdict::Unknown);
        assert_eq!(at_most(r(2.0, Bound::AtLeast), 1.5), Verdict::NotMet);
        assert_eq!(at_most(r(1.0, Bound::AtLeast), 1.5), Verdict::Unknown);
    }

    #[test]
    fn targets_met_and_missed_are_printed_as_measured() {
        let r = runs((9600, false), (800, false), (667, false));
        let cmp = comparisons(&r);
        assert_eq!(cmp[0].p99, Some(Ratio { value: 12.0, bound: Bound::Exact }));
        assert_eq!((cmp[0].verdict, cmp[1].verdict), (Verdict::Met, Verdict::Met));
        assert!((cmp[0].max.unwrap() - 10_600.0 / 4400.0).abs() < 1e-9);
        assert_eq!((cmp[1].num.as_str(), cmp[1].den.as_str()), ("rt + cpu", "rt + locks"));
        let text = render(&r, &cmp);
        println!("{text}");
        assert!(
            text.contains("rt gain under lock load (mainline + locks / rt + locks): p99 12.00x, target >= 10x: met")
        );
        assert!(text.contains("rt near the cpu floor (rt + cpu / rt + locks): p99 0.83x, target >= 0.67x: met"));
        assert!(
            text.contains(
                "rt gain = mainline / rt thread p99 (above 1x rt is lower): none 1.12x, cpu 2.40x, locks 12.00x"
            ),
            "{text}"
        );
        let row = text.lines().find(|l| l.trim_start().starts_with("mainline + locks")).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            [
                "mainline", "+", "locks", "1980", "3", "|", "3000", "9600", "10600", "|", "400", "1300", "2000", "|",
                "ok", "0"
            ]
        );

        let r = runs((9627, false), (2682, false), (1676, false));
        let cmp = comparisons(&r);
        assert_eq!((cmp[0].verdict, cmp[1].verdict), (Verdict::NotMet, Verdict::NotMet));
        let text = render(&r, &cmp);
        assert!(text.contains("p99 3.59x, target >= 10x: NOT MET"), "{text}");
        assert!(text.contains("p99 0.62x, target >= 0.67x: NOT MET"), "{text}");

        // An overflowed mainline p99 is a lower bound, still enough to decide.
        let r = runs((100_000, true), (2000, false), (1676, false));
        let cmp = comparisons(&r);
        assert_eq!(cmp[0].verdict, Verdict::Met);
        assert!(render(&r, &cmp).contains("p99 >=50.00x, target >= 10x: met"));
    }

    #[test]
    fn figures_are_written_with_the_run_reports_names() {
        let f = RunFigures::from_report(&report("rt", 700, (2600, false), 4400, "ok")).unwrap();
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(v["thread"]["p99"]["us"], 2600, "{v}");
        assert_eq!(v["thread"]["max_us"], 4400, "{v}");
        assert_eq!(v["irq"]["p50"]["us"], 400, "{v}");
        assert_eq!(v["load_check"]["result"], "ok", "{v}");
        assert_eq!(v["workload"]["cs_us"], 5000, "{v}");
        assert_eq!(v["guest"]["emulated"], true, "{v}");
        assert!(v.get("thread_p99").is_none() && v.get("thread_buckets").is_none(), "{v}");
        // The same path as in the run report's modes[].
        let report = serde_json::to_value(report("rt", 700, (2600, false), 4400, "ok")).unwrap();
        assert_eq!(report["modes"][0]["thread"]["p99"]["us"], v["thread"]["p99"]["us"]);
    }

    #[test]
    fn failed_runs_and_violated_checks_decide_nothing() {
        let mut r = runs((9600, false), (800, false), (667, false));
        r[5].figures = RunFigures::from_report(&report("rt", 500, (800, false), 4400, "violated"));
        r[5].exit_code = Some(1);
        r[3].exit_code = None;
        r[3].figures = Err("did not exit within 80 s; killed".into());
        let cmp = comparisons(&r);
        assert_eq!((cmp[0].verdict, cmp[1].verdict), (Verdict::Unknown, Verdict::Unknown));
        assert_eq!(cmp[1].p99, None);
        let text = render(&r, &cmp);
        println!("{text}");
        assert!(text.contains("rt + cpu: no figures: did not exit within 80 s; killed"), "{text}");
        assert!(text.contains("target >= 0.67x: unknown"), "{text}");
        assert!(text.contains("cpu unknown"), "{text}");
    }
}
