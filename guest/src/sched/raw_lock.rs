//! `RawSpinLock<T>`: the lock class that always spins, never switched and
//! never patched (PREEMPT_RT's `raw_spinlock_t`). The scheduler, timers,
//! run queues and wait queues use it.
//!
//! A test-and-test-and-set lock whose waiters hold nothing while they
//! wait: a waiter spins on a plain load with preemption and interrupts as
//! its caller had them, and only to try the lock (one `xchg`) does it
//! disable preemption (and mask interrupts, for `lock_irqsave`). So a
//! timer interrupt or a higher-priority task still reaches a CPU whose task
//! waits for a raw lock whose holder's vCPU the host has descheduled
//! (lock-holder preemption, the reason paravirtual spinlocks exist),
//! instead of waiting out the host's time slice behind it. A ticket lock
//! could not allow that (a waiter keeps its place in the queue, and an
//! interrupt handler on its CPU taking the same lock would wait behind it
//! forever). The price is fairness: a waiter may be overtaken.
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
//! Callers already in a preempt-disabled or masked context (a raw lock
//! nested in another) keep that context while they wait: only what the
//! acquisition itself adds is given back during the wait.

use crate::arch::{cpu, percpu};
use crate::sched;
use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicBool, Ordering};

/// A spinlock with a name (reported by `might_sleep`).
pub struct RawSpinLock<T> {
    locked: AtomicBool,
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
        Self { locked: AtomicBool::new(false), name, data: UnsafeCell::new(data) }
    }

    /// Disables preemption and takes the lock.
    #[inline]
    pub fn lock(&self) -> RawSpinGuard<'_, T> {
        loop {
            sched::preempt_disable();
            if self.try_acquire() {
                break;
            }
            sched::preempt_enable();
            self.wait_until_free();
        }
        self.note_acquired();
        RawSpinGuard { lock: self }
    }

    /// Masks interrupts (saving their state), disables preemption, and
    /// takes the lock: for data that hard-IRQ handlers touch too.
    #[inline]
    pub fn lock_irqsave(&self) -> RawSpinIrqGuard<'_, T> {
        let irqs_were_on = loop {
            let irqs_were_on = cpu::save_and_disable_interrupts();
            sched::preempt_disable();
            if self.try_acquire() {
                break irqs_were_on;
            }
            cpu::restore_interrupts(irqs_were_on);
            sched::preempt_enable();
            self.wait_until_free();
        };
        self.note_acquired();
        RawSpinIrqGuard { lock: self, irqs_were_on }
    }

    #[inline(always)]
    fn try_acquire(&self) -> bool {
        !self.locked.swap(true, Ordering::Acquire)
    }

    #[cold]
    fn wait_until_free(&self) {
        while self.locked.load(Ordering::Relaxed) {
            core::hint::spin_loop();
        }
    }

    #[inline(always)]
    fn note_acquired(&self) {
        percpu::raw_locks_inc();
        let name = self.name;
        let packed = ((name.as_ptr() as u64) << 32) | (name.len() as u64 & 0xffff_ffff);
        percpu::this().last_raw_lock.store(packed, Ordering::Relaxed);
    }

    #[inline]
    fn release(&self) {
        percpu::raw_locks_dec();
        self.locked.store(false, Ordering::Release);
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
