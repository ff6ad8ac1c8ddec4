//! A task's life: spawning a kernel thread, its first entry, its exit, and
//! joining it (docs/ARCHITECTURE.md, "The guest kernel model").
//!
//! The top of the scheduler's layers: it builds on the scheduler proper
//! (`scheduler`: run queues, switching, wait queues), the context switch
//! (`switch`) and the freezer (a new task starts at a safe point), none of
//! which imports it. The switch's trampoline reaches [`task_start`] through
//! the frame [`initial_stack`] builds, not by name.

use super::freezer::try_to_freeze;
use super::preempt::might_sleep;
use super::scheduler::{EXIT_WQ, RQS, Switch, finish_switch, resched_cpu, schedule_loop};
use super::switch::initial_stack;
use super::task::{self, MAX_PRIO, MAX_TASKS, MIN_PRIO, Task, TaskId, TaskState, current, init_claimed, stack_top};
use crate::arch::{cpu, percpu};
use crate::hv::boot_info;
use core::ptr;
use core::sync::atomic::Ordering;

/// Creates a kernel thread `name` at priority `prio` (1..=99) pinned to
/// CPU `cpu`, running `entry(arg)`; it becomes Dead when `entry` returns.
/// Callable from any CPU once `cpu` ran `init_cpu`. Preempts (IPI) the
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
    let rsp = unsafe { initial_stack(stack_top(slot), task_start, entry, arg) };
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

/// First Rust code of a new task (from `sched_task_trampoline`, which
/// [`initial_stack`] points at it; interrupts off): finish the switch, run `entry(arg)`, exit.
extern "C" fn task_start(prev: *const Task, entry: usize, arg: usize) -> ! {
    // SAFETY: the context switch passes the task it switched away from.
    finish_switch(unsafe { &*prev });
    // SAFETY: `initial_stack` stored a `fn(usize)` as this word.
    let entry = unsafe { core::mem::transmute::<usize, fn(usize)>(entry) };
    if percpu::need_resched() {
        schedule_loop(Switch::Preempt);
    }
    cpu::enable_interrupts();
    // A task spawned during a freeze starts at a safe point.
    try_to_freeze();
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
