//! The options of `rtswitch run` and `rtswitch ctl` (clap, derive). Every
//! value is range-checked here, so that the rest of the VMM only sees a
//! valid [`RunConfig`]. The whole command line (which also dispatches to
//! the tools, `stress` and `bench`) is `crate::app`'s, above this.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use switcher::abi::{CMDLINE_LEN, GUEST_ARG_SELFTEST, MAX_CPUS};
use switcher::profile::Profile;
use switcher::telemetry::{LoadKind, WorkloadRequest};

use crate::devices::console::SerialOutput;
use crate::limits::{
    DEFAULT_MEMORY_MIB, DEFAULT_VCPUS, MAX_HIST_MAX_US, MAX_MEMORY_MIB, MIN_MEMORY_MIB, default_hist_max_us,
};
use crate::report::outputs::{HistogramMode, OutputFiles};
use crate::report::{Plotter, RunOptions, RunSettings};
use crate::units::{Unit, parse_duration_in, us_in};

const MAX_DURATION_SECS: f64 = 365.0 * 24.0 * 3600.0;

/// `rtswitch ctl`'s options are global: they may come before or after the
/// subcommand (`ctl --json mode rt` or `ctl mode rt --json`).
#[derive(Debug, Args)]
#[command(after_long_help = CTL_AFTER_HELP)]
pub struct CtlArgs {
    /// The control socket of a `rtswitch run --api-sock PATH` (required).
    #[arg(long, value_name = "PATH", global = true)]
    pub api_sock: Option<PathBuf>,
    /// Print the raw QMP reply, one JSON line, as QEMU sends it: `{"return": ...}` on success, `{"error": {"class", "desc"}}` on failure (so `ctl latency --json | jq '.return.modes[]'`).
    #[arg(long, global = true)]
    pub json: bool,
    /// How long to wait for the reply: a duration above 0 (`30s`, `500ms`; a bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "30s", global = true, value_parser = parse_secs_or_duration)]
    pub timeout: Duration,
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// cyclictest's options that `run` takes (the docs link to this text, in
/// docs/cli.md, which is generated from `--help`).
pub const RUN_AFTER_HELP: &str = "\
cyclictest's short options, where the meaning is the same:
  -D DURATION  --duration        (bare number: seconds; 10m, 1h as cyclictest)
  -i US        --interval-us     (measurement period)
  -p PRIO      --priority        (measurement threads' priority)
  -h US        --hist-max-us     (histogram range; --histogram FILE writes it)
  -q           --quiet
  -b US        --stop-above      (stop at the first sample above US, print its cause)
  -a CPUS      --measure-cpus    (vCPUs that measure; one thread per vCPU)
  -t [N]       --threads         (N threads on vCPUs 0..N-1; alone: one per vCPU)
Help is --help (-h is cyclictest's histogram option).";

/// What Ctrl-C does to `ctl mode` (the docs link to this text, in
/// docs/cli.md, which is generated from `--help`).
pub const CTL_AFTER_HELP: &str = "\
Ctrl-C on `ctl mode rt|mainline` while the switch runs cancels it: ctl sends
`x-cancel-switch` on a second connection and waits for the switch's reply.
A cancelled switch changes nothing (nothing patched, the guest thaws in the
old mode; ctl exits 1 with the VMM's error). A switch already past its
verdict (the call sites patched) cannot be cancelled: it completes, and ctl
reports it. A second Ctrl-C stops ctl at once without waiting.";

#[derive(Debug, Clone, Subcommand)]
pub enum CtlCommand {
    /// Switch the guest's locking mode (replies when the switch has completed or failed; Ctrl-C cancels it).
    #[command(after_long_help = CTL_AFTER_HELP)]
    Mode {
        /// `mainline`, `rt`, or `locks=..,preempt=..,irq=..` (a dimension left out takes mainline's).
        #[arg(value_parser = parse_profile, value_name = "PROFILE")]
        mode: Profile,
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
    /// Start the guest of a `run --paused` (QEMU's `cont`); nothing changes if it runs already.
    Cont,
    /// Send one raw QMP command, e.g. '{"execute":"query-mode"}'.
    Raw {
        #[arg(value_name = "JSON")]
        request: String,
    },
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

/// `rtswitch run`. Its `-h` is cyclictest's (`--hist-max-us`); help is
/// `--help` only.
#[derive(Debug, Args)]
#[command(disable_help_flag = true, after_long_help = RUN_AFTER_HELP)]
pub struct RunArgs {
    /// Print help (`-h` is cyclictest's: --hist-max-us).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
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
    /// Ask the guest to shut down after this long: `2s`, `1.5s`, `500ms`, `2m` (a bare number is seconds; cyclictest -D). [default: none, run until the guest exits or a signal]
    #[arg(long, short = 'D', value_name = "DURATION", value_parser = parse_secs_or_duration)]
    pub duration: Option<Duration>,
    /// How long the guest gets to shut down once asked, before it is stopped (a bare number is seconds).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_secs_or_duration)]
    pub shutdown_timeout: Duration,
    /// Profile to boot in: `mainline`, `rt`, or `locks=mainline|rt,preempt=none|voluntary|full,irq=hard|threaded,idle=haltpoll|halt|poll` (a dimension left out takes mainline's), optionally after a named profile (`rt,idle=poll`); the call sites are patched to it before any vCPU runs.
    #[arg(long, visible_alias = "mode", value_name = "PROFILE", default_value = "mainline", value_parser = parse_profile)]
    pub profile: Profile,
    /// Run the in-guest self-test suite; exit 0 only if every test passed.
    #[arg(long)]
    pub selftest: bool,
    /// A word for the guest kernel (repeatable), e.g. `panic`, `exit=3`; an unknown key is refused before boot (keys: docs/usage.md, "Guest arguments").
    #[arg(long = "guest-arg", value_name = "WORD")]
    pub guest_args: Vec<String>,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    /// Serve the QMP control socket at PATH (created 0600, removed at exit).
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Hold every vCPU before the guest's first instruction until a control-socket client sends `cont` (QEMU's -S); --duration counts from then. Needs --api-sock.
    #[arg(long, requires = "api_sock")]
    pub paused: bool,
    /// Toggle the mode at this period (`10ms`..`1d`; a bare number is ms), the same path as `ctl mode`. [default: none, no timer]
    #[arg(long, value_name = "DURATION", value_parser = parse_switch_every)]
    pub switch_every: Option<Duration>,
    /// The profile --switch-every toggles to and from the boot profile. [default: rt, or mainline when booting in rt; either with the boot profile's idle policy]
    #[arg(long, value_name = "PROFILE", value_parser = parse_profile)]
    pub switch_to: Option<Profile>,
    /// Raise a device interrupt on every vCPU RATE times a second through an irqfd; its handler works WORK_US (default 20) in hard-IRQ context or in a handler thread, as the profile's irq dimension says.
    #[arg(long, value_name = "RATE[,WORK_US]", value_parser = parse_irq_load)]
    pub irq_load: Option<IrqLoad>,
    /// Priority of the device interrupt handler threads (threaded irq mode; 1..=99). [default: 50, below the measurement threads]
    #[arg(long, value_name = "PRIO", value_parser = clap::value_parser!(u32).range(1..=99))]
    pub irq_prio: Option<u32>,
    /// Try each switch in one blackout first (the VMM proves from the task stacks that no task is in the code it changes), falling back to the guest's freezer; off: the freezer only.
    #[arg(long, value_enum, value_name = "on|off", default_value_t = OnOff::On)]
    pub fast_switch: OnOff,
    /// Run the VMM's control thread (the control socket, the switch coordinator, the stop-machine hold) at SCHED_FIFO 1 when the host allows it (root, CAP_SYS_NICE), so that it runs at once when a client or the guest wakes it, not after a vCPU's time slice; off: normal priority.
    #[arg(long, value_enum, value_name = "on|off", default_value_t = OnOff::On)]
    pub control_fifo: OnOff,
    /// Deadline for the guest to reach quiescence in a switch (a bare number is ms; old name --switch-timeout-ms).
    #[arg(long, alias = "switch-timeout-ms", value_name = "DURATION", default_value = "2s", value_parser = parse_switch_timeout)]
    pub switch_timeout: Duration,
    /// Report a CPU whose guest watchdog thread has not run this long; 0 turns it off (a bare number is seconds; old name --watchdog-secs).
    #[arg(long, alias = "watchdog-secs", value_name = "DURATION", default_value = "10s", value_parser = parse_watchdog)]
    pub watchdog: Duration,
    /// Deadline for every vCPU to stop (leave guest mode) in a switch (a bare number is ms; old name --vcpu-stop-timeout-ms).
    #[arg(long, alias = "vcpu-stop-timeout-ms", value_name = "DURATION", default_value = "500ms", value_parser = parse_vcpu_stop_timeout)]
    pub vcpu_stop_timeout: Duration,
    /// Per-thread seccomp filters, Landlock and rlimits (docs/threat-model.md); off only for debugging.
    #[arg(long, value_enum, value_name = "on|off", default_value_t = OnOff::On)]
    pub seccomp: OnOff,
    /// Guest console output written per run, in MiB; past it the guest's console is dropped and counted (0: no limit).
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    pub console_limit: u64,
    /// Close a control-socket client that has sent nothing for this long (a bare number is seconds; 0: never); a client that has not negotiated is closed after 5 s whatever this says.
    #[arg(long, value_name = "DURATION", default_value = "600s", value_parser = parse_idle_timeout)]
    pub api_idle_timeout: Duration,
    /// Period of the host-noise probe: a thread per host CPU that times its own wake-ups, so the reports can say whether the host itself stalled across a guest sample (docs/latency.md); a bare number is µs; `off`: no probe.
    #[arg(long, value_name = "DURATION|off", default_value = "4ms", value_parser = parse_host_noise)]
    pub host_noise: HostNoise,
}

/// `--host-noise`: the probe's period, or off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostNoise(pub Option<Duration>);

/// `--host-noise DURATION|off` (100 µs .. 100 ms).
fn parse_host_noise(s: &str) -> Result<HostNoise, String> {
    if s == "off" {
        return Ok(HostNoise(None));
    }
    parse_duration_in(s, Unit::Micros, Duration::from_micros(100), Duration::from_millis(100))
        .map(|d| HostNoise(Some(d)))
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
    /// Measurement period in µs, 100us..1s (cyclictest -i; a bare number is µs, or with a unit: `1ms`). Default: 1000.
    #[arg(long, short = 'i', value_name = "US", value_parser = us_in(100, 1_000_000))]
    pub interval_us: Option<u32>,
    /// Critical-section length of the load threads in µs (a bare number is µs, or `2ms`). Default: 500 (well above the latency floor, below the period; a section as long as the period is warned about before the boot).
    #[arg(long, value_name = "US", value_parser = us_in(1, 1_000_000))]
    pub cs_us: Option<u32>,
    /// Load threads per CPU (default 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=16))]
    pub load_threads: Option<u32>,
    /// Histogram range in µs, 10us..100ms; slower samples count as overflows (cyclictest -h; --histogram writes the histogram). Default: 10000, or 10 periods when --interval-us is longer.
    #[arg(long, short = 'h', value_name = "US", value_parser = us_in(10, MAX_HIST_MAX_US))]
    pub hist_max_us: Option<u32>,
    /// Histogram bucket width in µs (rtla --bucket-size).
    #[arg(long, value_name = "US", default_value_t = 1, value_parser = us_in(1, 1000))]
    pub bucket_us: u32,
    /// Priority of the measurement threads, 1..=99 (cyclictest -p). The guest's control thread runs at 98: below it, the switch can delay measurement.
    #[arg(long, short = 'p', value_name = "PRIO", default_value_t = 99, value_parser = clap::value_parser!(u32).range(1..=99))]
    pub priority: u32,
    /// vCPUs that run a measurement thread, as a list like 0-3,6 (cyclictest -a). Default: all.
    #[arg(long, short = 'a', value_name = "CPUS", value_parser = parse_cpu_list)]
    pub measure_cpus: Option<u64>,
    /// Measurement threads (cyclictest -t): N measures on vCPUs 0..N-1, one thread each; alone (`-t`), one per vCPU (the default). With --measure-cpus, N must be its CPU count.
    #[arg(long, short = 't', value_name = "N", num_args = 0..=1, default_missing_value = "0", value_parser = clap::value_parser!(u32).range(0..=MAX_CPUS as i64))]
    pub threads: Option<u32>,
    /// vCPUs that run load threads, as a list like 1,3. Default: all.
    #[arg(long, value_name = "CPUS", value_parser = parse_cpu_list)]
    pub load_cpus: Option<u64>,
    /// Stop at the first thread-latency sample above US µs and print its cause: the interrupted task, its locks, the preempt and interrupt-mask state, steal time, the CPU's last scheduler events and a verdict (cyclictest -b, rtla -a).
    #[arg(long, short = 'b', value_name = "US", value_parser = us_in(1, u32::MAX))]
    pub stop_above: Option<u32>,
    /// Boot only: no measurement threads, no load.
    #[arg(long)]
    pub no_workload: bool,
}

/// What the run writes besides its summary.
#[derive(Debug, Args, Clone, Default)]
pub struct OutputArgs {
    /// No live status line (a progress line replaces it on long runs; cyclictest -q).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Write the whole result as JSON (schema in docs/reports.md).
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
            plotter: None,
            profiles: Vec::new(),
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

/// A profile's spelling (`--profile`, `--switch-to`, `ctl mode`):
/// `mainline`, `rt`, or `locks=..,preempt=..,irq=..,idle=..`, optionally
/// after a named profile (`rt,idle=poll`).
pub fn parse_profile(s: &str) -> Result<Profile, String> {
    Profile::parse(s).map_err(|(e, item)| format!("'{item}': {e}"))
}

/// `--irq-load RATE[,WORK_US]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqLoad {
    /// Interrupts per second on every vCPU.
    pub rate_hz: u32,
    /// Work per interrupt in µs.
    pub work_us: u32,
}

/// Highest `--irq-load` rate: one interrupt every 50 µs per vCPU.
pub const MAX_IRQ_RATE_HZ: u32 = 20_000;

pub fn parse_irq_load(s: &str) -> Result<IrqLoad, String> {
    let (rate, work) = match s.split_once(',') {
        Some((r, w)) => (r, Some(w)),
        None => (s, None),
    };
    let rate_hz: u32 =
        rate.trim().parse().map_err(|_| format!("rate '{rate}' is not a whole number of interrupts per second"))?;
    if !(1..=MAX_IRQ_RATE_HZ).contains(&rate_hz) {
        return Err(format!("rate {rate_hz} is out of range 1..={MAX_IRQ_RATE_HZ} per second"));
    }
    let work_us = match work {
        None => switcher::telemetry::defaults::IRQ_WORK_US,
        Some(w) => w.trim().parse().map_err(|_| format!("work '{w}' is not a whole number of microseconds"))?,
    };
    // The work of one second's interrupts must fit in that second.
    if u64::from(work_us) * u64::from(rate_hz) >= 1_000_000 {
        return Err(format!(
            "{rate_hz} interrupts of {work_us} us each a second would take the whole CPU; lower the rate or the work"
        ));
    }
    Ok(IrqLoad { rate_hz, work_us })
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
    pub mode: Profile,
    /// `--switch-every`'s other profile.
    pub switch_to: Profile,
    /// `--irq-load`.
    pub irq_load: Option<IrqLoad>,
    pub cmdline: String,
    /// The workload request for the guest (zeros: guest defaults).
    pub workload: WorkloadRequest,
    /// 1 µs histogram buckets.
    pub hist_buckets: u32,
    pub output: OutputArgs,
    pub api_sock: Option<PathBuf>,
    /// `--paused`: the vCPUs wait for `cont`.
    pub paused: bool,
    pub switch_every: Option<Duration>,
    /// `--fast-switch on` (the default).
    pub fast_switch: bool,
    /// `--control-fifo on` (the default).
    pub control_fifo: bool,
    pub switch_timeout: Duration,
    pub vcpu_stop_timeout: Duration,
    pub watchdog: Duration,
    /// `--seccomp on` (the default).
    pub seccomp: bool,
    /// `--console-limit` in bytes (0: no limit).
    pub console_limit: u64,
    /// `--api-idle-timeout` (zero: never).
    pub api_idle_timeout: Duration,
    /// `--host-noise`: the probe's period (`None`: off).
    pub host_noise: Option<Duration>,
    /// What draws `--plot` (the plotting code is above the core: the
    /// command line's dispatch sets it; `None` from [`RunArgs::into_config`]).
    pub plotter: Option<Plotter>,
}

impl RunConfig {
    /// The files to write, with what draws the plot.
    pub fn outputs(&self) -> OutputFiles {
        OutputFiles { plotter: self.plotter, profiles: vec![self.mode, self.switch_to], ..self.output.files() }
    }

    /// What the reports show of the run's configuration: everything the
    /// JSON report's `config` needs to reproduce the run.
    pub fn report_settings(&self) -> RunSettings {
        let words = || self.cmdline.split_whitespace();
        RunSettings {
            vcpus: self.vcpus,
            memory_bytes: self.memory_bytes,
            mode: self.mode,
            workload: self.workload,
            hist_buckets: self.hist_buckets,
            duration: self.duration,
            outputs: self.outputs(),
            options: RunOptions {
                command_line: std::env::args().collect(),
                kernel: self.kernel.as_ref().map(|k| k.display().to_string()),
                guest_args: words().filter(|w| *w != GUEST_ARG_SELFTEST).map(String::from).collect(),
                selftest: words().any(|w| w == GUEST_ARG_SELFTEST),
                switch_every: self.switch_every,
                switch_to: Some(self.switch_to),
                irq_load: self.irq_load.map(|l| (l.rate_hz, l.work_us)),
                irq_prio: (self.workload.irq_prio != 0).then_some(self.workload.irq_prio),
                api_sock: self.api_sock.as_ref().map(|p| p.display().to_string()),
                shutdown_timeout: self.shutdown_timeout,
                fast_switch: self.fast_switch,
                control_fifo: self.control_fifo,
                switch_timeout: self.switch_timeout,
                vcpu_stop_timeout: self.vcpu_stop_timeout,
                watchdog: self.watchdog,
                seccomp: self.seccomp,
                host_noise: self.host_noise,
            },
        }
    }

    /// What the command line asks for that measures the load rather than
    /// latency, said before the boot (each printed `rtswitch: warning: `).
    /// A lock-load critical section at least as long as the period: under
    /// mainline locking a section keeps preemption off throughout, so every
    /// period that falls in one is missed. rt locking (rtmutexes, a
    /// preemptible section) is fine: no warning when no mainline-locked
    /// profile can run.
    pub fn warnings(&self) -> Vec<String> {
        use switcher::profile::LockMode;
        use switcher::telemetry::defaults;
        let w = &self.workload;
        let mut out = Vec::new();
        if w.enabled == 0 || w.load != LoadKind::Locks as u32 {
            return out;
        }
        let given = |v: u32, default: u32| if v == 0 { default } else { v };
        let (cs, interval) = (given(w.cs_us, defaults::CS_US), given(w.interval_us, defaults::INTERVAL_US));
        let switches = self.switch_every.is_some() || self.api_sock.is_some();
        let mainline = self.mode.locks == LockMode::Mainline
            || (switches && self.switch_to.locks == LockMode::Mainline)
            || self.api_sock.is_some();
        if cs >= interval && mainline {
            let cs_given = if w.cs_us == 0 { " (the default)" } else { "" };
            let interval_given = if w.interval_us == 0 { " (the default)" } else { "" };
            out.push(format!(
                "--cs-us {cs}{cs_given} is not shorter than the measurement period, --interval-us {interval}{interval_given}: \
                 under mainline locking a load thread keeps preemption off for its whole critical section, so the \
                 measurement thread misses every period that falls inside one and the run measures the sections, not \
                 latency; give --cs-us below --interval-us (e.g. --cs-us {}) or a longer --interval-us",
                (interval / 2).max(1)
            ));
        }
        out
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CliError {
    #[error("--guest-arg '{0}' must be one non-empty word without spaces or control characters")]
    BadGuestArg(String),
    #[error("--guest-arg values add up to {0} bytes; the guest command line holds at most {max}", max = CMDLINE_LEN - 1)]
    CmdlineTooLong(usize),
    #[error("--guest-arg '{word}': unknown key '{key}'; the guest kernel knows: {known}")]
    UnknownGuestArg { word: String, key: String, known: String },
    #[error("--guest-arg '{word}': {why}")]
    BadGuestArgValue { word: String, why: String },
    #[error("{option} names vCPU {cpu}, but the VM has {vcpus} (0..={last})", last = vcpus - 1)]
    CpuOutOfRange { option: &'static str, cpu: u32, vcpus: u32 },
    #[error("--hist-max-us {range} is less than one --bucket-us {bucket} bucket")]
    HistRange { range: u32, bucket: u32 },
    #[error(
        "-t/--threads {threads}: the VM has {vcpus} vCPU(s), one measurement thread each; give -t {vcpus} or fewer, or --vcpus {threads}"
    )]
    TooManyThreads { threads: u32, vcpus: u32 },
    #[error(
        "-t/--threads {threads} and --measure-cpus name {cpus} CPU(s): give one of them, or as many threads as CPUs"
    )]
    ThreadsVsCpus { threads: u32, cpus: u32 },
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

/// The guest argument keys as `--help` and errors list them
/// (`switcher::cmdline::KEYS`, the list the guest parses with).
pub fn guest_arg_keys() -> String {
    switcher::cmdline::KEYS.iter().map(key_form).collect::<Vec<_>>().join(", ")
}

fn key_form(k: &switcher::cmdline::Key) -> String {
    use switcher::cmdline::Takes;
    match k.takes {
        Takes::Nothing => k.name.to_string(),
        Takes::Number { unit } => format!("{}={unit}", k.name),
        Takes::OneOf(v) => format!("{}={}", k.name, v.join("|")),
    }
}

/// Checks one `--guest-arg` against the guest kernel's keys.
fn check_guest_arg(a: &str) -> Result<(), CliError> {
    use switcher::cmdline::WordError;
    let bad = |why: String| CliError::BadGuestArgValue { word: a.to_string(), why };
    match switcher::cmdline::parse(a) {
        Ok(_) => Ok(()),
        // The guest argument of old: a profile dimension now.
        Err(WordError::Unknown("idle")) => Err(bad(
            "the idle policy is the profile's idle dimension now, switchable at run time: write --profile rt,idle=poll (or mainline,idle=halt, ...)"
                .to_string(),
        )),
        Err(WordError::Unknown(key)) => {
            Err(CliError::UnknownGuestArg { word: a.to_string(), key: key.to_string(), known: guest_arg_keys() })
        }
        Err(WordError::UnexpectedValue(k)) => Err(bad(format!("'{}' takes no value; write it alone", k.name))),
        Err(WordError::MissingValue(k)) | Err(WordError::BadValue(k, _)) => {
            Err(bad(format!("write it as {}", key_form(k))))
        }
    }
}

impl RunArgs {
    pub fn into_config(self) -> Result<RunConfig, CliError> {
        for a in &self.guest_args {
            if a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(CliError::BadGuestArg(a.clone()));
            }
            // A custom --kernel has its own arguments: only the embedded
            // kernel's are known here.
            if self.kernel.is_none() {
                check_guest_arg(a)?;
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
        let measure_cpus = match (w.threads.filter(|&n| n > 0), w.measure_cpus) {
            (Some(n), _) if n > self.vcpus => return Err(CliError::TooManyThreads { threads: n, vcpus: self.vcpus }),
            (Some(n), Some(mask)) if mask.count_ones() != n => {
                return Err(CliError::ThreadsVsCpus { threads: n, cpus: mask.count_ones() });
            }
            (Some(n), None) => Some(if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }),
            (_, mask) => mask,
        };
        for (option, mask) in [("--measure-cpus", measure_cpus), ("--load-cpus", w.load_cpus)] {
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
            mode: self.profile,
            switch_to: self.switch_to.unwrap_or({
                // The other named profile, idling as the boot profile does.
                let other = if (Profile { idle: Profile::RT.idle, ..self.profile }) == Profile::RT {
                    Profile::MAINLINE
                } else {
                    Profile::RT
                };
                Profile { idle: self.profile.idle, ..other }
            }),
            irq_load: self.irq_load,
            cmdline,
            workload: WorkloadRequest {
                interval_us: self.workload.interval_us.unwrap_or(0),
                cs_us: self.workload.cs_us.unwrap_or(0),
                load: LoadKind::from(self.workload.load) as u32,
                load_threads: self.workload.load_threads.unwrap_or(0),
                // The self-tests own the guest's CPUs while they run.
                enabled: u32::from(!self.workload.no_workload && !self.selftest),
                measure_prio: self.workload.priority,
                measure_cpus: measure_cpus.unwrap_or(0),
                load_cpus: self.workload.load_cpus.unwrap_or(0),
                bucket_us: self.workload.bucket_us,
                stop_above_us: self.workload.stop_above.unwrap_or(0),
                irq_rate_hz: self.irq_load.map_or(0, |l| l.rate_hz),
                irq_work_us: self.irq_load.map_or(0, |l| l.work_us),
                irq_prio: self.irq_prio.unwrap_or(0),
                _reserved: 0,
            },
            hist_buckets: range.div_ceil(self.workload.bucket_us),
            output: self.output,
            api_sock: self.api_sock,
            paused: self.paused,
            switch_every: self.switch_every,
            fast_switch: self.fast_switch == OnOff::On,
            control_fifo: self.control_fifo == OnOff::On,
            switch_timeout: self.switch_timeout,
            vcpu_stop_timeout: self.vcpu_stop_timeout,
            watchdog: self.watchdog,
            seccomp: self.seccomp == OnOff::On,
            console_limit: self.console_limit.saturating_mul(1 << 20),
            api_idle_timeout: self.api_idle_timeout,
            host_noise: self.host_noise.0,
            plotter: None,
        })
    }
}

const NONZERO: Duration = Duration::from_nanos(1);

/// `--duration`, `--shutdown-timeout`, `ctl --timeout`: bare seconds.
pub fn parse_secs_or_duration(s: &str) -> Result<Duration, String> {
    parse_duration_in(s, Unit::Secs, NONZERO, Duration::from_secs_f64(MAX_DURATION_SECS))
}

/// `--switch-every`: bare ms, 10 ms to a day.
pub fn parse_switch_every(s: &str) -> Result<Duration, String> {
    parse_duration_in(s, Unit::Millis, Duration::from_millis(10), Duration::from_secs(86_400))
}

fn parse_switch_timeout(s: &str) -> Result<Duration, String> {
    parse_duration_in(s, Unit::Millis, Duration::from_millis(1), Duration::from_secs(600))
}

fn parse_vcpu_stop_timeout(s: &str) -> Result<Duration, String> {
    parse_duration_in(s, Unit::Millis, Duration::from_millis(1), Duration::from_secs(60))
}

fn parse_idle_timeout(s: &str) -> Result<Duration, String> {
    parse_duration_in(s, Unit::Secs, Duration::ZERO, Duration::from_secs(86_400))
}

fn parse_watchdog(s: &str) -> Result<Duration, String> {
    parse_duration_in(s, Unit::Secs, Duration::ZERO, Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `run` and `ctl` as `rtswitch` takes them (the whole command line,
    /// with the tools, is `crate::app`'s).
    #[derive(Debug, Parser)]
    #[command(name = "rtswitch")]
    enum Cli {
        Run(Box<RunArgs>),
        Ctl(CtlArgs),
    }

    fn parse(args: &[&str]) -> Result<RunConfig, String> {
        let mut argv = vec!["rtswitch", "run"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).map_err(|e| e.to_string())? {
            Cli::Run(r) => r.into_config().map_err(|e| e.to_string()),
            Cli::Ctl(_) => Err("not a run".into()),
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
        assert_eq!(c.mode, Profile::MAINLINE);
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
        assert_eq!(c.hist_buckets, crate::limits::DEFAULT_HIST_MAX_US);
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
        assert!(matches!(ctl(&["--api-sock", "/tmp/x", "cont"]).command, CtlCommand::Cont));
        let ctl = ctl(&["--api-sock", "/tmp/x", "mode", "rt"]);
        assert!(matches!(ctl.command, CtlCommand::Mode { mode: Profile::RT }));
        assert!(Cli::try_parse_from(["rtswitch", "ctl", "--api-sock", "/tmp/x", "mode", "fast"]).is_err());
        assert!(parse(&["--api-sock", "/tmp/x", "--paused"]).unwrap().paused);
        assert!(!parse(&[]).unwrap().paused);
        let e = parse(&["--paused"]).unwrap_err();
        assert!(e.contains("--api-sock"), "--paused without a socket: nobody could send cont: {e}");
    }

    fn ctl(args: &[&str]) -> CtlArgs {
        let mut argv = vec!["rtswitch", "ctl"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).map_err(|e| e.to_string()).unwrap() {
            Cli::Ctl(c) => c,
            Cli::Run(_) => panic!("not ctl"),
        }
    }

    #[test]
    fn ctl_options_go_before_or_after_the_subcommand() {
        for argv in [
            &["--api-sock", "/tmp/s", "--json", "--timeout", "2s", "mode", "rt"][..],
            &["mode", "rt", "--json", "--api-sock", "/tmp/s", "--timeout", "2"],
            &["--json", "mode", "rt", "--api-sock", "/tmp/s", "--timeout", "2000ms"],
        ] {
            let c = ctl(argv);
            assert_eq!(c.api_sock.as_deref(), Some(std::path::Path::new("/tmp/s")), "{argv:?}");
            assert!(c.json, "{argv:?}");
            assert_eq!(c.timeout, Duration::from_secs(2), "{argv:?}");
            assert!(matches!(c.command, CtlCommand::Mode { mode: Profile::RT }));
        }
        let c = ctl(&["latency", "--last", "3", "--json", "--api-sock", "/tmp/s"]);
        assert!(c.json && matches!(c.command, CtlCommand::Latency { page: PageArgs { last: Some(3), .. } }));
        let c = ctl(&["raw", r#"{"execute":"query-mode"}"#, "--json"]);
        assert!(c.json && matches!(&c.command, CtlCommand::Raw { request } if request.contains("query-mode")));
        let c = ctl(&["--json", "raw", "{}"]);
        assert!(c.json && matches!(&c.command, CtlCommand::Raw { request } if request == "{}"));
        let c = ctl(&["status"]);
        assert_eq!((c.api_sock, c.json, c.timeout), (None, false, Duration::from_secs(30)));
    }

    #[test]
    fn durations_take_units_and_bare_numbers_keep_their_old_unit() {
        let c = parse(&["--duration", "2s", "--switch-every", "10ms", "--switch-timeout", "2s"]).unwrap();
        assert_eq!((c.duration, c.switch_every), (Some(Duration::from_secs(2)), Some(Duration::from_millis(10))));
        assert_eq!(c.switch_timeout, Duration::from_secs(2));
        // The issue's command line: bare numbers in their old units.
        let c = parse(&["--switch-every", "2500", "--duration", "10", "--hist-max-us", "100000"]).unwrap();
        assert_eq!((c.duration, c.switch_every), (Some(Duration::from_secs(10)), Some(Duration::from_millis(2500))));
        let c = parse(&["--switch-timeout-ms", "300", "--vcpu-stop-timeout-ms", "50", "--watchdog-secs", "3"]).unwrap();
        assert_eq!(c.switch_timeout, Duration::from_millis(300));
        assert_eq!(c.vcpu_stop_timeout, Duration::from_millis(50));
        assert_eq!(c.watchdog, Duration::from_secs(3));
        let c = parse(&["--duration", "1.5s", "--shutdown-timeout", "500ms", "--watchdog", "0"]).unwrap();
        assert_eq!((c.duration, c.shutdown_timeout), (Some(Duration::from_millis(1500)), Duration::from_millis(500)));
        assert_eq!(c.watchdog, Duration::ZERO);
        assert_eq!(parse(&["--duration", "2m"]).unwrap().duration, Some(Duration::from_secs(120)));
        assert_eq!(parse(&["--duration", "250us"]).unwrap().duration, Some(Duration::from_micros(250)));
        let d = parse(&[]).unwrap();
        assert_eq!((d.switch_timeout, d.vcpu_stop_timeout), (Duration::from_secs(2), Duration::from_millis(500)));
        assert_eq!((d.watchdog, d.shutdown_timeout), (Duration::from_secs(10), Duration::from_secs(10)));
        assert!(parse(&["--switch-every", "5ms"]).unwrap_err().contains("10ms to 1d"));
        assert!(parse(&["--duration", "2x"]).unwrap_err().contains("unknown unit 'x'"));
        assert!(parse(&["--duration", "0s"]).is_err());
        assert!(parse(&["--duration", "-1s"]).is_err());
        assert!(parse(&["--switch-timeout", "601s"]).is_err());
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
                irq_rate_hz: 0,
                irq_work_us: 0,
                irq_prio: 0,
                _reserved: 0,
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
        assert_eq!(c.mode, Profile::RT);
        assert_eq!(c.cmdline, "selftest no-pi");
        let e = parse(&["--mode", "fast"]).unwrap_err();
        assert!(e.contains("--profile") && e.contains("'fast'"), "{e}");
        let c = parse(&["--profile", "locks=rt,preempt=full,irq=threaded"]).unwrap();
        assert_eq!((c.mode, c.switch_to), (Profile::RT, Profile::MAINLINE));
        let c = parse(&["--profile", "preempt=full", "--switch-to", "irq=threaded"]).unwrap();
        assert_eq!(c.mode.name(), "locks=mainline,preempt=full,irq=hard");
        assert_eq!(c.switch_to.name(), "locks=mainline,preempt=voluntary,irq=threaded");
        let e = parse(&["--profile", "preempt=sometimes"]).unwrap_err();
        assert!(e.contains("preempt is one of none, voluntary, full"), "{e}");
    }

    #[test]
    fn cyclictest_short_options_mean_what_they_mean_there() {
        let c = parse(&["-D", "2", "-i", "500", "-p", "80", "-h", "2000", "-q", "-b", "900", "-a", "1"]).unwrap();
        assert_eq!(c.duration, Some(Duration::from_secs(2)));
        assert_eq!((c.workload.interval_us, c.workload.measure_prio), (500, 80));
        assert_eq!((c.hist_buckets, c.workload.stop_above_us, c.workload.measure_cpus), (2000, 900, 0b10));
        assert!(c.output.quiet);
        assert_eq!(parse(&["-D", "10m"]).unwrap().duration, Some(Duration::from_secs(600)));
        // -t N: N threads on vCPUs 0..N-1; -t alone: one per vCPU.
        assert_eq!(parse(&["--vcpus", "4", "-t", "3"]).unwrap().workload.measure_cpus, 0b111);
        assert_eq!(parse(&["-t"]).unwrap().workload.measure_cpus, 0);
        assert_eq!(parse(&["-t", "-D", "1"]).unwrap().duration, Some(Duration::from_secs(1)));
        assert_eq!(parse(&["--vcpus", "4", "-t", "2", "-a", "1,3"]).unwrap().workload.measure_cpus, 0b1010);
        assert!(parse(&["-t", "3"]).unwrap_err().contains("give -t 2 or fewer"));
        assert!(parse(&["--vcpus", "4", "-t", "2", "-a", "1-3"]).unwrap_err().contains("name 3 CPU(s)"));
        // µs options take units too; help is --help (-h is the histogram's).
        assert_eq!(parse(&["-i", "2ms", "--cs-us", "0.5ms"]).unwrap().workload.cs_us, 500);
        assert!(parse(&["--interval-us", "1000.5"]).unwrap_err().contains("whole number of microseconds"));
        let help = Cli::try_parse_from(["rtswitch", "run", "--help"]).unwrap_err();
        assert_eq!(help.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(help.to_string().contains("cyclictest's short options"), "{help}");
    }

    #[test]
    fn a_critical_section_as_long_as_the_period_is_warned_about_before_the_boot() {
        let w = parse(&["--cs-us", "2000"]).unwrap().warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("--cs-us 2000 is not shorter than the measurement period, --interval-us 1000 (the default)")
        );
        assert!(w[0].contains("preemption off") && w[0].contains("e.g. --cs-us 500"), "{w:?}");
        assert_eq!(parse(&["--cs-us", "2000", "-i", "2000"]).unwrap().warnings().len(), 1);
        assert!(parse(&["--cs-us", "999"]).unwrap().warnings().is_empty());
        assert!(parse(&[]).unwrap().warnings().is_empty());
        // Only mainline locking keeps preemption off in a section.
        assert!(parse(&["--cs-us", "2000", "--profile", "rt"]).unwrap().warnings().is_empty());
        assert_eq!(parse(&["--cs-us", "2000", "--profile", "rt", "--switch-every", "1s"]).unwrap().warnings().len(), 1);
        assert!(parse(&["--cs-us", "2000", "--load", "cpu"]).unwrap().warnings().is_empty());
        assert!(parse(&["--cs-us", "2000", "--no-workload"]).unwrap().warnings().is_empty());
    }

    /// Every `run` option and the JSON report's `config` key that gives it
    /// back ("-": it changes nothing the guest runs: where output goes).
    /// A new option fails this test until it is mapped.
    const CONFIG_KEYS: &[(&str, &str)] = &[
        ("help", "-"),
        ("vcpus", "vcpus"),
        ("memory", "memory_mib"),
        ("kernel", "kernel"),
        ("serial", "-"),
        ("duration", "duration_s"),
        ("shutdown_timeout", "shutdown_timeout_s"),
        ("profile", "mode"),
        ("selftest", "selftest"),
        ("guest_args", "guest_args"),
        ("load", "load"),
        ("interval_us", "interval_us"),
        ("cs_us", "cs_us"),
        ("load_threads", "load_threads"),
        ("hist_max_us", "hist_max_us"),
        ("bucket_us", "bucket_us"),
        ("priority", "priority"),
        ("measure_cpus", "measure_cpus"),
        ("threads", "measure_cpus"),
        ("load_cpus", "load_cpus"),
        ("stop_above", "stop_above_us"),
        ("no_workload", "workload_enabled"),
        ("quiet", "-"),
        ("json", "-"),
        ("histogram", "-"),
        ("histogram_mode", "-"),
        ("histogram_irq", "-"),
        ("cyclictest_json", "-"),
        ("plot", "-"),
        ("plot_per_epoch", "-"),
        ("api_sock", "api_sock"),
        ("paused", "-"),
        ("switch_every", "switch_every_ms"),
        ("switch_to", "switch_to"),
        ("irq_load", "irq_load"),
        ("irq_prio", "irq_prio"),
        ("fast_switch", "fast_switch"),
        ("control_fifo", "control_fifo"),
        ("switch_timeout", "switch_timeout_ms"),
        ("watchdog", "watchdog_s"),
        ("vcpu_stop_timeout", "vcpu_stop_timeout_ms"),
        ("seccomp", "seccomp"),
        ("console_limit", "-"),
        ("api_idle_timeout", "-"),
        ("host_noise", "host_noise_period_us"),
    ];

    #[test]
    fn the_json_reports_config_holds_every_option_that_changes_the_run() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let run = cmd.find_subcommand_mut("run").expect("run");
        for a in run.get_arguments() {
            let id = a.get_id().as_str();
            assert!(CONFIG_KEYS.iter().any(|(o, _)| *o == id), "option {id} is not mapped to a config key");
        }
        let c = parse(&[
            "--vcpus",
            "1",
            "--memory",
            "64",
            "--kernel",
            "/k.elf",
            "--duration",
            "3s",
            "--shutdown-timeout",
            "5s",
            "--profile",
            "preempt=full",
            "--guest-arg",
            "no-spin",
            "--load",
            "cpu",
            "-i",
            "2000",
            "--cs-us",
            "300",
            "--load-threads",
            "3",
            "-h",
            "5000",
            "--bucket-us",
            "1",
            "-p",
            "80",
            "-a",
            "0",
            "--load-cpus",
            "0",
            "-b",
            "4000",
            "--api-sock",
            "/tmp/s",
            "--switch-every",
            "250ms",
            "--switch-to",
            "rt",
            "--irq-load",
            "500,30",
            "--irq-prio",
            "40",
            "--switch-timeout",
            "3s",
            "--watchdog",
            "5s",
            "--vcpu-stop-timeout",
            "100ms",
            "--seccomp",
            "off",
            "--host-noise",
            "2ms",
        ])
        .unwrap();
        let info = crate::report::json::tests::info(c.report_settings());
        let report = crate::report::json::build(&crate::report::json::tests::measurement(), &info);
        let v = serde_json::to_value(&report.config).unwrap();
        for (option, key) in CONFIG_KEYS.iter().filter(|(_, k)| *k != "-") {
            assert!(!v[key].is_null(), "--{option}: config.{key} is missing or null: {v}");
        }
        assert_eq!(v["mode"], "locks=mainline,preempt=full,irq=hard");
        assert_eq!((v["switch_every_ms"].as_f64(), v["switch_to"].as_str()), (Some(250.0), Some("rt")), "{v}");
        assert_eq!(v["irq_load"], serde_json::json!({"rate_hz": 500, "work_us": 30}));
        assert_eq!((v["irq_prio"].as_u64(), v["priority"].as_u64()), (Some(40), Some(80)));
        assert_eq!(v["guest_args"], serde_json::json!(["no-spin"]));
        assert_eq!((v["measure_cpus"].clone(), v["stop_above_us"].as_u64()), (serde_json::json!([0]), Some(4000)));
        assert_eq!(v["seccomp"], false);
        assert_eq!(v["host_noise_period_us"], 2000);
        // Read back through the schema, it is the same.
        let back = crate::report::json::RunReport::parse(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(back.config, report.config);
    }

    #[test]
    fn host_noise() {
        assert_eq!(parse(&[]).unwrap().host_noise, Some(Duration::from_millis(4)));
        assert_eq!(parse(&["--host-noise", "off"]).unwrap().host_noise, None);
        assert_eq!(parse(&["--host-noise", "250"]).unwrap().host_noise, Some(Duration::from_micros(250)));
        assert!(parse(&["--host-noise", "10us"]).is_err());
        assert!(parse(&["--host-noise", "1s"]).is_err());
    }

    #[test]
    fn irq_load() {
        let c = parse(&["--irq-load", "2000,40", "--irq-prio", "60"]).unwrap();
        assert_eq!(c.irq_load, Some(IrqLoad { rate_hz: 2000, work_us: 40 }));
        assert_eq!((c.workload.irq_rate_hz, c.workload.irq_work_us, c.workload.irq_prio), (2000, 40, 60));
        let c = parse(&["--irq-load", "500"]).unwrap();
        assert_eq!(c.irq_load, Some(IrqLoad { rate_hz: 500, work_us: switcher::telemetry::defaults::IRQ_WORK_US }));
        assert!(parse(&["--irq-load", "0"]).unwrap_err().contains("out of range"));
        assert!(parse(&["--irq-load", "10000,100"]).unwrap_err().contains("whole CPU"));
        assert!(parse(&["--irq-load", "fast"]).unwrap_err().contains("whole number"));
        assert!(parse(&["--irq-prio", "0"]).is_err());
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
    fn guest_args_are_checked_against_the_shared_key_list() {
        assert_eq!(
            parse(&["--guest-arg", "hold-lock=4000", "--guest-arg", "stall=5"]).unwrap().cmdline,
            "hold-lock=4000 stall=5"
        );
        let e = parse(&["--guest-arg", "idle=poll"]).unwrap_err();
        assert!(e.contains("--profile rt,idle=poll"), "{e}");
        let e = parse(&["--guest-arg", "hold-lok=4000"]).unwrap_err();
        assert!(e.contains("unknown key 'hold-lok'") && e.contains("hold-lock=MS") && e.contains("no-spin"), "{e}");
        assert!(parse(&["--guest-arg", "exit"]).unwrap_err().contains("write it as exit=N"));
        assert!(parse(&["--guest-arg", "fault=xx"]).unwrap_err().contains("fault=pf|ud"));
        assert!(parse(&["--guest-arg", "panic=1"]).unwrap_err().contains("takes no value"));
        // Another kernel has its own arguments.
        assert!(parse(&["--kernel", "/k.elf", "--guest-arg", "whatever"]).is_ok());
    }

    #[test]
    fn guest_args_are_words() {
        assert_eq!(parse(&["--guest-arg", "panic", "--guest-arg", "exit=3"]).unwrap().cmdline, "panic exit=3");
        assert!(parse(&["--guest-arg", "a b"]).unwrap_err().contains("one non-empty word"));
        assert!(parse(&["--guest-arg", ""]).is_err());
        let long = format!("exit={}", "1".repeat(300));
        assert!(parse(&["--guest-arg", &long, "--kernel", "/k"]).unwrap_err().contains("at most 255"));
    }
}
