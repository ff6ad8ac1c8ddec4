//! The runtime mode switch, guest side (docs/ARCHITECTURE.md, "The runtime switch";
//! the mailbox protocol is drawn at `switcher::abi::SwitchMailbox`).
//!
//! Run by the control thread (CPU 0, `control::CONTROL_PRIO`: just below
//! the measurement threads; `nofreeze`) when the VMM
//! posts a request:
//!
//! ```text
//!  REQUESTED -> FREEZING   open a Switching latency epoch, start the freezer
//!  FREEZING                census every 100 µs; publish the first task still
//!                          busy (blocker_*) so the VMM can name it on timeout
//!  -> QUIESCENT            every task frozen or asleep lock-free, registry
//!                          held == 0 and waiters == 0; HC_SWITCH
//!  (VMM holds every vCPU, re-checks, patches or not, releases)
//!  DONE | CANCELLED        every other CPU executes a serializing instruction
//!                          before any task runs patched code: the VMM's IRETQ
//!                          frames when it says so (`vmm_serialized`), else
//!                          SERIALIZE_IPI, acknowledged; thaw; mode updated
//!  -> COMPLETE             HC_SWITCH; once every measuring CPU has completed
//!                          a full period after the thaw (bounded wait), a
//!                          new Mode epoch opens: the switch's own stalls
//!                          stay in the Switching epoch (samples go to the
//!                          epoch that holds their deadline)
//! ```
//!
//! A CANCELLED seen while still freezing (the VMM's deadline passed) thaws
//! at once: nothing was patched, the mode is unchanged.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use switcher::abi::{MailboxState, vector};
use switcher::profile::Profile;
use switcher::telemetry::EpochKind;

use crate::arch::{apic, cpu, percpu};
use crate::hv::mailbox::{self, mbox_read, mbox_write};
use crate::hv::{boot_info, hypercall};
use crate::sched::{self, freezer};
use crate::sync::registry;
use crate::workload;

/// Census period while freezing (at least: see `freeze_until_quiescent`).
const CENSUS_US: u64 = 100;

static SERIALIZE_ACKS: AtomicU32 = AtomicU32::new(0);
static VERDICT: sched::WaitQueue = sched::WaitQueue::new("switch-verdict");

/// The mode of the last Mode epoch this guest opened or is about to open
/// (its code): a completed switch to another mode is one the VMM made in
/// one blackout, whose epochs the guest still has to open.
static EPOCH_MODE: AtomicU32 = AtomicU32::new(u32::MAX);

/// Publishes the mailbox: the VMM accepts switch requests from now on.
pub fn init(mode: Profile) {
    EPOCH_MODE.store(mode.code(), Ordering::Relaxed);
    mailbox::publish(mode);
}

/// The last request (seq) this guest answered with COMPLETE.
static ANSWERED_SEQ: AtomicU64 = AtomicU64::new(0);

/// Whether the VMM has posted a request, or cancelled one before this
/// guest even saw it (which still needs an acknowledgement).
pub fn pending() -> bool {
    match mailbox::state() {
        Some(MailboxState::Requested) => true,
        Some(MailboxState::Complete) => mbox_read!(mode) != EPOCH_MODE.load(Ordering::Relaxed),
        Some(MailboxState::Cancelled) => mbox_read!(seq) != ANSWERED_SEQ.load(Ordering::Relaxed),
        _ => false,
    }
}

/// From the HOST_REQUEST handler: the VMM changed the mailbox.
pub fn on_host_request() {
    VERDICT.wake_all();
}

/// SERIALIZE_IPI handler: a serializing instruction, then acknowledge.
pub fn on_serialize_ipi() {
    cpu::serialize();
    SERIALIZE_ACKS.fetch_add(1, Ordering::AcqRel);
    VERDICT.wake_all();
    let stall = crate::diag::faults::serialize_stall_us();
    if stall != 0 {
        // Fault injection: a slow switch step here, masked (IRQ context).
        let end = sched::now_tsc() + sched::us_to_tsc(u64::from(stall));
        while sched::now_tsc() < end {
            core::hint::spin_loop();
        }
    }
}

/// Acknowledges the VMM's verdict (DONE, or CANCELLED): COMPLETE and
/// HC_SWITCH. A mailbox whose state word is no state of the protocol
/// (scribbled over) is left alone: the VMM's acknowledgement deadline
/// ends that switch, naming the word.
fn acknowledge() {
    let Some(verdict) = mailbox::state() else {
        crate::println!("switch: the mailbox's state is no state of the protocol; not acknowledged");
        return;
    };
    // Only the guest moves the mailbox on from a verdict.
    if mailbox::advance(verdict, MailboxState::Complete) {
        hypercall::switch_changed(MailboxState::Complete);
    }
}

/// Runs one switch request to its end (control thread).
pub fn run() {
    if mailbox::state() == Some(MailboxState::Complete) {
        adopt_fast_switch();
        return;
    }
    let seq = mbox_read!(seq);
    ANSWERED_SEQ.store(seq, Ordering::Relaxed);
    let target = Profile::from_u32(mbox_read!(target));
    let from = registry::get().mode();
    // This switch's stamps only (0: step not reached).
    mbox_write!(quiescent_tsc, 0);
    mbox_write!(verdict_tsc, 0);
    mbox_write!(serialized_tsc, 0);
    mbox_write!(thawed_tsc, 0);
    mbox_write!(vmm_serialized, 0);
    mbox_write!(seen_tsc, sched::now_tsc());
    if !mailbox::advance(MailboxState::Requested, MailboxState::Freezing) {
        // Cancelled before we started: nothing to undo; acknowledge.
        acknowledge();
        return;
    }
    // The Switching epoch opens before anything of the switch runs: every
    // deadline from here on is the switch's until the guard below.
    workload::open_epoch(from, EpochKind::Switching);
    freezer::request();

    let quiescent = freeze_until_quiescent();
    if quiescent {
        mbox_write!(quiescent_tsc, sched::now_tsc());
        if mailbox::advance(MailboxState::Freezing, MailboxState::Quiescent) {
            hypercall::switch_changed(MailboxState::Quiescent);
        }
        // The VMM's verdict, or its cancel if its deadline passed first.
        wait_for(|| matches!(mailbox::state(), Some(MailboxState::Done | MailboxState::Cancelled)));
    }
    let verdict = mailbox::state();
    mbox_write!(verdict_tsc, sched::now_tsc());
    let mode = match (verdict, target) {
        (Some(MailboxState::Done), Some(t)) => t,
        _ => from,
    };
    if verdict == Some(MailboxState::Done) {
        if crate::diag::faults::panic_in_switch() {
            panic!("fault injection panic-in-switch: the sites are patched, the tasks still frozen");
        }
        // The VMM wrote `vmm_serialized` in the hold that wrote DONE, with
        // every vCPU held: each of them resumed through an IRETQ (a
        // serializing instruction) before it fetched anything patched.
        // (Fault injection `serialize-stall` keeps the IPIs: the stall it
        // injects is theirs.)
        if mbox_read!(vmm_serialized) != 1 || crate::diag::faults::serialize_stall_us() != 0 {
            serialize_all_cpus();
        }
        mbox_write!(serialized_tsc, sched::now_tsc());
        registry::get().set_mode(mode);
        mbox_write!(mode, mode.code());
    }
    EPOCH_MODE.store(mode.code(), Ordering::Relaxed);
    freezer::thaw();
    let thawed = sched::now_tsc();
    mbox_write!(thawed_tsc, thawed);
    acknowledge();
    // A request that comes during the guard opens its own switching epoch
    // at once (the next `run`): no mode epoch in between, whose first
    // periods would still carry this switch.
    if wait_full_period_after(thawed) {
        workload::open_epoch(mode, EpochKind::Mode);
    }
}

/// A switch the VMM completed in one blackout (`vmm/src/switch/fast.rs`):
/// it patched the sites, had every CPU serialize, and left the mailbox
/// COMPLETE with the new mode and the registry's mode set, all while every
/// vCPU was held; no task froze. What is left is the telemetry: the old
/// mode's epoch closes into a Switching epoch now, and the new mode's
/// epoch opens after the same guard as a cooperative switch's (its
/// samples are the new mode's only). The periods between the blackout and
/// this thread running stay in the old mode's epoch.
fn adopt_fast_switch() {
    let code = mbox_read!(mode);
    let from = Profile::from_u32(EPOCH_MODE.swap(code, Ordering::Relaxed));
    let Some(mode) = Profile::from_u32(code) else {
        crate::println!("switch: the mailbox names no mode ({code:#x}); no epoch opened");
        return;
    };
    workload::open_epoch(from.unwrap_or(mode), EpochKind::Switching);
    if wait_full_period_after(sched::now_tsc()) {
        workload::open_epoch(mode, EpochKind::Mode);
    }
}

/// Longest wait for the guard (in periods, and at least this many µs): a
/// CPU whose measurement thread cannot run (stalled) does not hold the
/// next Mode epoch back for longer; its overdue periods are counted anyway.
const GUARD_PERIODS: u64 = 20;
const GUARD_MIN_US: u64 = 50_000;

/// The Switching epoch's guard: sleeps until every measuring CPU has
/// recorded an activation whose deadline lies at least one full period
/// after `thawed` (so its whole period ran in the new mode), bounded.
/// Returns false when a new switch request came meanwhile (its switching
/// epoch follows this one directly).
fn wait_full_period_after(thawed: u64) -> bool {
    let interval_us = u64::from(workload::interval_us());
    if interval_us == 0 {
        return true;
    }
    let interval = sched::us_to_tsc(interval_us);
    let cpus = workload::measure_cpus();
    let done = || {
        (0..boot_info::cpu_count() as usize)
            .filter(|&c| c < 64 && cpus & (1 << c) != 0)
            .all(|c| workload::last_deadline(c) >= thawed + interval)
    };
    let limit = sched::now_tsc() + sched::us_to_tsc((GUARD_PERIODS * interval_us).max(GUARD_MIN_US));
    while !done() && sched::now_tsc() < limit {
        if pending() || crate::hv::shutdown::requested() {
            return !pending();
        }
        sched::sleep_us(interval_us / 2 + 1);
    }
    true
}

/// Freezes until quiescent; false if the VMM cancelled first.
fn freeze_until_quiescent() -> bool {
    loop {
        if mailbox::state() == Some(MailboxState::Cancelled) {
            return false;
        }
        let started = sched::now_tsc();
        let census = freezer::census();
        let reg = registry::get();
        match census.blocker {
            None if reg.held() == 0 && reg.waiters() == 0 => {
                mbox_write!(frozen, census.frozen);
                mbox_write!(asleep, census.asleep);
                return true;
            }
            Some(t) => publish_blocker(t.0.name(), t.0.cpu(), t.0.switch_locks_held.load(Ordering::Relaxed)),
            None => publish_blocker("(lock registry)", 0, reg.held() as u32),
        }
        // The control thread outranks every task on CPU 0, and those tasks
        // must run to reach their safe points: it sleeps at least as long
        // as its census took, so that it never takes more than half of CPU
        // 0 (where ring 0 is emulated a census costs milliseconds).
        let took = sched::now_tsc().saturating_sub(started);
        sched::sleep_until(sched::now_tsc() + sched::us_to_tsc(CENSUS_US).max(took));
    }
}

fn publish_blocker(name: &str, cpu: u32, locks: u32) {
    let mut buf = [0u8; 16];
    for (d, s) in buf.iter_mut().zip(name.bytes()) {
        *d = s;
    }
    mbox_write!(blocker_name, buf);
    mbox_write!(blocker_cpu, cpu);
    mbox_write!(blocker_locks, locks);
}

/// Sleeps on the verdict queue (woken by the VMM's HOST_REQUEST interrupt
/// and by serialize acknowledgements) until `done`. (Polling instead was
/// measured slower on a 2-core host: the polling vCPU takes the host core
/// the VMM needs for the blackout.)
fn wait_for(done: impl FnMut() -> bool) {
    VERDICT.wait_until_unfreezable(done);
}

/// Every other online CPU serializes and acknowledges before the thaw.
fn serialize_all_cpus() {
    let me = percpu::cpu_id();
    let cpus = boot_info::cpu_count();
    SERIALIZE_ACKS.store(0, Ordering::Release);
    let mut sent = 0;
    for c in 0..cpus {
        let pc = percpu::of(c as usize);
        if c != me && pc.apic_enabled() {
            apic::send_ipi(pc.apic_id(), vector::SERIALIZE_IPI);
            sent += 1;
        }
    }
    cpu::serialize();
    wait_for(|| SERIALIZE_ACKS.load(Ordering::Acquire) >= sent);
}
