//! The freezer, as a protocol core: task-level quiescence for the runtime
//! mode switch (docs/ARCHITECTURE.md, "The runtime switch", level 1). The
//! kernel runs it through `sched/freezer.rs`; the model checker (`model/`)
//! runs the same code.
//!
//! While a freeze is requested, a task that reaches a *safe point* parks
//! there until the thaw. Safe points are where a task holds no switchable
//! lock and is inside no lock operation:
//! - explicit: [`try_to_freeze`] at the top of every kernel thread's loop
//!   (like returning to user mode), and in [`lock_loop`] after a lock
//!   implementation backed out of its wait;
//! - implicit: [`freeze_if_lock_free`] on the way out of a sleep when the
//!   task holds no switchable lock (so a task that sleeps lock-free counts
//!   as asleep, and freezes for real if it wakes during the freeze);
//! - a new task, before its entry runs.
//!
//! Exempt tasks (the idle tasks, and those marked `nofreeze`: the latency
//! measurement threads, the control thread) never take switchable locks
//! (asserted by the lock), so they never need to freeze.
//!
//! The switch declares the guest quiescent only when [`census`] finds every
//! other task frozen, or asleep with no switchable lock held and no lock
//! waited for: then no task is inside lock code or can enter it before the
//! thaw, and the lock call sites may be rewritten.

use core::sync::atomic::Ordering;

use super::atomic::Atomic;
use super::rtmutex::BACKED_OUT;

/// A task's scheduling state, as far as the freezer cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Running on its CPU, or in its run queue.
    Runnable,
    /// Waiting for a wake-up; may still be on its CPU.
    Blocked,
    /// Not a live task (free, being set up, dead).
    NotLive,
}

/// What the freezer needs of the kernel: the request flag, the tasks and
/// the fields the protocol reads, and a wait queue for the thaw.
pub trait FreezerKernel {
    type Task: Copy + Eq;
    type Bool: Atomic<bool>;
    type U32: Atomic<u32>;
    type Usize: Atomic<usize>;

    /// The freeze request.
    fn freeze_requested(&self) -> &Self::Bool;
    fn current(&self) -> Self::Task;
    /// Every task that may be live (the caller and exempt tasks included).
    fn tasks(&self) -> impl Iterator<Item = Self::Task> + '_;
    fn state(&self, t: Self::Task) -> TaskState;
    fn task_name(&self, t: Self::Task) -> &str;
    /// Idle, or marked `nofreeze`.
    fn exempt(&self, t: Self::Task) -> bool;
    /// Asleep: Blocked, out of its run queue and not its CPU's current
    /// task, read in one consistent snapshot (the kernel holds the task's
    /// run-queue lock). Such a task runs again only after a wake-up. A
    /// task that marked itself Blocked and was preempted before it called
    /// `schedule` is not asleep: it is still queued, and resumes in the
    /// middle of whatever it was doing.
    fn asleep(&self, t: Self::Task) -> bool;
    /// Parked in the freezer.
    fn frozen(&self, t: Self::Task) -> &Self::Bool;
    /// Switchable locks held.
    fn locks_held(&self, t: Self::Task) -> &Self::U32;
    /// The address of the switchable lock it is queued on, 0 when none.
    fn blocked_on(&self, t: Self::Task) -> &Self::Usize;
    /// Inside a switchable lock's slow path.
    fn in_lock_slowpath(&self, t: Self::Task) -> &Self::Bool;
    /// Blocks the current task until `cond()` holds (the thaw's wait
    /// queue; no safe point on the way out).
    fn wait_for_thaw(&self, cond: impl FnMut() -> bool);
    /// Wakes every task waiting for the thaw.
    fn wake_thawed(&self);
    fn wake_up(&self, t: Self::Task);
    /// A full barrier: the stores before it are visible to every CPU
    /// before the loads after it run (x86: `mfence`).
    fn full_barrier(&self);
    /// Called by a task the thaw released, before it clears its `frozen`
    /// mark (fault injection: `thaw-spin`).
    fn after_thaw(&self) {}
}

/// Whether a freeze is in progress.
#[inline]
pub fn freezing<K: FreezerKernel>(k: &K) -> bool {
    k.freeze_requested().load(Ordering::Acquire)
}

/// Parks the current task until the thaw if a freeze is requested. Must be
/// called holding no switchable lock (a kernel panic otherwise).
pub fn try_to_freeze<K: FreezerKernel>(k: &K) {
    if !freezing(k) {
        return;
    }
    let me = k.current();
    if k.exempt(me) {
        return;
    }
    let held = k.locks_held(me).load(Ordering::Relaxed);
    assert!(held == 0, "task '{}' reached a safe point holding {held} switchable lock(s)", k.task_name(me));
    k.frozen(me).store(true, Ordering::Release);
    k.wait_for_thaw(|| !freezing(k));
    k.after_thaw();
    k.frozen(me).store(false, Ordering::Release);
}

/// The implicit safe point after a sleep: freeze if nothing is held.
#[inline]
pub fn freeze_if_lock_free<K: FreezerKernel>(k: &K) {
    if freezing(k) && k.locks_held(k.current()).load(Ordering::Relaxed) == 0 {
        try_to_freeze(k);
    }
}

/// Takes a switchable lock through its call site: `call` is the patched
/// call of the lock implementation. An implementation that backed out of
/// its wait for a freeze held nothing: freeze here, outside any lock code,
/// then call again through the (possibly re-patched) call site. Returns
/// what the implementation returned (0: uncontended, 1: contended).
#[inline(always)]
pub fn lock_loop<K: FreezerKernel>(k: &K, mut call: impl FnMut() -> u64) -> u64 {
    loop {
        let r = call();
        if r != BACKED_OUT {
            return r;
        }
        try_to_freeze(k);
    }
}

/// Starts a freeze (the switch thread), and wakes every task that sleeps
/// queued for a switchable lock: one that holds no other backs out of its
/// wait and freezes (the lock code), one that does goes back to sleep.
///
/// The request and a waiter going to sleep race like the store-buffering
/// litmus test: here, store the request, then load each task's
/// `blocked_on` (and its state, in `wake_up`); there, store `blocked_on`
/// and the Blocked state, then load the request (`rtmutex::lock_slow`).
/// A full barrier on each side (here [`FreezerKernel::full_barrier`],
/// there the Blocked state's `xchg`) makes at least one side see the
/// other: either the waiter sees the freeze and backs out, or this scan
/// sees the waiter and wakes it.
pub fn request<K: FreezerKernel>(k: &K) {
    k.freeze_requested().store(true, Ordering::Release);
    k.full_barrier();
    for t in k.tasks() {
        if k.blocked_on(t).load(Ordering::Acquire) != 0 {
            k.wake_up(t);
        }
    }
}

/// Ends the freeze and wakes every frozen task.
pub fn thaw<K: FreezerKernel>(k: &K) {
    k.freeze_requested().store(false, Ordering::Release);
    k.wake_thawed();
}

/// How one task stands with respect to quiescence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Standing {
    Frozen,
    AsleepLockFree,
    Exempt,
    /// Still running, runnable, or holding/waiting for a switchable lock.
    Busy,
}

/// Classifies `t` for the quiescence check. A task is quiescent only
/// while it is asleep ([`FreezerKernel::asleep`]), holding no switchable
/// lock and waiting for none: then it runs no lock code until a wake-up,
/// and every wake-up of a task that holds nothing leads through a safe
/// point (the thaw's wait does not return while the freeze lasts; a sleep
/// or a wait queue ends in [`freeze_if_lock_free`]). Frozen is the same
/// with its `frozen` mark (it sleeps in [`try_to_freeze`]). The mark alone
/// proves nothing: a task keeps it for a while after the thaw woke it,
/// runnable, on its way back to the lock call site.
pub fn standing<K: FreezerKernel>(k: &K, t: K::Task) -> Standing {
    if k.exempt(t) {
        return Standing::Exempt;
    }
    if !k.asleep(t) {
        return Standing::Busy;
    }
    let held = k.locks_held(t).load(Ordering::Acquire);
    let waiting = k.blocked_on(t).load(Ordering::Acquire) != 0 || k.in_lock_slowpath(t).load(Ordering::Acquire);
    if held != 0 || waiting {
        return Standing::Busy;
    }
    if k.frozen(t).load(Ordering::Acquire) { Standing::Frozen } else { Standing::AsleepLockFree }
}

/// Result of a quiescence check.
pub struct Census<T> {
    pub frozen: u32,
    pub asleep: u32,
    /// The first task that is not quiescent, if any.
    pub blocker: Option<T>,
}

/// Looks at every live task except the caller, stopping at the first that
/// is not quiescent: while one is busy the counts are not needed, and a
/// census runs every few hundred µs on CPU 0, where every instruction it
/// saves is time a task there needs to reach its safe point.
pub fn census<K: FreezerKernel>(k: &K) -> Census<K::Task> {
    let me = k.current();
    let mut c = Census { frozen: 0, asleep: 0, blocker: None };
    for t in k.tasks() {
        if t == me || k.state(t) == TaskState::NotLive {
            continue;
        }
        match standing(k, t) {
            Standing::Frozen => c.frozen += 1,
            Standing::AsleepLockFree => c.asleep += 1,
            Standing::Exempt => {}
            Standing::Busy => {
                c.blocker = Some(t);
                return c;
            }
        }
    }
    c
}
