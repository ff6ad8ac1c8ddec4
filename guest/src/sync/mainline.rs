//! The mainline implementation of the switchable lock: the protocol core
//! `logic::mainline_lock` (preempt-off test-and-test-and-set spin on the
//! owner word, with the freeze back-out; documented there) run on the
//! kernel's preempt count, freezer and tasks, behind the `extern "C"` entry
//! points the patched call sites reach.
//!
//! Reached only through patched call sites (`site.rs`); see `spinlock.rs`
//! for the layout both modes share.

use core::sync::atomic::Ordering;

use super::lock_core::{LockCore, slowpath_enter, slowpath_exit};
use crate::logic::mainline_lock::{self, MainlineKernel};
use crate::sched::{self, TaskRef, freezer};

/// Spins until the lock is taken (`mainline_lock::lock`).
pub extern "C" fn lock(lock: *const LockCore) -> u64 {
    crate::sched::park::point(crate::sched::park::IN_LOCK);
    // SAFETY: call sites pass a pointer to a live LockCore (`spinlock.rs`).
    mainline_lock::lock(&Kernel, unsafe { &(*lock).word.owner })
}

/// Takes the lock only if it is free right now (`mainline_lock::try_lock`).
pub extern "C" fn try_lock(lock: *const LockCore) -> u64 {
    crate::sched::park::point(crate::sched::park::IN_TRY_LOCK);
    // SAFETY: as for `lock`.
    mainline_lock::try_lock(&Kernel, unsafe { &(*lock).word.owner })
}

/// Frees the lock and re-enables preemption (`mainline_lock::unlock`).
pub extern "C" fn unlock(lock: *const LockCore) -> u64 {
    // SAFETY: as for `lock`.
    let r = mainline_lock::unlock(&Kernel, unsafe { &(*lock).word.owner });
    crate::sched::park::point(crate::sched::park::IN_UNLOCK);
    r
}

/// The kernel as the mainline lock core sees it.
struct Kernel;

impl MainlineKernel for Kernel {
    type Task = TaskRef;

    #[inline(always)]
    fn current(&self) -> TaskRef {
        TaskRef(sched::current())
    }

    #[inline(always)]
    fn task_word(&self, t: TaskRef) -> usize {
        core::ptr::from_ref(t.0) as usize
    }

    #[inline(always)]
    fn preempt_disable(&self) {
        sched::preempt_disable();
    }

    #[inline(always)]
    fn preempt_enable(&self) {
        sched::preempt_enable();
    }

    fn freezing(&self) -> bool {
        freezer::freezing()
    }

    fn locks_held(&self, t: TaskRef) -> u32 {
        t.0.switch_locks_held.load(Ordering::Relaxed)
    }

    fn slowpath_enter(&self, t: TaskRef) {
        slowpath_enter(t.0);
    }

    fn slowpath_exit(&self, t: TaskRef) {
        slowpath_exit(t.0);
    }

    fn wait_interrupted(&self, t: TaskRef) -> bool {
        super::lock_core::signalled(t.0)
    }
}
