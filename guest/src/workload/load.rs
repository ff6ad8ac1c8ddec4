//! The load beside the measurement threads (`--load`), and its final
//! consistency check.
//!
//! - `locks`: `load_threads` threads per CPU at priorities
//!   [`LOAD_BASE_PRIO`], +1, ... Each round a thread takes one of
//!   [`LOCK_COUNT`] shared `SpinLock`s (picked by a per-thread xorshift, so
//!   threads on different CPUs meet on the same lock at random), checks the
//!   protected pair (`a == b`), sets `a += 1`, stays busy for `cs_us`
//!   (TSC-timed), checks `a == b + 1`, sets `b += 1` and `total += 1`,
//!   unlocks, and adds one to its own tally.
//! - `cpu`: the same rounds and busy time without any lock (the floor: what
//!   the CPU load alone costs); a shared atomic counts the rounds.
//! - `none`: no threads.
//!
//! Between rounds a thread sleeps `cs_us / 4` (at least 1 µs). With two or
//! more threads per CPU that keeps every CPU in a critical section nearly
//! all the time (one thread's gap is another's section; the CPU demand is
//! 1.6 sections per 1.25 section-times with two threads) while every
//! thread still gets its turns: a sleeping gap, not a yield, because the
//! threads' priorities differ and a yield only passes the CPU to an equal.
//!
//! Invariants (checked, never assumed):
//! - inside a critical section the pair is consistent; a violation is
//!   counted (telemetry `load_violations`) and reported once at once, and
//!   makes the final check fail;
//! - at the end, with every load thread stopped: the sum of the threads'
//!   tallies equals the sum of the lock-protected totals (locks) or of the
//!   shared atomic count (cpu), and every pair is equal.
//!
//! The pair and totals are atomics accessed with plain Relaxed loads and
//! stores (no read-modify-write): only the lock makes the updates safe, so
//! a broken lock loses updates and the check sees it; atomics only keep
//! the compiler from merging the stores across the busy wait.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use switcher::telemetry::{LoadKind, final_check};

use super::telemetry;
use crate::println;
use crate::sched::{self, MAX_TASKS, TaskId, now_tsc, sleep_us, us_to_tsc};
use crate::sync::spinlock::SpinLock;

/// Priority of each CPU's first load thread (the next ones get +1, ...).
pub const LOAD_BASE_PRIO: u8 = 10;
/// Shared locks the load threads take.
pub const LOCK_COUNT: usize = 4;

/// The data one lock protects.
struct Protected {
    a: AtomicU64,
    b: AtomicU64,
    total: AtomicU64,
}

impl Protected {
    const fn new() -> Self {
        Self { a: AtomicU64::new(0), b: AtomicU64::new(0), total: AtomicU64::new(0) }
    }
}

static LOCKS: [SpinLock<Protected>; LOCK_COUNT] = [
    SpinLock::new("load.0", Protected::new()),
    SpinLock::new("load.1", Protected::new()),
    SpinLock::new("load.2", Protected::new()),
    SpinLock::new("load.3", Protected::new()),
];

/// `cpu` mode: rounds done, all threads.
static CPU_ROUNDS: AtomicU64 = AtomicU64::new(0);
/// Each load thread's own count of rounds (index = thread index); written
/// only by that thread.
static TALLIES: [AtomicU64; MAX_TASKS] = [const { AtomicU64::new(0) }; MAX_TASKS];
/// Violations seen inside critical sections (also in the telemetry).
static VIOLATIONS: AtomicU64 = AtomicU64::new(0);
static VIOLATION_REPORTED: AtomicBool = AtomicBool::new(false);

/// The load's settings (set before the threads start).
static KIND: AtomicU32 = AtomicU32::new(LoadKind::None as u32);
static CS_TICKS: AtomicU64 = AtomicU64::new(0);
static GAP_US: AtomicU64 = AtomicU64::new(1);

/// Spawns `threads_per_cpu` load threads of `kind` on each CPU of the
/// mask `cpus` (bit n = CPU n; stopping early once [`super::stopping`] is
/// set), recording their ids in `ids`; returns how many were spawned.
pub fn start(kind: LoadKind, cs_us: u32, threads_per_cpu: u32, cpus: u64, ids: &mut [Option<TaskId>]) -> usize {
    if kind == LoadKind::None {
        return 0;
    }
    KIND.store(kind as u32, Ordering::Relaxed);
    CS_TICKS.store(us_to_tsc(u64::from(cs_us)), Ordering::Relaxed);
    GAP_US.store(u64::from(cs_us / 4).max(1), Ordering::Relaxed);
    let mut n = 0;
    for k in 0..threads_per_cpu {
        for cpu in (0..64u32).filter(|c| cpus & (1 << c) != 0) {
            if super::stopping() || n >= ids.len() {
                return n;
            }
            let prio = LOAD_BASE_PRIO.saturating_add(k as u8);
            ids[n] = Some(sched::spawn("load", prio, cpu, load_thread, n));
            n += 1;
        }
    }
    n
}

/// How often a busy loop passes a `cond_resched` point (a long kernel
/// loop's explicit preemption point; see `sched::preempt_sites`).
const RESCHED_EVERY_US: u64 = 50;

/// Busy (on this CPU, preemptible or not as the caller's context is) for
/// `ticks` TSC ticks, with a `cond_resched` point every
/// [`RESCHED_EVERY_US`]: under preemption models none and voluntary a
/// woken task takes the CPU there if the section is preemptible (an
/// rtmutex's; never a preempt-disabled mainline one).
fn busy(ticks: u64) {
    let start = now_tsc();
    let end = start.saturating_add(ticks);
    let every = us_to_tsc(RESCHED_EVERY_US).max(1);
    let mut next = start.saturating_add(every);
    loop {
        let now = now_tsc();
        if now >= end {
            break;
        }
        if now >= next {
            sched::cond_resched();
            next = now.saturating_add(every);
        }
        core::hint::spin_loop();
    }
}

fn violation(lock: usize, a: u64, b: u64) {
    VIOLATIONS.fetch_add(1, Ordering::Relaxed);
    telemetry::add_load_violation();
    if !VIOLATION_REPORTED.swap(true, Ordering::Relaxed) {
        println!("load: INVARIANT VIOLATED under lock load.{lock}: a {a}, b {b} (the lock let two holders in)");
    }
}

fn load_thread(index: usize) {
    let kind = LoadKind::from_u32(KIND.load(Ordering::Relaxed)).unwrap_or(LoadKind::None);
    let cs = CS_TICKS.load(Ordering::Relaxed);
    let gap_us = GAP_US.load(Ordering::Relaxed);
    // xorshift32, seeded per thread (never 0).
    let mut rng = (index as u32).wrapping_mul(0x9e37_79b9) | 1;
    let tally = &TALLIES[index];
    while !super::stopping() {
        // The loop top is this thread's safe point: no lock held.
        sched::freezer::try_to_freeze();
        match kind {
            LoadKind::Locks => {
                rng ^= rng << 13;
                rng ^= rng >> 17;
                rng ^= rng << 5;
                let which = rng as usize % LOCK_COUNT;
                let g = LOCKS[which].lock();
                let (a, b) = (g.a.load(Ordering::Relaxed), g.b.load(Ordering::Relaxed));
                g.a.store(a + 1, Ordering::Relaxed);
                busy(cs);
                let (a2, b2) = (g.a.load(Ordering::Relaxed), g.b.load(Ordering::Relaxed));
                g.b.store(b2 + 1, Ordering::Relaxed);
                g.total.store(g.total.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
                drop(g);
                if a != b || a2 != a + 1 || b2 != b {
                    violation(which, a2, b2);
                }
            }
            LoadKind::Cpu => {
                busy(cs);
                CPU_ROUNDS.fetch_add(1, Ordering::Relaxed);
            }
            LoadKind::None => return,
        }
        tally.store(tally.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        telemetry::add_load_op();
        sleep_us(gap_us);
    }
}

/// The final check, once every load thread has stopped (`threads` of
/// them were spawned): compares the tallies with the protected totals,
/// publishes the result in the telemetry header and prints one line.
/// Returns whether it passed.
pub fn final_check(kind: LoadKind, threads: usize) -> bool {
    let tally: u64 = TALLIES[..threads].iter().map(|t| t.load(Ordering::Relaxed)).sum();
    let mut pairs_ok = true;
    let total = match kind {
        LoadKind::Locks => LOCKS
            .iter()
            .map(|l| {
                let g = l.lock();
                pairs_ok &= g.a.load(Ordering::Relaxed) == g.b.load(Ordering::Relaxed);
                g.total.load(Ordering::Relaxed)
            })
            .sum(),
        LoadKind::Cpu => CPU_ROUNDS.load(Ordering::Relaxed),
        LoadKind::None => 0,
    };
    let violations = VIOLATIONS.load(Ordering::Relaxed);
    let ok = tally == total && pairs_ok && violations == 0;
    telemetry::set_final_check(tally, total, if ok { final_check::OK } else { final_check::VIOLATED });
    if ok {
        println!("load check: ok ({tally} operations)");
    } else {
        println!(
            "load check: VIOLATED (thread tallies {tally}, {} total {total}, {violations} violations inside critical \
             sections{})",
            if kind == LoadKind::Locks { "lock-protected" } else { "shared" },
            if pairs_ok { "" } else { ", a protected pair is unequal" }
        );
    }
    ok
}

/// When the load threads did not all stop: no consistent tally exists,
/// but violations seen so far are still reported (never silent).
pub fn report_unchecked(running: usize) {
    let violations = VIOLATIONS.load(Ordering::Relaxed);
    if violations != 0 {
        telemetry::set_final_check(0, 0, final_check::VIOLATED);
        println!(
            "load check: VIOLATED ({violations} violations inside critical sections; {running} load threads still running)"
        );
    } else {
        println!("load check: not run ({running} load threads did not stop in time)");
    }
}
