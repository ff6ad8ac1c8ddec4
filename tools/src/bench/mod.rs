//! `rtswitch bench`: the benchmark suite (docs/benchmarks.md). One
//! invocation runs, one family after another, real VMs of this same
//! executable and prints one table:
//!
//! - boot: process start -> guest ready over N boots ([`boot`]);
//! - latency: thread and IRQ latency under `--load none|cpu|locks` in
//!   mainline and rt, in interleaved slices ([`slices`]), with the ratios
//!   paired per slice ([`latency`], [`median`]), the host's own cyclictest
//!   beside ([`cyclictest`]) and the targets ([`targets`]);
//! - lock throughput in mainline and rt, with rt's adaptive spinning on and
//!   off ([`throughput`]);
//! - switch: freeze / blackout / total over N switches under the lock load
//!   beside the platform floor, and idle ([`switching`]);
//! - scale: switch blackout and total at 1, 2, 4 and 8 vCPUs;
//! - ablation: thread latency per profile under the lock load and the
//!   device interrupt load: each dimension of the RT personality alone,
//!   two, and all three ([`ablation`]).
//!
//! It writes the whole result as JSON (`bench.json`, schema in
//! docs/bench-json.md) and one SVG plot per family ([`plots`]) into
//! `--out`, whose paths are checked before anything runs (exit code 2, as
//! `run`'s). A benchmark measures: it never fails because the host was
//! slow. Its exit status says whether every part ran (the worst failure),
//! never whether a target was met.
//!
//! Ctrl-C (SIGINT or SIGTERM) stops the suite cleanly, like cyclictest: the
//! VM running is told to shut down (a latency run then writes its report,
//! which counts for the time it ran), nothing more starts, the table of
//! what finished is printed and `bench.json` written with `interrupted:
//! true`; the exit code is `Interrupted` (130) unless a part failed. A
//! second Ctrl-C stops at once.

pub mod ablation;
pub mod boot;
pub mod child;
pub mod cyclictest;
pub mod idle;
pub mod latency;
pub mod median;
pub mod plots;
pub mod progress;
pub mod qemu;
pub mod ratio;
pub mod repeat;
pub mod scratch;
pub mod slices;
pub mod switch_targets;
pub mod switching;
pub mod table;
pub mod targets;
pub mod throughput;
pub mod verdict;

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, ValueEnum};
use serde::Serialize;
use switcher::abi::MAX_CPUS;

use self::ablation::{AblationConfig, AblationRun};
use self::boot::Boot;
use self::latency::{LatencyConfig, LatencyResult, RunOutcome};
use self::progress::Progress;
use self::switching::{Phase, PhaseConfig, PhaseSpreads};
use self::table::{cells, grid, opt};
use self::throughput::{ThroughputConfig, ThroughputRun};
use rtswitch::exit_code::ExitCode;
use rtswitch::limits::{DEFAULT_VCPUS, MAX_HIST_MAX_US};
use rtswitch::units::{Unit, parse_duration_in, us_in};

/// Histogram range of the latency runs: wide, so that a mainline p99
/// under lock load stays a figure rather than an overflow.
pub const DEFAULT_BENCH_HIST_MAX_US: u32 = 100_000;
/// Schema version of the suite's JSON (docs/bench-json.md). 5: the
/// latency family in interleaved slices (`latency.runs[]` hold the medians
/// and every slice), ratios paired per slice, the platform per round, the
/// host's cyclictest, the latency targets.
pub const BENCH_JSON_VERSION: u32 = 8;
/// Target: blackout p50 under the lock load.
pub const TARGET_BLACKOUT_P50_US: u64 = 100;
/// Target: process start to guest ready, p50, at most this many ms.
pub const TARGET_BOOT_P50_MS: f64 = 15.0;
/// Target: idle set-mode round trip p50.
pub const TARGET_IDLE_RTT_P50_US: u64 = 1000;

const MAX_BENCH_SECS: f64 = 3600.0;
/// Repeats of a full suite when `--repeat` is not given: enough for a
/// median that one noisy stretch of the host does not make (on the
/// project's host one repeat's rt gain read from 5.57x to 7.21x on a
/// quiet host and 3.12x beside a build; the medians of two three-repeat
/// runs read 6.07x and 7.21x), the smallest count whose median is not one
/// repeat's figure alone. `--quick` makes one.
pub const DEFAULT_REPEATS: u32 = 3;

/// The families, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    Boot,
    Latency,
    Throughput,
    Switch,
    Scale,
    Ablation,
    Idle,
}

/// `rtswitch bench` options. Unset counts and durations take the full
/// suite's defaults, or `--quick`'s.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The short suite: the same families with fewer and shorter runs (under 2 minutes).
    #[arg(long)]
    pub quick: bool,
    /// Directory for bench.json and the plots (latency.svg, switch.svg, scale.svg, ablation.svg); created if missing, checked before anything runs.
    #[arg(long, value_name = "DIR", default_value = "bench-results")]
    pub out: PathBuf,
    /// Also write the suite's JSON to this file (OUT/bench.json is always written).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Run only these families (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "FAMILY,...")]
    pub only: Vec<Family>,
    /// vCPUs of the boot, latency, throughput and switch VMs (1..=64).
    #[arg(long, default_value_t = DEFAULT_VCPUS, value_parser = clap::value_parser!(u32).range(1..=MAX_CPUS as i64))]
    pub vcpus: u32,
    /// Boots measured (default 10).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub boots: Option<u32>,
    /// Measured time of each latency configuration, shared out among its --slices (`5s`; a bare number is seconds); also each ablation and idle run's length (default 20s, --quick 5s).
    #[arg(long, value_name = "DURATION", value_parser = parse_secs)]
    pub duration: Option<f64>,
    /// Interleaved slices per latency configuration, each a fresh VM of --duration / N (no shorter than 0.5 s); the slices are the latency family's repeats (default 7, --quick 5).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=50))]
    pub slices: Option<u32>,
    /// Measurement period of the latency runs in µs, or with a unit (default: the guest's).
    #[arg(long, value_name = "US", value_parser = us_in(100, 1_000_000))]
    pub interval_us: Option<u32>,
    /// The device interrupt load of the ablation runs: RATE interrupts a second on every vCPU, WORK_US of handler work each.
    #[arg(long, value_name = "RATE[,WORK_US]", default_value = "1000,100", value_parser = rtswitch::cli::parse_irq_load)]
    pub irq_load: rtswitch::cli::IrqLoad,
    /// Critical section of the latency and switch runs' lock load in µs, or with a unit (default: the guest's).
    #[arg(long, value_name = "US", value_parser = us_in(1, 1_000_000))]
    pub cs_us: Option<u32>,
    /// Histogram range of the latency runs in µs, or with a unit.
    #[arg(long, value_name = "US", default_value_t = DEFAULT_BENCH_HIST_MAX_US, value_parser = us_in(10, MAX_HIST_MAX_US))]
    pub hist_max_us: u32,
    /// Each lock-throughput window, whole seconds (`6s`, `1m`; a bare number is seconds; old name --throughput-secs); three runs (default 6s, --quick 3s).
    #[arg(long, alias = "throughput-secs", value_name = "DURATION", value_parser = parse_window)]
    pub throughput_window: Option<u32>,
    /// Critical section of the lock-throughput load in µs, or with a unit.
    #[arg(long, value_name = "US", default_value_t = 20, value_parser = us_in(1, 1_000_000))]
    pub throughput_cs_us: u32,
    /// Switches (and as many pause+resume rounds) under the lock load, and again idle (default 200, --quick 40).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub switches: Option<u32>,
    /// Pause after each switch (`100ms`, `1s`; a bare number is ms; old name --gap-ms): the guest prepares the next latency epoch meanwhile; a floor round (pause+resume) comes half-way through it.
    #[arg(long, alias = "gap-ms", value_name = "DURATION", default_value = "100ms", value_parser = parse_gap)]
    pub gap: std::time::Duration,
    /// vCPU counts of the scale family (comma-separated).
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_values_t = [1u32, 2, 4, 8], value_parser = clap::value_parser!(u32).range(1..=MAX_CPUS as i64))]
    pub scale_vcpus: Vec<u32>,
    /// Run the measurements N times (1..=20; default 3, --quick 1) and print each headline figure's spread (min / median / max); the JSON keeps every repeat's figures. With 2 or more, every latency target is judged on the median of the repeats' figures (each a repeat's median over its --slices), the rt gain's spread as max / min of the repeats' gains.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=20))]
    pub repeat: Option<u32>,
    /// Switches per vCPU count in the scale family (default 30, --quick 8).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub scale_switches: Option<u32>,
}

/// A duration option of the suite (`5s`, `500ms`; a bare number is seconds), in seconds.
fn parse_secs(s: &str) -> Result<f64, String> {
    let max = std::time::Duration::from_secs_f64(MAX_BENCH_SECS);
    parse_duration_in(s, Unit::Secs, std::time::Duration::from_millis(1), max).map(|d| d.as_secs_f64())
}

/// `--gap`: 0 to a minute, a bare number is ms.
fn parse_gap(s: &str) -> Result<std::time::Duration, String> {
    parse_duration_in(s, Unit::Millis, std::time::Duration::ZERO, std::time::Duration::from_secs(60))
}

/// `--throughput-window`: whole seconds (the rate is read once a second), 1 s to an hour.
fn parse_window(s: &str) -> Result<u32, String> {
    use std::time::Duration;
    let d = parse_duration_in(s, Unit::Secs, Duration::from_secs(1), Duration::from_secs(3600))?;
    if d.subsec_nanos() != 0 {
        return Err(format!("'{s}' is not whole seconds (the rate is read once a second)"));
    }
    Ok(d.as_secs() as u32)
}

/// The suite's settings, every default resolved.
#[derive(Clone, Debug, Serialize)]
pub struct SuiteConfig {
    pub quick: bool,
    pub families: Vec<Family>,
    pub vcpus: u32,
    pub boots: u32,
    pub latency: LatencyConfig,
    pub throughput: ThroughputConfig,
    pub switch: PhaseConfig,
    pub scale_vcpus: Vec<u32>,
    pub scale_switches: u32,
    /// `--repeat`: how many times the measurements run.
    pub repeat: u32,
    pub ablation: AblationConfig,
}

impl SuiteConfig {
    pub fn from_args(a: &BenchArgs) -> Self {
        let q = a.quick;
        let families = if a.only.is_empty() {
            vec![
                Family::Boot,
                Family::Latency,
                Family::Throughput,
                Family::Switch,
                Family::Scale,
                Family::Ablation,
                Family::Idle,
            ]
        } else {
            let mut f = a.only.clone();
            f.sort_by_key(|f| *f as u8);
            f.dedup();
            f
        };
        let duration_s = a.duration.unwrap_or(if q { 5.0 } else { 20.0 });
        let asked = a.slices.unwrap_or(if q { slices::QUICK_SLICES } else { slices::DEFAULT_SLICES });
        let n = slices::effective(asked, duration_s);
        if n < asked {
            log::warn!(
                "--slices {asked} over --duration {duration_s} s would make slices under {} s: making {n}",
                slices::MIN_SLICE_S
            );
        }
        let latency = LatencyConfig {
            duration_s,
            vcpus: a.vcpus,
            interval_us: a.interval_us,
            cs_us: a.cs_us,
            hist_max_us: a.hist_max_us,
            slices: n,
        };
        Self {
            quick: q,
            families,
            vcpus: a.vcpus,
            boots: a.boots.unwrap_or(10),
            latency: latency.clone(),
            throughput: ThroughputConfig {
                vcpus: a.vcpus,
                cs_us: a.throughput_cs_us,
                load_threads: 2,
                warmup_s: 1,
                window_s: a.throughput_window.unwrap_or(if q { 3 } else { 6 }),
            },
            switch: PhaseConfig {
                vcpus: a.vcpus,
                load: "locks",
                cs_us: a.cs_us,
                count: a.switches.unwrap_or(if q { 40 } else { 200 }),
                gap_ms: a.gap.as_millis() as u64,
            },
            scale_vcpus: a.scale_vcpus.clone(),
            scale_switches: a.scale_switches.unwrap_or(if q { 8 } else { 30 }),
            repeat: a.repeat.unwrap_or(if q { 1 } else { DEFAULT_REPEATS }),
            ablation: AblationConfig {
                latency: LatencyConfig { slices: 1, ..latency },
                irq_rate_hz: a.irq_load.rate_hz,
                irq_work_us: a.irq_load.work_us,
            },
        }
    }

    fn has(&self, f: Family) -> bool {
        self.families.contains(&f)
    }

    /// The steps, each with its estimated seconds (measured on the
    /// project's host: 2 shared cores).
    fn estimates(&self) -> Vec<(Family, f64)> {
        let mut v = Vec::new();
        if self.has(Family::Boot) {
            v.push((Family::Boot, f64::from(self.boots) * 0.7));
        }
        if self.has(Family::Latency) {
            v.push((Family::Latency, slices::estimate(&self.latency)));
        }
        if self.has(Family::Throughput) {
            v.push((Family::Throughput, 3.0 * f64::from(self.throughput.warmup_s + self.throughput.window_s + 2)));
        }
        if self.has(Family::Switch) {
            v.push((Family::Switch, self.switch_phases().iter().map(|c| self.phase_est(c)).sum()));
        }
        if self.has(Family::Scale) {
            v.push((Family::Scale, self.scale_phases().iter().map(|c| self.phase_est(c)).sum()));
        }
        if self.has(Family::Ablation) {
            v.push((Family::Ablation, ablation::RUNS.len() as f64 * (self.ablation.latency.duration_s + 1.5)));
        }
        if self.has(Family::Idle) {
            v.push((Family::Idle, idle::POLICIES.len() as f64 * (self.ablation.latency.duration_s + 1.5)));
        }
        v
    }

    /// The switch family's two phases: under the lock load, then idle.
    fn switch_phases(&self) -> [PhaseConfig; 2] {
        [self.switch.clone(), PhaseConfig { load: "none", ..self.switch.clone() }]
    }

    /// The scale family's phases: one per vCPU count, under the lock load.
    fn scale_phases(&self) -> Vec<PhaseConfig> {
        let c = |vcpus| PhaseConfig { vcpus, count: self.scale_switches, ..self.switch.clone() };
        self.scale_vcpus.iter().map(|&v| c(v)).collect()
    }

    /// Estimated seconds of one switch phase: its pauses, each switch (more
    /// vCPUs to freeze and stop under load), the VM's boot and floor rounds.
    fn phase_est(&self, c: &PhaseConfig) -> f64 {
        let per_switch = if c.load == "none" { 0.012 } else { 0.0125 * f64::from(c.vcpus) };
        f64::from(c.count) * (c.gap_ms as f64 / 1e3 + per_switch) + 1.5
    }
}

/// Runs `work` when `family` was asked for and the suite was not
/// interrupted, recording its wall time.
fn timed<T>(cfg: &SuiteConfig, family: Family, times: &mut Vec<(Family, f64)>, work: impl FnOnce() -> T) -> Option<T> {
    if !cfg.has(family) || rtswitch::signals::interrupted() {
        return None;
    }
    let t = Instant::now();
    let r = work();
    times.push((family, t.elapsed().as_secs_f64()));
    Some(r)
}

/// min / p50 (nearest rank) / max of `v`, in any order.
pub fn min_p50_max(v: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v = v.to_vec();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let p50 = rtswitch::stats::nearest_rank(v.len() as u64, 500_000) as usize - 1;
    Some((v[0], v[p50], v[v.len() - 1]))
}

/// The host, as far as it can be read.
#[derive(Clone, Debug, Serialize)]
pub struct HostInfo {
    pub cpu_model: Option<String>,
    pub cpus: Option<usize>,
    pub kernel: Option<String>,
    /// KVM modules loaded (`kvm_intel`, `kvm_amd`, `kvm_pvm`).
    pub kvm_modules: Vec<String>,
    /// From the guest's boot calibration in the first latency run: whether
    /// the guest kernel's code (at CPL3) runs emulated.
    pub kernel_emulated: Option<bool>,
    /// Guest time per calibration iteration (at CPL3) over the host's.
    pub kernel_slowdown: Option<f64>,
    /// The platform's primitives as the guest timed them
    /// (`--guest-arg platform-costs`): name, p50 and p99 in ns.
    pub platform_costs: Vec<PlatformCost>,
}

/// One primitive's cost on the host at hand.
#[derive(Clone, Debug, Serialize)]
pub struct PlatformCost {
    pub what: String,
    pub p50_ns: u64,
    pub p99_ns: u64,
}

/// Bound on the `platform-costs` run (it runs for 0.2 s after boot).
const PLATFORM_COSTS_LIMIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Boots a guest with `platform-costs` and reads the `cost ...` lines it
/// prints (empty if the run fails: the suite goes on without them).
pub fn platform_costs(exe: &Path, vcpus: u32) -> Vec<PlatformCost> {
    let launched = rtswitch::child::Launched::spawn_forwarding(
        std::process::Command::new(exe)
            .args(["run", "--no-workload", "--quiet", "--duration", "0.2", "--vcpus", &vcpus.to_string()])
            .args(["--guest-arg", "platform-costs"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null()),
    );
    let Ok(launched) = launched else { return Vec::new() };
    parse_platform_costs(&launched.finish(PLATFORM_COSTS_LIMIT).stdout)
}

/// `cost NAME: p50 N ns, p90 N ns, p99 N ns, min N ns` lines.
fn parse_platform_costs(text: &str) -> Vec<PlatformCost> {
    let field = |s: &str, key: &str| -> Option<u64> {
        let rest = &s[s.find(key)? + key.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("cost ")?;
            let (what, nums) = rest.split_once(": ")?;
            Some(PlatformCost { what: what.to_string(), p50_ns: field(nums, "p50 ")?, p99_ns: field(nums, "p99 ")? })
        })
        .collect()
}

impl HostInfo {
    fn read() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo").ok().and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_string())
        });
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string());
        let kvm_modules = ["kvm_intel", "kvm_amd", "kvm_pvm"]
            .iter()
            .filter(|m| Path::new("/sys/module").join(m).exists())
            .map(|m| m.to_string())
            .collect();
        Self {
            cpu_model,
            cpus: std::thread::available_parallelism().ok().map(|n| n.get()),
            kernel,
            kvm_modules,
            kernel_emulated: None,
            kernel_slowdown: None,
            platform_costs: Vec::new(),
        }
    }

    fn describe(&self) -> String {
        let mods = if self.kvm_modules.is_empty() { "none found".to_string() } else { self.kvm_modules.join(", ") };
        let speed = match (self.kernel_emulated, self.kernel_slowdown) {
            (Some(true), Some(r)) => format!(
                "the guest kernel's code (CPL3) is EMULATED ({r:.0}x slower than native): absolute figures are not \
                 bare-metal KVM figures, the ratios are the claim"
            ),
            (Some(false), Some(r)) => {
                format!("the guest kernel (CPL3) runs natively ({r:.1}x the host's time per iteration)")
            }
            _ => "guest kernel speed not measured (no latency run)".to_string(),
        };
        let mut s = format!(
            "host: {}, {} CPUs, Linux {}, KVM module {mods}; {speed}",
            self.cpu_model.as_deref().unwrap_or("unknown CPU"),
            opt(self.cpus),
            self.kernel.as_deref().unwrap_or("?")
        );
        if !self.platform_costs.is_empty() {
            s.push_str(
                "
platform costs, as the guest times them at CPL3 (us, p50 / p99):",
            );
            for c in &self.platform_costs {
                s.push_str(&format!(
                    "\n  {:<72} {:>8.1} {:>8.1}",
                    c.what,
                    c.p50_ns as f64 / 1e3,
                    c.p99_ns as f64 / 1e3
                ));
            }
        }
        s
    }
}

/// The boot family's result.
#[derive(Clone, Debug, Serialize)]
pub struct BootResult {
    pub vcpus: u32,
    pub boots: Vec<Boot>,
    pub min_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// The throughput family's result: every ratio a gain (higher is better).
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputResult {
    pub runs: Vec<ThroughputRun>,
    /// rt ops/s / mainline ops/s, with and without adaptive spinning.
    pub rt_gain: Option<f64>,
    pub rt_no_spin_gain: Option<f64>,
    /// rt with adaptive spinning / rt without.
    pub spinning_gain: Option<f64>,
}

/// One switch phase's result.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseResult {
    pub config: PhaseConfig,
    /// Why the phase has no figures.
    pub error: Option<String>,
    pub spreads: Option<PhaseSpreads>,
    /// Every figure, in µs, in the order measured.
    pub values: Option<Phase>,
}

impl PhaseResult {
    fn of(config: PhaseConfig, r: Result<Phase, switching::SwitchBenchError>) -> Self {
        match r {
            Ok(p) => Self { config, error: None, spreads: Some(p.spreads()), values: Some(p) },
            Err(e) => Self { config, error: Some(e.to_string()), spreads: None, values: None },
        }
    }

    /// A phase the suite did not get to (interrupted before it).
    fn not_run(config: PhaseConfig) -> Self {
        let values = Phase { interrupted: true, ..Phase::default() };
        Self { config, error: None, spreads: Some(values.spreads()), values: Some(values) }
    }

    fn interrupted(&self) -> bool {
        self.values.as_ref().is_some_and(|v| v.interrupted)
    }

    fn failed_switches(&self) -> usize {
        self.values.as_ref().map_or(0, |p| p.failed.len())
    }
}

/// The switch family's result.
#[derive(Clone, Debug, Serialize)]
pub struct SwitchResult {
    pub under_load: PhaseResult,
    pub idle: PhaseResult,
    /// QEMU's own `stop` + `cont` with the idle phase's vCPUs, or why not.
    pub qemu: qemu::QemuFloor,
}

/// What the suite wrote where.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outputs {
    pub json: Option<PathBuf>,
    pub plots: Vec<PathBuf>,
    pub errors: Vec<String>,
}

/// The whole suite's result: `bench.json`.
#[derive(Clone, Debug, Serialize)]
pub struct Suite {
    pub bench_version: u32,
    pub rtswitch_version: &'static str,
    pub command: String,
    pub started_unix_s: u64,
    pub elapsed_s: f64,
    pub host: HostInfo,
    pub config: SuiteConfig,
    pub boot: Option<BootResult>,
    pub latency: Option<LatencyResult>,
    pub throughput: Option<ThroughputResult>,
    pub switch: Option<SwitchResult>,
    pub scale: Option<Vec<PhaseResult>>,
    /// The switch family's targets (`switch_targets`), judged on `switch`
    /// and `scale`.
    pub switch_targets: Vec<switch_targets::SwitchTarget>,
    /// Thread latency per profile under the lock and interrupt load.
    pub ablation: Option<Vec<AblationRun>>,
    /// Latency and host CPU per idle policy (rt, no load).
    pub idle: Option<Vec<idle::IdleRun>>,
    /// Parts that did not run or gave no figure, in words.
    pub failures: Vec<String>,
    /// Wall time of each family that ran, seconds (the last repeat).
    pub family_s: Vec<(Family, f64)>,
    /// With `--repeat N` (N > 1): every repeat's headline figures and
    /// failures, and each figure's spread; empty otherwise.
    pub repeats: Vec<repeat::Repeat>,
    pub repeat_spread: Vec<repeat::HeadlineSpread>,
    /// Ctrl-C (SIGINT/SIGTERM) stopped the suite: the sections hold what
    /// finished; the run cut short says so (`interrupted` in its entry).
    pub interrupted: bool,
    /// Families asked for that never started (after an interrupt).
    pub not_run: Vec<Family>,
    pub exit_code: u8,
}

/// The files the suite writes into `--out`.
const OUT_FILES: [&str; 5] = ["bench.json", "latency.svg", "switch.svg", "scale.svg", "ablation.svg"];

/// Checks, before anything runs, that `--out` is (or can be made) a
/// directory whose files can be written, and that `--json` can be: a
/// mistake costs nothing, and is a bad argument (exit code 2) as for
/// `rtswitch run`.
pub fn check_outputs(args: &BenchArgs) -> Result<(), String> {
    let out = &args.out;
    if let Err(e) = std::fs::create_dir_all(out) {
        return Err(format!(
            "--out {}: cannot create the directory ({e}); name a directory that exists or can be created",
            out.display()
        ));
    }
    for name in OUT_FILES {
        rtswitch::report::outputs::probe("--out", &out.join(name)).map_err(|e| e.to_string())?;
    }
    if let Some(json) = &args.json {
        rtswitch::report::outputs::probe("--json", json).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Runs the suite, prints the table, writes the JSON and the plots.
pub fn run(args: &BenchArgs) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("rtswitch bench: error: cannot find this executable to run it: {e}");
            return ExitCode::VmmError;
        }
    };
    if let Err(e) = check_outputs(args) {
        eprintln!("rtswitch bench: error: {e}");
        return ExitCode::BadArguments;
    }
    // Removed when the suite returns.
    let _scratch = match scratch::create() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("rtswitch bench: error: cannot create a scratch directory: {e}");
            return ExitCode::VmmError;
        }
    };
    if let Err(e) = rtswitch::signals::catch_interrupts() {
        eprintln!("rtswitch bench: warning: cannot catch Ctrl-C ({e}); it will stop the suite without a table");
    }
    let interrupted = rtswitch::signals::interrupted;
    let cfg = SuiteConfig::from_args(args);
    let steps = cfg.estimates();
    let total_est: f64 = steps.iter().map(|s| s.1).sum::<f64>() * f64::from(cfg.repeat);
    eprintln!(
        "rtswitch bench: {} suite, families {}, estimated {} on this project's host (Ctrl-C: stop, print and write \
         what finished)",
        if cfg.quick { "quick" } else { "full" },
        cfg.families.iter().map(|f| format!("{f:?}").to_lowercase()).collect::<Vec<_>>().join(", "),
        progress::clock(total_est)
    );
    let started = Instant::now();
    let started_unix_s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let bar = Progress::new(total_est);
    let est = |f: Family| steps.iter().find(|s| s.0 == f).map_or(1.0, |s| s.1);
    let tmp = |what: &str| scratch::path(&format!("{what}.json"));
    let said = std::cell::Cell::new(false);
    let say_interrupted = || {
        if interrupted() && !said.replace(true) {
            bar.note(&format!(
                "rtswitch bench: interrupted after {}: stopping the run in progress; the table follows (Ctrl-C \
                 again: stop at once)",
                progress::clock(started.elapsed().as_secs_f64())
            ));
        }
    };

    bar.begin("platform costs".to_string(), 1.0);
    let costs = platform_costs(&exe, cfg.vcpus);
    bar.end();
    let mut host = HostInfo::read();
    host.platform_costs = costs;
    let mut repeats: Vec<repeat::Repeat> = Vec::new();
    let mut last: Option<Suite> = None;
    let mut code = ExitCode::Ok;
    for rep in 1..=cfg.repeat {
        if interrupted() && last.is_some() {
            break;
        }
        if cfg.repeat > 1 {
            bar.note(&format!("rtswitch bench: repeat {rep} of {}", cfg.repeat));
        }
        let mut family_s: Vec<(Family, f64)> = Vec::new();
        let boot = timed(&cfg, Family::Boot, &mut family_s, || {
            let each = est(Family::Boot) / f64::from(cfg.boots);
            let mut boots: Vec<Boot> = Vec::new();
            for i in 0..cfg.boots {
                bar.begin(format!("boot {}/{}", i + 1, cfg.boots), each);
                let b = boot::boot_once(&exe, cfg.vcpus, &tmp("boot"));
                bar.end();
                say_interrupted();
                if interrupted() {
                    // A boot cut short measured nothing.
                    break;
                }
                boots.push(b);
            }
            let s = min_p50_max(&boots.iter().filter_map(|b| b.ready_ms).collect::<Vec<_>>());
            BootResult {
                vcpus: cfg.vcpus,
                min_ms: s.map(|s| s.0),
                p50_ms: s.map(|s| s.1),
                max_ms: s.map(|s| s.2),
                boots,
            }
        });

        let latency = timed(&cfg, Family::Latency, &mut family_s, || {
            slices::run(&exe, &cfg.latency, &bar, &tmp, &say_interrupted)
        });

        let throughput = timed(&cfg, Family::Throughput, &mut family_s, || {
            let each = est(Family::Throughput) / throughput::CONFIGS.len() as f64;
            let mut runs: Vec<ThroughputRun> = Vec::new();
            for &c in &throughput::CONFIGS {
                if interrupted() {
                    break;
                }
                bar.begin(format!("lock throughput: {}, {} s", c.0, cfg.throughput.window_s), each);
                let r = throughput::run_one(&cfg.throughput, c);
                bar.end();
                say_interrupted();
                runs.push(r);
            }
            ThroughputResult {
                rt_gain: throughput::ratio(&runs, 1, 0),
                rt_no_spin_gain: throughput::ratio(&runs, 2, 0),
                spinning_gain: throughput::ratio(&runs, 1, 2),
                runs,
            }
        });

        let phase = |config: PhaseConfig, title: String| {
            bar.begin(title, cfg.phase_est(&config));
            let steps = 2 * config.count;
            let r = switching::run_phase(&config, &mut |done| bar.sub(done, steps));
            bar.end();
            say_interrupted();
            PhaseResult::of(config, r)
        };
        let switch = timed(&cfg, Family::Switch, &mut family_s, || {
            let [load, idle] = cfg.switch_phases();
            let under_load = phase(load, format!("switch: {} under the lock load", cfg.switch.count));
            let (vcpus, rounds) = (idle.vcpus, idle.count);
            let idle = if interrupted() {
                PhaseResult::not_run(idle)
            } else {
                phase(idle, format!("switch: {} idle", cfg.switch.count))
            };
            let qemu = if interrupted() {
                qemu::QemuFloor { unavailable: Some("not run: interrupted".into()), ..Default::default() }
            } else {
                bar.begin(format!("switch: QEMU stop+cont x{rounds}, {vcpus} vCPUs (when installed)"), 5.0);
                let q = qemu::measure(vcpus, rounds, &scratch::path(""));
                bar.end();
                q
            };
            SwitchResult { under_load, idle, qemu }
        });

        let scale = timed(&cfg, Family::Scale, &mut family_s, || {
            let mut v = Vec::new();
            for c in cfg.scale_phases() {
                if interrupted() {
                    break;
                }
                let title = format!("scale: {} vCPUs", c.vcpus);
                v.push(phase(c, title));
            }
            v
        });
        let ablation = timed(&cfg, Family::Ablation, &mut family_s, || {
            let each = est(Family::Ablation) / ablation::RUNS.len() as f64;
            let mut runs: Vec<AblationRun> = Vec::new();
            for &(label, profile) in &ablation::RUNS {
                if interrupted() {
                    break;
                }
                bar.begin(format!("ablation: {label} ({profile}), {} s", cfg.ablation.latency.duration_s), each);
                let r = ablation::run_one(&exe, &cfg.ablation, label, profile, &tmp("ablation"));
                if r.exit_code != Some(0) {
                    bar.note(&format!("rtswitch bench: ablation run {label} exited with {:?}", r.exit_code));
                }
                bar.end();
                say_interrupted();
                runs.push(r);
            }
            ablation::fill_gains(&mut runs);
            runs
        });
        let idle = timed(&cfg, Family::Idle, &mut family_s, || {
            let each = est(Family::Idle) / idle::POLICIES.len() as f64;
            let mut runs = Vec::new();
            for &policy in &idle::POLICIES {
                if interrupted() {
                    break;
                }
                bar.begin(format!("idle: idle={policy} (rt, no load), {} s", cfg.ablation.latency.duration_s), each);
                let r = idle::run_one(&exe, &cfg.ablation.latency, policy, &tmp("idle"));
                if r.exit_code != Some(0) {
                    bar.note(&format!("rtswitch bench: idle run idle={policy} exited with {:?}", r.exit_code));
                }
                bar.end();
                say_interrupted();
                runs.push(r);
            }
            runs
        });
        if let Some(f) = latency.as_ref().and_then(|l| l.runs.iter().find_map(|c| c.summary.figures())) {
            host.kernel_emulated = f.emulated;
            host.kernel_slowdown = f.calib_ratio;
        }
        let ran: Vec<Family> = family_s.iter().map(|f| f.0).collect();
        let not_run: Vec<Family> = cfg.families.iter().copied().filter(|f| !ran.contains(f)).collect();
        let switch_targets = switch_targets::judge(
            switch.as_ref().map(|s| &s.under_load),
            switch.as_ref().map(|s| &s.idle),
            scale.as_deref().unwrap_or(&[]),
            switch.as_ref().map(|s| &s.qemu),
        );
        let mut suite = Suite {
            bench_version: BENCH_JSON_VERSION,
            rtswitch_version: env!("CARGO_PKG_VERSION"),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            started_unix_s,
            elapsed_s: started.elapsed().as_secs_f64(),
            host: host.clone(),
            config: cfg.clone(),
            boot,
            latency,
            throughput,
            switch,
            scale,
            switch_targets,
            ablation,
            idle,
            failures: Vec::new(),
            family_s,
            repeats: Vec::new(),
            repeat_spread: Vec::new(),
            interrupted: interrupted(),
            not_run,
            exit_code: 0,
        };
        let (failed, c) = failures(&suite);
        suite.failures = failed;
        code = code.worst(c);
        if cfg.repeat > 1 {
            repeats.push(repeat::Repeat {
                index: rep,
                headlines: repeat::headlines(&suite),
                failures: suite.failures.clone(),
            });
        }
        last = Some(suite);
    }
    bar.finish();
    let Some(mut suite) = last else {
        eprintln!("rtswitch bench: --repeat 0 measures nothing; give --repeat 1 or more");
        return ExitCode::BadArguments;
    };
    suite.elapsed_s = started.elapsed().as_secs_f64();
    // A part that failed in any repeat is a failure of the suite.
    for r in repeats.iter().filter(|r| r.index < suite_repeat(&repeats)) {
        for f in &r.failures {
            suite.failures.push(format!("repeat {}: {f}", r.index));
        }
    }
    suite.repeat_spread = repeat::spreads(&repeats);
    if let Some(l) = &mut suite.latency {
        // With two repeats or more the targets are judged over them
        // (each repeat's median over its slices).
        targets::judge_over_repeats(&mut l.targets, |name| repeat::values(&repeats, name));
    }
    switch_targets::judge_over_repeats(&mut suite.switch_targets, |name| repeat::values(&repeats, name));
    suite.repeats = repeats;
    if suite.interrupted {
        code = code.worst(ExitCode::Interrupted);
    }
    suite.exit_code = code.code();
    print!("{}", render(&suite));
    let mut outputs = write_outputs(&suite, &args.out);
    if let Some(path) = &args.json {
        let written = serde_json::to_string_pretty(&suite)
            .map_err(|e| e.to_string())
            .and_then(|t| rtswitch::outfile::write_atomic(path, (t + "\n").as_bytes()).map_err(|e| e.to_string()));
        if let Err(e) = written {
            outputs.errors.push(format!(
                "cannot write --json file {}: {e}; check that its directory exists and is writable",
                path.display()
            ));
        }
    }
    for e in &outputs.errors {
        eprintln!("rtswitch bench: error: {e}");
        code = code.worst(ExitCode::VmmError);
    }
    if let Some(j) = &outputs.json {
        let plots: Vec<String> = outputs.plots.iter().map(|p| p.display().to_string()).collect();
        println!("wrote {} and {}", j.display(), if plots.is_empty() { "no plots".into() } else { plots.join(", ") });
    }
    code
}

/// The index of the last repeat made (the one the sections show).
fn suite_repeat(repeats: &[repeat::Repeat]) -> u32 {
    repeats.last().map_or(0, |r| r.index)
}

/// What did not run or gave no figure, and the exit code it makes (an
/// interrupted suite's missing parts are not failures: `not_run` and the
/// runs' `interrupted` say what is missing).
fn failures(s: &Suite) -> (Vec<String>, ExitCode) {
    let mut v = Vec::new();
    let mut code = ExitCode::Ok;
    if let Some(b) = &s.boot {
        for (i, boot) in b.boots.iter().enumerate() {
            if let Some(e) = &boot.error {
                v.push(format!("boot {}: {e}", i + 1));
                code = code.worst(ExitCode::VmmError);
            }
        }
    }
    if let Some(l) = &s.latency {
        for s in l.runs.iter().flat_map(|c| &c.slices) {
            let name = format!("latency {} slice {}", s.run.name(), s.slice + 1);
            if let Err(e) = &s.run.figures {
                v.push(format!("{name}: {e}"));
                code = code.worst(ExitCode::VmmError);
            } else if s.run.exit_code != Some(0) {
                v.push(format!("{name}: exit status {:?}", s.run.exit_code));
                code = code.worst(ExitCode::GuestFailure);
            }
        }
        // The host floor is a part of the family: a cyclictest that is
        // installed and failed is a failure (one that is not installed is
        // said in the table, not a failure).
        for h in &l.host.runs {
            if let Some(e) = &h.error {
                v.push(format!("host cyclictest beside rt + locks slice {}: {e}", h.slice + 1));
                code = code.worst(ExitCode::VmmError);
            }
        }
    }
    if let Some(t) = &s.throughput {
        for r in &t.runs {
            if let Some(e) = &r.error {
                v.push(format!("lock throughput {}: {e}", r.name));
                code = code.worst(ExitCode::GuestFailure);
            }
        }
    }
    let mut phase = |name: String, p: &PhaseResult| {
        if let Some(e) = &p.error {
            v.push(format!("{name}: {e}"));
            code = code.worst(ExitCode::VmmError);
        } else if p.failed_switches() > 0 {
            let first = p.values.as_ref().and_then(|x| x.failed.first()).cloned().unwrap_or_default();
            v.push(format!("{name}: {} switch(es) failed, the first: {first}", p.failed_switches()));
        }
    };
    if let Some(sw) = &s.switch {
        phase("switch under load".into(), &sw.under_load);
        phase("switch idle".into(), &sw.idle);
    }
    for p in s.scale.iter().flatten() {
        phase(format!("scale {} vCPUs", p.config.vcpus), p);
    }
    for r in s.idle.iter().flatten() {
        if let Err(e) = &r.figures {
            v.push(format!("idle={}: {e}", r.policy));
            code = code.worst(ExitCode::VmmError);
        } else if r.exit_code != Some(0) {
            v.push(format!("idle={}: exit status {:?}", r.policy, r.exit_code));
            code = code.worst(ExitCode::GuestFailure);
        }
    }
    for r in s.ablation.iter().flatten() {
        if let Err(e) = &r.figures {
            v.push(format!("ablation {}: {e}", r.label));
            code = code.worst(ExitCode::VmmError);
        } else if r.exit_code != Some(0) {
            v.push(format!("ablation {}: exit status {:?}", r.label, r.exit_code));
            code = code.worst(ExitCode::GuestFailure);
        }
    }
    (v, code)
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1e3)
}

/// The printed table.
pub fn render(s: &Suite) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "rtswitch benchmark suite ({}; rtswitch {}; {} of wall time)\n{}\n",
        if s.config.quick { "--quick" } else { "full" },
        s.rtswitch_version,
        progress::clock(s.elapsed_s),
        s.host.describe()
    ));
    if s.interrupted {
        let not_run = if s.not_run.is_empty() {
            String::new()
        } else {
            let names: Vec<String> = s.not_run.iter().map(|f| format!("{f:?}").to_lowercase()).collect();
            format!("; not run: {}", names.join(", "))
        };
        out.push_str(&format!(
            "INTERRUPTED (Ctrl-C) after {}: the sections below hold what finished, a run cut short says so{not_run}\n",
            progress::clock(s.elapsed_s)
        ));
    }
    if let Some(b) = &s.boot {
        let f = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        let ok = b.boots.iter().filter(|x| x.error.is_none()).count();
        out.push_str(&format!(
            "\nboot: process start -> guest ready, {} vCPUs, no workload, {ok} of {} boots: min {} / p50 {} / max {} ms\n",
            b.vcpus,
            b.boots.len(),
            f(b.min_ms),
            f(b.p50_ms),
            f(b.max_ms)
        ));
        let met = match b.p50_ms {
            Some(p) if p <= TARGET_BOOT_P50_MS => "met",
            Some(_) => "NOT MET",
            None => "unknown",
        };
        out.push_str(&format!("  boot p50 {} ms: target <= {TARGET_BOOT_P50_MS} ms: {met}\n", f(b.p50_ms)));
    }
    if let Some(l) = &s.latency {
        let c = &s.config.latency;
        // The workload as the lock-load runs ran it (the `none` runs have no load threads).
        let runs: Vec<&RunOutcome> = l.runs.iter().map(|c| &c.summary).collect();
        let first = runs
            .iter()
            .filter(|r| r.load == "locks")
            .find_map(|r| r.figures())
            .or_else(|| runs.iter().filter(|r| r.load != "none").find_map(|r| r.figures()))
            .or_else(|| runs.iter().find_map(|r| r.figures()));
        out.push_str(&format!(
            "\nlatency (us, all CPUs merged; {} s per configuration in {} interleaved slices of {:.2} s, each a fresh \
             VM; medians over the slices; {} vCPUs, interval {} us, cs {} us, {} load threads per CPU; p50/p99 from 1 \
             us buckets):\n",
            c.duration_s,
            l.slices,
            l.slice_s,
            c.vcpus,
            opt(first.and_then(|f| f.interval_us)),
            opt(first.and_then(|f| f.cs_us)),
            opt(first.and_then(|f| f.load_threads)),
        ));
        out.push_str(&latency::render(l));
    }
    if let Some(t) = &s.throughput {
        out.push_str(&format!(
            "\nlock throughput (lock operations per second, all CPUs, {} s window after {} s warm-up):\n",
            s.config.throughput.window_s, s.config.throughput.warmup_s
        ));
        out.push_str(&throughput::render(&s.config.throughput, &t.runs));
    }
    if let Some(sw) = &s.switch {
        let c = &sw.under_load.config;
        let v = sw.under_load.values.as_ref();
        let by = v.and_then(|p| p.sites_by_dimension).map(|d| format!(": {}", d.by_dimension())).unwrap_or_default();
        out.push_str(&format!(
            "\nswitch ({} switches per phase, {} ms apart, {} vCPUs, {} call sites{by}; ms):\n",
            c.count,
            c.gap_ms,
            c.vcpus,
            opt(v.and_then(|p| p.sites))
        ));
        let mut rows = vec![cells(&["", "min", "p50", "p99", "max"])];
        for (title, p) in [("under the lock load", &sw.under_load), ("idle (--load none)", &sw.idle)] {
            let cs = p.values.as_ref().and_then(|v| v.cs_us).map(|c| format!(", cs {c} us")).unwrap_or_default();
            let hits =
                p.values.as_ref().and_then(switching::Phase::hit_rate).map(|h| format!(", {h}")).unwrap_or_default();
            let cs = format!("{cs}{hits}");
            let failed = p.failed_switches();
            let mut failed = if failed > 0 { format!(", {failed} failed") } else { String::new() };
            if p.interrupted() {
                match p.values.as_ref().map_or(0, |v| v.total.len() + v.failed.len()) {
                    0 => failed.push_str(", not run (interrupted)"),
                    done => failed.push_str(&format!(", interrupted after {done} switches")),
                }
            }
            rows.push(vec![
                format!("{title}{cs}{failed}:"),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
            match &p.spreads {
                Some(x) => {
                    for (name, v) in [
                        ("freeze (request -> quiescent)", x.freeze),
                        ("blackout (vCPUs held)", x.blackout),
                        ("  fast path: hold, registers read", x.fast_hold),
                        ("  fast path: checks (locks, stacks)", x.fast_checks),
                        ("  fast path: frames, patch, state", x.fast_patch),
                        ("  fast path: release", x.fast_release),
                        ("total (request -> guest ack)", x.total),
                        ("  guest: freeze proper (seen -> quiescent)", x.guest_freeze),
                        ("  guest: quiescent -> verdict (blackout in it)", x.verdict),
                        ("  guest: serialize every CPU", x.serialize),
                        ("  guest: thaw", x.thaw),
                        ("  request and ack, host <-> guest", x.messaging),
                        ("set-mode round trip (client)", x.client_rtt),
                        ("floor: pause+resume blackout", x.floor_blackout),
                        ("floor: pause+resume round trip", x.floor_rtt),
                    ] {
                        rows.push(switching::spread_row(&format!("  {name}"), v));
                    }
                }
                None => rows.push(vec![format!("  no figures: {}", p.error.as_deref().unwrap_or("?"))]),
            }
        }
        out.push_str(&grid(&rows, &[0]));
        let load = sw.under_load.spreads.as_ref();
        if let Some(b) = load.and_then(|x| x.blackout) {
            let met = if b.p50_us <= TARGET_BLACKOUT_P50_US { "met" } else { "NOT MET" };
            let floor = load.and_then(|x| x.floor_blackout).map_or_else(|| "-".to_string(), |f| f.p50_us.to_string());
            out.push_str(&format!(
                "  blackout p50 under load {} us (platform floor {floor} us): target <= {TARGET_BLACKOUT_P50_US} us: {met}\n",
                b.p50_us
            ));
        }
        if let (Some(t), Some(cs)) = (load.and_then(|x| x.total), sw.under_load.values.as_ref().and_then(|v| v.cs_us)) {
            let bound = cs + 2000;
            let met = if t.max_us <= bound { "met" } else { "NOT MET" };
            let hits = sw
                .under_load
                .values
                .as_ref()
                .filter(|v| !v.total.is_empty())
                .map(|v| format!(" (fast path hit rate {:.0} %)", v.fast as f64 * 100.0 / v.total.len() as f64))
                .unwrap_or_default();
            out.push_str(&format!(
                "  total under load max {} ms: target <= cs + 2 ms = {}: {met}{hits}\n",
                ms(t.max_us),
                ms(bound)
            ));
        }
        if let Some(r) = sw.idle.spreads.as_ref().and_then(|x| x.client_rtt) {
            let met = if r.p50_us <= TARGET_IDLE_RTT_P50_US { "met" } else { "NOT MET" };
            out.push_str(&format!("  idle set-mode round trip p50 {} ms: target <= 1 ms: {met}\n", ms(r.p50_us)));
        }
    }
    if let Some(sc) = &s.scale {
        out.push_str(&format!(
            "\nscale (switches under the lock load per vCPU count, {} each, on {} host CPUs; ms):\n",
            s.config.scale_switches,
            opt(s.host.cpus)
        ));
        let mut rows = vec![cells(&[
            "vCPUs",
            "|",
            "blackout p50",
            "p99",
            "|",
            "total p50",
            "p99",
            "|",
            "floor p50",
            "|",
            "switches",
            "failed",
        ])];
        for p in sc {
            let x = p.spreads.as_ref();
            let g = |f: fn(&PhaseSpreads) -> Option<rtswitch::switch::Spread>, p99: bool| {
                x.and_then(f).map_or_else(|| "-".to_string(), |s| ms(if p99 { s.p99_us } else { s.p50_us }))
            };
            rows.push(vec![
                p.config.vcpus.to_string(),
                "|".into(),
                g(|s| s.blackout, false),
                g(|s| s.blackout, true),
                "|".into(),
                g(|s| s.total, false),
                g(|s| s.total, true),
                "|".into(),
                g(|s| s.floor_blackout, false),
                "|".into(),
                p.values.as_ref().map_or_else(|| "-".to_string(), |v| v.total.len().to_string()),
                if p.error.is_some() { "all".to_string() } else { p.failed_switches().to_string() },
            ]);
        }
        out.push_str(&grid(&rows, &[]));
        if let Some(n) = s.host.cpus
            && sc.iter().any(|p| p.config.vcpus as usize > n)
        {
            out.push_str(&format!(
                "  above {n} vCPUs the {n} host CPUs are overcommitted: a switch waits for vCPUs the host is not \
                 running, so the figures jump there\n"
            ));
        }
        for p in sc.iter().filter(|p| p.interrupted()) {
            out.push_str(&format!("  {} vCPUs: cut short by the interrupt\n", p.config.vcpus));
        }
    }
    if s.switch.is_some() || s.scale.is_some() {
        out.push_str(&switch_targets::render(&s.switch_targets));
    }
    if let Some(runs) = &s.ablation {
        let c = &s.config.ablation;
        out.push_str(&format!(
            "\nablation: which dimension buys how much (thread latency, us, all CPUs merged; lock load + --irq-load {},{} \
             on every vCPU; {} s per run, {} vCPUs; p99 gain = mainline p99 / the run's):\n",
            c.irq_rate_hz, c.irq_work_us, c.latency.duration_s, c.latency.vcpus
        ));
        out.push_str(&ablation::render(runs));
    }
    if let Some(runs) = &s.idle {
        let c = &s.config.ablation.latency;
        out.push_str(&format!(
            "\nidle: what each idle policy buys and costs (rt, no load: every CPU idle between activations; us, all \
             CPUs merged; host CPU per vCPU thread as a share of a core over the time the guest ran; {} s per run, \
             {} vCPUs):\n",
            c.duration_s, c.vcpus
        ));
        out.push_str(&idle::render(runs));
    }
    if let Some(l) = &s.latency {
        out.push_str(&targets::render(l, s.idle.as_deref(), s.config.ablation.latency.vcpus));
    }
    if !s.repeat_spread.is_empty() {
        out.push_str(&repeat::render(&s.repeat_spread, s.repeats.len()));
    }
    if !s.failures.is_empty() {
        out.push_str(&format!("\n{} problem(s):\n", s.failures.len()));
        for f in &s.failures {
            out.push_str(&format!("  {f}\n"));
        }
    }
    out
}

/// Writes `bench.json` and the plots into `dir`; every file is attempted.
pub fn write_outputs(s: &Suite, dir: &Path) -> Outputs {
    let mut o = Outputs::default();
    let write = |name: &str, text: Result<String, String>, o: &mut Outputs| {
        let path = dir.join(name);
        match text.and_then(|t| rtswitch::outfile::write_atomic(&path, t.as_bytes()).map_err(|e| e.to_string())) {
            Ok(()) => {
                if name.ends_with(".svg") {
                    o.plots.push(path);
                } else {
                    o.json = Some(path);
                }
            }
            Err(e) => {
                o.errors.push(format!("cannot write {}: {e}; check that the directory is writable", path.display()))
            }
        }
    };
    if let Some(l) = &s.latency {
        write("latency.svg", plot_latency(l).map_err(|e| e.to_string()), &mut o);
    }
    if let Some(sw) = &s.switch {
        write("switch.svg", plot_switch(sw).map_err(|e| e.to_string()), &mut o);
    }
    if let Some(sc) = &s.scale {
        let host_cpus = s.host.cpus.and_then(|n| u32::try_from(n).ok());
        write("scale.svg", plot_scale(sc, host_cpus).map_err(|e| e.to_string()), &mut o);
    }
    if let Some(runs) = &s.ablation {
        write("ablation.svg", plot_ablation(runs, &s.config.ablation).map_err(|e| e.to_string()), &mut o);
    }
    let json = serde_json::to_string_pretty(s).map(|mut t| {
        t.push('\n');
        t
    });
    write("bench.json", json.map_err(|e| e.to_string()), &mut o);
    o
}

fn plot_latency(l: &LatencyResult) -> Result<String, plots::PlotError> {
    let panels: Vec<plots::HistPanel> = ["mainline", "rt"]
        .iter()
        .map(|mode| plots::HistPanel {
            title: format!("{mode}: thread latency, all CPUs"),
            series: l
                .runs
                .iter()
                .map(|c| &c.summary)
                .filter(|r| r.mode == *mode)
                .filter_map(|r| {
                    let f = r.figures()?;
                    Some(plots::HistSeries {
                        label: format!(
                            "--load {}: p50 {} us, p99 {} us, max {} us",
                            r.load,
                            opt(f.thread_p50),
                            opt(f.thread_p99),
                            opt(f.thread_max_us)
                        ),
                        buckets: f.thread_buckets.clone(),
                        overflow: f.thread_overflow,
                        range_us: f.hist_max_us.unwrap_or(u64::from(DEFAULT_BENCH_HIST_MAX_US)),
                    })
                })
                .collect(),
        })
        .collect();
    plots::latency_svg("rtswitch bench: timer latency, mainline vs rt, by load", &panels)
}

fn plot_ablation(runs: &[AblationRun], c: &AblationConfig) -> Result<String, plots::PlotError> {
    let bars: Vec<plots::AblationBar> = runs
        .iter()
        .map(|r| {
            let f = r.figures();
            let p99 = f.and_then(|f| f.thread_p99);
            plots::AblationBar {
                label: ablation::title(r.label).to_string(),
                p50_us: f.and_then(|f| f.thread_p50).map(|p| p.us()),
                p99_us: p99.map(|p| p.us()),
                p99_at_least: p99.is_some_and(|p| p.at_least()),
                max_us: f.and_then(|f| f.thread_max_us),
            }
        })
        .collect();
    plots::ablation_svg(
        &format!(
            "rtswitch bench: thread latency per profile (lock load + {} device IRQs/s of {} us per vCPU)",
            c.irq_rate_hz, c.irq_work_us
        ),
        &bars,
    )
}

fn plot_switch(sw: &SwitchResult) -> Result<String, plots::PlotError> {
    let p = sw.under_load.values.clone().unwrap_or_default();
    let series = vec![
        plots::Distribution { label: "freeze (request -> quiescent)".into(), values_us: p.freeze },
        plots::Distribution { label: "blackout (vCPUs held)".into(), values_us: p.blackout },
        plots::Distribution { label: "total (request -> guest ack)".into(), values_us: p.total },
        plots::Distribution { label: "platform floor: pause+resume blackout".into(), values_us: p.floor_blackout },
    ];
    plots::switch_svg(
        &format!(
            "rtswitch bench: {} switches under the lock load, {} vCPUs",
            sw.under_load.config.count, sw.under_load.config.vcpus
        ),
        &series,
    )
}

fn plot_scale(sc: &[PhaseResult], host_cpus: Option<u32>) -> Result<String, plots::PlotError> {
    let points: Vec<plots::ScalePoint> = sc
        .iter()
        .map(|p| {
            let x = p.spreads.as_ref();
            plots::ScalePoint {
                vcpus: p.config.vcpus,
                blackout_p50_us: x.and_then(|s| s.blackout).map(|s| s.p50_us),
                blackout_p99_us: x.and_then(|s| s.blackout).map(|s| s.p99_us),
                total_p50_us: x.and_then(|s| s.total).map(|s| s.p50_us),
                total_p99_us: x.and_then(|s| s.total).map(|s| s.p99_us),
                floor_p50_us: x.and_then(|s| s.floor_blackout).map(|s| s.p50_us),
            }
        })
        .collect();
    plots::scale_svg("rtswitch bench: switch cost vs vCPU count (under the lock load)", &points, host_cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_costs_are_read_from_the_guest_lines() {
        let text = "cpu 0 online\ncost xapic timer write: p50 24846 ns, p90 30126 ns, p99 67806 ns, min 23303 ns\ncost bad line\n";
        let c = parse_platform_costs(text);
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].what.as_str(), c[0].p50_ns, c[0].p99_ns), ("xapic timer write", 24846, 67806));
    }

    #[test]
    fn min_p50_max_is_nearest_rank() {
        assert_eq!(min_p50_max(&[]), None);
        assert_eq!(min_p50_max(&[3.0]), Some((3.0, 3.0, 3.0)));
        assert_eq!(min_p50_max(&[4.0, 1.0, 3.0, 2.0]), Some((1.0, 2.0, 4.0)));
        assert_eq!(min_p50_max(&[5.0, 1.0, 3.0]), Some((1.0, 3.0, 5.0)));
    }
}
