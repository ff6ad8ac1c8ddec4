//! The lock word both switchable-lock implementations share, and the
//! bookkeeping they both call: the lowest layer of the switchable class.
//!
//! [`LockCore`] is the layout of every `SpinLock` (`spinlock.rs`), used by
//! mainline (`mainline.rs`), rt (`rt.rs`, which owns the waiter lists this
//! word points to), the lock table (`lock_table.rs`) and read by the VMM
//! (its first two fields are ABI). A lock is free in both modes exactly
//! when its owner word is 0 and it has no waiter list. This file imports
//! none of those files: they are built on it.

use core::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use super::registry;
use crate::sched;

/// The state both implementations share (see the module doc). The VMM
/// reads the first two fields of every registered lock (`lock_table`):
/// their offsets are ABI (`switcher::abi::lock_word`).
#[repr(C)]
pub struct LockCore {
    /// Owning task's address, 0 when free. rt: bit 0 set while waiters are
    /// queued ([`HAS_WAITERS`]), possibly with no owner.
    pub(super) owner: AtomicUsize,
    /// rt: waiters, highest priority first (protected by the PI lock).
    pub(super) waiters: WaiterList,
    /// In the lock table (`lock_table`).
    pub(super) registered: core::sync::atomic::AtomicBool,
    /// For diagnostics (deadlock reports, might_sleep messages).
    pub(super) name: &'static str,
}

impl LockCore {
    pub const fn new(name: &'static str) -> Self {
        Self {
            owner: AtomicUsize::new(0),
            waiters: WaiterList::new(),
            registered: core::sync::atomic::AtomicBool::new(false),
            name,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the lock is free in both modes' terms.
    pub fn is_free(&self) -> bool {
        self.owner.load(Ordering::Acquire) == 0 && self.waiters.is_empty()
    }
}

/// What a lock implementation returns when it left its wait for a freeze
/// without the lock (the caller freezes and tries again).
pub const BACKED_OUT: u64 = 2;

/// Owner-word flag: waiters are queued; unlock must hand off.
pub const HAS_WAITERS: usize = 1;

/// A lock's handle on a waiter list: 0 = none, else table index + 1.
pub struct WaiterList(pub(super) AtomicU16);

impl WaiterList {
    pub const fn new() -> Self {
        Self(AtomicU16::new(0))
    }

    pub fn is_empty(&self) -> bool {
        self.0.load(Ordering::Acquire) == 0
    }

    pub(super) fn slot(&self) -> Option<usize> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            n => Some(usize::from(n) - 1),
        }
    }
}

const _: () = {
    assert!(core::mem::offset_of!(LockCore, owner) as u64 == switcher::abi::lock_word::OWNER);
    assert!(core::mem::offset_of!(LockCore, waiters) as u64 == switcher::abi::lock_word::WAITERS);
    assert!(HAS_WAITERS as u64 == switcher::abi::lock_word::HAS_WAITERS);
};

/// A task enters a lock's slow path (spinning or queuing for it): the
/// freezer counts it busy, and the VMM refuses to patch while any task is
/// inside one (the registry's count).
pub(super) fn slowpath_enter(me: &sched::Task) {
    me.in_lock_slowpath.store(true, Ordering::Release);
    registry::get().slowpath_entered();
}

/// The task leaves the slow path (with the lock, or to freeze).
pub(super) fn slowpath_exit(me: &sched::Task) {
    registry::get().slowpath_left();
    me.in_lock_slowpath.store(false, Ordering::Release);
}
