//! SIGINT/SIGTERM. `rtswitch run`: the handler only writes to an EventFd
//! the control loop polls (async-signal-safe), so shutdown runs on the
//! control thread ([`install`]). The tools that drive `rtswitch run`
//! children (`bench`, `stress`): the first signal only raises a flag they
//! poll ([`catch_interrupts`], [`interrupted`]): they stop the child they
//! run cleanly, print what they have and exit with
//! `ExitCode::Interrupted`; a second signal ends the tool at once (its
//! children, in their own process group, get SIGTERM from the kernel when
//! it dies: `child.rs`).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};

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

/// SIGINT/SIGTERM seen by a tool (bench, stress).
static INTERRUPTS: AtomicU32 = AtomicU32::new(0);
/// [`catch_interrupts`] ran: children go in their own process group.
static CATCHING: AtomicBool = AtomicBool::new(false);

/// The exit status of a tool stopped by a second signal (128 + SIGINT, the
/// shell's convention).
pub const SECOND_INTERRUPT_STATUS: i32 = 128 + libc::SIGINT;

extern "C" fn on_interrupt(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if INTERRUPTS.fetch_add(1, Ordering::Relaxed) >= 1 {
        // SAFETY: _exit(2) is async-signal-safe; a second signal stops the
        // tool at once, as its first one's message says.
        unsafe { libc::_exit(SECOND_INTERRUPT_STATUS) };
    }
}

/// For the tools: the first SIGINT or SIGTERM only raises the flag that
/// [`interrupted`] reads, the second ends the process (status 130).
pub fn catch_interrupts() -> std::io::Result<()> {
    CATCHING.store(true, Ordering::Relaxed);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        vmm_sys_util::signal::register_signal_handler(sig, on_interrupt)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
    }
    Ok(())
}

/// Whether a tool that called [`catch_interrupts`] was asked to stop.
pub fn interrupted() -> bool {
    INTERRUPTS.load(Ordering::Relaxed) > 0
}

/// Whether this process catches interrupts for its children
/// ([`catch_interrupts`]): then a terminal's Ctrl-C reaches the tool
/// only, which stops its child itself.
pub fn catching_interrupts() -> bool {
    CATCHING.load(Ordering::Relaxed)
}
