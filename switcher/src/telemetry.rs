//! The latency telemetry region: what the guest's measurement threads
//! record and the VMM reads while the guest runs (README.md, "Latency
//! measurement"; docs/ARCHITECTURE.md, "The telemetry ABI"). `no_std`, shared by both sides.
//!
//! # Layout (at `BootInfo::telemetry_addr`, `BootInfo::telemetry_size` bytes)
//!
//! ```text
//! TelemetryHeader                       (padded to RECORD_ALIGN)
//! for slot in 0..epoch_slots:           epoch ring: slot = epoch index % epoch_slots
//!   for cpu in 0..cpu_count:            one record per CPU, `cpu_stride` bytes each
//!     CpuLatencyHeader
//!     irq_buckets:    [u32; bucket_count]   IRQ latency,    bucket i = [i, i+1) µs
//!     thread_buckets: [u32; bucket_count]   thread latency, bucket i = [i, i+1) µs
//! ```
//! Samples of `bucket_count` µs or more are counted in `overflow` (and in
//! min/max/sum), not in a bucket.
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

/// Epoch slots in the ring.
pub const EPOCH_SLOTS: usize = 4;
/// Bytes of the task name recorded with the worst sample.
pub const TASK_NAME_LEN: usize = 16;
/// Alignment of the header's end and of every CPU record.
pub const RECORD_ALIGN: usize = 64;

/// The workload's load kind (`--load`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadKind {
    /// Measurement threads only.
    None = 0,
    /// Load threads that take shared `SpinLock`s and hold them for `cs_us`.
    Locks = 1,
    /// The same busy work without any lock: the floor of what the CPU
    /// load alone costs.
    Cpu = 2,
}

impl LoadKind {
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::None),
            1 => Some(Self::Locks),
            2 => Some(Self::Cpu),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Locks => "locks",
            Self::Cpu => "cpu",
        }
    }
}

/// What the VMM asks for (in `BootInfo::workload`); 0 means "default":
/// the guest picks it and publishes
/// what it chose in [`TelemetryHeader`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorkloadRequest {
    /// Measurement period in µs (cyclictest `-i`).
    pub interval_us: u32,
    /// Critical-section length of the load threads in µs.
    pub cs_us: u32,
    /// A [`LoadKind`] as u32.
    pub load: u32,
    /// Load threads per CPU.
    pub load_threads: u32,
    /// Whether to run the workload at all (1) or not (0: boot only).
    pub enabled: u32,
    pub _reserved: u32,
}

/// Kind of an epoch.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EpochKind {
    /// Running in one mode.
    Mode = 0,
    /// Periods that overlapped a mode switch.
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
    /// A `LockMode` as u32 (for `Switching`: the mode switched from).
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
    pub _reserved1: u32,
    pub epochs: [EpochHeader; EPOCH_SLOTS],
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
}

/// The fixed part of a CPU record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuLatencyHeader {
    /// Seqlock: odd while the measurement thread updates the record.
    pub seq: u64,
    /// Activations recorded.
    pub samples: u64,
    /// Periods that passed without an activation (the thread woke too late).
    pub missed: u64,
    pub irq: HistSummary,
    pub thread: HistSummary,
    pub worst: WorstSample,
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
        align_up(core::mem::size_of::<CpuLatencyHeader>() + 2 * 4 * self.bucket_count, RECORD_ALIGN)
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
}

impl TelemetryHeader {
    pub fn is_valid(&self) -> bool {
        self.magic == ABI_MAGIC
    }
}

const _: () = {
    assert!(core::mem::size_of::<EpochHeader>() == 32);
    assert!(core::mem::size_of::<HistSummary>() == 40);
    assert!(core::mem::size_of::<WorstSample>() == 48);
    assert!(core::mem::size_of::<CpuLatencyHeader>() == 24 + 80 + 48);
    assert!(core::mem::size_of::<WorkloadRequest>() == 24);
    assert!(core::mem::size_of::<TelemetryHeader>() == 104 + 32 * EPOCH_SLOTS);
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
    fn kinds_decode() {
        assert_eq!(LoadKind::from_u32(1), Some(LoadKind::Locks));
        assert_eq!(LoadKind::from_u32(9), None);
        assert_eq!(EpochKind::from_u32(1), Some(EpochKind::Switching));
    }
}
