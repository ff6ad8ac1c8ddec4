//! Host-testable logic of the guest kernel: pure data structures and
//! algorithms, and the *protocol cores* of the switchable locks and the
//! freezer, which are generic over the atomics and scheduler hooks they
//! use.
//!
//! Every file here is compiled twice: into the guest kernel
//! (`guest/src/main.rs`: `mod logic;`), which runs the cores on its own
//! atomics and scheduler, and into the host crate `model/` (through
//! `#[path]`), where the unit tests run under a plain `cargo test` and the
//! model checker runs the same cores under every schedule of a few tasks
//! (its atomics are points where another task may run). So the files
//! follow three rules:
//!
//! - `core` only (no `std`, no `alloc`): fixed-capacity structures;
//! - no `crate::` paths: only `super::` between these files, and `core`;
//!   what a core needs of the kernel is a trait it declares, which the
//!   kernel (`sync/`, `sched/`) and the model implement;
//! - no `unsafe`.
//!
//! Modules:
//! - [`prio_list`]: fixed-capacity priority-ordered list of ids, FIFO among
//!   equal priorities, O(1) top/insert/remove/requeue (rtmutex waiter lists,
//!   a task's set of top waiters of the locks it holds, run queues);
//! - [`pi`]: priority-inheritance bookkeeping: effective priorities, the PI
//!   chain walk with a bounded depth and deadlock detection, deboosting;
//! - [`atomic`]: the atomic operations the cores use, as traits;
//! - [`rtmutex`]: the rt lock (wake and take, steal, PI, freeze back-out);
//! - [`mainline_lock`]: the mainline lock (preempt-off spin, freeze
//!   back-out);
//! - [`clockevent`]: when to write a CPU's one-shot timer (arm only for
//!   an earlier deadline, re-arm after the task a timer woke, stale
//!   interrupts, the idle loop serving its own deadline);
//! - [`freezer`]: freeze request, safe points, census and thaw;
//! - [`idle`]: the idle policies, the haltpoll governor (poll window,
//!   timer advance) and the polling flag that spares a polling CPU the
//!   reschedule IPI;
//! - [`softmask`]: the soft interrupt mask's replay and its EOI
//!   accounting.

pub mod atomic;
pub mod clockevent;
pub mod freezer;
pub mod idle;
pub mod mainline_lock;
pub mod pi;
pub mod prio_list;
pub mod rtmutex;
pub mod softmask;

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
