//! Plumbing every subscriber uses: its timers, and the watch on its fds.

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use event_manager::{EventOps, EventSet, Events};
use vmm_sys_util::timerfd::TimerFd;

use super::error::RunError;

/// A timer: first after `after` (`None`: disarmed), then every `period`.
pub fn timer(after: Option<Duration>, period: Option<Duration>) -> Result<TimerFd, RunError> {
    let mut t = TimerFd::new().map_err(|e| RunError::Host("timerfd", e.into()))?;
    // Non-blocking: the loop reads a timer when epoll says it expired, but
    // a timer disarmed or re-armed after that report (in the same turn of
    // the loop) has nothing to read any more, and a blocking read would
    // stop the control thread until it next expires, or for ever.
    // SAFETY: fcntl(2) on a descriptor we own; no memory is passed.
    if unsafe { libc::fcntl(t.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) } < 0 {
        return Err(RunError::Host("timerfd", std::io::Error::last_os_error()));
    }
    if let Some(after) = after {
        t.reset(after, period).map_err(|e| RunError::Host("timerfd", e.into()))?;
    }
    Ok(t)
}

/// Watches `fds` for input (a subscriber's `init`).
pub fn watch_all(ops: &mut EventOps, fds: impl IntoIterator<Item = RawFd>) {
    for fd in fds {
        if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
            log::error!("cannot watch fd {fd}: {e:?}");
        }
    }
}
