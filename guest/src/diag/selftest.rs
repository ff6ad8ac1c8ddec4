//! The in-guest self-test suite (`rtswitch run --selftest`): kernel
//! threads on real vCPUs exercising the scheduler and the switchable locks
//! in the mode the VMM patched in.
//!
//! A runner task (top priority, CPU 0) runs the tests one after another,
//! prints `test <name> ... ok` or `... FAILED: <why>` for each, then one
//! closing line `N passed, N failed`, and exits the guest with status 0
//! only if every test passed. Every wait is bounded, so a broken lock or
//! scheduler fails a test instead of hanging it (a lock that spins forever
//! with preemption off is caught by the VMM-side time limit).
//!
//! Tests that need two CPUs use CPU 1 when there is one and run everything
//! on CPU 0 otherwise (where they still hold, just without parallelism).
//! The tests share statics: they run strictly one at a time.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use switcher::abi::LockMode;
use switcher::profile::{PreemptModel, Profile};

use crate::diag::selftest_ring3;
use crate::hv::{boot_info, hypercall};
use crate::println;
use crate::sched::{self, TaskId, now_tsc, sleep_us, us_to_tsc};
use crate::sync::spinlock::SpinLock;
use crate::sync::{registry, rt};

/// Priority of the test runner: above every task a test spawns.
pub const RUNNER_PRIO: u8 = 95;
/// Bound on any wait inside a test.
const WAIT_US: u64 = 5_000_000;

type TestFn = fn() -> Result<(), &'static str>;

struct Test {
    name: &'static str,
    /// Runs only in the profiles this accepts.
    only: fn(Profile) -> bool,
    run: TestFn,
}

const TESTS: &[Test] = &[
    Test { name: "mutual exclusion", only: any, run: mutual_exclusion },
    Test { name: "try_lock", only: any, run: try_lock },
    Test { name: "try_lock under contention from another CPU", only: any, run: try_lock_contended },
    Test { name: "preemption by a timer-woken thread", only: any, run: preemption },
    Test { name: "preemption model in force", only: any, run: preemption_model_in_force },
    Test { name: "mainline: holder not preempted", only: mainline_locks, run: mainline_holder_not_preempted },
    Test { name: "rt: holder preemptible", only: rt_locks_full_preemption, run: rt_holder_preemptible },
    Test { name: "rt: priority inversion", only: rt_locks_full_preemption, run: rt_priority_inversion },
    Test { name: "rt: PI chain", only: rt_locks_full_preemption, run: rt_pi_chain },
    Test { name: "rt: hand-off to the top waiter", only: rt_locks_full_preemption, run: rt_handoff_order },
    Test {
        name: "rt: a waiter boosted to the top of an ownerless lock is woken",
        only: rt_locks_full_preemption,
        run: rt_requeue_wakes_new_top,
    },
    Test { name: "rt: an adaptive spin takes the lock from a running owner", only: rt_locks, run: rt_spin_takes },
    Test { name: "lock registry idle", only: any, run: registry_idle },
    Test { name: "timer probe: only the watched deadline's own interrupt", only: any, run: probe_own_interrupt },
    Test { name: "soft mask: deferred, not lost", only: any, run: selftest_ring3::soft_mask_defers },
    Test { name: "soft mask: nesting", only: any, run: selftest_ring3::soft_mask_nests },
    Test { name: "soft mask: replay order", only: any, run: selftest_ring3::soft_mask_replay_order },
    Test { name: "shim: entries counted", only: any, run: selftest_ring3::shim_counts_entries },
    Test { name: "shim: none on lock fast paths", only: any, run: selftest_ring3::no_shim_on_lock_fast_paths },
    Test { name: "shim: none in measurement activations", only: any, run: selftest_ring3::no_shim_in_measurement },
];

fn any(_: Profile) -> bool {
    true
}

fn mainline_locks(p: Profile) -> bool {
    p.locks == LockMode::Mainline
}

fn rt_locks(p: Profile) -> bool {
    p.locks == LockMode::Rt
}

/// The rt tests need the holder's critical section to be preemptible at
/// any point: rtmutexes under full preemption.
fn rt_locks_full_preemption(p: Profile) -> bool {
    p.locks == LockMode::Rt && p.preempt == PreemptModel::Full
}

/// The patched preemption points act as the boot profile says: a busy
/// thread without a single preemption point is preempted by a woken
/// higher-priority thread under `full` only.
fn preemption_model_in_force() -> Result<(), &'static str> {
    let preempted = sched::preempted_without_resched_points(other_cpu())?;
    match (boot_info::initial_mode().preempt, preempted) {
        (PreemptModel::Full, true) | (PreemptModel::None | PreemptModel::Voluntary, false) => Ok(()),
        (PreemptModel::Full, false) => {
            Err("full preemption: a woken higher-priority thread waited for a busy thread's whole loop")
        }
        (_, true) => Err("none/voluntary preemption: a busy thread without preemption points was preempted"),
    }
}

/// Spawns the runner (from CPU 0's boot path once the scheduler runs).
pub fn start() {
    sched::spawn("selftest", RUNNER_PRIO, 0, runner, 0);
}

fn runner(_: usize) {
    let mode = boot_info::initial_mode();
    println!("selftest: mode {}, {} CPUs", mode.name(), boot_info::cpu_count());
    let (mut passed, mut failed) = (0u32, 0u32);
    for t in TESTS.iter().filter(|t| (t.only)(mode)) {
        match (t.run)() {
            Ok(()) => {
                passed += 1;
                println!("test {} ... ok", t.name);
            }
            Err(why) => {
                failed += 1;
                println!("test {} ... FAILED: {why}", t.name);
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    hypercall::exit(if failed == 0 { 0 } else { 1 });
}

/// The CPU for the "other side" of a test.
fn other_cpu() -> u32 {
    if boot_info::cpu_count() > 1 { 1 } else { 0 }
}

/// Busy for `us` microseconds (no sleeping: holds the CPU).
fn busy_us(us: u64) {
    let end = now_tsc() + us_to_tsc(us);
    while now_tsc() < end {
        core::hint::spin_loop();
    }
}

/// Sleeps in 1 ms steps until `done()`; false after `WAIT_US`.
fn wait_for(mut done: impl FnMut() -> bool) -> bool {
    let end = now_tsc() + us_to_tsc(WAIT_US);
    while !done() {
        if now_tsc() >= end {
            return false;
        }
        sleep_us(1_000);
    }
    true
}

fn join_all(ids: &[TaskId]) {
    for &id in ids {
        sched::join(id);
    }
}

fn check(cond: bool, why: &'static str) -> Result<(), &'static str> {
    if cond { Ok(()) } else { Err(why) }
}

// ---- mutual exclusion -------------------------------------------------

/// Data whose invariant (a == b) only holds between critical sections.
struct Pair {
    a: u64,
    b: u64,
}

static PAIR: SpinLock<Pair> = SpinLock::new("selftest.pair", Pair { a: 0, b: 0 });
static PAIR_VIOLATIONS: AtomicU64 = AtomicU64::new(0);
const MUTEX_THREADS_PER_CPU: usize = 2;
const MUTEX_ITERATIONS: u64 = 150;

fn pair_worker(_: usize) {
    for i in 0..MUTEX_ITERATIONS {
        let mut p = PAIR.lock();
        if p.a != p.b {
            PAIR_VIOLATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p.a += 1;
        // Hold the lock across a window where others on other CPUs (and,
        // in rt mode, preempting tasks) try to enter.
        if i % 8 == 0 {
            busy_us(50);
        }
        p.b += 1;
        drop(p);
        if i % 16 == 0 {
            sched::yield_now();
        }
    }
}

fn mutual_exclusion() -> Result<(), &'static str> {
    PAIR_VIOLATIONS.store(0, Ordering::Relaxed);
    {
        let mut p = PAIR.lock();
        p.a = 0;
        p.b = 0;
    }
    let cpus = boot_info::cpu_count().min(4);
    let mut ids = [None; 8];
    let mut n = 0;
    for cpu in 0..cpus {
        for k in 0..MUTEX_THREADS_PER_CPU {
            ids[n] = Some(sched::spawn("pair-worker", 10 + k as u8, cpu, pair_worker, 0));
            n += 1;
        }
    }
    for id in ids.iter().flatten() {
        sched::join(*id);
    }
    let p = PAIR.lock();
    let expected = n as u64 * MUTEX_ITERATIONS;
    check(PAIR_VIOLATIONS.load(Ordering::Relaxed) == 0, "a critical section saw another one's half-done update")?;
    check(p.a == expected && p.b == expected, "lost or duplicated updates: the final count is not exact")
}

// ---- try_lock ---------------------------------------------------------

static TRY: SpinLock<u32> = SpinLock::new("selftest.try", 0);
static TRY_HELD: AtomicBool = AtomicBool::new(false);
static TRY_RELEASE: AtomicBool = AtomicBool::new(false);

fn try_holder(_: usize) {
    let _g = TRY.lock();
    TRY_HELD.store(true, Ordering::SeqCst);
    while !TRY_RELEASE.load(Ordering::SeqCst) {
        busy_us(100);
    }
}

fn try_lock() -> Result<(), &'static str> {
    {
        let g = TRY.try_lock();
        check(g.is_some(), "try_lock of a free lock failed")?;
    }
    TRY_HELD.store(false, Ordering::SeqCst);
    TRY_RELEASE.store(false, Ordering::SeqCst);
    let cpu = other_cpu();
    if cpu == 0 {
        return Ok(()); // the holder would need this CPU; the free case is checked
    }
    let id = sched::spawn("try-holder", 10, cpu, try_holder, 0);
    let held = wait_for(|| TRY_HELD.load(Ordering::SeqCst));
    let stolen = TRY.try_lock().is_some();
    TRY_RELEASE.store(true, Ordering::SeqCst);
    join_all(&[id]);
    check(held, "the holder never took the lock")?;
    check(!stolen, "try_lock succeeded on a lock another task holds")?;
    check(TRY.try_lock().is_some(), "try_lock failed after the holder released")
}

// ---- try_lock under contention ------------------------------------------

static TRY_PAIR: SpinLock<Pair> = SpinLock::new("selftest.try-contended", Pair { a: 0, b: 0 });
/// Per side: try_lock successes, failures, and critical sections done.
static TRY_WON: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static TRY_LOST: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static TRY_SECTIONS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
static TRY_BROKEN: AtomicU64 = AtomicU64::new(0);
/// Rounds of the race per side: a bound on attempts, not on time. The
/// race ends earlier once both sides have won and one has lost.
const TRY_ROUNDS: usize = 20_000;
/// The handshake: the other CPU holds the lock (1), is asked to let go (2),
/// has let go (3).
static TRY_HOLD: AtomicU32 = AtomicU32::new(0);

/// The other CPU's side of the handshake: takes the lock, says so, keeps
/// it (busy, on its CPU) until asked, lets go, says so.
fn try_holder_other_cpu(_: usize) {
    let g = TRY_PAIR.lock();
    TRY_HOLD.store(1, Ordering::SeqCst);
    while TRY_HOLD.load(Ordering::SeqCst) != 2 {
        core::hint::spin_loop();
    }
    drop(g);
    TRY_HOLD.store(3, Ordering::SeqCst);
}

fn race_seen() -> bool {
    let lost: u64 = TRY_LOST.iter().map(|w| w.load(Ordering::Relaxed)).sum();
    lost > 0 && TRY_WON.iter().all(|w| w.load(Ordering::Relaxed) > 0)
}

/// One side of the race: try_lock; on success a short section that checks
/// and updates the pair; on failure a blocking lock and the same section.
/// The other side does the same on another CPU at the same time, until
/// the race was seen (both won, one lost) or the rounds run out.
fn try_contender(side: usize) {
    for _ in 0..TRY_ROUNDS {
        if race_seen() {
            break;
        }
        let mut g = match TRY_PAIR.try_lock() {
            Some(g) => {
                TRY_WON[side].fetch_add(1, Ordering::Relaxed);
                g
            }
            None => {
                TRY_LOST[side].fetch_add(1, Ordering::Relaxed);
                TRY_PAIR.lock()
            }
        };
        if g.a != g.b {
            TRY_BROKEN.fetch_add(1, Ordering::Relaxed);
        }
        g.a += 1;
        busy_us(2);
        g.b += 1;
        TRY_SECTIONS[side].fetch_add(1, Ordering::Relaxed);
    }
}

/// try_lock against another CPU. Arranged first (a handshake, whatever the
/// host's timing): while the other CPU holds the lock, try_lock fails;
/// once it let go, try_lock succeeds. Then a race of both CPUs doing
/// try_lock-or-lock rounds: never two in the section, no lost update.
fn try_lock_contended() -> Result<(), &'static str> {
    if boot_info::cpu_count() < 2 {
        return Ok(()); // needs a second CPU to contend
    }
    TRY_HOLD.store(0, Ordering::SeqCst);
    let holder = sched::spawn("try-holder-1", 10, 1, try_holder_other_cpu, 0);
    let held = wait_for(|| TRY_HOLD.load(Ordering::SeqCst) == 1);
    let failed_while_held = held && TRY_PAIR.try_lock().is_none();
    TRY_HOLD.store(2, Ordering::SeqCst);
    let released = wait_for(|| TRY_HOLD.load(Ordering::SeqCst) == 3);
    join_all(&[holder]);
    let won_after = released && TRY_PAIR.try_lock().is_some();
    check(held, "the other CPU never took the lock")?;
    check(failed_while_held, "try_lock succeeded while another CPU held the lock")?;
    check(won_after, "try_lock failed after the other CPU let go")?;

    for i in 0..2 {
        TRY_WON[i].store(0, Ordering::Relaxed);
        TRY_LOST[i].store(0, Ordering::Relaxed);
        TRY_SECTIONS[i].store(0, Ordering::Relaxed);
    }
    TRY_BROKEN.store(0, Ordering::Relaxed);
    let before = TRY_PAIR.lock().a;
    let ids = [sched::spawn("try-0", 10, 0, try_contender, 0), sched::spawn("try-1", 10, 1, try_contender, 1)];
    join_all(&ids);
    let after = TRY_PAIR.lock().a;
    let sections: u64 = TRY_SECTIONS.iter().map(|w| w.load(Ordering::Relaxed)).sum();
    crate::println!(
        "selftest: try_lock race: {} sections, {} try_lock failures (contention the host let happen)",
        sections,
        TRY_LOST.iter().map(|w| w.load(Ordering::Relaxed)).sum::<u64>()
    );
    check(TRY_BROKEN.load(Ordering::Relaxed) == 0, "try_lock let two tasks into the critical section")?;
    check(after - before == sections, "lost updates under try_lock contention")
}

// ---- preemption ---------------------------------------------------------

fn preemption() -> Result<(), &'static str> {
    sched::selftest_preemption()
}

// ---- holder preemption: mainline vs rt ----------------------------------

static HOLD: SpinLock<u32> = SpinLock::new("selftest.hold", 0);
static HOLDER_IN_CS: AtomicBool = AtomicBool::new(false);
static HOLDER_DONE: AtomicBool = AtomicBool::new(false);
/// TSC at which the low task leaves its CS (0: not said yet): the high
/// task's deadline plus [`HOLD_AFTER_WAKE_US`], set by the runner.
static HOLDER_UNTIL: AtomicU64 = AtomicU64::new(0);
/// Whether the high task first ran while the low one was inside its CS.
static HIGH_RAN_DURING_CS: AtomicU32 = AtomicU32::new(2);
/// How long the low task stays in its CS after the high task's deadline:
/// far more than a timer interrupt takes to arrive (a vCPU the host held
/// longer gets the pending interrupt before it runs the CS on).
const HOLD_AFTER_WAKE_US: u64 = 20_000;
const HIGH_WAKE_US: u64 = 3_000;

/// Takes HOLD and stays busy inside until the runner's end for it has
/// passed (bounded by `WAIT_US` should the runner never set one): the CS
/// covers the high task's wake-up whatever the host's timing between the
/// two CPUs.
fn low_holder(_: usize) {
    let g = HOLD.lock();
    HOLDER_IN_CS.store(true, Ordering::SeqCst);
    let give_up = now_tsc() + us_to_tsc(WAIT_US);
    loop {
        let (until, now) = (HOLDER_UNTIL.load(Ordering::SeqCst), now_tsc());
        if (until != 0 && now >= until) || now >= give_up {
            break;
        }
        core::hint::spin_loop();
    }
    HOLDER_IN_CS.store(false, Ordering::SeqCst);
    drop(g);
    HOLDER_DONE.store(true, Ordering::SeqCst);
}

fn high_waker(deadline: usize) {
    sched::sleep_until(deadline as u64);
    HIGH_RAN_DURING_CS.store(u32::from(HOLDER_IN_CS.load(Ordering::SeqCst)), Ordering::SeqCst);
}

/// Low takes HOLD and stays busy inside; high, on the same CPU, wakes by
/// timer in the middle (the CS lasts until well after high's deadline).
/// Returns whether high ran during low's CS.
fn holder_preemption_run() -> Result<bool, &'static str> {
    HOLDER_IN_CS.store(false, Ordering::SeqCst);
    HOLDER_DONE.store(false, Ordering::SeqCst);
    HOLDER_UNTIL.store(0, Ordering::SeqCst);
    HIGH_RAN_DURING_CS.store(2, Ordering::SeqCst);
    let cpu = other_cpu();
    let low = sched::spawn("low-holder", 10, cpu, low_holder, 0);
    if !wait_for(|| HOLDER_IN_CS.load(Ordering::SeqCst) || HOLDER_DONE.load(Ordering::SeqCst)) {
        HOLDER_UNTIL.store(1, Ordering::SeqCst);
        return Err("the low task never entered its critical section");
    }
    let deadline = now_tsc() + us_to_tsc(HIGH_WAKE_US);
    HOLDER_UNTIL.store(deadline + us_to_tsc(HOLD_AFTER_WAKE_US), Ordering::SeqCst);
    let high = sched::spawn("high-waker", 60, cpu, high_waker, deadline as usize);
    join_all(&[high, low]);
    match HIGH_RAN_DURING_CS.load(Ordering::SeqCst) {
        2 => Err("the high task never ran"),
        v => Ok(v == 1),
    }
}

fn mainline_holder_not_preempted() -> Result<(), &'static str> {
    let during = holder_preemption_run()?;
    check(!during, "a task holding a mainline SpinLock was preempted before its unlock")
}

fn rt_holder_preemptible() -> Result<(), &'static str> {
    let during = holder_preemption_run()?;
    check(during, "a higher-priority task waited for an rt lock holder's critical section")
}

// ---- rt: priority inversion -------------------------------------------

static PI_LOCK_L: SpinLock<u32> = SpinLock::new("selftest.inversion", 0);
static INV_LOW_LOCKED: AtomicBool = AtomicBool::new(false);
/// The runner queued high on L and spawned medium: low may finish its CS.
static INV_MEDIUM_SPAWNED: AtomicBool = AtomicBool::new(false);
static INV_HOG_DONE: AtomicBool = AtomicBool::new(false);
/// 1: high got the lock before medium's hog ended; 0: after; 2: not yet.
static INV_HIGH_BEFORE_HOG: AtomicU32 = AtomicU32::new(2);
static INV_LOW_PRIO_SEEN: AtomicU32 = AtomicU32::new(0);
static INV_LOW_PRIO_AFTER: AtomicU32 = AtomicU32::new(0);
static INV_HIGH_TASK: AtomicUsize = AtomicUsize::new(usize::MAX);
const INV_CS_US: u64 = 10_000;
const INV_HOG_US: u64 = 80_000;

/// Takes L and keeps it, busy, until the runner has queued high on it and
/// spawned medium (a handshake: the inversion is set up whatever the
/// host's timing; bounded by `WAIT_US`), then `INV_CS_US` more.
fn inv_low(_: usize) {
    let g = PI_LOCK_L.lock();
    INV_LOW_LOCKED.store(true, Ordering::SeqCst);
    let give_up = now_tsc() + us_to_tsc(WAIT_US);
    while !INV_MEDIUM_SPAWNED.load(Ordering::SeqCst) && now_tsc() < give_up {
        core::hint::spin_loop();
    }
    busy_us(INV_CS_US);
    INV_LOW_PRIO_SEEN.store(u32::from(sched::current().prio()), Ordering::SeqCst);
    drop(g);
    INV_LOW_PRIO_AFTER.store(u32::from(sched::current().prio()), Ordering::SeqCst);
}

fn inv_high(_: usize) {
    let _g = PI_LOCK_L.lock();
    INV_HIGH_BEFORE_HOG.store(u32::from(!INV_HOG_DONE.load(Ordering::SeqCst)), Ordering::SeqCst);
}

fn inv_medium(_: usize) {
    busy_us(INV_HOG_US);
    INV_HOG_DONE.store(true, Ordering::SeqCst);
}

/// Low (10) holds L; high (30) blocks on L; medium (20) hogs the CPU;
/// low keeps L until all three are there. With PI, low runs at 30,
/// finishes its CS, and high gets L before medium's hog ends. Without PI,
/// medium starves low and high waits for the whole hog: the classic
/// unbounded priority inversion.
fn rt_priority_inversion() -> Result<(), &'static str> {
    INV_LOW_LOCKED.store(false, Ordering::SeqCst);
    INV_MEDIUM_SPAWNED.store(false, Ordering::SeqCst);
    INV_HOG_DONE.store(false, Ordering::SeqCst);
    INV_HIGH_BEFORE_HOG.store(2, Ordering::SeqCst);
    INV_LOW_PRIO_SEEN.store(0, Ordering::SeqCst);
    INV_LOW_PRIO_AFTER.store(0, Ordering::SeqCst);
    let cpu = other_cpu();
    let low = sched::spawn("inv-low", 10, cpu, inv_low, 0);
    if !wait_for(|| INV_LOW_LOCKED.load(Ordering::SeqCst)) {
        INV_MEDIUM_SPAWNED.store(true, Ordering::SeqCst);
        return Err("the low task never took the lock");
    }
    let high = sched::spawn("inv-high", 30, cpu, inv_high, 0);
    INV_HIGH_TASK.store(high.slot(), Ordering::SeqCst);
    let queued = wait_for(|| sched::task_by_slot(high.slot()).blocked_on.load(Ordering::SeqCst) != 0)
        || INV_HIGH_BEFORE_HOG.load(Ordering::SeqCst) != 2;
    let medium = sched::spawn("inv-medium", 20, cpu, inv_medium, 0);
    INV_MEDIUM_SPAWNED.store(true, Ordering::SeqCst);
    join_all(&[high, medium, low]);
    check(queued, "the high task never blocked on the lock")?;
    check(
        INV_HIGH_BEFORE_HOG.load(Ordering::SeqCst) == 1,
        "high got the lock only after medium's hog: priority inversion",
    )?;
    check(INV_LOW_PRIO_SEEN.load(Ordering::SeqCst) == 30, "the lock holder was not boosted to the waiter's priority")?;
    check(INV_LOW_PRIO_AFTER.load(Ordering::SeqCst) == 10, "the holder kept its boost after the unlock (no de-boost)")
}

// ---- timer probe --------------------------------------------------------

static PROBE_SLEEPER_AT: AtomicU64 = AtomicU64::new(0);
/// Sleeps of the watched deadline alone, until its own interrupt was seen.
const PROBE_ATTEMPTS: usize = 10;

fn probe_sleeper(_: usize) {
    let _ = sched::sleep_until(PROBE_SLEEPER_AT.load(Ordering::SeqCst));
}

/// The IRQ latency of an activation is the lateness of the interrupt armed
/// for its own deadline. Another sleeper's deadline one TSC tick earlier
/// arms the timer; its interrupt (which cannot arrive within that tick)
/// wakes both: the watched deadline must record no IRQ sample for it (its
/// lateness says nothing of the watched deadline's interrupt, which was
/// never armed). Alone, the watched deadline's own interrupt is captured:
/// tried up to [`PROBE_ATTEMPTS`] times, since a deadline of another task
/// of this CPU (its watchdog's) just before the watched one arms the timer
/// for itself, and its interrupt, if the host delivers it late, wakes the
/// watched sleeper too.
fn probe_own_interrupt() -> Result<(), &'static str> {
    let probe = sched::this_cpu_probe();
    let me = crate::arch::percpu::cpu_id();
    let d1 = now_tsc() + us_to_tsc(20_000);
    PROBE_SLEEPER_AT.store(d1, Ordering::SeqCst);
    let sleeper = sched::spawn("probe-sleeper", 10, me, probe_sleeper, 0);
    // Let it go to sleep first (it arms the timer for d1).
    sleep_us(5_000);
    let d2 = d1 + 1;
    probe.watch(d2);
    let _ = sched::sleep_until(d2);
    let shared = probe.take(d2);
    probe.watch(0);
    sched::join(sleeper);
    let mut own = None;
    for _ in 0..PROBE_ATTEMPTS {
        let d3 = now_tsc() + us_to_tsc(5_000);
        probe.watch(d3);
        let _ = sched::sleep_until(d3);
        own = probe.take(d3);
        probe.watch(0);
        if own.is_some() {
            break;
        }
    }
    check(
        shared.is_none(),
        "an interrupt armed for another sleeper's earlier deadline was taken as the watched one's",
    )?;
    check(own.is_some(), "the watched deadline's own interrupt was not captured")
}

// ---- rt: a PI requeue on an ownerless lock -----------------------------

static RQ_L: SpinLock<u32> = SpinLock::new("selftest.requeue-l", 0);
static RQ_M: SpinLock<u32> = SpinLock::new("selftest.requeue-m", 0);
static RQ_U_HAS_L: AtomicBool = AtomicBool::new(false);
static RQ_RELEASE_U: AtomicBool = AtomicBool::new(false);
static RQ_U_RELEASED: AtomicBool = AtomicBool::new(false);
static RQ_B_HAS_M: AtomicBool = AtomicBool::new(false);
static RQ_HOG_STOP: AtomicBool = AtomicBool::new(false);
static RQ_HOG_RUNNING: AtomicBool = AtomicBool::new(false);
/// 1: X got M while the hog still ran; 0: only after; 2: not yet.
static RQ_X_DURING_HOG: AtomicU32 = AtomicU32::new(2);
/// Longest the hog spins: well past any wake-up (the bound only keeps a
/// broken lock from hanging the suite).
const RQ_HOG_MAX_US: u64 = 3_000_000;

fn rq_u(_: usize) {
    let g = RQ_L.lock();
    RQ_U_HAS_L.store(true, Ordering::SeqCst);
    while !RQ_RELEASE_U.load(Ordering::SeqCst) {
        busy_us(100);
    }
    drop(g);
    RQ_U_RELEASED.store(true, Ordering::SeqCst);
}

fn rq_b(_: usize) {
    let m = RQ_M.lock();
    RQ_B_HAS_M.store(true, Ordering::SeqCst);
    drop(RQ_L.lock());
    drop(m);
}

fn rq_a(_: usize) {
    drop(RQ_L.lock());
}

fn rq_hog(_: usize) {
    RQ_HOG_RUNNING.store(true, Ordering::SeqCst);
    let end = now_tsc() + us_to_tsc(RQ_HOG_MAX_US);
    while !RQ_HOG_STOP.load(Ordering::SeqCst) && now_tsc() < end {
        core::hint::spin_loop();
    }
    RQ_HOG_RUNNING.store(false, Ordering::SeqCst);
}

fn rq_x(_: usize) {
    let _m = RQ_M.lock();
    RQ_X_DURING_HOG.store(u32::from(RQ_HOG_RUNNING.load(Ordering::SeqCst)), Ordering::SeqCst);
    RQ_HOG_STOP.store(true, Ordering::SeqCst);
}

/// U (20, CPU 0) holds L; B (5, CPU 1) holds M and waits for L; A (15,
/// CPU 1) waits for L; a hog (30) spins on CPU 1, so neither A nor B runs
/// there. U unlocks L: L is ownerless and A, its top waiter, is woken (it
/// cannot run yet). X (50, CPU 0) blocks on M and boosts B to 50: B is now
/// L's top waiter and must be woken, so that it preempts the hog, takes
/// L and lets go of M for X. If only A was woken, every waiter sleeps on
/// an ownerless lock and X waits for the hog (forever, but for the rescue
/// below, which lets the suite report the failure).
fn rt_requeue_wakes_new_top() -> Result<(), &'static str> {
    for f in [&RQ_U_HAS_L, &RQ_RELEASE_U, &RQ_U_RELEASED, &RQ_B_HAS_M, &RQ_HOG_STOP, &RQ_HOG_RUNNING] {
        f.store(false, Ordering::SeqCst);
    }
    RQ_X_DURING_HOG.store(2, Ordering::SeqCst);
    if boot_info::cpu_count() < 2 {
        return Ok(());
    }
    let queued = |id: TaskId| sched::task_by_slot(id.slot()).blocked_on.load(Ordering::SeqCst) != 0;
    let u = sched::spawn("rq-u", 20, 0, rq_u, 0);
    let u_ok = wait_for(|| RQ_U_HAS_L.load(Ordering::SeqCst));
    let b = sched::spawn("rq-b", 5, 1, rq_b, 0);
    let b_ok = u_ok && wait_for(|| RQ_B_HAS_M.load(Ordering::SeqCst) && queued(b));
    let a = sched::spawn("rq-a", 15, 1, rq_a, 0);
    let a_ok = b_ok && wait_for(|| queued(a));
    let hog = sched::spawn("rq-hog", 30, 1, rq_hog, 0);
    let hog_ok = a_ok && wait_for(|| RQ_HOG_RUNNING.load(Ordering::SeqCst));
    RQ_RELEASE_U.store(true, Ordering::SeqCst);
    let released = wait_for(|| RQ_U_RELEASED.load(Ordering::SeqCst));
    let x = sched::spawn("rq-x", 50, 0, rq_x, 0);
    // The verdict: X got M, or the hog gave up first.
    let _ = wait_for(|| RQ_X_DURING_HOG.load(Ordering::SeqCst) != 2 || !RQ_HOG_RUNNING.load(Ordering::SeqCst));
    RQ_HOG_STOP.store(true, Ordering::SeqCst);
    // The rescue: this runner (95) outranks every waiter, so it may take
    // the ownerless L itself; its unlock wakes the top waiter again.
    if RQ_X_DURING_HOG.load(Ordering::SeqCst) == 2 {
        drop(RQ_L.lock());
    }
    join_all(&[u, b, a, hog, x]);
    check(u_ok && b_ok && a_ok && hog_ok && released, "the scenario did not set up (a task never got there)")?;
    check(
        RQ_X_DURING_HOG.load(Ordering::SeqCst) == 1,
        "X got M only after the hog: the boosted top waiter of the ownerless lock was never woken",
    )
}

// ---- rt: adaptive spinning ------------------------------------------------

static SPIN_L: SpinLock<u32> = SpinLock::new("selftest.spin", 0);
/// The handshake of one attempt: the holder has the lock (1), the runner
/// is about to lock it (2), the runner has had it (3: the holder may take
/// it for the next attempt); 4: the test is over.
static SPIN_STEP: AtomicU32 = AtomicU32::new(0);
/// How long (µs) the holder keeps the lock once the runner is about to
/// lock it: below the spin budget, so a spinner that finds it running
/// outlasts it.
static SPIN_HOLD_US: AtomicU64 = AtomicU64::new(0);
/// Attempts before the test gives up. In any one attempt the host may
/// hold the holder's vCPU (the spinner then stops and sleeps, correctly),
/// or the runner may reach the lock only after the holder let go; each
/// attempt is a few µs when both vCPUs run, so many are cheap.
const SPIN_ATTEMPTS: u64 = 2_000;

/// Busy (not asleep: the owner must be running when the runner looks)
/// until `SPIN_STEP` is one of `steps`; false after `WAIT_US`.
fn spin_step_in(steps: &[u32]) -> bool {
    let give_up = now_tsc() + us_to_tsc(WAIT_US);
    while !steps.contains(&SPIN_STEP.load(Ordering::SeqCst)) {
        if now_tsc() >= give_up {
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// The other CPU's side: per attempt, takes the lock, says so, keeps it
/// (running) until the runner is about to lock it, a few µs more, lets go.
fn spin_holder(_: usize) {
    loop {
        let g = SPIN_L.lock();
        SPIN_STEP.store(1, Ordering::SeqCst);
        let asked = spin_step_in(&[2, 4]);
        busy_us(SPIN_HOLD_US.load(Ordering::SeqCst));
        drop(g);
        if !asked || !spin_step_in(&[3, 4]) || SPIN_STEP.load(Ordering::SeqCst) == 4 {
            return;
        }
    }
}

/// A task on the other CPU holds the lock and keeps running for a few µs
/// once this runner is about to lock it: the runner must spin (the owner
/// runs) and take the lock when it is let go, not sleep. Counted by the
/// lock's own spin statistics; tried until one attempt saw it, bounded by
/// [`SPIN_ATTEMPTS`]. With spinning off (`no-spin`) it fails.
fn rt_spin_takes() -> Result<(), &'static str> {
    if boot_info::cpu_count() < 2 {
        return Ok(()); // the owner must run on another CPU
    }
    SPIN_STEP.store(0, Ordering::SeqCst);
    SPIN_HOLD_US.store(5, Ordering::SeqCst);
    let before = rt::spin_stats();
    let holder = sched::spawn("spin-holder", 10, 1, spin_holder, 0);
    let mut took = false;
    let mut set_up = true;
    for attempt in 0..SPIN_ATTEMPTS {
        if !spin_step_in(&[1]) {
            set_up = false;
            break;
        }
        // 5..45 µs: short enough for the budget, long enough (some of the
        // time) for the runner to reach the lock's slow path first.
        SPIN_HOLD_US.store(5 + (attempt * 10) % 45, Ordering::SeqCst);
        let took_before = rt::spin_stats().0;
        SPIN_STEP.store(2, Ordering::SeqCst);
        drop(SPIN_L.lock());
        took = rt::spin_stats().0 > took_before;
        SPIN_STEP.store(if took { 4 } else { 3 }, Ordering::SeqCst);
        if took {
            break;
        }
    }
    SPIN_STEP.store(4, Ordering::SeqCst);
    join_all(&[holder]);
    check(set_up, "the holder never took the lock")?;
    if !took {
        let after = rt::spin_stats();
        println!(
            "adaptive spins in the attempts: {} took the lock, {} owner off its CPU, {} owner's vCPU preempted, {} out of \
             budget",
            after.0 - before.0,
            after.1 - before.1,
            after.2 - before.2,
            after.3 - before.3
        );
    }
    check(took, "no adaptive spin took the lock from its running owner in any attempt")
}

// ---- rt: PI chain -------------------------------------------------------

static CHAIN_L1: SpinLock<u32> = SpinLock::new("selftest.chain-l1", 0);
static CHAIN_L2: SpinLock<u32> = SpinLock::new("selftest.chain-l2", 0);
static CHAIN_C_LOCKED: AtomicBool = AtomicBool::new(false);
static CHAIN_B_LOCKED: AtomicBool = AtomicBool::new(false);
static CHAIN_RELEASE: AtomicBool = AtomicBool::new(false);
static CHAIN_A_DONE: AtomicBool = AtomicBool::new(false);
/// B's priority after releasing L2 (still holding L1, A waiting), after
/// releasing L1; C's after releasing L2.
static CHAIN_B_AFTER_L2: AtomicU32 = AtomicU32::new(0);
static CHAIN_B_AFTER_L1: AtomicU32 = AtomicU32::new(0);
static CHAIN_C_AFTER: AtomicU32 = AtomicU32::new(0);

fn chain_c(_: usize) {
    let g = CHAIN_L2.lock();
    CHAIN_C_LOCKED.store(true, Ordering::SeqCst);
    while !CHAIN_RELEASE.load(Ordering::SeqCst) {
        busy_us(200);
    }
    drop(g);
    CHAIN_C_AFTER.store(u32::from(sched::current().prio()), Ordering::SeqCst);
}

fn chain_b(_: usize) {
    let g1 = CHAIN_L1.lock();
    CHAIN_B_LOCKED.store(true, Ordering::SeqCst);
    let g2 = CHAIN_L2.lock();
    drop(g2);
    CHAIN_B_AFTER_L2.store(u32::from(sched::current().prio()), Ordering::SeqCst);
    drop(g1);
    CHAIN_B_AFTER_L1.store(u32::from(sched::current().prio()), Ordering::SeqCst);
}

fn chain_a(_: usize) {
    let _g = CHAIN_L1.lock();
    CHAIN_A_DONE.store(true, Ordering::SeqCst);
}

/// A (40) waits on L1 held by B (15), which waits on L2 held by C (10):
/// the boost must travel the chain, so C runs at A's priority.
fn rt_pi_chain() -> Result<(), &'static str> {
    for f in [&CHAIN_C_LOCKED, &CHAIN_B_LOCKED, &CHAIN_RELEASE, &CHAIN_A_DONE] {
        f.store(false, Ordering::SeqCst);
    }
    for p in [&CHAIN_B_AFTER_L2, &CHAIN_B_AFTER_L1, &CHAIN_C_AFTER] {
        p.store(0, Ordering::SeqCst);
    }
    let cpu = other_cpu();
    let c = sched::spawn("chain-c", 10, cpu, chain_c, 0);
    if !wait_for(|| CHAIN_C_LOCKED.load(Ordering::SeqCst)) {
        CHAIN_RELEASE.store(true, Ordering::SeqCst);
        join_all(&[c]);
        return Err("C never took L2");
    }
    let b = sched::spawn("chain-b", 15, cpu, chain_b, 0);
    let b_ok = wait_for(|| CHAIN_B_LOCKED.load(Ordering::SeqCst));
    let a = sched::spawn("chain-a", 40, 0, chain_a, 0);
    let c_task = sched::task_by_slot(c.slot());
    let b_task = sched::task_by_slot(b.slot());
    let boosted = wait_for(|| c_task.prio() == 40 && b_task.prio() == 40);
    let (c_prio, b_prio) = (c_task.prio(), b_task.prio());
    CHAIN_RELEASE.store(true, Ordering::SeqCst);
    join_all(&[a, b, c]);
    check(b_ok, "B never took L1")?;
    check(CHAIN_A_DONE.load(Ordering::SeqCst), "A never got L1")?;
    check(b_prio == 40, "B (owner of L1, which A waits for) was not boosted to A's priority")?;
    check(c_prio == 40 && boosted, "C (owner of L2, which B waits for) was not boosted along the chain")?;
    check(CHAIN_C_AFTER.load(Ordering::SeqCst) == 10, "C kept its boost after releasing L2")?;
    check(
        CHAIN_B_AFTER_L2.load(Ordering::SeqCst) == 40,
        "B lost the boost A gives it through L1 when it released L2 (A still waited for L1)",
    )?;
    check(CHAIN_B_AFTER_L1.load(Ordering::SeqCst) == 15, "B kept its boost after releasing L1")
}

// ---- rt: hand-off order -------------------------------------------------

static ORDER_LOCK: SpinLock<u32> = SpinLock::new("selftest.handoff", 0);
static ORDER_HELD: AtomicBool = AtomicBool::new(false);
static ORDER_RELEASE: AtomicBool = AtomicBool::new(false);
static ORDER_SEQ: AtomicU32 = AtomicU32::new(0);
static ORDER_OF: [AtomicU32; 2] = [AtomicU32::new(0), AtomicU32::new(0)];

fn order_holder(_: usize) {
    let g = ORDER_LOCK.lock();
    ORDER_HELD.store(true, Ordering::SeqCst);
    while !ORDER_RELEASE.load(Ordering::SeqCst) {
        busy_us(200);
    }
    drop(g);
}

fn order_waiter(which: usize) {
    let _g = ORDER_LOCK.lock();
    ORDER_OF[which].store(ORDER_SEQ.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
}

/// The low waiter queues first, the high one second: the unlock must hand
/// the lock to the high one (no FIFO, no stealing by the earlier arrival).
fn rt_handoff_order() -> Result<(), &'static str> {
    ORDER_HELD.store(false, Ordering::SeqCst);
    ORDER_RELEASE.store(false, Ordering::SeqCst);
    ORDER_SEQ.store(0, Ordering::SeqCst);
    for o in &ORDER_OF {
        o.store(0, Ordering::SeqCst);
    }
    let holder = sched::spawn("handoff-holder", 5, other_cpu(), order_holder, 0);
    if !wait_for(|| ORDER_HELD.load(Ordering::SeqCst)) {
        ORDER_RELEASE.store(true, Ordering::SeqCst);
        join_all(&[holder]);
        return Err("the holder never took the lock");
    }
    let low = sched::spawn("handoff-low", 20, 0, order_waiter, 0);
    let low_queued = wait_for(|| sched::task_by_slot(low.slot()).blocked_on.load(Ordering::SeqCst) != 0);
    let high = sched::spawn("handoff-high", 30, 0, order_waiter, 1);
    let high_queued = wait_for(|| sched::task_by_slot(high.slot()).blocked_on.load(Ordering::SeqCst) != 0);
    ORDER_RELEASE.store(true, Ordering::SeqCst);
    join_all(&[holder, low, high]);
    check(low_queued && high_queued, "the waiters never queued")?;
    check(ORDER_OF[1].load(Ordering::SeqCst) == 1, "the lock went to the earlier, lower-priority waiter first")
}

// ---- registry -----------------------------------------------------------

fn registry_idle() -> Result<(), &'static str> {
    let cores =
        [PAIR.core(), TRY.core(), HOLD.core(), PI_LOCK_L.core(), CHAIN_L1.core(), CHAIN_L2.core(), ORDER_LOCK.core()];
    check(cores.iter().all(|c| c.is_free()), "a test lock is not free (owner or waiters left behind)")?;
    let reg = registry::get();
    check(reg.held() == 0, "the registry counts held switchable locks with every test idle")?;
    check(reg.waiters() == 0, "the registry counts waiters with every test idle")?;
    check(reg.mode() == boot_info::initial_mode(), "the registry's mode differs from the boot mode")
}

// ---- deadlock demo (guest argument `deadlock`, rt mode) ------------------

static DL_A: SpinLock<u32> = SpinLock::new("deadlock-lock-1", 0);
static DL_B: SpinLock<u32> = SpinLock::new("deadlock-lock-2", 0);
static DL_STEP: AtomicU32 = AtomicU32::new(0);

fn deadlock_task(which: usize) {
    let (first, second) = if which == 0 { (&DL_A, &DL_B) } else { (&DL_B, &DL_A) };
    let _g1 = first.lock();
    DL_STEP.fetch_add(1, Ordering::SeqCst);
    while DL_STEP.load(Ordering::SeqCst) < 2 {
        sleep_us(1_000);
    }
    let _g2 = second.lock();
    println!("deadlock demo: task {which} got both locks (no deadlock?)");
}

/// Two tasks take two locks in opposite orders: the rtmutex chain walk
/// must detect the cycle and panic naming it. In mainline mode the same
/// code would spin forever, so the demo refuses to run there.
pub fn deadlock_demo() {
    if boot_info::initial_mode().locks != LockMode::Rt {
        println!("deadlock demo needs --mode rt (mainline spinlocks have no deadlock detection)");
        hypercall::exit(1);
    }
    let cpu = other_cpu();
    sched::spawn("deadlock-a", 20, 0, deadlock_task, 0);
    sched::spawn("deadlock-b", 20, cpu, deadlock_task, 1);
}

/// `no-pi` guest argument: rtmutexes without priority inheritance.
pub fn disable_pi() {
    println!("priority inheritance DISABLED (guest argument no-pi)");
    rt::disable_pi();
}
