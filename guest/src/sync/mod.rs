//! Locks (docs/ARCHITECTURE.md, "The guest kernel model", lock classes).
//! The never-switched raw spinlock of the scheduler and interrupt paths is
//! the scheduler's own (`sched::raw_lock`), a layer below; here:
//! - `lock_core`: the lock word both switchable implementations share
//!   (`LockCore`) and their common slow-path bookkeeping;
//! - `spinlock`: the switchable `SpinLock<T>`, reaching its implementation
//!   through patchable call sites (`hv::site`): `mainline` (preempt-disable +
//!   owner-word spin) or `rt` (rtmutex with priority inheritance);
//! - `registry`: the live held/waiter counts the VMM reads;
//! - `lock_table`: every switchable lock's address, for the VMM's check of
//!   the lock words themselves.

pub mod lock_core;
pub mod lock_table;
pub mod mainline;
pub mod registry;
pub mod rt;
pub mod spinlock;

use switcher::abi::LockMode;
use switcher::abi::sites::SiteOp;

// The (operation, lock mode) -> implementation table the VMM patches with.
crate::hv::site::switch_impls!(
    (SiteOp::Lock, LockMode::Mainline, mainline::lock),
    (SiteOp::Unlock, LockMode::Mainline, mainline::unlock),
    (SiteOp::TryLock, LockMode::Mainline, mainline::try_lock),
    (SiteOp::Lock, LockMode::Rt, rt::lock),
    (SiteOp::Unlock, LockMode::Rt, rt::unlock),
    (SiteOp::TryLock, LockMode::Rt, rt::try_lock),
);
