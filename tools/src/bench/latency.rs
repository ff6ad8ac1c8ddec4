//! The latency family of `rtswitch bench`: `--load none`, `cpu` and
//! `locks`, each in mainline and in rt (six configurations), with the same
//! vCPUs, interval and critical section. Each configuration runs as
//! `--slices` short runs of the real `rtswitch run` (this executable, a
//! fresh VM each) that together last `--duration`; the slices of all six
//! are interleaved ([`super::slices`]) so that host noise, which comes and
//! goes, lands on both sides of a comparison. Each run's `--json` report
//! gives thread and IRQ latency (all CPUs merged over the boot mode's
//! epochs) and the thread-latency histogram for the plot.
//!
//! A configuration's figures are the medians over its slices (with min
//! and max); a ratio is taken per slice pair, the two runs of one slice,
//! and summed up as its median and spread ([`super::median`]). Ratios
//! named a gain read higher is better for rt (the rt gain: mainline thread
//! p99 / rt thread p99); ratios against a floor read as "times the floor",
//! lower is better. The targets judged on them are in [`super::targets`].

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::child::run_to_json;
use super::cyclictest::HostFigures;
use super::median::{NumSpread, Paired, PctSpread, num_spread, pct_spread};
use super::ratio::pct_ratio;
use super::table::{cells, grid, opt};
use super::verdict::Target;
use rtswitch::report::json::RunReport;
use rtswitch::stats::Percentile;

/// What every latency run shares.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyConfig {
    pub duration_s: f64,
    pub vcpus: u32,
    /// `None`: the guest's default.
    pub interval_us: Option<u32>,
    pub cs_us: Option<u32>,
    pub hist_max_us: u32,
    /// Slices per configuration (the latency family; 1 for the families
    /// that borrow these settings).
    pub slices: u32,
}

impl LatencyConfig {
    /// Seconds of one slice: the duration shared out.
    pub fn slice_s(&self) -> f64 {
        self.duration_s / f64::from(self.slices.max(1))
    }

    /// The settings of one slice's run.
    pub fn slice(&self) -> Self {
        Self { duration_s: self.slice_s(), slices: 1, ..self.clone() }
    }
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
    /// What the run report says about the host beside the latencies.
    pub probe: ProbeFigures,
}

/// Figures of one run about what lies under its latencies, from its
/// `--json` report (docs/latency.md): exits to the hypervisor per
/// measurement activation (all of them, and those between the timer
/// interrupt and the thread), and the time the host itself stalled (the
/// VMM's host-noise probe) during the boot mode's epochs. `None` (`null`
/// in `bench.json`) when the report does not carry them (`--host-noise
/// off`, no usable TSC map, an older report).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ProbeFigures {
    /// Exits per measurement activation, every cause.
    pub exits_per_activation: Option<f64>,
    /// Of those, between the serving timer interrupt and the thread.
    pub irq_to_thread_exits_per_activation: Option<f64>,
    /// Time the host stalled the VM, in ms.
    pub host_stall_ms: Option<f64>,
}

impl ProbeFigures {
    /// Reads them from a run report: the boot mode's totals, and its mode
    /// epochs' host stalls summed.
    pub fn from_report(r: &RunReport) -> Self {
        let mode = r.config.mode.as_str();
        let total = r.mode(mode);
        let stalls: Vec<u64> = r
            .epochs
            .iter()
            .filter(|e| e.kind == "mode" && e.mode == mode)
            .filter_map(|e| e.host_stall.as_ref().map(|h| h.ns))
            .collect();
        Self {
            exits_per_activation: total.and_then(|t| t.exits.per_activation),
            irq_to_thread_exits_per_activation: total.and_then(|t| t.exits.irq_to_thread_per_activation),
            host_stall_ms: (!stalls.is_empty()).then(|| stalls.iter().sum::<u64>() as f64 / 1e6),
        }
    }

    /// Over a configuration's slices: the exits' median, the stalls' sum.
    pub fn over_slices(figs: &[&RunFigures]) -> Self {
        let median = |get: fn(&ProbeFigures) -> Option<f64>| {
            let v: Vec<f64> = figs.iter().filter_map(|f| get(&f.probe)).collect();
            num_spread(&v).map(|s| s.median)
        };
        let stalls: Vec<f64> = figs.iter().filter_map(|f| f.probe.host_stall_ms).collect();
        Self {
            exits_per_activation: median(|p| p.exits_per_activation),
            irq_to_thread_exits_per_activation: median(|p| p.irq_to_thread_exits_per_activation),
            host_stall_ms: (!stalls.is_empty()).then(|| stalls.iter().sum()),
        }
    }
}

impl Serialize for RunFigures {
    /// The run report's names and nesting (docs/reports.md; the
    /// schema of `bench.json` is docs/bench-json.md): `{samples, missed,
    /// thread: {p50, p99, max_us, overflow}, irq: {p50, p99, max_us},
    /// hist_max_us, load_check: {result}, workload: {interval_us, cs_us,
    /// load_threads}, guest: {emulated, calib_ratio}, probe:
    /// {exits_per_activation, host_stall_ms}}`.
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
            probe: &'a ProbeFigures,
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
            probe: &self.probe,
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
            probe: ProbeFigures::from_report(r),
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

/// One slice of one configuration: a run, which slice it belongs to and
/// where it came in the family's sequence.
#[derive(Clone, Debug, Serialize)]
pub struct SliceRun {
    /// 0-based slice (round) index.
    pub slice: u32,
    /// 0-based position in the order the family's runs were made.
    pub seq: u32,
    #[serde(flatten)]
    pub run: RunOutcome,
}

/// A figure's spread over the slices of one configuration.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FigureSpread {
    pub thread_p50: Option<PctSpread>,
    pub thread_p99: Option<PctSpread>,
    pub thread_max_us: Option<NumSpread>,
    pub irq_p50: Option<PctSpread>,
    pub irq_p99: Option<PctSpread>,
    pub irq_max_us: Option<NumSpread>,
}

/// One configuration over its slices: `summary` holds the medians (in
/// `bench.json` flattened into the entry, so `figures.thread.p99.us` is
/// the median p99), `spread` each figure's median, min and max, `slices`
/// every slice's own run.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigRuns {
    #[serde(flatten)]
    pub summary: RunOutcome,
    pub spread: FigureSpread,
    pub slices: Vec<SliceRun>,
}

impl ConfigRuns {
    /// Sums up one configuration's slices (any order; kept by slice index).
    pub fn of(mode: &'static str, load: &'static str, mut slices: Vec<SliceRun>) -> Self {
        slices.sort_by_key(|s| s.slice);
        let figs: Vec<&RunFigures> = slices.iter().filter_map(|s| s.run.figures()).collect();
        let pcts = |f: fn(&RunFigures) -> Option<Percentile>| {
            pct_spread(&figs.iter().filter_map(|x| f(x)).collect::<Vec<_>>())
        };
        let nums = |f: fn(&RunFigures) -> Option<u64>| {
            num_spread(&figs.iter().filter_map(|x| f(x)).map(|v| v as f64).collect::<Vec<_>>())
        };
        let spread = FigureSpread {
            thread_p50: pcts(|f| f.thread_p50),
            thread_p99: pcts(|f| f.thread_p99),
            thread_max_us: nums(|f| f.thread_max_us),
            irq_p50: pcts(|f| f.irq_p50),
            irq_p99: pcts(|f| f.irq_p99),
            irq_max_us: nums(|f| f.irq_max_us),
        };
        let figures = match figs.first() {
            None => {
                let why: Vec<String> = slices
                    .iter()
                    .filter_map(|s| s.run.figures.as_ref().err().map(|e| format!("slice {}: {e}", s.slice + 1)))
                    .collect();
                Err(if why.is_empty() { "no slice ran".to_string() } else { why.join("; ") })
            }
            Some(first) => Ok(median_figures(first, &figs, &spread)),
        };
        let exit_code = slices.iter().map(|s| s.run.exit_code).find(|c| *c != Some(0)).unwrap_or(Some(0));
        let summary = RunOutcome {
            mode,
            load,
            exit_code: if slices.is_empty() { None } else { exit_code },
            elapsed_s: slices.iter().map(|s| s.run.elapsed_s).sum(),
            interrupted: slices.iter().any(|s| s.run.interrupted),
            figures,
        };
        Self { summary, spread, slices }
    }

    /// The slice with this index, if it gave figures whose load check
    /// lets them count (`ok`; `not_run` too for `--load none`).
    pub fn usable(&self, slice: u32) -> Option<&RunFigures> {
        let f = self.slices.iter().find(|s| s.slice == slice)?.run.figures()?;
        (f.load_check == "ok" || (self.summary.load == "none" && f.load_check == "not_run")).then_some(f)
    }
}

/// A configuration's figures: each the median over the slices; samples,
/// missed periods and the histogram (for the plot) summed; the load check
/// `ok` only when every slice's was; the rest from the first slice.
fn median_figures(first: &RunFigures, figs: &[&RunFigures], s: &FigureSpread) -> RunFigures {
    let mut buckets: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    for f in figs {
        for &(us, n) in &f.thread_buckets {
            let b = buckets.entry(us).or_default();
            *b = b.saturating_add(n);
        }
    }
    let check = |c: &str| figs.iter().any(|f| f.load_check == c);
    let load_check = if check("violated") {
        "violated"
    } else if figs.iter().all(|f| f.load_check == "ok") {
        "ok"
    } else {
        "not_run"
    };
    RunFigures {
        samples: figs.iter().map(|f| f.samples).sum(),
        missed: figs.iter().map(|f| f.missed).sum(),
        thread_p50: s.thread_p50.map(|x| x.median),
        thread_p99: s.thread_p99.map(|x| x.median),
        thread_max_us: s.thread_max_us.map(|x| x.median as u64),
        irq_p50: s.irq_p50.map(|x| x.median),
        irq_p99: s.irq_p99.map(|x| x.median),
        irq_max_us: s.irq_max_us.map(|x| x.median as u64),
        thread_buckets: buckets.into_iter().collect(),
        thread_overflow: figs.iter().map(|f| f.thread_overflow).sum(),
        load_check: load_check.to_string(),
        probe: ProbeFigures::over_slices(figs),
        ..first.clone()
    }
}

fn find<'a>(runs: &'a [ConfigRuns], mode: &str, load: &str) -> Option<&'a ConfigRuns> {
    runs.iter().find(|r| r.summary.mode == mode && r.summary.load == load)
}

/// `num` thread p99 / `den` thread p99, slice by slice (`slices` of them).
pub fn pair(runs: &[ConfigRuns], slices: u32, num: (&str, &str), den: (&str, &str)) -> Paired {
    let (n, d) = (find(runs, num.0, num.1), find(runs, den.0, den.1));
    Paired::of(
        (0..slices)
            .map(|k| {
                let p99 = |c: Option<&ConfigRuns>| c.and_then(|c| c.usable(k)).and_then(|f| f.thread_p99);
                pct_ratio(p99(n)?, p99(d)?)
            })
            .collect(),
    )
}

/// One load's rt gain: mainline thread p99 / rt thread p99, per slice.
#[derive(Clone, Debug, Serialize)]
pub struct LoadGain {
    pub load: String,
    pub p99: Paired,
}

/// The rt gain under each load.
pub fn rt_gains(runs: &[ConfigRuns], slices: u32) -> Vec<LoadGain> {
    LOADS
        .iter()
        .map(|l| LoadGain { load: l.to_string(), p99: pair(runs, slices, ("mainline", l), ("rt", l)) })
        .collect()
}

/// The platform's timer delivery to a busy vCPU, timed once per slice
/// round (`--guest-arg platform-costs`).
#[derive(Clone, Debug, Serialize)]
pub struct RoundPlatform {
    pub slice: u32,
    pub timer_busy_p50_ns: Option<u64>,
    pub timer_busy_p99_ns: Option<u64>,
}

/// The latency family's result.
#[derive(Clone, Debug, Serialize)]
pub struct LatencyResult {
    /// Slices per configuration, and the seconds of each.
    pub slices: u32,
    pub slice_s: f64,
    /// The six configurations, in table order, each over its slices.
    pub runs: Vec<ConfigRuns>,
    pub platform: Vec<RoundPlatform>,
    /// The host's cyclictest beside the rt + locks slices.
    pub host: HostFloor,
    pub rt_gain: Vec<LoadGain>,
    pub targets: Vec<Target>,
}

/// Host cyclictest beside the rt + locks slices.
#[derive(Clone, Debug, Serialize)]
pub struct HostFloor {
    /// `null` when it ran; why not otherwise (not installed).
    pub unavailable: Option<String>,
    /// How it was scheduled (`SCHED_FIFO 99`, ...).
    pub sched: Option<String>,
    pub runs: Vec<HostRun>,
    /// Guest rt + locks thread p99 / host p99, per slice.
    pub guest_over_host: Paired,
}

/// One host cyclictest (one rt + locks slice).
#[derive(Clone, Debug, Serialize)]
pub struct HostRun {
    pub slice: u32,
    #[serde(flatten)]
    pub figures: Option<HostFigures>,
    pub error: Option<String>,
}

impl HostFloor {
    /// The host's p99 over its runs.
    pub fn p99(&self) -> Option<PctSpread> {
        pct_spread(&self.runs.iter().filter_map(|r| r.figures.as_ref()?.p99).collect::<Vec<_>>())
    }
}

/// Guest rt + locks thread p99 / host cyclictest p99, per slice.
pub fn guest_over_host(runs: &[ConfigRuns], host: &[HostRun], slices: u32) -> Paired {
    let rt_locks = find(runs, "rt", "locks");
    Paired::of(
        (0..slices)
            .map(|k| {
                let g = rt_locks.and_then(|c| c.usable(k)).and_then(|f| f.thread_p99)?;
                let h = host.iter().find(|h| h.slice == k)?.figures.as_ref()?.p99?;
                pct_ratio(g, h)
            })
            .collect(),
    )
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

/// A percentile spread as `min..max`.
fn range(s: Option<PctSpread>) -> String {
    s.map_or_else(|| "-".to_string(), |s| format!("{}..{}", pct_text(s.min), pct_text(s.max)))
}

fn pct_text(p: Percentile) -> String {
    if p.at_least() { format!(">={}", p.us()) } else { p.us().to_string() }
}

/// The family's table: one row per configuration (medians over its
/// slices, the thread p99's range beside), then the rt gain per load,
/// paired per slice, and the host's own floor.
/// A figure with two decimals, `-` when absent.
fn fig2(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| format!("{x:.2}"))
}

pub fn render(l: &LatencyResult) -> String {
    let mut out = String::new();
    let head = cells(&[
        "run",
        "slices",
        "samples",
        "missed",
        "|",
        "thread p50",
        "p99",
        "max",
        "|",
        "p99 min..max",
        "|",
        "IRQ p50",
        "p99",
        "max",
        "|",
        "exits/act",
        "irq->thread",
        "host stall ms",
        "|",
        "load check",
        "exit",
    ]);
    let mut rows = vec![head];
    for c in &l.runs {
        let r = &c.summary;
        let exit = r.exit_code.map_or_else(|| "killed".to_string(), |c| c.to_string());
        let done = c.slices.iter().filter(|s| s.run.figures().is_some()).count();
        let mut row = vec![r.name(), format!("{done}/{}", l.slices)];
        match &r.figures {
            Ok(f) => row.extend(thread_cells(f).into_iter().chain([
                "|".into(),
                range(c.spread.thread_p99),
                "|".into(),
                opt(f.irq_p50),
                opt(f.irq_p99),
                opt(f.irq_max_us),
                "|".into(),
                fig2(f.probe.exits_per_activation),
                fig2(f.probe.irq_to_thread_exits_per_activation),
                f.probe.host_stall_ms.map_or_else(|| "-".to_string(), |ms| format!("{ms:.1}")),
                "|".into(),
                f.load_check.clone(),
            ])),
            Err(_) => row.extend(cells(&[
                "-", "-", "|", "-", "-", "-", "|", "-", "|", "-", "-", "-", "|", "-", "-", "-", "|", "-",
            ])),
        }
        row.push(exit);
        rows.push(row);
    }
    out.push_str(&grid(&rows, &[0, 19]));
    for c in &l.runs {
        for s in &c.slices {
            if let Err(e) = &s.run.figures {
                out.push_str(&format!("  {} slice {}: no figures: {e}\n", s.run.name(), s.slice + 1));
            }
            if s.run.interrupted {
                out.push_str(&format!(
                    "  {} slice {}: cut short by the interrupt after {:.1} s\n",
                    s.run.name(),
                    s.slice + 1,
                    s.run.elapsed_s
                ));
            }
        }
    }
    out.push_str("  rt gain = mainline / rt thread p99, paired per slice (above 1x rt is lower):\n");
    for g in &l.rt_gain {
        out.push_str(&format!("    {:<6} {}\n", g.load, g.p99.describe()));
    }
    let h = &l.host;
    match (&h.unavailable, h.p99()) {
        (Some(why), _) => out.push_str(&format!("  host floor: {why}: no figure\n")),
        (None, p99) => {
            let p =
                p99.map_or_else(|| "-".to_string(), |s| format!("p99 {} us ({})", pct_text(s.median), range(Some(s))));
            out.push_str(&format!(
                "  host floor: cyclictest on the host beside each rt + locks slice, one thread, {}: {p}; guest rt + \
                 locks / host p99 {}\n",
                h.sched.as_deref().unwrap_or("?"),
                h.guest_over_host.describe()
            ));
            for r in &h.runs {
                if let Some(e) = &r.error {
                    out.push_str(&format!("  host cyclictest slice {}: {e}\n", r.slice + 1));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::ratio::{Bound, Ratio};
    use crate::bench::verdict::{Verdict, at_least, at_most};
    use rtswitch::stats::Percentile::{AtLeast, Us};

    fn cfg() -> LatencyConfig {
        LatencyConfig {
            duration_s: 2.5,
            vcpus: 4,
            interval_us: Some(2000),
            cs_us: Some(300),
            hist_max_us: 100_000,
            slices: 1,
        }
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

    /// A configuration over slices: each figure the median, samples and
    /// the histogram summed, the table row from the medians.
    #[test]
    fn a_configuration_is_the_median_of_its_slices() {
        let slices: Vec<SliceRun> = [(900, "ok"), (2600, "ok"), (1200, "ok")]
            .iter()
            .zip(0..3)
            .map(|(&(p99, check), slice)| SliceRun {
                slice,
                seq: slice * 6 + 5,
                run: RunOutcome {
                    mode: "rt",
                    load: "locks",
                    exit_code: Some(0),
                    elapsed_s: 2.0,
                    interrupted: false,
                    figures: RunFigures::from_report(&report("rt", 300, (p99, false), p99 + 100, check)),
                },
            })
            .rev()
            .collect();
        let c = ConfigRuns::of("rt", "locks", slices);
        assert_eq!(c.slices.iter().map(|s| s.slice).collect::<Vec<_>>(), [0, 1, 2]);
        let f = c.summary.figures().unwrap();
        assert_eq!((f.thread_p99, f.thread_max_us), (Some(Us(1200)), Some(1300)));
        assert_eq!((f.samples, f.missed, f.load_check.as_str()), (3 * 1980, 9, "ok"));
        assert_eq!(f.thread_buckets, vec![(300, 3000), (900, 20), (1200, 20), (2600, 20)]);
        let s = c.spread.thread_p99.unwrap();
        assert_eq!((s.min, s.median, s.max), (Us(900), Us(1200), Us(2600)));
        assert!((c.summary.elapsed_s - 6.0).abs() < 1e-9);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["figures"]["thread"]["p99"]["us"], 1200, "{v}");
        assert_eq!(v["spread"]["thread_p99"]["max"]["us"], 2600, "{v}");
        assert_eq!(v["slices"][1]["figures"]["thread"]["p99"]["us"], 2600, "{v}");
        assert_eq!((v["slices"][1]["slice"].as_u64(), v["slices"][1]["seq"].as_u64()), (Some(1), Some(11)), "{v}");
        assert_eq!(v["mode"], "rt");

        // A violated slice makes the whole configuration's check violated,
        // and that slice does not pair.
        let mut bad = c.clone();
        if let Ok(f) = &mut bad.slices[1].run.figures {
            f.load_check = "violated".into();
        }
        let bad = ConfigRuns::of("rt", "locks", bad.slices);
        assert_eq!(bad.summary.figures().map(|f| f.load_check.as_str()), Some("violated"));
        assert!(bad.usable(1).is_none() && bad.usable(0).is_some());

        // No slice with figures: the reasons, per slice.
        let mut failed = c.slices.clone();
        for s in &mut failed {
            s.run.figures = Err("killed".into());
            s.run.exit_code = None;
        }
        let failed = ConfigRuns::of("rt", "locks", failed);
        assert_eq!(failed.summary.figures.as_ref().unwrap_err(), "slice 1: killed; slice 2: killed; slice 3: killed");
        assert_eq!(failed.summary.exit_code, None);
    }

    #[test]
    fn the_table_shows_medians_ranges_and_paired_gains() {
        let mk = |mode: &'static str, load: &'static str, p99s: [u64; 2]| {
            let check = if load == "none" { "not_run" } else { "ok" };
            let slices = p99s
                .iter()
                .zip(0..)
                .map(|(&p, slice)| SliceRun {
                    slice,
                    seq: slice,
                    run: RunOutcome {
                        mode,
                        load,
                        exit_code: Some(0),
                        elapsed_s: 1.0,
                        interrupted: false,
                        figures: RunFigures::from_report(&report(mode, 100, (p, false), p * 2, check)),
                    },
                })
                .collect();
            ConfigRuns::of(mode, load, slices)
        };
        let runs: Vec<ConfigRuns> = RUNS
            .iter()
            .map(|&(m, l)| match (m, l) {
                ("mainline", "locks") => mk(m, l, [3000, 4000]),
                ("rt", "locks") => mk(m, l, [600, 500]),
                _ => mk(m, l, [400, 400]),
            })
            .collect();
        let host = HostFloor {
            unavailable: Some("cyclictest is not installed".into()),
            sched: None,
            runs: vec![],
            guest_over_host: Paired::of(vec![]),
        };
        let l = LatencyResult {
            slices: 2,
            slice_s: 2.5,
            rt_gain: rt_gains(&runs, 2),
            runs,
            platform: vec![],
            host,
            targets: vec![],
        };
        let text = render(&l);
        println!("{text}");
        let row = text.lines().find(|x| x.trim_start().starts_with("mainline + locks")).unwrap();
        // Nearest-rank median of two is the lower.
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            [
                "mainline",
                "+",
                "locks",
                "2/2",
                "3960",
                "6",
                "|",
                "100",
                "3000",
                "6000",
                "|",
                "3000..4000",
                "|",
                "400",
                "1300",
                "2000",
                "|",
                "2.00",
                "0.50",
                "-",
                "|",
                "ok",
                "0"
            ]
        );
        assert!(text.contains("locks  5.00x (median of 2 of 2 slices, 5.00..8.00, spread 1.60x)"), "{text}");
        assert!(text.contains("none   1.00x"), "{text}");
        assert!(text.contains("host floor: cyclictest is not installed: no figure"), "{text}");
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
}
