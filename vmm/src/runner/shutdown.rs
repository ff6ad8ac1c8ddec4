//! The host's side of ending a run: SIGINT/SIGTERM, the `--duration`
//! timer and the shutdown grace period, and [`Shutdown::request`], the
//! one way to ask the guest to shut down (signals and the duration here;
//! `quit` on the control socket and `--stop-above` call it through the
//! [`ShutdownHandle`]).
//!
//! A request posts `host_request = SHUTDOWN` in the boot info page,
//! interrupts CPU 0 and arms the grace timer; when that fires the run ends
//! as a shutdown timeout. A second signal ends the run at once.

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use event_manager::{EventOps, Events, MutEventSubscriber};
use switcher::abi::{self, BootInfo};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

use super::error::RunError;
use super::fds::timer;
use super::lifecycle::{Outcome, ShutdownAsk, State};
use super::shared::Shared;
use crate::api::protocol::ShutdownCause;
use crate::vstate::memory;

/// The shutdown subscriber, as other subscribers call it.
pub type ShutdownHandle = Rc<RefCell<Shutdown>>;

pub struct Shutdown {
    run: Shared,
    signal: EventFd,
    duration: Option<TimerFd>,
    /// `--duration`.
    duration_period: Option<Duration>,
    grace: TimerFd,
    grace_period: Duration,
}

impl Shutdown {
    /// `signal`: the SIGINT/SIGTERM EventFd; `duration`: `--duration`;
    /// `grace_period`: `--shutdown-timeout`; `paused`: the duration
    /// counts from [`Shutdown::launched`], not from now.
    pub fn new(
        run: &Shared,
        signal: EventFd,
        duration: Option<Duration>,
        grace_period: Duration,
        paused: bool,
    ) -> Result<ShutdownHandle, RunError> {
        let armed = duration.filter(|_| !paused);
        let timer_fd = duration.map(|_| timer(armed, None)).transpose()?;
        let grace = timer(None, None)?;
        Ok(Rc::new(RefCell::new(Self {
            run: run.clone(),
            signal,
            duration: timer_fd,
            duration_period: duration,
            grace,
            grace_period,
        })))
    }

    /// `cont` launched a `--paused` run: `--duration` starts counting.
    pub fn launched(&mut self) {
        if let (Some(t), Some(d)) = (self.duration.as_mut(), self.duration_period)
            && let Err(e) = t.reset(d, None)
        {
            log::error!("cannot arm the --duration timer: {e}; the run lasts until it is stopped");
        }
    }

    /// Asks the guest to shut down (idempotent) and arms the grace timer.
    pub fn request(&mut self, cause: ShutdownCause, reason: String) {
        let ask = ShutdownAsk { cause, reason: reason.clone() };
        let prelaunch = self.run.state() == State::Prelaunch;
        if !self.run.life.borrow_mut().ask_shutdown(ask) {
            return;
        }
        if prelaunch {
            // Nothing runs to be asked: the held vCPUs end with the run.
            self.run.say(&format!("{reason}: the guest was never started; stopping"));
            self.run.end(Outcome::NeverStarted);
            return;
        }
        self.run.say(&format!("{reason}: asking the guest to shut down"));
        let field = abi::BOOT_INFO_ADDR + std::mem::offset_of!(BootInfo, host_request) as u64;
        if let Err(e) = memory::write_u32(&self.run.mem, field, abi::host_request::SHUTDOWN) {
            log::error!("cannot post the shutdown request: {e}");
        }
        send_shutdown_interrupt(&self.run);
        if let Err(e) = self.grace.reset(self.grace_period, None) {
            log::error!("cannot arm the shutdown grace timer: {e}; stopping now");
            self.run.end(Outcome::ShutdownTimeout);
        }
    }
}

/// Interrupts the guest about the shutdown request.
pub(super) fn send_shutdown_interrupt(run: &Shared) {
    if let Err(e) = run.interrupt_guest() {
        log::error!("cannot interrupt the guest with the shutdown request: {e}");
    }
}

impl MutEventSubscriber for Shutdown {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.signal.as_raw_fd() {
            let _ = self.signal.read();
            // The handler's count, not the eventfd's: two signals before
            // this turn are two.
            if crate::signals::received() >= 2 || self.run.life.borrow().shutdown().is_some() {
                crate::signals::disarm_forced_exit();
                self.run.say("second signal: stopping the guest now");
                self.run.end(Outcome::Forced);
            } else {
                self.request(ShutdownCause::HostSignal, "signal received".into());
            }
        } else if fd == self.grace.as_raw_fd() {
            let _ = self.grace.wait();
            self.run.end(Outcome::ShutdownTimeout);
        } else if let Some(t) = self.duration.as_mut().filter(|t| t.as_raw_fd() == fd) {
            let _ = t.wait();
            let secs = self.run.launched.get().elapsed().as_secs_f64();
            self.request(ShutdownCause::HostDuration, format!("--duration reached after {secs:.3} s"));
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let fds = [
            Some(self.signal.as_raw_fd()),
            Some(self.grace.as_raw_fd()),
            self.duration.as_ref().map(|t| t.as_raw_fd()),
        ];
        super::fds::watch_all(ops, fds.into_iter().flatten());
    }
}
