//! Locks (docs/ARCHITECTURE.md, "The guest kernel model", lock classes):
//! - `raw`: the never-switched raw spinlock of the scheduler and interrupt
//!   paths;
//! - `lock_core`: the lock word both switchable implementations share
//!   (`LockCore`) and their common slow-path bookkeeping;
//! - `spinlock`: the switchable `SpinLock<T>`, reaching its implementation
//!   through patchable call sites (`site`): `mainline` (preempt-disable +
//!   owner-word spin) or `rt` (rtmutex with priority inheritance);
//! - `registry`: the live held/waiter counts the VMM reads;
//! - `lock_table`: every switchable lock's address, for the VMM's check of
//!   the lock words themselves.

pub mod lock_core;
pub mod lock_table;
pub mod mainline;
pub mod raw;
pub mod registry;
pub mod rt;
mod site;
pub mod spinlock;

// The (operation, mode) -> implementation table the VMM patches with:
// `switcher::abi::sites::SwitchImpl` entries {op: u32, mode: u32, target: u64}.
core::arch::global_asm!(
    ".pushsection .switch_impls, \"a\"",
    ".balign 8",
    ".long {lock}, {mainline}", ".quad {ml_lock}",
    ".long {unlock}, {mainline}", ".quad {ml_unlock}",
    ".long {try_lock}, {mainline}", ".quad {ml_try_lock}",
    ".long {lock}, {rt}", ".quad {rt_lock}",
    ".long {unlock}, {rt}", ".quad {rt_unlock}",
    ".long {try_lock}, {rt}", ".quad {rt_try_lock}",
    ".popsection",
    lock = const switcher::abi::sites::LockOp::Lock as u32,
    unlock = const switcher::abi::sites::LockOp::Unlock as u32,
    try_lock = const switcher::abi::sites::LockOp::TryLock as u32,
    mainline = const switcher::abi::LockMode::Mainline as u32,
    rt = const switcher::abi::LockMode::Rt as u32,
    ml_lock = sym mainline::lock,
    ml_unlock = sym mainline::unlock,
    ml_try_lock = sym mainline::try_lock,
    rt_lock = sym rt::lock,
    rt_unlock = sym rt::unlock,
    rt_try_lock = sym rt::try_lock,
);
