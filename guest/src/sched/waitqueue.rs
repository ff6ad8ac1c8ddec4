//! Wait queues: tasks sleep until a condition holds; wakers make it hold
//! and call [`WaitQueue::wake_one`] / [`WaitQueue::wake_all`].
//!
//! Order: by effective priority at the time of queueing, highest first,
//! FIFO among equals; `wake_one` wakes the first. A queued task's priority
//! may change later (PI) without re-sorting.
//!
//! Protocol (no lost wake-ups; see `scheduler`'s module doc):
//! ```text
//! waiter: [q lock] queue self if not queued; Blocked (mb) [unlock]
//!         cond()? -> Runnable, [q lock] unqueue [unlock], return
//!         schedule(), loop
//! waker:  make cond true; [q lock] pop waiter(s) [..] wake_up (rq lock)
//! ```
//! A waker pops the waiters it wakes, so a woken waiter that finds the
//! condition false queues itself again. The queue's raw lock is taken with
//! interrupts off (wakers may be IRQ handlers); it nests outside run-queue
//! locks.

use super::preempt::might_sleep;
use super::scheduler::{schedule, set_current_blocked, set_current_running, wake_up};
use super::task::{Task, current};
use crate::sync::raw::RawSpinLock;
use core::ptr;

struct Waiters {
    head: *const Task,
}

// SAFETY: the pointers point into the static task table; only reached
// through the queue's lock.
unsafe impl Send for Waiters {}

impl Waiters {
    /// Queues `t` by priority (after every waiter of equal or higher).
    fn insert(&mut self, t: &Task) {
        let prio = t.prio();
        // SAFETY: the caller holds the queue lock, which guards the wait
        // nodes of every task on this queue, and of `t` (about to join).
        unsafe {
            let mut link: *mut *const Task = &raw mut self.head;
            while !(*link).is_null() && (**link).prio() >= prio {
                link = &raw mut (**link).wait_node().next;
            }
            let n = t.wait_node();
            n.next = *link;
            n.queued = true;
            *link = ptr::from_ref(t);
        }
    }

    fn remove(&mut self, t: &Task) {
        // SAFETY: as in `insert`.
        unsafe {
            if !t.wait_node().queued {
                return;
            }
            let mut link: *mut *const Task = &raw mut self.head;
            while !(*link).is_null() {
                if ptr::eq(*link, t) {
                    *link = t.wait_node().next;
                    break;
                }
                link = &raw mut (**link).wait_node().next;
            }
            t.wait_node().queued = false;
            t.wait_node().next = ptr::null();
        }
    }

    fn pop(&mut self) -> Option<&'static Task> {
        if self.head.is_null() {
            return None;
        }
        // SAFETY: as in `insert`; entries point into the static table.
        unsafe {
            let t: &'static Task = &*self.head;
            self.head = t.wait_node().next;
            t.wait_node().queued = false;
            t.wait_node().next = ptr::null();
            Some(t)
        }
    }
}

/// A queue of tasks waiting for a condition.
pub struct WaitQueue {
    waiters: RawSpinLock<Waiters>,
}

impl WaitQueue {
    pub const fn new(name: &'static str) -> Self {
        Self { waiters: RawSpinLock::new(name, Waiters { head: ptr::null() }) }
    }

    /// Blocks the current task until `cond()` holds (checked first, then
    /// after every wake-up). `cond` runs in task context, unlocked.
    #[track_caller]
    pub fn wait_until(&self, cond: impl FnMut() -> bool) {
        self.wait_until_unfreezable(cond);
        super::freezer::freeze_if_lock_free();
    }

    /// [`WaitQueue::wait_until`] without the freezer's implicit safe point
    /// on the way out (the freezer's own wait).
    pub fn wait_until_unfreezable(&self, mut cond: impl FnMut() -> bool) {
        might_sleep("WaitQueue::wait_until");
        if cond() {
            return;
        }
        let me = current();
        loop {
            {
                let mut w = self.waiters.lock_irqsave();
                // SAFETY: we hold this queue's lock; `me` is on no other.
                if !unsafe { me.wait_node().queued } {
                    w.insert(me);
                }
                set_current_blocked();
            }
            if cond() {
                break;
            }
            schedule();
        }
        set_current_running();
        self.waiters.lock_irqsave().remove(me);
    }

    /// Wakes the first waiter; `false` if there was none.
    pub fn wake_one(&self) -> bool {
        let mut w = self.waiters.lock_irqsave();
        match w.pop() {
            Some(t) => {
                wake_up(t);
                true
            }
            None => false,
        }
    }

    /// Wakes every waiter; returns how many.
    pub fn wake_all(&self) -> usize {
        let mut w = self.waiters.lock_irqsave();
        let mut n = 0;
        while let Some(t) = w.pop() {
            wake_up(t);
            n += 1;
        }
        n
    }
}
