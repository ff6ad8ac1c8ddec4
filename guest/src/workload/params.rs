//! The workload's parameters: the VMM's request (`BootInfo::workload`,
//! 0 = "default") resolved to what runs. Explicit values always win; the
//! resolved values are what the telemetry header publishes and the
//! threads use.
//!
//! Defaults, cyclictest-like:
//! - interval 1000 µs: cyclictest's customary `-i 1000`;
//! - critical section 500 µs: long enough that mainline's effect (a
//!   measurement thread waiting out a section held with preemption off)
//!   stands plainly above the latency floor, which is tens of µs on
//!   ordinary KVM and a few hundred µs at p99 where every exit to the
//!   hypervisor is slow (the VMM prints the guest's speed); and no longer
//!   than half the period, so that the measurement keeps its period
//!   between sections;
//! - 2 load threads per CPU (one's gap is the other's section: a CPU is in
//!   a critical section nearly all the time).
//!
//! The guest kernel runs at CPL3, where it runs natively even on hosts
//! that emulate guest ring 0, so nothing is scaled for the host's speed
//! (this kernel once ran in ring 0 and scaled its defaults 10x there).

use switcher::telemetry::{LoadKind, WorkloadRequest, defaults};

pub const DEFAULT_INTERVAL_US: u32 = defaults::INTERVAL_US;
pub const DEFAULT_CS_US: u32 = defaults::CS_US;
pub const DEFAULT_LOAD_THREADS: u32 = defaults::LOAD_THREADS;
/// The workload as it runs.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub enabled: bool,
    pub interval_us: u32,
    pub cs_us: u32,
    pub load: LoadKind,
    pub load_threads: u32,
    /// Load threads per CPU were cut to fit the task table.
    pub threads_clamped: bool,
    /// Priority of the measurement threads (1..=99).
    pub measure_prio: u8,
    /// CPUs that measure, CPUs that carry load (bit n = CPU n; only
    /// online CPUs' bits are set).
    pub measure_cpus: u64,
    pub load_cpus: u64,
    /// Histogram bucket width in µs (>= 1).
    pub bucket_us: u32,
    /// `--stop-above` threshold in µs (0: off).
    pub stop_above_us: u32,
    /// Device interrupts per second per CPU (0: none, no handler threads),
    /// each handler's work, and the handler threads' priority.
    pub irq_rate_hz: u32,
    pub irq_work_us: u32,
    pub irq_prio: u8,
}

/// Task slots kept free for everything but the workload (control thread,
/// self-tests, demos).
const RESERVED_TASKS: usize = 8;

impl Params {
    /// Resolves `req` for a guest of `cpus` CPUs. An unknown load kind
    /// runs no load (and says so); load threads are cut to what the task
    /// table holds beside one measurement thread per CPU.
    pub fn resolve(req: &WorkloadRequest, cpus: u32) -> Self {
        let pick = |v: u32, d: u32| if v != 0 { v } else { d };
        let load = LoadKind::from_u32(req.load).unwrap_or_else(|| {
            crate::println!("workload: unknown load kind {}: running no load", req.load);
            LoadKind::None
        });
        let cpus = cpus.max(1) as usize;
        let online = if cpus >= 64 { u64::MAX } else { (1u64 << cpus) - 1 };
        let set = |mask: u64| if mask == 0 { online } else { mask & online };
        let (measure_cpus, load_cpus) = (set(req.measure_cpus), set(req.load_cpus));
        let loaded = load_cpus.count_ones().max(1) as usize;
        let fit = (crate::sched::MAX_TASKS.saturating_sub(RESERVED_TASKS + cpus) / loaded) as u32;
        let wanted = if load == LoadKind::None { 0 } else { pick(req.load_threads, DEFAULT_LOAD_THREADS) };
        let max_prio = u32::from(crate::sched::MAX_PRIO);
        Self {
            measure_prio: pick(req.measure_prio, defaults::MEASURE_PRIO).clamp(1, max_prio) as u8,
            measure_cpus,
            load_cpus,
            bucket_us: pick(req.bucket_us, defaults::BUCKET_US),
            stop_above_us: req.stop_above_us,
            irq_rate_hz: req.irq_rate_hz,
            irq_work_us: pick(req.irq_work_us, defaults::IRQ_WORK_US),
            irq_prio: pick(req.irq_prio, defaults::IRQ_PRIO).clamp(1, max_prio) as u8,
            enabled: req.enabled != 0,
            interval_us: pick(req.interval_us, DEFAULT_INTERVAL_US),
            cs_us: pick(req.cs_us, DEFAULT_CS_US),
            load,
            load_threads: wanted.min(fit),
            threads_clamped: wanted > fit,
        }
    }

    /// Prints the one line that says what runs.
    pub fn print(&self) {
        let cut = if self.threads_clamped { " (load threads cut to fit the task table)" } else { "" };
        crate::println!(
            "workload: load {}, {} threads/cpu, interval {} us, cs {} us, measurement prio {}{}",
            self.load.name(),
            self.load_threads,
            self.interval_us,
            self.cs_us,
            self.measure_prio,
            cut
        );
        if self.irq_rate_hz != 0 {
            crate::println!(
                "workload: device interrupts {} Hz per cpu, {} us of work each, handler threads at prio {}",
                self.irq_rate_hz,
                self.irq_work_us,
                self.irq_prio
            );
        }
        let all = self.measure_cpus & self.load_cpus == self.measure_cpus && self.measure_cpus == self.load_cpus;
        if !all || self.measure_cpus.count_ones() < crate::hv::boot_info::cpu_count() {
            crate::println!("workload: measuring cpus {:#x}, load on cpus {:#x}", self.measure_cpus, self.load_cpus);
        }
    }
}
