//! The control-socket commands and the runtime switch, as the control
//! thread runs them (part of [`Controller`]; see the parent module for the
//! event loop). Everything here runs inside the event loop's `process`, so
//! it can add and remove watched fds through `EventOps`.
//!
//! A `set-mode` reply waits for its switch: the requesting client and the
//! request `id` are kept until the coordinator reports the switch finished;
//! a client that left by then simply gets nothing (the switch still
//! completes and is recorded).
//!
//! Every reply is bounded however long the VM runs: the lists
//! (`query-switches`, `query-latency`) return one page of a bounded ring,
//! with exact totals and counts of what the page leaves out, and a reply
//! that would still exceed `MAX_REPLY_BYTES` is refused with an error
//! rather than sent. No command here blocks the loop beyond the switch's
//! own bounded phases (`x-pause-resume` waits at most the vCPU stop
//! deadline).

use std::os::fd::RawFd;
use std::time::SystemTime;

use event_manager::{EventOps, EventSet, Events};
use serde_json::{Value, json};
use switcher::abi::{self, LockRegistry};
use switcher::profile::Profile;

use super::Controller;
use crate::api::protocol::{self, COMMANDS, Command, MAX_REPLY_BYTES, Page, QmpError, Request, ShutdownCause};
use crate::api::server::{ApiServer, ClientId, ReadOutcome, SendOutcome};
use crate::report::json::Detail;
use crate::report::{self, Measurement};
use crate::switch::{Cancel, Finished, Origin, Step, SwitchError, SwitchRecord, VmAccess};
use crate::vstate::memory::{self, Text};
use crate::vstate::vm;

/// Bytes of epochs one `query-latency` reply holds at most (the rest of
/// the page is counted as left out).
const LATENCY_PAGE_BYTES: usize = MAX_REPLY_BYTES - 32 * 1024;
/// How long the end of the run waits for clients to take the SHUTDOWN
/// event.
const SHUTDOWN_FLUSH: std::time::Duration = std::time::Duration::from_millis(500);

/// Who waits for the reply of the switch in progress.
pub(super) struct SwitchWaiter {
    pub client: ClientId,
    pub id: Option<Value>,
}

impl Controller {
    /// The fds of the control socket (listener, backlog event) to watch
    /// at start.
    pub(super) fn api_fds(&self) -> Vec<RawFd> {
        self.api.as_ref().map(|a| vec![a.listener_fd(), a.backlog_fd()]).unwrap_or_default()
    }

    /// Whether `fd` belongs to the control socket.
    pub(super) fn is_api_fd(&self, fd: RawFd) -> bool {
        self.api.as_ref().is_some_and(|a| a.listener_fd() == fd || a.backlog_fd() == fd || a.is_client(fd))
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
        if fd == api.backlog_fd() {
            // Clients whose last turn left input: their next turn.
            for (client_fd, outcome) in api.take_backlog() {
                self.on_read(client_fd, outcome, ops);
            }
            return;
        }
        if set.contains(EventSet::OUT) {
            let out = api.writable(fd);
            apply_send(api, ops, out);
        }
        if set.intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR) {
            let outcome = api.read(fd);
            self.on_read(fd, outcome, ops);
        }
    }

    /// What one client's turn produced: its watch, then its commands.
    fn on_read(&mut self, fd: RawFd, outcome: ReadOutcome, ops: &mut EventOps) {
        if let Some(api) = self.api.as_mut() {
            if outcome.closed {
                forget(api, ops, fd);
            } else {
                watch(ops, fd, outcome.wants_write);
            }
        }
        for (client, req) in outcome.requests {
            self.on_request(client, req, ops);
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
            Command::QueryLatency { page, cpus } => Ok(self.latency_json(page, cpus)),
            Command::ResetLatency => self.reset_latency(),
            Command::QuerySwitches { page } => Ok(self.switches_json(page)),
            Command::XPauseResume => self.pause_resume(),
            Command::XCancelSwitch => {
                let (reply, step) = self.cancel_switch();
                // Reply first, then tell the guest: the cancelled switch's
                // own reply follows once the guest has thawed.
                self.send(client, &protocol::reply_ok(reply, id.as_ref()), ops);
                if let Some(step) = step {
                    self.on_switch_step(step, ops);
                }
                return;
            }
            Command::Quit => {
                self.request_shutdown(ShutdownCause::HostQmpQuit, "quit command on the control socket".into());
                Ok(json!({}))
            }
            Command::SetMode { mode } => match self.start_switch(mode, Origin::Client(client.0), ops) {
                Ok(None) => Ok(json!({"mode": mode.name(), "changed": false})),
                Ok(Some(_)) => {
                    // Replied when the switch finishes.
                    self.switch_waiter = Some(SwitchWaiter { client, id });
                    return;
                }
                Err(e) => Err(QmpError::generic(e.to_string())),
            },
        };
        let mut text = match result {
            Ok(v) => protocol::reply_ok(v, id.as_ref()),
            Err(e) => protocol::reply_err(&e, id.as_ref()),
        };
        if text.len() > MAX_REPLY_BYTES {
            // Paging keeps replies far below the bound; this is a bug.
            log::error!("control socket: a reply of {} bytes was refused (bound {MAX_REPLY_BYTES})", text.len());
            let e = QmpError::generic(format!(
                "the reply would be {} bytes, over the {MAX_REPLY_BYTES}-byte bound; ask for a smaller page (and \
                 report this)",
                text.len()
            ));
            text = protocol::reply_err(&e, id.as_ref());
        }
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
            "switching": self.coordinator.in_progress().map(Profile::name),
            "vcpus": self.cpu_count,
            "uptime_s": self.started.elapsed().as_secs_f64(),
            "switches": self.coordinator.history().recorded(),
            "shim": crate::vstate::shim_stats::ShimEntries::read(&self.mem, self.cpu_count),
        })
    }

    fn mode_json(&self) -> Value {
        let sites_mode = match self.coordinator.sites().current_profile(&Text(&self.mem)) {
            Ok(m) => m.name().to_string(),
            Err(e) => format!("inconsistent: {e}"),
        };
        let guest_mode = memory::read_abi::<LockRegistry>(&self.mem, abi::LOCK_REGISTRY_ADDR)
            .filter(|r| r.magic == abi::ABI_MAGIC)
            .and_then(|r| Profile::from_u32(r.mode))
            .map(Profile::name);
        let mode = self.coordinator.mode();
        json!({
            "mode": mode.name(),
            "profile": {"locks": mode.locks.name(), "preempt": mode.preempt.name(), "irq": mode.irq.name()},
            "switching": self.coordinator.in_progress().map(Profile::name),
            "sites": self.coordinator.sites().len(),
            "sites_mode": sites_mode,
            "guest_mode": guest_mode,
        })
    }

    /// `query-switches`: one page of the switch history, its exact
    /// totals, and what the page leaves out.
    fn switches_json(&self, page: Page) -> Value {
        let history = self.coordinator.history();
        let p = history.page(page);
        json!({"switches": p.records, "totals": history.totals(), "omitted": p.omitted})
    }

    /// `query-latency`: one page of the epochs kept in detail (all-CPU
    /// rows; per-CPU rows with `cpus`), every mode's exact totals, and what
    /// the page leaves out. The page is cut to [`LATENCY_PAGE_BYTES`].
    fn latency_json(&mut self, page: Page, cpus: bool) -> Value {
        self.telemetry.harvest();
        let retained: Vec<u64> = self.telemetry.epochs().map(|e| e.info.index).collect();
        let forgotten = self.telemetry.forgotten();
        let first = retained.first().copied();
        // The page's range within the retained epochs, and what it asked
        // for that is gone.
        let (mut lo, mut hi, unavailable) = match page {
            Page::Last(n) => (retained.len().saturating_sub(n as usize), retained.len(), 0),
            Page::Since { since, limit } => {
                let lo = retained.iter().take_while(|&&i| i < since).count();
                let gone = first.map_or(0, |f| f.saturating_sub(since).min(forgotten));
                (lo, (lo + limit as usize).min(retained.len()), gone)
            }
        };
        let listed = &retained[lo..hi];
        let m = Measurement::from_reader_listing(&self.telemetry, |i| listed.contains(&i));
        let detail = Detail { cpus, buckets: false };
        let mut epochs: Vec<String> = m
            .epochs
            .iter()
            .map(|e| serde_json::to_string(&report::json::epoch_entry(e, detail)).unwrap_or_default())
            .collect();
        // Within the byte budget: keep the newest of a `last` page, the
        // oldest of a `since` page.
        while epochs.iter().map(|e| e.len() + 1).sum::<usize>() > LATENCY_PAGE_BYTES && epochs.len() > 1 {
            if matches!(page, Page::Last(_)) {
                epochs.remove(0);
                lo += 1;
            } else {
                epochs.pop();
                hi -= 1;
            }
        }
        let epochs: Vec<Value> = epochs.iter().filter_map(|e| serde_json::from_str(e).ok()).collect();
        let no_cpus = Detail { cpus: false, buckets: false };
        json!({
            "epochs": epochs,
            "per_cpu": cpus,
            "modes": report::json::mode_totals(&m, no_cpus),
            "totals": {
                "seen": forgotten + retained.len() as u64,
                "retained": retained.len(),
                "forgotten": forgotten,
                "retained_max": self.telemetry.retain(),
            },
            "omitted": {
                "before": forgotten + lo as u64,
                "after": retained.len() - hi,
                "unavailable": unavailable,
            },
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
            Err(e) => Err(QmpError::generic(e.to_string())),
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
        target: Profile,
        origin: Origin,
        ops: &mut EventOps,
    ) -> Result<Option<u64>, SwitchError> {
        if self.shutdown_reason.is_some() || self.outcome.is_some() {
            return Err(SwitchError::ShuttingDown);
        }
        if self.ready_at.is_none() {
            return Err(SwitchError::Booting);
        }
        let seq = self.coordinator.request(target, origin, &self.mem)?;
        if let Some(seq) = seq {
            log::info!("switch #{seq} to {} requested", target.name());
            self.notify_guest_switch();
            self.arm_switch_deadline();
        }
        let _ = ops;
        Ok(seq)
    }

    /// `x-cancel-switch`: the reply, and the step to take after it.
    fn cancel_switch(&mut self) -> (Value, Option<Step>) {
        match self.coordinator.cancel(&self.mem) {
            Cancel::NoSwitch => (json!({"cancelled": false, "reason": "no switch in progress"}), None),
            Cancel::PastVerdict { seq, patched } => {
                let reason = if patched {
                    "past its verdict: the call sites are patched, it completes"
                } else {
                    "already being cancelled"
                };
                (json!({"cancelled": false, "seq": seq, "reason": reason}), None)
            }
            Cancel::Cancelled { seq, step } => {
                log::info!("switch #{seq} cancelled by a client");
                (json!({"cancelled": true, "seq": seq}), Some(step))
            }
        }
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
        // Each switch opens two epochs, each reusing the slot of the epoch
        // four before it; reading now, once per switch, reads every epoch
        // the next switch's two will reuse before it asks for them (the
        // guest waits for that read otherwise: `vmm_read_epoch`). After
        // the reply: reading every record takes a while, the client need
        // not wait.
        self.telemetry.harvest();
    }

    /// `--switch-every` timer: toggle.
    /// `expirations`: timer periods since the last read.
    pub(super) fn on_switch_every(&mut self, expirations: u64, ops: &mut EventOps) {
        if self.ready_at.is_none() {
            return;
        }
        let busy = self.coordinator.in_progress().is_some();
        if let Some((_, ticks)) = self.switch_every.as_mut()
            && !ticks.on_timer(expirations, busy)
        {
            return;
        }
        // Toggles between the boot profile and --switch-to.
        let (a, b) = self.switch_every_profiles;
        let target = if self.coordinator.mode() == b { a } else { b };
        if let Err(e) = self.start_switch(target, Origin::Timer, ops) {
            log::warn!("--switch-every: {e}");
        }
    }

    /// At the end of the run, outside the event loop: tells every client
    /// the VM is gone (QEMU's `SHUTDOWN` event, with why), and a client
    /// waiting for a switch that it failed; waits a little for the clients
    /// to take it before the sockets close.
    pub(super) fn announce_shutdown(&mut self, cause: ShutdownCause) {
        let waiter = self.switch_waiter.take();
        let Some(api) = self.api.as_mut() else { return };
        if let Some(w) = waiter {
            let e = QmpError::generic("the VM shut down before the switch completed");
            let _ = api.send(w.client, &protocol::reply_err(&e, w.id.as_ref()));
        }
        let _ = api.broadcast(&protocol::event("SHUTDOWN", cause.event_data(), SystemTime::now()));
        api.flush_all(SHUTDOWN_FLUSH);
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
