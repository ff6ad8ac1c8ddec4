//! `SpinLock<T>`: the switchable lock class.
//!
//! Which implementation runs is decided by the bytes at each call site
//! (`crate::hv::site`), not by a flag: mainline (`mainline.rs`:
//! preempt-disable + spin on the owner word) or rt (`rt.rs`: rtmutex with
//! priority inheritance). Both share one layout, [`LockCore`], and agree on what a
//! *free* lock is:
//!
//! ```text
//!   owner == 0 && no waiter list
//! ```
//!
//! A lock is free in one mode exactly when it is free in the other, which is
//! what makes a switch with every lock free safe.
//!
//! Common bookkeeping lives here, around the patched calls: the per-task
//! count of held switchable locks (an underflow is a guest panic naming the
//! task), the shared registry (held count, tasks inside a lock slow path),
//! the lock table the VMM checks lock words against, and the rule that
//! hard-IRQ code never takes a switchable lock (a guest panic).

use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::Ordering;

use switcher::abi::sites::SiteOp;

pub use super::lock_core::LockCore;
use super::{mainline, registry};
use crate::hv::site::{switch_call, switch_call0};
use crate::logic::rtmutex::{DEADLOCK, INTERRUPTED};
use crate::sched;

/// A switchable lock protecting a `T`.
pub struct SpinLock<T> {
    core: LockCore,
    data: UnsafeCell<T>,
}

// SAFETY: the lock serialises all access to `data` (in either mode), so
// sharing the lock between CPUs is sound when `T` can be sent between them.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the `T`.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub const fn new(name: &'static str, data: T) -> Self {
        Self { core: LockCore::new(name), data: UnsafeCell::new(data) }
    }

    pub fn core(&self) -> &LockCore {
        &self.core
    }

    /// Takes the lock. Inlined so that every caller has its own patch site.
    #[inline(always)]
    pub fn lock(&self) -> SpinLockGuard<'_, T> {
        assert_not_irq(&self.core);
        // A preemption point before a lock that may block (`voluntary`).
        switch_call0!(SiteOp::MightResched, crate::sched::preempt_sites::resched);
        let contended =
            sched::freezer::lock_loop(|| switch_call!(SiteOp::Lock, mainline::lock, &self.core as *const LockCore));
        acquired(contended != 0);
        SpinLockGuard { lock: self, _not_send: PhantomData }
    }

    /// Takes the lock if it is free right now.
    #[inline(always)]
    pub fn try_lock(&self) -> Option<SpinLockGuard<'_, T>> {
        assert_not_irq(&self.core);
        let ok = switch_call!(SiteOp::TryLock, mainline::try_lock, &self.core as *const LockCore);
        if ok == 0 {
            return None;
        }
        acquired(false);
        Some(SpinLockGuard { lock: self, _not_send: PhantomData })
    }
}

/// A counter behind a switchable lock.
impl SpinLock<u64> {
    /// Adds 1 to the counter if the lock is free right now; whether it
    /// was. Not inlined: one `try_lock` call site (and one `unlock`) for
    /// all its callers (the ring-3 selftest's lock loop, the
    /// `park-in-try-lock` fault), so a caller adds no site.
    #[inline(never)]
    pub fn try_increment(&self) -> bool {
        match self.try_lock() {
            Some(mut g) => {
                *g += 1;
                true
            }
            None => false,
        }
    }
}

/// Why [`SpinLock::lock_held`] came back without the lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockFailure {
    /// A signal ended the wait (`sched::lock_wait::INTERRUPTIBLE`).
    Interrupted,
    /// Blocking would have closed a cycle (`sched::lock_wait::DETECT_DEADLOCK`; rt only).
    Deadlock,
}

/// The lock tester's locks: data-less, held across its commands, so
/// without a guard.
impl SpinLock<()> {
    /// Takes the lock through the same patched call sites as
    /// [`SpinLock::lock`]; the current task's `lock_wait` flags decide
    /// whether a signal ends the wait and whether a deadlock is returned
    /// rather than a panic. Held until [`SpinLock::unlock_held`].
    #[inline(always)]
    pub fn lock_held(&self) -> Result<(), LockFailure> {
        assert_not_irq(&self.core);
        switch_call0!(SiteOp::MightResched, crate::sched::preempt_sites::resched);
        let r = sched::freezer::lock_loop(|| switch_call!(SiteOp::Lock, mainline::lock, &self.core as *const LockCore));
        match r {
            INTERRUPTED => Err(LockFailure::Interrupted),
            DEADLOCK => Err(LockFailure::Deadlock),
            contended => {
                acquired(contended != 0);
                Ok(())
            }
        }
    }

    /// Releases a lock taken with [`SpinLock::lock_held`]. Panics, naming
    /// the lock and the task, when the current task does not own it.
    #[inline(always)]
    pub fn unlock_held(&self) {
        let me = sched::current();
        let owner = self.core.word.owner.load(Ordering::Relaxed) & !super::lock_core::HAS_WAITERS;
        if owner != core::ptr::from_ref(me) as usize {
            panic!("task '{}' unlocks switchable lock '{}', which it does not own", me.name(), self.core.name);
        }
        released();
        switch_call!(SiteOp::Unlock, mainline::unlock, &self.core as *const LockCore);
    }
}

/// Holding a `SpinLock`: access to the data until dropped.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct SpinLockGuard<'a, T> {
    lock: &'a SpinLock<T>,
    /// A guard is released by the task that took it.
    _not_send: PhantomData<*const ()>,
}

impl<T> Drop for SpinLockGuard<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        released();
        switch_call!(SiteOp::Unlock, mainline::unlock, &self.lock.core as *const LockCore);
    }
}

impl<T> Deref for SpinLockGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves the lock is held: no other access exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for SpinLockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as for `deref`, and the guard is borrowed mutably.
        unsafe { &mut *self.lock.data.get() }
    }
}

#[inline(always)]
fn assert_not_irq(core: &LockCore) {
    if !core.registered.load(Ordering::Relaxed) {
        super::lock_table::register(core);
    }
    if sched::in_irq() {
        panic!("switchable lock '{}' taken in hard-IRQ context", core.name);
    }
    let me = sched::current();
    if me.nofreeze.load(Ordering::Relaxed) {
        panic!(
            "switchable lock '{}' taken by task '{}', which is exempt from the freezer (nofreeze)",
            core.name,
            me.name()
        );
    }
}

#[inline]
fn acquired(contended: bool) {
    sched::current().switch_locks_held.fetch_add(1, Ordering::Relaxed);
    registry::get().acquired(contended);
}

#[inline]
fn released() {
    registry::get().released();
    let me = sched::current();
    if me.switch_locks_held.fetch_sub(1, Ordering::Relaxed) == 0 {
        panic!("task '{}' released a switchable lock it does not hold (held count below zero)", me.name());
    }
}
