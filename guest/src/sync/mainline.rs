//! Mainline implementation of the switchable lock: `spinlock_t` as in a
//! kernel without PREEMPT_RT. Preemption is disabled from before the spin
//! until after the unlock, so the holder runs to its unlock (interrupts
//! still arrive and are handled, but never schedule another task here).
//!
//! A test-and-test-and-set lock on the owner word (the rtmutex's word, so
//! a free lock is free in both modes), not a ticket lock: a waiter must be
//! able to abandon its wait. When a freeze starts, a waiter that holds no
//! other switchable lock stops spinning, freezes, and tries again after
//! the thaw, so a switch waits for at most the critical section in
//! progress, not for a queue of them (a ticket, once taken, cannot be given
//! back). The price is fairness: a waiter may be overtaken.
//!
//! Reached only through patched call sites (`site.rs`); see `spinlock.rs`
//! for the layout both modes share.

use core::sync::atomic::Ordering;

use super::lock_core::{BACKED_OUT, LockCore, slowpath_enter, slowpath_exit};
use crate::sched::{self, freezer};

#[inline(always)]
fn try_take(lock: &LockCore, me: usize) -> bool {
    lock.owner.load(Ordering::Relaxed) == 0
        && lock.owner.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
}

/// Spins until the lock is taken. Returns 1 if it had to wait, or
/// `BACKED_OUT` (without the lock) when a freeze started meanwhile.
pub extern "C" fn lock(lock: *const LockCore) -> u64 {
    // SAFETY: call sites pass a pointer to a live LockCore (`spinlock.rs`).
    let lock = unsafe { &*lock };
    let task = sched::current();
    let me = task as *const _ as usize;
    sched::preempt_disable();
    if try_take(lock, me) {
        return 0;
    }
    slowpath_enter(task);
    while !try_take(lock, me) {
        if freezer::freezing() && task.switch_locks_held.load(Ordering::Relaxed) == 0 {
            // Leave the wait for the freeze, and this implementation with
            // it: the caller freezes and calls again through the call site,
            // which may select the other implementation by then.
            slowpath_exit(task);
            sched::preempt_enable();
            return BACKED_OUT;
        }
        core::hint::spin_loop();
    }
    slowpath_exit(task);
    1
}

/// Takes the lock only if it is free right now. Returns 1 on success.
pub extern "C" fn try_lock(lock: *const LockCore) -> u64 {
    // SAFETY: as for `lock`.
    let lock = unsafe { &*lock };
    sched::preempt_disable();
    if try_take(lock, sched::current() as *const _ as usize) {
        return 1;
    }
    sched::preempt_enable();
    0
}

/// Frees the lock and re-enables preemption (which may reschedule).
pub extern "C" fn unlock(lock: *const LockCore) -> u64 {
    // SAFETY: as for `lock`.
    let lock = unsafe { &*lock };
    lock.owner.store(0, Ordering::Release);
    sched::preempt_enable();
    0
}
