//! Pure, host-testable logic of the guest kernel: data structures and
//! algorithms with no hardware, no globals and no allocation.
//!
//! Every file here is compiled twice: into the guest kernel
//! (`guest/src/main.rs`: `mod logic;`) and into the host test crate
//! (`tests/src/guest_logic.rs`, through `#[path]`), where its unit tests run
//! under a plain `cargo test`. So the files follow three rules:
//!
//! - `core` only (no `std`, no `alloc`): fixed-capacity structures;
//! - no `crate::` paths: only `super::` between these files, and `core`;
//! - no `unsafe`.
//!
//! Modules:
//! - [`prio_list`]: fixed-capacity priority-ordered list of ids, FIFO among
//!   equal priorities, O(1) top/insert/remove/requeue (rtmutex waiter lists,
//!   a task's set of top waiters of the locks it holds, run queues);
//! - [`pi`]: priority-inheritance bookkeeping: effective priorities, the PI
//!   chain walk with a bounded depth and deadlock detection, deboosting, and
//!   a reference [`pi::Model`] that drives them.

pub mod pi;
pub mod prio_list;

/// A tiny xorshift64 PRNG for the property-style host tests (no crates).
#[cfg(test)]
mod test_rng {
    pub struct XorShift(pub u64);

    impl XorShift {
        pub fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }
}
