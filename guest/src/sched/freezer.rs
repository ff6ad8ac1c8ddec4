//! The freezer: task-level quiescence for the runtime mode switch. The
//! protocol is the core `logic::freezer` (safe points, request, census,
//! thaw; documented there), run here on the kernel's tasks, its freeze
//! flag and the thaw's wait queue ([`Kernel`]).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use super::scheduler::{WaitQueue, is_asleep, wake_up};
use super::task::{TaskRef, TaskState, current, spawned_slots, task_by_slot};
use crate::logic::freezer::{self, FreezerKernel};

static FREEZE_REQUESTED: AtomicBool = AtomicBool::new(false);
/// Fault injection `thaw-spin=US` (0: off).
static THAW_SPIN_US: AtomicU32 = AtomicU32::new(0);

/// Sets the `thaw-spin` fault injection (`faults`).
pub fn set_thaw_spin_us(us: u32) {
    THAW_SPIN_US.store(us, Ordering::Relaxed);
}
static THAW: WaitQueue = WaitQueue::new("thaw");

/// Whether a freeze is in progress.
#[inline]
pub fn freezing() -> bool {
    freezer::freezing(&Kernel)
}

/// Parks the current task until the thaw if a freeze is requested. Must be
/// called holding no switchable lock (a guest panic otherwise).
pub fn try_to_freeze() {
    freezer::try_to_freeze(&Kernel);
}

/// The implicit safe point after a sleep: freeze if nothing is held.
#[inline]
pub fn freeze_if_lock_free() {
    freezer::freeze_if_lock_free(&Kernel);
}

/// Takes a switchable lock through its call site (`freezer::lock_loop`):
/// `call` is the patched call; the result is the implementation's.
#[inline(always)]
pub fn lock_loop(call: impl FnMut() -> u64) -> u64 {
    freezer::lock_loop(&Kernel, call)
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

/// Starts a freeze (`freezer::request`).
pub fn request() {
    freezer::request(&Kernel);
}

/// Ends the freeze and wakes every frozen task.
pub fn thaw() {
    freezer::thaw(&Kernel);
}

/// Looks at every live spawned task except the caller
/// (`freezer::census`).
pub fn census() -> freezer::Census<TaskRef> {
    freezer::census(&Kernel)
}

/// The kernel as the freezer core sees it.
struct Kernel;

impl FreezerKernel for Kernel {
    type Task = TaskRef;
    type Bool = AtomicBool;
    type U32 = AtomicU32;
    type Usize = AtomicUsize;

    #[inline(always)]
    fn freeze_requested(&self) -> &AtomicBool {
        &FREEZE_REQUESTED
    }

    fn current(&self) -> TaskRef {
        TaskRef(current())
    }

    fn tasks(&self) -> impl Iterator<Item = TaskRef> + '_ {
        (0..spawned_slots()).map(|slot| TaskRef(task_by_slot(slot)))
    }

    fn state(&self, t: TaskRef) -> freezer::TaskState {
        match t.0.state() {
            TaskState::Runnable => freezer::TaskState::Runnable,
            TaskState::Blocked => freezer::TaskState::Blocked,
            TaskState::Free | TaskState::Claimed | TaskState::Dead => freezer::TaskState::NotLive,
        }
    }

    fn task_name(&self, t: TaskRef) -> &str {
        t.0.name()
    }

    fn exempt(&self, t: TaskRef) -> bool {
        t.0.is_idle() || t.0.nofreeze.load(Ordering::Relaxed)
    }

    fn asleep(&self, t: TaskRef) -> bool {
        is_asleep(t.0)
    }

    fn frozen(&self, t: TaskRef) -> &AtomicBool {
        &t.0.frozen
    }

    fn locks_held(&self, t: TaskRef) -> &AtomicU32 {
        &t.0.switch_locks_held
    }

    fn blocked_on(&self, t: TaskRef) -> &AtomicUsize {
        &t.0.blocked_on
    }

    fn in_lock_slowpath(&self, t: TaskRef) -> &AtomicBool {
        &t.0.in_lock_slowpath
    }

    fn wait_for_thaw(&self, cond: impl FnMut() -> bool) {
        THAW.wait_until_unfreezable(cond);
    }

    fn wake_thawed(&self) {
        THAW.wake_all();
    }

    fn wake_up(&self, t: TaskRef) {
        wake_up(t.0);
    }

    fn full_barrier(&self) {
        core::sync::atomic::fence(Ordering::SeqCst);
    }

    fn after_thaw(&self) {
        let us = THAW_SPIN_US.load(Ordering::Relaxed);
        if us != 0 {
            let end = super::now_tsc() + super::us_to_tsc(u64::from(us));
            while super::now_tsc() < end {
                core::hint::spin_loop();
            }
        }
    }
}
