//! The freezer: task-level quiescence for the runtime mode switch
//! (docs/ARCHITECTURE.md, "The runtime switch", level 1).
//!
//! While a freeze is requested, a task that reaches a *safe point* parks
//! there until the thaw. Safe points are where a task holds no switchable
//! lock and is inside no lock operation:
//! - explicit: `try_to_freeze()` at the top of every kernel thread's loop
//!   (like returning to user mode);
//! - implicit: on the way out of `sleep_until` and `WaitQueue::wait_until`
//!   when the task holds no switchable lock (so a task that sleeps lock-free
//!   counts as frozen, and freezes for real if it wakes during the freeze);
//! - a new task, before its entry runs.
//!
//! Tasks marked `nofreeze` (the latency measurement threads, the control
//! thread) never take switchable locks (asserted by `SpinLock`), so they
//! never need to freeze and keep running through a switch.
//!
//! The switch (`crate::switch`) declares the guest quiescent only when every
//! other task is frozen, or asleep with no switchable lock held and no lock
//! waited for: then no task is inside lock code or can enter it before the
//! thaw, and the lock call sites may be rewritten.

use core::sync::atomic::{AtomicBool, Ordering};

use super::scheduler::{WaitQueue, wake_up};
use super::task::{Task, TaskState, current, spawned_slots, task_by_slot};

static FREEZE_REQUESTED: AtomicBool = AtomicBool::new(false);
static THAW: WaitQueue = WaitQueue::new("thaw");

/// Whether a freeze is in progress.
#[inline]
pub fn freezing() -> bool {
    FREEZE_REQUESTED.load(Ordering::Acquire)
}

/// Parks the current task until the thaw if a freeze is requested. Must be
/// called holding no switchable lock (a guest panic otherwise).
pub fn try_to_freeze() {
    if !freezing() {
        return;
    }
    let me = current();
    if me.nofreeze.load(Ordering::Relaxed) || me.is_idle() {
        return;
    }
    let held = me.switch_locks_held.load(Ordering::Relaxed);
    assert!(held == 0, "task '{}' reached a safe point holding {held} switchable lock(s)", me.name());
    me.frozen.store(true, Ordering::Release);
    THAW.wait_until_unfreezable(|| !freezing());
    me.frozen.store(false, Ordering::Release);
}

/// The implicit safe point after a sleep: freeze if nothing is held.
#[inline]
pub fn freeze_if_lock_free() {
    if freezing() && current().switch_locks_held.load(Ordering::Relaxed) == 0 {
        try_to_freeze();
    }
}

/// The wait with the implicit safe point: defined here, above the wait
/// queue (`scheduler.rs`), because the safe point is the freezer's.
impl WaitQueue {
    /// Blocks the current task until `cond()` holds (checked first, then
    /// after every wake-up). `cond` runs in task context, unlocked.
    #[track_caller]
    pub fn wait_until(&self, cond: impl FnMut() -> bool) {
        self.wait_until_unfreezable(cond);
        freeze_if_lock_free();
    }
}

/// Exempts the current task from freezing; it must never take a
/// switchable lock afterwards (`SpinLock` panics if it does).
pub fn exempt_current() {
    current().nofreeze.store(true, Ordering::Relaxed);
}

/// Starts a freeze (the switch thread), and wakes every task that sleeps
/// queued for a switchable lock: one that holds no other backs out of its
/// wait and freezes (the lock code), one that does goes back to sleep.
pub fn request() {
    FREEZE_REQUESTED.store(true, Ordering::Release);
    for slot in 0..spawned_slots() {
        let t = task_by_slot(slot);
        if !t.blocked_on.load(Ordering::Acquire).is_null() {
            wake_up(t);
        }
    }
}

/// Ends the freeze and wakes every frozen task.
pub fn thaw() {
    FREEZE_REQUESTED.store(false, Ordering::Release);
    THAW.wake_all();
}

/// How one task stands with respect to quiescence.
pub enum Standing {
    Frozen,
    AsleepLockFree,
    Exempt,
    /// Still running, runnable, or holding/waiting for a switchable lock.
    Busy,
}

/// Classifies `t` for the quiescence check.
pub fn standing(t: &Task) -> Standing {
    if t.is_idle() || t.nofreeze.load(Ordering::Relaxed) {
        return Standing::Exempt;
    }
    let held = t.switch_locks_held.load(Ordering::Acquire);
    let waiting = !t.blocked_on.load(Ordering::Acquire).is_null() || t.in_lock_slowpath.load(Ordering::Acquire);
    if t.frozen.load(Ordering::Acquire) && held == 0 {
        return Standing::Frozen;
    }
    if t.state() == TaskState::Blocked && !t.on_cpu.load(Ordering::Acquire) && held == 0 && !waiting {
        return Standing::AsleepLockFree;
    }
    Standing::Busy
}

/// Result of a quiescence check.
pub struct Census {
    pub frozen: u32,
    pub asleep: u32,
    /// The first task that is not quiescent, if any.
    pub blocker: Option<&'static Task>,
}

/// Looks at every live spawned task except the caller (the idle tasks
/// are exempt), stopping at the first that is not quiescent: while one is
/// busy the counts are not needed, and a census runs every few hundred µs
/// on CPU 0, where every instruction it saves is time a task there needs
/// to reach its safe point.
pub fn census() -> Census {
    let me = current();
    let mut c = Census { frozen: 0, asleep: 0, blocker: None };
    for slot in 0..spawned_slots() {
        let t = task_by_slot(slot);
        if core::ptr::eq(t, me) || !matches!(t.state(), TaskState::Runnable | TaskState::Blocked) {
            continue;
        }
        match standing(t) {
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
