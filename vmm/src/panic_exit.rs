//! What a panic of `rtswitch run` does: one line on stderr, written with
//! write(2), and the exit at once with [`ExitCode::VmmPanic`] (101, Rust's
//! own status for a panic).
//!
//! The default hook is no use under the sandbox: printing a backtrace
//! opens files and calls `getcwd`, which the control thread's filter
//! forbids, so a panic ended as a seccomp violation (exit code 10) that
//! named the wrong cause; and a panic on a vCPU thread would only end that
//! thread while the run went on without it. A VMM that panicked is broken:
//! the process stops, with the panic's message and place.

use crate::exit_code::ExitCode;

/// Installs the hook (once the command is known to be `run`).
pub fn install() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let line = format!(
            "rtswitch: internal error: thread {} panicked: {info}; the VMM stops (exit code {}). This is a bug: \
             please report it with the command line\n",
            thread.name().unwrap_or("?"),
            ExitCode::VmmPanic.code()
        );
        write_stderr(line.as_bytes());
        // SAFETY: _exit(2) ends the process at once (no unwinding, no
        // atexit handlers that might make other system calls).
        unsafe { libc::_exit(i32::from(ExitCode::VmmPanic.code())) };
    }));
}

/// Writes all of `bytes` to stderr with write(2), ignoring errors (a
/// closed stderr must not turn a panic into another).
fn write_stderr(mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: write(2) from a live slice.
        let n = unsafe { libc::write(libc::STDERR_FILENO, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}
