//! The mainline implementation of the switchable lock, as a protocol
//! core: `spinlock_t` as in a kernel without PREEMPT_RT. The kernel runs
//! it through `sync/mainline.rs`; the model checker (`model/`) runs the
//! same code.
//!
//! Preemption is disabled from before the spin until after the unlock, so
//! the holder runs to its unlock (interrupts still arrive and are handled,
//! but never schedule another task there).
//!
//! A test-and-test-and-set lock on the owner word (the rtmutex's word, so
//! a free lock is free in both modes), not a ticket lock: a waiter must be
//! able to abandon its wait. When a freeze starts, a waiter that holds no
//! other switchable lock stops spinning, freezes, and tries again after
//! the thaw ([`BACKED_OUT`]), so a switch waits for at most the critical
//! section in progress, not for a queue of them (a ticket, once taken,
//! cannot be given back). The price is fairness: a waiter may be overtaken.

use core::sync::atomic::Ordering;

use super::atomic::Atomic;
pub use super::rtmutex::{BACKED_OUT, INTERRUPTED};

/// What the mainline lock needs of the kernel.
pub trait MainlineKernel {
    type Task: Copy;
    fn current(&self) -> Self::Task;
    /// The task's owner-word value (as for the rt lock).
    fn task_word(&self, t: Self::Task) -> usize;
    fn preempt_disable(&self);
    /// Re-enables preemption (and reschedules if that became due).
    fn preempt_enable(&self);
    /// A freeze is in progress.
    fn freezing(&self) -> bool;
    /// Switchable locks the task holds.
    fn locks_held(&self, t: Self::Task) -> u32;
    /// The task enters / leaves a lock slow path (busy for the freezer).
    fn slowpath_enter(&self, t: Self::Task);
    fn slowpath_exit(&self, t: Self::Task);
    /// A signal reached the task in an interruptible lock (the lock
    /// tester's `lockint`): it stops spinning, without the lock.
    fn wait_interrupted(&self, _t: Self::Task) -> bool {
        false
    }
    /// One iteration of a spin-wait.
    fn relax(&self) {
        core::hint::spin_loop();
    }
}

#[inline(always)]
fn try_take(owner: &impl Atomic<usize>, me: usize) -> bool {
    owner.load(Ordering::Relaxed) == 0 && owner.compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
}

/// Spins until the lock is taken. Returns 0 if it was free, 1 if it had to
/// wait, or [`BACKED_OUT`] (without the lock, preemption enabled again)
/// when a freeze started meanwhile, or [`INTERRUPTED`] (likewise) when a
/// signal ended an interruptible wait.
#[inline]
pub fn lock<K: MainlineKernel>(k: &K, owner: &impl Atomic<usize>) -> u64 {
    let task = k.current();
    let me = k.task_word(task);
    k.preempt_disable();
    if try_take(owner, me) {
        return 0;
    }
    k.slowpath_enter(task);
    while !try_take(owner, me) {
        if k.freezing() && k.locks_held(task) == 0 {
            // Leave the wait for the freeze, and this implementation with
            // it: the caller freezes and calls again through the call site,
            // which may select the other implementation by then.
            k.slowpath_exit(task);
            k.preempt_enable();
            return BACKED_OUT;
        }
        if k.wait_interrupted(task) {
            k.slowpath_exit(task);
            k.preempt_enable();
            return INTERRUPTED;
        }
        k.relax();
    }
    k.slowpath_exit(task);
    1
}

/// Takes the lock only if it is free right now. Returns 1 on success.
#[inline]
pub fn try_lock<K: MainlineKernel>(k: &K, owner: &impl Atomic<usize>) -> u64 {
    k.preempt_disable();
    if try_take(owner, k.task_word(k.current())) {
        return 1;
    }
    k.preempt_enable();
    0
}

/// Frees the lock and re-enables preemption (which may reschedule).
#[inline]
pub fn unlock<K: MainlineKernel>(k: &K, owner: &impl Atomic<usize>) -> u64 {
    owner.store(0, Ordering::Release);
    k.preempt_enable();
    0
}
