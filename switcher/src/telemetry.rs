//! The latency telemetry region: what the guest's measurement threads
//! record and the VMM reads while the guest runs (docs/latency.md;
//! docs/ARCHITECTURE.md, "The telemetry ABI"). `no_std`, shared by both sides.
//!
//! # Layout (at `BootInfo::telemetry_addr`, `BootInfo::telemetry_size` bytes)
//!
//! ```text
//! TelemetryHeader                       (padded to RECORD_ALIGN)
//! for slot in 0..epoch_slots:           epoch ring: slot = epoch index % epoch_slots
//!   for cpu in 0..cpu_count:            one record per CPU, `cpu_stride` bytes each
//!     CpuLatencyHeader
//!     irq_buckets:       [u32; bucket_count]   IRQ latency,    bucket i = [i*b, (i+1)*b) µs
//!     thread_buckets:    [u32; bucket_count]   thread latency, bucket i = [i*b, (i+1)*b) µs
//!     corrected_buckets: [u32; bucket_count]   thread latency of every elapsed period
//!                                              (coordinated-omission corrected)
//! ```
//! `b` is the header's `bucket_us`. Samples of `bucket_count * b` µs or
//! more are counted in `overflow` (and in min/max/sum), not in a bucket.
//!
//! # Epoch attribution
//!
//! A sample belongs to the epoch whose window `[start_tsc, end_tsc)` holds
//! its *deadline*, not to the epoch current when it is recorded: a
//! measurement thread woken late after a switch records into the epoch
//! that was current at its deadline. Each period a late activation skipped
//! (`missed`) goes to the epoch holding that period's deadline too.
//!
//! One rule bounds it, on both sides ([`WRITABLE_EPOCHS`]): the guest
//! writes only the current epoch and the one before it; a deadline older
//! still is filed in the older of the two (the sample with its latency,
//! and the periods it skipped). The VMM freezes an epoch (reads it one
//! last time, keeps it for good, merges it into its group's totals) only
//! once it is older than those, or once the workload has stopped.
//!
//! # Periods that have not ended yet
//!
//! `CpuMeasureState::next_deadline_tsc` is the deadline a CPU's
//! measurement thread waits for. Periods whose deadlines have passed by
//! the header's `now_tsc` (or by an epoch's `end_tsc`) without an
//! activation are *overdue*: a reader counts them as missed
//! ([`overdue_periods`]), so a CPU whose thread cannot run at all still
//! shows its missed periods. It files them by the rule the thread will
//! file them by when it runs: in the writable epochs, a deadline older
//! than both in the older one, never in a frozen epoch. The period of
//! `next_deadline_tsc` itself is late, not missed: the thread will record
//! it as a sample (unless the workload stopped first). Once the thread
//! runs it records the others itself and advances `next_deadline_tsc`, so
//! no period is counted twice or lost.
//!
//! # Consistency
//!
//! Each CPU record has exactly one writer, that CPU's measurement thread.
//! It makes `seq` odd before it changes the record and even after (a
//! seqlock); a reader copies the record and keeps the copy only if `seq`
//! was even and unchanged across the copy. Epoch headers change only when
//! an epoch opens or closes, which the VMM coordinates (every vCPU is held
//! then), so it reads them without a protocol.
//!
//! # Epochs
//!
//! Epoch 0 is the boot mode. The runtime switch opens new ones (a
//! `Switching` epoch for the periods that overlap a switch, then a `Mode`
//! epoch in the new mode). The VMM keeps every closed epoch it has read, so
//! the ring only needs to hold the epochs opened between two of its reads.

use crate::abi::ABI_MAGIC;
pub use crate::workload::{LoadKind, WorkloadRequest, defaults};

/// Epoch slots in the ring.
pub const EPOCH_SLOTS: usize = 4;
/// Epochs the guest may write: the current one and the one before it
/// (module doc, "Epoch attribution"). The VMM freezes only older ones.
pub const WRITABLE_EPOCHS: u64 = 2;
const _: () = assert!(WRITABLE_EPOCHS < EPOCH_SLOTS as u64, "a slot must be free to prepare the next epoch in");
/// Cycle numbers of thread-latency overflows kept per record (cyclictest
/// `-h` lists them; beyond these only the count is kept).
pub const OVERFLOW_LOG: usize = 8;
/// Entries of the per-CPU scheduler trace copied into a [`StopReport`].
pub const TRACE_LEN: usize = 32;

/// Bytes of the task name recorded with the worst sample.
pub const TASK_NAME_LEN: usize = 16;
/// Alignment of the header's end and of every CPU record.
pub const RECORD_ALIGN: usize = 64;

/// Kind of an epoch.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochKind {
    /// Running in one mode.
    Mode = 0,
    /// Periods that overlapped a mode switch, from its request until
    /// every measuring CPU has completed a full period after the thaw.
    Switching = 1,
}

impl EpochKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Mode),
            1 => Some(Self::Switching),
            _ => None,
        }
    }
}

/// One slot of the epoch ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EpochHeader {
    /// Epoch number (0 = boot); `u64::MAX` while the slot is unused.
    pub index: u64,
    /// A `Profile::code` (for `Switching`: the mode switched from).
    pub mode: u32,
    /// An [`EpochKind`] as u32.
    pub kind: u32,
    /// TSC when the epoch opened.
    pub start_tsc: u64,
    /// TSC when it closed; 0 while open.
    pub end_tsc: u64,
}

impl EpochHeader {
    pub const UNUSED: Self = Self { index: u64::MAX, mode: 0, kind: 0, start_tsc: 0, end_tsc: 0 };
}

/// Result of the load's final consistency check.
pub mod final_check {
    /// Not run yet (the guest checks when it shuts down).
    pub const PENDING: u32 = 0;
    pub const OK: u32 = 1;
    pub const VIOLATED: u32 = 2;
}

/// The start of the telemetry region.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TelemetryHeader {
    /// [`ABI_MAGIC`] once the guest has initialised the region.
    pub magic: u64,
    pub cpu_count: u32,
    /// 1 µs buckets per histogram.
    pub bucket_count: u32,
    /// [`EPOCH_SLOTS`].
    pub epoch_slots: u32,
    /// Bytes per CPU record (header + both histograms, aligned).
    pub cpu_stride: u32,
    /// The epoch being recorded now.
    pub current_epoch: u64,
    /// The workload as the guest runs it (defaults resolved).
    pub interval_us: u32,
    pub cs_us: u32,
    pub load: u32,
    pub load_threads: u32,
    /// Written by the VMM after each read of the region: the low 32 bits
    /// of `current_epoch` then (every earlier epoch still in a slot has
    /// been read). The guest reuses an epoch's slot only once the VMM has
    /// read that epoch (waiting a bounded time; see `unread_recycled`).
    pub vmm_read_epoch: u32,
    /// 1 once the measurement threads run.
    pub running: u32,
    /// Load operations done (critical sections or busy rounds), all threads.
    pub load_ops: u64,
    /// Invariant violations seen inside critical sections (must stay 0).
    pub load_violations: u64,
    /// A [`final_check`] value.
    pub final_check: u32,
    /// Bumped by the VMM to reset the statistics (`reset-latency`): each
    /// measurement thread, on seeing a new value, empties its own record of
    /// the current epoch (under its seqlock) before its next sample.
    pub reset_gen: u32,
    /// At the final check: sum of the threads' own tallies, and the sum of
    /// the counters kept under the locks (must be equal).
    pub final_tally: u64,
    pub final_locked_total: u64,
    /// Epochs whose slot the guest had to reuse before the VMM read them
    /// (their samples are missing from the reports; must stay 0).
    pub unread_recycled: u32,
    /// The measurement threads' priority.
    pub measure_prio: u32,
    /// Histogram bucket width in µs (>= 1).
    pub bucket_us: u32,
    /// Threshold of `--stop-above` in µs (0: off).
    pub stop_above_us: u32,
    /// CPUs that measure and CPUs that carry load (bit n = CPU n).
    pub measure_cpus: u64,
    pub load_cpus: u64,
    /// The guest's TSC, raised by every activation and when the last epoch
    /// closes: the reader's "now" for periods that are overdue.
    pub now_tsc: u64,
    /// The measurement period in TSC ticks (overdue periods step by it).
    pub interval_tsc: u64,
    /// 1 once a [`StopReport`] is complete (then the VMM stops the run).
    pub stopped: u32,
    /// The device interrupt load as it runs (`WorkloadRequest`'s, resolved).
    pub irq_rate_hz: u32,
    pub irq_work_us: u32,
    pub irq_prio: u32,
    pub epochs: [EpochHeader; EPOCH_SLOTS],
    pub cpus: [CpuMeasureState; crate::abi::MAX_CPUS],
    pub stop: StopReport,
}

/// One CPU's measurement thread, outside any epoch (written only by it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuMeasureState {
    /// The deadline it waits for (0: this CPU does not measure, or has
    /// not started).
    pub next_deadline_tsc: u64,
    /// Activations since it started (cyclictest's cycle count).
    pub cycles: u64,
    /// Deadline of its last recorded activation.
    pub last_deadline_tsc: u64,
    /// The last `TelemetryHeader::reset_gen` this CPU acted on (its record
    /// of the current epoch was emptied then): until it equals the
    /// header's, a reader shows that record as empty.
    pub reset_seen: u32,
    pub _reserved: u32,
    /// Device interrupts taken on this CPU (`--irq-load`).
    pub irq_received: u64,
    /// Of those, handled in hard-IRQ context ...
    pub irq_hard: u64,
    /// ... and handled by this CPU's handler thread (the rest wait for it).
    pub irq_threaded: u64,
    pub _reserved2: u64,
}

/// A scheduler event in the per-CPU trace ring.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceEntry {
    pub tsc: u64,
    /// A [`trace_kind`] value.
    pub kind: u32,
    /// Kind-specific: the priority of the task switched to or woken, the
    /// vector of an interrupt.
    pub arg: u32,
    /// The task switched to or woken (NUL-padded; empty for interrupts).
    pub task_name: [u8; TASK_NAME_LEN],
}

/// Kinds of [`TraceEntry`].
pub mod trace_kind {
    /// Unused entry.
    pub const NONE: u32 = 0;
    /// Context switch to `task_name` (arg: its priority).
    pub const SWITCH: u32 = 1;
    /// `task_name` made runnable (arg: its priority).
    pub const WAKE: u32 = 2;
    /// Interrupt handler entered (arg: vector).
    pub const IRQ: u32 = 3;
    /// An interrupt arrived while interrupts were soft-masked and was
    /// deferred to the unmask (arg: vector).
    pub const IRQ_DEFERRED: u32 = 4;
}

/// Why a run stopped at `--stop-above`: the first sample above the
/// threshold and what its CPU was doing (written once, by that CPU's
/// measurement thread, then `TelemetryHeader::stopped` is set).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopReport {
    pub cpu: u32,
    /// Switchable locks the interrupted task held; the CPU's preempt
    /// count; whether interrupts were soft-masked when the timer fired
    /// (1) and for how long the timer interrupt was deferred by it.
    pub locks_held: u32,
    pub preempt_count: u32,
    pub irq_masked: u32,
    pub masked_ns: u64,
    pub deadline_tsc: u64,
    pub thread_ns: u64,
    /// 0 when no timer interrupt served the deadline.
    pub irq_ns: u64,
    /// Host steal time on this CPU while the sample's period ran.
    pub steal_ns: u64,
    /// Valid entries of `trace` (oldest first).
    pub trace_len: u32,
    pub _reserved: u32,
    /// The interrupted task: its address (what the lock table's owner
    /// words hold; 0: none) and name.
    pub task_addr: u64,
    pub task_name: [u8; TASK_NAME_LEN],
    pub trace: [TraceEntry; TRACE_LEN],
}

impl StopReport {
    pub const EMPTY: Self = Self {
        cpu: 0,
        locks_held: 0,
        preempt_count: 0,
        irq_masked: 0,
        masked_ns: 0,
        deadline_tsc: 0,
        thread_ns: 0,
        irq_ns: 0,
        steal_ns: 0,
        trace_len: 0,
        _reserved: 0,
        task_addr: 0,
        task_name: [0; TASK_NAME_LEN],
        trace: [TraceEntry { tsc: 0, kind: 0, arg: 0, task_name: [0; TASK_NAME_LEN] }; TRACE_LEN],
    };
}

/// Periods of a thread with period `interval` whose deadlines lie in
/// `[from, to)`, stepping from `first` (`first`, `first + interval`, ...):
/// how many overdue periods of a CPU (first = its `next_deadline_tsc`,
/// overdue until `to` = now) fall into an epoch window starting at `from`.
pub fn periods_in(first: u64, interval: u64, from: u64, to: u64) -> u64 {
    if interval == 0 || first == 0 || to <= first || to <= from {
        return 0;
    }
    // First deadline at or after `from`.
    let start = if first >= from { first } else { first + (from - first).div_ceil(interval) * interval };
    if start >= to { 0 } else { (to - 1 - start) / interval + 1 }
}

/// Overdue periods of a CPU in an epoch window `[start, end)` (`end` 0:
/// still open, up to `now`): deadlines after `next_deadline` that passed
/// without an activation, and `next_deadline` itself when `stopped` (the
/// workload ended: its thread will record nothing more).
///
/// Only a thread at least one whole period late counts as stalled (one
/// less late is about to run, and will record its deadline as a sample).
pub fn overdue_periods(next_deadline: u64, interval: u64, start: u64, end: u64, now: u64, stopped: bool) -> u64 {
    if next_deadline == 0 || now.saturating_sub(next_deadline) < interval {
        return 0;
    }
    let to = if end == 0 { now } else { end };
    let first = if stopped { next_deadline } else { next_deadline + interval };
    periods_in(first, interval, start, to)
}

/// Summary of one latency histogram.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistSummary {
    pub count: u64,
    pub sum_ns: u64,
    /// `u64::MAX` while `count` is 0.
    pub min_ns: u64,
    pub max_ns: u64,
    /// Samples of `bucket_count` µs or more.
    pub overflow: u64,
}

impl HistSummary {
    pub const EMPTY: Self = Self { count: 0, sum_ns: 0, min_ns: u64::MAX, max_ns: 0, overflow: 0 };
}

/// The worst thread-latency sample of an epoch on one CPU, and what that
/// CPU was running when its timer fired.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorstSample {
    /// TSC of the deadline that produced the sample.
    pub deadline_tsc: u64,
    pub thread_ns: u64,
    pub irq_ns: u64,
    /// Switchable locks the interrupted task held; its preempt count.
    pub locks_held: u32,
    pub preempt_count: u32,
    /// Name of the task the timer interrupted (NUL-padded).
    pub task_name: [u8; TASK_NAME_LEN],
    /// Host steal time on this CPU while the sample's period ran.
    pub steal_ns: u64,
    /// How long the timer interrupt waited for a soft unmask (0: it
    /// arrived unmasked).
    pub masked_ns: u64,
    /// The sample's activation number (cyclictest cycle).
    pub cycle: u64,
}

/// Operations of the guest that exit to the hypervisor, counted per CPU
/// by cause (docs/latency.md, "Exits"). Each costs tens of µs where the
/// host emulates them, so an exit between a timer interrupt and the
/// thread it wakes adds straight to that thread's latency.
pub mod exit_cause {
    /// A write of the LAPIC timer (arming or disarming it; MMIO).
    pub const TIMER: usize = 0;
    /// An EOI written to the LAPIC (PV EOI off, or KVM said it was needed).
    pub const EOI: usize = 1;
    /// A write of the interrupt command register (an IPI; MMIO).
    pub const IPI: usize = 2;
    /// A doorbell (hypercall, console; MMIO).
    pub const DOORBELL: usize = 3;
    /// An entry into the ring-0 shim (halt, MSR access, ...).
    pub const SHIM: usize = 4;
    /// Causes counted.
    pub const COUNT: usize = 5;
    /// Slots in a record (the rest stay 0).
    pub const SLOTS: usize = 8;
    /// Names, by cause, as reports print them.
    pub const NAMES: [&str; COUNT] = ["timer", "eoi", "ipi", "doorbell", "shim"];
}

/// The fixed part of a CPU record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuLatencyHeader {
    /// Seqlock: odd while the measurement thread updates the record.
    pub seq: u64,
    /// Activations recorded.
    pub samples: u64,
    /// Periods whose deadlines lie in this epoch that passed without an
    /// activation (the thread woke too late); overdue ones not yet
    /// included (module doc).
    pub missed: u64,
    pub irq: HistSummary,
    pub thread: HistSummary,
    /// Thread latency of every elapsed period: each activation's, plus for
    /// each period it skipped the latency that period saw when the late
    /// activation finally served it (HdrHistogram's corrected recording).
    pub corrected: HistSummary,
    pub worst: WorstSample,
    /// Host steal time on this CPU over the periods recorded here.
    pub steal_ns: u64,
    /// Largest thread latency minus the steal time of its period: what
    /// the guest did, the host's preemption of the vCPU taken out.
    pub max_net_ns: u64,
    /// The last activation's latencies (cyclictest's `Act`; IRQ 0 if none).
    pub last_thread_ns: u64,
    pub last_irq_ns: u64,
    /// Cycle numbers of the first [`OVERFLOW_LOG`] thread-latency
    /// overflows (`thread.overflow` counts all of them).
    pub overflow_cycles: [u64; OVERFLOW_LOG],
    /// Exits this CPU made, by [`exit_cause`], from the activation before
    /// each one recorded here up to it: per activation, on average,
    /// `exits[c] / samples`.
    pub exits: [u64; exit_cause::SLOTS],
    /// Of those, the exits made between the entry of the timer interrupt
    /// that served an activation's deadline and the thread running (none
    /// counted for an activation no timer interrupt served).
    pub path_exits: [u64; exit_cause::SLOTS],
}

const fn align_up(v: usize, a: usize) -> usize {
    v.div_ceil(a) * a
}

/// Byte offsets and sizes of a telemetry region with given dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub cpu_count: usize,
    pub bucket_count: usize,
}

impl Layout {
    pub const fn header_size() -> usize {
        align_up(core::mem::size_of::<TelemetryHeader>(), RECORD_ALIGN)
    }

    pub const fn cpu_stride(&self) -> usize {
        align_up(core::mem::size_of::<CpuLatencyHeader>() + 3 * 4 * self.bucket_count, RECORD_ALIGN)
    }

    /// Total bytes of the region.
    pub const fn size(&self) -> usize {
        Self::header_size() + EPOCH_SLOTS * self.cpu_count * self.cpu_stride()
    }

    /// Offset of the record of `cpu` in epoch slot `slot`.
    pub const fn record(&self, slot: usize, cpu: usize) -> usize {
        Self::header_size() + (slot * self.cpu_count + cpu) * self.cpu_stride()
    }

    /// Offset of the IRQ-latency buckets in a record.
    pub const fn irq_buckets(&self) -> usize {
        core::mem::size_of::<CpuLatencyHeader>()
    }

    /// Offset of the thread-latency buckets in a record.
    pub const fn thread_buckets(&self) -> usize {
        core::mem::size_of::<CpuLatencyHeader>() + 4 * self.bucket_count
    }

    /// Offset of the corrected thread-latency buckets in a record.
    pub const fn corrected_buckets(&self) -> usize {
        core::mem::size_of::<CpuLatencyHeader>() + 8 * self.bucket_count
    }
}

impl TelemetryHeader {
    pub fn is_valid(&self) -> bool {
        self.magic == ABI_MAGIC
    }

    /// The guest's TSC rate in kHz, from the period in µs and in ticks
    /// (0 before the guest set them).
    pub fn tsc_khz(&self) -> u64 {
        (self.interval_tsc.saturating_mul(1000)).checked_div(u64::from(self.interval_us)).unwrap_or(0)
    }
}

const _: () = {
    assert!(core::mem::size_of::<EpochHeader>() == 32);
    assert!(core::mem::size_of::<HistSummary>() == 40);
    assert!(core::mem::size_of::<WorstSample>() == 72);
    assert!(core::mem::size_of::<CpuLatencyHeader>() == 24 + 120 + 72 + 32 + 8 * OVERFLOW_LOG + 16 * exit_cause::SLOTS);
    assert!(core::mem::size_of::<TraceEntry>() == 32);
    assert!(core::mem::size_of::<StopReport>() == 88 + 32 * TRACE_LEN);
    assert!(
        core::mem::size_of::<TelemetryHeader>()
            == 160 + 32 * EPOCH_SLOTS + 64 * crate::abi::MAX_CPUS + core::mem::size_of::<StopReport>()
    );
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_records_do_not_overlap() {
        let l = Layout { cpu_count: 3, bucket_count: 1000 };
        assert_eq!(Layout::header_size() % RECORD_ALIGN, 0);
        assert_eq!(l.cpu_stride() % RECORD_ALIGN, 0);
        assert!(l.cpu_stride() >= l.thread_buckets() + 4 * 1000);
        assert_eq!(l.record(0, 1) - l.record(0, 0), l.cpu_stride());
        assert_eq!(l.record(1, 0), l.record(0, 2) + l.cpu_stride());
        assert_eq!(l.size(), l.record(EPOCH_SLOTS - 1, 2) + l.cpu_stride());
    }

    #[test]
    fn periods_in_windows() {
        // Deadlines 100, 110, 120, ... (interval 10).
        assert_eq!(periods_in(100, 10, 0, 100), 0);
        assert_eq!(periods_in(100, 10, 0, 101), 1);
        assert_eq!(periods_in(100, 10, 0, 131), 4);
        assert_eq!(periods_in(100, 10, 105, 131), 3);
        assert_eq!(periods_in(100, 10, 110, 120), 1);
        assert_eq!(periods_in(100, 10, 131, 200), 6);
        assert_eq!(periods_in(0, 10, 0, 200), 0, "not measuring");
        // Windows that tile the line count every period once.
        let total: u64 = [(0, 117), (117, 163), (163, 250)].iter().map(|&(a, b)| periods_in(100, 10, a, b)).sum();
        assert_eq!(total, periods_in(100, 10, 0, 250));
        assert_eq!(total, 15);
        // Open epoch: up to now.
        // Deadlines 110 and 120 passed; 100 is the late activation itself.
        assert_eq!(overdue_periods(100, 10, 90, 0, 125, false), 2);
        assert_eq!(overdue_periods(100, 10, 90, 115, 300, false), 1);
        assert_eq!(overdue_periods(100, 10, 90, 0, 105, false), 0, "late less than a period: about to run");
        // Stopped: the late one will never be recorded either.
        assert_eq!(overdue_periods(100, 10, 90, 0, 125, true), 3);
        assert_eq!(overdue_periods(0, 10, 90, 0, 125, true), 0, "no thread");
    }

    #[test]
    fn kinds_decode() {
        assert_eq!(LoadKind::from_u32(1), Some(LoadKind::Locks));
        assert_eq!(LoadKind::from_u32(9), None);
        assert_eq!(EpochKind::from_u32(1), Some(EpochKind::Switching));
    }
}
