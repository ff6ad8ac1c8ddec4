//! The lock word both switchable-lock implementations share, and the
//! bookkeeping they both call: the lowest layer of the switchable class.
//!
//! [`LockCore`] is the layout of every `SpinLock` (`spinlock.rs`), used by
//! mainline (`mainline.rs`), rt (`rt.rs`, which owns the waiter lists this
//! word points to), the lock table (`lock_table.rs`) and read by the VMM
//! (its first two fields are ABI). Its words are the protocol cores'
//! [`LockWord`] (`logic::rtmutex`). A lock is free in both modes exactly
//! when its owner word is 0 and it has no waiter list. This file imports
//! none of those files: they are built on it.

use core::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};

use super::registry;
use crate::logic::rtmutex::LockWord;
use crate::sched;

pub use crate::logic::rtmutex::HAS_WAITERS;

/// The state both implementations share (see the module doc). The VMM
/// reads the two words of every registered lock (`lock_table`): their
/// offsets are ABI (`switcher::abi::lock_word`).
#[repr(C)]
pub struct LockCore {
    /// The owner word (rt: bit 0 set while waiters are queued,
    /// [`HAS_WAITERS`], possibly with no owner) and the rt waiter list.
    pub(super) word: LockWord<AtomicUsize, AtomicU16>,
    /// In the lock table (`lock_table`).
    pub(super) registered: AtomicBool,
    /// For diagnostics (deadlock reports, might_sleep messages).
    pub(super) name: &'static str,
}

impl LockCore {
    pub const fn new(name: &'static str) -> Self {
        Self {
            word: LockWord { owner: AtomicUsize::new(0), waiters: AtomicU16::new(0) },
            registered: AtomicBool::new(false),
            name,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether the lock is free in both modes' terms.
    pub fn is_free(&self) -> bool {
        self.word.is_free()
    }
}

const _: () = {
    assert!(core::mem::offset_of!(LockCore, word) == 0, "a lock's address is its word's");
    assert!(core::mem::offset_of!(LockWord<AtomicUsize, AtomicU16>, owner) as u64 == switcher::abi::lock_word::OWNER);
    assert!(
        core::mem::offset_of!(LockWord<AtomicUsize, AtomicU16>, waiters) as u64 == switcher::abi::lock_word::WAITERS
    );
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

/// A signal is pending for `t` and its lock wait is interruptible (the
/// lock tester's `lockint`: `sched::lock_wait`).
pub(super) fn signalled(t: &sched::Task) -> bool {
    use sched::lock_wait::{INTERRUPTIBLE, SIGNAL};
    t.lock_wait.load(Ordering::Acquire) & (INTERRUPTIBLE | SIGNAL) == INTERRUPTIBLE | SIGNAL
}
