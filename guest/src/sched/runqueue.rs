//! One CPU's run queue: a FIFO list per priority with a bitmap of the
//! non-empty ones (O(1) pick: `bsr` on two words), the task running now
//! (`curr`), the idle task, and the timer list of tasks sleeping until a
//! TSC deadline (sorted, earliest first).
//!
//! Invariants (all under the run-queue lock, `sched::core::RQS[cpu]`):
//! - a task is in at most one priority list, the one of its current
//!   `prio`, iff `on_rq`; `curr` and the idle task are never in a list;
//! - bit p of `bitmap` is set iff list p is non-empty;
//! - a task is on the timer list iff `wake_deadline_tsc != 0`, and then
//!   it is Blocked (every Blocked -> Runnable transition removes it);
//! - `armed_deadline_tsc` is the deadline the one-shot timer was last
//!   written for (0: none since it last fired); `clock` says when to write
//!   it (`logic::clockevent`).
//!
//! Only tasks pinned to this CPU are ever linked here.

use super::task::{MAX_PRIO, Task};
use crate::arch::{apic, cpu};
use crate::logic::clockevent::ClockEvent;
use core::ptr;

const LISTS: usize = MAX_PRIO as usize + 1;

pub(super) struct RunQueue {
    heads: [*const Task; LISTS],
    tails: [*const Task; LISTS],
    bitmap: [u64; 2],
    /// The task running on this CPU (its idle task when nothing else).
    pub curr: *const Task,
    pub idle: *const Task,
    timers: *const Task,
    pub armed_deadline_tsc: u64,
    pub clock: ClockEvent,
}

// SAFETY: the raw pointers point into the static task table; the run
// queue is only reached through its lock.
unsafe impl Send for RunQueue {}

impl RunQueue {
    pub const fn new() -> Self {
        Self {
            heads: [ptr::null(); LISTS],
            tails: [ptr::null(); LISTS],
            bitmap: [0; 2],
            curr: ptr::null(),
            idle: ptr::null(),
            timers: ptr::null(),
            armed_deadline_tsc: 0,
            clock: ClockEvent::new(),
        }
    }

    /// The running task (never null after `sched::init_cpu`).
    pub fn curr(&self) -> &'static Task {
        // SAFETY: `curr` points into the static task table once set.
        unsafe { &*self.curr }
    }

    /// Highest priority waiting in the queue (0 when empty).
    #[inline]
    pub fn highest_prio(&self) -> u8 {
        if self.bitmap[1] != 0 {
            (127 - self.bitmap[1].leading_zeros()) as u8
        } else if self.bitmap[0] != 0 {
            (63 - self.bitmap[0].leading_zeros()) as u8
        } else {
            0
        }
    }

    /// Appends `t` to its priority's list (or prepends, `at_head`).
    pub fn enqueue(&mut self, t: &Task, at_head: bool) {
        let p = usize::from(t.prio());
        debug_assert!(p > 0 && p < LISTS);
        let tp = ptr::from_ref(t);
        // SAFETY: the caller holds this queue's lock, which guards the
        // nodes of every task pinned here (t and its list neighbours).
        unsafe {
            let n = t.node();
            debug_assert!(!n.on_rq);
            n.on_rq = true;
            if self.heads[p].is_null() {
                n.next = ptr::null();
                n.prev = ptr::null();
                self.heads[p] = tp;
                self.tails[p] = tp;
            } else if at_head {
                n.prev = ptr::null();
                n.next = self.heads[p];
                (*self.heads[p]).node().prev = tp;
                self.heads[p] = tp;
            } else {
                n.next = ptr::null();
                n.prev = self.tails[p];
                (*self.tails[p]).node().next = tp;
                self.tails[p] = tp;
            }
        }
        self.bitmap[p / 64] |= 1 << (p % 64);
    }

    /// Unlinks `t` (which is `on_rq`) from its priority's list. The caller
    /// passes the priority the task was queued at.
    pub fn dequeue(&mut self, t: &Task, queued_prio: u8) {
        let p = usize::from(queued_prio);
        // SAFETY: as in `enqueue`.
        unsafe {
            let n = t.node();
            debug_assert!(n.on_rq);
            n.on_rq = false;
            if n.prev.is_null() {
                self.heads[p] = n.next;
            } else {
                (*n.prev).node().next = n.next;
            }
            if n.next.is_null() {
                self.tails[p] = n.prev;
            } else {
                (*n.next).node().prev = n.prev;
            }
            n.next = ptr::null();
            n.prev = ptr::null();
        }
        if self.heads[p].is_null() {
            self.bitmap[p / 64] &= !(1 << (p % 64));
        }
    }

    /// Removes and returns the first task of the highest non-empty list.
    #[inline]
    pub fn pick(&mut self) -> Option<&'static Task> {
        let p = self.highest_prio();
        if p == 0 {
            return None;
        }
        // SAFETY: bit p set means list p is non-empty; entries point into
        // the static task table.
        let t: &'static Task = unsafe { &*self.heads[usize::from(p)] };
        self.dequeue(t, p);
        Some(t)
    }

    /// Puts Blocked `t` on the timer list; returns whether it is now the
    /// earliest deadline.
    pub fn timer_insert(&mut self, t: &Task, deadline_tsc: u64) -> bool {
        let tp = ptr::from_ref(t);
        // SAFETY: the caller holds this queue's lock (guards all nodes).
        unsafe {
            debug_assert_eq!(t.node().wake_deadline_tsc, 0);
            t.node().wake_deadline_tsc = deadline_tsc;
            let mut link: *mut *const Task = &raw mut self.timers;
            while !(*link).is_null() && (**link).node().wake_deadline_tsc <= deadline_tsc {
                link = &raw mut (**link).node().timer_next;
            }
            t.node().timer_next = *link;
            *link = tp;
        }
        self.timers == tp
    }

    /// Takes `t` off the timer list if it is on it.
    pub fn timer_cancel(&mut self, t: &Task) {
        let tp = ptr::from_ref(t);
        // SAFETY: as in `timer_insert`.
        unsafe {
            if t.node().wake_deadline_tsc == 0 {
                return;
            }
            let mut link: *mut *const Task = &raw mut self.timers;
            while !(*link).is_null() {
                if *link == tp {
                    *link = t.node().timer_next;
                    break;
                }
                link = &raw mut (**link).node().timer_next;
            }
            t.node().timer_next = ptr::null();
            t.node().wake_deadline_tsc = 0;
        }
    }

    /// Pops the earliest sleeper if its deadline is at or before `now`.
    pub fn timer_pop_expired(&mut self, now_tsc: u64) -> Option<&'static Task> {
        if self.timers.is_null() {
            return None;
        }
        // SAFETY: non-null entries point into the static task table; the
        // caller holds the lock that guards their nodes.
        unsafe {
            let t: &'static Task = &*self.timers;
            let n = t.node();
            if n.wake_deadline_tsc > now_tsc {
                return None;
            }
            self.timers = n.timer_next;
            n.timer_next = ptr::null();
            n.wake_deadline_tsc = 0;
            Some(t)
        }
    }

    /// `logic::clockevent`'s deferral of the re-arm after a timer
    /// interrupt woke `top` (address, priority): the timer list's highest
    /// priority is walked only when the other conditions hold.
    pub fn defer_rearm(&mut self, top: Option<(usize, u8)>, curr_prio: u8, preemptible: bool) -> bool {
        let timers = self.timers;
        self.clock.defer_after(top, curr_prio, preemptible, || {
            let mut max = 0;
            let mut t = timers;
            // SAFETY: as in `timer_pop_expired` (the caller holds the lock:
            // `&mut self`).
            unsafe {
                while !t.is_null() {
                    max = max.max((*t).prio());
                    t = (*t).node().timer_next;
                }
            }
            max
        })
    }

    /// Decides a write of the timer for the earliest sleeper (or the
    /// watchdog's check), when the timer is not armed for an equal or
    /// earlier deadline, and records it as armed: the deadline to write
    /// once the lock is dropped (`apic::set_tsc_deadline`; module doc of
    /// `logic::clockevent`).
    pub fn arm_for_next(&mut self) -> Option<u64> {
        let d = self.clock.arm_deadline(self.next_deadline(), self.armed_deadline_tsc)?;
        self.armed_deadline_tsc = d;
        self.clock.programmed(cpu::rdtsc_ordered(), d, apic::timer_reach_tsc());
        Some(d)
    }

    /// The earliest deadline on the timer list (0: none).
    pub fn next_deadline(&self) -> u64 {
        if self.timers.is_null() {
            0
        } else {
            // SAFETY: as in `timer_pop_expired`.
            unsafe { (*self.timers).node().wake_deadline_tsc }
        }
    }
}
