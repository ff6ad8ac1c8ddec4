//! The control-socket commands and the runtime switch, as the control
//! thread runs them (part of [`Controller`]; see the parent module for the
//! event loop). Everything here runs inside the event loop's `process`, so
//! it can add and remove watched fds through `EventOps`.
//!
//! A `set-mode` reply waits for its switch: the requesting client and the
//! request `id` are kept until the coordinator reports the switch finished;
//! a client that left by then simply gets nothing (the switch still
//! completes and is recorded).

use std::os::fd::RawFd;
use std::time::SystemTime;

use event_manager::{EventOps, EventSet, Events};
use serde_json::{Value, json};
use switcher::abi::{self, LockMode, LockRegistry};

use super::Controller;
use crate::api::protocol::{self, COMMANDS, Command, QmpError, Request};
use crate::api::server::{ApiServer, ClientId, SendOutcome};
use crate::report::{self, Measurement};
use crate::switch::{Finished, Origin, Step, SwitchRecord, VmAccess};
use crate::vstate::memory::{self, Text};
use crate::vstate::vm;

/// Who waits for the reply of the switch in progress.
pub(super) struct SwitchWaiter {
    pub client: ClientId,
    pub id: Option<Value>,
}

impl Controller {
    /// The fds of the control socket (listener) to watch at start.
    pub(super) fn api_listener_fd(&self) -> Option<RawFd> {
        self.api.as_ref().map(|a| a.listener_fd())
    }

    /// Whether `fd` belongs to the control socket.
    pub(super) fn is_api_fd(&self, fd: RawFd) -> bool {
        self.api.as_ref().is_some_and(|a| a.listener_fd() == fd || a.is_client(fd))
    }

    /// Listener or client socket activity.
    pub(super) fn on_api_event(&mut self, fd: RawFd, set: EventSet, ops: &mut EventOps) {
        let Some(api) = self.api.as_mut() else { return };
        if fd == api.listener_fd() {
            for client_fd in api.accept() {
                if let Err(e) = ops.add(Events::new_raw(client_fd, EventSet::IN | EventSet::READ_HANG_UP)) {
                    log::warn!("control socket: cannot watch a client: {e:?}");
                    api.drop_client(client_fd);
                }
            }
            return;
        }
        if set.contains(EventSet::OUT) {
            let out = api.writable(fd);
            apply_send(api, ops, out);
        }
        if set.intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR) {
            let outcome = api.read(fd);
            if outcome.closed {
                forget(api, ops, fd);
            } else {
                watch(ops, fd, outcome.wants_write);
            }
            for (client, req) in outcome.requests {
                self.on_request(client, req, ops);
            }
        }
    }

    fn send(&mut self, client: ClientId, text: &str, ops: &mut EventOps) {
        if let Some(api) = self.api.as_mut()
            && let Some(out) = api.send(client, text)
        {
            apply_send(api, ops, out);
        }
    }

    fn broadcast(&mut self, text: &str, ops: &mut EventOps) {
        if let Some(api) = self.api.as_mut() {
            for out in api.broadcast(text) {
                apply_send(api, ops, out);
            }
        }
    }

    /// Sends an event to every negotiated client.
    pub(super) fn emit(&mut self, name: &str, data: Value, ops: &mut EventOps) {
        let text = protocol::event(name, data, SystemTime::now());
        self.broadcast(&text, ops);
    }

    fn on_request(&mut self, client: ClientId, req: Request, ops: &mut EventOps) {
        let id = req.id.clone();
        let result: Result<Value, QmpError> = match req.command {
            // Answered by the server during negotiation.
            Command::QmpCapabilities => Ok(json!({})),
            Command::QueryVersion => Ok(
                json!({"qemu": protocol::version_triple(), "package": format!("rtswitch {}", env!("CARGO_PKG_VERSION"))}),
            ),
            Command::QueryCommands => Ok(Value::Array(COMMANDS.iter().map(|c| json!({"name": c})).collect())),
            Command::QueryStatus => Ok(self.status_json()),
            Command::QueryMode => Ok(self.mode_json()),
            Command::QueryLatency => Ok(self.latency_json()),
            Command::ResetLatency => self.reset_latency(),
            Command::QuerySwitches => Ok(json!({"switches": self.coordinator.history()})),
            Command::XPauseResume => self.pause_resume(),
            Command::Quit => {
                self.request_shutdown("quit command on the control socket".into());
                Ok(json!({}))
            }
            Command::SetMode { mode } => match self.start_switch(mode, Origin::Client(client.0), ops) {
                Ok(None) => Ok(json!({"mode": mode.name(), "changed": false})),
                Ok(Some(_)) => {
                    // Replied when the switch finishes.
                    self.switch_waiter = Some(SwitchWaiter { client, id });
                    return;
                }
                Err(e) => Err(QmpError::generic(e)),
            },
        };
        let text = match result {
            Ok(v) => protocol::reply_ok(v, id.as_ref()),
            Err(e) => protocol::reply_err(&e, id.as_ref()),
        };
        self.send(client, &text, ops);
    }

    fn status_json(&self) -> Value {
        let status = if self.shutdown_reason.is_some() {
            "shutting-down"
        } else if self.ready_at.is_some() {
            "running"
        } else {
            "booting"
        };
        json!({
            "status": status,
            "running": self.outcome.is_none(),
            "ready": self.ready_at.is_some(),
            "mode": self.coordinator.mode().name(),
            "switching": self.coordinator.in_progress().map(LockMode::name),
            "vcpus": self.cpu_count,
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "switches": self.coordinator.history().len(),
            "shim": crate::vstate::shim_stats::ShimEntries::read(&self.mem, self.cpu_count),
        })
    }

    fn mode_json(&self) -> Value {
        let sites_mode = match self.coordinator.sites().current_mode(&Text(&self.mem)) {
            Ok(m) => m.name().to_string(),
            Err(e) => format!("inconsistent: {e}"),
        };
        let guest_mode = memory::read_abi::<LockRegistry>(&self.mem, abi::LOCK_REGISTRY_ADDR)
            .filter(|r| r.magic == abi::ABI_MAGIC)
            .and_then(|r| LockMode::from_u32(r.mode))
            .map(LockMode::name);
        json!({
            "mode": self.coordinator.mode().name(),
            "switching": self.coordinator.in_progress().map(LockMode::name),
            "sites": self.coordinator.sites().len(),
            "sites_mode": sites_mode,
            "guest_mode": guest_mode,
        })
    }

    fn latency_json(&mut self) -> Value {
        self.telemetry.harvest();
        let m = Measurement::from_reader(&self.telemetry);
        json!({
            "epochs": report::json::epochs(&m),
            "workload": m.workload.as_ref().map(report::workload_line),
            "load_ops": m.workload.as_ref().map(|w| w.load_ops),
            "load_violations": m.workload.as_ref().map(|w| w.load_violations),
        })
    }

    fn pause_resume(&mut self) -> Result<Value, QmpError> {
        if let Some(t) = self.coordinator.in_progress() {
            return Err(QmpError::generic(format!("a mode switch is in progress (to {}); try again", t.name())));
        }
        if self.ready_at.is_none() || self.shutdown_reason.is_some() {
            return Err(QmpError::generic("the guest is not running"));
        }
        let vcpus = &self.vcpus;
        let kick_all = || kick_each(vcpus);
        let limit = self.coordinator.limits().vcpu_stop;
        match crate::switch::pause_resume(&self.gate, &kick_all, vcpu_mask(vcpus.len()), limit) {
            Ok(us) => Ok(json!({"blackout_us": us})),
            Err(e) => Err(QmpError::generic(e)),
        }
    }

    fn reset_latency(&mut self) -> Result<Value, QmpError> {
        match self.telemetry.request_reset() {
            Ok(()) => Ok(json!({})),
            Err(e) => Err(QmpError::generic(format!("cannot reset the latency statistics: {e}"))),
        }
    }

    /// Starts a switch (socket or timer). `Ok(None)`: already in `target`.
    pub(super) fn start_switch(
        &mut self,
        target: LockMode,
        origin: Origin,
        ops: &mut EventOps,
    ) -> Result<Option<u64>, String> {
        if self.shutdown_reason.is_some() || self.outcome.is_some() {
            return Err("the VM is shutting down; no switch now".into());
        }
        if self.ready_at.is_none() {
            return Err("the guest is still booting; try again when it is ready".into());
        }
        let seq = self.coordinator.request(target, origin, &self.mem).map_err(|e| e.to_string())?;
        if let Some(seq) = seq {
            log::info!("switch #{seq} to {} requested", target.name());
            self.notify_guest_switch();
            self.arm_switch_deadline();
        }
        let _ = ops;
        Ok(seq)
    }

    /// Interrupts CPU 0 about the mailbox, and kicks vCPU 0 so that the
    /// interrupt is taken now even if it is busy in emulated ring 0.
    fn notify_guest_switch(&self) {
        if let Err(e) = vm::send_msi(&self.vm, 0, abi::vector::HOST_REQUEST) {
            log::error!("cannot interrupt the guest about the switch: {e}");
        }
        if let Some(v) = self.vcpus.first() {
            v.kick();
        }
    }

    fn arm_switch_deadline(&mut self) {
        if let Some(deadline) = self.coordinator.deadline() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if let Err(e) = self.switch_timer.reset(left.max(std::time::Duration::from_micros(100)), None) {
                log::error!("cannot arm the switch deadline: {e}");
            }
        }
    }

    /// HC_SWITCH from the guest.
    pub(super) fn on_guest_switch_notify(&mut self, ops: &mut EventOps) {
        let Controller { coordinator, mem, gate, vcpus, .. } = self;
        let kick_all = || kick_each(vcpus);
        let mut access = VmAccess { mem, gate, kick_all: &kick_all, all_vcpus_mask: vcpu_mask(vcpus.len()) };
        let step = coordinator.on_guest_notify(&mut access);
        self.on_switch_step(step, ops);
    }

    /// The switch deadline timer fired.
    pub(super) fn on_switch_deadline(&mut self, ops: &mut EventOps) {
        let step = self.coordinator.on_deadline(&self.mem);
        self.on_switch_step(step, ops);
    }

    fn on_switch_step(&mut self, step: Step, ops: &mut EventOps) {
        match step {
            Step::Wait => {}
            Step::Notify => {
                self.notify_guest_switch();
                self.arm_switch_deadline();
            }
            Step::Finished(f) => self.on_switch_finished(f, ops),
        }
    }

    fn on_switch_finished(&mut self, f: Finished, ops: &mut EventOps) {
        let _ = self.switch_timer.clear();
        // Each switch opens two epochs; reading now, once per switch, keeps
        // every closed epoch before its ring slot is reused.
        self.telemetry.harvest();
        let r = &f.record;
        let line = switch_line(r);
        if r.ok {
            log::info!("{line}");
        } else {
            self.say(&line);
        }
        let data = serde_json::to_value(r).unwrap_or(Value::Null);
        let waiter = self.switch_waiter.take();
        if let (Origin::Client(_), Some(w)) = (f.origin, waiter) {
            let text = if r.ok {
                let mut v = data.clone();
                if let Some(o) = v.as_object_mut() {
                    o.insert("mode".into(), json!(r.to));
                    o.insert("changed".into(), json!(true));
                }
                protocol::reply_ok(v, w.id.as_ref())
            } else {
                protocol::reply_err(
                    &QmpError::generic(format!("switch to {} failed: {}", r.to, r.reason)),
                    w.id.as_ref(),
                )
            };
            self.send(w.client, &text, ops);
        }
        self.emit(if r.ok { "MODE_SWITCHED" } else { "SWITCH_FAILED" }, data, ops);
    }

    /// `--switch-every` timer: toggle.
    pub(super) fn on_switch_every(&mut self, ops: &mut EventOps) {
        if self.coordinator.in_progress().is_some() || self.ready_at.is_none() {
            return;
        }
        let target = match self.coordinator.mode() {
            LockMode::Mainline => LockMode::Rt,
            LockMode::Rt => LockMode::Mainline,
        };
        if let Err(e) = self.start_switch(target, Origin::Timer, ops) {
            log::warn!("--switch-every: {e}");
        }
    }

    /// At the end of the run, outside the event loop: tells every client
    /// the VM is gone (and a client waiting for a switch that it failed).
    /// Writes are best effort: the sockets close right after.
    pub(super) fn announce_shutdown(&mut self, reason: &str) {
        let waiter = self.switch_waiter.take();
        let Some(api) = self.api.as_mut() else { return };
        if let Some(w) = waiter {
            let e = QmpError::generic("the VM shut down before the switch completed");
            let _ = api.send(w.client, &protocol::reply_err(&e, w.id.as_ref()));
        }
        let _ =
            api.broadcast(&protocol::event("SHUTDOWN", json!({"guest": true, "reason": reason}), SystemTime::now()));
    }
}

/// One line about a finished switch.
pub(super) fn switch_line(r: &SwitchRecord) -> String {
    if r.ok {
        format!(
            "switch #{} {} -> {}: total {:.3} ms (freeze {:.3} ms, blackout {:.3} ms), {} sites patched",
            r.seq,
            r.from,
            r.to,
            r.timings.total_us as f64 / 1e3,
            r.timings.freeze_us as f64 / 1e3,
            r.timings.blackout_us as f64 / 1e3,
            r.sites_patched
        )
    } else {
        format!("switch #{} {} -> {} FAILED: {}", r.seq, r.from, r.to, r.reason)
    }
}

/// Kicks every vCPU out of guest mode.
fn kick_each(vcpus: &[crate::vstate::vcpu::VcpuHandle]) {
    for v in vcpus {
        v.kick();
    }
}

/// The bit mask naming `n` vCPUs.
fn vcpu_mask(n: usize) -> u64 {
    if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
}

fn watch(ops: &mut EventOps, fd: RawFd, wants_write: bool) {
    let mut set = EventSet::IN | EventSet::READ_HANG_UP;
    if wants_write {
        set |= EventSet::OUT;
    }
    if let Err(e) = ops.modify(Events::new_raw(fd, set)) {
        log::debug!("control socket: cannot update the watch on fd {fd}: {e:?}");
    }
}

fn apply_send(api: &mut ApiServer, ops: &mut EventOps, out: SendOutcome) {
    match out {
        SendOutcome::Open { fd, wants_write } => watch(ops, fd, wants_write),
        SendOutcome::Closed(fd) => forget(api, ops, fd),
    }
}

/// Stops watching a client's fd, then closes it (epoll needs it open).
fn forget(api: &mut ApiServer, ops: &mut EventOps, fd: RawFd) {
    if let Err(e) = ops.remove(Events::empty_raw(fd)) {
        log::debug!("control socket: removing fd {fd} from the loop: {e:?}");
    }
    api.drop_client(fd);
}
