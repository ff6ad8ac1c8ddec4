//! The rt implementation of the switchable lock, as a protocol core: an
//! rtmutex, as PREEMPT_RT turns `spinlock_t` into ("sleeping spinlocks").
//! The kernel runs it through `sync/rt.rs` (its [`RtKernel`] is the real
//! scheduler); the model checker (`model/`) runs the same code under every
//! schedule of a few tasks.
//!
//! - The holder stays preemptible: nothing here disables preemption while
//!   the lock is held.
//! - Uncontended lock and unlock are one compare-exchange on the owner word.
//! - Contended: the task first spins *adaptively* while the owner is running
//!   on a CPU whose vCPU runs (it will release soon), bounded
//!   ([`RtKernel::spin_budget`]); then it queues as a waiter, ordered by
//!   priority (FIFO among equals), and sleeps.
//! - Priority inheritance: queuing walks the chain task -> lock -> owner ->
//!   lock that owner waits for -> ..., raising every owner to the waiter's
//!   priority (`pi::walk_chain`, bounded depth); a chain that comes back to
//!   the waiter is a deadlock, a kernel panic that names the cycle.
//! - Unlock with waiters leaves the lock ownerless but marked contended
//!   and wakes the top waiter, which takes it itself (*wake and take*, as
//!   in Linux): the task that takes a lock is always the one that accounts
//!   for it, so no census can ever see a lock owned by a task that looks
//!   asleep. While ownerless, the lock goes to the top waiter, or to a
//!   newcomer that outranks it (a *steal*: a lower-priority task never
//!   overtakes a waiter); the unlocker drops back to the priority its
//!   remaining locks justify.
//! - A waiter that holds no other switchable lock leaves the wait when a
//!   freeze starts (dequeued, the owner's chain deboosted), freezes, and
//!   tries again after the thaw ([`BACKED_OUT`]).
//!
//! Owner word ([`LockWord::owner`]):
//!
//! ```text
//!   0                          free
//!   task word                  owned, no waiters  (fast unlock: CAS to 0)
//!   task word | HAS_WAITERS    owned, waiters queued (unlock takes the PI lock)
//!   HAS_WAITERS                no owner, waiters queued: the top waiter
//!                              has been woken to take it
//! ```
//!
//! Invariants, whenever the PI lock is free (the model checks them):
//! - **mutual exclusion**: at most one task is between a successful lock
//!   and its unlock;
//! - **no lost wake-up**: a lock whose word is `HAS_WAITERS` (ownerless,
//!   waiters queued) has a top waiter that is not asleep: it was woken
//!   and will run `try_take`. Whatever changes which waiter is on top of
//!   an ownerless lock (a PI requeue, a waiter leaving) wakes the new top
//!   waiter (`pi::PiGraph::wake_top_waiter`, `dequeue_waiter`);
//! - **PI**: every task's effective priority is the highest of its base
//!   priority and the top waiters of the locks it owns (`pi`, invariant
//!   E), so an owner runs at least at its top waiter's priority, and a
//!   deboost restores exactly what is left.
//!
//! All waiter lists and every task's PI state are protected by one lock,
//! the kernel's PI lock ([`RtKernel::pi_lock`], a raw spinlock with IRQs
//! saved): the simplification of Linux's per-lock `wait_lock` + per-task
//! `pi_lock` that a small SMP kernel can afford. Lock order: PI lock ->
//! run-queue locks (taken by `set_prio` and `wake_up`). A contended lock
//! borrows a waiter list from a fixed table ([`PiState`]) while it has
//! waiters ([`MAX_CONTENDED`] at once); free and uncontended locks need
//! none, which keeps the lock layout small and shared with mainline mode.

use core::fmt;
use core::ops::DerefMut;
use core::sync::atomic::Ordering;

use super::atomic::{Atomic, AtomicInt};
use super::pi::{self, LockId, PiError, PiGraph, TaskId as PiTask};
use super::prio_list::{Prio, PrioList};

/// Contended locks at one time.
pub const MAX_CONTENDED: usize = 32;

/// Task slots the waiter lists index (task slots are 8 bits).
pub const TASK_SLOTS: usize = 256;

/// Owner-word flag: waiters are queued; unlock must hand off.
pub const HAS_WAITERS: usize = 1;

/// What a lock implementation returns when it left its wait for a freeze
/// without the lock (the caller freezes and tries again).
pub const BACKED_OUT: u64 = 2;

/// What a lock returns when a signal ended an interruptible wait
/// ([`RtKernel::wait_interrupted`]): without the lock, nothing boosted
/// by this task's wait any more.
pub const INTERRUPTED: u64 = 3;

/// What a lock returns when blocking would have closed a cycle and the
/// task asked for deadlocks to be reported ([`RtKernel::detects_deadlock`]):
/// without the lock, not queued, every boost of the chain walk undone.
pub const DEADLOCK: u64 = 4;

/// The words of a switchable lock that the rt protocol uses, at the start
/// of the kernel's lock (`LockCore`): their layout is ABI (the VMM reads
/// them).
#[repr(C)]
pub struct LockWord<W, S> {
    /// See the module doc's table. The task word is the kernel's name for
    /// a task in owner words (its address: even, never 0).
    pub owner: W,
    /// 0 when the lock has no waiter list, else the [`PiState`] table index
    /// + 1 (protected by the PI lock).
    pub waiters: S,
}

impl<W: Atomic<usize>, S: Atomic<u16>> LockWord<W, S> {
    /// Whether the lock is free in both modes' terms: no owner, no waiters.
    pub fn is_free(&self) -> bool {
        self.owner.load(Ordering::Acquire) == 0 && self.waiters.load(Ordering::Acquire) == 0
    }

    /// The waiter-list table index, if the lock has one.
    pub fn waiter_slot(&self) -> Option<usize> {
        match self.waiters.load(Ordering::Acquire) {
            0 => None,
            n => Some(usize::from(n) - 1),
        }
    }
}

/// The lock type of kernel `K`.
pub type Lock<K> = LockWord<<K as RtKernel>::Word, <K as RtKernel>::Slot>;

/// Why an adaptive spin ended (for the kernel's statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpinEnd {
    /// It took the lock.
    Took,
    /// The owner left its CPU, or others are queued.
    OwnerOffCpu,
    /// The owner's vCPU is not running on the host.
    VcpuPreempted,
    /// The budget ran out.
    OutOfBudget,
}

/// What the rt lock needs of the kernel: its tasks, its scheduler, its
/// freezer and its PI lock. Tasks are named by a handle (`Task`), by a
/// *task word* (what owner words hold) and by a *slot* (what waiter lists
/// hold, below [`TASK_SLOTS`]); locks by their address.
pub trait RtKernel {
    type Task: Copy + Eq;
    /// The owner word's atomic.
    type Word: AtomicInt<usize>;
    /// The waiter-list handle's atomic.
    type Slot: Atomic<u16>;
    /// The PI lock held: the waiter lists and every task's PI state.
    type PiGuard<'a>: DerefMut<Target = PiState>
    where
        Self: 'a;

    fn current(&self) -> Self::Task;
    /// The task's owner-word value: not 0, bit 0 clear.
    fn task_word(&self, t: Self::Task) -> usize;
    /// The task a (non-zero) owner word names, `HAS_WAITERS` masked off.
    fn task_of_word(&self, word: usize) -> Self::Task;
    fn slot_of(&self, t: Self::Task) -> usize;
    fn task_at(&self, slot: usize) -> Self::Task;
    fn task_name(&self, t: Self::Task) -> &str;
    /// Effective priority.
    fn prio(&self, t: Self::Task) -> Prio;
    fn base_prio(&self, t: Self::Task) -> Prio;
    /// Sets the effective priority (the scheduler requeues the task).
    fn set_prio(&self, t: Self::Task, prio: Prio);
    /// Running on its CPU now.
    fn on_cpu(&self, t: Self::Task) -> bool;
    /// Its CPU's vCPU is not running on the host.
    fn vcpu_preempted(&self, t: Self::Task) -> bool;
    /// Switchable locks the task holds.
    fn locks_held(&self, t: Self::Task) -> u32;
    /// The address of the lock the task is queued on, 0 when none.
    fn blocked_on(&self, t: Self::Task) -> usize;
    fn set_blocked_on(&self, t: Self::Task, lock: usize);

    /// The lock at `addr` (an address this core was given as a lock).
    fn lock_at(&self, addr: usize) -> &Lock<Self>;
    fn lock_name(&self, addr: usize) -> &str;

    /// Asserts the caller may sleep.
    fn might_sleep(&self);
    /// Marks the current task Blocked, with a full barrier.
    fn block_current(&self);
    /// Marks it Runnable again (it will not sleep after all).
    fn unblock_current(&self);
    /// Gives up the CPU; returns once the task is Runnable again.
    fn schedule(&self);
    /// Makes a Blocked task Runnable (nothing if it is not Blocked).
    fn wake_up(&self, t: Self::Task);

    /// A freeze is in progress.
    fn freezing(&self) -> bool;
    /// The task enters / leaves a lock slow path (busy for the freezer).
    fn slowpath_enter(&self, t: Self::Task);
    fn slowpath_exit(&self, t: Self::Task);

    fn pi_lock(&self) -> Self::PiGuard<'_>;
    /// Priority inheritance on (the self-test that proves PI works turns it off).
    fn pi_enabled(&self) -> bool;
    /// Adaptive spinning, in iterations (0: off).
    fn spin_budget(&self) -> u32;

    /// Accounting hooks (the shared registry, statistics).
    fn waiter_queued(&self) {}
    fn waiter_dequeued(&self) {}
    fn pi_boosted(&self) {}
    fn spin_ended(&self, _how: SpinEnd) {}
    /// Called by a woken waiter before it tries to take the lock (fault
    /// injection: `handoff-delay`).
    fn after_wake(&self) {}
    /// `t`'s lock wait is to end without the lock: a signal reached a
    /// task in an interruptible lock (the lock tester's `lockint`). Read
    /// under the PI lock, after the task marked itself Blocked, so that a
    /// signal that sets it and then wakes the task is never missed.
    fn wait_interrupted(&self, _t: Self::Task) -> bool {
        false
    }
    /// A deadlock found when `t` blocks is returned to it as [`DEADLOCK`]
    /// instead of being a kernel panic (the lock tester's threads).
    fn detects_deadlock(&self, _t: Self::Task) -> bool {
        false
    }
    /// One iteration of a spin-wait.
    fn relax(&self) {
        core::hint::spin_loop();
    }
}

/// One contended lock's waiter list.
pub struct Contended {
    /// The lock's address, 0 when this entry is free.
    lock: usize,
    waiters: PrioList<TASK_SLOTS>,
}

/// Every waiter list (protected by the PI lock).
pub struct PiState {
    table: [Contended; MAX_CONTENDED],
}

impl PiState {
    pub const fn new() -> Self {
        Self { table: [const { Contended { lock: 0, waiters: PrioList::new() } }; MAX_CONTENDED] }
    }

    /// The waiters of the lock with waiter-list index `slot`, top first.
    pub fn waiters(&self, slot: usize) -> Option<&PrioList<TASK_SLOTS>> {
        self.table.get(slot).filter(|c| c.lock != 0).map(|c| &c.waiters)
    }

    /// The lock whose waiter list is at index `slot`.
    pub fn lock_of(&self, slot: usize) -> Option<usize> {
        self.table.get(slot).map(|c| c.lock).filter(|&l| l != 0)
    }
}

impl Default for PiState {
    fn default() -> Self {
        Self::new()
    }
}

/// Takes the lock, sleeping if needed. Returns 1 if it was contended, 0
/// if not, [`BACKED_OUT`] if it left the wait for a freeze without it,
/// [`INTERRUPTED`] or [`DEADLOCK`] (only for tasks that asked for them)
/// without it.
pub fn lock<K: RtKernel>(k: &K, lock: &Lock<K>) -> u64 {
    let me = k.current();
    let word = k.task_word(me);
    if lock.owner.compare_exchange(0, word, Ordering::Acquire, Ordering::Relaxed).is_ok() {
        return 0;
    }
    if spin_while_owner_runs(k, lock, word) {
        return 1;
    }
    lock_slow(k, lock, me)
}

/// Takes the lock only if it is free right now. Returns 1 on success.
pub fn try_lock<K: RtKernel>(k: &K, lock: &Lock<K>) -> u64 {
    let word = k.task_word(k.current());
    u64::from(lock.owner.compare_exchange(0, word, Ordering::Acquire, Ordering::Relaxed).is_ok())
}

/// Releases the lock. Uncontended: the owner word goes to 0. With
/// waiters: it goes to "no owner, waiters queued" and the top waiter is
/// woken to take the lock itself ([`try_take`]); the unlocker drops back
/// to the priority its remaining locks justify.
pub fn unlock<K: RtKernel>(k: &K, lock: &Lock<K>) -> u64 {
    let me = k.current();
    let word = k.task_word(me);
    if lock.owner.compare_exchange(word, 0, Ordering::Release, Ordering::Relaxed).is_ok() {
        return 0;
    }
    let mut pi = k.pi_lock();
    // The waiters may all have left (backed out for a freeze) between the
    // failed fast unlock and the PI lock: then it is a plain release.
    let now = lock.owner.load(Ordering::Relaxed);
    if now == word {
        lock.owner.store(0, Ordering::Release);
        return 0;
    }
    let addr = addr_of(lock);
    if now != word | HAS_WAITERS {
        panic!("rt unlock of '{}' by '{}': owner word {now:#x} is not ours", k.lock_name(addr), k.task_name(me));
    }
    let Some(next) = lock.waiter_slot().and_then(|s| pi.table[s].waiters.top_id()) else {
        panic!("rt unlock of '{}': marked contended without waiters", k.lock_name(addr));
    };
    lock.owner.store(HAS_WAITERS, Ordering::Release);
    if k.pi_enabled() {
        let mut g = CorePi { k, state: &mut pi };
        if let Err(e) = pi::deboost(&mut g, PiTask(k.slot_of(me) as u16)) {
            report_pi_error(k, &pi, &e);
        }
    }
    k.wake_up(k.task_at(next));
    // Dropping the PI lock re-enables preemption: if the deboost made a
    // waiting higher-priority task the best choice here, we are preempted.
    drop(pi);
    0
}

/// Changes `t`'s base priority and restores invariant E along its chain
/// (Linux's `rt_mutex_adjust_pi` after `sched_setscheduler`): `store`
/// writes the new base; under the PI lock, so that no chain walk sees a
/// base priority without the effective priority that follows from it. A
/// blocked task is requeued in its lock's waiter list and the walk goes
/// on down the chain; a new top waiter of an ownerless lock is woken.
pub fn set_base_prio<K: RtKernel>(k: &K, t: K::Task, store: impl FnOnce()) {
    let mut pi = k.pi_lock();
    store();
    if k.pi_enabled() {
        let mut g = CorePi { k, state: &mut pi };
        if let Err(e) = pi::adjust_prio(&mut g, PiTask(k.slot_of(t) as u16)) {
            report_pi_error(k, &pi, &e);
        }
    } else {
        k.set_prio(t, k.base_prio(t));
    }
}

fn addr_of<W, S>(lock: &LockWord<W, S>) -> usize {
    core::ptr::from_ref(lock) as usize
}

/// Adaptive spinning: while the owner is on a CPU whose vCPU runs, and
/// nobody is queued, it will likely release soon; spin a bounded number
/// of iterations. An owner whose vCPU the host has scheduled out cannot
/// release until it runs again: spinning on it only burns this vCPU.
fn spin_while_owner_runs<K: RtKernel>(k: &K, lock: &Lock<K>, me: usize) -> bool {
    let budget = k.spin_budget();
    if budget == 0 {
        return false;
    }
    for _ in 0..budget {
        let word = lock.owner.load(Ordering::Relaxed);
        if word == 0 {
            if lock.owner.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
                k.spin_ended(SpinEnd::Took);
                return true;
            }
        } else {
            if word & HAS_WAITERS != 0 {
                k.spin_ended(SpinEnd::OwnerOffCpu);
                return false;
            }
            let owner = k.task_of_word(word);
            if !k.on_cpu(owner) {
                k.spin_ended(SpinEnd::OwnerOffCpu);
                return false;
            }
            if k.vcpu_preempted(owner) {
                k.spin_ended(SpinEnd::VcpuPreempted);
                return false;
            }
        }
        k.relax();
    }
    k.spin_ended(SpinEnd::OutOfBudget);
    false
}

/// Returns 1 with the lock; without it, [`BACKED_OUT`] when the task left
/// the wait for a freeze (the caller backs out of the implementation),
/// [`INTERRUPTED`] when a signal ended it, [`DEADLOCK`] when blocking
/// would have closed a cycle.
fn lock_slow<K: RtKernel>(k: &K, lock: &Lock<K>, me: K::Task) -> u64 {
    k.might_sleep();
    k.slowpath_enter(me);
    let mut queued = false;
    let mut pi = k.pi_lock();
    loop {
        if try_take(k, &mut pi, lock, me, queued) {
            break;
        }
        // Queued: Blocked first (a full barrier), then the freeze check.
        // The state is set under the PI lock, so an unlocker's wake-up
        // cannot be lost between the check and the sleep; and a freeze
        // request either is seen here or sees us Blocked and queued, and
        // wakes us (`freezer::request`): it does not take the PI lock.
        if queued {
            k.block_current();
        }
        // A freeze started and this task holds nothing else: leave the
        // wait and this implementation (the caller freezes and calls again
        // through the call site, which may select the other one by then).
        // The switch then waits for at most the critical section in
        // progress, not for the queue behind it.
        // A signal ends an interruptible wait the same way, whatever the
        // task holds (Linux's `rt_mutex_lock_interruptible`).
        let interrupted = k.wait_interrupted(me);
        if interrupted || (k.freezing() && k.locks_held(me) == 0) {
            if queued {
                k.unblock_current();
                dequeue_waiter(k, &mut pi, lock, me);
            }
            drop(pi);
            k.slowpath_exit(me);
            return if interrupted { INTERRUPTED } else { BACKED_OUT };
        }
        if !queued {
            if !enqueue_waiter(k, &mut pi, lock, me) {
                drop(pi);
                k.slowpath_exit(me);
                return DEADLOCK;
            }
            queued = true;
            continue;
        }
        // Sleep until the unlocker, a PI requeue that puts us on top of an
        // ownerless lock, or the freezer wakes us.
        drop(pi);
        k.schedule();
        k.after_wake();
        pi = k.pi_lock();
    }
    drop(pi);
    k.slowpath_exit(me);
    1
}

/// Takes `lock` if it has no owner and this task may: it is the top
/// waiter (`queued`), or nobody waits, or it outranks the top waiter
/// (who has not run to take it yet). Under the PI lock. The task that
/// takes a lock is always the task that accounts for it: nobody is ever
/// made owner on its behalf while it sleeps.
fn try_take<K: RtKernel>(k: &K, pi: &mut PiState, lock: &Lock<K>, me: K::Task, queued: bool) -> bool {
    let word = lock.owner.load(Ordering::Relaxed);
    if word & !HAS_WAITERS != 0 {
        return false;
    }
    if word == 0 {
        // Free, nobody queued (waiters are queued with `HAS_WAITERS` set,
        // under this PI lock, and it stays set while any is): but the
        // fast path takes a free lock without the PI lock, by a
        // compare-exchange, and so must this. A load and a store would
        // let a fast-path locker between them, and both would own it.
        debug_assert!(!queued && lock.waiter_slot().is_none(), "rt lock: waiters queued on a lock marked uncontended");
        return lock.owner.compare_exchange(0, k.task_word(me), Ordering::Acquire, Ordering::Relaxed).is_ok();
    }
    // Ownerless and `HAS_WAITERS`: no fast path can change the word now
    // (it compares against 0, or against its own task word), so only
    // this PI lock's holder writes it.
    let my_slot = k.slot_of(me);
    let slot = lock.waiter_slot();
    let top = slot.and_then(|s| pi.table[s].waiters.top());
    match (queued, top) {
        (true, Some((t, _))) if t != my_slot => return false,
        (false, Some((_, top_prio))) if k.prio(me) <= top_prio => return false,
        _ => {}
    }
    let mut more = false;
    if let Some(s) = slot {
        if queued {
            let _ = pi.table[s].waiters.remove(my_slot);
            k.set_blocked_on(me, 0);
            k.waiter_dequeued();
        }
        more = !pi.table[s].waiters.is_empty();
        if !more {
            detach_list(pi, lock, s);
        }
    }
    lock.owner.store(k.task_word(me) | if more { HAS_WAITERS } else { 0 }, Ordering::Release);
    if more && k.pi_enabled() {
        // Inherit from the waiters still queued.
        let mut g = CorePi { k, state: pi };
        if let Err(e) = pi::adjust_prio(&mut g, PiTask(my_slot as u16)) {
            report_pi_error(k, pi, &e);
        }
    }
    true
}

/// Queues this task as a waiter of `lock` (marking it contended) and walks
/// the PI chain. Under the PI lock. Returns false when the walk found a
/// deadlock and the task asked for it to be reported: the task is then
/// dequeued again and the walk's boosts undone (`dequeue_waiter`).
fn enqueue_waiter<K: RtKernel>(k: &K, pi: &mut PiState, lock: &Lock<K>, me: K::Task) -> bool {
    lock.owner.fetch_or(HAS_WAITERS, Ordering::Relaxed);
    let addr = addr_of(lock);
    let slot = match lock.waiter_slot() {
        Some(s) => s,
        None => attach_list(k, pi, lock),
    };
    let my_slot = k.slot_of(me);
    if let Err(e) = pi.table[slot].waiters.insert(my_slot, k.prio(me)) {
        panic!("rt lock '{}': cannot queue task '{}': {e:?}", k.lock_name(addr), k.task_name(me));
    }
    k.set_blocked_on(me, addr);
    k.waiter_queued();
    if k.pi_enabled()
        && let Err(e) = pi::walk_chain(&mut CorePi { k, state: pi }, PiTask(my_slot as u16), LockId(slot as u16))
    {
        if matches!(e, PiError::Deadlock { .. }) && k.detects_deadlock(me) {
            dequeue_waiter(k, pi, lock, me);
            return false;
        }
        report_pi_error(k, pi, &e);
    }
    true
}

/// This task leaves `lock`'s waiter list without the lock (a freeze
/// started, a signal, or its chain walk found a deadlock): the owner's
/// chain drops the boost it gave, and if the lock has no owner the next
/// waiter is woken (it is its turn now). Under the PI lock.
fn dequeue_waiter<K: RtKernel>(k: &K, pi: &mut PiState, lock: &Lock<K>, me: K::Task) {
    let Some(slot) = lock.waiter_slot() else { return };
    let _ = pi.table[slot].waiters.remove(k.slot_of(me));
    k.set_blocked_on(me, 0);
    k.waiter_dequeued();
    let word = lock.owner.load(Ordering::Relaxed) & !HAS_WAITERS;
    let owner = (word != 0).then(|| k.task_of_word(word));
    let next = pi.table[slot].waiters.top_id();
    if next.is_none() {
        detach_list(pi, lock, slot);
        lock.owner.fetch_and(!HAS_WAITERS, Ordering::Release);
    }
    if k.pi_enabled() {
        let mut g = CorePi { k, state: pi };
        let r = match (next, owner) {
            (Some(_), _) => pi::propagate_from_lock(&mut g, LockId(slot as u16)).map(|_| ()),
            (None, Some(o)) => pi::adjust_prio(&mut g, PiTask(k.slot_of(o) as u16)).map(|_| ()),
            (None, None) => Ok(()),
        };
        if let Err(e) = r {
            report_pi_error(k, pi, &e);
        }
    }
    if owner.is_none()
        && let Some(n) = next
    {
        k.wake_up(k.task_at(n));
    }
}

/// Returns `lock`'s waiter list to the table (it has no waiters left).
fn detach_list<W, S: Atomic<u16>>(pi: &mut PiState, lock: &LockWord<W, S>, slot: usize) {
    pi.table[slot].lock = 0;
    lock.waiters.store(0, Ordering::Release);
}

/// Gives `lock` a free waiter list from the table.
fn attach_list<K: RtKernel>(k: &K, pi: &mut PiState, lock: &Lock<K>) -> usize {
    let addr = addr_of(lock);
    let Some(slot) = pi.table.iter().position(|c| c.lock == 0) else {
        panic!("rt lock '{}': more than {MAX_CONTENDED} locks contended at once", k.lock_name(addr));
    };
    pi.table[slot].lock = addr;
    lock.waiters.store(slot as u16 + 1, Ordering::Release);
    slot
}

/// A PI failure is a kernel bug or a deadlock: panic, naming the chain.
fn report_pi_error<K: RtKernel>(k: &K, pi: &PiState, e: &PiError) -> ! {
    let (kind, links, closed) = match e {
        PiError::Deadlock { cycle } => ("deadlock", cycle.links(), true),
        PiError::ChainTooDeep { chain, .. } => ("lock chain too deep", chain.links(), false),
    };
    panic!("rtmutex {kind}: {}", ChainNames { k, pi, links, closed });
}

/// Displays a PI chain with task and lock names.
struct ChainNames<'a, K> {
    k: &'a K,
    pi: &'a PiState,
    links: &'a [(PiTask, LockId)],
    /// A cycle: the last lock is held by the first task.
    closed: bool,
}

impl<K: RtKernel> fmt::Display for ChainNames<'_, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (t, l)) in self.links.iter().enumerate() {
            if i > 0 {
                f.write_str(" -> ")?;
            }
            let lock_name = self.pi.lock_of(l.index()).map_or("?", |a| self.k.lock_name(a));
            write!(f, "task '{}' waits for lock '{lock_name}'", self.k.task_name(self.k.task_at(t.index())))?;
        }
        if self.closed
            && let Some((first, _)) = self.links.first()
        {
            write!(f, ", held by task '{}'", self.k.task_name(self.k.task_at(first.index())))?;
        }
        Ok(())
    }
}

/// The kernel's structures seen as a `pi::PiGraph`: tasks by slot,
/// contended locks by waiter-table index. Only built under the PI lock.
struct CorePi<'a, K> {
    k: &'a K,
    state: &'a mut PiState,
}

impl<K: RtKernel> CorePi<'_, K> {
    fn lock(&self, l: LockId) -> Option<&Lock<K>> {
        self.state.lock_of(l.index()).map(|a| self.k.lock_at(a))
    }
}

impl<K: RtKernel> PiGraph for CorePi<'_, K> {
    fn owner_of(&self, l: LockId) -> Option<PiTask> {
        let word = self.lock(l)?.owner.load(Ordering::Relaxed) & !HAS_WAITERS;
        (word != 0).then(|| PiTask(self.k.slot_of(self.k.task_of_word(word)) as u16))
    }

    fn blocked_on(&self, t: PiTask) -> Option<LockId> {
        let addr = self.k.blocked_on(self.k.task_at(t.index()));
        if addr == 0 {
            return None;
        }
        self.k.lock_at(addr).waiter_slot().map(|s| LockId(s as u16))
    }

    fn base_prio(&self, t: PiTask) -> Prio {
        self.k.base_prio(self.k.task_at(t.index()))
    }

    fn effective_prio(&self, t: PiTask) -> Prio {
        self.k.prio(self.k.task_at(t.index()))
    }

    fn set_effective_prio(&mut self, t: PiTask, prio: Prio) {
        let task = self.k.task_at(t.index());
        if prio > self.k.prio(task) {
            self.k.pi_boosted();
        }
        self.k.set_prio(task, prio);
    }

    fn top_waiter_prio(&self, l: LockId) -> Option<Prio> {
        self.state.table.get(l.index())?.waiters.top_prio()
    }

    fn top_waiter(&self, l: LockId) -> Option<PiTask> {
        let top = self.state.table.get(l.index())?.waiters.top_id()?;
        Some(PiTask(top as u16))
    }

    fn wake_top_waiter(&mut self, t: PiTask) {
        self.k.wake_up(self.k.task_at(t.index()));
    }

    fn requeue_waiter(&mut self, l: LockId, t: PiTask, prio: Prio) {
        if let Some(c) = self.state.table.get_mut(l.index()) {
            let _ = c.waiters.requeue(t.index(), prio);
        }
    }

    fn max_top_waiter_prio_of_held(&self, t: PiTask) -> Option<Prio> {
        let me = self.k.task_word(self.k.task_at(t.index()));
        self.state
            .table
            .iter()
            .filter(|c| c.lock != 0 && self.k.lock_at(c.lock).owner.load(Ordering::Relaxed) & !HAS_WAITERS == me)
            .filter_map(|c| c.waiters.top_prio())
            .max()
    }
}
