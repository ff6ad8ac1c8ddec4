//! The resource limits `rtswitch run` puts on itself with its sandbox
//! (docs/threat-model.md, "Sandbox"): a compromised VMM can open no more descriptors
//! than a full control socket needs, write no file larger than
//! [`MAX_FILE_BYTES`], and leave no core dump (which would hold guest
//! memory). Set once, soft and hard alike, so they cannot be raised again.

use std::io;

use crate::api::server::MAX_CLIENTS;

/// The largest file the VMM may write (reports; a `--serial` file is
/// bounded by `--console-limit` first).
pub const MAX_FILE_BYTES: u64 = 4 << 30;
/// Descriptors the VMM may still open after the sandbox goes in besides
/// its clients: the loop's timers, eventfds and epoll (a dozen), and room.
const LATER_FDS: u64 = 64;

fn set(resource: libc::__rlimit_resource_t, value: u64) -> io::Result<()> {
    let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
    // SAFETY: setrlimit(2) reads the local struct.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The highest descriptor open now (from /proc/self/fd).
fn highest_fd() -> io::Result<u64> {
    let mut max = 2;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        if let Some(n) = entry?.file_name().to_str().and_then(|s| s.parse::<u64>().ok()) {
            max = max.max(n);
        }
    }
    Ok(max)
}

/// The descriptor limit for a VMM whose highest fd is now `highest`.
pub fn nofile_for(highest: u64) -> u64 {
    highest + 1 + MAX_CLIENTS as u64 + 1 + LATER_FDS
}

/// Applies the limits (never raising one already lower).
pub fn apply() -> io::Result<()> {
    let lower = |resource, want: u64| -> io::Result<()> {
        let mut cur = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit(2) fills the local struct.
        if unsafe { libc::getrlimit(resource, &mut cur) } != 0 {
            return Err(io::Error::last_os_error());
        }
        set(resource, want.min(cur.rlim_max))
    };
    lower(libc::RLIMIT_NOFILE, nofile_for(highest_fd()?))?;
    // A write past the limit then fails with EFBIG instead of killing the
    // process with SIGXFSZ.
    // SAFETY: ignoring a signal installs no handler.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
    lower(libc::RLIMIT_FSIZE, MAX_FILE_BYTES)?;
    lower(libc::RLIMIT_CORE, 0)?;
    Ok(())
}
