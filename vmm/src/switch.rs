//! The runtime mode switch, VMM side: a stop-machine driven from the
//! hypervisor (docs/ARCHITECTURE.md, "The runtime switch"). Runs on the control thread.
//!
//! ```text
//!  request(target)           mailbox {seq, target, REQUESTED}, MSI + kick vCPU 0
//!    guest freezes tasks  -> mailbox FREEZING ... QUIESCENT, HC_SWITCH
//!  on_guest_notify(),        close the gate, kick every vCPU, wait until all are held
//!   state QUIESCENT:         (blackout starts), re-check: mailbox, lock registry
//!                            (held == 0, waiters == 0), every registered lock word
//!                            free and no task in a lock slow path (`locks`),
//!                            every site's bytes (plan);
//!                            patch all sites, mailbox DONE (or CANCELLED: nothing
//!                            written), open the gate (blackout ends)
//!    guest serializes CPUs, thaws -> mailbox COMPLETE, HC_SWITCH (then opens the new mode's epoch)
//!  on_guest_notify(),        record timings; the control thread replies and emits
//!   state COMPLETE:          MODE_SWITCHED / SWITCH_FAILED
//!  on_deadline():            quiesce deadline passed: mailbox CANCELLED (nothing
//!                            patched), error names the task the guest waited for
//! ```
//!
//! One switch at a time: a request while one runs is refused as busy; a
//! request for the current mode is a no-op success. Failure always means
//! "nothing changed": no byte is written unless every check passed.

pub mod distribution;
pub mod fast;
pub mod history;
pub mod locks;
pub mod tasks;

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use switcher::abi::{self, LockRegistry, MailboxState, MailboxWriter, SwitchMailbox};
use switcher::patch::{PatchError, SiteTable};
use switcher::profile::Profile;
use vm_memory::{Bytes, GuestAddress};

use self::history::SwitchHistory;
use crate::vstate::hold::{Capture, HoldGate};
use crate::vstate::memory::{self, Abi, GuestMemory, GuestView};
use switcher::stackwalk::GuestCode;

/// Why a switch (or a pause-resume) failed. Every switch failure means
/// nothing changed, and says so; the text is the switch record's `reason`.
#[derive(Debug, thiserror::Error)]
pub enum SwitchFailure {
    /// The hold gate closed but some vCPUs never parked (pause-resume).
    #[error("vCPU(s) {cpus} did not stop within {ms} ms")]
    NotHeld { cpus: String, ms: u128 },
    /// The same, during a switch's stop-machine.
    #[error("vCPU(s) {cpus} did not stop within {ms} ms; nothing was patched")]
    NotStopped { cpus: String, ms: u128 },
    #[error("the switch mailbox is unreadable")]
    MailboxUnreadable,
    #[error("the mailbox changed under the switch (seq {seq}, state {}); nothing was patched", state_name(*.state))]
    MailboxChanged { seq: u64, state: u32 },
    #[error("the lock registry is unreadable")]
    RegistryUnreadable,
    #[error("the guest's lock registry is not initialised; nothing was patched")]
    RegistryUninitialised,
    #[error(
        "the guest claimed quiescence but its lock registry shows {held} held and {waiters} waiting; nothing was patched"
    )]
    RegistryBusy { held: u64, waiters: u64 },
    #[error("the guest claimed quiescence but {0}; nothing was patched, the mode is unchanged")]
    LockWord(#[source] locks::LockWordError),
    #[error("the guest claimed quiescence but {0}; nothing was patched, the mode is unchanged")]
    Tasks(#[source] tasks::TaskCheckError),
    #[error(
        "{0} at every one of {attempts} holds; nothing was patched, the mode is unchanged",
        attempts = RIP_HOLDS
    )]
    InSwitchableCode(tasks::InSwitchableCode),
    /// A site's bytes were not what the plan expects (nothing written).
    #[error(transparent)]
    Plan(PatchError),
    #[error("patching failed after every check passed: {0}")]
    Patch(#[source] PatchError),
    /// The guest's freeze did not finish before the quiesce deadline.
    #[error("{blocker} within {ms} ms{held}; nothing was patched, the mode is unchanged")]
    Quiesce { blocker: String, ms: u128, held: String },
    #[error(
        "cancelled by a client (x-cancel-switch) after {ms} ms{waiting}; nothing was patched, the mode is unchanged"
    )]
    Cancelled { ms: u128, waiting: String },
    #[error("the guest did not acknowledge the switch within {ms} ms (mailbox state {})", state_name(*.state))]
    NoAck { ms: u128, state: u32 },
}

/// Holds a switch tries before it gives up on vCPUs that keep stopping in
/// switchable code (exempt tasks and interrupt handlers run through a
/// switch: being there is no error, only no time to patch).
pub const RIP_HOLDS: usize = 20;
/// How long the vCPUs run between two such holds.
const RIP_RETRY_PAUSE: Duration = Duration::from_micros(200);

/// Who asked for a switch (for the reply).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A control-socket client, by id.
    Client(u64),
    /// `--switch-every`.
    Timer,
}

/// Timings of one switch, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchTimings {
    /// Request -> the guest reported quiescence.
    pub freeze_us: u64,
    /// First vCPU held -> last vCPU released.
    pub blackout_us: u64,
    /// Request -> the guest acknowledged (thawed): what the client waits.
    pub total_us: u64,
}

/// Where the guest's part of a completed switch went, from the TSC stamps
/// it leaves in the mailbox (µs). The stamps are guest input: a set that
/// is missing a step or runs backwards gives no phases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestPhases {
    /// Request seen -> quiescent: the freeze proper.
    pub guest_freeze_us: u64,
    /// Quiescent -> the verdict seen: the hypercall, the VMM's stop-machine
    /// (the blackout) and the control thread waking up.
    pub verdict_us: u64,
    /// Verdict -> every other CPU serialized (IPIs acknowledged).
    pub serialize_us: u64,
    /// Serialized -> every task thawed.
    pub thaw_us: u64,
    /// The rest of the total: the request reaching the guest's control
    /// thread and the acknowledgement reaching the VMM.
    pub messaging_us: u64,
}

impl GuestPhases {
    /// From the mailbox's stamps, `tsc_khz` and the switch's total.
    pub fn from_stamps(m: &SwitchMailbox, tsc_khz: u32, total_us: u64) -> Option<Self> {
        let t = [m.seen_tsc, m.quiescent_tsc, m.verdict_tsc, m.serialized_tsc, m.thawed_tsc];
        if tsc_khz == 0 || t[0] == 0 || t.windows(2).any(|w| w[1] < w[0]) {
            return None;
        }
        let us = |a: u64, b: u64| (b - a).saturating_mul(1000) / u64::from(tsc_khz);
        let guest = us(t[0], t[4]);
        Some(Self {
            guest_freeze_us: us(t[0], t[1]),
            verdict_us: us(t[1], t[2]),
            serialize_us: us(t[2], t[3]),
            thaw_us: us(t[3], t[4]),
            messaging_us: total_us.saturating_sub(guest),
        })
    }
}

/// One switch, as `query-switches` and the report show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwitchRecord {
    pub seq: u64,
    /// Mode names (`mainline`, `rt`).
    pub from: String,
    pub to: String,
    pub ok: bool,
    /// Why it failed (empty on success).
    pub reason: String,
    #[serde(flatten)]
    pub timings: SwitchTimings,
    /// Sites rewritten (0 when it failed).
    pub sites_patched: usize,
    /// Seconds since the run started, when requested.
    pub requested_at_s: f64,
    /// The guest's steps of a completed switch (`None`: failed, fast, or
    /// stamps unusable).
    pub phases: Option<GuestPhases>,
    /// Which path it took, and why not the fast one.
    #[serde(default)]
    pub path: SwitchPath,
}

/// Which path a switch took (`fast`: one blackout, `switch::fast`;
/// otherwise the cooperative freeze), and, when the fast path was tried
/// and refused, the first check that failed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchPath {
    pub fast: bool,
    /// Holds the fast path tried (0: not tried, or refused by its look at
    /// the lock words before any hold).
    #[serde(default)]
    pub holds: u32,
    /// The refusal (bounded: [`REFUSAL_CHARS`]).
    pub refused: Option<String>,
    /// The check that refused it ([`fast::Refusal::check`]).
    pub refused_by: Option<String>,
    /// Where a fast switch's blackout went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blackout: Option<fast::BlackoutSteps>,
    /// A refused fast path: how long it took (its look at the lock
    /// words, its holds and the pauses between them) before the
    /// cooperative switch started. Counted in `freeze_us` and `total_us`,
    /// not in the guest's phases.
    #[serde(default)]
    pub fast_us: u64,
    /// Who made every CPU serialize before it could run the patched
    /// bytes: `vmm` (each vCPU resumed through an IRETQ frame, in the
    /// hold that patched: every fast switch, and a cooperative one when
    /// it could) or `guest` (its serialize IPIs, acknowledged). Absent
    /// when nothing was patched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serialized_by: Option<String>,
    /// A cooperative switch the VMM could not serialize: why (the guest
    /// serialized instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmm_serialize_refused: Option<String>,
}

/// The longest refusal a record keeps.
pub const REFUSAL_CHARS: usize = 240;

/// [`SwitchPath::serialized_by`]: each vCPU resumed through an IRETQ frame.
pub const SERIALIZED_BY_VMM: &str = "vmm";
/// [`SwitchPath::serialized_by`]: the guest's serialize IPIs.
pub const SERIALIZED_BY_GUEST: &str = "guest";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SwitchError {
    #[error("a mode switch is already in progress (to {0}); try again when it completes")]
    Busy(&'static str),
    #[error("the guest cannot take a switch yet: {0}")]
    NotReady(&'static str),
    #[error("the guest is still booting; try again when it is ready")]
    Booting,
    #[error("the guest has not started (--paused): send `cont` first")]
    NotStarted,
    #[error(
        "the guest's switch mailbox is in state {0}, from which no switch may be requested (the guest never \
         acknowledged its last switch?); restart the VM to switch again"
    )]
    MailboxBusy(String),
    #[error("the VM is shutting down; no switch now")]
    ShuttingDown,
}

/// Deadlines of a switch.
#[derive(Clone, Copy, Debug)]
pub struct SwitchLimits {
    /// Request -> quiescent.
    pub quiesce: Duration,
    /// Gate closed -> every vCPU held.
    pub vcpu_stop: Duration,
    /// Cancel or DONE -> the guest's COMPLETE.
    pub guest_ack: Duration,
}

impl Default for SwitchLimits {
    fn default() -> Self {
        Self {
            quiesce: Duration::from_secs(2),
            vcpu_stop: Duration::from_millis(500),
            guest_ack: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the guest to quiesce.
    Freezing,
    /// Patched (or cancelled); waiting for the guest to thaw and ack.
    Resuming,
}

#[derive(Debug)]
struct Active {
    seq: u64,
    from: Profile,
    to: Profile,
    origin: Origin,
    requested: Instant,
    requested_at_s: f64,
    phase: Phase,
    freeze_us: u64,
    blackout_us: u64,
    sites_patched: usize,
    /// Set when the switch was cancelled (nothing patched).
    failure: Option<SwitchFailure>,
    deadline: Instant,
    /// Why the fast path was not taken.
    path: SwitchPath,
}

/// What a completed (or failed) switch produced.
#[derive(Debug)]
pub struct Finished {
    pub origin: Origin,
    pub record: Box<SwitchRecord>,
}

/// What the control thread must do after asking the coordinator something.
#[derive(Debug)]
pub enum Step {
    /// Nothing yet.
    Wait,
    /// Send the switch interrupt to CPU 0 (the mailbox changed).
    Notify,
    /// The switch ended.
    Finished(Finished),
}

/// What [`Coordinator::cancel`] did.
#[derive(Debug)]
pub enum Cancel {
    /// No switch runs.
    NoSwitch,
    /// Switch `seq` is past its verdict: it completes (`patched`) or is
    /// already being cancelled.
    PastVerdict { seq: u64, patched: bool },
    /// Switch `seq` is cancelled; `step` tells the guest.
    Cancelled { seq: u64, step: Step },
}

/// Everything the coordinator needs of the VM, lent per call.
pub struct VmAccess<'a> {
    pub mem: &'a GuestMemory,
    /// The guest kernel's code as the stack walker needs it (the fast
    /// path), or why there is none.
    pub code: Result<&'a GuestCode, &'a str>,
    pub gate: &'a HoldGate,
    /// Kicks every vCPU out of guest mode.
    pub kick_all: &'a dyn Fn(),
    pub all_vcpus_mask: u64,
}

pub struct Coordinator {
    sites: SiteTable,
    mode: Profile,
    next_seq: u64,
    active: Option<Active>,
    /// Every switch that ended: the newest records and exact totals.
    history: SwitchHistory,
    limits: SwitchLimits,
    run_started: Instant,
    /// The guest's TSC frequency: its mailbox stamps to µs.
    tsc_khz: u32,
    /// Whether a switch tries the fast path (one blackout) first.
    fast_path: bool,
}

/// What a request did.
#[derive(Debug)]
pub enum Requested {
    /// Already in the target mode.
    Unchanged,
    /// A cooperative switch `seq` runs (the fast path was refused, or
    /// not tried).
    Started(u64),
    /// Switched in one blackout.
    Finished(Finished),
}

impl Coordinator {
    pub fn new(sites: SiteTable, mode: Profile, limits: SwitchLimits, run_started: Instant, tsc_khz: u32) -> Self {
        Self {
            sites,
            mode,
            next_seq: 1,
            active: None,
            history: SwitchHistory::default(),
            limits,
            run_started,
            tsc_khz,
            fast_path: true,
        }
    }

    /// Whether switches try the fast path first (on by default).
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast_path = on;
    }

    /// Starts a switch to `target`: the fast path first (`fast`), and the
    /// cooperative switch when it is refused.
    pub fn request_with(
        &mut self,
        target: Profile,
        origin: Origin,
        vm: &mut VmAccess<'_>,
    ) -> Result<Requested, SwitchError> {
        if !self.fast_path {
            return Ok(self.request(target, origin, vm.mem)?.map_or(Requested::Unchanged, Requested::Started));
        }
        if let Some(a) = &self.active {
            return Err(SwitchError::Busy(a.to.name()));
        }
        let mbox = read_mailbox(vm.mem).ok_or(SwitchError::NotReady("its switch mailbox is not initialised"))?;
        if mbox.magic != abi::ABI_MAGIC {
            return Err(SwitchError::NotReady("its switch mailbox is not initialised (still booting?)"));
        }
        if target == self.mode {
            return Ok(Requested::Unchanged);
        }
        if MailboxState::next(mbox.state, MailboxState::Requested, MailboxWriter::Vmm).is_none() {
            return Err(SwitchError::MailboxBusy(state_name(mbox.state)));
        }
        let now = Instant::now();
        let seq = self.next_seq;
        let (code, limit) = (vm.code, self.limits.vcpu_stop);
        match fast::attempt(&self.sites, code, vm, seq, self.mode, target, limit) {
            Ok(done) => {
                self.next_seq += 1;
                let record = SwitchRecord {
                    seq,
                    from: self.mode.name().into(),
                    to: target.name().into(),
                    ok: true,
                    reason: String::new(),
                    timings: SwitchTimings {
                        freeze_us: 0,
                        blackout_us: done.blackout_us,
                        total_us: now.elapsed().as_micros() as u64,
                    },
                    sites_patched: done.sites_patched,
                    requested_at_s: now.duration_since(self.run_started).as_secs_f64(),
                    phases: None,
                    path: SwitchPath {
                        fast: true,
                        holds: done.holds,
                        refused: None,
                        refused_by: None,
                        blackout: Some(done.steps),
                        fast_us: 0,
                        serialized_by: Some(SERIALIZED_BY_VMM.into()),
                        vmm_serialize_refused: None,
                    },
                };
                self.mode = target;
                self.history.push(record.clone());
                Ok(Requested::Finished(Finished { origin, record: Box::new(record) }))
            }
            Err(fast::Refused { refusal, holds }) => {
                log::debug!("switch seq {seq}: fast path refused ({refusal}); switching cooperatively");
                let path = SwitchPath {
                    fast: false,
                    holds,
                    refused: Some(refusal.to_string().chars().take(REFUSAL_CHARS).collect()),
                    refused_by: Some(refusal.check().to_string()),
                    blackout: None,
                    fast_us: now.elapsed().as_micros() as u64,
                    serialized_by: None,
                    vmm_serialize_refused: None,
                };
                let seq = self.request(target, origin, vm.mem)?;
                if let Some(a) = self.active.as_mut() {
                    // The client has waited since `now`: the switch's
                    // times count the refused fast path too.
                    a.requested = now;
                    a.requested_at_s = now.duration_since(self.run_started).as_secs_f64();
                    a.path = path;
                }
                Ok(seq.map_or(Requested::Unchanged, Requested::Started))
            }
        }
    }

    pub fn mode(&self) -> Profile {
        self.mode
    }

    pub fn in_progress(&self) -> Option<Profile> {
        self.active.as_ref().map(|a| a.to)
    }

    pub fn limits(&self) -> SwitchLimits {
        self.limits
    }

    pub fn history(&self) -> &SwitchHistory {
        &self.history
    }

    pub fn sites(&self) -> &SiteTable {
        &self.sites
    }

    /// The earliest deadline of the switch in progress.
    pub fn deadline(&self) -> Option<Instant> {
        self.active.as_ref().map(|a| a.deadline)
    }

    /// Starts a switch to `target`. `Ok(None)`: already in `target`.
    pub fn request(&mut self, target: Profile, origin: Origin, mem: &GuestMemory) -> Result<Option<u64>, SwitchError> {
        if let Some(a) = &self.active {
            return Err(SwitchError::Busy(a.to.name()));
        }
        let mbox = read_mailbox(mem).ok_or(SwitchError::NotReady("its switch mailbox is not initialised"))?;
        if mbox.magic != abi::ABI_MAGIC {
            return Err(SwitchError::NotReady("its switch mailbox is not initialised (still booting?)"));
        }
        if target == self.mode {
            return Ok(None);
        }
        if MailboxState::next(mbox.state, MailboxState::Requested, MailboxWriter::Vmm).is_none() {
            return Err(SwitchError::MailboxBusy(state_name(mbox.state)));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let now = Instant::now();
        // seq and target first, state last: the guest acts on the state.
        write_u64(mem, std::mem::offset_of!(SwitchMailbox, seq), seq);
        write_u32(mem, abi::SWITCH_MAILBOX_ADDR + std::mem::offset_of!(SwitchMailbox, target) as u64, target.code());
        move_mailbox(mem, MailboxState::Requested);
        self.active = Some(Active {
            seq,
            from: self.mode,
            to: target,
            origin,
            requested: now,
            requested_at_s: now.duration_since(self.run_started).as_secs_f64(),
            phase: Phase::Freezing,
            freeze_us: 0,
            blackout_us: 0,
            sites_patched: 0,
            failure: None,
            deadline: now + self.limits.quiesce,
            path: SwitchPath::default(),
        });
        Ok(Some(seq))
    }

    /// The guest made HC_SWITCH: look at the mailbox and act.
    pub fn on_guest_notify(&mut self, vm: &mut VmAccess<'_>) -> Step {
        let Some(mbox) = read_mailbox(vm.mem) else { return Step::Wait };
        let Some(active) = self.active.as_mut() else {
            if self.next_seq == 1 {
                // No switch was ever requested: no late notification of
                // one (a race the protocol allows, below) can explain it.
                crate::guest_misbehaved!(
                    "switch notification before any switch",
                    "guest switch notification (state {}) with no switch in progress; ignored (none was ever \
                     requested)",
                    mbox.state
                );
            } else {
                crate::warn_limited!(
                    "switch notification without a switch",
                    "guest switch notification (state {}) with no switch in progress; ignored",
                    mbox.state
                );
            }
            return Step::Wait;
        };
        if mbox.seq != active.seq {
            crate::warn_limited!(
                "switch notification for another switch",
                "guest switch notification for seq {} while seq {} runs; ignored",
                mbox.seq,
                active.seq
            );
            return Step::Wait;
        }
        match (active.phase, MailboxState::from_u32(mbox.state)) {
            (Phase::Freezing, Some(MailboxState::Quiescent)) => {
                active.freeze_us = active.requested.elapsed().as_micros() as u64;
                self.stop_machine(vm);
                // Wake the guest's switch thread: the verdict is in.
                Step::Notify
            }
            (Phase::Resuming, Some(MailboxState::Complete)) => Step::Finished(self.finish(vm.mem)),
            (phase, _) => {
                log::debug!("switch seq {}: guest state {} in phase {phase:?}", active.seq, state_name(mbox.state));
                Step::Wait
            }
        }
    }

    /// Holds every vCPU outside switchable code and every task marked
    /// frozen asleep (`tasks::rips`, `tasks::check`: a vCPU that stopped
    /// inside, or a frozen task caught awake, is let run a little and held
    /// again, at most [`RIP_HOLDS`] times), re-checks, patches all sites or
    /// none, releases.
    fn stop_machine(&mut self, vm: &mut VmAccess<'_>) {
        let Some(active) = self.active.as_mut() else { return };
        let t_close = Instant::now();
        let deadline = t_close + self.limits.vcpu_stop;
        let mut held = Err(0);
        // With the registers read, the hold can also make every vCPU
        // serialize as it resumes (`fast::serialize_on_release`).
        let capture = if vm.code.is_ok() { Capture::Full } else { Capture::Rip };
        for hold in 1..=RIP_HOLDS {
            vm.gate.close_with(capture);
            (vm.kick_all)();
            held = match vm.gate.wait_all_held(vm.all_vcpus_mask, deadline) {
                Err(missing) => Err(missing),
                Ok(()) => {
                    let inside = tasks::rips(&self.sites, &vm.gate.held_rips(vm.all_vcpus_mask)).first().copied();
                    // A task marked frozen but caught awake: a wake-up
                    // in the thaw's wait (a stale timer, say) that leads it
                    // straight back to sleep there. Held again, it sleeps;
                    // one that stays awake fails the check below.
                    let awake = match inside {
                        None => tasks::check(vm.mem).err().filter(tasks::TaskCheckError::is_awake),
                        Some(_) => None,
                    };
                    if hold < RIP_HOLDS && (inside.is_some() || awake.is_some()) {
                        let why =
                            inside.map_or_else(|| awake.map(|e| e.to_string()).unwrap_or_default(), |i| i.to_string());
                        log::debug!("switch seq {}: {why}; holding again", active.seq);
                        vm.gate.open();
                        std::thread::sleep(RIP_RETRY_PAUSE);
                        continue;
                    }
                    Ok(inside)
                }
            };
            break;
        }
        let outcome = match held {
            Err(missing) => {
                Err(SwitchFailure::NotStopped { cpus: mask_list(missing), ms: self.limits.vcpu_stop.as_millis() })
            }
            Ok(Some(inside)) => Err(SwitchFailure::InSwitchableCode(inside)),
            Ok(None) => {
                let t_held = Instant::now();
                let r = check_and_patch(&self.sites, vm.mem, active.seq, active.from, active.to);
                log::debug!(
                    "switch seq {}: vCPUs stopped in {} us, checks and patch took {} us",
                    active.seq,
                    t_held.duration_since(t_close).as_micros(),
                    t_held.elapsed().as_micros()
                );
                r
            }
        };
        match outcome {
            Ok(n) => {
                active.sites_patched = n;
                let serialized = match vm.code {
                    Ok(code) => fast::serialize_on_release(vm.mem, code, vm.gate, &vm.gate.held(vm.all_vcpus_mask)),
                    Err(why) => Err(fast::Refusal::NoGuestCode(why.to_string())),
                };
                // Before DONE: the guest reads it once it sees DONE.
                write_u32(vm.mem, MBOX_VMM_SERIALIZED, u32::from(serialized.is_ok()));
                match serialized {
                    Ok(()) => active.path.serialized_by = Some(SERIALIZED_BY_VMM.into()),
                    Err(why) => {
                        log::debug!("switch seq {}: the guest serializes its CPUs ({why})", active.seq);
                        active.path.serialized_by = Some(SERIALIZED_BY_GUEST.into());
                        active.path.vmm_serialize_refused = Some(why.to_string().chars().take(REFUSAL_CHARS).collect());
                    }
                }
                move_mailbox(vm.mem, MailboxState::Done);
                self.mode = active.to;
            }
            Err(why) => {
                active.failure = Some(why);
                move_mailbox(vm.mem, MailboxState::Cancelled);
            }
        }
        vm.gate.open();
        active.blackout_us = t_close.elapsed().as_micros() as u64;
        active.phase = Phase::Resuming;
        active.deadline = Instant::now() + self.limits.guest_ack;
    }

    /// A client asked to cancel the switch in progress (`x-cancel-switch`,
    /// `ctl mode` interrupted by Ctrl-C). While the guest is still freezing
    /// it is cancelled exactly as at its quiesce deadline: mailbox
    /// CANCELLED, nothing patched, the guest thaws in the old mode, and the
    /// switch ends (reply and `SWITCH_FAILED`) once the guest acknowledges.
    /// Past the verdict (sites patched, or already cancelled) nothing can
    /// be undone: the switch completes as it is.
    pub fn cancel(&mut self, mem: &GuestMemory) -> Cancel {
        let Some(active) = self.active.as_mut() else { return Cancel::NoSwitch };
        if active.phase != Phase::Freezing {
            return Cancel::PastVerdict { seq: active.seq, patched: active.failure.is_none() };
        }
        let mbox = read_mailbox(mem).unwrap_or(SwitchMailbox::zeroed());
        let waiting = if mbox.seq == active.seq && mbox.state != MailboxState::Quiescent as u32 {
            format!(" (while freezing: {})", blocker(&mbox))
        } else {
            String::new()
        };
        active.failure = Some(SwitchFailure::Cancelled { ms: active.requested.elapsed().as_millis(), waiting });
        move_mailbox(mem, MailboxState::Cancelled);
        active.phase = Phase::Resuming;
        active.deadline = Instant::now() + self.limits.guest_ack;
        Cancel::Cancelled { seq: active.seq, step: Step::Notify }
    }

    /// The deadline of the switch in progress passed.
    pub fn on_deadline(&mut self, mem: &GuestMemory) -> Step {
        let Some(active) = self.active.as_mut() else { return Step::Wait };
        if Instant::now() < active.deadline {
            return Step::Wait;
        }
        match active.phase {
            Phase::Freezing => {
                let mbox = read_mailbox(mem).unwrap_or(SwitchMailbox::zeroed());
                active.failure = Some(quiesce_failure(&mbox, self.limits.quiesce, &locks::held(mem)));
                move_mailbox(mem, MailboxState::Cancelled);
                active.phase = Phase::Resuming;
                active.deadline = Instant::now() + self.limits.guest_ack;
                Step::Notify
            }
            Phase::Resuming => {
                // The guest never acknowledged: record the failure; the
                // mode is whatever was patched (the guest may be wedged).
                let why = SwitchFailure::NoAck {
                    ms: self.limits.guest_ack.as_millis(),
                    state: read_mailbox(mem).map_or(u32::MAX, |m| m.state),
                };
                active.failure.get_or_insert(why);
                Step::Finished(self.finish(mem))
            }
        }
    }

    fn finish(&mut self, mem: &GuestMemory) -> Finished {
        let Some(a) = self.active.take() else {
            unreachable!("finish without an active switch");
        };
        let mbox = read_mailbox(mem);
        if let Some(m) = mbox
            && a.failure.is_none()
            && m.mode != a.to.code()
        {
            log::warn!("guest reports mode {} after a switch to {}", m.mode, a.to.name());
        }
        let total_us = a.requested.elapsed().as_micros() as u64;
        let phases = match (&mbox, a.failure.is_none()) {
            (Some(m), true) => GuestPhases::from_stamps(m, self.tsc_khz, total_us.saturating_sub(a.path.fast_us)),
            _ => None,
        };
        let record = SwitchRecord {
            seq: a.seq,
            from: a.from.name().into(),
            to: a.to.name().into(),
            ok: a.failure.is_none(),
            reason: a.failure.map(|e| e.to_string()).unwrap_or_default(),
            timings: SwitchTimings { freeze_us: a.freeze_us, blackout_us: a.blackout_us, total_us },
            sites_patched: a.sites_patched,
            requested_at_s: a.requested_at_s,
            phases,
            path: a.path,
        };
        self.history.push(record.clone());
        Finished { origin: a.origin, record: Box::new(record) }
    }
}

/// Holds every vCPU and releases it, changing nothing: what the blackout
/// of a switch costs on this platform without its checks and patch.
/// Returns the blackout in µs, or which vCPUs did not stop.
pub fn pause_resume(
    gate: &HoldGate,
    kick_all: &dyn Fn(),
    all_mask: u64,
    limit: Duration,
) -> Result<u64, SwitchFailure> {
    let t = Instant::now();
    gate.close();
    kick_all();
    let held = gate.wait_all_held(all_mask, t + limit);
    gate.open();
    let us = t.elapsed().as_micros() as u64;
    held.map(|()| us).map_err(|missing| SwitchFailure::NotHeld { cpus: mask_list(missing), ms: limit.as_millis() })
}

/// min / p50 / p99 / max of a set of µs figures (nearest rank).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Spread {
    pub min_us: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Spread {
    pub fn of(values: &mut [u64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        let rank = |pm: u64| values[crate::stats::nearest_rank(values.len() as u64, pm * 1000) as usize - 1];
        Some(Self { min_us: values[0], p50_us: rank(500), p99_us: rank(990), max_us: values[values.len() - 1] })
    }

    pub fn describe_ms(&self) -> String {
        format!(
            "{:.3} / {:.3} / {:.3} / {:.3} ms",
            self.min_us as f64 / 1e3,
            self.p50_us as f64 / 1e3,
            self.p99_us as f64 / 1e3,
            self.max_us as f64 / 1e3
        )
    }
}

/// The end-of-run lines about the switches (none when there were none):
/// exact counts, timings over every completed switch (percentiles to
/// within 1.6 %), and the last failures still on record.
pub fn summary(history: &SwitchHistory) -> Option<String> {
    let t = history.totals();
    if t.recorded == 0 {
        return None;
    }
    let mut out = format!(
        "mode switches: {} requested, {} completed, {} failed (nothing changed)",
        t.recorded, t.completed, t.failed
    );
    if t.completed > 0 {
        out.push_str(&format!(
            "\n  fast path (one blackout): {} of {} completed ({:.0} %)",
            t.fast,
            t.completed,
            t.fast as f64 * 100.0 / t.completed as f64
        ));
        if !t.fast_refused_by.is_empty() {
            let by: Vec<String> = t.fast_refused_by.iter().map(|(k, v)| format!("{k} {v}")).collect();
            out.push_str(&format!("; refused, by the first check that failed: {}", by.join(", ")));
        }
    }
    for (name, d) in history.timings() {
        if let Some(s) = d.spread() {
            out.push_str(&format!("\n  {name:<8} min / p50 / p99 / max: {}", s.describe_ms()));
        }
    }
    let failures: Vec<&SwitchRecord> = history.retained().filter(|r| !r.ok).collect();
    for r in failures.iter().rev().take(5).rev() {
        out.push_str(&format!("\n  switch #{} {} -> {} failed: {}", r.seq, r.from, r.to, r.reason));
    }
    let unlisted = t.failed - failures.len().min(5) as u64;
    if unlisted > 0 {
        out.push_str(&format!("\n  ({unlisted} earlier failures not shown)"));
    }
    Some(out)
}

/// The checks that must all pass, with every vCPU held, before any byte is
/// written; then the patch. Returns the number of sites rewritten.
fn check_and_patch(
    sites: &SiteTable,
    mem: &GuestMemory,
    seq: u64,
    from: Profile,
    to: Profile,
) -> Result<usize, SwitchFailure> {
    let mbox = read_mailbox(mem).ok_or(SwitchFailure::MailboxUnreadable)?;
    if mbox.seq != seq || mbox.state != MailboxState::Quiescent as u32 {
        return Err(SwitchFailure::MailboxChanged { seq: mbox.seq, state: mbox.state });
    }
    let reg: LockRegistry = memory::read_abi(mem, abi::LOCK_REGISTRY_ADDR).ok_or(SwitchFailure::RegistryUnreadable)?;
    if reg.magic != abi::ABI_MAGIC {
        return Err(SwitchFailure::RegistryUninitialised);
    }
    if reg.held != 0 || reg.waiters != 0 {
        return Err(SwitchFailure::RegistryBusy { held: reg.held, waiters: reg.waiters });
    }
    // The counters are advisory; the lock words and the tasks' own state
    // are the truth.
    locks::check(mem).map_err(SwitchFailure::LockWord)?;
    tasks::check(mem).map_err(SwitchFailure::Tasks)?;
    let text = GuestView::new(mem);
    let plan = sites.plan(&text, from, to).map_err(SwitchFailure::Plan)?;
    plan.apply(&text).map_err(SwitchFailure::Patch)
}

/// The error for a guest that did not quiesce in time, naming the task.
/// The freeze did not complete in `limit`: what it waited for, and the
/// locks held then (by name, with their owners; at most [`NAMED_LOCKS`]).
fn quiesce_failure(mbox: &SwitchMailbox, limit: Duration, held: &[(String, locks::Owner)]) -> SwitchFailure {
    let mut named = String::new();
    if !held.is_empty() {
        let locks: Vec<String> =
            held.iter().take(NAMED_LOCKS).map(|(lock, owner)| format!("'{lock}' by {owner}")).collect();
        named = format!("; switchable locks held then: {}", locks.join(", "));
        if held.len() > NAMED_LOCKS {
            named.push_str(&format!(" and {} more", held.len() - NAMED_LOCKS));
        }
    }
    SwitchFailure::Quiesce { blocker: blocker(mbox), ms: limit.as_millis(), held: named }
}

/// Held locks a failed freeze names.
const NAMED_LOCKS: usize = 6;

/// What the guest's freeze waits for, from the mailbox.
fn blocker(mbox: &SwitchMailbox) -> String {
    let name = crate::guest_text::name(&mbox.blocker_name);
    match MailboxState::from_u32(mbox.state) {
        Some(MailboxState::Requested) => "the guest did not start freezing (switch request not seen)".to_string(),
        _ if name.is_empty() => "the guest did not reach quiescence".to_string(),
        _ => format!(
            "task '{name}' on cpu {} did not reach a safe point (it holds {} switchable lock(s))",
            mbox.blocker_cpu, mbox.blocker_locks
        ),
    }
}

fn mask_list(mask: u64) -> String {
    (0..64).filter(|i| mask & (1 << i) != 0).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

fn read_mailbox(mem: &GuestMemory) -> Option<SwitchMailbox> {
    mem.read_obj::<Abi<SwitchMailbox>>(GuestAddress(abi::SWITCH_MAILBOX_ADDR)).ok().map(|a| a.0)
}

/// A mailbox state for messages: its name, or the raw word the guest left.
fn state_name(raw: u32) -> String {
    MailboxState::from_u32(raw).map_or_else(|| format!("{raw:#x} (not a state)"), |s| s.name().to_string())
}

/// Moves the mailbox to `to` if the protocol lets the VMM make that step
/// from the state it holds ([`MailboxState::next`]); otherwise leaves it
/// and says so. Not a compare-and-swap: the guest may move on between the
/// read and the write, but only along steps from which the VMM's step is
/// allowed as well (REQUESTED -> FREEZING -> QUIESCENT, each cancellable),
/// and DONE is written with every vCPU held.
fn move_mailbox(mem: &GuestMemory, to: MailboxState) {
    let at = abi::SWITCH_MAILBOX_ADDR + std::mem::offset_of!(SwitchMailbox, state) as u64;
    let from = read_mailbox(mem).map_or(u32::MAX, |m| m.state);
    if MailboxState::next(from, to, MailboxWriter::Vmm).is_none() {
        crate::warn_limited!(
            "mailbox step refused",
            "the switch mailbox is in state {}: the VMM may not move it to {}; left as it is",
            state_name(from),
            to.name()
        );
        return;
    }
    write_u32(mem, at, to as u32);
}

/// The mailbox's `vmm_serialized` word.
const MBOX_VMM_SERIALIZED: u64 = abi::SWITCH_MAILBOX_ADDR + std::mem::offset_of!(SwitchMailbox, vmm_serialized) as u64;

fn write_u32(mem: &GuestMemory, addr: u64, v: u32) {
    if let Err(e) = memory::write_u32(mem, addr, v) {
        log::error!("cannot write the switch mailbox: {e}");
    }
}

fn write_u64(mem: &GuestMemory, field: usize, v: u64) {
    if let Err(e) = mem.write_obj(v, GuestAddress(abi::SWITCH_MAILBOX_ADDR + field as u64)) {
        log::error!("cannot write the switch mailbox: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_uses_nearest_rank() {
        let s = Spread::of(&mut (1..=100).collect::<Vec<u64>>()).unwrap();
        assert_eq!((s.min_us, s.p50_us, s.p99_us, s.max_us), (1, 50, 99, 100));
        assert_eq!(Spread::of(&mut []), None);
        let one = Spread::of(&mut [7]).unwrap();
        assert_eq!((one.min_us, one.p50_us, one.p99_us, one.max_us), (7, 7, 7, 7));
    }

    #[test]
    fn guest_phases_come_from_sane_stamps_only() {
        let mut m = SwitchMailbox::zeroed();
        // 1 GHz: one tick is 1 ns.
        (m.seen_tsc, m.quiescent_tsc, m.verdict_tsc, m.serialized_tsc, m.thawed_tsc) =
            (1_000_000, 3_000_000, 3_500_000, 4_000_000, 4_250_000);
        let p = GuestPhases::from_stamps(&m, 1_000_000, 5000).unwrap();
        assert_eq!(
            (p.guest_freeze_us, p.verdict_us, p.serialize_us, p.thaw_us, p.messaging_us),
            (2000, 500, 500, 250, 1750)
        );
        // A step not reached, stamps running backwards, or no TSC rate: no phases.
        let mut missing = m;
        missing.serialized_tsc = 0;
        assert_eq!(GuestPhases::from_stamps(&missing, 1_000_000, 5000), None);
        let mut backwards = m;
        backwards.thawed_tsc = 2;
        assert_eq!(GuestPhases::from_stamps(&backwards, 1_000_000, 5000), None);
        assert_eq!(GuestPhases::from_stamps(&m, 0, 5000), None);
        // A guest part longer than the host's total leaves no messaging time.
        assert_eq!(GuestPhases::from_stamps(&m, 1_000_000, 10).map(|p| p.messaging_us), Some(0));
    }

    #[test]
    fn summary_counts_failures() {
        let rec = |seq, ok: bool| SwitchRecord {
            seq,
            from: "mainline".into(),
            to: "rt".into(),
            ok,
            reason: if ok { String::new() } else { "deadline".into() },
            timings: SwitchTimings { freeze_us: 1000 * seq, blackout_us: 300, total_us: 2000 * seq },
            sites_patched: if ok { 41 } else { 0 },
            requested_at_s: 0.0,
            phases: None,
            path: SwitchPath::default(),
        };
        let mut h = SwitchHistory::default();
        assert_eq!(summary(&h), None);
        for r in [rec(1, true), rec(2, false), rec(3, true)] {
            h.push(r);
        }
        let s = summary(&h).unwrap();
        assert!(s.contains("3 requested, 2 completed, 1 failed"), "{s}");
        assert!(s.contains("blackout min / p50 / p99 / max: 0.300"), "{s}");
        assert!(s.contains("switch #2 mainline -> rt failed: deadline"), "{s}");
    }

    fn set_state(mem: &GuestMemory, raw: u32) {
        let mut m = SwitchMailbox::zeroed();
        m.magic = abi::ABI_MAGIC;
        m.state = raw;
        mem.write_obj(Abi(m), GuestAddress(abi::SWITCH_MAILBOX_ADDR)).unwrap();
    }

    fn state(mem: &GuestMemory) -> u32 {
        read_mailbox(mem).unwrap().state
    }

    /// The VMM requests only from IDLE or COMPLETE, and cancels only a
    /// switch the guest is still freezing for; it leaves a mailbox
    /// scribbled over as it is.
    #[test]
    fn the_vmm_takes_only_its_own_steps_of_the_mailbox() {
        let mem = memory::create(64 << 20).unwrap();
        let sites = SiteTable::from_elf(crate::DEFAULT_KERNEL).unwrap();
        let mut c = Coordinator::new(sites, Profile::MAINLINE, SwitchLimits::default(), Instant::now(), 1_000_000);
        for left in [MailboxState::Done, MailboxState::Cancelled, MailboxState::Freezing] {
            set_state(&mem, left as u32);
            let e = c.request(Profile::RT, Origin::Timer, &mem).unwrap_err();
            assert!(e.to_string().contains(&format!("in state {}", left.name())), "{e}");
            assert_eq!(state(&mem), left as u32, "a refused request writes nothing");
        }
        set_state(&mem, MailboxState::Complete as u32);
        assert_eq!(c.request(Profile::RT, Origin::Timer, &mem).unwrap(), Some(1));
        assert_eq!(state(&mem), MailboxState::Requested as u32);
        // The guest scribbled over the word: the cancel leaves it.
        set_state(&mem, 0x1234);
        assert!(matches!(c.cancel(&mem), Cancel::Cancelled { seq: 1, .. }));
        assert_eq!(state(&mem), 0x1234);
    }

    #[test]
    fn failure_messages_name_the_blocker() {
        let mut m = SwitchMailbox::zeroed();
        m.state = MailboxState::Freezing as u32;
        m.blocker_name[..5].copy_from_slice(b"hog-1");
        m.blocker_cpu = 1;
        m.blocker_locks = 1;
        let s = quiesce_failure(&m, Duration::from_millis(500), &[]).to_string();
        assert!(s.contains("task 'hog-1' on cpu 1") && s.contains("holds 1") && s.contains("500 ms"), "{s}");
        assert!(s.contains("nothing was patched"));
        m.state = MailboxState::Requested as u32;
        assert!(quiesce_failure(&m, Duration::from_millis(5), &[]).to_string().contains("request not seen"));
        assert_eq!(mask_list(0b1010), "1, 3");
    }

    #[test]
    fn a_failed_freeze_names_the_locks_held_and_their_owners() {
        let mut m = SwitchMailbox::zeroed();
        m.state = MailboxState::Freezing as u32;
        m.blocker_name[..10].copy_from_slice(b"locktest.1");
        let held: Vec<(String, locks::Owner)> =
            (0..8).map(|i| (format!("lt.{i}"), locks::Owner::Task(format!("locktest.{i}")))).collect();
        let s = quiesce_failure(&m, Duration::from_millis(500), &held[..2]).to_string();
        assert!(
            s.contains("switchable locks held then: 'lt.0' by task 'locktest.0', 'lt.1' by task 'locktest.1'"),
            "{s}"
        );
        let s = quiesce_failure(&m, Duration::from_millis(500), &held).to_string();
        assert!(s.contains("'lt.5' by task 'locktest.5' and 2 more") && !s.contains("'lt.6'"), "{s}");
    }
}
