//! The kernel's mode as the lock registry page publishes it
//! (`switcher::abi::LockRegistry::mode`, written by `sync::registry` at
//! boot and by the runtime switch): what a lower layer reads where it
//! acts on a dimension that has no call sites, the idle policy
//! (`sched::idle`), without importing `sync/`.

use core::sync::atomic::{AtomicU32, Ordering};

use switcher::abi::{LOCK_REGISTRY_ADDR, LockRegistry};
use switcher::profile::{IdleMode, Profile};

/// The mode word of the registry page.
fn word() -> &'static AtomicU32 {
    let at = LOCK_REGISTRY_ADDR as usize + core::mem::offset_of!(LockRegistry, mode);
    // SAFETY: the registry page is ABI memory, identity-mapped read-write
    // for the whole run (`sync::registry`); its `mode` field is a 4-byte
    // aligned u32 that every writer stores atomically, so an atomic view of
    // it is sound from any CPU.
    unsafe { &*(at as *const AtomicU32) }
}

/// The current mode (`mainline`'s before the registry is published, or
/// for a code no profile has).
pub fn current() -> Profile {
    Profile::from_u32(word().load(Ordering::Relaxed)).unwrap_or(Profile::MAINLINE)
}

/// The current idle policy.
pub fn idle() -> IdleMode {
    current().idle
}
