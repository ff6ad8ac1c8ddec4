//! rt implementation of the switchable lock: an rtmutex, as PREEMPT_RT
//! turns `spinlock_t` into ("sleeping spinlocks").
//!
//! - The holder stays preemptible: nothing here disables preemption while
//!   the lock is held.
//! - Uncontended lock and unlock are one compare-exchange on the owner word.
//! - Contended: the task first spins *adaptively* while the owner is running
//!   on a CPU (it will release soon), bounded in time ([`spin_budget`]); then
//!   it queues as a waiter, ordered by priority (FIFO among equals), and
//!   sleeps.
//! - Priority inheritance: queuing walks the chain task -> lock -> owner ->
//!   lock that owner waits for -> ..., raising every owner to the waiter's
//!   priority (`logic::pi::walk_chain`, bounded depth); a chain that comes
//!   back to the waiter is a deadlock, a guest panic that names the cycle.
//! - Unlock with waiters hands the lock directly to the top waiter (the
//!   owner word goes from the unlocker to the waiter, never through "free"),
//!   so a lower-priority task can never steal it from a higher-priority
//!   waiter; then the unlocker drops back to the priority its remaining
//!   locks justify (`deboost`).
//!
//! Owner word (`LockCore::owner`):
//!
//! ```text
//!   0                         free
//!   task address              owned, no waiters  (fast unlock: CAS to 0)
//!   task address | HAS_WAITERS owned, waiters queued (unlock takes PI_LOCK)
//! ```
//!
//! All waiter lists and every task's PI state are protected by one raw
//! spinlock, [`PI_LOCK`] (IRQs saved), the simplification of Linux's
//! per-lock `wait_lock` + per-task `pi_lock` that a small SMP kernel can
//! afford. Lock order: `PI_LOCK` -> run-queue locks (taken by `set_prio` and
//! `wake_up`). A contended lock borrows a waiter list from a fixed table
//! while it has waiters ([`MAX_CONTENDED`] at once); free and uncontended
//! locks need none, which keeps the lock layout small and shared with
//! mainline mode.

use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};

use super::raw::RawSpinLock;
use super::registry;
use super::spinlock::LockCore;
use crate::logic::pi::{self, LockId, PiError, PiGraph, TaskId as PiTask};
use crate::logic::prio_list::{Prio, PrioList};
use crate::sched::{self, Task};

/// Owner-word flag: waiters are queued; unlock must hand off.
pub const HAS_WAITERS: usize = 1;

/// Contended locks at one time (each has at least one blocked waiter, so
/// this also bounds nothing the scheduler cares about: tasks are fewer).
pub const MAX_CONTENDED: usize = 32;

/// Task slots the waiter lists index (tasks and idle tasks).
const TASK_SLOTS: usize = sched::TASK_SLOTS;

/// Priority inheritance on (default) or off (`no-pi` guest argument: the
/// self-test that needs PI must then fail, proving it can).
static PI_ENABLED: AtomicBool = AtomicBool::new(true);

/// Adaptive spinning budget, in spin-loop iterations (set from the boot
/// calibration so that it is a bounded time on any host).
static SPIN_BUDGET: AtomicU32 = AtomicU32::new(64);

/// How long a contended locker spins while the owner runs before it sleeps.
pub const SPIN_BUDGET_NS: u64 = 50_000;

/// A lock's handle on a waiter list: 0 = none, else table index + 1.
pub struct WaiterList(AtomicU16);

impl WaiterList {
    pub const fn new() -> Self {
        Self(AtomicU16::new(0))
    }

    pub fn is_empty(&self) -> bool {
        self.0.load(Ordering::Acquire) == 0
    }

    fn slot(&self) -> Option<usize> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            n => Some(usize::from(n) - 1),
        }
    }
}

struct Contended {
    lock: *const LockCore,
    waiters: PrioList<TASK_SLOTS>,
}

struct PiState {
    table: [Contended; MAX_CONTENDED],
}

// SAFETY: the raw pointers name LockCores that are alive while they have
// waiters (a lock with blocked waiters cannot be dropped: its owner and
// waiters hold references); access is serialised by PI_LOCK.
unsafe impl Send for PiState {}

static PI_LOCK: RawSpinLock<PiState> = RawSpinLock::new(
    "pi_lock",
    PiState { table: [const { Contended { lock: core::ptr::null(), waiters: PrioList::new() } }; MAX_CONTENDED] },
);

/// Turns priority inheritance off (self-test honesty check).
pub fn disable_pi() {
    PI_ENABLED.store(false, Ordering::Relaxed);
}

/// Sets the adaptive-spin budget from the boot calibration: `ps_per_iter`
/// is the cost of one 2-instruction calibration iteration; one spin
/// iteration is about four such.
pub fn calibrate_spin(ps_per_iter: u64) {
    let per_spin_ps = ps_per_iter.saturating_mul(4).max(1);
    let iters = (SPIN_BUDGET_NS * 1000 / per_spin_ps).clamp(4, 1 << 20);
    SPIN_BUDGET.store(iters as u32, Ordering::Relaxed);
}

/// Turns adaptive spinning off (`no-spin` guest argument): a contended
/// locker goes straight to the slow path and sleeps. For the lock
/// throughput benchmark, which compares both.
pub fn disable_spinning() {
    SPIN_BUDGET.store(0, Ordering::Relaxed);
}

/// The adaptive-spin budget in iterations (0: spinning off).
pub fn spin_budget() -> u32 {
    SPIN_BUDGET.load(Ordering::Relaxed)
}

fn me() -> &'static Task {
    sched::current()
}

fn addr(t: &Task) -> usize {
    t as *const Task as usize
}

/// The task an owner word names (waiter bit masked off).
fn owner_task(word: usize) -> Option<&'static Task> {
    let a = word & !HAS_WAITERS;
    if a == 0 {
        None
    } else {
        // SAFETY: owner words hold addresses of entries of the static task
        // table (written by this module and mainline.rs from
        // `sched::current()`), valid for the whole run.
        Some(unsafe { &*(a as *const Task) })
    }
}

/// Takes the lock, sleeping if needed. Returns 1 if it was contended.
pub extern "C" fn lock(lock: *const LockCore) -> u64 {
    // SAFETY: call sites pass a pointer to a live LockCore (`spinlock.rs`).
    let lock = unsafe { &*lock };
    let me = me();
    if lock.owner.compare_exchange(0, addr(me), Ordering::Acquire, Ordering::Relaxed).is_ok() {
        return 0;
    }
    if spin_while_owner_runs(lock, me) {
        return 1;
    }
    lock_slow(lock, me);
    1
}

/// How adaptive spins ended (reported at shutdown: [`spin_stats`]).
static SPIN_TOOK: AtomicU64 = AtomicU64::new(0);
static SPIN_OWNER_OFF_CPU: AtomicU64 = AtomicU64::new(0);
static SPIN_VCPU_PREEMPTED: AtomicU64 = AtomicU64::new(0);
static SPIN_OUT_OF_BUDGET: AtomicU64 = AtomicU64::new(0);

/// Adaptive spins so far: (took the lock, stopped because the owner left
/// its CPU or others queued, stopped because the owner's vCPU was
/// preempted on the host, ran out of budget).
pub fn spin_stats() -> (u64, u64, u64, u64) {
    let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
    (l(&SPIN_TOOK), l(&SPIN_OWNER_OFF_CPU), l(&SPIN_VCPU_PREEMPTED), l(&SPIN_OUT_OF_BUDGET))
}

/// Adaptive spinning: while the owner is on a CPU whose vCPU runs, and
/// nobody is queued, it will likely release soon; spin a bounded number
/// of iterations. An owner whose vCPU the host has scheduled out cannot
/// release until it runs again: spinning on it only burns this vCPU.
fn spin_while_owner_runs(lock: &LockCore, me: &Task) -> bool {
    let budget = spin_budget();
    if budget == 0 {
        return false;
    }
    let mut i = 0;
    while i < budget {
        let word = lock.owner.load(Ordering::Relaxed);
        if word == 0 {
            if lock.owner.compare_exchange(0, addr(me), Ordering::Acquire, Ordering::Relaxed).is_ok() {
                SPIN_TOOK.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        } else {
            let owner = owner_task(word);
            if word & HAS_WAITERS != 0 || !owner.is_some_and(|o| o.on_cpu.load(Ordering::Relaxed)) {
                SPIN_OWNER_OFF_CPU.fetch_add(1, Ordering::Relaxed);
                return false;
            }
            if owner.is_some_and(|o| crate::arch::steal::vcpu_preempted(o.cpu() as usize)) {
                SPIN_VCPU_PREEMPTED.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        core::hint::spin_loop();
        i += 1;
    }
    SPIN_OUT_OF_BUDGET.fetch_add(1, Ordering::Relaxed);
    false
}

fn lock_slow(lock: &LockCore, me: &'static Task) {
    sched::might_sleep("rt lock");
    let mut pi = PI_LOCK.lock_irqsave();
    // Take it if it became free; otherwise mark it contended, atomically
    // with respect to the owner's fast-path unlock (a CAS that now fails).
    loop {
        let word = lock.owner.load(Ordering::Relaxed);
        if word == 0 {
            if lock.owner.compare_exchange(0, addr(me), Ordering::Acquire, Ordering::Relaxed).is_ok() {
                return;
            }
        } else if word & HAS_WAITERS != 0
            || lock.owner.compare_exchange(word, word | HAS_WAITERS, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            break;
        }
    }
    let slot = match lock.waiters.slot() {
        Some(s) => s,
        None => attach_list(&mut pi, lock),
    };
    let my_slot = me.id().slot();
    if let Err(e) = pi.table[slot].waiters.insert(my_slot, me.prio()) {
        panic!("rt lock '{}': cannot queue task '{}': {e:?}", lock.name(), me.name());
    }
    me.blocked_on.store(lock as *const LockCore as *mut (), Ordering::Release);
    registry::get().waiter_queued();
    if PI_ENABLED.load(Ordering::Relaxed)
        && let Err(e) = pi::walk_chain(&mut KernelPi { state: &mut pi }, PiTask(my_slot as u16), LockId(slot as u16))
    {
        report_pi_error(&pi, &e);
    }
    // Sleep until the unlocker hands the lock over (it sets the owner word
    // to us and wakes us). The state is set under PI_LOCK, so the hand-off's
    // wake-up cannot be lost between unlock and sleep.
    loop {
        sched::set_current_blocked();
        drop(pi);
        sched::schedule();
        pi = PI_LOCK.lock_irqsave();
        if lock.owner.load(Ordering::Acquire) & !HAS_WAITERS == addr(me) {
            break;
        }
    }
}

/// Gives `lock` a free waiter list from the table.
fn attach_list(pi: &mut PiState, lock: &LockCore) -> usize {
    let Some(slot) = pi.table.iter().position(|c| c.lock.is_null()) else {
        panic!("rt lock '{}': more than {MAX_CONTENDED} locks contended at once", lock.name());
    };
    pi.table[slot].lock = lock;
    lock.waiters.0.store(slot as u16 + 1, Ordering::Release);
    slot
}

/// Takes the lock only if it is free right now. Returns 1 on success.
pub extern "C" fn try_lock(lock: *const LockCore) -> u64 {
    // SAFETY: as for `lock`.
    let lock = unsafe { &*lock };
    u64::from(lock.owner.compare_exchange(0, addr(me()), Ordering::Acquire, Ordering::Relaxed).is_ok())
}

/// Releases the lock: to nobody when uncontended, else to the top waiter.
pub extern "C" fn unlock(lock: *const LockCore) -> u64 {
    // SAFETY: as for `lock`.
    let lock = unsafe { &*lock };
    let me = me();
    if lock.owner.compare_exchange(addr(me), 0, Ordering::Release, Ordering::Relaxed).is_ok() {
        return 0;
    }
    let mut pi = PI_LOCK.lock_irqsave();
    let Some(slot) = lock.waiters.slot() else {
        panic!(
            "rt unlock of '{}' by '{}': owner word {:#x} is not ours",
            lock.name(),
            me.name(),
            lock.owner.load(Ordering::Relaxed)
        );
    };
    let Some((next_slot, _)) = pi.table[slot].waiters.pop() else {
        panic!("rt unlock of '{}': marked contended without waiters", lock.name());
    };
    registry::get().waiter_dequeued();
    let next = sched::task_by_slot(next_slot);
    next.blocked_on.store(core::ptr::null_mut(), Ordering::Release);
    let more = !pi.table[slot].waiters.is_empty();
    if !more {
        pi.table[slot].lock = core::ptr::null();
        lock.waiters.0.store(0, Ordering::Release);
    }
    lock.owner.store(addr(next) | if more { HAS_WAITERS } else { 0 }, Ordering::Release);
    if PI_ENABLED.load(Ordering::Relaxed) {
        let mut g = KernelPi { state: &mut pi };
        // The new owner inherits from the waiters still queued; we drop
        // back to what our remaining locks justify.
        if let Err(e) = pi::adjust_prio(&mut g, PiTask(next_slot as u16)) {
            report_pi_error(&pi, &e);
        }
        let mut g = KernelPi { state: &mut pi };
        if let Err(e) = pi::deboost(&mut g, PiTask(me.id().slot() as u16)) {
            report_pi_error(&pi, &e);
        }
    }
    sched::wake_up(next);
    // Dropping PI_LOCK re-enables preemption: if the deboost made a waiting
    // higher-priority task the best choice here, we are preempted now.
    drop(pi);
    0
}

/// A PI failure is a kernel bug or a deadlock: panic, naming the chain.
fn report_pi_error(pi: &PiState, e: &PiError) -> ! {
    let (kind, links, closed) = match e {
        PiError::Deadlock { cycle } => ("deadlock", cycle.links(), true),
        PiError::ChainTooDeep { chain, .. } => ("lock chain too deep", chain.links(), false),
    };
    panic!("rtmutex {kind}: {}", ChainNames { pi, links, closed });
}

/// Displays a PI chain with task and lock names.
struct ChainNames<'a> {
    pi: &'a PiState,
    links: &'a [(PiTask, LockId)],
    /// A cycle: the last lock is held by the first task.
    closed: bool,
}

impl core::fmt::Display for ChainNames<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, (t, l)) in self.links.iter().enumerate() {
            if i > 0 {
                f.write_str(" -> ")?;
            }
            let lock = self.pi.table.get(l.index()).map_or(core::ptr::null(), |c| c.lock);
            // SAFETY: table entries with waiters name live locks (PiState).
            let lock_name = if lock.is_null() { "?" } else { unsafe { (*lock).name() } };
            write!(f, "task '{}' waits for lock '{lock_name}'", sched::task_by_slot(t.index()).name())?;
        }
        if self.closed
            && let Some((first, _)) = self.links.first()
        {
            write!(f, ", held by task '{}'", sched::task_by_slot(first.index()).name())?;
        }
        Ok(())
    }
}

/// The kernel's structures seen as a `logic::pi::PiGraph`: tasks by slot,
/// contended locks by waiter-table index. Only built under PI_LOCK.
struct KernelPi<'a> {
    state: &'a mut PiState,
}

impl KernelPi<'_> {
    fn lock(&self, l: LockId) -> Option<&LockCore> {
        let p = self.state.table.get(l.index())?.lock;
        // SAFETY: non-null table entries name live locks (see PiState).
        (!p.is_null()).then(|| unsafe { &*p })
    }

    fn task(t: PiTask) -> &'static Task {
        sched::task_by_slot(t.index())
    }
}

impl PiGraph for KernelPi<'_> {
    fn owner_of(&self, l: LockId) -> Option<PiTask> {
        let owner = owner_task(self.lock(l)?.owner.load(Ordering::Relaxed))?;
        Some(PiTask(owner.id().slot() as u16))
    }

    fn blocked_on(&self, t: PiTask) -> Option<LockId> {
        let p = Self::task(t).blocked_on.load(Ordering::Acquire) as *const LockCore;
        if p.is_null() {
            return None;
        }
        // SAFETY: blocked_on names the live lock the task is queued on.
        let lock = unsafe { &*p };
        lock.waiters.slot().map(|s| LockId(s as u16))
    }

    fn base_prio(&self, t: PiTask) -> Prio {
        Self::task(t).base_prio()
    }

    fn effective_prio(&self, t: PiTask) -> Prio {
        Self::task(t).prio()
    }

    fn set_effective_prio(&mut self, t: PiTask, prio: Prio) {
        let task = Self::task(t);
        if prio > task.prio() {
            registry::get().pi_boosted();
        }
        sched::set_prio(task, prio);
    }

    fn top_waiter_prio(&self, l: LockId) -> Option<Prio> {
        self.state.table.get(l.index())?.waiters.top_prio()
    }

    fn requeue_waiter(&mut self, l: LockId, t: PiTask, prio: Prio) {
        if let Some(c) = self.state.table.get_mut(l.index()) {
            let _ = c.waiters.requeue(t.index(), prio);
        }
    }

    fn max_top_waiter_prio_of_held(&self, t: PiTask) -> Option<Prio> {
        let me = addr(Self::task(t));
        self.state
            .table
            .iter()
            .filter(|c| {
                // SAFETY: non-null table entries name live locks.
                !c.lock.is_null() && unsafe { (*c.lock).owner.load(Ordering::Relaxed) } & !HAS_WAITERS == me
            })
            .filter_map(|c| c.waiters.top_prio())
            .max()
    }
}
