//! Mainline implementation of the switchable lock: `spinlock_t` as in a
//! kernel without PREEMPT_RT. Preemption is disabled from before the spin
//! until after the unlock, so the holder runs to its unlock (interrupts
//! still arrive and are handled, but never schedule another task here).
//! Fair: a ticket lock, served in arrival order.
//!
//! Reached only through patched call sites (`site.rs`); see `spinlock.rs`
//! for the layout both modes share.

use core::sync::atomic::Ordering;

use super::spinlock::LockCore;
use crate::sched;

/// Takes a ticket and spins until it is served. Returns 1 if it had to wait.
pub extern "C" fn lock(lock: *const LockCore) -> u64 {
    // SAFETY: call sites pass a pointer to a live LockCore (`spinlock.rs`).
    let lock = unsafe { &*lock };
    sched::preempt_disable();
    let ticket = lock.next.fetch_add(1, Ordering::Relaxed);
    let mut contended = 0;
    while lock.serving.load(Ordering::Acquire) != ticket {
        contended = 1;
        core::hint::spin_loop();
    }
    lock.owner.store(sched::current() as *const _ as usize, Ordering::Relaxed);
    contended
}

/// Takes the lock only if nobody holds or waits for it. Returns 1 on success.
pub extern "C" fn try_lock(lock: *const LockCore) -> u64 {
    // SAFETY: as for `lock`.
    let lock = unsafe { &*lock };
    sched::preempt_disable();
    let serving = lock.serving.load(Ordering::Acquire);
    if lock.next.compare_exchange(serving, serving.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed).is_ok() {
        lock.owner.store(sched::current() as *const _ as usize, Ordering::Relaxed);
        return 1;
    }
    sched::preempt_enable();
    0
}

/// Serves the next ticket and re-enables preemption (which may reschedule).
pub extern "C" fn unlock(lock: *const LockCore) -> u64 {
    // SAFETY: as for `lock`.
    let lock = unsafe { &*lock };
    lock.owner.store(0, Ordering::Relaxed);
    lock.serving.fetch_add(1, Ordering::Release);
    sched::preempt_enable();
    0
}
