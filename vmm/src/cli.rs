//! The command line (clap, derive). Every value is range-checked here, so
//! that the rest of the VMM only sees a valid [`RunConfig`].

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use switcher::abi::{CMDLINE_LEN, GUEST_ARG_SELFTEST, LockMode, MAX_CPUS};
use switcher::telemetry::{LoadKind, WorkloadRequest};

use crate::devices::console::SerialOutput;
use crate::report::outputs::{HistogramMode, OutputFiles};

pub const DEFAULT_VCPUS: u32 = 2;
pub const DEFAULT_MEMORY_MIB: u64 = 128;
pub const MIN_MEMORY_MIB: u64 = 16;
/// Guest memory stays below the 32-bit MMIO hole (LAPIC, IOAPIC).
pub const MAX_MEMORY_MIB: u64 = 3072;
const MAX_DURATION_SECS: f64 = 365.0 * 24.0 * 3600.0;

#[derive(Debug, Parser)]
#[command(
    name = "rtswitch",
    version,
    about = "Boot a Rust guest kernel under KVM and switch its locking between mainline and rt at runtime"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot the guest kernel and run it until it exits, --duration passes, or SIGINT/SIGTERM.
    Run(Box<RunArgs>),
    /// Talk to a running VMM over its control socket (QMP).
    Ctl(CtlArgs),
    /// Hammer the runtime switch of a VM for a while and tally what happened.
    Stress(crate::stress::StressArgs),
    /// The benchmark suite: boot, latency, lock throughput, switch cost and its scaling; table, JSON, plots.
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Args)]
pub struct CtlArgs {
    /// The control socket of a `rtswitch run --api-sock PATH`.
    #[arg(long, value_name = "PATH")]
    pub api_sock: PathBuf,
    /// Print the raw QMP reply (JSON) instead of a human-readable summary.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the reply.
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_duration)]
    pub timeout: Duration,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// Switch the guest's locking mode (replies when the switch has completed or failed).
    Mode {
        #[arg(value_enum)]
        mode: Mode,
    },
    /// Run state, mode, uptime.
    Status,
    /// Latency per epoch and CPU (the newest epochs), and every mode's totals.
    Latency {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Clear the latency statistics (a new measurement starts).
    ResetLatency,
    /// History of mode switches with their timings.
    Switches {
        #[command(flatten)]
        page: PageArgs,
    },
    /// Shut the guest down and end the VMM.
    Quit,
    /// Send one raw QMP command, e.g. '{"execute":"query-mode"}'.
    Raw { json: String },
}

/// Which part of a long list `ctl switches` and `ctl latency` show
/// (default: the newest).
#[derive(Debug, Clone, Default, Args)]
pub struct PageArgs {
    /// Show the newest N entries.
    #[arg(long, value_name = "N", conflicts_with = "since")]
    pub last: Option<u64>,
    /// Show entries from number N on (switch seq, epoch index).
    #[arg(long, value_name = "N")]
    pub since: Option<u64>,
    /// With --since: at most N entries.
    #[arg(long, value_name = "N", requires = "since")]
    pub limit: Option<u64>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Number of vCPUs (1..=64).
    #[arg(long, default_value_t = DEFAULT_VCPUS, value_parser = clap::value_parser!(u32).range(1..=MAX_CPUS as i64))]
    pub vcpus: u32,
    /// Guest memory in MiB (16..=3072).
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_MEMORY_MIB, value_parser = clap::value_parser!(u64).range(MIN_MEMORY_MIB..=MAX_MEMORY_MIB))]
    pub memory: u64,
    /// Guest kernel ELF to boot instead of the embedded one.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Where the guest console goes: stdout, none or file:PATH.
    #[arg(long, value_name = "OUT", default_value = "stdout")]
    pub serial: SerialOutput,
    /// Ask the guest to shut down after this many seconds (fractions allowed).
    #[arg(long, value_name = "SECS", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Seconds the guest gets to shut down once asked, before it is stopped.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// Locking regime to boot in: the lock call sites are patched to it before any vCPU runs.
    #[arg(long, value_enum, default_value_t = Mode::Mainline)]
    pub mode: Mode,
    /// Run the in-guest self-test suite; exit 0 only if every test passed.
    #[arg(long)]
    pub selftest: bool,
    /// A word for the guest kernel (repeatable), e.g. `panic`, `exit=3`.
    #[arg(long = "guest-arg", value_name = "WORD")]
    pub guest_args: Vec<String>,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Serve the QMP control socket at PATH (created 0600, removed at exit).
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Toggle the mode every MS milliseconds (the same path as `ctl mode`).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(10..=86_400_000))]
    pub switch_every: Option<u64>,
    /// Deadline for the guest to reach quiescence in a switch, in ms.
    #[arg(long, value_name = "MS", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub switch_timeout_ms: u64,
    /// Report a CPU whose guest watchdog thread has not run for this many seconds (0: off).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub watchdog_secs: u64,
    /// Deadline for every vCPU to stop (leave guest mode) in a switch, in ms.
    #[arg(long, value_name = "MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub vcpu_stop_timeout_ms: u64,
    /// Per-thread seccomp filters (README "Sandbox"); off only for debugging.
    #[arg(long, value_enum, value_name = "on|off", default_value_t = OnOff::On)]
    pub seccomp: OnOff,
}

/// `--seccomp` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// The latency workload (cyclictest/timerlat-like) the guest runs.
#[derive(Debug, Args, Clone)]
pub struct WorkloadArgs {
    /// Load beside the measurement threads: none, locks (threads holding shared SpinLocks) or cpu (same work, no lock).
    #[arg(long, value_enum, default_value_t = Load::Locks)]
    pub load: Load,
    /// Measurement period in µs (cyclictest -i). Default: 1000.
    #[arg(long, value_name = "US", value_parser = clap::value_parser!(u32).range(100..=1_000_000))]
    pub interval_us: Option<u32>,
    /// Critical-section length of the load threads in µs. Default: 500 (well above the latency floor, well below the period).
    #[arg(long, value_name = "US", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub cs_us: Option<u32>,
    /// Load threads per CPU (default 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=16))]
    pub load_threads: Option<u32>,
    /// Histogram range in µs; slower samples count as overflows. Default: 10000, or 10 periods when --interval-us is longer.
    #[arg(long, value_name = "US", value_parser = clap::value_parser!(u32).range(10..=MAX_HIST_MAX_US as i64))]
    pub hist_max_us: Option<u32>,
    /// Histogram bucket width in µs (rtla --bucket-size).
    #[arg(long, value_name = "US", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub bucket_us: u32,
    /// Priority of the measurement threads, 1..=99 (cyclictest -p). The guest's control thread runs at 98: below it, the switch can delay measurement.
    #[arg(long, value_name = "PRIO", default_value_t = 99, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub priority: u32,
    /// vCPUs that run a measurement thread, as a list like 0-3,6 (cyclictest -a). Default: all.
    #[arg(long, value_name = "CPUS", value_parser = parse_cpu_list)]
    pub measure_cpus: Option<u64>,
    /// vCPUs that run load threads, as a list like 1,3. Default: all.
    #[arg(long, value_name = "CPUS", value_parser = parse_cpu_list)]
    pub load_cpus: Option<u64>,
    /// Stop at the first thread-latency sample above US µs and print its cause: the interrupted task, its locks, the preempt and interrupt-mask state, steal time and the CPU's last scheduler events (cyclictest -b, rtla -a).
    #[arg(long, value_name = "US", value_parser = clap::value_parser!(u32).range(1..))]
    pub stop_above: Option<u32>,
    /// Boot only: no measurement threads, no load.
    #[arg(long)]
    pub no_workload: bool,
}

/// What the run writes besides its summary.
#[derive(Debug, Args, Clone, Default)]
pub struct OutputArgs {
    /// No live status line (a progress line replaces it on long runs).
    #[arg(long, short)]
    pub quiet: bool,
    /// Write the whole result as JSON (schema in README.md).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write thread latency in cyclictest's (rt-tests 2.4) -h format: one file per mode (FILE.mainline.EXT and FILE.rt.EXT when both ran, FILE when one did), or as --histogram-mode selects.
    #[arg(long, value_name = "FILE")]
    pub histogram: Option<PathBuf>,
    /// Which mode epochs --histogram and --cyclictest-json hold: per-mode (one file per mode that ran), mainline, rt, or all (both modes merged into FILE). Switching epochs are never included.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = HistogramMode::PerMode)]
    pub histogram_mode: HistogramMode,
    /// Add IRQ-latency columns to --histogram, after the thread-latency columns (column k >= CPUs is CPU k-CPUs's IRQ latency).
    #[arg(long)]
    pub histogram_irq: bool,
    /// Write cyclictest's (rt-tests 2.4) --json format, per mode like --histogram.
    #[arg(long, value_name = "FILE")]
    pub cyclictest_json: Option<PathBuf>,
    /// Write latency histograms as an SVG plot, one series per mode (the extension must be .svg).
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// With --plot: one series per epoch instead of one per mode.
    #[arg(long, requires = "plot")]
    pub plot_per_epoch: bool,
}

impl OutputArgs {
    /// The files to write, as the reports take them.
    pub fn files(&self) -> OutputFiles {
        OutputFiles {
            json: self.json.clone(),
            histogram: self.histogram.clone(),
            histogram_mode: self.histogram_mode,
            histogram_irq: self.histogram_irq,
            cyclictest_json: self.cyclictest_json.clone(),
            plot: self.plot.clone(),
            plot_per_epoch: self.plot_per_epoch,
        }
    }
}

/// `--load` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Load {
    None,
    Locks,
    Cpu,
}

impl From<Load> for LoadKind {
    fn from(l: Load) -> Self {
        match l {
            Load::None => LoadKind::None,
            Load::Locks => LoadKind::Locks,
            Load::Cpu => LoadKind::Cpu,
        }
    }
}

pub const DEFAULT_HIST_MAX_US: u32 = 10_000;
pub const MAX_HIST_MAX_US: u32 = 100_000;

/// `--mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Spinning locks, preemption off while held.
    Mainline,
    /// rtmutexes: sleeping locks with priority inheritance.
    Rt,
}

impl From<Mode> for LockMode {
    fn from(m: Mode) -> Self {
        match m {
            Mode::Mainline => LockMode::Mainline,
            Mode::Rt => LockMode::Rt,
        }
    }
}

/// A validated `run` configuration.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub vcpus: u32,
    pub memory_bytes: u64,
    pub kernel: Option<PathBuf>,
    pub serial: SerialOutput,
    pub duration: Option<Duration>,
    pub shutdown_timeout: Duration,
    pub mode: LockMode,
    pub cmdline: String,
    /// The workload request for the guest (zeros: guest defaults).
    pub workload: WorkloadRequest,
    /// 1 µs histogram buckets.
    pub hist_buckets: u32,
    pub output: OutputArgs,
    pub api_sock: Option<PathBuf>,
    pub switch_every: Option<Duration>,
    pub switch_timeout: Duration,
    pub vcpu_stop_timeout: Duration,
    pub watchdog: Duration,
    /// `--seccomp on` (the default).
    pub seccomp: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    #[error("--guest-arg '{0}' must be one non-empty word without spaces or control characters")]
    BadGuestArg(String),
    #[error("--guest-arg values add up to {0} bytes; the guest command line holds at most {max}", max = CMDLINE_LEN - 1)]
    CmdlineTooLong(usize),
    #[error("{option} names vCPU {cpu}, but the VM has {vcpus} (0..={last})", last = vcpus - 1)]
    CpuOutOfRange { option: &'static str, cpu: u32, vcpus: u32 },
    #[error("--hist-max-us {range} is less than one --bucket-us {bucket} bucket")]
    HistRange { range: u32, bucket: u32 },
}

/// The default histogram range: 10 ms, or 10 periods of a longer interval.
pub fn default_hist_max_us(interval_us: Option<u32>) -> u32 {
    let interval = interval_us.unwrap_or(switcher::telemetry::defaults::INTERVAL_US);
    DEFAULT_HIST_MAX_US.max(interval.saturating_mul(10)).min(MAX_HIST_MAX_US)
}

/// A CPU list (`0-3,6`) as a bit mask.
fn parse_cpu_list(s: &str) -> Result<u64, String> {
    let mut mask = 0u64;
    for part in s.split(',') {
        let (a, b) = part.split_once('-').unwrap_or((part, part));
        let parse = |x: &str| {
            x.trim().parse::<u32>().ok().filter(|&c| (c as usize) < MAX_CPUS).ok_or_else(|| {
                format!("'{x}' in '{s}' is not a vCPU number 0..{MAX_CPUS} (expected a list like 0-3,6)")
            })
        };
        let (a, b) = (parse(a)?, parse(b)?);
        if a > b {
            return Err(format!("range '{part}' in '{s}' runs backwards"));
        }
        for c in a..=b {
            mask |= 1 << c;
        }
    }
    Ok(mask)
}

impl RunArgs {
    pub fn into_config(self) -> Result<RunConfig, CliError> {
        for a in &self.guest_args {
            if a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(CliError::BadGuestArg(a.clone()));
            }
        }
        let mut words: Vec<&str> = Vec::with_capacity(self.guest_args.len() + 1);
        if self.selftest {
            words.push(GUEST_ARG_SELFTEST);
        }
        words.extend(self.guest_args.iter().map(String::as_str));
        let cmdline = words.join(" ");
        if cmdline.len() >= CMDLINE_LEN {
            return Err(CliError::CmdlineTooLong(cmdline.len()));
        }
        let w = &self.workload;
        for (option, mask) in [("--measure-cpus", w.measure_cpus), ("--load-cpus", w.load_cpus)] {
            if let Some(mask) = mask {
                let beyond = if self.vcpus >= 64 { 0 } else { mask >> self.vcpus };
                if beyond != 0 {
                    let cpu = self.vcpus + beyond.trailing_zeros();
                    return Err(CliError::CpuOutOfRange { option, cpu, vcpus: self.vcpus });
                }
            }
        }
        let range = w.hist_max_us.unwrap_or_else(|| default_hist_max_us(w.interval_us));
        if range < w.bucket_us {
            return Err(CliError::HistRange { range, bucket: w.bucket_us });
        }
        Ok(RunConfig {
            vcpus: self.vcpus,
            memory_bytes: self.memory << 20,
            kernel: self.kernel,
            serial: self.serial,
            duration: self.duration,
            shutdown_timeout: self.shutdown_timeout,
            mode: self.mode.into(),
            cmdline,
            workload: WorkloadRequest {
                interval_us: self.workload.interval_us.unwrap_or(0),
                cs_us: self.workload.cs_us.unwrap_or(0),
                load: LoadKind::from(self.workload.load) as u32,
                load_threads: self.workload.load_threads.unwrap_or(0),
                // The self-tests own the guest's CPUs while they run.
                enabled: u32::from(!self.workload.no_workload && !self.selftest),
                measure_prio: self.workload.priority,
                measure_cpus: self.workload.measure_cpus.unwrap_or(0),
                load_cpus: self.workload.load_cpus.unwrap_or(0),
                bucket_us: self.workload.bucket_us,
                stop_above_us: self.workload.stop_above.unwrap_or(0),
            },
            hist_buckets: range.div_ceil(self.workload.bucket_us),
            output: self.output,
            api_sock: self.api_sock,
            switch_every: self.switch_every.map(Duration::from_millis),
            switch_timeout: Duration::from_millis(self.switch_timeout_ms),
            vcpu_stop_timeout: Duration::from_millis(self.vcpu_stop_timeout_ms),
            watchdog: Duration::from_secs(self.watchdog_secs),
            seccomp: self.seccomp == OnOff::On,
        })
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let secs: f64 = s.parse().map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !secs.is_finite() || secs <= 0.0 || secs > MAX_DURATION_SECS {
        return Err(format!("'{s}' must be more than 0 and at most {MAX_DURATION_SECS} seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunConfig, String> {
        let mut argv = vec!["rtswitch", "run"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        match cli.command {
            Command::Run(r) => r.into_config().map_err(|e| e.to_string()),
            _ => Err("not a run".into()),
        }
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.vcpus, 2);
        assert_eq!(c.memory_bytes, 128 << 20);
        assert_eq!(c.serial, SerialOutput::Stdout);
        assert_eq!(c.duration, None);
        assert_eq!(c.cmdline, "");
        assert_eq!(c.mode, LockMode::Mainline);
        assert_eq!(
            c.workload,
            WorkloadRequest {
                load: LoadKind::Locks as u32,
                enabled: 1,
                measure_prio: 99,
                bucket_us: 1,
                ..Default::default()
            }
        );
        assert_eq!(c.hist_buckets, DEFAULT_HIST_MAX_US);
        assert!(c.seccomp);
    }

    #[test]
    fn seccomp_off() {
        assert!(!parse(&["--seccomp", "off"]).unwrap().seccomp);
        assert!(parse(&["--seccomp", "maybe"]).is_err());
    }

    #[test]
    fn control_options() {
        let c = parse(&["--api-sock", "/tmp/x.sock", "--switch-every", "1000", "--switch-timeout-ms", "500"]).unwrap();
        assert_eq!(c.api_sock.as_deref(), Some(std::path::Path::new("/tmp/x.sock")));
        assert_eq!(c.switch_every, Some(Duration::from_secs(1)));
        assert_eq!(c.switch_timeout, Duration::from_millis(500));
        assert!(parse(&["--switch-every", "0"]).is_err());
        let cli = Cli::try_parse_from(["rtswitch", "ctl", "--api-sock", "/tmp/x", "mode", "rt"]).unwrap();
        let Command::Ctl(ctl) = cli.command else { panic!("not ctl") };
        assert!(matches!(ctl.command, CtlCommand::Mode { mode: Mode::Rt }));
        assert!(Cli::try_parse_from(["rtswitch", "ctl", "--api-sock", "/tmp/x", "mode", "fast"]).is_err());
    }

    #[test]
    fn workload_options() {
        let c = parse(&["--load", "cpu", "--interval-us", "2000", "--cs-us", "300", "--load-threads", "3"]).unwrap();
        assert_eq!(
            c.workload,
            WorkloadRequest {
                interval_us: 2000,
                cs_us: 300,
                load: LoadKind::Cpu as u32,
                load_threads: 3,
                enabled: 1,
                measure_prio: 99,
                measure_cpus: 0,
                load_cpus: 0,
                bucket_us: 1,
                stop_above_us: 0,
            }
        );
        assert_eq!(parse(&["--no-workload"]).unwrap().workload.enabled, 0);
        assert_eq!(parse(&["--selftest"]).unwrap().workload.enabled, 0);
        assert!(parse(&["--interval-us", "5"]).unwrap_err().contains("--interval-us"));
        assert!(parse(&["--load", "heavy"]).unwrap_err().contains("--load"));
        assert!(parse(&["--hist-max-us", "0"]).is_err());
    }

    #[test]
    fn mode_and_selftest() {
        let c = parse(&["--mode", "rt", "--selftest", "--guest-arg", "no-pi"]).unwrap();
        assert_eq!(c.mode, LockMode::Rt);
        assert_eq!(c.cmdline, "selftest no-pi");
        assert!(parse(&["--mode", "fast"]).unwrap_err().contains("--mode"));
    }

    #[test]
    fn ranges_are_enforced() {
        assert!(parse(&["--vcpus", "0"]).unwrap_err().contains("--vcpus"));
        assert!(parse(&["--vcpus", "1000"]).unwrap_err().contains("--vcpus"));
        assert!(parse(&["--vcpus", "64"]).is_ok());
        assert!(parse(&["--memory", "0"]).unwrap_err().contains("--memory"));
        assert!(parse(&["--memory", "99999"]).is_err());
        assert!(parse(&["--duration", "0"]).is_err());
        assert!(parse(&["--duration", "-1"]).is_err());
        assert!(parse(&["--duration", "nan"]).is_err());
        assert_eq!(parse(&["--duration", "1.5"]).unwrap().duration, Some(Duration::from_millis(1500)));
        assert!(parse(&["--serial", "tty"]).is_err());
    }

    #[test]
    fn guest_args_are_words() {
        assert_eq!(parse(&["--guest-arg", "panic", "--guest-arg", "exit=3"]).unwrap().cmdline, "panic exit=3");
        assert!(parse(&["--guest-arg", "a b"]).unwrap_err().contains("one non-empty word"));
        assert!(parse(&["--guest-arg", ""]).is_err());
        let long = "x".repeat(300);
        assert!(parse(&["--guest-arg", &long]).unwrap_err().contains("at most 255"));
    }
}
