//! One probe thread (`hnoise<N>`): pinned to host CPU N, at SCHED_FIFO
//! [`PRIORITY`] where the host allows it, it sleeps to an absolute
//! CLOCK_MONOTONIC deadline every period and records how late each
//! wake-up came ([`CpuNoise::record`]), until told to stop. Its setup
//! calls (affinity, scheduling policy, the signal mask) come before its
//! seccomp filter; from then on it only sleeps, reads clocks and takes
//! its record's lock (`seccomp::Thread::HostNoise`).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::clock::rdtsc;
use super::stalls::CpuNoise;
use crate::seccomp::{Sandbox, Thread};

/// The probe's real-time priority: the lowest SCHED_FIFO level, above
/// every normal thread (the vCPUs') and below any real-time work the host
/// runs.
pub const PRIORITY: i32 = 1;

/// What the thread got of its setup (read by the report).
#[derive(Debug, Default)]
pub struct ThreadState {
    pub pinned: AtomicBool,
    /// SCHED_FIFO granted.
    pub rt: AtomicBool,
    /// [`Phase`] as a number.
    pub phase: AtomicU8,
    /// The CPU time the thread used (user and system), ns, once it ended.
    pub cpu_ns: AtomicU64,
}

/// Where the thread is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Starting = 0,
    Running = 1,
    /// Its filter could not be installed: it ended without probing.
    Failed = 2,
    Ended = 3,
}

impl Phase {
    pub fn of(v: u8) -> Self {
        match v {
            1 => Phase::Running,
            2 => Phase::Failed,
            3 => Phase::Ended,
            _ => Phase::Starting,
        }
    }
}

/// What one thread works with.
pub struct Job {
    pub host_cpu: u32,
    pub period_ns: u64,
    pub record: Arc<Mutex<CpuNoise>>,
    pub state: Arc<ThreadState>,
    pub stop: Arc<AtomicBool>,
    pub sandbox: Arc<Sandbox>,
}

/// CLOCK_MONOTONIC in ns.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime(2) writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

/// Sleeps until CLOCK_MONOTONIC reaches `ns` (again after a signal).
fn sleep_until(ns: u64) {
    let ts = libc::timespec { tv_sec: (ns / 1_000_000_000) as libc::time_t, tv_nsec: (ns % 1_000_000_000) as _ };
    loop {
        // SAFETY: clock_nanosleep(2) reads one timespec we own; no remainder
        // is asked for (absolute time).
        let rc =
            unsafe { libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut()) };
        if rc != libc::EINTR {
            return;
        }
    }
}

fn pin(cpu: u32) -> bool {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it;
    // sched_setaffinity(2) reads it (0: the calling thread).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

fn real_time() -> bool {
    crate::realtime::fifo(PRIORITY).is_ok()
}

/// The thread's body.
pub fn run(job: Job) {
    crate::vstate::vcpu::block_process_signals();
    job.state.pinned.store(pin(job.host_cpu), Ordering::Release);
    job.state.rt.store(real_time(), Ordering::Release);
    if let Err(e) = job.sandbox.enter(Thread::HostNoise(job.host_cpu)) {
        log::warn!("host-noise probe on host cpu {}: {e}; that CPU goes unprobed", job.host_cpu);
        job.state.phase.store(Phase::Failed as u8, Ordering::Release);
        return;
    }
    job.state.phase.store(Phase::Running as u8, Ordering::Release);
    let period = job.period_ns.max(1);
    let mut next = mono_ns() + period;
    while !job.stop.load(Ordering::Acquire) {
        sleep_until(next);
        let tick = rdtsc();
        let now = mono_ns();
        let late = now.saturating_sub(next);
        // The next deadline still ahead; the ones passed are skipped.
        let skipped = late / period;
        next += (skipped + 1) * period;
        job.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).record(tick, late, skipped);
    }
    if let Some(t) = crate::vstate::vcpu::thread_cpu_time() {
        job.state.cpu_ns.store(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX), Ordering::Release);
    }
    job.state.phase.store(Phase::Ended as u8, Ordering::Release);
}
