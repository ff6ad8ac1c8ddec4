//! SIGINT/SIGTERM. `rtswitch run`: the handler counts the signal and
//! writes to an EventFd the control loop polls (async-signal-safe), so
//! shutdown runs on the control thread ([`install`]). A second signal
//! ends the run at once: the loop, which reads the count ([`received`]),
//! stops the guest and reports; and in case the loop cannot (stuck in a
//! long computation, say), the second signal also arms a [`FORCED_EXIT`]
//! alarm whose handler removes the control socket ([`on_forced_exit`])
//! and ends the process with `ExitCode::ShutdownTimeout`, report or not.
//! The loop disarms it ([`disarm_forced_exit`]) once it has taken over.
//! vCPU threads block these signals, so they reach the control thread.
//! The tools that drive `rtswitch run`
//! children (`bench`, `stress`): the first signal only raises a flag they
//! poll ([`catch_interrupts`], [`interrupted`]): they stop the child they
//! run cleanly, print what they have and exit with
//! `ExitCode::Interrupted`; a second signal ends the tool at once (its
//! children, in their own process group, get SIGTERM from the kernel when
//! it dies: `child.rs`).

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicUsize, Ordering};

use vmm_sys_util::eventfd::EventFd;

use crate::exit_code::ExitCode;

static SIGNAL_FD: AtomicI32 = AtomicI32::new(-1);
/// SIGINT/SIGTERM received by `rtswitch run`.
static RECEIVED: AtomicU32 = AtomicU32::new(0);
/// What the forced exit runs first (a `fn()` as usize; 0: nothing).
static FORCED_EXIT_HOOK: AtomicUsize = AtomicUsize::new(0);

/// How long the control loop has, after a second signal, before the
/// process ends without it.
pub const FORCED_EXIT: libc::c_uint = 1;

extern "C" fn on_signal(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if RECEIVED.fetch_add(1, Ordering::Relaxed) >= 1 {
        // SAFETY: alarm(2) is async-signal-safe; SIGALRM's handler is
        // `on_alarm`, installed with this one.
        unsafe { libc::alarm(FORCED_EXIT) };
    }
    let fd = SIGNAL_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; the fd is an eventfd that
        // lives for the whole process (leaked by `install`), and the buffer
        // is a local u64.
        unsafe { libc::write(fd, std::ptr::addr_of!(one).cast(), 8) };
    }
}

extern "C" fn on_alarm(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let hook = FORCED_EXIT_HOOK.load(Ordering::Relaxed);
    if hook != 0 {
        // SAFETY: the value was stored from a `fn()` by `on_forced_exit`
        // (a function pointer round-trips through usize on this target).
        let f: fn() = unsafe { std::mem::transmute::<usize, fn()>(hook) };
        f();
    }
    let msg = b"rtswitch: second signal, and the control loop did not stop the run within 1 s: exiting now\n";
    // SAFETY: write(2) and _exit(2) are async-signal-safe; the buffer is static.
    unsafe {
        libc::write(libc::STDERR_FILENO, msg.as_ptr().cast(), msg.len());
        libc::_exit(i32::from(ExitCode::ShutdownTimeout.code()));
    }
}

/// SIGINT/SIGTERM seen so far by `rtswitch run` ([`install`]).
pub fn received() -> u32 {
    RECEIVED.load(Ordering::Relaxed)
}

/// `f` runs (in a signal handler: async-signal-safe calls only) before a
/// forced exit ends the process.
pub fn on_forced_exit(f: fn()) {
    FORCED_EXIT_HOOK.store(f as usize, Ordering::Relaxed);
}

/// The loop took over after a second signal: no forced exit.
pub fn disarm_forced_exit() {
    // SAFETY: alarm(0) only cancels this process's pending alarm.
    unsafe { libc::alarm(0) };
}

/// Routes SIGINT and SIGTERM to the returned EventFd (and a second one
/// to the forced exit: the module comment).
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
    vmm_sys_util::signal::register_signal_handler(libc::SIGALRM, on_alarm)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
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
