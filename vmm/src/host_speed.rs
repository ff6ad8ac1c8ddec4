//! The guest's speed compared with the host's, on the same calibration loop
//! (`switcher::calib`), run by the guest where its kernel runs (CPL3): how
//! the VMM tells the user whether the guest kernel's code runs natively or
//! is emulated (as guest ring 0 is on some nested hosts, which is why the
//! kernel runs deprivileged).

use std::time::Instant;

use switcher::calib::{
    CALIB_MAX_ITERATIONS, CALIB_START_ITERATIONS, CALIB_TARGET_NS, EMULATED_RING0_RATIO, spin_iterations,
};

/// Picoseconds per iteration of the calibration loop natively on the host
/// (best of three runs of a size that takes the target time).
pub fn host_ps_per_iteration() -> u64 {
    let mut iters = CALIB_START_ITERATIONS;
    loop {
        let t = Instant::now();
        spin_iterations(iters);
        if t.elapsed().as_nanos() as u64 >= CALIB_TARGET_NS || iters >= CALIB_MAX_ITERATIONS {
            break;
        }
        iters *= 2;
    }
    (0..3)
        .map(|_| {
            let t = Instant::now();
            spin_iterations(iters);
            (t.elapsed().as_nanos() * 1000 / u128::from(iters)) as u64
        })
        .min()
        .unwrap_or(0)
}

/// The speed line the VMM prints after boot.
pub fn describe(guest_ps: u64, host_ps: u64) -> String {
    let guest_ns = guest_ps as f64 / 1000.0;
    let host_ns = host_ps as f64 / 1000.0;
    if guest_ps == 0 || host_ps == 0 {
        return format!(
            "guest speed: {guest_ns:.2} ns per calibration iteration where the guest kernel runs (CPL3) (no comparison available)"
        );
    }
    let ratio = guest_ps as f64 / host_ps as f64;
    let verdict = if is_emulated(guest_ps, host_ps) {
        "the guest kernel's code is EMULATED on this host: it runs far slower than native, so absolute latencies are not representative of bare-metal KVM; compare ratios"
    } else {
        "the guest kernel runs natively"
    };
    format!(
        "guest speed: {guest_ns:.2} ns per calibration iteration where the guest kernel runs (CPL3), host native {host_ns:.2} ns ({ratio:.1}x): {verdict}"
    )
}

/// Whether the guest kernel's code is emulated, judged by the speed ratio.
pub fn is_emulated(guest_ps: u64, host_ps: u64) -> bool {
    host_ps > 0 && guest_ps / host_ps >= EMULATED_RING0_RATIO
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert!(is_emulated(2_000_000, 300));
        assert!(!is_emulated(350, 300));
        assert!(describe(2_000_000, 300).contains("EMULATED"));
        assert!(describe(350, 300).contains("natively"));
        assert!(describe(0, 300).contains("no comparison"));
    }

    #[test]
    fn host_measurement_is_positive() {
        assert!(host_ps_per_iteration() > 0);
    }
}
