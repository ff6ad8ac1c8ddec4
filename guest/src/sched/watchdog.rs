//! The lockup watchdog (like Linux's softlockup detector): one thread per
//! CPU, just below the measurement threads, bumps its CPU's heartbeat
//! (`switcher::abi::CpuHeartbeat` in the shared page) every
//! `HEARTBEAT_PERIOD_MS`. If it cannot run — the CPU spins with
//! preemption off, or a higher-priority task hogs it — the beats stop:
//! the CPU's timer interrupt notices (cheaply: one compare per interrupt;
//! the timer stays armed for the check, `with_check_deadline`),
//! records what the CPU is running and reports it once; the VMM, watching
//! the beats, reports it from its side too.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use switcher::abi::{CpuHeartbeat, HEARTBEAT_ADDR, HEARTBEAT_PERIOD_MS, MAX_CPUS, STALL_REPORT_MS};

use crate::sched;

/// Priority of the watchdog threads (measurement 98, control 99).
const WATCHDOG_PRIO: u8 = 97;

/// Per CPU: TSC of the last beat (0: not started), and whether the current
/// stall was reported.
static LAST_BEAT: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static REPORTED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// Per CPU: every vCPU's host steal time (ns) at its last beat, so that a
/// stall report can say how much of its window the host took, and from
/// which vCPU (this one, or the one it waits for).
static STEAL_AT_BEAT: [[AtomicU64; MAX_CPUS]; MAX_CPUS] = [const { [const { AtomicU64::new(0) }; MAX_CPUS] }; MAX_CPUS];

fn beat_slot(cpu: usize) -> *mut CpuHeartbeat {
    (HEARTBEAT_ADDR as usize + cpu * core::mem::size_of::<CpuHeartbeat>()) as *mut CpuHeartbeat
}

/// Starts one watchdog thread per CPU.
pub fn start(cpus: u32) {
    for cpu in 0..cpus.min(MAX_CPUS as u32) {
        sched::spawn("watchdog", WATCHDOG_PRIO, cpu, watchdog_thread, cpu as usize);
    }
}

fn watchdog_thread(cpu: usize) {
    sched::freezer::exempt_current();
    let period = sched::us_to_tsc(HEARTBEAT_PERIOD_MS * 1000);
    let mut beats = 0u64;
    loop {
        let now = sched::now_tsc();
        beats += 1;
        let slot = beat_slot(cpu);
        // SAFETY: the heartbeat page is ABI memory, identity-mapped RW;
        // this CPU's entry has this thread as its only writer besides this
        // CPU's timer interrupt, which only writes the stall fields.
        unsafe {
            core::ptr::addr_of_mut!((*slot).last_beat_tsc).write_volatile(now);
            core::ptr::addr_of_mut!((*slot).stalled).write_volatile(0);
            core::ptr::addr_of_mut!((*slot).beats).write_volatile(beats);
        }
        for (k, at) in STEAL_AT_BEAT[cpu].iter().enumerate().take(crate::hv::boot_info::cpu_count() as usize) {
            at.store(crate::arch::steal::steal_ns(k), Ordering::Relaxed);
        }
        LAST_BEAT[cpu].store(now, Ordering::Relaxed);
        if REPORTED[cpu].swap(false, Ordering::Relaxed) {
            crate::println!("watchdog: cpu {cpu} makes progress again");
        }
        sched::sleep_until(now + period);
    }
}

/// The earlier of `next` (0: none) and the moment this CPU's stall check is
/// due (when its watchdog runs and no stall was reported yet), so that the
/// check fires even when the stalled CPU has no other timer armed.
#[inline]
pub fn with_check_deadline(cpu: usize, next: u64) -> u64 {
    let last = LAST_BEAT[cpu].load(Ordering::Relaxed);
    if last == 0 || REPORTED[cpu].load(Ordering::Relaxed) {
        return next;
    }
    let check = last + sched::us_to_tsc(STALL_REPORT_MS * 1000);
    if next == 0 { check } else { next.min(check) }
}

/// From this CPU's timer interrupt: a compare, and when the beats are
/// overdue, the record and one report.
#[inline]
pub fn on_timer_interrupt(cpu: usize, now: u64) {
    let last = LAST_BEAT[cpu].load(Ordering::Relaxed);
    if last == 0 || now.saturating_sub(last) < sched::us_to_tsc(STALL_REPORT_MS * 1000) {
        return;
    }
    if REPORTED[cpu].swap(true, Ordering::Relaxed) {
        return;
    }
    let t = sched::current();
    let locks = t.switch_locks_held.load(Ordering::Relaxed);
    let preempt = sched::preempt_count();
    let mut name = [0u8; 16];
    for (d, s) in name.iter_mut().zip(t.name().bytes()) {
        *d = s;
    }
    let window_us = sched::tsc_to_us(now - last);
    let (steal_cpu, steal_ns) = (0..crate::hv::boot_info::cpu_count() as usize)
        .map(|k| (k, crate::arch::steal::steal_ns(k).saturating_sub(STEAL_AT_BEAT[cpu][k].load(Ordering::Relaxed))))
        .max_by_key(|&(_, d)| d)
        .unwrap_or((cpu, 0));
    let steal_us = steal_ns / 1000;
    let slot = beat_slot(cpu);
    // SAFETY: as in `watchdog_thread`; the stall fields are written only
    // here, by this CPU, with interrupts off.
    unsafe {
        core::ptr::addr_of_mut!((*slot).stall_window_us).write_volatile(window_us.min(u64::from(u32::MAX)) as u32);
        core::ptr::addr_of_mut!((*slot).stall_steal_us).write_volatile(steal_us.min(u64::from(u32::MAX)) as u32);
        core::ptr::addr_of_mut!((*slot).stall_steal_cpu).write_volatile(steal_cpu as u32);
        core::ptr::addr_of_mut!((*slot).task_name).write_volatile(name);
        core::ptr::addr_of_mut!((*slot).preempt_count).write_volatile(preempt);
        core::ptr::addr_of_mut!((*slot).locks_held).write_volatile(locks);
        core::ptr::addr_of_mut!((*slot).stalled).write_volatile(1);
        let stalls = core::ptr::addr_of!((*slot).stalls).read_volatile();
        core::ptr::addr_of_mut!((*slot).stalls).write_volatile(stalls.wrapping_add(1));
    }
    crate::println!(
        "watchdog: cpu {cpu} stuck for {} ms in task '{}' (preempt count {preempt}, {locks} switchable lock(s) held; \
         host steal took {} ms of vCPU {steal_cpu} meanwhile)",
        window_us / 1000,
        t.name(),
        steal_us / 1000
    );
}
