//! `RawSpinLock<T>`: the lock class that always spins, never switched and
//! never patched (PREEMPT_RT's `raw_spinlock_t`). The scheduler, timers,
//! run queues and wait queues use it.
//!
//! A fair ticket lock: `next` hands out tickets (`lock xadd`), `owner` is
//! the ticket being served; only the holder advances `owner`.
//!
//! Invariants:
//! - Held with preemption disabled: [`RawSpinLock::lock`] raises this CPU's
//!   preempt count before spinning, the guard lowers it after releasing
//!   (and then reschedules if that became due and IRQs are on).
//! - Data also touched from hard-IRQ context (run queues, wait queues)
//!   must be locked with [`RawSpinLock::lock_irqsave`], or an interrupt on
//!   the holder's CPU spins on the lock forever.
//! - This CPU's count of raw locks held and the name of the last one taken
//!   are kept in the per-CPU data, for `sched::might_sleep`.
//! - Never sleep while holding one (asserted by `might_sleep`).
//!
//! Fast path (uncontended lock + unlock): about 12 + 8 instructions.

use crate::arch::{cpu, percpu};
use crate::sched;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU16, Ordering};

/// A ticket spinlock with a name (reported by `might_sleep`).
pub struct RawSpinLock<T> {
    next: AtomicU16,
    owner: AtomicU16,
    name: &'static str,
    data: UnsafeCell<T>,
}

// SAFETY: the lock serializes every access to `data` (the guards are the
// only way in), so sharing it across CPUs is sound when `T` may move
// between them.
unsafe impl<T: Send> Sync for RawSpinLock<T> {}
// SAFETY: as above; owning the lock owns the `T`.
unsafe impl<T: Send> Send for RawSpinLock<T> {}

impl<T> RawSpinLock<T> {
    pub const fn new(name: &'static str, data: T) -> Self {
        Self { next: AtomicU16::new(0), owner: AtomicU16::new(0), name, data: UnsafeCell::new(data) }
    }

    /// The name given to [`RawSpinLock::new`].
    #[allow(dead_code)] // API (diagnostics).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether some CPU holds the lock (a snapshot, for assertions).
    #[allow(dead_code)] // API (assertions).
    pub fn is_locked(&self) -> bool {
        self.next.load(Ordering::Relaxed) != self.owner.load(Ordering::Relaxed)
    }

    /// Disables preemption and takes the lock.
    #[inline]
    pub fn lock(&self) -> RawSpinGuard<'_, T> {
        sched::preempt_disable();
        self.acquire();
        RawSpinGuard { lock: self }
    }

    /// Disables interrupts (saving their state) and preemption, and takes
    /// the lock: for data that hard-IRQ handlers touch too.
    #[inline]
    pub fn lock_irqsave(&self) -> RawSpinIrqGuard<'_, T> {
        let irqs_were_on = cpu::save_and_disable_interrupts();
        sched::preempt_disable();
        self.acquire();
        RawSpinIrqGuard { lock: self, irqs_were_on }
    }

    #[inline]
    fn acquire(&self) {
        let ticket = self.next.fetch_add(1, Ordering::Acquire);
        while self.owner.load(Ordering::Acquire) != ticket {
            core::hint::spin_loop();
        }
        percpu::raw_locks_inc();
        let name = self.name;
        let packed = ((name.as_ptr() as u64) << 32) | (name.len() as u64 & 0xffff_ffff);
        percpu::this().last_raw_lock.store(packed, Ordering::Relaxed);
    }

    #[inline]
    fn release(&self) {
        percpu::raw_locks_dec();
        // Only the holder writes `owner`: a plain increment suffices.
        let owner = self.owner.load(Ordering::Relaxed);
        self.owner.store(owner.wrapping_add(1), Ordering::Release);
    }
}

/// The name of the raw lock this CPU took last, if any.
pub fn last_taken_name() -> Option<&'static str> {
    let packed = percpu::this().last_raw_lock.load(Ordering::Relaxed);
    if packed == 0 {
        return None;
    }
    let (addr, len) = ((packed >> 32) as usize, (packed & 0xffff_ffff) as usize);
    // SAFETY: the word is written in one store from a `&'static str` whose
    // address fits 32 bits (the kernel lives below 4 GiB), so it names a
    // whole static string.
    let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, len) };
    core::str::from_utf8(bytes).ok()
}

/// Guard of [`RawSpinLock::lock`]: releases, then re-enables preemption.
#[must_use = "the lock is released when the guard is dropped"]
pub struct RawSpinGuard<'a, T> {
    lock: &'a RawSpinLock<T>,
}

impl<T> Deref for RawSpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock: no other reference exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for RawSpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, and `&mut self` makes this
        // reference unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for RawSpinGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.release();
        sched::preempt_enable();
    }
}

/// Guard of [`RawSpinLock::lock_irqsave`]: releases, restores the saved
/// interrupt state, then re-enables preemption (as
/// `raw_spin_unlock_irqrestore`).
#[must_use = "the lock is released when the guard is dropped"]
pub struct RawSpinIrqGuard<'a, T> {
    lock: &'a RawSpinLock<T>,
    irqs_were_on: bool,
}

impl<T> RawSpinIrqGuard<'_, T> {
    /// Whether interrupts were enabled when the lock was taken.
    pub fn irqs_were_on(&self) -> bool {
        self.irqs_were_on
    }
}

impl<T> Deref for RawSpinIrqGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock: no other reference exists.
        unsafe { &*self.lock.data.get() }
    }
}

impl<T> DerefMut for RawSpinIrqGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, and `&mut self` makes this
        // reference unique.
        unsafe { &mut *self.lock.data.get() }
    }
}

impl<T> Drop for RawSpinIrqGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.release();
        cpu::restore_interrupts(self.irqs_were_on);
        sched::preempt_enable();
    }
}
