//! Real-time scheduling for the VMM's own threads: the calling thread to
//! SCHED_FIFO at a priority, where the host allows it (root, or
//! CAP_SYS_NICE). Used by the host-noise probe (`host_noise::probe`) and
//! the control thread (`--control-fifo`), each from its own thread before
//! it enters its seccomp filter; threads it starts later would inherit
//! the policy, so each sets it once every thread it owns has started.

/// The calling thread to SCHED_FIFO at `priority` (1..=99). An error
/// (EPERM without the privilege) leaves it as it was.
pub fn fifo(priority: i32) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: priority };
    // SAFETY: sched_setscheduler(2) reads one sched_param we own; 0 names
    // the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
