//! Boot-time speed calibration: how long one iteration of the shared
//! calibration loop (`switcher::calib`) takes where this kernel runs
//! (CPL3). The VMM compares it with the same loop run natively to tell
//! whether the kernel's code runs natively or is emulated.

use crate::arch::cpu;
use switcher::calib::{
    CALIB_MAX_ITERATIONS, CALIB_START_ITERATIONS, CALIB_TARGET_NS, ps_per_iteration, spin_iterations,
};

/// One calibration result.
#[derive(Clone, Copy, Debug)]
pub struct Calibration {
    pub iterations: u64,
    pub tsc_ticks: u64,
    pub ps_per_iter: u64,
}

/// Extra runs at the final size; the fastest counts (as the VMM's own
/// measurement: a run the host preempted is slower, never faster).
const BEST_OF: usize = 3;

/// Runs the loop with doubling iteration counts until one run takes at
/// least `CALIB_TARGET_NS` of TSC time (or the count reaches
/// `CALIB_MAX_ITERATIONS`), then [`BEST_OF`] more at that size, and keeps
/// the fastest. Call masked.
pub fn measure(tsc_khz: u64) -> Calibration {
    let target_ticks = CALIB_TARGET_NS.saturating_mul(tsc_khz) / 1_000_000;
    let run = |iterations: u64| {
        let start = cpu::rdtsc_ordered();
        spin_iterations(iterations);
        cpu::rdtsc_ordered().wrapping_sub(start)
    };
    let mut iterations = CALIB_START_ITERATIONS;
    let mut tsc_ticks = run(iterations);
    while tsc_ticks < target_ticks && iterations < CALIB_MAX_ITERATIONS {
        iterations = (iterations * 2).min(CALIB_MAX_ITERATIONS);
        tsc_ticks = run(iterations);
    }
    for _ in 0..BEST_OF {
        tsc_ticks = tsc_ticks.min(run(iterations));
    }
    Calibration { iterations, tsc_ticks, ps_per_iter: ps_per_iteration(iterations, tsc_ticks, tsc_khz) }
}
