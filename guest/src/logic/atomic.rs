//! The atomic operations the protocol cores use, as traits, so that the
//! same core runs on `core`'s atomics in the kernel and on the model
//! checker's controlled atomics on the host (`model/`), where every access
//! is a point at which another thread may run.
//!
//! The methods mirror `core::sync::atomic` exactly (same names, same
//! orderings), so a core reads like ordinary atomic code.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Load, store, swap and compare-exchange of a `T`.
pub trait Atomic<T: Copy> {
    fn load(&self, order: Ordering) -> T;
    fn store(&self, value: T, order: Ordering);
    fn swap(&self, value: T, order: Ordering) -> T;
    fn compare_exchange(&self, current: T, new: T, success: Ordering, failure: Ordering) -> Result<T, T>;
}

/// The integer read-modify-writes.
pub trait AtomicInt<T: Copy>: Atomic<T> {
    fn fetch_add(&self, value: T, order: Ordering) -> T;
    fn fetch_sub(&self, value: T, order: Ordering) -> T;
    fn fetch_or(&self, value: T, order: Ordering) -> T;
    fn fetch_and(&self, value: T, order: Ordering) -> T;
}

macro_rules! atomic_impl {
    ($atomic:ty, $t:ty) => {
        impl Atomic<$t> for $atomic {
            #[inline(always)]
            fn load(&self, order: Ordering) -> $t {
                <$atomic>::load(self, order)
            }
            #[inline(always)]
            fn store(&self, value: $t, order: Ordering) {
                <$atomic>::store(self, value, order)
            }
            #[inline(always)]
            fn swap(&self, value: $t, order: Ordering) -> $t {
                <$atomic>::swap(self, value, order)
            }
            #[inline(always)]
            fn compare_exchange(&self, current: $t, new: $t, success: Ordering, failure: Ordering) -> Result<$t, $t> {
                <$atomic>::compare_exchange(self, current, new, success, failure)
            }
        }
    };
}

macro_rules! atomic_int_impl {
    ($atomic:ty, $t:ty) => {
        atomic_impl!($atomic, $t);
        impl AtomicInt<$t> for $atomic {
            #[inline(always)]
            fn fetch_add(&self, value: $t, order: Ordering) -> $t {
                <$atomic>::fetch_add(self, value, order)
            }
            #[inline(always)]
            fn fetch_sub(&self, value: $t, order: Ordering) -> $t {
                <$atomic>::fetch_sub(self, value, order)
            }
            #[inline(always)]
            fn fetch_or(&self, value: $t, order: Ordering) -> $t {
                <$atomic>::fetch_or(self, value, order)
            }
            #[inline(always)]
            fn fetch_and(&self, value: $t, order: Ordering) -> $t {
                <$atomic>::fetch_and(self, value, order)
            }
        }
    };
}

atomic_impl!(AtomicBool, bool);
atomic_int_impl!(AtomicU8, u8);
atomic_int_impl!(AtomicU16, u16);
atomic_int_impl!(AtomicU32, u32);
atomic_int_impl!(AtomicU64, u64);
atomic_int_impl!(AtomicUsize, usize);
