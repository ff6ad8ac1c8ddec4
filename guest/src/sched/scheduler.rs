//! The scheduler proper: per-CPU run queues, `schedule`, wake-ups,
//! priority changes, what the preemption points call (`preempt_sites`
//! holds the points themselves), and wait queues (at the end of this file). Spawning,
//! starting, exiting and joining tasks: `lifecycle`.
//!
//! # Picking
//! Fixed priorities 1..=99, higher first, FIFO among equals (SCHED_FIFO):
//! a task runs until it blocks, yields, or a higher-priority task becomes
//! runnable on its CPU. A preempted task goes back to the head of its
//! list (it keeps its turn), a yielding one to the tail. No time slices,
//! no periodic tick: the timer is programmed only for sleepers.
//!
//! # Blocking without lost wake-ups (Linux's protocol)
//! ```text
//!   waiter                               waker
//!   set_current_blocked()   (xchg: mb)   make the condition true
//!   if condition { set_current_running(); done }
//!   schedule()                           wake_up(task)  (lock xadd: mb)
//! ```
//! Either the waiter sees the condition, or the waker sees it Blocked and
//! makes it Runnable. `wake_up` of a task still on its CPU (between
//! `set_current_blocked` and the switch) only resets its state: its
//! `schedule` then keeps it running. A task preempted while Blocked stays
//! queued (preemption ignores the state), so it cannot get lost either.
//!
//! # Locks and ordering
//! `RQS[cpu]` (raw, always taken with interrupts off: the timer IRQ takes
//! it) guards that CPU's run queue and the `SchedNode` of every task pinned
//! there. Order: wait-queue lock -> run-queue lock (any one CPU's); never
//! two run-queue locks at once; nothing is taken under a run-queue lock.
//! The lock is dropped before the register switch: tasks never migrate,
//! so only this CPU (with interrupts off until the switch is done) can
//! resume a task that another CPU has made Runnable meanwhile.
//!
//! # need_resched
//! Set under the target's run-queue lock when a task that outranks the
//! target's `curr` becomes runnable there (wake, spawn, set_prio); cleared
//! by the target's `schedule` under the same lock. A remote target gets a
//! RESCHED IPI when its flag goes from clear to set; a local one acts on it
//! on its way out (guard drop, interrupt return), or through a self-IPI
//! when the waker runs with interrupts off outside an IRQ handler.

use super::preempt::might_sleep;
use super::runqueue::RunQueue;
use super::switch::sched_context_switch;
use super::task::{self, MAX_PRIO, MIN_PRIO, Task, TaskState, current};
use crate::arch::{apic, cpu, irqflags, percpu};
use crate::logic::idle::{self, Kick};
use crate::sched::raw_lock::RawSpinLock;
use core::ptr;
use core::sync::atomic::{AtomicU64, Ordering};
use switcher::abi::{MAX_CPUS, vector};

/// Run queue of each CPU.
pub(super) static RQS: [RawSpinLock<RunQueue>; MAX_CPUS] =
    [const { RawSpinLock::new("runqueue", RunQueue::new()) }; MAX_CPUS];

/// Woken whenever a task has died and left its CPU (joiners wait here).
pub(super) static EXIT_WQ: WaitQueue = WaitQueue::new("task-exit");

/// How the current task leaves the CPU.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Switch {
    /// Preempted: stays runnable, back to the head of its list.
    Preempt,
    /// Yielded: stays runnable, to the tail of its list.
    Yield,
    /// Voluntary `schedule()`: off the queue if Blocked or Dead.
    Block,
}

/// Makes this CPU's boot context its idle task and arms its timer (off).
/// Every CPU, once, before it reports online (so that CPU 0 may spawn on
/// any online CPU).
pub fn init_cpu(cpu: u32) {
    let idle = task::init_idle(cpu as usize);
    let mut rq = RQS[cpu as usize].lock_irqsave();
    rq.curr = idle;
    rq.idle = idle;
}

/// Switches away from the current task. Interrupts off; preempt count and
/// IRQ depth 0. Returns (interrupts still off) when the task is switched
/// back in.
fn schedule_once(how: Switch) {
    let this = percpu::this();
    let mut rq = RQS[this.cpu_id() as usize].lock();
    this.need_resched.store(false, Ordering::Relaxed);
    let prev = rq.curr();
    if !prev.is_idle() {
        match how {
            Switch::Preempt => rq.enqueue(prev, true),
            Switch::Yield => rq.enqueue(prev, false),
            Switch::Block if prev.state() == TaskState::Runnable => rq.enqueue(prev, true),
            Switch::Block => {}
        }
    }
    // The timer re-arm owed when this task leaves, and the EOI owed with
    // it (`logic::clockevent`); written once the run-queue lock is
    // dropped, interrupts still off.
    rq.clock.idle_serves = false;
    let (arm, eoi) = if rq.clock.rearm_due(ptr::from_ref(prev) as usize) {
        (rq.arm_for_next(), core::mem::take(&mut rq.clock.eoi_owed))
    } else {
        (None, false)
    };
    let next = match rq.pick() {
        Some(t) => t,
        // SAFETY: `idle` points into the static task table (init_cpu).
        None => unsafe { &*rq.idle },
    };
    if ptr::eq(next, prev) {
        drop(rq);
        pay_timer(eoi, arm);
        return;
    }
    rq.curr = next;
    super::trace::switch(this.cpu_id(), next);
    next.on_cpu.store(true, Ordering::Relaxed);
    this.current.store(ptr::from_ref(next).cast_mut().cast(), Ordering::Relaxed);
    this.switches.fetch_add(1, Ordering::Relaxed);
    let prev_rsp = prev.saved_rsp.get();
    // SAFETY: `next` is switched out (not running anywhere: it is pinned
    // here and this CPU runs `prev`), so its saved rsp is stable.
    let next_rsp = unsafe { *next.saved_rsp.get() };
    drop(rq);
    pay_timer(eoi, arm);
    // SAFETY: interrupts are off; `next_rsp` was saved by this function
    // (or built by `initial_stack`) for `next`; `prev_rsp` is prev's slot.
    let prev = unsafe { sched_context_switch(prev_rsp, next_rsp, ptr::from_ref(prev) as usize) };
    // SAFETY: the switch returns the task it switched away from.
    finish_switch(unsafe { &*(prev as *const Task) });
}

/// The timer's owed EOI and re-arm (`schedule_once`), outside the
/// run-queue lock, interrupts off.
fn pay_timer(eoi: bool, arm: Option<u64>) {
    if eoi {
        apic::eoi();
    }
    if let Some(d) = arm {
        apic::set_tsc_deadline(d);
    }
}

/// After a switch, on the new task's stack: `prev` no longer uses its
/// stack. Wakes joiners if it died.
pub(super) fn finish_switch(prev: &Task) {
    let dead = prev.state() == TaskState::Dead;
    prev.on_cpu.store(false, Ordering::Release);
    if dead {
        EXIT_WQ.wake_all();
    }
}

/// Schedules until no reschedule is pending. Interrupts off.
pub(super) fn schedule_loop(mut how: Switch) {
    loop {
        schedule_once(how);
        if !percpu::need_resched() {
            return;
        }
        how = Switch::Preempt;
    }
}

/// Preemption from the interrupt return path (interrupts off, count 0).
pub(super) fn schedule_irqs_off_preempt() {
    schedule_loop(Switch::Preempt);
}

/// Preemption at a preemption point (`preempt_enable` reaching 0, or a
/// `cond_resched`/`might_resched` point): switches if interrupts are on and
/// the CPU is not in a handler.
#[cold]
pub(super) fn preempt_schedule() {
    if percpu::irq_depth() != 0 || !cpu::interrupts_enabled() {
        return;
    }
    cpu::disable_interrupts();
    schedule_loop(Switch::Preempt);
    cpu::enable_interrupts();
}

/// Gives up the CPU: if the current task is Blocked (see
/// [`set_current_blocked`]) it sleeps until [`wake_up`]; otherwise it stays
/// runnable and runs again unless something of higher priority waits.
/// Must not be called in atomic context (asserted: preempt count, IRQ,
/// raw lock, interrupts off, idle task).
#[track_caller]
pub fn schedule() {
    might_sleep("schedule");
    cpu::disable_interrupts();
    schedule_loop(Switch::Block);
    cpu::enable_interrupts();
}

/// Puts the current task at the tail of its priority's list and runs the
/// head (possibly itself again).
#[track_caller]
pub fn yield_now() {
    might_sleep("yield_now");
    cpu::disable_interrupts();
    schedule_loop(Switch::Yield);
    cpu::enable_interrupts();
}

/// Marks the current task Blocked, with a full barrier, before the caller
/// re-checks its wait condition (see the module doc). No assertion: the
/// lock code may do this under its raw wait lock; `schedule` checks.
#[inline]
pub fn set_current_blocked() {
    current().set_state_mb(TaskState::Blocked);
}

/// `might_sleep` + [`set_current_blocked`]: the start of a blocking wait.
#[track_caller]
pub fn prepare_block() {
    might_sleep("prepare_block");
    set_current_blocked();
}

/// Undoes [`set_current_blocked`] when the condition already holds.
#[inline]
pub fn set_current_running() {
    current().set_state(TaskState::Runnable);
}

/// Asks CPU `cpu` to reschedule. Caller holds `RQS[cpu]`; `irqs_were_on`
/// tells whether the caller's context had interrupts unmasked (else a
/// local request must be noticed at its unmask: the interrupt exit work
/// is requested for it, as a self-IPI would).
pub(super) fn resched_cpu(cpu: u32, irqs_were_on: bool) {
    let this = percpu::this();
    if cpu == this.cpu_id() {
        this.need_resched.store(true, Ordering::Relaxed);
        if !irqs_were_on && percpu::irq_depth() == 0 {
            irqflags::request_exit_work();
        }
        return;
    }
    let target = percpu::of(cpu as usize);
    match idle::kick(&target.need_resched, &target.polling) {
        Kick::Ipi => {
            // Sent at this CPU's unmask (`flush_deferred_ipis`), not here:
            // the caller holds a run-queue lock with interrupts masked, and
            // an IPI is an exit to the hypervisor (tens of µs on some hosts)
            // that would lengthen that masked region.
            DEFERRED_IPIS[this.cpu_id() as usize].fetch_or(1 << cpu, Ordering::Relaxed);
            irqflags::request_exit_work();
        }
        // The target's idle loop polls need_resched: no exit at all.
        Kick::Polling => {
            target.ipis_spared.fetch_add(1, Ordering::Relaxed);
        }
        Kick::AlreadyAsked => {}
    }
}

/// Remote reschedule IPIs each CPU owes (bit N: CPU N), sent once it
/// unmasks.
static DEFERRED_IPIS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Sends the reschedule IPIs this CPU deferred (interrupt exit work, masked,
/// after the locks that made them are released).
pub(super) fn flush_deferred_ipis() {
    let this = percpu::this();
    let mut mask = DEFERRED_IPIS[this.cpu_id() as usize].swap(0, Ordering::Relaxed);
    while mask != 0 {
        let cpu = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        apic::send_ipi(percpu::of(cpu).apic_id(), vector::RESCHED_IPI);
    }
}

/// Blocked -> Runnable under the run-queue lock: cancels its timer and
/// queues it unless it is still `curr`. Returns whether it was woken.
pub(super) fn wake_locked(rq: &mut RunQueue, t: &Task) -> bool {
    if t.state() != TaskState::Blocked {
        return false;
    }
    t.set_state(TaskState::Runnable);
    super::trace::wake(t);
    rq.timer_cancel(t);
    // SAFETY: the caller holds the run-queue lock of t's CPU.
    let queued = unsafe { t.node().on_rq };
    if !queued && !ptr::eq(rq.curr, t) {
        rq.enqueue(t, false);
    }
    true
}

/// Makes a Blocked task Runnable on its CPU (from any CPU, from IRQ
/// context too) and asks that CPU to reschedule if the task outranks what
/// it runs. Returns `false` if the task was not Blocked (already runnable,
/// dead: nothing done). A wake that races with the task still being on its
/// CPU is not lost (module doc).
pub fn wake_up(t: &Task) -> bool {
    let cpu = t.cpu();
    let mut rq = RQS[cpu as usize].lock_irqsave();
    if !wake_locked(&mut rq, t) {
        return false;
    }
    if t.prio() > rq.curr().prio() {
        resched_cpu(cpu, rq.irqs_were_on());
    }
    true
}

/// Whether `t` is asleep: Blocked, out of its run queue and not its CPU's
/// current task, read under that CPU's run-queue lock, where these change
/// together, and off its CPU: the context switch away from it finished
/// (`on_cpu` clears on the next task's stack, after the run-queue lock is
/// dropped; until then it still runs the switch's tail, which is what the
/// VMM's check of a switch sees, with every vCPU held). Such a task runs
/// again only after a `wake_up`. (A task preempted after it marked itself
/// Blocked stays queued: not asleep.)
pub fn is_asleep(t: &Task) -> bool {
    let rq = RQS[t.cpu() as usize].lock_irqsave();
    // SAFETY: we hold the run-queue lock of t's CPU.
    let queued = unsafe { t.node().on_rq };
    t.state() == TaskState::Blocked && !queued && !ptr::eq(rq.curr, t) && !t.on_cpu.load(Ordering::Acquire)
}

/// Sets `t`'s effective priority (PI boost or deboost; 1..=99): requeues
/// it if queued (boost: tail of the new list; deboost: head, as Linux's
/// rt_mutex_setprio), and reschedules its CPU if the order changed.
pub fn set_prio(t: &Task, prio: u8) {
    assert!((MIN_PRIO..=MAX_PRIO).contains(&prio), "set_prio({prio}) out of range {MIN_PRIO}..={MAX_PRIO}");
    assert!(!t.is_idle(), "set_prio on an idle task");
    let cpu = t.cpu();
    let mut rq = RQS[cpu as usize].lock_irqsave();
    let old = t.prio();
    if old == prio {
        return;
    }
    // SAFETY: we hold the run-queue lock of t's CPU.
    let queued = unsafe { t.node().on_rq };
    if queued {
        rq.dequeue(t, old);
    }
    t.prio.store(prio, Ordering::Relaxed);
    if queued {
        rq.enqueue(t, prio < old);
    }
    let curr = rq.curr();
    let resched = if ptr::eq(curr, t) { prio < old && rq.highest_prio() > prio } else { queued && prio > curr.prio() };
    if resched {
        resched_cpu(cpu, rq.irqs_were_on());
    }
}

// --- Wait queues (here, not in a file of their own: they block through
// `schedule`, and the scheduler wakes joiners through one, EXIT_WQ) ---
//
// Wait queues: tasks sleep until a condition holds; wakers make it hold
// and call [`WaitQueue::wake_one`] / [`WaitQueue::wake_all`].
//
// Order: by effective priority at the time of queueing, highest first,
// FIFO among equals; `wake_one` wakes the first. A queued task's priority
// may change later (PI) without re-sorting.
//
// Protocol (no lost wake-ups; see the module doc):
// ```text
// waiter: [q lock] queue self if not queued; Blocked (mb) [unlock]
//         cond()? -> Runnable, [q lock] unqueue [unlock], return
//         schedule(), loop
// waker:  make cond true; [q lock] pop waiter(s) [..] wake_up (rq lock)
// ```
// A waker pops the waiters it wakes, so a woken waiter that finds the
// condition false queues itself again. The queue's raw lock is taken with
// interrupts off (wakers may be IRQ handlers); it nests outside run-queue
// locks. The wait with the freezer's safe point on the way out,
// `WaitQueue::wait_until`, is in `freezer.rs` (above this file).
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
