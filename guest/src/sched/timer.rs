//! Time: the TSC clock, sleeping until an absolute TSC deadline, and the
//! timer interrupt that wakes sleepers.
//!
//! Each CPU keeps its sleepers on its run queue's timer list (sorted by
//! deadline) and programs its LAPIC one-shot timer (`arch::apic`: a TSC
//! deadline converted to timer ticks, one MMIO write, an exit) to the
//! earliest one, when and only when `logic::clockevent`'s rules say so. A
//! sleeper is Blocked with `wake_deadline_tsc != 0`; the timer interrupt
//! (or an early `wake_up`, or an idle CPU that polled up to the deadline)
//! takes it off the list and makes it Runnable. There is no periodic tick.
//!
//! ```text
//! sleep_until(d):  [rq lock] insert(d), Blocked, re-arm owed -> schedule
//! schedule:        [rq lock] re-arm due? decide; [unlocked] write; switch
//! timer IRQ:       [rq lock] stale? return; wake every d <= now; re-arm
//!                  now, or when the woken top task leaves; [unlocked] write
//! idle at d:       the same wake-up, without the interrupt
//! ```
//!
//! Timer IRQ hot path, with one sleeper woken: rdtsc, probe check (~5),
//! lock (~12), pop + wake + enqueue (~40), re-arm check (~5), unlock (~8),
//! plus the common interrupt entry/exit and the switch to the woken task.
//!
//! The latency probe ([`TimerProbe`], one per CPU): a task that wants to
//! know when the timer IRQ serving its deadline entered the handler (the
//! latency measurement, `workload::measure`) sets [`TimerProbe::watch`]
//! before it sleeps. The first timer IRQ on that CPU whose entry TSC is at
//! or past the watched deadline (which is the IRQ that wakes it: every
//! expired sleeper is woken) records its entry TSC and what it
//! interrupted: the task, its switchable locks, the preempt count. Only
//! that CPU writes its probe (the watcher from task context, the handler
//! with interrupts off), so plain Relaxed atomics suffice.

use super::preempt::might_sleep;
use super::runqueue::RunQueue;
use super::scheduler::{RQS, schedule, set_current_blocked, wake_locked};
use super::task::{Task, current};
use crate::arch::{apic, cpu, percpu};
use crate::hv::boot_info;
use crate::logic::clockevent::Rearm;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use switcher::abi::MAX_CPUS;
use switcher::telemetry::exit_cause;

/// One CPU's capture of the timer IRQ that served a watched deadline
/// (module doc). Written only on its own CPU.
#[repr(C, align(64))]
pub struct TimerProbe {
    /// Deadline to capture (0: none); cleared by the capturing handler.
    watch_tsc: AtomicU64,
    /// The deadline last captured, and the TSC at timer-handler entry then.
    captured_deadline_tsc: AtomicU64,
    entry_tsc: AtomicU64,
    /// The task that IRQ interrupted (`*const Task`), its switchable locks
    /// held and the CPU's preempt count at that moment.
    task: AtomicPtr<()>,
    locks_held: AtomicU32,
    preempt_count: AtomicU32,
    /// Whether that IRQ had arrived while interrupts were soft-masked.
    deferred: AtomicBool,
    /// This CPU's exit counts (`percpu::exits_now`) at that IRQ's entry.
    exits_at_entry: [AtomicU64; exit_cause::COUNT],
}

/// What the timer IRQ serving a watched deadline saw at its entry.
#[derive(Clone, Copy)]
pub struct TimerCapture {
    pub entry_tsc: u64,
    /// The interrupted task (null if none was current).
    pub task: *const Task,
    pub locks_held: u32,
    pub preempt_count: u32,
    /// The IRQ arrived while the interrupted code had interrupts
    /// soft-masked and ran at its unmask.
    pub deferred: bool,
    /// This CPU's exit counts, by cause, at the IRQ's entry.
    pub exits_at_entry: [u64; exit_cause::COUNT],
}

impl TimerCapture {
    /// The interrupted task's name ("" if none was current).
    pub fn task_name(&self) -> &'static str {
        if self.task.is_null() {
            return "";
        }
        // SAFETY: the probe stores `current` pointers, which point into
        // the static task table. The name is a `&'static str` set when
        // that slot was spawned (a respawn of the slot meanwhile would
        // only garble the name).
        unsafe { &*self.task }.name()
    }
}

impl TimerProbe {
    const fn new() -> Self {
        Self {
            watch_tsc: AtomicU64::new(0),
            captured_deadline_tsc: AtomicU64::new(0),
            entry_tsc: AtomicU64::new(0),
            task: AtomicPtr::new(core::ptr::null_mut()),
            locks_held: AtomicU32::new(0),
            preempt_count: AtomicU32::new(0),
            deferred: AtomicBool::new(false),
            exits_at_entry: [const { AtomicU64::new(0) }; exit_cause::COUNT],
        }
    }

    /// Asks this CPU's timer handler to capture the IRQ that serves
    /// `deadline_tsc`. Call on the probe's own CPU, before sleeping.
    #[inline]
    pub fn watch(&self, deadline_tsc: u64) {
        self.watch_tsc.store(deadline_tsc, Ordering::Relaxed);
    }

    /// The capture for `deadline_tsc`, if a timer IRQ served it (none when
    /// the sleep returned without one: the deadline had already passed).
    /// Call on the probe's own CPU after waking.
    #[inline]
    pub fn take(&self, deadline_tsc: u64) -> Option<TimerCapture> {
        if self.captured_deadline_tsc.load(Ordering::Relaxed) != deadline_tsc {
            return None;
        }
        Some(TimerCapture {
            entry_tsc: self.entry_tsc.load(Ordering::Relaxed),
            task: self.task.load(Ordering::Relaxed).cast_const().cast(),
            locks_held: self.locks_held.load(Ordering::Relaxed),
            preempt_count: self.preempt_count.load(Ordering::Relaxed),
            deferred: self.deferred.load(Ordering::Relaxed),
            exits_at_entry: core::array::from_fn(|i| self.exits_at_entry[i].load(Ordering::Relaxed)),
        })
    }

    /// From the timer handler, interrupts off: capture if this interrupt
    /// is the one armed for the watched deadline (`armed_tsc`, what the
    /// TSC-deadline register held) and that deadline has come. An
    /// interrupt armed for another sleeper's earlier deadline that happens
    /// to arrive after the watched one is not its interrupt: its lateness
    /// says nothing of how late the watched deadline's interrupt came (it
    /// was on its way before). A handful of instructions when nothing is
    /// watched.
    #[inline(always)]
    fn on_timer_entry(&self, entry_tsc: u64, armed_tsc: u64) {
        let watch = self.watch_tsc.load(Ordering::Relaxed);
        if watch == 0 || entry_tsc < watch || armed_tsc != watch {
            return;
        }
        let task = percpu::current_ptr();
        self.entry_tsc.store(entry_tsc, Ordering::Relaxed);
        self.task.store(task.cast_mut(), Ordering::Relaxed);
        let locks = if task.is_null() {
            0
        } else {
            // SAFETY: a non-null `current` points into the static task table.
            unsafe { &*task.cast::<Task>() }.switch_locks_held.load(Ordering::Relaxed)
        };
        self.locks_held.store(locks, Ordering::Relaxed);
        self.preempt_count.store(percpu::preempt_count(), Ordering::Relaxed);
        self.deferred.store(crate::arch::irqflags::replaying(), Ordering::Relaxed);
        for (slot, n) in self.exits_at_entry.iter().zip(percpu::exits_now()) {
            slot.store(n, Ordering::Relaxed);
        }
        self.captured_deadline_tsc.store(watch, Ordering::Relaxed);
        self.watch_tsc.store(0, Ordering::Relaxed);
    }
}

/// The timer probe of each CPU.
static PROBES: [TimerProbe; MAX_CPUS] = [const { TimerProbe::new() }; MAX_CPUS];

/// This CPU's timer probe (module doc).
pub fn this_cpu_probe() -> &'static TimerProbe {
    &PROBES[percpu::cpu_id() as usize]
}

/// The TSC, ordered (`lfence; rdtsc; lfence`; RDTSCP faults on this host).
#[inline]
pub fn now_tsc() -> u64 {
    cpu::rdtsc_ordered()
}

/// TSC ticks in `us` microseconds.
pub fn us_to_tsc(us: u64) -> u64 {
    us.saturating_mul(boot_info::tsc_khz()) / 1000
}

/// Microseconds in `ticks` TSC ticks.
pub fn tsc_to_us(ticks: u64) -> u64 {
    ticks.saturating_mul(1000) / boot_info::tsc_khz().max(1)
}

/// Blocks the current task until the TSC reaches `deadline_tsc` (absolute;
/// returns at once if it has passed). Blocking: `might_sleep` applies.
/// Returns whether it slept (false: the deadline had passed already).
#[track_caller]
pub fn sleep_until(deadline_tsc: u64) -> bool {
    might_sleep("sleep_until");
    let me = current();
    let cpu = me.cpu() as usize;
    let mut slept = false;
    while now_tsc() < deadline_tsc {
        slept = true;
        {
            let mut rq = RQS[cpu].lock_irqsave();
            rq.timer_insert(me, deadline_tsc);
            set_current_blocked();
            // Armed by the context switch away from here, after the
            // run-queue lock is dropped (`logic::clockevent`), unless a
            // task the timer woke, still to run, re-arms when it leaves.
            if rq.clock.rearm == Rearm::None {
                rq.clock.rearm = Rearm::Now;
            }
        }
        schedule();
    }
    // Waking from a lock-free sleep is a safe point (freezer).
    super::freezer::freeze_if_lock_free();
    slept
}

/// Sleeps for `us` microseconds from now.
#[track_caller]
pub fn sleep_us(us: u64) {
    let _ = sleep_until(now_tsc().saturating_add(us_to_tsc(us)));
}

/// Slack of the stale-interrupt test (`logic::clockevent`): 10 µs, for
/// the conversion between TSC and timer ticks.
fn stale_slack() -> u64 {
    us_to_tsc(10)
}

/// The timer interrupt (`vector::TIMER`; interrupts off): wakes every
/// sleeper whose deadline has passed, marks need_resched if a woken task
/// outranks `curr`, and re-arms the timer unless the rules of
/// `logic::clockevent` say not to (a stale interrupt, the idle loop's
/// early one, or a woken task that no sleeper outranks: then it is armed
/// when that task leaves the CPU). Returns whether the caller EOIs now
/// (`false`: the EOI is owed with the re-arm).
#[must_use]
pub fn on_timer_interrupt() -> bool {
    // First thing: the entry TSC (also `now` for expiry: a deadline that
    // passes while the lock is taken fires again at once after re-arming).
    let now = now_tsc();
    crate::sched::handler_mark::mark_handler_entry(now);
    let this = percpu::this();
    let cpu = this.cpu_id() as usize;
    // What the interrupt came into can be preempted at its exit (read
    // before the run-queue lock raises the count).
    let preemptible = percpu::preempt_count() == 0;
    crate::sched::watchdog::on_timer_interrupt(cpu, now);
    this.timer_irqs.fetch_add(1, Ordering::Relaxed);
    let arm = {
        let mut rq = RQS[cpu].lock();
        if rq.clock.is_stale(now, stale_slack()) {
            // Raised for an earlier programming: the timer still counts.
            rq.clock.stale += 1;
            return true;
        }
        rq.clock.fired();
        let armed = core::mem::take(&mut rq.armed_deadline_tsc);
        PROBES[cpu].on_timer_entry(now, armed);
        if armed != 0 && now >= armed {
            let late = now - armed;
            this.last_timer_late_tsc.store(late, Ordering::Relaxed);
            if late > this.max_timer_late_tsc.load(Ordering::Relaxed) {
                this.max_timer_late_tsc.store(late, Ordering::Relaxed);
            }
        }
        // The watchdog's check deadline keeps the timer armed on a CPU
        // whose tasks cannot run (nothing else would ever fire the timer
        // there).
        rq.clock.check = crate::sched::watchdog::with_check_deadline(cpu, 0);
        let next = rq.next_deadline();
        if core::mem::take(&mut rq.clock.idle_serves) && next > now {
            // The idle loop's early interrupt: it polls to the deadline and
            // serves it (`expire_from_idle`); leaving idle re-arms.
            if rq.clock.rearm == Rearm::None {
                rq.clock.rearm = Rearm::Now;
            }
            return true;
        }
        match expire(&mut rq, now, this, preemptible) {
            Expiry::Arm(d) => Some(d),
            Expiry::Nothing => None,
            Expiry::Deferred => {
                rq.clock.eoi_owed = true;
                return false;
            }
        }
    };
    if let Some(d) = arm {
        apic::set_tsc_deadline(d);
    }
    true
}

/// What [`expire`] decided for the timer.
enum Expiry {
    /// Write it for this deadline once the lock is dropped.
    Arm(u64),
    /// Nothing to write.
    Nothing,
    /// Armed when the task the timer woke leaves the CPU.
    Deferred,
}

/// Wakes every sleeper due at `now` (run-queue lock held, interrupts off),
/// marks need_resched if one outranks `curr`, and decides the re-arm
/// (`logic::clockevent`); `preemptible`: `curr` can be preempted at once.
fn expire(rq: &mut RunQueue, now: u64, this: &percpu::PerCpu, preemptible: bool) -> Expiry {
    let curr_prio = rq.curr().prio();
    let mut top: Option<&'static Task> = None;
    while let Some(t) = rq.timer_pop_expired(now) {
        // The deadline is already cleared: wake_locked must not cancel it.
        if wake_locked(rq, t) && top.is_none_or(|b| t.prio() > b.prio()) {
            top = Some(t);
        }
    }
    if top.is_some_and(|t| t.prio() > curr_prio) {
        this.need_resched.store(true, Ordering::Relaxed);
    }
    let top = top.map(|t| (core::ptr::from_ref(t) as usize, t.prio()));
    if rq.defer_rearm(top, curr_prio, preemptible) {
        return Expiry::Deferred;
    }
    if matches!(rq.clock.rearm, Rearm::AfterTop(_)) {
        // An earlier deferral stands: armed when its task leaves.
        return Expiry::Nothing;
    }
    rq.arm_for_next().map_or(Expiry::Nothing, Expiry::Arm)
}

/// From the idle loop (interrupts off), once the TSC reached the deadline
/// it polled for: the timer interrupt's work without the interrupt (the
/// second half of the haltpoll governor's timer advance). Nothing when
/// nothing is due (an interrupt served it already). The latency probe
/// sees its entry as the interrupt's.
pub fn expire_from_idle() {
    let now = now_tsc();
    let this = percpu::this();
    let cpu = this.cpu_id() as usize;
    // The idle task: always preemptible.
    let arm = {
        let mut rq = RQS[cpu].lock();
        let due = rq.next_deadline();
        if due == 0 || due > now {
            return;
        }
        PROBES[cpu].on_timer_entry(now, due);
        this.idle_expiries.fetch_add(1, Ordering::Relaxed);
        if rq.clock.rearm == Rearm::Now {
            rq.clock.rearm = Rearm::None;
        }
        match expire(&mut rq, now, this, true) {
            Expiry::Arm(d) => Some(d),
            Expiry::Nothing | Expiry::Deferred => None,
        }
    };
    if let Some(d) = arm {
        apic::set_tsc_deadline(d);
    }
}

/// The earliest sleeper's deadline on this CPU (0: none), for the idle
/// loop's plan; arms the timer first if a re-arm is owed (an early
/// interrupt came while nothing left the idle loop to serve it).
pub fn idle_next_deadline() -> u64 {
    let cpu = percpu::cpu_id() as usize;
    let (next, arm) = {
        let mut rq = RQS[cpu].lock();
        let arm = if rq.clock.rearm == Rearm::Now {
            rq.clock.rearm = Rearm::None;
            rq.arm_for_next()
        } else {
            None
        };
        (rq.next_deadline(), arm)
    };
    if let Some(d) = arm {
        apic::set_tsc_deadline(d);
    }
    next
}

/// From the idle loop (interrupts off), before it halts with the timer
/// armed early (`early`, by the halt's wake-up cost) for a sleeper due at
/// `deadline`: that early interrupt re-arms nothing, the idle loop serves
/// the deadline by polling (`expire_from_idle`). Writes the timer.
pub fn arm_early_for_idle(early: u64) {
    let cpu = percpu::cpu_id() as usize;
    {
        let mut rq = RQS[cpu].lock();
        rq.clock.idle_serves = true;
        rq.clock.programmed(now_tsc(), early, apic::timer_reach_tsc());
    }
    apic::set_tsc_deadline(early);
}
