//! `rtswitch bench`: the latency benchmark of issue 4 (README.md,
//! "Benchmark"). It runs the real `rtswitch run` (this executable) four
//! times, one after another, with the same duration, vCPUs, interval and
//! critical section: mainline + locks, rt + locks, mainline + cpu, rt + cpu;
//! reads each run's `--json` file and prints them side by side with the
//! ratios the issue asks for:
//!
//! - rt gain under lock load: mainline+locks thread p99 / rt+locks thread
//!   p99, target >= 10x;
//! - rt against the cpu floor: rt+locks thread p99 / rt+cpu thread p99,
//!   target <= 1.5x (the `cpu` load is the same busy work without a lock:
//!   what the CPU load alone costs).
//!
//! Percentiles are judged; the maxima are shown beside them because on a
//! host with time slicing they are mostly host noise. Whether each target
//! was met is printed as measured, never adjusted. The exit status says
//! whether the four runs worked, not whether the targets were met.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use serde_json::Value;
use switcher::abi::MAX_CPUS;

use crate::cli::{DEFAULT_VCPUS, MAX_HIST_MAX_US};
use crate::exit_code::ExitCode;

/// Histogram range of the benchmark's runs: wide, so that a mainline p99
/// under lock load stays a figure rather than an overflow.
pub const DEFAULT_BENCH_HIST_MAX_US: u32 = 100_000;
/// Target: rt thread p99 at least this many times lower than mainline's under `--load locks`.
pub const TARGET_RT_GAIN: f64 = 10.0;
/// Target: rt thread p99 under `--load locks` at most this many times the `--load cpu` floor.
pub const TARGET_FLOOR_RATIO: f64 = 1.5;
/// Schema version of the `--json` comparison file.
pub const BENCH_JSON_VERSION: u32 = 1;

const MAX_BENCH_SECS: f64 = 3600.0;

/// `rtswitch bench` options.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Seconds per run (four runs, one after another).
    #[arg(long, value_name = "SECS", default_value_t = 10.0, value_parser = parse_secs)]
    pub duration: f64,
    /// vCPUs of every run (1..=64).
    #[arg(long, default_value_t = DEFAULT_VCPUS, value_parser = clap::value_parser!(u32).range(1..=MAX_CPUS as i64))]
    pub vcpus: u32,
    /// Critical-section length in µs, passed to every run (default: the guest's).
    #[arg(long, value_name = "US", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub cs_us: Option<u32>,
    /// Measurement period in µs, passed to every run (default: the guest's).
    #[arg(long, value_name = "US", value_parser = clap::value_parser!(u32).range(100..=1_000_000))]
    pub interval_us: Option<u32>,
    /// Histogram range of every run in µs (1 µs buckets; slower samples overflow).
    #[arg(long, value_name = "US", default_value_t = DEFAULT_BENCH_HIST_MAX_US, value_parser = clap::value_parser!(u32).range(10..=MAX_HIST_MAX_US as i64))]
    pub hist_max_us: u32,
    /// Also write the comparison (every run's figures, the ratios and verdicts) as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

fn parse_secs(s: &str) -> Result<f64, String> {
    let secs: f64 = s.parse().map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > MAX_BENCH_SECS {
        return Err(format!("'{s}' must be more than 0 and at most {MAX_BENCH_SECS} seconds"));
    }
    Ok(secs)
}

/// The four runs, in the order they are made and printed.
pub const RUNS: [(&str, &str); 4] = [("mainline", "locks"), ("rt", "locks"), ("mainline", "cpu"), ("rt", "cpu")];
const ML_LOCKS: usize = 0;
const RT_LOCKS: usize = 1;
const RT_CPU: usize = 3;

/// A percentile from a run's JSON: `us`, or at least `us` when it fell in
/// the overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

/// What the benchmark takes from one run's `--json` file.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunFigures {
    pub samples: u64,
    pub missed: u64,
    pub thread_p50: Option<Pct>,
    pub thread_p99: Option<Pct>,
    pub thread_max_us: Option<u64>,
    pub irq_p99: Option<Pct>,
    /// `ok`, `violated` or `not_run`.
    pub load_check: String,
    /// The workload as the guest ran it.
    pub interval_us: Option<u64>,
    pub cs_us: Option<u64>,
    pub load_threads: Option<u64>,
    pub scaled: Option<bool>,
    pub emulated: Option<bool>,
    /// Guest ring-0 time per calibration iteration over the host's.
    pub calib_ratio: Option<f64>,
}

fn pct(v: &Value) -> Option<Pct> {
    Some(Pct { us: v.get("us")?.as_u64()?, at_least: v.get("at_least")?.as_bool()? })
}

impl RunFigures {
    /// Reads a run report (`rtswitch run --json`, schema_version 1): all
    /// CPUs merged over the boot mode's epochs (`modes[]`).
    pub fn from_report(v: &Value) -> Result<Self, String> {
        let version = v["schema_version"].as_u64();
        if version != Some(1) {
            return Err(format!("unsupported schema_version {}", v["schema_version"]));
        }
        let mode = v["config"]["mode"].as_str().ok_or("no config.mode")?;
        let modes = v["modes"].as_array().ok_or("no modes[]")?;
        let total = modes
            .iter()
            .find(|m| m["mode"] == mode)
            .ok_or_else(|| format!("no samples in the boot mode {mode} (modes[] has no entry for it)"))?;
        let (thread, irq) = (&total["thread"], &total["irq"]);
        let w = &v["workload"];
        Ok(Self {
            samples: total["samples"].as_u64().ok_or("no modes[].samples")?,
            missed: total["missed"].as_u64().ok_or("no modes[].missed")?,
            thread_p50: pct(&thread["p50"]),
            thread_p99: pct(&thread["p99"]),
            thread_max_us: thread["max_us"].as_u64(),
            irq_p99: pct(&irq["p99"]),
            load_check: v["load_check"]["result"].as_str().unwrap_or("unknown").to_string(),
            interval_us: w["interval_us"].as_u64(),
            cs_us: w["cs_us"].as_u64(),
            load_threads: w["load_threads"].as_u64(),
            scaled: w["scaled"].as_bool(),
            emulated: v["guest"]["emulated"].as_bool(),
            calib_ratio: v["guest"]["calib_ratio"].as_f64(),
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

    fn figures(&self) -> Option<&RunFigures> {
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
pub fn pct_ratio(num: Pct, den: Pct) -> Option<Ratio> {
    match (num.at_least, den.at_least) {
        (true, true) => None,
        (true, false) if den.us == 0 => Some(Ratio { value: num.us as f64, bound: Bound::AtLeast }),
        (true, false) => Some(Ratio { value: num.us as f64 / den.us as f64, bound: Bound::AtLeast }),
        (false, true) => Some(Ratio { value: num.us as f64 / den.us.max(1) as f64, bound: Bound::AtMost }),
        (false, false) if den.us == 0 && num.us == 0 => None,
        // A p99 in the [0, 1) µs bucket: the ratio is at least num / 1.
        (false, false) if den.us == 0 => Some(Ratio { value: num.us as f64, bound: Bound::AtLeast }),
        (false, false) => Some(Ratio { value: num.us as f64 / den.us as f64, bound: Bound::Exact }),
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

/// One of the two comparisons: p99 judged against its target, max beside it.
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

fn compare(
    what: &'static str,
    runs: &[RunOutcome],
    num: usize,
    den: usize,
    target_op: &'static str,
    target: f64,
) -> Comparison {
    let (n, d) = (runs[num].figures(), runs[den].figures());
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
    Comparison { what, num: runs[num].name(), den: runs[den].name(), p99, max, target_op, target, verdict }
}

/// The two comparisons the issue asks for, from the four runs in [`RUNS`] order.
pub fn comparisons(runs: &[RunOutcome]) -> [Comparison; 2] {
    assert_eq!(runs.len(), RUNS.len(), "one outcome per benchmark run");
    [
        compare("rt gain under lock load", runs, ML_LOCKS, RT_LOCKS, ">=", TARGET_RT_GAIN),
        compare("rt against the cpu floor", runs, RT_LOCKS, RT_CPU, "<=", TARGET_FLOOR_RATIO),
    ]
}

/// The whole printed result.
pub fn render(args: &BenchArgs, runs: &[RunOutcome], cmp: &[Comparison]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let first = runs.iter().find_map(RunOutcome::figures);
    let opt = |v: Option<u64>| v.map_or_else(|| "?".to_string(), |v| v.to_string());
    let _ = writeln!(
        out,
        "rtswitch latency benchmark: {} runs of {} s, {} vCPUs, interval {} us, cs {} us, {} load threads per CPU, \
         histogram range {} us",
        runs.len(),
        args.duration,
        args.vcpus,
        opt(first.and_then(|f| f.interval_us)),
        opt(first.and_then(|f| f.cs_us)),
        opt(first.and_then(|f| f.load_threads)),
        args.hist_max_us
    );
    if let Some(f) = first {
        let scaled = match f.scaled {
            Some(true) => "guest defaults scaled for emulated ring 0",
            Some(false) => "guest defaults not scaled",
            None => "guest defaults: unknown whether scaled",
        };
        let speed = match f.emulated {
            Some(true) => {
                "ring 0 is EMULATED on this host: absolute latencies are not bare-metal KVM figures, compare ratios"
            }
            Some(false) => "ring 0 runs natively",
            None => "ring 0 speed unknown",
        };
        let _ = writeln!(out, "{scaled}; {speed}");
    }
    out.push('\n');

    // Thread latency (what cyclictest measures), all CPUs merged, µs.
    let head = [
        "run",
        "samples",
        "missed",
        "|",
        "p50",
        "p99",
        "max",
        "|",
        "IRQ p99",
        "|",
        "load check",
        "exit",
        "ring0 slowdown",
    ];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|s| s.to_string()).collect()];
    for r in runs {
        let exit = r.exit_code.map_or_else(|| "killed".to_string(), |c| c.to_string());
        let row = match &r.figures {
            Ok(f) => {
                let p = |p: Option<Pct>| p.map_or_else(|| "-".to_string(), |p| p.to_string());
                vec![
                    r.name(),
                    f.samples.to_string(),
                    f.missed.to_string(),
                    "|".into(),
                    p(f.thread_p50),
                    p(f.thread_p99),
                    f.thread_max_us.map_or_else(|| "-".to_string(), |m| m.to_string()),
                    "|".into(),
                    p(f.irq_p99),
                    "|".into(),
                    f.load_check.clone(),
                    exit,
                    f.calib_ratio.map_or_else(|| "-".to_string(), |r| format!("{r:.0}x")),
                ]
            }
            Err(_) => {
                let mut row = vec![r.name()];
                row.extend(["-", "-", "|", "-", "-", "-", "|", "-", "|", "-"].map(String::from));
                row.extend([exit, "-".to_string()]);
                row
            }
        };
        rows.push(row);
    }
    let mut widths = vec![0; head.len()];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let _ = writeln!(
        out,
        "thread latency (us, all CPUs merged; p50/p99 from 1 us buckets, \">=N\": in the overflow); ring0 slowdown: \
         the run's guest ring-0 calibration over native (higher: a slower or busier host)"
    );
    for r in &rows {
        let mut line = String::from(" ");
        for (i, (c, w)) in r.iter().zip(&widths).enumerate() {
            if i == 0 || i == 10 {
                let _ = write!(line, " {c:<w$}");
            } else {
                let _ = write!(line, " {c:>w$}");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    for r in runs {
        if let Err(e) = &r.figures {
            let _ = writeln!(out, "  {}: no figures: {e}", r.name());
        }
    }
    out.push('\n');

    for c in cmp {
        let fig = |name: &str, f: &dyn Fn(&RunFigures) -> String| {
            runs.iter().find(|r| r.name() == name).and_then(RunOutcome::figures).map_or_else(|| "?".to_string(), f)
        };
        let p99 = |f: &RunFigures| f.thread_p99.map_or_else(|| "-".to_string(), |p| p.to_string());
        let max = |f: &RunFigures| f.thread_max_us.map_or_else(|| "-".to_string(), |m| m.to_string());
        let _ = writeln!(out, "{} ({} / {}):", c.what, c.num, c.den);
        let ratio = c.p99.map_or_else(|| "unknown".to_string(), |r| r.to_string());
        let _ = writeln!(
            out,
            "  p99: {} / {} us = {ratio}   target {} {}x: {}",
            fig(&c.num, &p99),
            fig(&c.den, &p99),
            c.target_op,
            c.target,
            c.verdict.text()
        );
        let mratio = c.max.map_or_else(|| "unknown".to_string(), |r| format!("{r:.2}x"));
        let _ = writeln!(
            out,
            "  max: {} / {} us = {mratio}   (not judged: a max here is mostly host noise)",
            fig(&c.num, &max),
            fig(&c.den, &max)
        );
    }
    let failed = runs.iter().filter(|r| r.figures.is_err() || r.exit_code != Some(0)).count();
    if failed > 0 {
        let _ = writeln!(out, "{failed} of {} runs failed: targets they feed are unknown", runs.len());
    }
    out
}

/// The `--json` comparison file.
#[derive(Debug, Serialize)]
struct BenchReport<'a> {
    bench_version: u32,
    config: BenchConfig,
    runs: &'a [RunOutcome],
    comparisons: &'a [Comparison],
}

#[derive(Debug, Serialize)]
struct BenchConfig {
    duration_s: f64,
    vcpus: u32,
    interval_us: Option<u32>,
    cs_us: Option<u32>,
    hist_max_us: u32,
}

/// The comparison as JSON (written with `--json`).
pub fn render_json(args: &BenchArgs, runs: &[RunOutcome], cmp: &[Comparison]) -> String {
    let report = BenchReport {
        bench_version: BENCH_JSON_VERSION,
        config: BenchConfig {
            duration_s: args.duration,
            vcpus: args.vcpus,
            interval_us: args.interval_us,
            cs_us: args.cs_us,
            hist_max_us: args.hist_max_us,
        },
        runs,
        comparisons: cmp,
    };
    let mut text = serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// The `rtswitch run` command line of one benchmark run.
pub fn run_args(args: &BenchArgs, mode: &str, load: &str, json: &Path) -> Vec<String> {
    let mut v: Vec<String> = [
        "run",
        "--quiet",
        "--serial",
        "none",
        "--vcpus",
        &args.vcpus.to_string(),
        "--duration",
        &args.duration.to_string(),
        "--mode",
        mode,
        "--load",
        load,
        "--hist-max-us",
        &args.hist_max_us.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(i) = args.interval_us {
        v.extend(["--interval-us".to_string(), i.to_string()]);
    }
    if let Some(c) = args.cs_us {
        v.extend(["--cs-us".to_string(), c.to_string()]);
    }
    v.extend(["--json".to_string(), json.display().to_string()]);
    v
}

/// Runs one `rtswitch run`, bounded in time, and reads its JSON.
fn run_one(exe: &Path, args: &BenchArgs, mode: &'static str, load: &'static str, json: &Path) -> RunOutcome {
    let started = Instant::now();
    let outcome =
        |exit_code, figures| RunOutcome { mode, load, exit_code, elapsed_s: started.elapsed().as_secs_f64(), figures };
    let _ = std::fs::remove_file(json);
    let mut child = match Command::new(exe)
        .args(run_args(args, mode, load, json))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return outcome(None, Err(format!("cannot start {}: {e}", exe.display()))),
    };
    let mut err = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    // --duration, the 10 s shutdown grace period, boot and slack.
    let limit = Duration::from_secs_f64(args.duration + 70.0);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() > limit => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(_) => break None,
        }
    };
    let stderr = reader.join().unwrap_or_default();
    let tail = || {
        let lines: Vec<&str> = stderr.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n    ")
    };
    let Some(status) = status else {
        return outcome(
            None,
            Err(format!("did not exit within {} s; killed. Last lines:\n    {}", limit.as_secs(), tail())),
        );
    };
    let figures = std::fs::read_to_string(json)
        .map_err(|e| format!("no --json file ({e})"))
        .and_then(|text| serde_json::from_str::<Value>(&text).map_err(|e| format!("--json does not parse: {e}")))
        .and_then(|v| RunFigures::from_report(&v));
    let _ = std::fs::remove_file(json);
    let figures = match (status.code(), figures) {
        (Some(0), f) => f,
        (_, Ok(f)) => Ok(f),
        (code, Err(e)) => Err(format!("exit status {code:?}; {e}. Last lines:\n    {}", tail())),
    };
    if status.code() != Some(0) {
        eprintln!("rtswitch bench: {mode} + {load} exited with {status}; its last lines:\n    {}", tail());
    }
    outcome(status.code(), figures)
}

/// `rtswitch bench`: the four runs, the table, the ratios and verdicts.
pub fn run_latency_bench(args: &BenchArgs) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rtswitch bench: cannot find this executable to run it: {e}");
            return ExitCode::VmmError;
        }
    };
    let mut runs = Vec::with_capacity(RUNS.len());
    for (i, (mode, load)) in RUNS.iter().enumerate() {
        eprintln!("rtswitch bench: run {}/{}: {mode} + {load}, {} s ...", i + 1, RUNS.len(), args.duration);
        let json = std::env::temp_dir().join(format!("rtswitch-bench-{}-{i}.json", std::process::id()));
        let r = run_one(&exe, args, mode, load, &json);
        eprintln!(
            "rtswitch bench: run {}/{}: {mode} + {load}: exit {} after {:.1} s",
            i + 1,
            RUNS.len(),
            r.exit_code.map_or_else(|| "none (killed)".to_string(), |c| c.to_string()),
            r.elapsed_s
        );
        runs.push(r);
    }
    let cmp = comparisons(&runs);
    print!("{}", render(args, &runs, &cmp));
    let mut code = exit_code(&runs);
    if let Some(path) = &args.json
        && let Err(e) = std::fs::write(path, render_json(args, &runs, &cmp))
    {
        eprintln!(
            "rtswitch bench: cannot write --json file {}: {e}; check that its directory exists and is writable",
            path.display()
        );
        code = code.worst(ExitCode::VmmError);
    }
    code
}

/// The benchmark's exit code: the worst of the runs' (a run without figures is a VMM error).
pub fn exit_code(runs: &[RunOutcome]) -> ExitCode {
    runs.iter().fold(ExitCode::Ok, |acc, r| {
        let c = match r.exit_code {
            Some(c) => ExitCode::ALL.iter().copied().find(|e| i32::from(e.code()) == c).unwrap_or(ExitCode::VmmError),
            None => ExitCode::VmmError,
        };
        let c = if r.figures.is_err() { c.worst(ExitCode::VmmError) } else { c };
        acc.worst(c)
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde_json::json;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        b: BenchArgs,
    }

    fn args(a: &[&str]) -> BenchArgs {
        let mut argv = vec!["bench"];
        argv.extend_from_slice(a);
        T::try_parse_from(argv).unwrap().b
    }

    /// A run report as `rtswitch run --json` writes it, reduced to what the benchmark reads.
    fn report(mode: &str, p50: u64, p99: (u64, bool), max: u64, load_check: &str) -> Value {
        json!({
            "schema_version": 1,
            "config": {"mode": mode, "load": "locks"},
            "guest": {"emulated": true, "calib_ratio": 2440.4},
            "workload": {"interval_us": 10000, "cs_us": 5000, "load_threads": 2, "scaled": true},
            "modes": [{
                "mode": mode, "epochs": [0], "samples": 1980, "missed": 3,
                "irq": {"p99": {"us": 1300, "at_least": false}},
                "thread": {
                    "p50": {"us": p50, "at_least": false},
                    "p99": {"us": p99.0, "at_least": p99.1},
                    "max_us": max
                }
            }],
            "load_check": {"result": load_check}
        })
    }

    fn outcome(i: usize, v: &Value) -> RunOutcome {
        RunOutcome {
            mode: RUNS[i].0,
            load: RUNS[i].1,
            exit_code: Some(0),
            elapsed_s: 10.3,
            figures: RunFigures::from_report(v),
        }
    }

    fn four(ml: Value, rt: Value, mlcpu: Value, rtcpu: Value) -> Vec<RunOutcome> {
        [ml, rt, mlcpu, rtcpu].iter().enumerate().map(|(i, v)| outcome(i, v)).collect()
    }

    #[test]
    fn options_and_the_run_command_lines() {
        let a = args(&[]);
        assert_eq!((a.duration, a.vcpus, a.hist_max_us, a.cs_us, a.interval_us), (10.0, 2, 100_000, None, None));
        assert!(a.json.is_none());
        let a = args(&["--duration", "2.5", "--vcpus", "4", "--cs-us", "300", "--interval-us", "2000"]);
        let cmd = run_args(&a, "rt", "cpu", Path::new("/tmp/x.json"));
        assert_eq!(
            cmd.join(" "),
            "run --quiet --serial none --vcpus 4 --duration 2.5 --mode rt --load cpu --hist-max-us 100000 \
             --interval-us 2000 --cs-us 300 --json /tmp/x.json"
        );
        let mut argv = vec!["bench"];
        for bad in [&["--duration", "0"][..], &["--vcpus", "0"], &["--hist-max-us", "200000"], &["--interval-us", "5"]]
        {
            argv.truncate(1);
            argv.extend_from_slice(bad);
            assert!(T::try_parse_from(&argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn figures_come_from_the_boot_modes_total() {
        let f = RunFigures::from_report(&report("rt", 700, (2600, false), 4400, "ok")).unwrap();
        assert_eq!(f.samples, 1980);
        assert_eq!(f.thread_p99, Some(Pct { us: 2600, at_least: false }));
        assert_eq!(f.thread_max_us, Some(4400));
        assert_eq!(f.irq_p99, Some(Pct { us: 1300, at_least: false }));
        assert_eq!((f.cs_us, f.scaled, f.emulated), (Some(5000), Some(true), Some(true)));
        let mut v = report("rt", 1, (1, false), 1, "ok");
        v["schema_version"] = json!(2);
        assert!(RunFigures::from_report(&v).unwrap_err().contains("schema_version"));
        let mut v = report("rt", 1, (1, false), 1, "ok");
        v["modes"] = json!([]);
        assert!(RunFigures::from_report(&v).unwrap_err().contains("no samples"));
    }

    #[test]
    fn ratios_carry_their_bounds() {
        let p = |us, at_least| Pct { us, at_least };
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
        // Met: mainline p99 12x rt's; rt within 1.2x of the floor.
        let runs = four(
            report("mainline", 3000, (9600, false), 10_600, "ok"),
            report("rt", 500, (800, false), 4400, "ok"),
            report("mainline", 700, (1600, false), 1800, "ok"),
            report("rt", 600, (667, false), 9600, "ok"),
        );
        let cmp = comparisons(&runs);
        assert_eq!(cmp[0].p99, Some(Ratio { value: 12.0, bound: Bound::Exact }));
        assert_eq!(cmp[0].verdict, Verdict::Met);
        assert!((cmp[0].max.unwrap() - 10_600.0 / 4400.0).abs() < 1e-9);
        assert_eq!((cmp[1].num.as_str(), cmp[1].den.as_str()), ("rt + locks", "rt + cpu"));
        assert_eq!(cmp[1].verdict, Verdict::Met);
        let text = render(&args(&[]), &runs, &cmp);
        println!("{text}");
        assert!(text.contains("4 runs of 10 s, 2 vCPUs, interval 10000 us, cs 5000 us, 2 load threads per CPU"));
        assert!(text.contains("ring 0 is EMULATED on this host: absolute latencies are not bare-metal KVM figures"));
        assert!(text.contains("  p99: 9600 / 800 us = 12.00x   target >= 10x: met\n"), "{text}");
        assert!(text.contains("  p99: 800 / 667 us = 1.20x   target <= 1.5x: met\n"), "{text}");
        assert!(text.contains("  max: 10600 / 4400 us = 2.41x   (not judged"), "{text}");
        let row = text.lines().find(|l| l.trim_start().starts_with("mainline + locks")).unwrap();
        assert_eq!(
            row.split_whitespace().collect::<Vec<_>>(),
            ["mainline", "+", "locks", "1980", "3", "|", "3000", "9600", "10600", "|", "1300", "|", "ok", "0", "2440x"]
        );
        assert_eq!(exit_code(&runs), ExitCode::Ok);

        // Missed: a 3.6x gain, rt 1.6x over the floor.
        let runs = four(
            report("mainline", 3000, (9627, false), 10_602, "ok"),
            report("rt", 700, (2682, false), 4381, "ok"),
            report("mainline", 700, (1577, false), 1787, "ok"),
            report("rt", 600, (1676, false), 9609, "ok"),
        );
        let cmp = comparisons(&runs);
        assert_eq!((cmp[0].verdict, cmp[1].verdict), (Verdict::NotMet, Verdict::NotMet));
        let text = render(&args(&[]), &runs, &cmp);
        assert!(text.contains("= 3.59x   target >= 10x: NOT MET"), "{text}");
        assert!(text.contains("= 1.60x   target <= 1.5x: NOT MET"), "{text}");

        // An overflowed mainline p99 is a lower bound, still enough to decide.
        let runs = four(
            report("mainline", 3000, (100_000, true), 150_000, "ok"),
            report("rt", 700, (2000, false), 4381, "ok"),
            report("mainline", 700, (1577, false), 1787, "ok"),
            report("rt", 600, (1676, false), 9609, "ok"),
        );
        let cmp = comparisons(&runs);
        assert_eq!(cmp[0].verdict, Verdict::Met);
        assert!(render(&args(&[]), &runs, &cmp).contains("p99: >=100000 / 2000 us = >=50.00x   target >= 10x: met"));
    }

    #[test]
    fn failed_runs_and_violated_checks_decide_nothing() {
        let mut runs = four(
            report("mainline", 3000, (9600, false), 10_600, "ok"),
            report("rt", 500, (800, false), 4400, "violated"),
            report("mainline", 700, (1600, false), 1800, "ok"),
            report("rt", 600, (667, false), 9600, "ok"),
        );
        runs[1].exit_code = Some(1);
        runs[3].exit_code = None;
        runs[3].figures = Err("did not exit within 80 s; killed".into());
        let cmp = comparisons(&runs);
        assert_eq!((cmp[0].verdict, cmp[1].verdict), (Verdict::Unknown, Verdict::Unknown));
        assert_eq!(cmp[1].p99, None);
        let text = render(&args(&[]), &runs, &cmp);
        println!("{text}");
        assert!(text.contains("rt + cpu: no figures: did not exit within 80 s; killed"), "{text}");
        assert!(text.contains("target <= 1.5x: unknown"), "{text}");
        assert!(text.contains("2 of 4 runs failed"), "{text}");
        assert_eq!(exit_code(&runs), ExitCode::VmmError);
        runs[3] = outcome(3, &report("rt", 600, (667, false), 9600, "ok"));
        assert_eq!(exit_code(&runs), ExitCode::GuestFailure);

        let v: Value = serde_json::from_str(&render_json(&args(&[]), &runs, &cmp)).unwrap();
        assert_eq!(v["bench_version"], 1);
        assert_eq!(v["config"]["hist_max_us"], 100_000);
        assert_eq!(v["runs"][0]["figures"]["thread_p99"]["us"], 9600);
        assert_eq!(v["runs"][1]["exit_code"], 1);
        assert_eq!(v["comparisons"][0]["verdict"], "unknown");
        assert_eq!(v["comparisons"][0]["target"], 10.0);
    }
}
