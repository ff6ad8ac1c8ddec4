//! Fault injection for the runtime-switch tests (guest arguments; off by
//! default).
//!
//! - `hold-lock=MS`: a task 'lock-hog' takes a `SpinLock` and keeps it for
//!   MS milliseconds, busy, never passing a safe point; then it lets go and
//!   exits. A switch requested meanwhile cannot quiesce: it must fail after
//!   its deadline, naming this task, and change nothing.

use crate::sched;
use crate::sync::spinlock::SpinLock;

static HOG_LOCK: SpinLock<u64> = SpinLock::new("fault.hog", 0);

/// Starts the lock hog on the last CPU (CPU 0 runs the control thread).
pub fn hold_lock(ms: u32) {
    let cpu = crate::boot_info::cpu_count().saturating_sub(1);
    crate::println!("fault injection: 'lock-hog' holds a lock for {ms} ms on cpu {cpu}");
    sched::spawn("lock-hog", 5, cpu, hog, ms as usize);
}

fn hog(ms: usize) {
    let mut g = HOG_LOCK.lock();
    let end = sched::now_tsc() + sched::us_to_tsc(ms as u64 * 1000);
    while sched::now_tsc() < end {
        *g += 1;
        core::hint::spin_loop();
    }
    drop(g);
    crate::println!("fault injection: 'lock-hog' released its lock");
}
