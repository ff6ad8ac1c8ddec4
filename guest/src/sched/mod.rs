//! The scheduler: fixed-priority kernel threads on per-CPU run queues,
//! preemption, sleeping, blocking and waking (docs/ARCHITECTURE.md, "The guest
//! kernel model").
//!
//! Model:
//! - Kernel threads with priorities 1..=99 (higher runs first, FIFO among
//!   equals, like SCHED_FIFO); each CPU's idle task (its boot context) at
//!   priority 0. A task is pinned to the CPU it was spawned on.
//! - Preemption on interrupt return and on `preempt_enable` when the
//!   preempt count is 0 and a higher-priority task became runnable; no
//!   time slices, no periodic tick.
//! - Blocking is Linux's: `set_current_blocked()` (or `prepare_block()`),
//!   re-check the condition, `schedule()`; `wake_up(task)` from anywhere.
//!
//! ```text
//!             spawn                 set_current_blocked + schedule
//!   (slot) ─────────> Runnable ───────────────────────────────> Blocked
//!                     │  ^   ^──────── wake_up / timer expiry ──────┘
//!                     │  └── preempted / yield: stays Runnable (queued)
//!                     └── entry returns ──> Dead ──join──> (slot free)
//! ```
//!
//! Locks (all raw, irqsave): wait-queue lock -> run-queue lock of one CPU.
//! Lock code (`sync::`) may call `wake_up` and `set_prio` under its own
//! raw wait lock (which then nests outside the run-queue lock), and must
//! drop that lock before `schedule()`.
//!
//! Files, lowest layer first (no file imports one above it, but for the
//! knot in the third item):
//! - `handler_mark` (handler-entry marks for `diag::costs`, a leaf);
//! - `task` (table, ids, stacks), `runqueue` (per-CPU queue and timer
//!   list), `switch` (the context switch in assembly), `preempt` (counts,
//!   might_sleep), `trace` (the per-CPU scheduler event ring);
//! - `scheduler` (schedule, wake, priorities, wait queues),
//!   `preempt_sites` (the preemption points `preempt_enable`,
//!   `cond_resched` and `irq_exit_work`) and `raw_lock` (`RawSpinLock`,
//!   the never-switched lock of the scheduler, timers and wait queues), a
//!   knot: the raw lock raises the preempt count and lowers it through
//!   `preempt_enable`, which may schedule, and the scheduler locks with
//!   it; `preempt`'s `might_sleep` names the last raw lock taken;
//! - `freezer` (safe points; the freezable `WaitQueue::wait_until`);
//! - `lifecycle` (spawn, a task's start and exit, join), `timer` (sleep,
//!   timer IRQ), with `watchdog` (the lockup detector: threads of its own,
//!   checked from the timer interrupt);
//! - `selftest` (preemption test and the `sched-demo`).

pub mod freezer;
pub mod handler_mark;
mod idle;
mod lifecycle;
pub mod park;
mod preempt;
pub mod preempt_sites;
pub mod raw_lock;
mod runqueue;
mod scheduler;
pub mod selftest;
mod switch;
mod task;
mod timer;
pub mod trace;
pub mod watchdog;

// The kernel-core API: what lock code (sync/), the self-tests, the
// workload and the switch use.
pub use idle::{idle_loop, idle_policy};
pub use lifecycle::{join, spawn};
pub use preempt::{in_irq, irq_enter, irq_exit, might_sleep, preempt_count, preempt_disable};
pub use preempt_sites::{cond_resched, irq_exit_work, preempt_enable};
pub use scheduler::{
    WaitQueue, init_cpu, schedule, set_current_blocked, set_current_running, set_prio, wake_up, yield_now,
};
pub use selftest::{preempted_without_resched_points, selftest_preemption};
pub use task::{
    GuardPages, MAX_PRIO, MAX_TASKS, TASK_SLOTS, Task, TaskId, TaskRef, TaskState, current, lock_wait,
    stack_guard_pages, task, task_by_slot,
};
pub use timer::{TimerProbe, now_tsc, on_timer_interrupt, sleep_until, sleep_us, this_cpu_probe, tsc_to_us, us_to_tsc};
