//! The control socket's subscriber: the listener, the backlog EventFd and
//! every client's socket, and the commands they send. Everything here runs
//! inside its own `process`, so it can add and remove its watched fds
//! through `EventOps`. Switches go through the [`SwitchHandle`], `quit`
//! through the [`ShutdownHandle`]; a switch that ends arrives in this
//! subscriber's mailbox, for the waiting client's reply and the event.
//!
//! A `set-mode` reply waits for its switch: the requesting client and the
//! request `id` are kept, under the switch's sequence number, until its end
//! arrives in the mailbox (by then another switch may have started: the
//! number, not the order, pairs a reply with its client); a client that
//! left by then simply gets nothing (the switch still completes and is
//! recorded).
//!
//! Every reply is bounded however long the VM runs: the lists
//! (`query-switches`, `query-latency`) return one page of a bounded ring,
//! with exact totals and counts of what the page leaves out, and a reply
//! that would still exceed `MAX_REPLY_BYTES` is refused with an error
//! rather than sent. No command here blocks the loop beyond the switch's
//! own bounded phases (`x-pause-resume` waits at most the vCPU stop
//! deadline).
//!
//! Two timers of its own: the sweep (once a second: closes clients that
//! did not negotiate in time or stayed silent past `--api-idle-timeout`,
//! `ApiServer::sweep`), and the accept back-off (the listener is not
//! watched while it runs, after `accept` ran out of descriptors).

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant, SystemTime};

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use serde_json::{Value, json};
use switcher::abi::{self, LockRegistry};
use switcher::locktest::Opcode;
use switcher::profile::Profile;
use vmm_sys_util::timerfd::TimerFd;

use super::error::RunError;
use super::fds::timer;
use super::lifecycle::State;
use super::mailbox::Mailbox;
use super::shared::Shared;
use super::shutdown::ShutdownHandle;
use super::switching::SwitchHandle;
use crate::api::protocol::{
    self, COMMANDS, Command, MAX_REPLY_BYTES, Page, QmpError, Request, ShutdownCause, SiteCounts,
};
use crate::api::server::{ACCEPT_BACKOFF, ApiServer, ClientId, ReadOutcome, SendOutcome};
use crate::report::json::Detail;
use crate::report::{self, Measurement};
use crate::switch::{Cancel, Finished, Origin};
use crate::vstate::hold::Capture;
use crate::vstate::memory::{self, GuestView};

/// Bytes of epochs one `query-latency` reply holds at most (the rest of
/// the page is counted as left out).
const LATENCY_PAGE_BYTES: usize = MAX_REPLY_BYTES - 32 * 1024;
/// How long the end of the run waits for clients to take the SHUTDOWN
/// event.
const SHUTDOWN_FLUSH: std::time::Duration = std::time::Duration::from_millis(500);

/// Who waits for the reply of switch `seq`.
struct SwitchWaiter {
    seq: u64,
    client: ClientId,
    id: Option<Value>,
}

pub struct ControlSocket {
    run: Shared,
    api: ApiServer,
    /// The clients waiting for their switch: the one in progress, and one
    /// that ended but whose end is still in the mailbox (a new switch can
    /// start before this subscriber's next turn).
    waiters: Vec<SwitchWaiter>,
    /// Switches that ended (from the switch subscriber).
    ends: Mailbox<Finished>,
    switching: SwitchHandle,
    shutdown: ShutdownHandle,
    /// Once a second: `ApiServer::sweep`.
    sweep: TimerFd,
    /// Armed while the listener is not watched (accept back-off).
    backoff: TimerFd,
    /// `--api-idle-timeout` (zero: never).
    idle: Duration,
}

/// How often clients are checked for their deadlines.
const SWEEP_PERIOD: Duration = Duration::from_secs(1);

impl ControlSocket {
    /// Serves `api`; every switch that ends from now on is reported here.
    pub fn new(
        run: &Shared,
        api: ApiServer,
        switching: SwitchHandle,
        shutdown: ShutdownHandle,
        idle: Duration,
    ) -> Result<Self, RunError> {
        let ends = Mailbox::new().map_err(|e| RunError::Host("eventfd", e))?;
        switching.borrow_mut().report_ends_to(ends.sender());
        let sweep = timer(Some(SWEEP_PERIOD), Some(SWEEP_PERIOD))?;
        let backoff = timer(None, None)?;
        Ok(Self { run: run.clone(), api, waiters: Vec::new(), ends, switching, shutdown, sweep, backoff, idle })
    }

    /// The sweep timer fired: close the clients past their deadlines.
    fn on_sweep(&mut self, ops: &mut EventOps) {
        let _ = self.sweep.wait();
        for fd in self.api.sweep(Instant::now(), self.idle) {
            forget(&mut self.api, ops, fd);
        }
    }

    /// `accept` ran out of descriptors: stop watching the listener for a while.
    fn back_off(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.remove(Events::empty_raw(self.api.listener_fd())) {
            log::debug!("control socket: cannot unwatch the listener: {e:?}");
            return;
        }
        if let Err(e) = self.backoff.reset(ACCEPT_BACKOFF, None) {
            log::error!("control socket: cannot arm the accept back-off ({e}); watching the listener again");
            super::fds::watch_all(ops, [self.api.listener_fd()]);
        }
    }

    /// Listener or client socket activity.
    fn on_api_event(&mut self, fd: RawFd, set: EventSet, ops: &mut EventOps) {
        let api = &mut self.api;
        if fd == api.listener_fd() {
            let (fds, starved) = api.accept();
            for client_fd in fds {
                if let Err(e) = ops.add(Events::new_raw(client_fd, EventSet::IN | EventSet::READ_HANG_UP)) {
                    log::warn!("control socket: cannot watch a client: {e:?}");
                    api.drop_client(client_fd);
                }
            }
            if starved {
                self.back_off(ops);
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
        if !api.is_client(fd) {
            log::debug!("control socket: event on fd {fd}, no longer a client");
            return;
        }
        if set.contains(EventSet::OUT) {
            let out = api.writable(fd);
            apply_send(api, ops, out);
        }
        if set.intersects(EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR) {
            let outcome = self.api.read(fd);
            self.on_read(fd, outcome, ops);
        }
    }

    /// What one client's turn produced: its watch, then its commands.
    fn on_read(&mut self, fd: RawFd, outcome: ReadOutcome, ops: &mut EventOps) {
        if outcome.closed {
            forget(&mut self.api, ops, fd);
        } else {
            watch(ops, fd, outcome.wants_write);
        }
        for (client, req) in outcome.requests {
            self.on_request(client, req, ops);
        }
    }

    fn send(&mut self, client: ClientId, text: &str, ops: &mut EventOps) {
        if let Some(out) = self.api.send(client, text) {
            apply_send(&mut self.api, ops, out);
        }
    }

    /// Sends an event to every negotiated client.
    fn emit(&mut self, name: &str, data: Value, ops: &mut EventOps) {
        let text = protocol::event(name, data, SystemTime::now());
        for out in self.api.broadcast(&text) {
            apply_send(&mut self.api, ops, out);
        }
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
            Command::XLocktestCommand { thread, opcode, data } => self.locktest_command(thread, opcode, data),
            Command::XLocktestState => self.locktest_state(),
            Command::XQueryStacks => self.query_stacks(),
            Command::XCancelSwitch => {
                let (reply, step) = cancel_reply(self.switching.borrow_mut().cancel());
                // Reply first, then tell the guest: the cancelled switch's
                // own reply follows once the guest has thawed.
                self.send(client, &protocol::reply_ok(reply, id.as_ref()), ops);
                if let Some(step) = step {
                    self.switching.borrow_mut().step(step);
                }
                return;
            }
            Command::Cont => match self.run.state() {
                State::Prelaunch => {
                    self.run.launch();
                    self.shutdown.borrow_mut().launched();
                    // As QEMU: the reply, then RESUME.
                    self.send(client, &protocol::reply_ok(json!({}), id.as_ref()), ops);
                    self.emit("RESUME", json!({}), ops);
                    return;
                }
                State::ShuttingDown | State::Exited => Err(QmpError::generic("the VM is shutting down")),
                // As QEMU: `cont` on a running VM does nothing.
                State::Booting | State::Ready | State::Switching => Ok(json!({})),
            },
            Command::Quit => {
                let reason = "quit command on the control socket".into();
                self.shutdown.borrow_mut().request(ShutdownCause::HostQmpQuit, reason);
                Ok(json!({}))
            }
            Command::SetMode { mode } => match self.switching.borrow_mut().request(mode, Origin::Client(client.0)) {
                Ok(None) => Ok(json!({"mode": mode.name(), "changed": false})),
                Ok(Some(seq)) => {
                    // Replied when the switch finishes.
                    self.waiters.push(SwitchWaiter { seq, client, id });
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
        let run = &self.run;
        let life = run.life.borrow();
        let switching = self.switching.borrow();
        let coordinator = switching.coordinator();
        json!({
            "status": life.status_word(),
            "running": life.started() && !life.exited(),
            "ready": life.ready_at().is_some(),
            "mode": coordinator.mode().name(),
            "switching": coordinator.in_progress().map(Profile::name),
            "vcpus": run.cpu_count,
            "uptime_s": run.started.elapsed().as_secs_f64(),
            "switches": coordinator.history().recorded(),
            "shim": crate::vstate::shim_stats::ShimEntries::read(&run.mem, run.cpu_count),
        })
    }

    fn mode_json(&self) -> Value {
        let mem = &self.run.mem;
        let switching = self.switching.borrow();
        let coordinator = switching.coordinator();
        let sites_mode = match coordinator.sites().current_profile(&GuestView::new(mem), coordinator.mode()) {
            Ok(m) => m.name().to_string(),
            Err(e) => format!("inconsistent: {e}"),
        };
        let guest_mode = memory::read_abi::<LockRegistry>(mem, abi::LOCK_REGISTRY_ADDR)
            .filter(|r| r.magic == abi::ABI_MAGIC)
            .and_then(|r| Profile::from_u32(r.mode))
            .map(Profile::name);
        let mode = coordinator.mode();
        json!({
            "mode": mode.name(),
            "profile": {
                "locks": mode.locks.name(),
                "preempt": mode.preempt.name(),
                "irq": mode.irq.name(),
                "idle": mode.idle.name(),
            },
            "switching": coordinator.in_progress().map(Profile::name),
            "sites": coordinator.sites().len(),
            "sites_by_dimension": SiteCounts::of(coordinator.sites()),
            "sites_mode": sites_mode,
            "guest_mode": guest_mode,
        })
    }

    /// `query-switches`: one page of the switch history, its exact
    /// totals, and what the page leaves out.
    fn switches_json(&self, page: Page) -> Value {
        let switching = self.switching.borrow();
        let history = switching.coordinator().history();
        let p = history.page(page);
        json!({"switches": p.records, "totals": history.totals(), "omitted": p.omitted})
    }

    /// `query-latency`: one page of the epochs kept in detail (all-CPU
    /// rows; per-CPU rows with `cpus`), every mode's exact totals, and what
    /// the page leaves out. The page is cut to [`LATENCY_PAGE_BYTES`].
    fn latency_json(&mut self, page: Page, cpus: bool) -> Value {
        self.run.harvest();
        let telemetry = self.run.telemetry.borrow();
        let retained: Vec<u64> = telemetry.epochs().map(|e| e.info.index).collect();
        let forgotten = telemetry.forgotten();
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
        let m = Measurement::from_reader_listing(&telemetry, |i| listed.contains(&i));
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
                "retained_max": telemetry.retain(),
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
        let switching = self.switching.borrow();
        if let Some(t) = switching.coordinator().in_progress() {
            return Err(QmpError::generic(format!("a mode switch is in progress (to {}); try again", t.name())));
        }
        if !matches!(self.run.state(), State::Ready | State::Switching) {
            return Err(QmpError::generic("the guest is not running"));
        }
        let run = &self.run;
        let kick_all = || run.kick_all();
        let limit = switching.coordinator().limits().vcpu_stop;
        match crate::switch::pause_resume(&run.gate, &kick_all, run.all_vcpus_mask(), limit) {
            Ok(us) => Ok(json!({"blackout_us": us})),
            Err(e) => Err(QmpError::generic(e.to_string())),
        }
    }

    /// Posts a lock-tester command and interrupts the guest so that its
    /// threads look (and a signal is delivered).
    fn locktest_command(&mut self, thread: u64, op: Opcode, data: i32) -> Result<Value, QmpError> {
        if !matches!(self.run.state(), State::Ready | State::Switching) {
            return Err(QmpError::generic("the guest is not running"));
        }
        crate::locktest::post(&self.run.mem, thread, op, data).map_err(|e| QmpError::generic(e.to_string()))?;
        self.run
            .interrupt_guest()
            .map_err(|e| QmpError::generic(format!("the command was posted but the guest cannot be told: {e}")))?;
        Ok(json!({}))
    }

    fn locktest_state(&self) -> Result<Value, QmpError> {
        let locks = self.switching.borrow().coordinator().mode().locks.name();
        crate::locktest::state(&self.run.mem, locks).map_err(|e| QmpError::generic(e.to_string()))
    }

    /// Holds every vCPU, walks every task's stack, releases.
    fn query_stacks(&self) -> Result<Value, QmpError> {
        let switching = self.switching.borrow();
        if let Some(t) = switching.coordinator().in_progress() {
            return Err(QmpError::generic(format!("a mode switch is in progress (to {}); try again", t.name())));
        }
        if !matches!(self.run.state(), State::Ready) {
            return Err(QmpError::generic("the guest is not running"));
        }
        let code =
            self.run.code.as_ref().map_err(|why| {
                QmpError::generic(format!("this kernel's stacks cannot be walked: its ELF has {why}"))
            })?;
        let run = &self.run;
        let t = Instant::now();
        run.gate.close_with(Capture::Full);
        run.kick_all();
        let limit = switching.coordinator().limits().vcpu_stop;
        let held = run.gate.wait_all_held(run.all_vcpus_mask(), t + limit);
        let reply = held.map(|()| crate::stacks::walk_all(&run.mem, code, &run.gate.held(run.all_vcpus_mask())));
        run.gate.open();
        let mut v = reply.map_err(|missing| {
            QmpError::generic(format!("vCPUs (mask {missing:#x}) did not stop within {} ms", limit.as_millis()))
        })?;
        v["held_us"] = json!(t.elapsed().as_micros() as u64);
        Ok(v)
    }

    fn reset_latency(&mut self) -> Result<Value, QmpError> {
        match self.run.telemetry.borrow_mut().request_reset() {
            Ok(()) => Ok(json!({})),
            Err(e) => Err(QmpError::generic(format!("cannot reset the latency statistics: {e}"))),
        }
    }

    /// A switch ended: the waiting client's reply (a `set-mode` that
    /// started it), the event to every client, then the telemetry read
    /// that follows every switch (armed: `Switching::after_switch`).
    fn on_switch_finished(&mut self, f: Finished, ops: &mut EventOps) {
        let (reply, event) = self.switch_end_messages(&f);
        if let Some((client, text)) = reply {
            self.send(client, &text, ops);
        }
        self.emit(event.0, event.1, ops);
        if f.record.path.fast {
            self.switching.borrow().after_fast_switch();
        }
        self.switching.borrow_mut().after_switch();
    }

    /// The reply to the client waiting for switch `f` (if it started it
    /// and waits), and the event for every client.
    fn switch_end_messages(&mut self, f: &Finished) -> (Option<(ClientId, String)>, (&'static str, Value)) {
        let r = &f.record;
        let data = serde_json::to_value(r).unwrap_or(Value::Null);
        let waiter = self.waiters.iter().position(|w| w.seq == r.seq).map(|i| self.waiters.remove(i));
        let reply = match (f.origin, waiter) {
            (Origin::Client(_), Some(w)) => {
                let text = if r.ok {
                    let mut v = data.clone();
                    let sites = SiteCounts::of(self.switching.borrow().coordinator().sites());
                    if let Some(o) = v.as_object_mut() {
                        o.insert("mode".into(), json!(r.to));
                        o.insert("changed".into(), json!(true));
                        o.insert("sites_by_dimension".into(), json!(sites));
                    }
                    protocol::reply_ok(v, w.id.as_ref())
                } else {
                    protocol::reply_err(
                        &QmpError::generic(format!("switch to {} failed: {}", r.to, r.reason)),
                        w.id.as_ref(),
                    )
                };
                Some((w.client, text))
            }
            _ => None,
        };
        (reply, (if r.ok { "MODE_SWITCHED" } else { "SWITCH_FAILED" }, data))
    }

    /// At the end of the run, outside the event loop: tells every client
    /// the VM is gone (QEMU's `SHUTDOWN` event, with why), and a client
    /// waiting for a switch that it failed; waits a little for the clients
    /// to take it before the sockets close.
    pub fn announce_shutdown(&mut self, cause: ShutdownCause) {
        // A switch that ended in the loop's last turn: its reply and event first.
        for f in self.ends.take() {
            let (reply, (name, data)) = self.switch_end_messages(&f);
            if let Some((client, text)) = reply {
                let _ = self.api.send(client, &text);
            }
            let _ = self.api.broadcast(&protocol::event(name, data, SystemTime::now()));
        }
        for w in std::mem::take(&mut self.waiters) {
            let e = QmpError::generic("the VM shut down before the switch completed");
            let _ = self.api.send(w.client, &protocol::reply_err(&e, w.id.as_ref()));
        }
        let _ = self.api.broadcast(&protocol::event("SHUTDOWN", cause.event_data(), SystemTime::now()));
        self.api.flush_all(SHUTDOWN_FLUSH);
    }
}

/// `x-cancel-switch`: the reply to what the coordinator did, and the step
/// to take after it.
fn cancel_reply(cancel: Cancel) -> (Value, Option<crate::switch::Step>) {
    match cancel {
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

impl MutEventSubscriber for ControlSocket {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let fd = events.fd();
        if fd == self.ends.fd() {
            for f in self.ends.take() {
                self.on_switch_finished(f, ops);
            }
        } else if fd == self.sweep.as_raw_fd() {
            self.on_sweep(ops);
        } else if fd == self.backoff.as_raw_fd() {
            let _ = self.backoff.wait();
            super::fds::watch_all(ops, [self.api.listener_fd()]);
        } else {
            self.on_api_event(fd, events.event_set(), ops);
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        super::fds::watch_all(
            ops,
            [
                self.api.listener_fd(),
                self.api.backlog_fd(),
                self.ends.fd(),
                self.sweep.as_raw_fd(),
                self.backoff.as_raw_fd(),
            ],
        );
    }
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
