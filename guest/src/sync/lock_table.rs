//! The table of switchable locks the VMM checks (`switcher::abi::LockTable`
//! at `LOCK_TABLE_ADDR`): every `SpinLock` registers itself there before it
//! is first taken, so that, with every vCPU held, the VMM can read every
//! lock word before it patches instead of trusting counters.
//!
//! Registration appends under a raw lock and never removes: switchable
//! locks are statics (a lock outside the kernel image's data, or on a
//! stack, is refused with a panic, since its address could die, or be
//! reused as other data, while the VMM still reads it).

use core::sync::atomic::Ordering;

use switcher::abi::{ABI_MAGIC, ABI_NAME_LEN, LOCK_TABLE_ADDR, LOCK_TABLE_CAPACITY, LockEntry, LockTable};

use super::lock_core::LockCore;
use crate::sched::raw_lock::RawSpinLock;

/// Serialises appends (the count and the entry written together).
static APPEND: RawSpinLock<()> = RawSpinLock::new("lock_table", ());

unsafe extern "C" {
    static __data_start: u8;
    static __kernel_end: u8;
    /// Every stack lies in `__stacks_start..__stacks_end` (linker script).
    static __stacks_start: u8;
    static __stacks_end: u8;
}

/// Whether a lock at `addr` may register: a static of the kernel image's
/// data, not on a stack.
fn may_register(addr: u64) -> bool {
    let image = (&raw const __data_start) as u64..(&raw const __kernel_end) as u64;
    let stacks = (&raw const __stacks_start) as u64..(&raw const __stacks_end) as u64;
    image.contains(&addr) && !stacks.contains(&addr)
}

fn table() -> *mut LockTable {
    LOCK_TABLE_ADDR as *mut LockTable
}

/// Publishes an empty table (CPU 0 at boot, before any switchable lock is
/// taken).
pub fn init() {
    // SAFETY: the page is ABI memory reserved for the table (identity
    // mapped RW); nothing else writes it; fields written volatile (the VMM
    // reads them), magic last.
    unsafe {
        core::ptr::addr_of_mut!((*table()).count).write_volatile(0);
        core::sync::atomic::fence(Ordering::Release);
        core::ptr::addr_of_mut!((*table()).magic).write_volatile(ABI_MAGIC);
    }
}

/// Adds `lock` to the table if it is not there yet. Panics when the lock
/// is not a static of the kernel image or the table is full.
#[cold]
pub fn register(lock: &LockCore) {
    let addr = lock as *const LockCore as u64;
    assert!(
        may_register(addr),
        "switchable lock '{}' at {addr:#x} is not a static (it is on a stack, or outside the kernel's data): \
         the VMM could not read it safely",
        lock.name()
    );
    let _g = APPEND.lock_irqsave();
    if lock.registered.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: as in `init`; appends are serialised by APPEND.
    unsafe {
        let count = core::ptr::addr_of!((*table()).count).read_volatile() as usize;
        assert!(
            count < LOCK_TABLE_CAPACITY,
            "more than {LOCK_TABLE_CAPACITY} switchable locks: the lock table is full"
        );
        let mut entry = LockEntry { addr, name: [0; ABI_NAME_LEN] };
        let n = lock.name().len().min(ABI_NAME_LEN);
        entry.name[..n].copy_from_slice(&lock.name().as_bytes()[..n]);
        core::ptr::addr_of_mut!((*table()).entries[count]).write_volatile(entry);
        core::sync::atomic::fence(Ordering::Release);
        core::ptr::addr_of_mut!((*table()).count).write_volatile(count as u32 + 1);
    }
    lock.registered.store(true, Ordering::Release);
}
