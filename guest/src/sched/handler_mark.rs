//! Handler-entry marks for timing interrupt delivery (`diag::costs`): while
//! a delivery is timed, the handlers that can end it (the timer's,
//! `sched::timer`, and the self-test vectors', `diag::selftest_ring3`)
//! store their entry TSC here. A leaf in the scheduler's layer, so that
//! the timer interrupt need not depend on the measurement, two layers up,
//! that reads it.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Entry TSC of the last handler that ran while [`MARKING`] was set.
static HANDLER_ENTRY_TSC: AtomicU64 = AtomicU64::new(0);
/// Set while a delivery time is measured.
static MARKING: AtomicBool = AtomicBool::new(false);

/// From a handler (the timer's, the test vectors'): its entry TSC, if a
/// delivery is being timed. One relaxed load otherwise.
#[inline]
pub fn mark_handler_entry(entry_tsc: u64) {
    if MARKING.load(Ordering::Relaxed) {
        HANDLER_ENTRY_TSC.store(entry_tsc, Ordering::Release);
    }
}

/// Starts timing a delivery: clears the last mark and lets handlers mark.
pub fn arm() {
    HANDLER_ENTRY_TSC.store(0, Ordering::Release);
    MARKING.store(true, Ordering::Release);
}

/// Stops letting handlers mark.
pub fn disarm() {
    MARKING.store(false, Ordering::Release);
}

/// The entry TSC of the marking handler; 0 while none has run.
pub fn entry_tsc() -> u64 {
    HANDLER_ENTRY_TSC.load(Ordering::Acquire)
}
