//! The scheduler proper: per-CPU run queues, `schedule`, wake-ups,
//! priority changes, spawning and exiting tasks.
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
use super::switch::{initial_stack, sched_context_switch};
use super::task::{self, MAX_PRIO, MAX_TASKS, MIN_PRIO, Task, TaskId, TaskState, current, init_claimed, stack_top};
use super::waitqueue::WaitQueue;
use crate::arch::{apic, cpu, irqflags, percpu};
use crate::boot_info;
use crate::sync::raw::RawSpinLock;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use switcher::abi::{MAX_CPUS, vector};

/// Run queue of each CPU.
pub(super) static RQS: [RawSpinLock<RunQueue>; MAX_CPUS] =
    [const { RawSpinLock::new("runqueue", RunQueue::new()) }; MAX_CPUS];

/// Woken whenever a task has died and left its CPU (joiners wait here).
static EXIT_WQ: WaitQueue = WaitQueue::new("task-exit");

/// How the current task leaves the CPU.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Switch {
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
    let next = match rq.pick() {
        Some(t) => t,
        // SAFETY: `idle` points into the static task table (init_cpu).
        None => unsafe { &*rq.idle },
    };
    if ptr::eq(next, prev) {
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
    // SAFETY: interrupts are off; `next_rsp` was saved by this function
    // (or built by `initial_stack`) for `next`; `prev_rsp` is prev's slot.
    let prev = unsafe { sched_context_switch(prev_rsp, next_rsp, ptr::from_ref(prev) as usize) };
    // SAFETY: the switch returns the task it switched away from.
    finish_switch(unsafe { &*(prev as *const Task) });
}

/// After a switch, on the new task's stack: `prev` no longer uses its
/// stack. Wakes joiners if it died.
fn finish_switch(prev: &Task) {
    let dead = prev.state() == TaskState::Dead;
    prev.on_cpu.store(false, Ordering::Release);
    if dead {
        EXIT_WQ.wake_all();
    }
}

/// Schedules until no reschedule is pending. Interrupts off.
fn schedule_loop(mut how: Switch) {
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

/// `preempt_enable`'s slow path: count just reached 0 with need_resched.
#[cold]
pub(super) fn preempt_schedule() {
    if percpu::irq_depth() != 0 || !cpu::interrupts_enabled() {
        return;
    }
    cpu::disable_interrupts();
    schedule_loop(Switch::Preempt);
    cpu::enable_interrupts();
}

/// Whether idle CPUs poll instead of halting (guest argument `idle=poll`).
static IDLE_POLL: AtomicBool = AtomicBool::new(false);

/// Makes idle CPUs poll for work at CPL3 instead of halting in the shim:
/// an interrupt then reaches a busy CPU at CPL3 (no wake-up from the
/// ring-0 halt), at the price of a host core per vCPU (Linux's
/// `idle=poll`, which RT setups use for the same reason).
pub fn set_idle_poll(poll: bool) {
    IDLE_POLL.store(poll, Ordering::Relaxed);
}

/// The idle loop of this CPU (its boot context, after boot): runs the
/// scheduler when something is runnable, else halts in the ring-0 shim
/// (masked: an interrupt that arrives wakes the halt and runs at the
/// unmask), or polls with `idle=poll`.
pub fn idle_loop() -> ! {
    let poll = IDLE_POLL.load(Ordering::Relaxed);
    loop {
        cpu::disable_interrupts();
        if percpu::need_resched() {
            schedule_loop(Switch::Preempt);
            cpu::enable_interrupts();
        } else if poll {
            cpu::enable_interrupts();
            while !percpu::need_resched() {
                core::hint::spin_loop();
            }
        } else {
            cpu::idle_halt();
            cpu::enable_interrupts();
        }
    }
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
fn resched_cpu(cpu: u32, irqs_were_on: bool) {
    let this = percpu::this();
    if cpu == this.cpu_id() {
        this.need_resched.store(true, Ordering::Relaxed);
        if !irqs_were_on && percpu::irq_depth() == 0 {
            irqflags::request_exit_work();
        }
        return;
    }
    let target = percpu::of(cpu as usize);
    if !target.need_resched.swap(true, Ordering::AcqRel) {
        // Sent at this CPU's unmask (`flush_deferred_ipis`), not here: the
        // caller holds a run-queue lock with interrupts masked, and an IPI
        // is an exit to the hypervisor (tens of µs on some hosts) that
        // would lengthen that masked region.
        DEFERRED_IPIS[this.cpu_id() as usize].fetch_or(1 << cpu, Ordering::Relaxed);
        irqflags::request_exit_work();
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

/// Creates a kernel thread `name` at priority `prio` (1..=99) pinned to
/// CPU `cpu`, running `entry(arg)`; it becomes Dead when `entry` returns.
/// Callable from any CPU once `cpu` ran [`init_cpu`]. Preempts (IPI) the
/// target if the new task outranks what it runs. Panics when the task
/// table is full or the arguments are out of range.
pub fn spawn(name: &'static str, prio: u8, cpu: u32, entry: fn(usize), arg: usize) -> TaskId {
    assert!((MIN_PRIO..=MAX_PRIO).contains(&prio), "spawn '{name}': priority {prio} out of range");
    assert!(cpu < boot_info::cpu_count(), "spawn '{name}': no cpu {cpu}");
    let Some(t) = task::claim_slot() else {
        panic!("spawn '{name}': task table full ({MAX_TASKS} tasks)");
    };
    let slot = t.id().slot();
    // SAFETY: the claimed slot's stack is unused (its previous occupant,
    // if any, is Dead and off its CPU).
    let rsp = unsafe { initial_stack(stack_top(slot), entry, arg) };
    init_claimed(t, name, prio, cpu, rsp);
    let id = t.id();
    let mut rq = RQS[cpu as usize].lock_irqsave();
    t.set_state(TaskState::Runnable);
    rq.enqueue(t, false);
    if prio > rq.curr().prio() {
        resched_cpu(cpu, rq.irqs_were_on());
    }
    id
}

/// First Rust code of a new task (from `sched_task_trampoline`, interrupts
/// off): finish the switch, run `entry(arg)`, exit.
pub(super) extern "C" fn task_start(prev: *const Task, entry: usize, arg: usize) -> ! {
    // SAFETY: the context switch passes the task it switched away from.
    finish_switch(unsafe { &*prev });
    // SAFETY: `initial_stack` stored a `fn(usize)` as this word.
    let entry = unsafe { core::mem::transmute::<usize, fn(usize)>(entry) };
    if percpu::need_resched() {
        schedule_loop(Switch::Preempt);
    }
    cpu::enable_interrupts();
    // A task spawned during a freeze starts at a safe point.
    super::freezer::try_to_freeze();
    entry(arg);
    exit_current()
}

/// Ends the current task (its entry returned). It must hold nothing.
fn exit_current() -> ! {
    let me = current();
    let held = me.switch_locks_held.load(Ordering::Relaxed);
    assert!(held == 0, "task '{}' exits holding {held} switchable lock(s)", me.name());
    might_sleep("task exit");
    cpu::disable_interrupts();
    {
        let _rq = RQS[me.cpu() as usize].lock();
        me.set_state(TaskState::Dead);
    }
    schedule_loop(Switch::Block);
    unreachable!("dead task '{}' was scheduled again", me.name());
}

/// Waits until task `id` has exited and left its CPU, then frees its slot.
/// Returns at once if that incarnation is already gone.
#[track_caller]
pub fn join(id: TaskId) {
    if let Some(t) = task::task(id) {
        assert!(!ptr::eq(t, current()), "task '{}' joins itself", t.name());
    }
    EXIT_WQ.wait_until(|| task::try_free(id));
}
