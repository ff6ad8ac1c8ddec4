//! Runtime mode switches as the control loop runs them: the switch
//! [`Coordinator`], the deadline timer of the switch in progress, and the
//! `--switch-every` timer. The control socket (`set-mode`,
//! `x-cancel-switch`, the queries) and the vCPU events (HC_SWITCH) call in
//! through the [`SwitchHandle`]; a switch that ends is posted to the
//! control socket's mailbox (its reply and event), or, without a control
//! socket, followed by the telemetry read here. That read (every epoch's
//! histograms, about a millisecond of the control thread) comes
//! [`HARVEST_AFTER`] later, from a timer, not at once: a client waiting
//! for the switch's reply gets a CPU first on a small host.
//!
//! The lifecycle follows the coordinator: `Ready -> Switching` when it
//! accepts a request, back when the switch ends (`ShuttingDown` stays).

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use event_manager::{EventOps, Events, MutEventSubscriber};
use switcher::profile::Profile;
use switcher::telemetry::WorkloadRequest;
use vmm_sys_util::timerfd::TimerFd;

use super::error::RunError;
use super::fds::timer;
use super::lifecycle::State;
use super::mailbox::Sender;
use super::pacing;
use super::shared::Shared;
use crate::switch::{Cancel, Coordinator, Finished, Origin, Requested, Step, SwitchError, SwitchRecord, VmAccess};

/// The switch subscriber, as other subscribers call it.
pub type SwitchHandle = Rc<RefCell<Switching>>;

/// `--switch-every PERIOD` with `--switch-to PROFILE`.
pub struct SwitchEvery {
    pub period: Duration,
    pub to: Profile,
}

/// `--switch-every`: its timer, period and ticks, and the two profiles it
/// toggles between (the boot profile, `--switch-to`).
struct Every {
    timer: TimerFd,
    period: Duration,
    ticks: pacing::Ticks,
    profiles: (Profile, Profile),
}

/// How long after a switch ends the telemetry is read.
pub const HARVEST_AFTER: Duration = Duration::from_millis(2);

pub struct Switching {
    run: Shared,
    coordinator: Coordinator,
    /// Deadline of the switch in progress.
    deadline: TimerFd,
    /// The telemetry read that follows a switch ([`HARVEST_AFTER`]), and
    /// whether it is armed (a switch that ends before it fires is read
    /// with it).
    harvest: TimerFd,
    harvest_armed: bool,
    every: Option<Every>,
    /// Where an ended switch is reported (the control socket).
    ends: Option<Sender<Finished>>,
}

/// What the switch coordinator reaches of the VM (`kick_all` kicks every
/// vCPU of `run`).
fn vm_access<'a>(run: &'a Shared, kick_all: &'a dyn Fn()) -> VmAccess<'a> {
    VmAccess {
        mem: &run.mem,
        code: run.code.as_ref().map_err(String::as_str),
        gate: &run.gate,
        kick_all,
        all_vcpus_mask: run.all_vcpus_mask(),
    }
}

impl Switching {
    /// `every`: `--switch-every`, checked against the `workload` (a start
    /// warning when it is below what a switch takes).
    pub fn new(
        run: &Shared,
        coordinator: Coordinator,
        every: Option<SwitchEvery>,
        workload: &WorkloadRequest,
    ) -> Result<SwitchHandle, RunError> {
        let every = match every {
            Some(SwitchEvery { period, to }) => {
                if let Some(w) = pacing::start_warning(period, workload) {
                    run.console.report(&format!("rtswitch: {w}"));
                }
                Some(Every {
                    timer: timer(Some(period), Some(period))?,
                    period,
                    ticks: pacing::Ticks::default(),
                    profiles: (coordinator.mode(), to),
                })
            }
            None => None,
        };
        let deadline = timer(None, None)?;
        let harvest = timer(None, None)?;
        Ok(Rc::new(RefCell::new(Self {
            run: run.clone(),
            coordinator,
            deadline,
            harvest,
            harvest_armed: false,
            every,
            ends: None,
        })))
    }

    /// Reports every switch that ends to `to` from now on.
    pub fn report_ends_to(&mut self, to: Sender<Finished>) {
        self.ends = Some(to);
    }

    /// The coordinator, to read (mode, switch in progress, sites, history).
    pub fn coordinator(&self) -> &Coordinator {
        &self.coordinator
    }

    /// The telemetry read a switch that ended armed, now.
    fn harvest_now(&mut self) {
        if std::mem::replace(&mut self.harvest_armed, false) {
            let _ = self.harvest.clear();
            self.run.harvest();
        }
    }

    /// Starts a switch (socket or timer). `Ok(None)`: already in `target`.
    pub fn request(&mut self, target: Profile, origin: Origin) -> Result<Option<u64>, SwitchError> {
        self.harvest_now();
        match self.run.state() {
            State::ShuttingDown | State::Exited => return Err(SwitchError::ShuttingDown),
            State::Prelaunch => return Err(SwitchError::NotStarted),
            State::Booting => return Err(SwitchError::Booting),
            State::Ready | State::Switching => {}
        }
        let run = self.run.clone();
        let kick_all = || run.kick_all();
        let mut access = vm_access(&run, &kick_all);
        match self.coordinator.request_with(target, origin, &mut access)? {
            Requested::Unchanged => Ok(None),
            Requested::Started(seq) => {
                log::info!("switch #{seq} to {} requested", target.name());
                self.run.life.borrow_mut().switch_started();
                self.notify_guest();
                self.arm_deadline();
                Ok(Some(seq))
            }
            Requested::Finished(f) => {
                let seq = f.record.seq;
                self.run.life.borrow_mut().switch_started();
                // The guest is told after the client's reply
                // (`after_fast_switch`).
                self.finished(f);
                Ok(Some(seq))
            }
        }
    }

    /// `x-cancel-switch`: cancels the switch in progress if it is still
    /// freezing; the caller replies, then hands the step to [`Self::step`].
    pub fn cancel(&mut self) -> Cancel {
        self.coordinator.cancel(&self.run.mem)
    }

    /// HC_SWITCH from the guest.
    pub fn on_guest_notify(&mut self) {
        let run = &self.run;
        let kick_all = || run.kick_all();
        let mut access = vm_access(run, &kick_all);
        let step = self.coordinator.on_guest_notify(&mut access);
        self.step(step);
    }

    /// Does what the coordinator asked for.
    pub fn step(&mut self, step: Step) {
        match step {
            Step::Wait => {}
            Step::Notify => {
                self.notify_guest();
                self.arm_deadline();
            }
            Step::Finished(f) => self.finished(f),
        }
    }

    /// What the end report says about the switches: their summary, and
    /// the `--switch-every` warning when ticks were skipped.
    pub fn end_lines(&self) -> Vec<String> {
        let history = self.coordinator.history();
        let mut lines: Vec<String> = crate::switch::summary(history).into_iter().collect();
        if let Some(e) = &self.every {
            lines.extend(e.ticks.end_warning(e.period, history));
        }
        lines
    }

    /// Interrupts CPU 0 about the mailbox, and kicks vCPU 0 so that the
    /// interrupt is taken now even if it is busy in emulated ring 0.
    fn notify_guest(&self) {
        if let Err(e) = self.run.interrupt_guest() {
            log::error!("cannot interrupt the guest about the switch: {e}");
        }
        self.run.kick_first();
    }

    fn arm_deadline(&mut self) {
        if let Some(deadline) = self.coordinator.deadline() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if let Err(e) = self.deadline.reset(left.max(Duration::from_micros(100)), None) {
                log::error!("cannot arm the switch deadline: {e}");
            }
        }
    }

    fn finished(&mut self, f: Finished) {
        let _ = self.deadline.clear();
        let line = switch_line(&f.record);
        if f.record.ok {
            log::info!("{line}");
        } else {
            self.run.say(&line);
        }
        self.run.life.borrow_mut().switch_ended();
        match &self.ends {
            // It replies, then reads the telemetry (below).
            Some(to) => to.post(f),
            None => {
                if f.record.path.fast {
                    self.after_fast_switch();
                }
                self.after_switch();
            }
        }
    }

    /// After a switch in one blackout has been answered: interrupts the
    /// guest, whose control thread then finds the completed switch and
    /// opens the new mode's epochs (it owes no acknowledgement). After
    /// the reply, since the interrupt and its kick cost a vCPU exit and,
    /// on a host with few cores, the control thread's core for a while.
    pub fn after_fast_switch(&self) {
        self.notify_guest();
    }

    /// Once a switch has ended (and its client has its reply): the
    /// telemetry read, [`HARVEST_AFTER`] from now, or at the next switch
    /// request if that comes first. Each switch opens two epochs, each
    /// reusing the slot of the epoch four before it; reading once per
    /// switch, before the next one starts, reads every epoch the next
    /// switch's two will reuse before it asks for them (the guest waits
    /// for that read otherwise: `vmm_read_epoch`). Not at once: reading
    /// every record takes about a millisecond of this thread, and on a
    /// small host the client waiting for the reply needs a CPU first.
    pub fn after_switch(&mut self) {
        if std::mem::replace(&mut self.harvest_armed, true) {
            return;
        }
        if let Err(e) = self.harvest.reset(HARVEST_AFTER, None) {
            log::error!("cannot arm the telemetry read after a switch: {e}; reading now");
            self.harvest_armed = false;
            self.run.harvest();
        }
    }

    /// `--switch-every` timer: toggle.
    /// `expirations`: timer periods since the last read.
    fn on_every(&mut self, expirations: u64) {
        if self.run.life.borrow().ready_at().is_none() {
            return;
        }
        let busy = self.coordinator.in_progress().is_some();
        let Some(e) = self.every.as_mut() else { return };
        if !e.ticks.on_timer(expirations, busy) {
            return;
        }
        let (a, b) = e.profiles;
        let target = if self.coordinator.mode() == b { a } else { b };
        match self.request(target, Origin::Timer) {
            Ok(_) => {}
            // A tick while the VM shuts down: nothing is wrong, nothing to switch.
            Err(SwitchError::ShuttingDown) => log::debug!("--switch-every: the VM is shutting down; tick ignored"),
            Err(e) => log::warn!("--switch-every: {e}"),
        }
    }
}

impl MutEventSubscriber for Switching {
    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.deadline.as_raw_fd() {
            let _ = self.deadline.wait();
            let step = self.coordinator.on_deadline(&self.run.mem);
            self.step(step);
        } else if fd == self.harvest.as_raw_fd() {
            let _ = self.harvest.wait();
            self.harvest_now();
        } else if let Some(e) = self.every.as_mut().filter(|e| e.timer.as_raw_fd() == fd) {
            let expirations = e.timer.wait().unwrap_or(1);
            self.on_every(expirations);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let every = self.every.as_ref().map(|e| e.timer.as_raw_fd());
        let fds = [self.deadline.as_raw_fd(), self.harvest.as_raw_fd()];
        super::fds::watch_all(ops, fds.into_iter().chain(every));
    }
}

/// One line about a finished switch.
pub(super) fn switch_line(r: &SwitchRecord) -> String {
    let path = match (&r.path.fast, &r.path.refused) {
        (true, _) => " in one blackout".to_string(),
        (false, Some(why)) => format!(" (fast path refused: {why})"),
        (false, None) => String::new(),
    };
    if r.ok {
        format!(
            "switch #{} {} -> {}: total {:.3} ms (freeze {:.3} ms, blackout {:.3} ms), {} sites patched{path}",
            r.seq,
            r.from,
            r.to,
            r.timings.total_us as f64 / 1e3,
            r.timings.freeze_us as f64 / 1e3,
            r.timings.blackout_us as f64 / 1e3,
            r.sites_patched
        )
    } else {
        format!("switch #{} {} -> {} FAILED: {}{path}", r.seq, r.from, r.to, r.reason)
    }
}
