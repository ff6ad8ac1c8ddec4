//! A fault-injection park point inside switchable implementations (the
//! guest arguments `park-in-lock`, `park-in-unlock`, `park-in-try-lock`,
//! `park-in-preempt` and `park-in-irq`, armed by `diag::faults`): both
//! lock implementations' `lock` and `try_lock`, the voluntary preemption
//! point's implementation and both interrupt dispatch implementations
//! (`hard`, `threaded`: hard-IRQ context) call [`point`] first thing,
//! both `unlock`s last (the lock word released); the one task armed for
//! that place (one at a time; for the dispatch, the task the interrupt
//! came to) stops there, busy, once, until the VMM makes a switch
//! request (the mailbox's request number moves; bounded by [`WAIT_US`]).
//! The VMM's fast path, which writes no request when it refuses, finds it
//! there at every hold. Unarmed, a point is one relaxed load.

use core::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use super::{current, now_tsc, us_to_tsc};
use crate::hv::mailbox::mbox_read;

/// The lock implementations' `lock`.
pub const IN_LOCK: u8 = 1;
/// The voluntary preemption point's implementation (`resched`).
pub const IN_PREEMPT: u8 = 2;
/// The lock implementations' `unlock`, after the lock word is released.
pub const IN_UNLOCK: u8 = 3;
/// The lock implementations' `try_lock`, before the lock word is touched.
pub const IN_TRY_LOCK: u8 = 4;
/// The device interrupt's dispatch implementations (`hard`, `threaded`),
/// in hard-IRQ context (masked, before the EOI); the armed task is the
/// one the interrupt came to.
pub const IN_IRQ_DISPATCH: u8 = 5;
/// The longest a task stays parked.
pub const WAIT_US: u64 = 60_000_000;

/// The armed task (its `Task` address; 0: none) and where it parks.
static TASK: AtomicUsize = AtomicUsize::new(0);
static WHERE: AtomicU8 = AtomicU8::new(0);

/// Arms the park for the calling task at `at` ([`IN_LOCK`], ...).
pub fn arm(at: u8) {
    WHERE.store(at, Ordering::Relaxed);
    TASK.store(current() as *const _ as usize, Ordering::Release);
}

/// Whether the calling task is still armed (it has not parked yet).
pub fn armed() -> bool {
    TASK.load(Ordering::Acquire) == current() as *const _ as usize
}

/// Disarms the calling task; whether it was still armed (never parked).
pub fn disarm() -> bool {
    let me = current() as *const _ as usize;
    TASK.compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
}

/// A park point at `at`.
#[inline(always)]
pub fn point(at: u8) {
    if TASK.load(Ordering::Relaxed) != 0 && WHERE.load(Ordering::Relaxed) == at {
        park();
    }
}

#[cold]
#[inline(never)]
fn park() {
    if !disarm() {
        return;
    }
    let seq = mbox_read!(seq);
    let what = match WHERE.load(Ordering::Relaxed) {
        IN_LOCK => "lock",
        IN_UNLOCK => "unlock",
        IN_TRY_LOCK => "try_lock",
        IN_IRQ_DISPATCH => "interrupt dispatch",
        _ => "preemption point",
    };
    crate::println!("fault injection: '{}' parked in the {what} implementation", current().name());
    let give_up = now_tsc() + us_to_tsc(WAIT_US);
    while mbox_read!(seq) == seq && now_tsc() < give_up {
        core::hint::spin_loop();
    }
}
