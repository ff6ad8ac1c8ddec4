//! The measurement threads: per CPU, one thread at [`MEASURE_PRIO`]
//! pinned there, cyclictest/timerlat style (docs/latency.md).
//!
//! ```text
//! next = start + interval
//! loop: probe.watch(next); sleep_until(next)
//!       now = rdtsc
//!       thread latency = now - next             (deadline -> thread runs)
//!       IRQ latency    = irq entry TSC - next   (deadline -> timer handler,
//!                        from this CPU's TimerProbe; absent if no IRQ served it)
//!       k = (now - next) / interval             (periods that passed unserved)
//!       missed += k; next += (k + 1) * interval (absolute: no drift; a miss is
//!                                                counted, never hidden)
//!       record under the CPU record's seqlock (telemetry::record_sample)
//! ```
//!
//! Invariants: the thread is the only writer of its CPU's record; deadlines
//! are absolute and always in the future when it sleeps (so every
//! activation but a late one is served by a timer IRQ); it stops at the
//! first wake after [`super::stopping`] is set (within one period).
//! The hot path after a wake is two rdtsc, a division for `k`, and the
//! record update: about a hundred instructions.

use core::sync::atomic::{AtomicU64, Ordering};

use super::telemetry::{self, Sample};
use crate::sched::{self, now_tsc, sleep_until, us_to_tsc};
use switcher::telemetry::exit_cause;

/// The default priority: the highest in the guest, so that nothing (the
/// switch's control thread included) keeps a measurement thread from its
/// CPU. `--priority` may set it lower.
pub const MEASURE_PRIO: u8 = sched::MAX_PRIO;

/// The period in TSC ticks, TSC kHz and the `--stop-above` threshold in ns
/// (0: off), set before the threads start.
static INTERVAL_TSC: AtomicU64 = AtomicU64::new(0);
static TSC_KHZ: AtomicU64 = AtomicU64::new(1);
static STOP_ABOVE_NS: AtomicU64 = AtomicU64::new(0);

/// TSC ticks to nanoseconds, integers only (exact below ~2^44 ticks,
/// hours at any real TSC rate; saturates beyond).
#[inline]
fn tsc_to_ns(ticks: u64, khz: u64) -> u64 {
    ticks.saturating_mul(1_000_000) / khz
}

/// Spawns one measurement thread on each CPU of `p.measure_cpus` (below
/// `cpus`); returns their ids.
pub fn start(p: &super::Params, cpus: u32, ids: &mut [Option<sched::TaskId>]) {
    let interval = us_to_tsc(u64::from(p.interval_us)).max(1);
    INTERVAL_TSC.store(interval, Ordering::Relaxed);
    telemetry::set_interval_tsc(interval);
    TSC_KHZ.store(crate::hv::boot_info::tsc_khz().max(1), Ordering::Relaxed);
    STOP_ABOVE_NS.store(u64::from(p.stop_above_us) * 1000, Ordering::Relaxed);
    for cpu in 0..cpus.min(64) {
        if p.measure_cpus & (1 << cpu) != 0 {
            // Its first period starts now, whether or not the thread gets
            // to run: a CPU that never runs it shows its periods as overdue.
            telemetry::set_next_deadline(cpu as usize, now_tsc() + interval);
            ids[cpu as usize] = Some(sched::spawn("measure", p.measure_prio, cpu, measure_thread, cpu as usize));
        }
    }
}

fn measure_thread(cpu: usize) {
    // Never takes a switchable lock: keeps measuring through a switch.
    sched::freezer::exempt_current();
    let interval = INTERVAL_TSC.load(Ordering::Relaxed);
    let khz = TSC_KHZ.load(Ordering::Relaxed);
    let stop_above = STOP_ABOVE_NS.load(Ordering::Relaxed);
    let probe = sched::this_cpu_probe();
    // The first deadline was set when it was spawned: periods that pass
    // before it first runs are missed, not skipped silently.
    let mut next = match telemetry::next_deadline(cpu) {
        0 => now_tsc() + interval,
        d => d,
    };
    let mut cycle = 0u64;
    let mut steal_before = crate::arch::steal::steal_ns(cpu);
    let mut exits_before = crate::arch::percpu::exits_now();
    if super::stopping() {
        // Stopped before it ever ran: every period since its start is overdue.
        telemetry::record_stalled(cpu, next);
    }
    while !super::stopping() {
        let mut sample = activation(probe, next, interval, khz);
        let steal_now = crate::arch::steal::steal_ns(cpu);
        sample.steal_ns = steal_now.saturating_sub(steal_before);
        steal_before = steal_now;
        sample.cycle = cycle;
        cycle += 1;
        if sample.slept {
            // An activation that did not sleep is filed as periods only:
            // its exits go with the next one recorded as a sample.
            let exits_now = crate::arch::percpu::exits_now();
            for (c, e) in sample.exits.iter_mut().enumerate() {
                *e = exits_now[c].wrapping_sub(exits_before[c]);
            }
            exits_before = exits_now;
        }
        next += (sample.missed + 1) * interval;
        telemetry::record_sample(cpu, &sample, next);
        if stop_above != 0 && sample.thread_ns > stop_above && telemetry::write_stop(cpu, &sample) {
            crate::hv::hypercall::stop_above(cpu as u32);
        }
    }
    telemetry::set_next_deadline(cpu, 0);
    probe.watch(0);
}

/// One activation: sleeps until `next` (absolute TSC) and measures how
/// late the timer IRQ and this thread came. The whole measurement path
/// (timer armed by one MMIO write, the IRQ at CPL3, the wake-up, the
/// context switch, this code) enters the ring-0 shim nowhere: a self-test
/// counts it.
pub fn activation(probe: &sched::TimerProbe, next: u64, interval: u64, khz: u64) -> Sample {
    probe.watch(next);
    let slept = sleep_until(next);
    let now = now_tsc();
    let exits_now = crate::arch::percpu::exits_now();
    let capture = probe.take(next);
    let late = now.saturating_sub(next);
    let missed = late / interval.max(1);
    let thread_ns = tsc_to_ns(late, khz);
    let mut sample = Sample {
        deadline_tsc: next,
        slept,
        thread_ns,
        irq_ns: None,
        missed,
        locks_held: 0,
        preempt_count: 0,
        task_name: "",
        task_addr: 0,
        deferred: false,
        steal_ns: 0,
        cycle: 0,
        exits: [0; exit_cause::COUNT],
        path_exits: [0; exit_cause::COUNT],
    };
    if let Some(c) = capture {
        sample.irq_ns = Some(tsc_to_ns(c.entry_tsc.saturating_sub(next), khz));
        sample.locks_held = c.locks_held;
        sample.preempt_count = c.preempt_count;
        sample.deferred = c.deferred;
        for (i, p) in sample.path_exits.iter_mut().enumerate() {
            *p = exits_now[i].wrapping_sub(c.exits_at_entry[i]);
        }
        if !c.task.is_null() {
            sample.task_addr = c.task as u64;
            sample.task_name = c.task_name();
        }
    }
    sample
}
