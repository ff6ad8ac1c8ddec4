//! Reads the guest's latency telemetry region (`switcher::telemetry`) while
//! the guest runs, and keeps what it has seen: the newest epochs in detail
//! (a bounded ring, [`retained_epochs`]) and every epoch's samples merged
//! per mode and kind ([`EpochGroup`]), so that memory stays bounded and
//! the totals exact however long the VM runs and however often it switches.
//!
//! Runs on the control thread (`runner`'s event loop): once a second for
//! the live status, and once more after the run. [`TelemetryReader::harvest`]
//! may be called at any time, also while the vCPUs are held.
//!
//! Everything read from the guest is untrusted:
//! - offsets come from the VMM's own [`Layout`]; the header's dimensions
//!   must equal it or the whole region is rejected, so a guest cannot make
//!   the VMM read outside the region;
//! - a CPU record is copied under its seqlock (bounded retries) and kept
//!   only if the copy is consistent: a record that never stabilises, or
//!   whose counts disagree, is reported as such and the last good copy of
//!   it (if any) is kept instead;
//! - epoch headers must name the slot they sit in, a known mode and kind,
//!   and an epoch no newer than the current one.
//!
//! ```text
//!  per record:   seq1 = load(seq)  -- odd? retry
//!                copy record
//!                fence; seq2 = load(seq)  -- seq1 != seq2? retry
//!                validate copy  -- keep, or report why not
//! ```
//! A sample goes to the epoch that holds its deadline, so the guest may
//! still write the epoch before the current one (a measurement thread
//! woken late after an epoch opened); never an older one: a deadline
//! older still is filed in that one (`switcher::telemetry::
//! WRITABLE_EPOCHS`, one rule on both sides). A closed epoch is frozen
//! once the guest can no longer write it (or the workload stopped) and
//! every CPU record was read after that: its slot may be reused without
//! losing it, and its samples are merged into its group's totals at once.
//! The VMM tells the guest which epochs it has read in that final state
//! (`vmm_read_epoch`); the guest reuses a slot only after that.
//!
//! Missed periods: a record counts the periods its CPU's thread skipped
//! and recorded; the reader adds the *overdue* ones (deadlines that passed
//! without an activation yet: `switcher::telemetry::overdue_periods`), so
//! a CPU whose thread cannot run at all shows them too, filed by the same
//! rule as the thread will file them: in writable epochs only, an older
//! deadline in the older writable one. A frozen epoch holds none (its
//! thread files them elsewhere when it runs), so none is counted twice. When more than
//! [`retained_epochs`] epochs are kept, the oldest is forgotten (dropped
//! from the detail; an epoch the guest might still update never is).
//!
//! ```text
//!  index:   0 ........ F-1 | F ............. current
//!           forgotten       | retained (detail, <= retained_epochs())
//!  groups:  every epoch 0 ..= current, merged per (mode, kind)
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};

use switcher::abi::ABI_MAGIC;
use switcher::profile::Profile;
use switcher::telemetry::{
    CpuLatencyHeader, EPOCH_SLOTS, EpochHeader, EpochKind, Layout, LoadKind, OVERFLOW_LOG, StopReport, TASK_NAME_LEN,
    TelemetryHeader, WRITABLE_EPOCHS, WorstSample, exit_cause, final_check, overdue_periods, trace_kind,
};
use vm_memory::{ByteValued, Bytes, GuestAddress};

use crate::stats::Histogram;
use crate::vstate::memory::{Abi, GuestMemory};

/// Most epochs kept in detail.
pub const MAX_RETAINED_EPOCHS: usize = 64;
/// Fewest epochs kept in detail, however large their histograms.
pub const MIN_RETAINED_EPOCHS: usize = 4;
/// Memory the detailed epochs' histograms may take (bounds how many are
/// kept between the two above).
const RETAINED_EPOCH_MEMORY: usize = 64 << 20;

/// How many epochs are kept in detail for `layout`: as many as fit in
/// 64 MiB of histograms, between [`MIN_RETAINED_EPOCHS`] and
/// [`MAX_RETAINED_EPOCHS`] (64 for 2 vCPUs and the default 10000 buckets).
pub fn retained_epochs(layout: &Layout) -> usize {
    let bytes = layout.cpu_count.max(1) * 3 * layout.bucket_count.max(1) * std::mem::size_of::<u64>();
    (RETAINED_EPOCH_MEMORY / bytes).clamp(MIN_RETAINED_EPOCHS, MAX_RETAINED_EPOCHS)
}

/// Copies of one record tried before it is reported as unstable.
const SEQ_RETRIES: u32 = 200;
/// Retries that only spin before the reader starts yielding its CPU (the
/// writer is a vCPU thread that may be descheduled mid-update).
const SEQ_SPINS: u32 = 20;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum TelemetryError {
    #[error(
        "telemetry header says {field} = {found}, but the VMM placed {expected}; the guest and VMM disagree on the \
         telemetry layout (rebuild both from the same tree)"
    )]
    Dimension { field: &'static str, found: u64, expected: u64 },
    #[error("telemetry region at {addr:#x} cannot be read from guest memory: {what}; this is a VMM bug")]
    Memory { addr: u64, what: String },
    #[error("telemetry header has an invalid {field} ({value}); the guest wrote garbage, its latency data is ignored")]
    HeaderField { field: &'static str, value: u64 },
    #[error("epoch slot {slot}: {why}; the slot is ignored")]
    Epoch { slot: usize, why: String },
    #[error("cpu {cpu} record of epoch {epoch}: {why}")]
    Record { epoch: u64, cpu: usize, why: String },
}

/// What the header says about the workload as the guest runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadState {
    pub current_epoch: u64,
    pub interval_us: u32,
    pub cs_us: u32,
    pub load: LoadKind,
    pub load_threads: u32,
    /// The measurement threads run.
    pub running: bool,
    pub load_ops: u64,
    pub load_violations: u64,
    /// A `final_check` value.
    pub final_check: u32,
    pub final_tally: u64,
    pub final_locked_total: u64,
    /// Epochs the guest had to recycle before the VMM read them.
    pub unread_recycled: u32,
    /// The measurement threads' priority (cyclictest `P:`).
    pub measure_prio: u32,
    /// Histogram bucket width in µs.
    pub bucket_us: u32,
    /// `--stop-above` threshold in µs (0: off).
    pub stop_above_us: u32,
    /// CPUs that measure and CPUs that carry load (bit n = CPU n).
    pub measure_cpus: u64,
    pub load_cpus: u64,
    /// Activations per CPU since the start (cyclictest `C:`).
    pub cycles: Vec<u64>,
    /// A `--stop-above` report is complete.
    pub stopped: bool,
    /// The device interrupt load (`--irq-load`; rate 0: none).
    pub irq_rate_hz: u32,
    pub irq_work_us: u32,
    pub irq_prio: u32,
    /// Device interrupts per CPU: taken, worked in hard-IRQ context,
    /// worked by the handler thread.
    pub irqs: Vec<IrqCounts>,
}

/// One CPU's device interrupts (guest counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IrqCounts {
    pub received: u64,
    pub hard: u64,
    pub threaded: u64,
}

impl IrqCounts {
    /// The counts of every CPU added up.
    pub fn total(cpus: &[IrqCounts]) -> IrqCounts {
        cpus.iter().fold(IrqCounts::default(), |a, c| IrqCounts {
            received: a.received + c.received,
            hard: a.hard + c.hard,
            threaded: a.threaded + c.threaded,
        })
    }
}

impl WorkloadState {
    /// Whether CPU `cpu` runs a measurement thread.
    pub fn measures(&self, cpu: usize) -> bool {
        cpu < 64 && self.measure_cpus & (1 << cpu) != 0
    }
}

/// The identity of an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpochInfo {
    pub index: u64,
    pub mode: Profile,
    pub kind: EpochKind,
    pub start_tsc: u64,
    /// 0 while open.
    pub end_tsc: u64,
}

impl EpochInfo {
    pub fn closed(&self) -> bool {
        self.end_tsc != 0
    }

    /// `mainline`, `rt`, or `sw:mainline` (a switching epoch, and the mode
    /// switched from): one name form in the summary, `ctl`, JSON and plots.
    pub fn label(&self) -> String {
        match self.kind {
            EpochKind::Mode => self.mode.name().to_string(),
            EpochKind::Switching => format!("sw:{}", self.mode.name()),
        }
    }
}

/// The worst thread-latency sample of an epoch on one CPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Worst {
    pub deadline_tsc: u64,
    pub thread_ns: u64,
    pub irq_ns: u64,
    pub locks_held: u32,
    pub preempt_count: u32,
    /// The task the timer interrupted (printable ASCII only).
    pub task: String,
    /// Host steal time on the CPU while the sample's period ran.
    pub steal_ns: u64,
    /// How long the timer IRQ waited for a soft unmask (0: not deferred).
    pub masked_ns: u64,
    /// The sample's activation number.
    pub cycle: u64,
}

/// A consistent copy of one CPU's record.
#[derive(Clone, Debug, PartialEq)]
pub struct CpuSnapshot {
    pub samples: u64,
    /// Periods without an activation: those the thread skipped and
    /// recorded, plus `overdue`.
    pub missed: u64,
    /// Of `missed`: periods whose deadlines passed (in this epoch's window)
    /// while the thread has not run since (a stalled CPU).
    pub overdue: u64,
    pub irq: Histogram,
    pub thread: Histogram,
    /// Thread latency of every elapsed period (coordinated-omission
    /// corrected): each activation, each skipped period with the latency
    /// it saw, and each overdue period with at least the time it has waited.
    pub corrected: Histogram,
    /// `None` until the CPU has a sample.
    pub worst: Option<Worst>,
    /// Host steal time on this CPU over the recorded periods.
    pub steal_ns: u64,
    /// Largest thread latency minus its period's steal time.
    pub max_net_ns: u64,
    /// The last activation's latencies (cyclictest `Act`).
    pub last_thread_ns: u64,
    pub last_irq_ns: u64,
    /// Cycle numbers of thread-latency overflows (the first few of each
    /// epoch; `thread.overflow()` counts them all).
    pub overflow_cycles: Vec<u64>,
    /// Exits the CPU made over the recorded activations, by
    /// `switcher::telemetry::exit_cause`, and those of them between a
    /// serving timer interrupt and its thread.
    pub exits: [u64; exit_cause::COUNT],
    pub path_exits: [u64; exit_cause::COUNT],
}

/// Overflow cycle numbers kept per CPU when epochs merge.
pub const MAX_OVERFLOW_CYCLES: usize = 64;

impl CpuSnapshot {
    /// Adds another copy's samples (merging epochs, or CPUs into an
    /// all-CPUs figure; `other` is the later when they are epochs of one CPU).
    pub fn absorb(&mut self, other: &CpuSnapshot) {
        self.samples += other.samples;
        self.missed += other.missed;
        self.overdue += other.overdue;
        // One bucket count per run: merging cannot fail.
        if let Err(e) = self
            .irq
            .merge(&other.irq)
            .and_then(|()| self.thread.merge(&other.thread))
            .and_then(|()| self.corrected.merge(&other.corrected))
        {
            log::error!("latency telemetry: {e}");
        }
        if other.worst.as_ref().is_some_and(|w| self.worst.as_ref().is_none_or(|m| w.thread_ns > m.thread_ns)) {
            self.worst = other.worst.clone();
        }
        self.steal_ns = self.steal_ns.saturating_add(other.steal_ns);
        self.max_net_ns = self.max_net_ns.max(other.max_net_ns);
        for c in 0..exit_cause::COUNT {
            self.exits[c] = self.exits[c].saturating_add(other.exits[c]);
            self.path_exits[c] = self.path_exits[c].saturating_add(other.path_exits[c]);
        }
        if other.samples > 0 {
            self.last_thread_ns = other.last_thread_ns;
            self.last_irq_ns = other.last_irq_ns;
        }
        let room = MAX_OVERFLOW_CYCLES.saturating_sub(self.overflow_cycles.len());
        self.overflow_cycles.extend(other.overflow_cycles.iter().take(room));
    }
}

/// Every epoch of one mode and kind, merged per CPU: exact totals.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochGroup {
    pub mode: Profile,
    pub kind: EpochKind,
    /// Epochs merged.
    pub epochs: u64,
    /// The first of them (groups are listed in this order).
    pub first_index: u64,
    /// Per CPU; `None` while no consistent copy of that CPU was merged.
    pub cpus: Vec<Option<CpuSnapshot>>,
}

impl EpochGroup {
    fn absorb(&mut self, e: &EpochRecord) {
        self.epochs += 1;
        self.first_index = self.first_index.min(e.info.index);
        for (total, entry) in self.cpus.iter_mut().zip(&e.cpus) {
            match (total, &entry.snapshot) {
                (Some(t), Some(s)) => t.absorb(s),
                (t @ None, Some(s)) => *t = Some(s.clone()),
                (_, None) => {}
            }
        }
    }
}

/// Merges `e` into its group in `groups` (created if new).
fn absorb_into(groups: &mut Vec<EpochGroup>, e: &EpochRecord) {
    let (mode, kind) = (e.info.mode, e.info.kind);
    let i = match groups.iter().position(|g| (g.mode, g.kind) == (mode, kind)) {
        Some(i) => i,
        None => {
            let cpus = vec![None; e.cpus.len()];
            groups.push(EpochGroup { mode, kind, epochs: 0, first_index: e.info.index, cpus });
            groups.len() - 1
        }
    };
    groups[i].absorb(e);
    groups.sort_by_key(|g| g.first_index);
}

/// One CPU of an epoch as the VMM has seen it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuEntry {
    /// The last consistent copy read.
    pub snapshot: Option<CpuSnapshot>,
    /// Why the latest read was not used (unstable seqlock, inconsistent
    /// counts); `None` when the latest read is `snapshot`.
    pub problem: Option<String>,
}

/// Every CPU of one epoch.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochRecord {
    pub info: EpochInfo,
    pub cpus: Vec<CpuEntry>,
    /// Closed and completely read: never read again.
    pub frozen: bool,
    /// Its samples are in the reader's group totals (done once frozen).
    merged: bool,
}

impl EpochRecord {
    /// Samples recorded on every CPU (from the kept copies).
    pub fn samples(&self) -> u64 {
        self.cpus.iter().filter_map(|c| c.snapshot.as_ref()).map(|s| s.samples).sum()
    }
}

/// What one [`TelemetryReader::harvest`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Harvest {
    /// The guest has not initialised the region (yet).
    NotInitialised,
    /// Read; `problems` records or slots were not usable this time.
    Read { problems: usize },
    /// The header was invalid; nothing was read.
    Rejected(TelemetryError),
}

/// The VMM's reader of one telemetry region.
pub struct TelemetryReader {
    mem: Arc<GuestMemory>,
    addr: u64,
    layout: Layout,
    workload: Option<WorkloadState>,
    /// The newest epochs, in detail.
    epochs: BTreeMap<u64, EpochRecord>,
    /// How many `epochs` may hold.
    retain: usize,
    /// Frozen (and forgotten) epochs merged per mode and kind.
    merged: Vec<EpochGroup>,
    /// Epochs dropped from `epochs` (their samples are in `merged`).
    forgotten: u64,
    /// Epochs below this index were forgotten or reset: never read again.
    floor: u64,
    /// `reset-latency`: the generation asked for, while some CPU has not
    /// emptied its record yet (its record of epoch `floor` reads as empty).
    reset_pending: Option<u32>,
    /// The last problem logged, so that a persistent one is logged once.
    last_logged: Option<String>,
    buf: Vec<u8>,
    /// When this reader started: the VMM's clock for [`Self::most_periods`].
    started: std::time::Instant,
}

/// The shortest measurement period a guest may run (the CLI's bound).
const MIN_INTERVAL_NS: u64 = 100_000;

impl TelemetryReader {
    pub fn new(mem: Arc<GuestMemory>, addr: u64, layout: Layout) -> Self {
        Self {
            mem,
            addr,
            layout,
            workload: None,
            epochs: BTreeMap::new(),
            retain: retained_epochs(&layout),
            merged: Vec::new(),
            forgotten: 0,
            floor: 0,
            reset_pending: None,
            last_logged: None,
            buf: vec![0; layout.cpu_stride()],
            started: std::time::Instant::now(),
        }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The most periods that can have passed since the reader started, by
    /// the VMM's own clock and the shortest period the guest may run
    /// (`limits`): a bound on what a header (guest input) can claim is
    /// overdue, so that a header with absurd times costs nothing.
    fn most_periods(&self, h: &TelemetryHeader) -> u64 {
        let interval_ns = (h.interval_tsc.saturating_mul(1_000_000) / h.tsc_khz().max(1)).max(MIN_INTERVAL_NS);
        (self.started.elapsed().as_nanos() / u128::from(interval_ns)).saturating_add(2).min(u128::from(u64::MAX)) as u64
    }

    /// The workload state from the last valid header read.
    pub fn workload(&self) -> Option<&WorkloadState> {
        self.workload.as_ref()
    }

    /// The epochs kept in detail (the newest), by index.
    pub fn epochs(&self) -> impl DoubleEndedIterator<Item = &EpochRecord> {
        self.epochs.values()
    }

    /// How many epochs are kept in detail at most.
    pub fn retain(&self) -> usize {
        self.retain
    }

    /// Epochs no longer kept in detail (the oldest; their samples are in
    /// the totals).
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// Every epoch seen since the start (or the last reset), merged per
    /// mode and kind, in the order of their first epoch: the exact totals.
    pub fn totals(&self) -> Vec<EpochGroup> {
        let mut groups = self.merged.clone();
        for e in self.epochs.values().filter(|e| !e.merged) {
            absorb_into(&mut groups, e);
        }
        groups
    }

    /// Samples recorded in every epoch seen (cheaper than [`Self::totals`]).
    pub fn total_samples(&self) -> u64 {
        let merged: u64 = self.merged.iter().flat_map(|g| &g.cpus).flatten().map(|s| s.samples).sum();
        merged + self.epochs.values().filter(|e| !e.merged).map(EpochRecord::samples).sum::<u64>()
    }

    pub fn epoch(&self, index: u64) -> Option<&EpochRecord> {
        self.epochs.get(&index)
    }

    /// `reset-latency`: asks every measurement thread to empty its record
    /// of the current epoch (`TelemetryHeader::reset_gen`) and forgets the
    /// epochs already closed, so that what is reported next starts now.
    pub fn request_reset(&mut self) -> Result<(), TelemetryError> {
        let field = self.addr + std::mem::offset_of!(TelemetryHeader, reset_gen) as u64;
        let header = self
            .mem
            .read_obj::<Abi<TelemetryHeader>>(GuestAddress(self.addr))
            .map_err(|e| TelemetryError::Memory { addr: self.addr, what: e.to_string() })?
            .0;
        if header.magic != ABI_MAGIC {
            return Err(TelemetryError::Memory {
                addr: self.addr,
                what: "the guest has not initialised it yet".into(),
            });
        }
        let generation = header.reset_gen.wrapping_add(1);
        self.mem
            .write_obj(generation, GuestAddress(field))
            .map_err(|e| TelemetryError::Memory { addr: field, what: e.to_string() })?;
        self.reset_pending = Some(generation);
        self.epochs.clear();
        self.merged.clear();
        self.forgotten = 0;
        self.floor = header.current_epoch;
        Ok(())
    }

    /// Reads the header and every CPU record of every used epoch slot.
    pub fn harvest(&mut self) -> Harvest {
        let header = match self.mem.read_obj::<Abi<TelemetryHeader>>(GuestAddress(self.addr)) {
            Ok(h) => h.0,
            Err(e) => return self.rejected(TelemetryError::Memory { addr: self.addr, what: e.to_string() }),
        };
        if header.magic != ABI_MAGIC {
            return Harvest::NotInitialised;
        }
        let workload = match self.check_header(&header) {
            Ok(w) => w,
            Err(e) => return self.rejected(e),
        };
        let current = workload.current_epoch;
        if let Some(generation) = self.reset_pending {
            let acked = (0..self.layout.cpu_count)
                .filter(|&c| workload.measures(c))
                .all(|c| header.cpus.get(c).is_some_and(|s| s.reset_seen == generation));
            if acked {
                self.reset_pending = None;
            }
        }
        self.workload = Some(workload);
        let mut problems = Vec::new();
        for (slot, eh) in header.epochs.iter().enumerate() {
            if eh.index == EpochHeader::UNUSED.index || eh.index < self.floor {
                continue;
            }
            match self.check_epoch(slot, eh, current) {
                Ok(info) => self.read_epoch(slot, info, &header, &mut problems),
                Err(e) => problems.push(e),
            }
        }
        self.forget_old(current);
        // Tell the guest every epoch before the previous one has been read
        // in its final state (it writes only the current and the previous
        // epoch): it may reuse their slots (it waits for this before it does).
        let field = self.addr + std::mem::offset_of!(TelemetryHeader, vmm_read_epoch) as u64;
        if let Err(e) = self.mem.write_obj(current.saturating_sub(1) as u32, GuestAddress(field)) {
            problems.push(TelemetryError::Memory { addr: field, what: e.to_string() });
        }
        let n = problems.len();
        match problems.first() {
            Some(first) => self.log_once(first.to_string(), n),
            None => self.last_logged = None,
        }
        Harvest::Read { problems: n }
    }

    /// Drops the oldest epochs beyond the ring's size, never one the guest
    /// may still write (the current one, or one whose slot it has not
    /// reused yet and that was not completely read).
    fn forget_old(&mut self, current: u64) {
        while self.epochs.len() > self.retain {
            let Some((&index, oldest)) = self.epochs.first_key_value() else { break };
            let final_ = oldest.frozen || index + EPOCH_SLOTS as u64 <= current;
            if index >= current || !final_ {
                break;
            }
            if let Some(e) = self.epochs.remove(&index) {
                if !e.merged {
                    absorb_into(&mut self.merged, &e);
                }
                self.forgotten += 1;
                self.floor = index + 1;
            }
        }
    }

    fn rejected(&mut self, e: TelemetryError) -> Harvest {
        if matches!(e, TelemetryError::Dimension { .. } | TelemetryError::HeaderField { .. }) {
            crate::misbehaviour::note("telemetry header refused");
        }
        self.log_once(e.to_string(), 1);
        Harvest::Rejected(e)
    }

    fn log_once(&mut self, msg: String, count: usize) {
        if self.last_logged.as_deref() != Some(msg.as_str()) {
            if count > 1 {
                log::warn!("latency telemetry: {msg} (and {} more problems)", count - 1);
            } else {
                log::warn!("latency telemetry: {msg}");
            }
            self.last_logged = Some(msg);
        }
    }

    fn check_header(&self, h: &TelemetryHeader) -> Result<WorkloadState, TelemetryError> {
        let dims = [
            ("cpu_count", u64::from(h.cpu_count), self.layout.cpu_count as u64),
            ("bucket_count", u64::from(h.bucket_count), self.layout.bucket_count as u64),
            ("epoch_slots", u64::from(h.epoch_slots), EPOCH_SLOTS as u64),
            ("cpu_stride", u64::from(h.cpu_stride), self.layout.cpu_stride() as u64),
        ];
        for (field, found, expected) in dims {
            if found != expected {
                return Err(TelemetryError::Dimension { field, found, expected });
            }
        }
        let load = LoadKind::from_u32(h.load)
            .ok_or(TelemetryError::HeaderField { field: "load", value: u64::from(h.load) })?;
        if h.final_check > final_check::VIOLATED {
            return Err(TelemetryError::HeaderField { field: "final_check", value: u64::from(h.final_check) });
        }
        for (field, v) in [("running", h.running)] {
            if v > 1 {
                return Err(TelemetryError::HeaderField { field, value: u64::from(v) });
            }
        }
        Ok(WorkloadState {
            current_epoch: h.current_epoch,
            interval_us: h.interval_us,
            cs_us: h.cs_us,
            load,
            load_threads: h.load_threads,
            running: h.running == 1,
            load_ops: h.load_ops,
            load_violations: h.load_violations,
            final_check: h.final_check,
            final_tally: h.final_tally,
            final_locked_total: h.final_locked_total,
            unread_recycled: h.unread_recycled,
            measure_prio: h.measure_prio,
            bucket_us: h.bucket_us.max(1),
            stop_above_us: h.stop_above_us,
            measure_cpus: h.measure_cpus,
            load_cpus: h.load_cpus,
            cycles: h.cpus.iter().take(self.layout.cpu_count).map(|c| c.cycles).collect(),
            stopped: h.stopped == 1,
            irq_rate_hz: h.irq_rate_hz,
            irq_work_us: h.irq_work_us,
            irq_prio: h.irq_prio,
            irqs: h
                .cpus
                .iter()
                .take(self.layout.cpu_count)
                .map(|c| IrqCounts { received: c.irq_received, hard: c.irq_hard, threaded: c.irq_threaded })
                .collect(),
        })
    }

    /// The `--stop-above` report, once the guest has completed it.
    pub fn stop_report(&self) -> Option<StopInfo> {
        let header = self.mem.read_obj::<Abi<TelemetryHeader>>(GuestAddress(self.addr)).ok()?.0;
        if header.magic != ABI_MAGIC || header.stopped != 1 {
            return None;
        }
        Some(StopInfo::decode(&header.stop, self.layout.cpu_count))
    }

    fn check_epoch(&self, slot: usize, eh: &EpochHeader, current: u64) -> Result<EpochInfo, TelemetryError> {
        let bad = |why: String| TelemetryError::Epoch { slot, why };
        if eh.index % EPOCH_SLOTS as u64 != slot as u64 {
            return Err(bad(format!(
                "holds epoch {} which belongs in slot {}",
                eh.index,
                eh.index % EPOCH_SLOTS as u64
            )));
        }
        if eh.index > current {
            return Err(bad(format!("holds epoch {} newer than the current epoch {current}", eh.index)));
        }
        let mode = Profile::from_u32(eh.mode).ok_or_else(|| bad(format!("unknown mode {}", eh.mode)))?;
        let kind = EpochKind::from_u32(eh.kind).ok_or_else(|| bad(format!("unknown kind {}", eh.kind)))?;
        let info = EpochInfo { index: eh.index, mode, kind, start_tsc: eh.start_tsc, end_tsc: eh.end_tsc };
        if let Some(known) = self.epochs.get(&eh.index) {
            let k = known.info;
            if (k.mode, k.kind, k.start_tsc) != (mode, kind, eh.start_tsc) {
                return Err(bad(format!("epoch {} changed identity since it was first read", eh.index)));
            }
        }
        Ok(info)
    }

    fn read_epoch(&mut self, slot: usize, info: EpochInfo, h: &TelemetryHeader, problems: &mut Vec<TelemetryError>) {
        let cpu_count = self.layout.cpu_count;
        let most_periods = self.most_periods(h);
        let record = self.epochs.entry(info.index).or_insert_with(|| EpochRecord {
            info,
            cpus: vec![CpuEntry::default(); cpu_count],
            frozen: false,
            merged: false,
        });
        if record.frozen {
            return;
        }
        record.info = info;
        let mut complete = true;
        let bucket_us = u64::from(h.bucket_us.max(1));
        // Overdue periods go where the guest would file them when its
        // thread runs: the epochs it may write, those older than the older
        // of these into it (module doc).
        let writable = info.index + WRITABLE_EPOCHS > h.current_epoch;
        let from = if info.index + WRITABLE_EPOCHS == h.current_epoch + 1 { 0 } else { info.start_tsc };
        for cpu in 0..cpu_count {
            let offset = self.addr + self.layout.record(slot, cpu) as u64;
            let entry = &mut record.cpus[cpu];
            match read_record(&self.mem, offset, &self.layout, &mut self.buf) {
                Ok(mut snapshot) => {
                    snapshot.set_bucket_us(bucket_us);
                    // `reset-latency` asked for, not yet done by this CPU:
                    // what its record holds is from before the reset.
                    let pending = self.reset_pending;
                    if pending
                        .is_some_and(|g| info.index == self.floor && h.cpus.get(cpu).is_some_and(|c| c.reset_seen != g))
                    {
                        snapshot = CpuSnapshot::empty(self.layout.bucket_count, bucket_us);
                    }
                    let next = h.cpus.get(cpu).map_or(0, |c| c.next_deadline_tsc);
                    let overdue = if writable && (h.running == 1 || info.closed()) {
                        overdue_periods(next, h.interval_tsc, from, info.end_tsc, h.now_tsc, h.running == 0)
                            .min(most_periods)
                    } else {
                        0
                    };
                    snapshot.add_overdue(overdue, next, h.interval_tsc, info.end_tsc.max(h.now_tsc), h.tsc_khz());
                    entry.snapshot = Some(snapshot);
                    entry.problem = None;
                }
                Err(why) => {
                    complete = false;
                    problems.push(TelemetryError::Record { epoch: info.index, cpu, why: why.clone() });
                    entry.problem = Some(why);
                }
            }
        }
        // Final once the guest can no longer write it (module doc).
        record.frozen = info.closed() && complete && (!writable || h.running == 0);
        if record.frozen {
            record.merged = true;
            absorb_into(&mut self.merged, record);
        }
    }
}

/// Copies one CPU record under its seqlock and decodes it.
fn read_record(mem: &GuestMemory, addr: u64, layout: &Layout, buf: &mut [u8]) -> Result<CpuSnapshot, String> {
    let at = GuestAddress(addr);
    for attempt in 0..SEQ_RETRIES {
        if attempt >= SEQ_SPINS {
            std::thread::yield_now();
        } else if attempt > 0 {
            std::hint::spin_loop();
        }
        let seq1: u64 = mem.load(at, Ordering::Acquire).map_err(|e| format!("cannot read its seq: {e}"))?;
        if seq1 & 1 == 1 {
            continue;
        }
        mem.read_slice(buf, at).map_err(|e| format!("cannot copy it: {e}"))?;
        // Order the copy before the second seq load (seqlock reader side).
        fence(Ordering::Acquire);
        let seq2: u64 = mem.load(at, Ordering::Relaxed).map_err(|e| format!("cannot read its seq: {e}"))?;
        if seq1 == seq2 {
            return decode_record(buf, layout);
        }
    }
    Err(format!("never stable in {SEQ_RETRIES} reads (seqlock kept changing or stayed odd)"))
}

/// Decodes and checks a consistent copy of a record.
fn decode_record(buf: &[u8], layout: &Layout) -> Result<CpuSnapshot, String> {
    let header_len = std::mem::size_of::<CpuLatencyHeader>();
    let h = Abi::<CpuLatencyHeader>::from_slice(&buf[..header_len]).ok_or("record too short")?.0;
    let buckets = |offset: usize| -> Vec<u32> {
        buf[offset..offset + 4 * layout.bucket_count]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let irq = Histogram::from_record(&h.irq, &buckets(layout.irq_buckets())).map_err(|e| format!("IRQ: {e}"))?;
    let thread =
        Histogram::from_record(&h.thread, &buckets(layout.thread_buckets())).map_err(|e| format!("thread: {e}"))?;
    let corrected = Histogram::from_record(&h.corrected, &buckets(layout.corrected_buckets()))
        .map_err(|e| format!("corrected: {e}"))?;
    let worst = (h.thread.count > 0).then(|| decode_worst(&h.worst));
    let logged = (h.thread.overflow as usize).min(OVERFLOW_LOG);
    Ok(CpuSnapshot {
        samples: h.samples,
        missed: h.missed,
        overdue: 0,
        irq,
        thread,
        corrected,
        worst,
        steal_ns: h.steal_ns,
        max_net_ns: h.max_net_ns,
        last_thread_ns: h.last_thread_ns,
        last_irq_ns: h.last_irq_ns,
        overflow_cycles: h.overflow_cycles[..logged].to_vec(),
        exits: core::array::from_fn(|c| h.exits[c]),
        path_exits: core::array::from_fn(|c| h.path_exits[c]),
    })
}

impl CpuSnapshot {
    /// No samples.
    pub fn empty(buckets: usize, bucket_us: u64) -> Self {
        let h = || Histogram::with_bucket_us(buckets, bucket_us);
        Self {
            samples: 0,
            missed: 0,
            overdue: 0,
            irq: h(),
            thread: h(),
            corrected: h(),
            worst: None,
            steal_ns: 0,
            max_net_ns: 0,
            last_thread_ns: 0,
            last_irq_ns: 0,
            overflow_cycles: Vec::new(),
            exits: [0; exit_cause::COUNT],
            path_exits: [0; exit_cause::COUNT],
        }
    }

    fn set_bucket_us(&mut self, bucket_us: u64) {
        for hist in [&mut self.irq, &mut self.thread, &mut self.corrected] {
            *hist = std::mem::replace(hist, Histogram::new(0)).in_buckets_of(bucket_us);
        }
    }

    /// Counts `overdue` periods (deadlines from `next` one `interval` TSC
    /// ticks apart, still waiting at `now`) as missed, and in the
    /// corrected histogram with the time each has waited so far (a lower
    /// bound of the latency it will see).
    fn add_overdue(&mut self, overdue: u64, next: u64, interval: u64, now: u64, tsc_khz: u64) {
        if overdue == 0 || tsc_khz == 0 {
            return;
        }
        self.overdue = overdue;
        self.missed = self.missed.saturating_add(overdue);
        // Period k (deadline next + k * interval) has waited
        // age(k) = now - deadline, the oldest first. Work bounded whatever
        // the guest wrote: the periods old enough for the overflow (at most
        // all but the histogram range's worth) are recorded in three steps,
        // the oldest and the youngest of them exactly (maximum, minimum)
        // and those between at their mean age (the same sum); only the
        // younger ones, within the range, one by one.
        // In u128: exact for any u64 the guest wrote (ages saturate at u64::MAX ns).
        let age_ns = |k: u64| {
            let deadline = u128::from(next) + u128::from(k) * u128::from(interval);
            let age = u128::from(now).saturating_sub(deadline) * 1_000_000 / u128::from(tsc_khz);
            u64::try_from(age).unwrap_or(u64::MAX)
        };
        let range_ns = u128::from(self.corrected.range_ns());
        let step_ns = u128::from(interval) * 1_000_000 / u128::from(tsc_khz);
        let age0 = u128::from(now).saturating_sub(u128::from(next)) * 1_000_000 / u128::from(tsc_khz);
        let old = if age0 < range_ns || step_ns == 0 {
            0
        } else {
            u64::try_from((age0 - range_ns) / step_ns + 1).unwrap_or(u64::MAX).min(overdue)
        };
        if old > 0 {
            self.corrected.record_ns(age_ns(0));
        }
        if old > 1 {
            self.corrected.record_ns(age_ns(old - 1));
        }
        if old > 2 {
            let mean = (age_ns(1) / 2).saturating_add(age_ns(old - 2) / 2);
            self.corrected.record_ns_times(mean, old - 2);
        }
        for k in old..overdue {
            self.corrected.record_ns(age_ns(k));
        }
    }
}

/// The `--stop-above` report, decoded.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StopInfo {
    pub cpu: u32,
    pub thread_ns: u64,
    /// `None`: no timer IRQ served the deadline.
    pub irq_ns: Option<u64>,
    pub steal_ns: u64,
    pub locks_held: u32,
    pub preempt_count: u32,
    /// The timer IRQ arrived while interrupts were soft-masked, and how
    /// long it waited for the unmask.
    pub irq_masked: bool,
    pub masked_ns: u64,
    pub deadline_tsc: u64,
    /// The interrupted task (address: what lock owner words hold; 0: none).
    pub task: String,
    pub task_addr: u64,
    /// The CPU's last scheduler events, oldest first: `(tsc, what)`.
    pub trace: Vec<(u64, String)>,
}

impl StopInfo {
    fn decode(r: &StopReport, cpu_count: usize) -> Self {
        let n = (r.trace_len as usize).min(r.trace.len());
        let trace = r.trace[..n]
            .iter()
            .map(|e| {
                let name = crate::guest_text::name(&e.task_name);
                let what = match e.kind {
                    trace_kind::SWITCH => format!("switch to '{name}' (prio {})", e.arg),
                    trace_kind::WAKE => format!("wake '{name}' (prio {})", e.arg),
                    trace_kind::IRQ => format!("irq vector {:#x}", e.arg),
                    trace_kind::IRQ_DEFERRED => format!("irq vector {:#x}, deferred by the soft mask", e.arg),
                    k => format!("unknown event {k}"),
                };
                (e.tsc, what)
            })
            .collect();
        Self {
            cpu: r.cpu.min(cpu_count.saturating_sub(1) as u32),
            thread_ns: r.thread_ns,
            irq_ns: (r.irq_ns != 0).then_some(r.irq_ns),
            steal_ns: r.steal_ns,
            locks_held: r.locks_held,
            preempt_count: r.preempt_count,
            irq_masked: r.irq_masked != 0,
            masked_ns: r.masked_ns,
            deadline_tsc: r.deadline_tsc,
            task: crate::guest_text::name(&r.task_name),
            task_addr: r.task_addr,
            trace,
        }
    }
}

/// A NUL-padded name as printable ASCII.
fn decode_worst(w: &WorstSample) -> Worst {
    let task = crate::guest_text::name(&w.task_name[..TASK_NAME_LEN]);
    Worst {
        steal_ns: w.steal_ns,
        masked_ns: w.masked_ns,
        cycle: w.cycle,
        deadline_tsc: w.deadline_tsc,
        thread_ns: w.thread_ns,
        irq_ns: w.irq_ns,
        locks_held: w.locks_held,
        preempt_count: w.preempt_count,
        task,
    }
}

/// Builders of synthetic telemetry regions, for tests here and in the
/// report modules.
#[cfg(any(test, feature = "fixtures"))]
pub mod synth {
    use switcher::telemetry::HistSummary;

    use super::*;
    use crate::vstate::memory;

    pub const ADDR: u64 = 4 << 20;

    pub fn region(cpus: usize, buckets: usize) -> (Arc<GuestMemory>, Layout) {
        (memory::create(16 << 20).unwrap(), Layout { cpu_count: cpus, bucket_count: buckets })
    }

    pub fn header(layout: &Layout) -> TelemetryHeader {
        TelemetryHeader {
            magic: ABI_MAGIC,
            cpu_count: layout.cpu_count as u32,
            bucket_count: layout.bucket_count as u32,
            epoch_slots: EPOCH_SLOTS as u32,
            cpu_stride: layout.cpu_stride() as u32,
            current_epoch: 0,
            interval_us: 1000,
            cs_us: 100,
            load: LoadKind::Locks as u32,
            load_threads: 2,
            vmm_read_epoch: 0,
            running: 1,
            load_ops: 5000,
            load_violations: 0,
            final_check: final_check::PENDING,
            reset_gen: 0,
            final_tally: 0,
            final_locked_total: 0,
            unread_recycled: 0,
            measure_prio: 99,
            bucket_us: 1,
            stop_above_us: 0,
            measure_cpus: (1u64 << layout.cpu_count) - 1,
            load_cpus: (1u64 << layout.cpu_count) - 1,
            now_tsc: 0,
            interval_tsc: 1_000_000,
            stopped: 0,
            irq_rate_hz: 0,
            irq_work_us: 0,
            irq_prio: 0,
            epochs: [EpochHeader::UNUSED; EPOCH_SLOTS],
            cpus: [switcher::telemetry::CpuMeasureState::default(); switcher::abi::MAX_CPUS],
            stop: StopReport::EMPTY,
        }
    }

    pub fn write_header(mem: &GuestMemory, h: &TelemetryHeader) {
        mem.write_obj(Abi(*h), GuestAddress(ADDR)).unwrap();
    }

    /// A histogram's summary and buckets from samples in µs (+ 500 ns).
    pub fn hist(layout: &Layout, us: &[u64]) -> (HistSummary, Vec<u32>) {
        let mut s = HistSummary::EMPTY;
        let mut b = vec![0u32; layout.bucket_count];
        for &u in us {
            let ns = u * 1000 + 500;
            match b.get_mut(u as usize) {
                Some(x) => *x += 1,
                None => s.overflow += 1,
            }
            s.count += 1;
            s.sum_ns += ns;
            s.min_ns = s.min_ns.min(ns);
            s.max_ns = s.max_ns.max(ns);
        }
        (s, b)
    }

    /// Writes a CPU record with the given IRQ and thread samples (µs).
    pub fn write_record(mem: &GuestMemory, layout: &Layout, slot: usize, cpu: usize, irq: &[u64], thread: &[u64]) {
        write_record_seq(mem, layout, slot, cpu, irq, thread, 2);
    }

    /// [`write_record`] with a given seqlock value.
    pub fn write_record_seq(
        mem: &GuestMemory,
        layout: &Layout,
        slot: usize,
        cpu: usize,
        irq: &[u64],
        thread: &[u64],
        seq: u64,
    ) {
        let (irq_s, irq_b) = hist(layout, irq);
        let (thr_s, thr_b) = hist(layout, thread);
        let mut name = [0u8; TASK_NAME_LEN];
        name[..5].copy_from_slice(b"load0");
        let h = CpuLatencyHeader {
            seq,
            samples: thread.len() as u64,
            missed: 1,
            irq: irq_s,
            thread: thr_s,
            corrected: thr_s,
            worst: WorstSample {
                deadline_tsc: 123,
                thread_ns: thr_s.max_ns,
                irq_ns: 700,
                locks_held: 1,
                preempt_count: 1,
                task_name: name,
                steal_ns: 0,
                masked_ns: 0,
                cycle: 0,
            },
            steal_ns: 0,
            max_net_ns: thr_s.max_ns,
            last_thread_ns: 0,
            last_irq_ns: 0,
            overflow_cycles: [0; switcher::telemetry::OVERFLOW_LOG],
            exits: [3, 0, 1, 0, 0, 0, 0, 0],
            path_exits: [1, 0, 0, 0, 0, 0, 0, 0],
        };
        let at = ADDR + layout.record(slot, cpu) as u64;
        mem.write_obj(Abi(h), GuestAddress(at)).unwrap();
        let words = |b: &[u32]| b.iter().flat_map(|w| w.to_le_bytes()).collect::<Vec<u8>>();
        mem.write_slice(&words(&irq_b), GuestAddress(at + layout.irq_buckets() as u64)).unwrap();
        mem.write_slice(&words(&thr_b), GuestAddress(at + layout.thread_buckets() as u64)).unwrap();
        mem.write_slice(&words(&thr_b), GuestAddress(at + layout.corrected_buckets() as u64)).unwrap();
    }

    pub fn epoch(index: u64, mode: Profile, kind: EpochKind, end_tsc: u64) -> EpochHeader {
        EpochHeader { index, mode: mode.code(), kind: kind as u32, start_tsc: 1000 + index, end_tsc }
    }
}

#[cfg(test)]
mod tests {
    use super::synth::*;
    use super::*;
    use crate::stats::Percentile;
    use std::time::{Duration, Instant};

    fn reader(mem: &Arc<GuestMemory>, layout: Layout) -> TelemetryReader {
        TelemetryReader::new(mem.clone(), ADDR, layout)
    }

    #[test]
    fn uninitialised_region_is_not_an_error() {
        let (mem, layout) = region(2, 100);
        let mut r = reader(&mem, layout);
        assert_eq!(r.harvest(), Harvest::NotInitialised);
        assert_eq!(r.epochs().count(), 0);
    }

    #[test]
    fn reads_every_cpu_of_every_used_slot() {
        let (mem, layout) = region(2, 100);
        let mut h = header(&layout);
        h.epochs[0] = epoch(0, Profile::MAINLINE, EpochKind::Mode, 0);
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 0, &[2, 3, 3], &[10, 12, 500]);
        write_record(&mem, &layout, 0, 1, &[1], &[7]);
        let mut r = reader(&mem, layout);
        assert_eq!(r.harvest(), Harvest::Read { problems: 0 });
        let e = r.epoch(0).unwrap();
        assert_eq!(e.info.mode, Profile::MAINLINE);
        assert!(!e.frozen);
        let c0 = e.cpus[0].snapshot.as_ref().unwrap();
        assert_eq!(c0.samples, 3);
        assert_eq!(c0.thread.overflow(), 1);
        assert_eq!(c0.thread.percentile(50.0), Some(Percentile::Us(12)));
        assert_eq!(c0.irq.stats().max_us, Some(3));
        let w = c0.worst.as_ref().unwrap();
        assert_eq!((w.task.as_str(), w.thread_ns, w.locks_held), ("load0", 500_500, 1));
        assert_eq!(e.samples(), 4);
        assert_eq!(r.workload().unwrap().load, LoadKind::Locks);
    }

    #[test]
    fn wrong_dimensions_are_rejected() {
        let (mem, layout) = region(2, 100);
        let mut r = reader(&mem, layout);
        for tweak in [
            |h: &mut TelemetryHeader| h.cpu_count = 64,
            |h: &mut TelemetryHeader| h.bucket_count = 1 << 30,
            |h: &mut TelemetryHeader| h.epoch_slots = 9,
            |h: &mut TelemetryHeader| h.cpu_stride += 64,
        ] {
            let mut h = header(&layout);
            tweak(&mut h);
            write_header(&mem, &h);
            assert!(matches!(r.harvest(), Harvest::Rejected(TelemetryError::Dimension { .. })));
        }
        let mut h = header(&layout);
        h.load = 7;
        write_header(&mem, &h);
        assert!(matches!(r.harvest(), Harvest::Rejected(TelemetryError::HeaderField { field: "load", .. })));
        let mut h = header(&layout);
        h.final_check = 3;
        write_header(&mem, &h);
        assert!(matches!(r.harvest(), Harvest::Rejected(TelemetryError::HeaderField { .. })));
        assert_eq!(r.epochs().count(), 0);
    }

    #[test]
    fn bad_epoch_headers_are_skipped() {
        let (mem, layout) = region(1, 50);
        let mut h = header(&layout);
        h.current_epoch = 1;
        h.epochs[0] = epoch(1, Profile::RT, EpochKind::Mode, 0); // epoch 1 belongs in slot 1
        h.epochs[1] = epoch(1, Profile::RT, EpochKind::Mode, 0);
        h.epochs[2] = epoch(6, Profile::RT, EpochKind::Mode, 0); // newer than current
        h.epochs[3] = EpochHeader { mode: 5, ..epoch(3, Profile::RT, EpochKind::Mode, 0) };
        write_header(&mem, &h);
        write_record(&mem, &layout, 1, 0, &[1], &[1]);
        let mut r = reader(&mem, layout);
        assert_eq!(r.harvest(), Harvest::Read { problems: 3 });
        assert_eq!(r.epochs().map(|e| e.info.index).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn inconsistent_records_are_never_used() {
        let (mem, layout) = region(1, 50);
        let mut h = header(&layout);
        h.epochs[0] = epoch(0, Profile::MAINLINE, EpochKind::Mode, 0);
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 0, &[1, 2], &[3, 4]);
        let mut r = reader(&mem, layout);
        r.harvest();
        let good = r.epoch(0).unwrap().cpus[0].snapshot.clone().unwrap();
        // A bucket changes without its count: the sums disagree.
        let bucket = ADDR + (layout.record(0, 0) + layout.thread_buckets() + 4 * 3) as u64;
        mem.write_obj(9u32, GuestAddress(bucket)).unwrap();
        assert_eq!(r.harvest(), Harvest::Read { problems: 1 });
        let entry = &r.epoch(0).unwrap().cpus[0];
        assert!(entry.problem.as_ref().unwrap().contains("thread"), "{:?}", entry.problem);
        assert_eq!(entry.snapshot.as_ref(), Some(&good), "the last good copy is kept");
    }

    #[test]
    fn a_record_stuck_mid_update_is_reported_unstable() {
        let (mem, layout) = region(1, 50);
        let mut h = header(&layout);
        h.epochs[0] = epoch(0, Profile::MAINLINE, EpochKind::Mode, 0);
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 0, &[1], &[1]);
        mem.write_obj(3u64, GuestAddress(ADDR + layout.record(0, 0) as u64)).unwrap();
        let mut r = reader(&mem, layout);
        assert_eq!(r.harvest(), Harvest::Read { problems: 1 });
        let entry = &r.epoch(0).unwrap().cpus[0];
        assert!(entry.snapshot.is_none());
        assert!(entry.problem.as_ref().unwrap().contains("never stable"));
    }

    #[test]
    fn a_concurrent_writer_never_yields_torn_copies() {
        let (mem, layout) = region(1, 64);
        let mut h = header(&layout);
        h.epochs[0] = epoch(0, Profile::MAINLINE, EpochKind::Mode, 0);
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 0, &[], &[]);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (mem, stop) = (mem.clone(), stop.clone());
            std::thread::spawn(move || {
                // Seqlock writer: seq odd, then the record, then seq even.
                let rec = ADDR + layout.record(0, 0) as u64;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    mem.store(2 * n + 1, GuestAddress(rec), Ordering::Release).unwrap();
                    fence(Ordering::Release);
                    let samples: Vec<u64> = (0..=n % 60).collect();
                    write_record_seq(&mem, &layout, 0, 0, &samples, &samples, 2 * n + 1);
                    mem.store(2 * n + 2, GuestAddress(rec), Ordering::Release).unwrap();
                    n += 1;
                }
            })
        };
        let mut r = reader(&mem, layout);
        let mut good = 0;
        for _ in 0..2000 {
            r.harvest();
            let entry = &r.epoch(0).unwrap().cpus[0];
            if let Some(p) = &entry.problem {
                assert!(p.contains("never stable"), "a torn copy got past the seqlock: {p}");
                continue;
            }
            // A kept copy is one whole state: samples 0..=k, one per bucket.
            let s = entry.snapshot.as_ref().unwrap();
            let k = s.samples;
            assert_eq!(s.thread.count(), k);
            assert_eq!(s.irq.count(), k);
            assert_eq!(s.thread.non_empty().collect::<Vec<_>>(), (0..k).map(|u| (u, 1)).collect::<Vec<_>>());
            good += 1;
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
        assert!(good > 0);
    }

    /// A header (guest input) claiming a clock at u64::MAX, a CPU waiting
    /// since boot: about 10^13 overdue periods. A read takes no longer
    /// than a normal one, and counts no more periods than the VMM's own
    /// clock allows since it started reading.
    #[test]
    fn absurd_header_times_cost_nothing_and_count_what_the_host_clock_allows() {
        let (mem, layout) = region(1, 50);
        let mut h = header(&layout);
        h.epochs[0] = epoch(0, Profile::MAINLINE, EpochKind::Mode, 0);
        h.now_tsc = u64::MAX;
        h.cpus[0].next_deadline_tsc = 1;
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 0, &[1], &[2]);
        let reader_start = Instant::now();
        let (tx, rx) = std::sync::mpsc::channel();
        let mem2 = mem.clone();
        std::thread::spawn(move || {
            let mut r = reader(&mem2, layout);
            r.harvest();
            let overdue = r.epoch(0).and_then(|e| e.cpus[0].snapshot.as_ref()).map(|s| s.overdue);
            let _ = tx.send(overdue);
        });
        // Generous: a read takes microseconds; the bound only stops a loop
        // over the claimed periods (hours) from hanging the suite.
        let overdue = rx.recv_timeout(Duration::from_secs(60)).expect("the read ended").expect("epoch 0 read");
        let most = (reader_start.elapsed().as_nanos() / 100_000) as u64 + 2;
        assert!(overdue <= most, "{overdue} overdue periods counted in {:?}", reader_start.elapsed());
    }

    /// The bounded recording of overdue periods keeps what one-by-one
    /// recording would: count, sum, minimum, maximum, buckets, overflow.
    #[test]
    fn overdue_periods_recorded_in_bulk_match_one_by_one() {
        let (khz, interval, next) = (1_000_000u64, 1_000_000u64, 5_000_000u64);
        for (overdue, now) in [(3, 8_200_000), (40, 46_000_000), (5_000, 5_006_000_000)] {
            let mut bulk = CpuSnapshot::empty(50, 1);
            bulk.add_overdue(overdue, next, interval, now, khz);
            let mut naive = Histogram::with_bucket_us(50, 1);
            for k in 0..overdue {
                naive.record_ns((now - (next + k * interval)) * 1_000_000 / khz);
            }
            let (b, n) = (&bulk.corrected, &naive);
            assert_eq!(
                (b.count(), b.stats().max_ns, b.stats().min_ns),
                (n.count(), n.stats().max_ns, n.stats().min_ns)
            );
            assert_eq!((b.buckets(), b.stats().overflow), (n.buckets(), n.stats().overflow), "{overdue} periods");
            let (bs, ns) = (b.stats().sum_ns as f64, n.stats().sum_ns as f64);
            assert!((bs - ns).abs() <= ns * 1e-9 + 1e6, "sum {bs} vs {ns}");
        }
    }

    #[test]
    fn closed_epochs_survive_slot_reuse() {
        let (mem, layout) = region(1, 50);
        let mut h = header(&layout);
        h.current_epoch = 1;
        h.epochs[0] = epoch(0, Profile::MAINLINE, EpochKind::Mode, 5000);
        h.epochs[1] = epoch(1, Profile::RT, EpochKind::Mode, 0);
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 0, &[1, 1], &[40, 41]);
        write_record(&mem, &layout, 1, 0, &[1], &[2]);
        let mut r = reader(&mem, layout);
        r.harvest();
        // Closed, but the guest may still record late samples into the
        // epoch before the current one: not final yet.
        assert!(!r.epoch(0).unwrap().frozen);
        assert!(!r.epoch(1).unwrap().frozen);
        // A late sample lands in epoch 0 after it closed; the next read
        // (two epochs on) sees it and freezes the epoch.
        h.current_epoch = 2;
        h.epochs[1] = epoch(1, Profile::RT, EpochKind::Mode, 5500);
        h.epochs[2] = epoch(2, Profile::MAINLINE, EpochKind::Mode, 0);
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 0, &[1, 1, 1], &[40, 41, 42]);
        r.harvest();
        assert!(r.epoch(0).unwrap().frozen);
        assert_eq!(r.epoch(0).unwrap().cpus[0].snapshot.as_ref().unwrap().samples, 3);
        write_record(&mem, &layout, 0, 0, &[1, 1], &[40, 41]);
        // Epoch 4 reuses slot 0.
        h.current_epoch = 4;
        h.epochs[0] = epoch(4, Profile::MAINLINE, EpochKind::Mode, 0);
        h.epochs[1] = epoch(1, Profile::RT, EpochKind::Mode, 6000);
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 0, &[9], &[9]);
        assert_eq!(r.harvest(), Harvest::Read { problems: 0 });
        let idx: Vec<u64> = r.epochs().map(|e| e.info.index).collect();
        assert_eq!(idx, vec![0, 1, 2, 4]);
        assert_eq!(r.epoch(0).unwrap().cpus[0].snapshot.as_ref().unwrap().thread.stats().max_us, Some(42));
        assert_eq!(r.epoch(4).unwrap().cpus[0].snapshot.as_ref().unwrap().thread.stats().max_us, Some(9));
        assert!(r.epoch(1).unwrap().frozen);
    }

    #[test]
    fn old_epochs_are_forgotten_and_the_totals_stay_exact() {
        let (mem, layout) = region(2, 50);
        let mut r = reader(&mem, layout);
        let n = r.retain() as u64 * 3 + 5;
        let mut h = header(&layout);
        for i in 0..n {
            // Epoch i opens in slot i % 4 and closes the one before it.
            h.current_epoch = i;
            let mode = if i % 2 == 0 { Profile::MAINLINE } else { Profile::RT };
            h.epochs[(i % 4) as usize] = epoch(i, mode, EpochKind::Mode, 0);
            if i > 0 {
                h.epochs[((i - 1) % 4) as usize].end_tsc = 5000 + i;
            }
            write_header(&mem, &h);
            // Epoch i: i % 7 + 1 samples on cpu 0, one on cpu 1.
            let samples: Vec<u64> = (0..=i % 7).collect();
            write_record(&mem, &layout, (i % 4) as usize, 0, &samples, &samples);
            write_record(&mem, &layout, (i % 4) as usize, 1, &[3], &[40]);
            assert_eq!(r.harvest(), Harvest::Read { problems: 0 });
            assert!(r.epochs().count() <= r.retain());
        }
        assert_eq!(r.forgotten(), n - r.retain() as u64);
        assert_eq!(r.epochs().next().unwrap().info.index, r.forgotten());
        let want = |m: u64| (0..n).filter(|i| i % 2 == m).map(|i| i % 7 + 2).sum::<u64>();
        let totals = r.totals();
        assert_eq!(totals.len(), 2);
        for (g, m) in totals.iter().zip([0, 1]) {
            assert_eq!(g.epochs, (0..n).filter(|i| i % 2 == m).count() as u64);
            let samples: u64 = g.cpus.iter().flatten().map(|c| c.samples).sum();
            let counted: u64 = g.cpus.iter().flatten().map(|c| c.thread.count()).sum();
            assert_eq!((samples, counted), (want(m), want(m)), "{:?}", g.mode);
        }
        assert_eq!(r.total_samples(), want(0) + want(1));
        // A reset starts over: nothing forgotten, nothing in the totals
        // but what the current epoch records from now on.
        r.request_reset().unwrap();
        assert_eq!((r.forgotten(), r.totals().len(), r.epochs().count()), (0, 0, 0));
        // Until each CPU has emptied its record, what it holds is from
        // before the reset: read as empty.
        r.harvest();
        assert_eq!(r.total_samples(), 0, "records not yet emptied by the guest read as empty");
        write_record(&mem, &layout, ((n - 1) % 4) as usize, 0, &[1], &[1]);
        write_record(&mem, &layout, ((n - 1) % 4) as usize, 1, &[], &[]);
        let mut h = mem.read_obj::<Abi<TelemetryHeader>>(GuestAddress(ADDR)).unwrap().0;
        h.cpus[0].reset_seen = h.reset_gen;
        h.cpus[1].reset_seen = h.reset_gen;
        write_header(&mem, &h);
        r.harvest();
        assert_eq!(r.epochs().map(|e| e.info.index).collect::<Vec<_>>(), vec![n - 1]);
        assert_eq!(r.total_samples(), 1);
    }

    #[test]
    fn an_epoch_the_guest_may_still_write_is_never_forgotten() {
        let (mem, layout) = region(1, 50);
        let mut r = reader(&mem, layout);
        let mut h = header(&layout);
        let n = r.retain() as u64 + 3;
        for i in 0..n {
            h.current_epoch = i;
            h.epochs[(i % 4) as usize] = epoch(i, Profile::MAINLINE, EpochKind::Mode, 0);
            write_header(&mem, &h);
            // Never closed and its records are stuck: not frozen.
            write_record_seq(&mem, &layout, (i % 4) as usize, 0, &[1], &[1], 1);
            r.harvest();
        }
        // Only epochs whose slot the guest reused (4 behind) may go.
        assert_eq!(r.forgotten(), 3);
        assert!(r.epochs().all(|e| e.info.index + 4 > n - 1 || !e.frozen));
    }

    #[test]
    fn an_epoch_that_changes_identity_is_refused() {
        let (mem, layout) = region(1, 50);
        let mut h = header(&layout);
        h.epochs[0] = epoch(0, Profile::MAINLINE, EpochKind::Mode, 0);
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 0, &[1], &[1]);
        let mut r = reader(&mem, layout);
        r.harvest();
        h.epochs[0].mode = Profile::RT.code();
        write_header(&mem, &h);
        assert_eq!(r.harvest(), Harvest::Read { problems: 1 });
        assert_eq!(r.epoch(0).unwrap().info.mode, Profile::MAINLINE);
    }

    #[test]
    fn a_region_at_the_end_of_memory_is_read_safely() {
        // Placed so that only the header fits: records are out of memory.
        let (mem, layout) = region(1, 50);
        let addr = (16 << 20) - Layout::header_size() as u64;
        let mut h = header(&layout);
        h.epochs[0] = epoch(0, Profile::MAINLINE, EpochKind::Mode, 0);
        mem.write_obj(Abi(h), GuestAddress(addr)).unwrap();
        let mut r = TelemetryReader::new(mem.clone(), addr, layout);
        assert_eq!(r.harvest(), Harvest::Read { problems: 1 });
        assert!(r.epoch(0).unwrap().cpus[0].problem.as_ref().unwrap().contains("cannot"));
    }
}
