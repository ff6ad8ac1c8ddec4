//! A fault-injection park point inside switchable implementations (the
//! guest arguments `park-in-lock`, `park-in-unlock` and
//! `park-in-preempt`, armed by `diag::faults`): both lock
//! implementations' `lock` and the voluntary preemption point's
//! implementation call [`point`] first thing, both `unlock`s last (the
//! lock word released); the one
//! task armed for that place stops there, busy, once, until the VMM makes
//! a switch request (the mailbox's request number moves; bounded by
//! [`WAIT_US`]). The VMM's fast path, which writes no request, finds it
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
/// The longest a task stays parked.
pub const WAIT_US: u64 = 60_000_000;

/// The armed task (its `Task` address; 0: none) and where it parks.
static TASK: AtomicUsize = AtomicUsize::new(0);
static WHERE: AtomicU8 = AtomicU8::new(0);

/// Arms the park for the calling task at `at` ([`IN_LOCK`], [`IN_PREEMPT`]).
pub fn arm(at: u8) {
    WHERE.store(at, Ordering::Relaxed);
    TASK.store(current() as *const _ as usize, Ordering::Release);
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
    let me = current() as *const _ as usize;
    if TASK.compare_exchange(me, 0, Ordering::AcqRel, Ordering::Relaxed).is_err() {
        return;
    }
    let seq = mbox_read!(seq);
    let what = match WHERE.load(Ordering::Relaxed) {
        IN_LOCK => "lock",
        IN_UNLOCK => "unlock",
        _ => "preemption point",
    };
    crate::println!("fault injection: '{}' parked in the {what} implementation", current().name());
    let give_up = now_tsc() + us_to_tsc(WAIT_US);
    while mbox_read!(seq) == seq && now_tsc() < give_up {
        core::hint::spin_loop();
    }
}
