//! The switchable-lock registry: live counters in the shared page the VMM
//! reads (`switcher::abi::LockRegistry` at `BootInfo::lock_registry_addr`).
//!
//! `held` and `waiters` are what the runtime switch relies on: it patches
//! only when both are zero with every task frozen. Every path that takes or
//! releases a switchable lock, or queues or dequeues a waiter, updates them
//! (atomically, in place), so the VMM can read them at any time; the
//! counters are exact whenever no lock operation is in flight.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use switcher::abi::{ABI_MAGIC, LOCK_REGISTRY_ADDR};
use switcher::profile::Profile;

/// Same layout as `switcher::abi::LockRegistry`, with atomic fields.
#[repr(C)]
pub struct Registry {
    magic: AtomicU64,
    held: AtomicU64,
    waiters: AtomicU64,
    acquisitions: AtomicU64,
    contended: AtomicU64,
    pi_boosts: AtomicU64,
    mode: AtomicU32,
    _reserved: AtomicU32,
    slowpath: AtomicU64,
}

const _: () = assert!(core::mem::size_of::<Registry>() == core::mem::size_of::<switcher::abi::LockRegistry>());

/// The registry page (identity-mapped, read-write, never moved).
pub fn get() -> &'static Registry {
    // SAFETY: LOCK_REGISTRY_ADDR is a page of guest memory reserved by the
    // ABI for this structure, identity-mapped read-write; all fields are
    // atomics, so shared access from every CPU (and reads by the VMM) are
    // sound, and the zeroed page is a valid value.
    unsafe { &*(LOCK_REGISTRY_ADDR as *const Registry) }
}

impl Registry {
    /// Publishes the page (CPU 0 at boot, before any lock is taken).
    pub fn init(&self, mode: Profile) {
        self.held.store(0, Ordering::Relaxed);
        self.waiters.store(0, Ordering::Relaxed);
        self.acquisitions.store(0, Ordering::Relaxed);
        self.contended.store(0, Ordering::Relaxed);
        self.pi_boosts.store(0, Ordering::Relaxed);
        self.slowpath.store(0, Ordering::Relaxed);
        self.mode.store(mode.code(), Ordering::Relaxed);
        self.magic.store(ABI_MAGIC, Ordering::Release);
    }

    #[inline]
    pub fn acquired(&self, contended: bool) {
        self.held.fetch_add(1, Ordering::Relaxed);
        self.acquisitions.fetch_add(1, Ordering::Relaxed);
        if contended {
            self.contended.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[inline]
    pub fn released(&self) {
        self.held.fetch_sub(1, Ordering::Release);
    }

    #[inline]
    pub fn waiter_queued(&self) {
        self.waiters.fetch_add(1, Ordering::Relaxed);
    }

    #[inline]
    pub fn waiter_dequeued(&self) {
        self.waiters.fetch_sub(1, Ordering::Release);
    }

    pub fn slowpath_entered(&self) {
        self.slowpath.fetch_add(1, Ordering::AcqRel);
    }

    pub fn slowpath_left(&self) {
        self.slowpath.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn pi_boosted(&self) {
        self.pi_boosts.fetch_add(1, Ordering::Relaxed);
    }

    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    pub fn waiters(&self) -> u64 {
        self.waiters.load(Ordering::Acquire)
    }

    pub fn mode(&self) -> Profile {
        Profile::from_u32(self.mode.load(Ordering::Relaxed)).unwrap_or(Profile::MAINLINE)
    }

    /// After a runtime switch: the mode the call sites now select.
    pub fn set_mode(&self, mode: Profile) {
        self.mode.store(mode.code(), Ordering::Relaxed);
    }
}
