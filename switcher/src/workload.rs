//! The latency workload the VMM asks the guest to run: its request
//! (`BootInfo::workload`), its load kinds and its defaults. A leaf: both
//! the boot ABI (`abi`) and the telemetry region (`telemetry`, which
//! re-exports these names) use it.

/// The workload's defaults (what the guest runs for a 0 in
/// [`WorkloadRequest`]); the VMM sizes its histograms from them.
pub mod defaults {
    /// Measurement period (cyclictest's customary `-i 1000`).
    pub const INTERVAL_US: u32 = 1000;
    /// Load critical section.
    pub const CS_US: u32 = 500;
    /// Load threads per CPU.
    pub const LOAD_THREADS: u32 = 2;
    /// Measurement thread priority: the guest's highest (`MAX_PRIO`).
    pub const MEASURE_PRIO: u32 = 99;
    /// Histogram bucket width.
    pub const BUCKET_US: u32 = 1;
    /// Device interrupt handler threads (Linux's default for irq threads).
    pub const IRQ_PRIO: u32 = 50;
    /// Work per device interrupt.
    pub const IRQ_WORK_US: u32 = 20;
}

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
/// what it chose in the telemetry header.
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
    /// Priority of the measurement threads (1..=99; 0: the default, the
    /// guest's highest). Below the control thread (98) the switch and
    /// housekeeping can delay them: that is what the option is for.
    pub measure_prio: u32,
    /// CPUs that run a measurement thread (bit n = CPU n; 0: all).
    pub measure_cpus: u64,
    /// CPUs that run load threads (bit n = CPU n; 0: all).
    pub load_cpus: u64,
    /// Histogram bucket width in µs (0: 1 µs).
    pub bucket_us: u32,
    /// Stop at the first thread-latency sample above this many µs and
    /// write a stop report (0: never; cyclictest `-b`, rtla `-a`).
    pub stop_above_us: u32,
    /// Device interrupts the VMM raises per second on every CPU
    /// (`--irq-load`; 0: none, and no handler threads).
    pub irq_rate_hz: u32,
    /// Work each device interrupt's handler does, in µs.
    pub irq_work_us: u32,
    /// Priority of the handler threads (threaded `irq` mode; 0: the
    /// default, [`defaults::IRQ_PRIO`]).
    pub irq_prio: u32,
    pub _reserved: u32,
}

const _: () = assert!(core::mem::size_of::<WorkloadRequest>() == 64);
