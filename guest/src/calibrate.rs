//! Boot-time speed calibration: how long one iteration of the shared
//! calibration loop (`switcher::calib`) takes in this kernel's ring 0.
//! The VMM compares it with the same loop run natively to tell whether
//! ring 0 is emulated (see DESIGN.md, "This host").

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

/// Runs the loop with doubling iteration counts until one run takes at
/// least `CALIB_TARGET_NS` of TSC time (or the count reaches
/// `CALIB_MAX_ITERATIONS`). Call with interrupts off.
pub fn measure(tsc_khz: u64) -> Calibration {
    let target_ticks = CALIB_TARGET_NS.saturating_mul(tsc_khz) / 1_000_000;
    let mut iterations = CALIB_START_ITERATIONS;
    loop {
        let start = cpu::rdtsc_ordered();
        spin_iterations(iterations);
        let tsc_ticks = cpu::rdtsc_ordered().wrapping_sub(start);
        if tsc_ticks >= target_ticks || iterations >= CALIB_MAX_ITERATIONS {
            return Calibration {
                iterations,
                tsc_ticks,
                ps_per_iter: ps_per_iteration(iterations, tsc_ticks, tsc_khz),
            };
        }
        iterations = (iterations * 2).min(CALIB_MAX_ITERATIONS);
    }
}
