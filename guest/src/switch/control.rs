//! The control thread: CPU 0's kernel thread that acts on the
//! VMM's requests: runtime mode switches (`modeswitch`) and shutdown. It
//! sleeps on a wait queue that the HOST_REQUEST interrupt wakes, so a
//! request is handled even while other threads keep CPU 0 busy (idle would
//! never run then). It is exempt from the freezer (it runs the switch) and
//! never takes a switchable lock.
//!
//! It runs at [`CONTROL_PRIO`], just below the measurement threads (which
//! nothing may keep from their CPU) and above everything else; workload
//! threads should stay below it (FIFO among equals: an equal-priority busy
//! thread would delay it).
//!
//! On shutdown it first stops the latency workload (`workload::shutdown`:
//! stop flag, bounded wait for its threads, per-CPU summary, the load's
//! final check), then exits.

use crate::hv::shutdown;
use crate::switch::modeswitch;
use crate::{println, sched};
use switcher::abi::EXIT_STATUS_OK;

/// Just below the measurement threads (`sched::MAX_PRIO`).
pub const CONTROL_PRIO: u8 = sched::MAX_PRIO - 1;

static REQUESTS: sched::WaitQueue = sched::WaitQueue::new("control");

/// Starts the control thread on CPU 0.
pub fn start() {
    sched::spawn("control", CONTROL_PRIO, 0, control_thread, 0);
}

/// From the HOST_REQUEST handler: wake the control thread.
pub fn on_host_request() {
    REQUESTS.wake_all();
}

fn control_thread(_: usize) {
    sched::freezer::exempt_current();
    loop {
        REQUESTS.wait_until(|| shutdown::requested() || modeswitch::pending());
        if shutdown::requested() {
            break;
        }
        modeswitch::run();
    }
    crate::workload::shutdown();
    report_spinning();
    shutdown()
}

/// How the rtmutex's adaptive spins ended, and what the host stole.
fn report_spinning() {
    let (took, off_cpu, preempted, budget) = crate::sync::rt::spin_stats();
    if took + off_cpu + preempted + budget > 0 {
        println!(
            "rtmutex adaptive spinning: {took} spins took the lock, {off_cpu} stopped (owner off its CPU or waiters \
             queued), {preempted} stopped (owner's vCPU preempted by the host), {budget} ran out of budget"
        );
    }
    if crate::arch::steal::enabled() {
        let cpus = crate::hv::boot_info::cpu_count() as usize;
        let total: u64 = (0..cpus).map(crate::arch::steal::steal_ns).sum();
        println!("steal time: {} ms stolen by the host over {cpus} vCPUs", total / 1_000_000);
    }
}

/// Prints "shutting down" and makes the exit hypercall with status 0.
pub fn shutdown() -> ! {
    println!("shutting down");
    crate::hv::hypercall::exit(EXIT_STATUS_OK)
}
