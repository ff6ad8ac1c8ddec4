//! The calibration loop: one fixed instruction sequence, run by the guest
//! where its kernel runs (CPL3) at boot and by the VMM natively on the
//! host, so that the two figures compare the same work.
//!
//! The loop is two instructions per iteration (`dec`, `jnz`), written in
//! assembly so that no compiler can change its shape.

/// Iteration counts the guest tries, doubling, until one run takes at least
/// [`CALIB_TARGET_NS`]; never more than [`CALIB_MAX_ITERATIONS`].
pub const CALIB_START_ITERATIONS: u64 = 256;
pub const CALIB_MAX_ITERATIONS: u64 = 1 << 26;
pub const CALIB_TARGET_NS: u64 = 250_000;

/// A guest this many times slower than the host on the same loop runs its
/// kernel's code in an emulator (as nested KVM does with guest ring 0 on
/// some hosts).
pub const EMULATED_RING0_RATIO: u64 = 20;

/// Runs the calibration loop `iterations` times (at least once).
#[inline(never)]
pub fn spin_iterations(iterations: u64) {
    let n = iterations.max(1);
    // SAFETY: the loop only decrements a register it owns; it touches no
    // memory and no flags the compiler relies on across the asm block.
    unsafe {
        core::arch::asm!(
            "2:",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) n => _,
            options(nomem, nostack),
        );
    }
}

/// Picoseconds per iteration from a measured run.
pub fn ps_per_iteration(iterations: u64, elapsed_ticks: u64, tsc_khz: u64) -> u64 {
    if iterations == 0 || tsc_khz == 0 {
        return 0;
    }
    // ticks / (kHz) = ms; ps = ticks * 1e9 / kHz
    let ps = (elapsed_ticks as u128) * 1_000_000_000u128 / (tsc_khz as u128);
    (ps / iterations as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ps_per_iteration_math() {
        // 1 GHz TSC: 1 tick = 1 ns; 1000 ticks over 100 iterations = 10 ns.
        assert_eq!(ps_per_iteration(100, 1000, 1_000_000), 10_000);
        assert_eq!(ps_per_iteration(0, 1000, 1_000_000), 0);
        assert_eq!(ps_per_iteration(10, 1000, 0), 0);
    }

    #[test]
    fn loop_runs() {
        spin_iterations(0);
        spin_iterations(1000);
    }
}
