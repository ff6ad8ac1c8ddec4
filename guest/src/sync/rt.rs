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
//! - Unlock with waiters leaves the lock ownerless but marked contended
//!   and wakes the top waiter, which takes it itself (as in Linux): the
//!   task that takes a lock is always the one that accounts for it, so no
//!   census can ever see a lock owned by a task that looks asleep. While
//!   ownerless, the lock goes to the top waiter, or to a newcomer that
//!   outranks it (a lower-priority task never overtakes a waiter); the
//!   unlocker drops back to the priority its remaining locks justify.
//! - A waiter that holds no other switchable lock leaves the wait when a
//!   freeze starts (dequeued, the owner's chain deboosted), freezes, and
//!   tries again after the thaw.
//!
//! Owner word (`LockCore::owner`):
//!
//! ```text
//!   0                         free
//!   task address              owned, no waiters  (fast unlock: CAS to 0)
//!   task address | HAS_WAITERS owned, waiters queued (unlock takes PI_LOCK)
//!   HAS_WAITERS               no owner, waiters queued: the top waiter was
//!                             woken to take it
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

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use super::lock_core::{BACKED_OUT, HAS_WAITERS, LockCore, slowpath_enter, slowpath_exit};
use super::raw::RawSpinLock;
use super::registry;
use crate::logic::pi::{self, LockId, PiError, PiGraph, TaskId as PiTask};
use crate::logic::prio_list::{Prio, PrioList};
use crate::sched::{self, Task};

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
    if lock_slow(lock, me) { 1 } else { BACKED_OUT }
}

/// Fault injection (`handoff-delay=US`): a woken waiter stays this long
/// between its wake-up and taking the lock, busy (the window in which an
/// unlocker-side hand-off once left a lock owned by a task that looked
/// asleep to the freezer).
static WAKE_DELAY_US: AtomicU32 = AtomicU32::new(0);

/// Sets the fault injection's delay (0: off).
pub fn set_wake_delay_us(us: u32) {
    WAKE_DELAY_US.store(us, Ordering::Relaxed);
}

fn wake_delay() {
    let us = WAKE_DELAY_US.load(Ordering::Relaxed);
    if us != 0 {
        let end = sched::now_tsc() + sched::us_to_tsc(u64::from(us));
        while sched::now_tsc() < end {
            core::hint::spin_loop();
        }
    }
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

/// Returns false when the task left the wait for a freeze (without the
/// lock): the caller backs out of the implementation.
fn lock_slow(lock: &LockCore, me: &'static Task) -> bool {
    sched::might_sleep("rt lock");
    slowpath_enter(me);
    let mut queued = false;
    let mut pi = PI_LOCK.lock_irqsave();
    loop {
        if try_take(&mut pi, lock, me, queued) {
            break;
        }
        // A freeze started and this task holds nothing else: leave the
        // wait and this implementation (the caller freezes and calls again
        // through the call site, which may select the other one by then).
        // The switch then waits for at most the critical section in
        // progress, not for the queue behind it.
        if sched::freezer::freezing() && me.switch_locks_held.load(Ordering::Relaxed) == 0 {
            if queued {
                dequeue_waiter(&mut pi, lock, me);
            }
            drop(pi);
            slowpath_exit(me);
            return false;
        }
        if !queued {
            enqueue_waiter(&mut pi, lock, me);
            queued = true;
            continue;
        }
        // Sleep until the unlocker (or the freezer) wakes us. The state is
        // set under PI_LOCK, so the wake-up cannot be lost between the
        // check above and the sleep.
        sched::set_current_blocked();
        drop(pi);
        sched::schedule();
        wake_delay();
        pi = PI_LOCK.lock_irqsave();
    }
    drop(pi);
    slowpath_exit(me);
    true
}

/// Takes `lock` if it has no owner and this task may: it is the top
/// waiter (`queued`), or nobody waits, or it outranks the top waiter
/// (who has not run to take it yet). Under PI_LOCK. The task that takes
/// a lock is always the task that accounts for it: nobody is ever made
/// owner on its behalf while it sleeps.
fn try_take(pi: &mut PiState, lock: &LockCore, me: &'static Task, queued: bool) -> bool {
    let word = lock.owner.load(Ordering::Relaxed);
    if word & !HAS_WAITERS != 0 {
        return false;
    }
    let my_slot = me.id().slot();
    let slot = lock.waiters.slot();
    let top = slot.and_then(|s| pi.table[s].waiters.top());
    match (queued, top) {
        (true, Some((t, _))) if t != my_slot => return false,
        (false, Some((_, top_prio))) if me.prio() <= top_prio => return false,
        _ => {}
    }
    let mut more = false;
    if let Some(s) = slot {
        if queued {
            let _ = pi.table[s].waiters.remove(my_slot);
            me.blocked_on.store(core::ptr::null_mut(), Ordering::Release);
            registry::get().waiter_dequeued();
        }
        more = !pi.table[s].waiters.is_empty();
        if !more {
            detach_list(pi, lock, s);
        }
    }
    lock.owner.store(addr(me) | if more { HAS_WAITERS } else { 0 }, Ordering::Release);
    if more && PI_ENABLED.load(Ordering::Relaxed) {
        // Inherit from the waiters still queued.
        let mut g = KernelPi { state: pi };
        if let Err(e) = pi::adjust_prio(&mut g, PiTask(my_slot as u16)) {
            report_pi_error(pi, &e);
        }
    }
    true
}

/// Queues this task as a waiter of `lock` (marking it contended) and walks
/// the PI chain. Under PI_LOCK.
fn enqueue_waiter(pi: &mut PiState, lock: &LockCore, me: &'static Task) {
    lock.owner.fetch_or(HAS_WAITERS, Ordering::Relaxed);
    let slot = match lock.waiters.slot() {
        Some(s) => s,
        None => attach_list(pi, lock),
    };
    let my_slot = me.id().slot();
    if let Err(e) = pi.table[slot].waiters.insert(my_slot, me.prio()) {
        panic!("rt lock '{}': cannot queue task '{}': {e:?}", lock.name(), me.name());
    }
    me.blocked_on.store(lock as *const LockCore as *mut (), Ordering::Release);
    registry::get().waiter_queued();
    if PI_ENABLED.load(Ordering::Relaxed)
        && let Err(e) = pi::walk_chain(&mut KernelPi { state: pi }, PiTask(my_slot as u16), LockId(slot as u16))
    {
        report_pi_error(pi, &e);
    }
}

/// This task leaves `lock`'s waiter list without the lock (a freeze
/// started): the owner's chain drops the boost it gave, and if the lock has
/// no owner the next waiter is woken (it is its turn now). Under PI_LOCK.
fn dequeue_waiter(pi: &mut PiState, lock: &LockCore, me: &'static Task) {
    let Some(slot) = lock.waiters.slot() else { return };
    let _ = pi.table[slot].waiters.remove(me.id().slot());
    me.blocked_on.store(core::ptr::null_mut(), Ordering::Release);
    registry::get().waiter_dequeued();
    let owner = owner_task(lock.owner.load(Ordering::Relaxed));
    let next = pi.table[slot].waiters.top_id();
    if next.is_none() {
        detach_list(pi, lock, slot);
        lock.owner.fetch_and(!HAS_WAITERS, Ordering::Release);
    }
    if PI_ENABLED.load(Ordering::Relaxed) {
        let mut g = KernelPi { state: pi };
        let r = match (next, owner) {
            (Some(_), _) => pi::propagate_from_lock(&mut g, LockId(slot as u16)).map(|_| ()),
            (None, Some(o)) => pi::adjust_prio(&mut g, PiTask(o.id().slot() as u16)).map(|_| ()),
            (None, None) => Ok(()),
        };
        if let Err(e) = r {
            report_pi_error(pi, &e);
        }
    }
    if owner.is_none()
        && let Some(n) = next
    {
        sched::wake_up(sched::task_by_slot(n));
    }
}

/// Returns `lock`'s waiter list to the table (it has no waiters left).
fn detach_list(pi: &mut PiState, lock: &LockCore, slot: usize) {
    pi.table[slot].lock = core::ptr::null();
    lock.waiters.0.store(0, Ordering::Release);
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

/// Releases the lock. Uncontended: the owner word goes to 0. With
/// waiters: it goes to "no owner, waiters queued" and the top waiter is
/// woken to take the lock itself (`try_take`); the unlocker drops back to
/// the priority its remaining locks justify.
pub extern "C" fn unlock(lock: *const LockCore) -> u64 {
    // SAFETY: as for `lock`.
    let lock = unsafe { &*lock };
    let me = me();
    if lock.owner.compare_exchange(addr(me), 0, Ordering::Release, Ordering::Relaxed).is_ok() {
        return 0;
    }
    let mut pi = PI_LOCK.lock_irqsave();
    // The waiters may all have left (backed out for a freeze) between the
    // failed fast unlock and PI_LOCK: then it is a plain release.
    if lock.owner.load(Ordering::Relaxed) == addr(me) {
        lock.owner.store(0, Ordering::Release);
        return 0;
    }
    if lock.owner.load(Ordering::Relaxed) != addr(me) | HAS_WAITERS {
        panic!(
            "rt unlock of '{}' by '{}': owner word {:#x} is not ours",
            lock.name(),
            me.name(),
            lock.owner.load(Ordering::Relaxed)
        );
    }
    let Some(next) = lock.waiters.slot().and_then(|s| pi.table[s].waiters.top_id()) else {
        panic!("rt unlock of '{}': marked contended without waiters", lock.name());
    };
    lock.owner.store(HAS_WAITERS, Ordering::Release);
    if PI_ENABLED.load(Ordering::Relaxed) {
        let mut g = KernelPi { state: &mut pi };
        if let Err(e) = pi::deboost(&mut g, PiTask(me.id().slot() as u16)) {
            report_pi_error(&pi, &e);
        }
    }
    sched::wake_up(sched::task_by_slot(next));
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
