//! Scheduler self-checks: the preemption test the self-test suite reuses
//! ([`selftest_preemption`]), and the `sched-demo` guest argument, which
//! exercises spawn, sleep_until, preemption and yield on every CPU and
//! prints one line with what it measured.
//!
//! The tests share statics: run one at a time (the suite is sequential).

use super::lifecycle::{join, spawn};
use super::preempt::{in_irq, preempt_count, preemptible};
use super::scheduler::{WaitQueue, prepare_block, schedule, set_current_running, set_prio, wake_up, yield_now};
use super::task::{current, task};
use super::timer::{now_tsc, sleep_until, sleep_us, tsc_to_us, us_to_tsc};
use crate::arch::percpu;
use crate::hv::boot_info;
use crate::println;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use switcher::abi::MAX_CPUS;

/// Priority of the busy thread that must be preempted.
const BUSY_PRIO: u8 = 2;
/// Priority of the timer-woken thread that must preempt it.
const HIGH_PRIO: u8 = 90;
/// How far in the future the high thread's deadline is.
const HIGH_SLEEP_US: u64 = 2_000;
/// Bound on deadline -> high thread running, net of the host's steal time
/// on that CPU meanwhile (a vCPU the host does not run cannot preempt
/// anything). Generous: where ring 0 is emulated, a timer IRQ for a vCPU
/// busy in ring 0 may come ~1 ms late, and a nested host's own stalls are
/// no steal time.
const PREEMPT_BOUND_US: u64 = 50_000;
/// Give up waiting for the high thread after this long.
const TEST_TIMEOUT_US: u64 = 1_000_000;

static BUSY_STOP: AtomicBool = AtomicBool::new(false);
static BUSY_RUNNING: AtomicBool = AtomicBool::new(false);
static BUSY_ITERS: AtomicU64 = AtomicU64::new(0);
/// Whether the busy thread passes `cond_resched` points.
static BUSY_RESCHED: AtomicBool = AtomicBool::new(true);
/// TSC at which the busy thread stops by itself (0: never); read on every
/// iteration, so the runner can move it once it knows the high thread's
/// deadline.
static BUSY_UNTIL: AtomicU64 = AtomicU64::new(0);
/// How long after the high thread's deadline the busy thread stops by
/// itself (0: it runs until stopped).
static BUSY_AFTER_DEADLINE_US: AtomicU64 = AtomicU64::new(0);
/// Latency of the high thread in TSC ticks, plus 1 (0: not run yet).
static HIGH_LATE: AtomicU64 = AtomicU64::new(0);
/// Whether the busy thread was mid-loop when the high thread ran.
static HIGH_SAW_BUSY: AtomicBool = AtomicBool::new(false);
/// The host's steal time on the high thread's CPU when it ran (ns).
static HIGH_STEAL_NS: AtomicU64 = AtomicU64::new(0);

fn busy_thread(_: usize) {
    BUSY_RUNNING.store(true, Ordering::SeqCst);
    let resched = BUSY_RESCHED.load(Ordering::SeqCst);
    while !BUSY_STOP.load(Ordering::Relaxed) && {
        let until = BUSY_UNTIL.load(Ordering::Relaxed);
        until == 0 || now_tsc() < until
    } {
        BUSY_ITERS.fetch_add(1, Ordering::Relaxed);
        if resched {
            // A long kernel loop's preemption point: under none and
            // voluntary the woken thread takes the CPU here.
            super::preempt_sites::cond_resched();
        }
        core::hint::spin_loop();
    }
    BUSY_RUNNING.store(false, Ordering::SeqCst);
}

fn high_thread(deadline_tsc: usize) {
    let deadline = deadline_tsc as u64;
    sleep_until(deadline);
    let late = now_tsc().saturating_sub(deadline);
    HIGH_STEAL_NS.store(crate::arch::steal::steal_ns(percpu::cpu_id() as usize), Ordering::SeqCst);
    HIGH_SAW_BUSY.store(BUSY_RUNNING.load(Ordering::SeqCst) && !BUSY_STOP.load(Ordering::SeqCst), Ordering::SeqCst);
    HIGH_LATE.store(late + 1, Ordering::SeqCst);
    BUSY_STOP.store(true, Ordering::SeqCst);
}

/// Sleeps in steps until `done()` or `timeout_us` passed; whether done.
fn poll_until(timeout_us: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = now_tsc() + us_to_tsc(timeout_us);
    while !done() {
        if now_tsc() >= deadline {
            return false;
        }
        sleep_us(500);
    }
    true
}

/// Runs a busy thread and a timer-woken high thread on `cpu` (see
/// [`preemption_latency_on`]); returns the high thread's lateness in TSC
/// ticks, net of the host's steal time on `cpu` meanwhile, with
/// `HIGH_SAW_BUSY` telling whether it preempted the busy one.
fn preemption_run(cpu: u32) -> Result<u64, &'static str> {
    if current().cpu() == cpu && current().prio() <= BUSY_PRIO {
        return Err("the caller must outrank the busy thread on its CPU");
    }
    BUSY_STOP.store(false, Ordering::SeqCst);
    BUSY_RUNNING.store(false, Ordering::SeqCst);
    BUSY_ITERS.store(0, Ordering::SeqCst);
    HIGH_LATE.store(0, Ordering::SeqCst);
    HIGH_SAW_BUSY.store(false, Ordering::SeqCst);

    let busy = spawn("selftest-busy", BUSY_PRIO, cpu, busy_thread, 0);
    if !poll_until(TEST_TIMEOUT_US, || BUSY_RUNNING.load(Ordering::SeqCst)) {
        BUSY_STOP.store(true, Ordering::SeqCst);
        join(busy);
        return Err("the busy thread never started");
    }
    let steal_before = crate::arch::steal::steal_ns(cpu as usize);
    let deadline = now_tsc() + us_to_tsc(HIGH_SLEEP_US);
    let after = BUSY_AFTER_DEADLINE_US.load(Ordering::SeqCst);
    if after != 0 {
        // The busy loop lasts until well after the deadline, however long
        // the host took between its start and this point.
        BUSY_UNTIL.store(deadline + us_to_tsc(after), Ordering::SeqCst);
    }
    let high = spawn("selftest-high", HIGH_PRIO, cpu, high_thread, deadline as usize);
    let ran = poll_until(TEST_TIMEOUT_US, || HIGH_LATE.load(Ordering::SeqCst) != 0);
    BUSY_STOP.store(true, Ordering::SeqCst);
    join(high);
    join(busy);
    if !ran {
        return Err("the high-priority thread did not run while a low-priority thread was busy");
    }
    let stolen = us_to_tsc(HIGH_STEAL_NS.load(Ordering::SeqCst).saturating_sub(steal_before) / 1000);
    Ok((HIGH_LATE.load(Ordering::SeqCst) - 1).saturating_sub(stolen))
}

/// On CPU `cpu`: a busy thread at priority 2 spins (never yields); a thread
/// at priority 90 sleeps until a TSC deadline 2 ms ahead. Passes if the
/// high thread runs while the busy one is still mid-loop (it preempted
/// it) within 50 ms of its deadline, net of host steal time. Returns that
/// latency in TSC ticks.
/// The caller must outrank the busy thread if it runs on `cpu`.
pub fn preemption_latency_on(cpu: u32) -> Result<u64, &'static str> {
    let late = preemption_run(cpu)?;
    if !HIGH_SAW_BUSY.load(Ordering::SeqCst) {
        return Err("the busy thread was not running when the high-priority thread woke");
    }
    if tsc_to_us(late) > PREEMPT_BOUND_US {
        return Err("the high-priority thread ran, but later than 50 ms (net of host steal) after its deadline");
    }
    Ok(late)
}

/// How long the busy thread of [`preempted_without_resched_points`]
/// spins after the high thread's deadline: far more than a timer
/// interrupt takes to arrive (a vCPU the host held longer gets the pending
/// interrupt before it runs the loop on).
const UNPREEMPTED_BUSY_US: u64 = 30_000;

/// The preemption model in force, observed: on CPU `cpu` a busy thread
/// spins without a single preemption point (no cond_resched, no lock, no
/// blocking) until 30 ms after the deadline of a thread woken by the timer
/// 2 ms after the spin was seen running, which outranks it. Returns
/// whether that thread ran while the busy one was still mid-loop: only a
/// fully preemptible kernel (interrupt-return preemption) lets it.
pub fn preempted_without_resched_points(cpu: u32) -> Result<bool, &'static str> {
    BUSY_RESCHED.store(false, Ordering::SeqCst);
    // Until the runner knows the deadline: a bound only (the runner moves
    // it a few ms in).
    BUSY_UNTIL.store(now_tsc() + us_to_tsc(TEST_TIMEOUT_US), Ordering::SeqCst);
    BUSY_AFTER_DEADLINE_US.store(UNPREEMPTED_BUSY_US, Ordering::SeqCst);
    let r = preemption_run(cpu);
    BUSY_RESCHED.store(true, Ordering::SeqCst);
    BUSY_UNTIL.store(0, Ordering::SeqCst);
    BUSY_AFTER_DEADLINE_US.store(0, Ordering::SeqCst);
    r.map(|_| HIGH_SAW_BUSY.load(Ordering::SeqCst))
}

/// The self-test: a high-priority thread woken by the timer preempts a
/// lower-priority busy thread on the same CPU (the caller's) within a
/// bounded time. Call from a task of priority > 2.
pub fn selftest_preemption() -> Result<(), &'static str> {
    preemption_latency_on(current().cpu()).map(|_| ())
}

const YIELDS: u64 = 50;
static YIELD_DONE: AtomicU64 = AtomicU64::new(0);

fn yielder(_: usize) {
    for _ in 0..YIELDS {
        yield_now();
    }
    YIELD_DONE.fetch_add(1, Ordering::SeqCst);
}

/// Two equal-priority threads on `cpu` yield to each other `YIELDS` times
/// each: TSC ticks per yield (syscall-free: yield_now + switch + return).
pub fn switch_cost_on(cpu: u32) -> u64 {
    YIELD_DONE.store(0, Ordering::SeqCst);
    let before = percpu::of(cpu as usize).switches.load(Ordering::Relaxed);
    let start = now_tsc();
    let a = spawn("yield-a", 60, cpu, yielder, 0);
    let b = spawn("yield-b", 60, cpu, yielder, 0);
    poll_until(10 * TEST_TIMEOUT_US, || YIELD_DONE.load(Ordering::SeqCst) == 2);
    let elapsed = now_tsc() - start;
    join(a);
    join(b);
    let switches = percpu::of(cpu as usize).switches.load(Ordering::Relaxed) - before;
    elapsed / switches.max(1)
}

const TICKS: u64 = 10;
const TICK_US: u64 = 2_000;
static TICK_MAX_LATE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static TICK_COUNT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Smallest TSC ticks from the timer handler's clock read to the woken
/// ticker running (the IRQ exit + schedule + switch path).
static TICK_MIN_IRQ_TO_THREAD: AtomicU64 = AtomicU64::new(u64::MAX);

/// Periodic thread: sleeps until each of `TICKS` absolute deadlines.
fn ticker(cpu: usize) {
    let period = us_to_tsc(TICK_US);
    let mut next = now_tsc() + period;
    for _ in 0..TICKS {
        sleep_until(next);
        let late = now_tsc().saturating_sub(next);
        TICK_MAX_LATE[cpu].fetch_max(late, Ordering::Relaxed);
        let irq_late = percpu::of(cpu).last_timer_late_tsc.load(Ordering::Relaxed);
        if irq_late <= late {
            TICK_MIN_IRQ_TO_THREAD.fetch_min(late - irq_late, Ordering::Relaxed);
        }
        TICK_COUNT[cpu].fetch_add(1, Ordering::Relaxed);
        next += period;
    }
}

const PINGS: u64 = 10;
static PING_WQ: WaitQueue = WaitQueue::new("demo-ping");
/// Sequence number and TSC stamp of the last ping (written before the wake).
static PING_SEQ: AtomicU64 = AtomicU64::new(0);
static PING_STAMP: AtomicU64 = AtomicU64::new(0);
static PONG_SEQ: AtomicU64 = AtomicU64::new(0);
static PONG_MAX_LATE: AtomicU64 = AtomicU64::new(0);

/// Waits on `PING_WQ` for each ping; records stamp -> running.
fn ponger(_: usize) {
    for seq in 1..=PINGS {
        PING_WQ.wait_until(|| PING_SEQ.load(Ordering::SeqCst) >= seq);
        let late = now_tsc().saturating_sub(PING_STAMP.load(Ordering::SeqCst));
        PONG_MAX_LATE.fetch_max(late, Ordering::Relaxed);
        PONG_SEQ.store(seq, Ordering::SeqCst);
    }
}

/// Wake-up latency through a wait queue from this CPU to `cpu` (max TSC
/// ticks from the waker's stamp to the woken thread running).
fn wake_latency_to(cpu: u32) -> Result<u64, &'static str> {
    PING_SEQ.store(0, Ordering::SeqCst);
    PONG_SEQ.store(0, Ordering::SeqCst);
    PONG_MAX_LATE.store(0, Ordering::SeqCst);
    let pong = spawn("demo-pong", 70, cpu, ponger, 0);
    for seq in 1..=PINGS {
        sleep_us(1_000);
        PING_STAMP.store(now_tsc(), Ordering::SeqCst);
        PING_SEQ.store(seq, Ordering::SeqCst);
        PING_WQ.wake_one();
        if !poll_until(TEST_TIMEOUT_US, || PONG_SEQ.load(Ordering::SeqCst) >= seq) {
            PING_SEQ.store(PINGS, Ordering::SeqCst);
            PING_WQ.wake_all();
            join(pong);
            return Err("a wait-queue wake-up was lost");
        }
    }
    join(pong);
    Ok(PONG_MAX_LATE.load(Ordering::SeqCst))
}

static BOOST_GO: AtomicBool = AtomicBool::new(false);
static BOOST_RAN: AtomicBool = AtomicBool::new(false);

/// Blocks (raw protocol) until `BOOST_GO`, then stops the busy thread.
fn boost_target(_: usize) {
    loop {
        prepare_block();
        if BOOST_GO.load(Ordering::SeqCst) {
            break;
        }
        schedule();
    }
    set_current_running();
    BOOST_RAN.store(true, Ordering::SeqCst);
    BUSY_STOP.store(true, Ordering::SeqCst);
}

/// On `cpu`: a woken priority-3 thread stays starved behind a busy
/// priority-10 thread, until `set_prio` raises it to 20 (as a PI boost).
fn boost_check_on(cpu: u32) -> Result<(), &'static str> {
    BOOST_GO.store(false, Ordering::SeqCst);
    BOOST_RAN.store(false, Ordering::SeqCst);
    BUSY_STOP.store(false, Ordering::SeqCst);
    BUSY_RUNNING.store(false, Ordering::SeqCst);
    let target = spawn("demo-boosted", 3, cpu, boost_target, 0);
    let busy = spawn("demo-busy", 10, cpu, busy_thread, 0);
    let ok = poll_until(TEST_TIMEOUT_US, || BUSY_RUNNING.load(Ordering::SeqCst)) && {
        BOOST_GO.store(true, Ordering::SeqCst);
        if let Some(t) = task(target) {
            wake_up(t);
        }
        sleep_us(5_000);
        !BOOST_RAN.load(Ordering::SeqCst)
    };
    if let Some(t) = task(target) {
        set_prio(t, 20);
    }
    let ran = poll_until(TEST_TIMEOUT_US, || BOOST_RAN.load(Ordering::SeqCst));
    BOOST_GO.store(true, Ordering::SeqCst);
    BUSY_STOP.store(true, Ordering::SeqCst);
    if let Some(t) = task(target) {
        wake_up(t);
    }
    join(target);
    join(busy);
    match (ok, ran) {
        (true, true) => Ok(()),
        (false, _) => Err("a lower-priority woken thread ran while a higher-priority one was busy"),
        (true, false) => Err("set_prio did not let the boosted thread preempt the busy one"),
    }
}

/// The `sched-demo` guest argument's thread (CPU 0).
pub fn demo(_: usize) {
    assert!(preemptible() && !in_irq() && preempt_count() == 0, "demo thread not in plain task context");
    let cpus = boot_info::cpu_count();
    let mut tickers = [None; MAX_CPUS];
    for cpu in 0..cpus {
        TICK_MAX_LATE[cpu as usize].store(0, Ordering::Relaxed);
        TICK_COUNT[cpu as usize].store(0, Ordering::Relaxed);
        tickers[cpu as usize] = Some(spawn("demo-ticker", 50, cpu, ticker, cpu as usize));
    }
    let mut failures = 0;
    let mut max_preempt = 0;
    for cpu in 0..cpus {
        match preemption_latency_on(cpu) {
            Ok(late) => max_preempt = max_preempt.max(late),
            Err(e) => {
                println!("sched-demo: cpu {cpu}: FAILED: {e}");
                failures += 1;
            }
        }
    }
    for id in tickers.iter().flatten() {
        join(*id);
    }
    let last = cpus - 1;
    let wake_late = wake_latency_to(last).unwrap_or_else(|e| {
        println!("sched-demo: wake-up to cpu {last}: FAILED: {e}");
        failures += 1;
        0
    });
    if let Err(e) = boost_check_on(last) {
        println!("sched-demo: set_prio on cpu {last}: FAILED: {e}");
        failures += 1;
    }
    let ticks: u64 = (0..cpus as usize).map(|c| TICK_COUNT[c].load(Ordering::Relaxed)).sum();
    let tick_late = (0..cpus as usize).map(|c| TICK_MAX_LATE[c].load(Ordering::Relaxed)).max().unwrap_or(0);
    let switch = switch_cost_on(cpus - 1);
    let irq_late = (0..cpus as usize).map(|c| percpu::of(c).max_timer_late_tsc.load(Ordering::Relaxed)).max();
    let irq_late = irq_late.unwrap_or(0);
    println!(
        "sched-demo: {}: {cpus} cpus; preemption of a busy thread by a timer-woken one: max {} us after the \
         deadline; periodic sleep_until: {ticks}/{} ticks, max {} us late; timer IRQ max {} us late; timer IRQ -> \
         woken thread min {} us; wait-queue wake-up cpu 0 -> {last}: max {} us; set_prio boost preempts; context switch (yield) {} ticks = {} us",
        if failures == 0 { "ok" } else { "FAILED" },
        tsc_to_us(max_preempt),
        TICKS * u64::from(cpus),
        tsc_to_us(tick_late),
        tsc_to_us(irq_late),
        tsc_to_us(TICK_MIN_IRQ_TO_THREAD.load(Ordering::Relaxed)),
        tsc_to_us(wake_late),
        switch,
        tsc_to_us(switch),
    );
}
