//! SIGINT/SIGTERM: the handler only writes to an EventFd the control loop
//! polls (async-signal-safe), so shutdown runs on the control thread.

use std::sync::atomic::{AtomicI32, Ordering};

use vmm_sys_util::eventfd::EventFd;

static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let fd = SIGNAL_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; the fd is an eventfd that
        // lives for the whole process (leaked by `install`), and the buffer
        // is a local u64.
        unsafe { libc::write(fd, std::ptr::addr_of!(one).cast(), 8) };
    }
}

/// Routes SIGINT and SIGTERM to the returned EventFd.
pub fn install() -> std::io::Result<EventFd> {
    let evt = EventFd::new(libc::EFD_NONBLOCK)?;
    let for_handler = evt.try_clone()?;
    // The handler's copy lives as long as the process.
    let raw = std::os::fd::AsRawFd::as_raw_fd(&for_handler);
    std::mem::forget(for_handler);
    SIGNAL_FD.store(raw, Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        vmm_sys_util::signal::register_signal_handler(sig, on_signal)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    }
    Ok(evt)
}
