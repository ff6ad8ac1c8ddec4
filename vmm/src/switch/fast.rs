//! The switch in one blackout (docs/ARCHITECTURE.md, "The fast path"):
//! with every vCPU held once, the VMM proves from memory and registers
//! alone that no task is inside the code it is about to change, patches,
//! makes every vCPU serialize before it can run the changed bytes, and
//! releases. No guest freezer, no acknowledgement. When the proof fails
//! it changes nothing and says which check failed first; the caller then
//! runs the cooperative switch.
//!
//! ```text
//!  hold every vCPU (Capture::Full: registers, CPL, pending events)
//!  1. every vCPU's state read, no event waiting for injection
//!  2. every registered lock word free, no task in a lock slow path (`locks`)
//!  3. the lock registry: nothing held, no waiter (its counters)
//!  4. every task's stack walked reliably (`crate::stacks`): running tasks
//!     from their vCPU, the rest from their saved context
//!  5. no frame of any task in an implementation of a dimension being
//!     switched (the interrupt dispatch included: a task preempted in a
//!     dispatch has its frame on its stack), no rip in a call site's 5
//!     bytes, no return into the middle of one
//!  6. an interrupt frame written below each CPL3 vCPU's rsp (inside its
//!     task's stack)
//!  7. every site's bytes as the plan expects; patch all or none
//!  8. the guest's state as the cooperative switch leaves it: mailbox
//!     {seq, target, mode, COMPLETE}, the registry's mode
//!  9. each CPL3 vCPU resumes at `switch_serialize_iret` (IRETQ) in an
//!     interrupt shadow, returning through that frame; release
//! ```
//!
//! Serialization (the Intel SDM's cross-modifying code rule, vol. 3
//! "Handling Self- and Cross-Modifying Code": the processor that runs the
//! changed code must execute a serializing instruction after the change
//! and before it fetches that code). IRETQ is a serializing instruction
//! on Intel and AMD. A vCPU held at CPL3 resumes at a one-instruction
//! stub `iretq` with the interrupted context's frame (rip, cs, rflags,
//! rsp, ss) below its rsp (this guest has no red zone: nothing live lies
//! below rsp), in an STI interrupt shadow so that no maskable interrupt
//! (whose handler could run changed code) is delivered before the IRETQ
//! has run; a vCPU with an event KVM would inject at entry refuses the
//! fast path (check 1). A vCPU held on the shim's halt path (CPL0) runs
//! only shim code until the shim's own IRETQ back to CPL3. VM entry is
//! not relied on (the SDM does not list it as serializing), nor the
//! VMM's CPUID on its host thread.

use std::time::Instant;

use switcher::abi::{self, LockRegistry, MailboxState, SwitchMailbox};
use switcher::patch::{PatchError, PatchPlan, SiteTable, SwitchableCode};
use switcher::profile::{Dimension, Profile};
use switcher::stackwalk::{FrameKind, GuestCode};
use vm_memory::{Bytes, GuestAddress};

use super::{VmAccess, locks, mask_list};
use crate::stacks::{self, Place};
use crate::vstate::hold::{Capture, HeldVcpu, HoldGate, Resume};
use crate::vstate::memory::{self, GuestMemory, GuestView};

/// Why a fast path was refused: the first check that failed (nothing
/// was changed).
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("this kernel's stacks cannot be walked ({0})")]
    NoGuestCode(String),
    #[error("vCPU(s) {0} did not stop in time")]
    NotHeld(String),
    #[error("vCPU {0}'s state could not be read")]
    VcpuUnread(u32),
    #[error("vCPU {0} has an event waiting to be injected")]
    EventPending(u32),
    #[error("the lock registry is unreadable or not initialised")]
    Registry,
    #[error("the lock registry shows {held} held and {waiters} waiting")]
    RegistryBusy { held: u64, waiters: u64 },
    #[error("{0}")]
    Lock(#[source] locks::LockWordError),
    #[error("vCPU {cpu}: {why}")]
    VcpuPlace { cpu: u32, why: stacks::UnknownWhy },
    #[error("task '{task}' has an unreliable stack: {why}")]
    Unreliable { task: String, why: String },
    #[error("task '{task}' is inside {what} (frame {frame} at {pc:#x})")]
    InSwitchedCode { task: String, what: String, frame: String, pc: u64 },
    #[error("task '{task}' on vCPU {cpu} has no room below its stack pointer for the serializing frame")]
    NoRoom { task: String, cpu: u32 },
    #[error("the serializing frame cannot be written")]
    FrameWrite,
    #[error("{0}")]
    Plan(#[source] PatchError),
    #[error("patching failed after every check passed: {0}")]
    Patch(#[source] PatchError),
}

impl Refusal {
    /// The check that failed, as the totals count it (a fixed name).
    pub fn check(&self) -> &'static str {
        match self {
            Self::NoGuestCode(_) => "no-guest-code",
            Self::NotHeld(_) => "not-held",
            Self::VcpuUnread(_) => "vcpu-unread",
            Self::EventPending(_) => "event-pending",
            Self::Registry | Self::RegistryBusy { .. } => "lock-registry",
            Self::Lock(_) => "lock-word",
            Self::VcpuPlace { .. } => "vcpu-place",
            Self::Unreliable { .. } => "unreliable-stack",
            Self::InSwitchedCode { .. } => "in-switched-code",
            Self::NoRoom { .. } | Self::FrameWrite => "serializing-frame",
            Self::Plan(_) => "site-bytes",
            Self::Patch(_) => "patch",
        }
    }

    /// Whether another hold a moment later may pass (the guest moves on:
    /// a lock released, a task out of switched code, an event delivered).
    pub fn transient(&self) -> bool {
        matches!(
            self,
            Self::VcpuUnread(_)
                | Self::EventPending(_)
                | Self::RegistryBusy { .. }
                | Self::Lock(_)
                | Self::VcpuPlace { .. }
                | Self::Unreliable { .. }
                | Self::InSwitchedCode { .. }
        )
    }
}

impl Refusal {
    /// Whether the refusal says something about the guest's tasks (a
    /// lock, a stack, a frame) rather than about the moment the vCPUs
    /// stopped at (one not stopped, not readable, an event on its way in):
    /// over several holds, a switch reports the last refusal of the first
    /// kind if it had one, the more useful answer to "why not fast".
    fn about_the_guest(&self) -> bool {
        !matches!(self, Self::NotHeld(_) | Self::VcpuUnread(_) | Self::EventPending(_) | Self::VcpuPlace { .. })
    }

    /// How many holds are worth trying while this is the refusal: a held
    /// lock under a lock load is held again at almost every instant
    /// (measured: 0 of 120 holds found every lock free), so it gets one
    /// more look, not [`FAST_HOLDS`]; the cooperative switch waits for
    /// the critical section instead.
    fn holds_worth(&self) -> u32 {
        match self {
            Self::RegistryBusy { .. } | Self::Lock(_) => FAST_LOCK_HOLDS,
            _ => FAST_HOLDS,
        }
    }
}

/// Holds tried while a lock is held.
pub const FAST_LOCK_HOLDS: u32 = 2;

/// A fast switch that completed.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    pub sites_patched: usize,
    /// The hold that switched: first vCPU held -> last released.
    pub blackout_us: u64,
    /// Where that blackout went.
    pub steps: BlackoutSteps,
    /// Holds it took (the earlier ones refused, changed nothing).
    pub holds: u32,
}

/// Where the blackout of a fast switch went (µs), step by step; they add
/// up to its `blackout_us`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlackoutSteps {
    /// Gate closed -> every vCPU held, each having read its registers,
    /// privilege level and pending events (`Capture::Full`).
    pub hold_us: u64,
    /// The checks: lock words, the registry, every task's stack walk.
    pub checks_us: u64,
    /// The serializing frames, the site plan and patch, the guest's state.
    pub patch_us: u64,
    /// Opening the gate.
    pub release_us: u64,
}

/// Holds a fast path tries while its refusals are transient, and the
/// guest's run time between two (against a cooperative switch's
/// milliseconds, a few holds a fraction of a millisecond apart are
/// cheaper, and each refused hold changes nothing).
pub const FAST_HOLDS: u32 = 4;
const FAST_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_micros(150);

/// A refused fast path: the last refusal, and the holds tried.
#[derive(Debug)]
pub struct Refused {
    pub refusal: Refusal,
    pub holds: u32,
}

/// The frame IRETQ pops (64-bit mode, same privilege: all five words).
const IRET_FRAME_BYTES: u64 = 40;
/// RFLAGS.IF.
const RFLAGS_IF: u64 = 1 << 9;

/// Tries the switch `from -> to` (request `seq`) in one hold.
pub fn attempt(
    sites: &SiteTable,
    code: Result<&GuestCode, &str>,
    vm: &mut VmAccess<'_>,
    seq: u64,
    from: Profile,
    to: Profile,
    limit: std::time::Duration,
) -> Result<Done, Refused> {
    let code = code.map_err(|e| Refused { refusal: Refusal::NoGuestCode(e.to_string()), holds: 0 })?;
    // The patch is planned with the vCPUs running (reading and checking
    // every site is tens of µs here) and checked again before each hold;
    // the hold only writes it. Nothing else can change the text in
    // between: the guest's is a read-only memory slot (a write there exits
    // and ends the run, the VMM never performs it), and this thread, the
    // only one that writes it, is here until the switch ends.
    let plan =
        sites.plan(&GuestView::new(vm.mem), from, to).map_err(|e| Refused { refusal: Refusal::Plan(e), holds: 0 })?;
    let mut holds = 0;
    // The refusal to report if the last hold's is only about its moment.
    let mut telling: Option<Refusal> = None;
    loop {
        // A held lock refuses the hold anyway: look first, with the vCPUs
        // running (a refused hold is a blackout the guest pays for).
        if let Err(refusal) = look_at_the_locks(vm.mem) {
            return Err(Refused { refusal: reported(telling, refusal), holds });
        }
        // The text still holds what the plan read (checked here, not in
        // the hold: nothing can write it in between, see `attempt`'s doc).
        plan.still_holds(&GuestView::new(vm.mem)).map_err(|e| Refused { refusal: Refusal::Plan(e), holds })?;
        warm(code, vm.mem, sites, from, to);
        holds += 1;
        let t = Instant::now();
        vm.gate.close_with(Capture::Full);
        (vm.kick_all)();
        let mut stamps = Stamps::default();
        let result = match vm.gate.wait_all_held(vm.all_vcpus_mask, t + limit) {
            Err(missing) => Err(Refusal::NotHeld(mask_list(missing))),
            Ok(()) => {
                stamps.held = Some(Instant::now());
                let held = vm.gate.held(vm.all_vcpus_mask);
                check_patch_serialize(sites, code, vm, &held, &plan, seq, from, to, &mut stamps)
            }
        };
        let opening = Instant::now();
        vm.gate.open();
        let end = Instant::now();
        let blackout_us = micros(t, end);
        match result {
            Ok(sites_patched) => {
                let held = stamps.held.unwrap_or(t);
                let checked = stamps.checked.unwrap_or(held);
                let steps = BlackoutSteps {
                    hold_us: micros(t, held),
                    checks_us: micros(held, checked),
                    patch_us: micros(checked, opening),
                    release_us: micros(opening, end),
                };
                return Ok(Done { sites_patched, blackout_us, steps, holds });
            }
            Err(refusal) if refusal.transient() && holds < refusal.holds_worth() => {
                log::debug!("switch seq {seq}: fast hold {holds} refused ({refusal}); holding again");
                if refusal.about_the_guest() {
                    telling = Some(refusal);
                }
                std::thread::sleep(FAST_RETRY_PAUSE);
            }
            Err(refusal) => return Err(Refused { refusal: reported(telling, refusal), holds }),
        }
    }
}

/// Runs the hold's reads once with the vCPUs running, for nothing but
/// the caches: every task's walk, the sites' bytes. Between two switches
/// this thread sleeps and the guest runs on the same few host CPUs, so
/// the hold would otherwise find its data and the guest's text and stacks
/// out of the caches and TLB (on a nested host each TLB miss is a
/// two-dimensional page walk): that made the checks and the patch about
/// 40 µs each in the blackout, against about 20 run back to back. What
/// these reads find proves nothing (the guest runs meanwhile).
fn warm(code: &GuestCode, mem: &GuestMemory, sites: &SiteTable, from: Profile, to: Profile) {
    let (walks, _) = stacks::walk_tasks(mem, code, &[]);
    let switched: Vec<Dimension> = from.differs(to).collect();
    let frames = walks.iter().flat_map(|w| w.walk.frames.iter());
    let inside = frames.filter(|f| in_switched_code(sites, &switched, f.pc, f.kind).is_some()).count();
    std::hint::black_box(inside);
}

/// When a hold reached its steps (for [`BlackoutSteps`]).
#[derive(Default)]
struct Stamps {
    held: Option<Instant>,
    checked: Option<Instant>,
}

fn micros(from: Instant, to: Instant) -> u64 {
    to.saturating_duration_since(from).as_micros() as u64
}

/// Checks 2 and 3: every lock word free, no task in a lock slow path, and
/// the registry counting nothing held and no waiter. With every vCPU held
/// this is the proof; with them running, a look that spares a hold bound
/// to be refused (the words may change right after it: it proves
/// nothing, and a hold checks again). The lock words first: a refusal
/// then names the lock and its owner.
fn look_at_the_locks(mem: &GuestMemory) -> Result<(), Refusal> {
    locks::check(mem).map_err(Refusal::Lock)?;
    let reg: LockRegistry = memory::read_abi(mem, abi::LOCK_REGISTRY_ADDR).ok_or(Refusal::Registry)?;
    if reg.magic != abi::ABI_MAGIC {
        return Err(Refusal::Registry);
    }
    if reg.held != 0 || reg.waiters != 0 {
        return Err(Refusal::RegistryBusy { held: reg.held, waiters: reg.waiters });
    }
    Ok(())
}

/// What a refused fast path reports: its last hold's refusal, unless
/// that one is only about the moment the vCPUs stopped at and an earlier
/// hold said something about the guest's tasks.
fn reported(telling: Option<Refusal>, last: Refusal) -> Refusal {
    match telling {
        Some(t) if !last.about_the_guest() => t,
        _ => last,
    }
}

/// With every vCPU held: the checks, the serializing frames, the patch,
/// the guest's state, and each vCPU's resume point.
#[allow(clippy::too_many_arguments)]
fn check_patch_serialize(
    sites: &SiteTable,
    code: &GuestCode,
    vm: &VmAccess<'_>,
    held: &[(u32, HeldVcpu)],
    plan: &PatchPlan,
    seq: u64,
    from: Profile,
    to: Profile,
    stamps: &mut Stamps,
) -> Result<usize, Refusal> {
    let mem = vm.mem;
    every_vcpu_read(held)?;
    look_at_the_locks(mem)?;
    let (walks, unknown) = stacks::walk_tasks(mem, code, held);
    if let Some(&(cpu, why)) = unknown.first() {
        return Err(Refusal::VcpuPlace { cpu, why });
    }
    let switched: Vec<Dimension> = from.differs(to).collect();
    for w in &walks {
        if let Err(why) = &w.walk.verdict {
            return Err(Refusal::Unreliable { task: w.name.clone(), why: why.to_string() });
        }
        for f in &w.walk.frames {
            if let Some(what) = in_switched_code(sites, &switched, f.pc, f.kind) {
                return Err(Refusal::InSwitchedCode {
                    task: w.name.clone(),
                    what,
                    frame: stacks::name_of(code, f.code_addr()),
                    pc: f.pc,
                });
            }
        }
    }
    stamps.checked = Some(Instant::now());
    let resumes = serializing_frames(mem, code, held)?;
    let n = plan.apply(&GuestView::new(mem)).map_err(Refusal::Patch)?;
    leave_guest_state(mem, seq, to);
    for (cpu, r) in resumes {
        vm.gate.set_resume(cpu, r);
    }
    Ok(n)
}

/// Check 1: every held vCPU's state was read, and none has an event
/// waiting for injection (KVM would deliver it at entry, before the
/// serializing IRETQ, and its handler could run changed code).
fn every_vcpu_read(held: &[(u32, HeldVcpu)]) -> Result<(), Refusal> {
    for &(cpu, h) in held {
        if !h.full {
            return Err(Refusal::VcpuUnread(cpu));
        }
        if h.event_pending {
            return Err(Refusal::EventPending(cpu));
        }
    }
    Ok(())
}

/// For the hold of a cooperative switch (`Coordinator::stop_machine`),
/// after its patch and before its release: makes every held vCPU resume
/// through a serializing IRETQ, exactly as a fast switch does (steps 1, 6
/// and 9 above), so that the guest need not serialize its CPUs by IPI.
/// On `Err` no resume point was changed (frames written below a stack
/// pointer are dead data) and the guest must serialize by IPI.
pub fn serialize_on_release(
    mem: &GuestMemory,
    code: &GuestCode,
    gate: &HoldGate,
    held: &[(u32, HeldVcpu)],
) -> Result<(), Refusal> {
    every_vcpu_read(held)?;
    for (cpu, r) in serializing_frames(mem, code, held)? {
        gate.set_resume(cpu, r);
    }
    Ok(())
}

/// Whether a frame lies in code the switch changes: any rip inside a
/// call site's bytes, a return into the middle of one, or any address in
/// an implementation of a switched dimension.
fn in_switched_code(sites: &SiteTable, switched: &[Dimension], pc: u64, kind: FrameKind) -> Option<String> {
    let at = match kind {
        FrameKind::Rip => pc,
        FrameKind::Return | FrameKind::MaybeReturn => {
            // A return just past a call site is the normal case (the call
            // is 5 bytes either way); one inside a site is not.
            if let Some(site @ SwitchableCode::Site { addr, .. }) = sites.switchable_code_at(pc)
                && addr != pc
            {
                return Some(site.to_string());
            }
            pc.wrapping_sub(1)
        }
    };
    match sites.switchable_code_at(at)? {
        site @ SwitchableCode::Site { .. } if kind == FrameKind::Rip => Some(site.to_string()),
        SwitchableCode::Site { .. } => None,
        imp @ SwitchableCode::Implementation { op, .. } => switched.contains(&op.dimension()).then(|| imp.to_string()),
    }
}

/// For each vCPU held at CPL3, an interrupt frame of the context it
/// stopped in, written below its rsp inside its task's stack, and where
/// it resumes (the stub, with rsp at that frame). A vCPU in the shim's
/// halt path needs none (the shim returns through IRETQ).
fn serializing_frames(
    mem: &GuestMemory,
    code: &GuestCode,
    held: &[(u32, HeldVcpu)],
) -> Result<Vec<(u32, Resume)>, Refusal> {
    let mut out = Vec::with_capacity(held.len());
    for &(cpu, h) in held {
        if h.cpl() != 3 {
            continue;
        }
        if h.rip == code.serialize_iret {
            // Resumed there by the last fast switch and not run since: its
            // frame is in place, and it serializes before anything else.
            out.push((cpu, Resume { rip: h.rip, rsp: h.rsp, shadow: h.rflags & RFLAGS_IF != 0 }));
            continue;
        }
        let Place::Task { slot, .. } = stacks::place(mem, code, cpu, &h) else {
            return Err(Refusal::VcpuUnread(cpu));
        };
        let stack = code.task_stack(slot).map(|(s, _)| s);
        let frame_at = h.rsp.checked_sub(IRET_FRAME_BYTES).map(|a| a & !7);
        let (Some(stack), Some(at)) = (stack, frame_at) else {
            return Err(Refusal::NoRoom { task: format!("slot {slot}"), cpu });
        };
        if at < stack.start {
            return Err(Refusal::NoRoom { task: format!("slot {slot}"), cpu });
        }
        let words = [h.rip, u64::from(h.cs), h.rflags, h.rsp, u64::from(h.ss)];
        for (i, w) in words.iter().enumerate() {
            mem.write_obj(*w, GuestAddress(at + 8 * i as u64)).map_err(|_| Refusal::FrameWrite)?;
        }
        // An STI shadow is valid only with IF set (VMX's guest-state
        // checks); with IF clear no maskable interrupt comes anyway.
        let shadow = h.rflags & RFLAGS_IF != 0;
        out.push((cpu, Resume { rip: code.serialize_iret, rsp: at, shadow }));
    }
    Ok(out)
}

/// What the cooperative switch leaves in the guest's state, written with
/// every vCPU held: the registry's mode (what the call sites select) and
/// the mailbox `{seq, target, mode, COMPLETE}` with no step stamps. The
/// guest's control thread, told by the switch interrupt, sees a completed
/// switch to a mode it has opened no epoch for and opens the epochs
/// (`guest/src/switch/modeswitch.rs`).
fn leave_guest_state(mem: &GuestMemory, seq: u64, to: Profile) {
    let reg_mode = abi::LOCK_REGISTRY_ADDR + std::mem::offset_of!(LockRegistry, mode) as u64;
    let mut mbox: SwitchMailbox = memory::read_abi(mem, abi::SWITCH_MAILBOX_ADDR).unwrap_or(SwitchMailbox::zeroed());
    mbox.seq = seq;
    mbox.target = to.code();
    mbox.mode = to.code();
    mbox.state = MailboxState::Complete as u32;
    (mbox.seen_tsc, mbox.quiescent_tsc, mbox.verdict_tsc, mbox.serialized_tsc, mbox.thawed_tsc) = (0, 0, 0, 0, 0);
    if let Err(e) = memory::write_u32(mem, reg_mode, to.code())
        .and_then(|()| mem.write_obj(memory::Abi(mbox), GuestAddress(abi::SWITCH_MAILBOX_ADDR)))
    {
        log::error!("cannot write the guest's switch state after a fast switch: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rip inside any site's bytes, a return into the middle of one,
    /// and any frame inside an implementation of a switched dimension are
    /// switched code; a return just past a site, and an implementation of
    /// a dimension not switched, are not.
    #[test]
    fn what_counts_as_inside_switched_code() {
        let sites = SiteTable::from_elf(crate::DEFAULT_KERNEL).unwrap();
        let site = sites.sites().iter().find(|s| s.op.dimension() == Dimension::Locks).copied().unwrap();
        let imp = *sites.impl_extents().iter().find(|e| e.op.dimension() == Dimension::Locks).unwrap();
        let locks = [Dimension::Locks];
        let preempt = [Dimension::Preempt];
        assert!(in_switched_code(&sites, &preempt, site.addr + 2, FrameKind::Rip).is_some());
        assert!(in_switched_code(&sites, &locks, site.addr + 5, FrameKind::Return).is_none());
        assert!(in_switched_code(&sites, &locks, site.addr + 3, FrameKind::Return).is_some());
        let inside = imp.start + 1;
        assert!(in_switched_code(&sites, &locks, inside, FrameKind::Rip).is_some());
        assert!(in_switched_code(&sites, &locks, inside + 1, FrameKind::MaybeReturn).is_some());
        assert!(in_switched_code(&sites, &preempt, inside, FrameKind::Rip).is_none());
    }

    /// A task parked in switched code refuses every hold; a later hold
    /// that only caught an event on its way into a vCPU (CI saw it after
    /// 4 holds) does not hide it. A refusal about the guest stays the
    /// answer when it is the last one.
    #[test]
    fn a_refusal_about_the_guest_outlives_a_later_one_about_the_moment() {
        let parked = || Refusal::InSwitchedCode {
            task: "impl-park".into(),
            what: "lock (mainline)".into(),
            frame: "park".into(),
            pc: 0x1000,
        };
        assert_eq!(reported(Some(parked()), Refusal::EventPending(1)).check(), "in-switched-code");
        assert_eq!(reported(None, Refusal::EventPending(1)).check(), "event-pending");
        let hog = Refusal::RegistryBusy { held: 1, waiters: 0 };
        assert_eq!(reported(Some(parked()), hog).check(), "lock-registry");
    }

    /// The frame IRETQ pops (rip, cs, rflags, rsp, ss of where the vCPU
    /// stopped) lies right below its rsp, inside its task's stack, and it
    /// resumes at the stub with rsp there, in an interrupt shadow when IF
    /// is set; one without room below its rsp refuses; one at CPL0 (the
    /// shim) needs none.
    #[test]
    fn each_cpl3_vcpu_resumes_at_the_stub_through_its_own_frame() {
        let code = GuestCode::from_elf(crate::DEFAULT_KERNEL).unwrap();
        let mem = memory::create(64 << 20).unwrap();
        let (stack, _) = code.task_stack(3).unwrap();
        let rsp = stack.end - 0x200;
        let h = HeldVcpu {
            rip: 0x10_1234,
            rsp,
            rbp: rsp + 0x40,
            rflags: 0x202,
            cs: 0x33,
            ss: 0x2b,
            full: true,
            ..Default::default()
        };
        let shim = HeldVcpu { cs: 0x8, ..h };
        let r = serializing_frames(&mem, &code, &[(0, h), (1, shim)]).unwrap();
        assert_eq!(r, vec![(0, Resume { rip: code.serialize_iret, rsp: rsp - 40, shadow: true })]);
        let words: Vec<u64> = (0..5).map(|i| mem.read_obj::<u64>(GuestAddress(rsp - 40 + 8 * i)).unwrap()).collect();
        assert_eq!(words, vec![0x10_1234, 0x33, 0x202, rsp, 0x2b]);
        let masked = HeldVcpu { rflags: 0x2, ..h };
        assert!(!serializing_frames(&mem, &code, &[(0, masked)]).unwrap()[0].1.shadow);
        let full = HeldVcpu { rsp: stack.start + 16, rbp: stack.start + 64, ..h };
        assert!(matches!(serializing_frames(&mem, &code, &[(0, full)]), Err(Refusal::NoRoom { cpu: 0, .. })));
    }
}
