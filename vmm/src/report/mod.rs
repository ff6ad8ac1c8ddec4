//! Latency reports: what the VMM makes of the guest's telemetry region
//! (docs/latency.md).
//!
//! - `status`: the live status block (once a second) or, with `--quiet`,
//!   the progress line;
//! - `summary`: the table printed at the end of every run that measured;
//! - `exits`: exits to the hypervisor per activation, by cause;
//! - `json`, `cyclictest`, `cyclictest_json`: the `--json`,
//!   `--histogram` and `--cyclictest-json` files;
//! - `outputs`: which files a run writes (one per mode, or a selection),
//!   and the check of every output path before the VM boots.
//!
//! The `--plot` file is drawn above the core (`crate::plot`): the
//! command line's dispatch hands its renderer in as a [`Plotter`], so
//! nothing here imports the plotting code.
//!
//! Everything here runs on the control thread (`runner`'s event loop);
//! nothing blocks on the guest. [`Measurement`] is the model the end-of-run
//! reports share: per epoch, per CPU and all CPUs, built from the
//! telemetry reader (`telemetry`, which reads the region from guest
//! memory) with the histogram math of `stats`. `report` depends on those,
//! never the other way. It does not know the command line either: the
//! runner passes the run's settings as [`RunSettings`] (with the output
//! files, [`outputs::OutputFiles`]).

pub mod cyclictest;
pub mod cyclictest_json;
pub mod exits;
pub mod host_cpu;
pub mod host_noise;
pub mod json;
pub mod outputs;
pub mod result;
pub mod status;
pub mod stop;
pub mod summary;

use std::path::Path;
use std::time::Duration;

use switcher::profile::Profile;
use switcher::telemetry::{EpochKind, LoadKind, WorkloadRequest, final_check};

use self::outputs::OutputFiles;
pub use self::result::RunResult;
use crate::exit_code::ExitCode;
use crate::telemetry::{
    self, CpuEntry, CpuSnapshot, EpochGroup, EpochInfo, EpochRecord, TelemetryReader, WorkloadState,
};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {what} file {path}: {err}; check that its directory exists and is writable")]
    Write { what: &'static str, path: String, err: std::io::Error },
    #[error("cannot draw the --plot file {path}: {why}")]
    Plot { path: String, why: String },
    #[error("cannot encode the --json result: {0}")]
    Json(#[from] serde_json::Error),
}

/// Writes `text` to `path` for the `what` option: through its file
/// prepared before the sandbox, or a new temporary file renamed over it
/// (`outfile`).
pub fn write_file(what: &'static str, path: &Path, text: &str) -> Result<(), ReportError> {
    crate::outfile::write(path, text.as_bytes()).map_err(|err| ReportError::Write {
        what,
        path: path.display().to_string(),
        err,
    })
}

/// Draws the `--plot` file: its SVG text. The plotting code sits above
/// the core (`crate::plot::run::render`); a run without one refuses
/// `--plot` when it writes its outputs.
#[derive(Clone, Copy)]
pub struct Plotter(pub fn(&Measurement, &RunInfo) -> Result<String, ReportError>);

impl std::fmt::Debug for Plotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Plotter")
    }
}

impl PartialEq for Plotter {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::fn_addr_eq(self.0, other.0)
    }
}

impl Eq for Plotter {}

/// The histograms' dimensions in one run: bucket count and width (µs).
pub type HistShape = (usize, u64);

/// One CPU (or all CPUs) of one epoch: the telemetry reader's figures
/// (merged with [`CpuSnapshot::absorb`]) and which CPU they are.
#[derive(Clone, Debug)]
pub struct CpuRow {
    /// `None` for the all-CPUs row.
    pub cpu: Option<usize>,
    /// Samples, histograms, worst sample, steal time (zero when missing).
    pub figures: CpuSnapshot,
    /// Why this CPU's figures are missing or older than the end of the
    /// run (e.g. its record never stabilised); `None` when current.
    pub problem: Option<String>,
}

impl CpuRow {
    /// A CPU's row from the reader's entry, saying why figures are
    /// missing or old.
    fn from_entry(cpu: usize, entry: &CpuEntry, shape: HistShape) -> Self {
        let mut row = CpuRow::empty(Some(cpu), shape);
        if let Some(s) = &entry.snapshot {
            row.figures = s.clone();
        }
        row.problem = match (&entry.snapshot, &entry.problem) {
            (None, Some(p)) => Some(format!("no consistent copy: {p}")),
            (None, None) => Some("never read".to_string()),
            (Some(_), Some(p)) => Some(format!("figures from an earlier read: {p}")),
            (Some(_), None) => None,
        };
        row
    }

    fn empty(cpu: Option<usize>, shape: HistShape) -> Self {
        Self { cpu, figures: CpuSnapshot::empty(shape.0, shape.1), problem: None }
    }

    /// Adds another row's samples (all-CPUs rows, per-mode merges; `other`
    /// is the later one when they are epochs of one CPU).
    pub fn absorb(&mut self, other: &CpuRow) {
        self.figures.absorb(&other.figures);
    }
}

/// One epoch: per-CPU rows and their merge.
#[derive(Clone, Debug)]
pub struct EpochRows {
    pub info: EpochInfo,
    pub cpus: Vec<CpuRow>,
    pub all: CpuRow,
}

impl EpochRows {
    /// The rows of one epoch as the reader keeps it.
    pub fn from_record(e: &EpochRecord, shape: HistShape) -> Self {
        let cpus: Vec<CpuRow> =
            e.cpus.iter().enumerate().map(|(cpu, entry)| CpuRow::from_entry(cpu, entry, shape)).collect();
        EpochRows { info: e.info, all: merged(&cpus, shape), cpus }
    }
}

/// Every epoch of one mode and kind, merged (the reader's exact totals).
#[derive(Clone, Debug)]
pub struct GroupRows {
    pub mode: Profile,
    pub kind: EpochKind,
    /// Epochs merged.
    pub epochs: u64,
    pub cpus: Vec<CpuRow>,
    pub all: CpuRow,
}

impl GroupRows {
    fn from_group(g: &EpochGroup, shape: HistShape) -> Self {
        let cpus: Vec<CpuRow> = g
            .cpus
            .iter()
            .enumerate()
            .map(|(cpu, snap)| {
                let entry = CpuEntry { snapshot: snap.clone(), problem: None };
                let mut row = CpuRow::from_entry(cpu, &entry, shape);
                row.problem = None;
                row
            })
            .collect();
        GroupRows { mode: g.mode, kind: g.kind, epochs: g.epochs, all: merged(&cpus, shape), cpus }
    }
}

/// The all-CPUs row of `cpus`.
fn merged(cpus: &[CpuRow], shape: HistShape) -> CpuRow {
    let mut all = CpuRow::empty(None, shape);
    for row in cpus {
        all.absorb(row);
    }
    all
}

/// What "mainline" or "rt" measured over the whole run.
#[derive(Clone, Debug)]
pub struct ModeRows {
    pub mode: Profile,
    /// Every `Mode` epoch of this mode (exact, forgotten ones included).
    pub epochs: u64,
    /// Those still listed in detail.
    pub listed: Vec<u64>,
    /// All CPUs, all those epochs.
    pub all: CpuRow,
}

/// The result of the load's consistency checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadVerdict {
    /// Final check passed and no violation was seen.
    Ok,
    /// A violation was seen, or the final tally does not add up: a lock
    /// did not protect its data.
    Violated,
    /// The guest never ran its final check (no workload, or it did not
    /// get to shut down cleanly).
    NotRun,
}

impl LoadVerdict {
    pub fn name(self) -> &'static str {
        match self {
            LoadVerdict::Ok => "ok",
            LoadVerdict::Violated => "VIOLATED",
            LoadVerdict::NotRun => "not run",
        }
    }

    /// Judges the header's load fields; violations seen during the run
    /// count even when the final check never ran.
    pub fn judge(w: &WorkloadState) -> Self {
        if w.load_violations > 0 || w.final_check == final_check::VIOLATED {
            LoadVerdict::Violated
        } else if w.final_check == final_check::OK {
            if w.final_tally == w.final_locked_total { LoadVerdict::Ok } else { LoadVerdict::Violated }
        } else {
            LoadVerdict::NotRun
        }
    }
}

/// The run's exit code given how it ended and the load check: a violated
/// check is never success, even when the guest exited 0.
pub fn exit_code_with_load_check(code: ExitCode, verdict: LoadVerdict) -> ExitCode {
    match verdict {
        LoadVerdict::Violated => code.worst(ExitCode::GuestFailure),
        LoadVerdict::Ok | LoadVerdict::NotRun => code,
    }
}

/// Everything measured in one run, as the end-of-run reports use it.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub cpu_count: usize,
    pub bucket_count: usize,
    /// Bucket width in µs.
    pub bucket_us: u64,
    /// The workload as the guest ran it (last header read).
    pub workload: Option<WorkloadState>,
    /// The epochs kept in detail (the newest), oldest first.
    pub epochs: Vec<EpochRows>,
    /// Every epoch since the start (or the last `reset-latency`), merged
    /// per mode and kind: the exact totals.
    pub groups: Vec<GroupRows>,
    /// Epochs no longer kept in detail (the oldest; they are in `groups`).
    pub forgotten: u64,
}

impl Measurement {
    pub fn from_reader(reader: &TelemetryReader) -> Self {
        Self::from_reader_listing(reader, |_| true)
    }

    /// The totals, with only the detailed epochs `listed` picks (cheaper:
    /// the control socket's pages).
    pub fn from_reader_listing(reader: &TelemetryReader, listed: impl Fn(u64) -> bool) -> Self {
        let buckets = reader.layout().bucket_count;
        let bucket_us = reader.workload().map_or(1, |w| u64::from(w.bucket_us.max(1)));
        let shape = (buckets, bucket_us);
        let epochs =
            reader.epochs().filter(|e| listed(e.info.index)).map(|e| EpochRows::from_record(e, shape)).collect();
        let groups = reader.totals().iter().map(|g| GroupRows::from_group(g, shape)).collect();
        Self {
            cpu_count: reader.layout().cpu_count,
            bucket_count: buckets,
            bucket_us,
            workload: reader.workload().cloned(),
            epochs,
            groups,
            forgotten: reader.forgotten(),
        }
    }

    /// Whether any sample was recorded (the reports are printed only then).
    pub fn measured(&self) -> bool {
        self.groups.iter().any(|g| g.all.figures.samples > 0 || g.all.figures.thread.count() > 0)
    }

    pub fn load_verdict(&self) -> LoadVerdict {
        self.workload.as_ref().map_or(LoadVerdict::NotRun, LoadVerdict::judge)
    }

    /// Per CPU, every epoch merged (forgotten ones included): the whole
    /// run, as one cyclictest run would have measured it.
    pub fn per_cpu_whole_run(&self) -> Vec<CpuRow> {
        (0..self.cpu_count)
            .map(|cpu| {
                let mut row = CpuRow::empty(Some(cpu), (self.bucket_count, self.bucket_us));
                for g in &self.groups {
                    if let Some(r) = g.cpus.get(cpu) {
                        row.absorb(r);
                    }
                }
                row
            })
            .collect()
    }

    /// The modes that ran at least one `Mode` epoch, in the order they
    /// first ran (switching epochs do not count).
    pub fn modes_run(&self) -> Vec<Profile> {
        let mut modes = Vec::new();
        for g in self.groups.iter().filter(|g| g.kind == EpochKind::Mode) {
            if !modes.contains(&g.mode) {
                modes.push(g.mode);
            }
        }
        modes
    }

    /// Per CPU, merged over every `Mode` epoch of `mode` (`None`: of both
    /// modes), forgotten epochs included, switching epochs left out.
    pub fn per_cpu_mode(&self, mode: Option<Profile>) -> Vec<CpuRow> {
        (0..self.cpu_count)
            .map(|cpu| {
                let mut row = CpuRow::empty(Some(cpu), (self.bucket_count, self.bucket_us));
                for g in self.groups.iter().filter(|g| g.kind == EpochKind::Mode && mode.is_none_or(|m| g.mode == m)) {
                    if let Some(r) = g.cpus.get(cpu) {
                        row.absorb(r);
                    }
                }
                row
            })
            .collect()
    }

    /// The rows of the CPUs that ran a measurement thread (cyclictest's
    /// threads; all of them when the guest never said).
    pub fn measuring(&self, rows: Vec<CpuRow>) -> Vec<CpuRow> {
        let Some(w) = &self.workload else { return rows };
        rows.into_iter().filter(|r| r.cpu.is_some_and(|c| w.measures(c))).collect()
    }

    /// All CPUs, merged over every `Mode` epoch of each mode (switching
    /// epochs left out, forgotten ones included), in the order the modes
    /// first ran: what "mainline" and "rt" measured.
    pub fn per_mode(&self) -> Vec<ModeRows> {
        self.groups
            .iter()
            .filter(|g| g.kind == EpochKind::Mode)
            .map(|g| ModeRows {
                mode: g.mode,
                epochs: g.epochs,
                listed: self
                    .epochs
                    .iter()
                    .filter(|e| e.info.kind == EpochKind::Mode && e.info.mode == g.mode)
                    .map(|e| e.info.index)
                    .collect(),
                all: g.all.clone(),
            })
            .collect()
    }
}

/// The workload line: what ran (as the guest reports it).
pub fn workload_line(w: &WorkloadState) -> String {
    let load = match w.load {
        LoadKind::None => "load none".to_string(),
        kind => format!("load {}, {} threads per CPU, cs {} us", kind.name(), w.load_threads, w.cs_us),
    };
    let lost = match w.unread_recycled {
        0 => String::new(),
        n => format!("; {n} epoch(s) recycled by the guest before the VMM read them: their samples are missing"),
    };
    format!("workload: {load}, interval {} us{lost}", w.interval_us)
}

/// The load-check line.
pub fn load_check_line(w: Option<&WorkloadState>) -> String {
    let Some(w) = w else {
        return "load check: not run (no telemetry from the guest)".to_string();
    };
    let verdict = LoadVerdict::judge(w);
    let detail = match w.final_check {
        final_check::PENDING => "final check not run".to_string(),
        _ => format!("final tally {} vs locked total {}", w.final_tally, w.final_locked_total),
    };
    format!("load check: {} ({} load ops, {} violations; {detail})", verdict.name(), w.load_ops, w.load_violations)
}

/// The guest's side of the boot calibration (from its status page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestInfo {
    pub calib_ps_per_iter: u64,
    pub calib_iterations: u64,
    pub calib_tsc_ticks: u64,
    pub kernel_version: String,
}

/// What the run was asked to do, as the reports show it (the runner
/// takes it from the command line).
#[derive(Clone, Debug)]
pub struct RunSettings {
    pub vcpus: u32,
    pub memory_bytes: u64,
    /// The boot mode.
    pub mode: Profile,
    /// The workload request for the guest (zeros: guest defaults).
    pub workload: WorkloadRequest,
    /// Histogram buckets (of `workload.bucket_us`).
    pub hist_buckets: u32,
    /// `--duration`; `None`: until the guest stops.
    pub duration: Option<Duration>,
    pub outputs: OutputFiles,
    /// The rest of the command line (the JSON report's `config` holds every
    /// option that changes what runs, so that the report reproduces it).
    pub options: RunOptions,
}

/// The options of a run besides its size and workload, as the JSON
/// report's `config` gives them back.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunOptions {
    /// The command line as given (`rtswitch run ...`).
    pub command_line: Vec<String>,
    pub kernel: Option<String>,
    /// The guest's command line words (`--guest-arg`, and `selftest`).
    pub guest_args: Vec<String>,
    pub selftest: bool,
    /// `--switch-every`, and the profile it toggles to.
    pub switch_every: Option<Duration>,
    pub switch_to: Option<Profile>,
    /// `--irq-load RATE,WORK_US` and `--irq-prio`.
    pub irq_load: Option<(u32, u32)>,
    pub irq_prio: Option<u32>,
    pub api_sock: Option<String>,
    pub shutdown_timeout: Duration,
    pub fast_switch: bool,
    pub control_fifo: bool,
    pub switch_timeout: Duration,
    pub vcpu_stop_timeout: Duration,
    pub watchdog: Duration,
    pub seccomp: bool,
    /// `--host-noise`: the probe's period (`None`: off).
    pub host_noise: Option<Duration>,
}

/// What the run was and how it ended, besides the telemetry.
#[derive(Clone, Debug)]
pub struct RunInfo {
    pub settings: RunSettings,
    pub tsc_khz: u32,
    /// The host's speed on the calibration loop (ps per iteration).
    pub host_ps_per_iter: Option<u64>,
    pub guest: Option<GuestInfo>,
    /// Milliseconds from start to the guest's ready hypercall.
    pub ready_ms: Option<f64>,
    /// The guest's ring-0 shim entries at the end of the run.
    pub shim: crate::vstate::shim_stats::ShimEntries,
    pub elapsed_s: f64,
    /// How the run ended, in words.
    pub outcome: String,
    pub exit_code: ExitCode,
    /// The runtime switches of the run (the newest records, exact totals).
    pub switches: crate::switch::history::SwitchHistory,
    /// Most epochs kept in detail (the telemetry reader's ring).
    pub retained_epochs: usize,
    /// The run's result (ok / not ok and why).
    pub result: RunResult,
    /// `--stop-above`: the report of the sample that stopped the run.
    pub stop: Option<telemetry::StopInfo>,
    /// `--irq-load`: what the VMM's injector did.
    pub irq_load: Option<crate::vstate::irq_load::IrqLoadCounts>,
    /// The host CPU time the run's threads used.
    pub host_cpu: Option<host_cpu::HostCpu>,
    /// What the guest did against the protocol, per kind (`misbehaviour`).
    pub misbehaviour: std::collections::BTreeMap<String, u64>,
    /// What the host-noise probe recorded (`None`: `--host-noise off`).
    pub host_noise: Option<crate::host_noise::Snapshot>,
}

impl RunInfo {
    pub fn emulated(&self) -> Option<bool> {
        match (&self.guest, self.host_ps_per_iter) {
            (Some(g), Some(h)) => Some(crate::host_speed::is_emulated(g.calib_ps_per_iter, h)),
            _ => None,
        }
    }

    /// One line for titles: `2 vCPUs, mainline, load locks (x2, cs 100 us), interval 1000 us`.
    pub fn describe(&self, m: &Measurement) -> String {
        let c = &self.settings;
        let load = match &m.workload {
            Some(w) if w.load == LoadKind::None => "load none".to_string(),
            Some(w) => format!("load {} (x{}, cs {} us)", w.load.name(), w.load_threads, w.cs_us),
            None => format!("load {}", LoadKind::from_u32(c.workload.load).map_or("?", LoadKind::name)),
        };
        let interval = m.workload.as_ref().map_or(c.workload.interval_us, |w| w.interval_us);
        format!("{} vCPUs, boot mode {}, {load}, interval {interval} us", c.vcpus, c.mode.name())
    }
}

/// Writes the files asked for with --histogram, --cyclictest-json, --plot
/// and --json (last, so that its exit code counts a failure to write the
/// others); every file is attempted. Returns the failures, and a line per
/// cyclictest-format file written (their names depend on the modes that
/// ran) for the caller to print.
pub fn write_outputs(m: &Measurement, info: &RunInfo) -> Written {
    let out = &info.settings.outputs;
    let mut w = Written::default();
    if let Some(base) = &out.histogram {
        for (path, sel) in outputs::files_for(base, out.histogram_mode, m) {
            let text = cyclictest::render(&m.measuring(m.per_cpu_mode(sel.mode())), m.bucket_count, out.histogram_irq);
            wrote(&mut w, "--histogram", &path, sel, m, &text);
        }
    }
    if let Some(base) = &out.cyclictest_json {
        let end = std::time::SystemTime::now();
        for (path, sel) in outputs::files_for(base, out.histogram_mode, m) {
            let code = if w.errors.is_empty() { info.exit_code } else { info.exit_code.worst(ExitCode::VmmError) };
            let header = cyclictest_json::Header {
                cmdline: std::env::args().collect::<Vec<_>>().join(" "),
                start: end.checked_sub(std::time::Duration::from_secs_f64(info.elapsed_s.max(0.0))).unwrap_or(end),
                end,
                return_code: i32::from(code.code()),
                guest_release: info.guest.as_ref().map(|g| g.kernel_version.clone()),
                selection: sel,
            };
            let text = cyclictest_json::render(&m.measuring(m.per_cpu_mode(sel.mode())), &header);
            wrote(&mut w, "--cyclictest-json", &path, sel, m, &text);
        }
    }
    if let Some(path) = &out.plot {
        let svg = match out.plotter {
            Some(Plotter(render)) => render(m, info),
            None => Err(ReportError::Plot {
                path: path.display().to_string(),
                why: "this program was given no plotter".to_string(),
            }),
        };
        if let Err(e) = svg.and_then(|svg| write_file("--plot", path, &svg)) {
            w.errors.push(e);
        }
    }
    if let Some(path) = &out.json {
        let mut info = info.clone();
        if !w.errors.is_empty() {
            info.exit_code = info.exit_code.worst(ExitCode::VmmError);
        }
        if let Err(e) = json::render(m, &info).and_then(|text| write_file("--json", path, &text)) {
            w.errors.push(e);
        }
    }
    w
}

/// What [`write_outputs`] did.
#[derive(Debug, Default)]
pub struct Written {
    /// One line per cyclictest-format file written: its name and what it holds.
    pub notes: Vec<String>,
    pub errors: Vec<ReportError>,
}

/// Writes one cyclictest-format file and notes it (with what it holds).
fn wrote(w: &mut Written, what: &'static str, path: &Path, sel: outputs::Selection, m: &Measurement, text: &str) {
    match write_file(what, path, text) {
        Ok(()) => {
            let epochs: u64 = m
                .groups
                .iter()
                .filter(|g| g.kind == EpochKind::Mode && sel.mode().is_none_or(|mode| g.mode == mode))
                .map(|g| g.epochs)
                .sum();
            let note = if epochs == 0 { ": no such epoch in this run, no samples" } else { "" };
            w.notes.push(format!("wrote {what} {} ({}, {epochs} mode epoch(s){note})", path.display(), sel.name()));
        }
        Err(e) => w.errors.push(e),
    }
}

/// The `--irq-load` line of the run's end: what the VMM raised, what the
/// guest took, and where the handlers ran (the rate, work and priority as
/// the guest's telemetry header publishes them).
pub fn irq_load_line(sent: &crate::vstate::irq_load::IrqLoadCounts, w: &telemetry::WorkloadState) -> String {
    let telemetry::IrqCounts { received, hard, threaded } = telemetry::IrqCounts::total(&w.irqs);
    let cpus = w.irqs.len();
    format!(
        "device interrupts (--irq-load {} Hz, {} us each): raised {} times on each of {cpus} vCPUs ({} periods \
         late, {} writes failed); the guest took {received} (the rest coalesced in the LAPIC): {hard} handled in \
         hard-IRQ context, {threaded} by handler threads at prio {}, {} not yet handled at the end",
        w.irq_rate_hz,
        w.irq_work_us,
        sent.periods,
        sent.late_periods,
        sent.failed,
        w.irq_prio,
        received.saturating_sub(hard + threaded)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::synth::*;
    use switcher::telemetry::EpochKind;

    fn state() -> WorkloadState {
        WorkloadState {
            current_epoch: 0,
            interval_us: 1000,
            cs_us: 100,
            load: LoadKind::Locks,
            load_threads: 2,
            running: true,
            load_ops: 10,
            load_violations: 0,
            final_check: final_check::PENDING,
            final_tally: 0,
            final_locked_total: 0,
            unread_recycled: 0,
            measure_prio: 99,
            bucket_us: 1,
            stop_above_us: 0,
            measure_cpus: 1,
            load_cpus: 1,
            cycles: vec![0],
            stopped: false,
            irq_rate_hz: 0,
            irq_work_us: 0,
            irq_prio: 0,
            irqs: vec![],
        }
    }

    #[test]
    fn load_verdicts() {
        assert_eq!(LoadVerdict::judge(&state()), LoadVerdict::NotRun);
        let ok = WorkloadState { final_check: final_check::OK, final_tally: 7, final_locked_total: 7, ..state() };
        assert_eq!(LoadVerdict::judge(&ok), LoadVerdict::Ok);
        assert_eq!(LoadVerdict::judge(&WorkloadState { final_locked_total: 6, ..ok.clone() }), LoadVerdict::Violated);
        assert_eq!(LoadVerdict::judge(&WorkloadState { load_violations: 1, ..ok.clone() }), LoadVerdict::Violated);
        assert_eq!(LoadVerdict::judge(&WorkloadState { load_violations: 1, ..state() }), LoadVerdict::Violated);
        let bad = WorkloadState { final_check: final_check::VIOLATED, ..state() };
        assert_eq!(LoadVerdict::judge(&bad), LoadVerdict::Violated);
        assert!(load_check_line(Some(&bad)).contains("VIOLATED"));
        assert!(load_check_line(None).contains("not run"));
        assert_eq!(exit_code_with_load_check(ExitCode::Ok, LoadVerdict::Violated), ExitCode::GuestFailure);
        assert_eq!(exit_code_with_load_check(ExitCode::TripleFault, LoadVerdict::Violated), ExitCode::TripleFault);
        assert_eq!(exit_code_with_load_check(ExitCode::Ok, LoadVerdict::NotRun), ExitCode::Ok);
        assert_eq!(exit_code_with_load_check(ExitCode::Ok, LoadVerdict::Ok), ExitCode::Ok);
    }

    #[test]
    fn output_files_are_written_and_failures_reported() {
        let dir = std::env::temp_dir().join(format!("rtswitch-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (j, h, p) = (dir.join("a.json"), dir.join("a.hist"), dir.join("a.svg"));
        let plotter = Some(Plotter(|_, _| Ok("<svg></svg>".to_string())));
        let outputs = OutputFiles {
            json: Some(j.clone()),
            histogram: Some(h.clone()),
            plot: Some(p.clone()),
            plotter,
            ..Default::default()
        };
        let m = json::tests::measurement();
        let written = write_outputs(&m, &json::tests::info(RunSettings { outputs, ..json::tests::settings() }));
        assert!(written.errors.is_empty());
        // Both modes ran: one histogram per mode, named by the rule; none under the name given.
        assert!(!h.exists());
        for mode in ["mainline", "rt"] {
            let f = dir.join(format!("a.{mode}.hist"));
            assert!(std::fs::read_to_string(&f).unwrap().starts_with("# Histogram\n000000 "));
            assert!(written.notes.iter().any(|n| n.starts_with(&format!("wrote --histogram {}", f.display()))));
        }
        assert!(std::fs::read_to_string(&p).unwrap().contains("</svg>"));
        let v = json::RunReport::parse(&std::fs::read_to_string(&j).unwrap()).unwrap();
        assert_eq!(v.outcome.exit_code, 0);
        // An unwritable --histogram is reported, and the JSON says the run failed.
        let bad = dir.join("missing/a.hist");
        let outputs =
            OutputFiles { json: Some(j.clone()), histogram: Some(bad), plot: Some(p.clone()), ..Default::default() };
        let errors = write_outputs(&m, &json::tests::info(RunSettings { outputs, ..json::tests::settings() })).errors;
        assert_eq!(errors.len(), 3, "one per mode file, and the plot with no plotter: {errors:?}");
        assert!(errors[2].to_string().contains("no plotter"), "{}", errors[2]);
        assert!(errors[0].to_string().contains("--histogram"), "{}", errors[0]);
        assert!(errors[1].to_string().contains("a.rt.hist"), "{}", errors[1]);
        let v = json::RunReport::parse(&std::fs::read_to_string(&j).unwrap()).unwrap();
        assert_eq!(v.outcome.exit_code, ExitCode::VmmError.code());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn measurement_merges_cpus_epochs_and_modes() {
        let (mem, layout) = region(2, 100);
        let mut h = header(&layout);
        h.current_epoch = 2;
        h.epochs[0] = epoch(0, Profile::MAINLINE, EpochKind::Mode, 10);
        h.epochs[1] = epoch(1, Profile::MAINLINE, EpochKind::Switching, 20);
        h.epochs[2] = epoch(2, Profile::RT, EpochKind::Mode, 0);
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 0, &[1], &[10, 20]);
        write_record(&mem, &layout, 0, 1, &[1], &[30]);
        write_record(&mem, &layout, 1, 0, &[1], &[200]);
        write_record(&mem, &layout, 2, 1, &[1], &[5]);
        let mut r = TelemetryReader::new(mem.clone(), ADDR, layout);
        r.harvest();
        let m = Measurement::from_reader(&r);
        assert!(m.measured());
        assert_eq!(m.epochs.len(), 3);
        assert_eq!(m.epochs[0].all.figures.thread.count(), 3);
        assert_eq!(m.epochs[0].all.figures.samples, 3);
        assert_eq!(m.epochs[0].all.figures.worst.as_ref().unwrap().thread_ns, 30_500);
        let whole = m.per_cpu_whole_run();
        assert_eq!(whole[0].figures.thread.count(), 3);
        assert_eq!(whole[1].figures.thread.count(), 2);
        let modes = m.per_mode();
        assert_eq!(modes.len(), 2);
        assert_eq!(
            (modes[0].mode, modes[0].epochs, modes[0].listed.clone(), modes[0].all.figures.thread.count()),
            (Profile::MAINLINE, 1, vec![0], 3)
        );
        assert_eq!((modes[1].mode, modes[1].all.figures.thread.count()), (Profile::RT, 1));
    }
}
