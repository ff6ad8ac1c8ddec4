//! The workload's parameters: the VMM's request (`BootInfo::workload`,
//! 0 = "default") resolved against this host's speed.
//!
//! Invariants: explicit values always win; a default is scaled only when
//! the boot calibration shows emulated ring 0 (`ps_per_iter` above
//! [`EMULATED_PS_PER_ITER`]), and `scaled` says so. The resolved values
//! are what the telemetry header publishes and the threads use.
//!
//! Defaults:
//! - real KVM (ring 0 native): interval 1000 µs, critical section 100 µs,
//!   2 load threads per CPU (cyclictest's customary `-i 1000`; a 100 µs
//!   section is a long but plausible spinlock hold);
//! - emulated ring 0 (~1 µs per instruction, ~5 µs per rdtsc, ~170 µs per
//!   context switch): one activation of the measurement path costs on the
//!   order of a millisecond here, so the period and the section are
//!   scaled by the same factor to keep their ratio and leave the guest
//!   time to keep up: see [`SCALED_INTERVAL_US`] and [`SCALED_CS_US`].

use switcher::telemetry::{LoadKind, WorkloadRequest};

/// `ps_per_iter` above which ring 0 counts as emulated: no real CPU needs
/// 10 ns for one iteration of the calibration loop (a dec/jnz).
pub const EMULATED_PS_PER_ITER: u64 = 10_000;

pub const DEFAULT_INTERVAL_US: u32 = 1000;
pub const DEFAULT_CS_US: u32 = 100;
pub const DEFAULT_LOAD_THREADS: u32 = 2;
/// Scaled defaults where ring 0 is emulated (measured on such a host:
/// the measurement path costs ~1 ms per activation, a timer IRQ aimed at a
/// busy vCPU arrives up to a few ms late; a 10 ms period keeps the guest
/// ahead of its deadlines with no load, and a 5 ms section stands far
/// above that noise in mainline mode).
pub const SCALED_INTERVAL_US: u32 = 10_000;
pub const SCALED_CS_US: u32 = 5_000;

/// The workload as it runs.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    pub enabled: bool,
    pub interval_us: u32,
    pub cs_us: u32,
    pub load: LoadKind,
    pub load_threads: u32,
    /// Some default was scaled because ring 0 is emulated.
    pub scaled: bool,
    /// Load threads per CPU were cut to fit the task table.
    pub threads_clamped: bool,
}

/// Task slots kept free for everything but the workload (control thread,
/// self-tests, demos).
const RESERVED_TASKS: usize = 8;

impl Params {
    /// Resolves `req` for a guest of `cpus` CPUs whose calibration loop
    /// takes `ps_per_iter`. An unknown load kind runs no load (and says
    /// so); load threads are cut to what the task table holds beside one
    /// measurement thread per CPU.
    pub fn resolve(req: &WorkloadRequest, ps_per_iter: u64, cpus: u32) -> Self {
        let emulated = ps_per_iter > EMULATED_PS_PER_ITER;
        let (interval_default, cs_default) =
            if emulated { (SCALED_INTERVAL_US, SCALED_CS_US) } else { (DEFAULT_INTERVAL_US, DEFAULT_CS_US) };
        let pick = |v: u32, d: u32| if v != 0 { v } else { d };
        let load = LoadKind::from_u32(req.load).unwrap_or_else(|| {
            crate::println!("workload: unknown load kind {}: running no load", req.load);
            LoadKind::None
        });
        let cpus = cpus.max(1) as usize;
        let fit = (crate::sched::MAX_TASKS.saturating_sub(RESERVED_TASKS + cpus) / cpus) as u32;
        let wanted = if load == LoadKind::None { 0 } else { pick(req.load_threads, DEFAULT_LOAD_THREADS) };
        Self {
            enabled: req.enabled != 0,
            interval_us: pick(req.interval_us, interval_default),
            cs_us: pick(req.cs_us, cs_default),
            load,
            load_threads: wanted.min(fit),
            scaled: emulated && (req.interval_us == 0 || req.cs_us == 0),
            threads_clamped: wanted > fit,
        }
    }

    /// Prints the one line that says what runs.
    pub fn print(&self) {
        let why = if self.scaled { " (defaults scaled: ring 0 emulated)" } else { "" };
        let cut = if self.threads_clamped { " (load threads cut to fit the task table)" } else { "" };
        crate::println!(
            "workload: load {}, {} threads/cpu, interval {} us, cs {} us{}{}",
            self.load.name(),
            self.load_threads,
            self.interval_us,
            self.cs_us,
            why,
            cut
        );
    }
}
