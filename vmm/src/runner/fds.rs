//! Plumbing every subscriber uses: its timers, and the watch on its fds.

use std::os::fd::RawFd;
use std::time::Duration;

use event_manager::{EventOps, EventSet, Events};
use vmm_sys_util::timerfd::TimerFd;

use super::error::RunError;

/// A timer: first after `after` (`None`: disarmed), then every `period`.
pub fn timer(after: Option<Duration>, period: Option<Duration>) -> Result<TimerFd, RunError> {
    let mut t = TimerFd::new().map_err(|e| RunError::Host("timerfd", e.into()))?;
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
