//! The device interrupt (`vector::DEVICE`): the VMM raises it on every CPU
//! at a set rate (`--irq-load RATE[,WORK_US]`, through one irqfd per
//! CPU), and its handler does `WORK_US` of work. Where that work runs is
//! the `irq` dimension of the kernel's profile, selected by one patchable
//! call in the interrupt path (`crate::hv::site`):
//!
//! - `hard`: the handler works in hard-IRQ context, masked, before its
//!   EOI; nothing else runs on the CPU meanwhile, whatever its priority;
//! - `threaded`: the hard part only counts the interrupt and wakes this
//!   CPU's handler thread (`irq/dev`, priority `irq_prio`, below the
//!   measurement threads by default), which does the work as a task: a
//!   higher-priority task runs first, and under full preemption takes the
//!   CPU from it.
//!
//! Nothing is lost across a switch: an interrupt counted for the thread is
//! worked off by the thread in either mode (the thread drains its count
//! after a switch to `hard` too). The counts go to the telemetry header
//! per CPU: received, worked in hard-IRQ context, worked by the thread.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use switcher::abi::MAX_CPUS;
use switcher::abi::sites::SiteOp;
use switcher::profile::IrqMode;

use crate::arch::percpu;
use crate::hv::site::{switch_call0, switch_impls};
use crate::sched::{self, now_tsc, us_to_tsc};
use crate::workload::telemetry;

/// TSC ticks of work per interrupt.
static WORK_TICKS: AtomicU64 = AtomicU64::new(0);
/// Interrupts counted for each CPU's handler thread, not yet worked off.
static PENDING: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Each CPU's handler thread waits here.
static QUEUES: [sched::WaitQueue; MAX_CPUS] = [const { sched::WaitQueue::new("irq/dev") }; MAX_CPUS];
/// The handler threads leave once their count is worked off.
static STOP: AtomicBool = AtomicBool::new(false);
/// Per CPU: interrupts taken, worked in hard-IRQ context, worked by the
/// thread (since boot; published whole to the telemetry, so that those
/// taken before the telemetry region was up count too).
static RECEIVED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static HARD: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static THREADED: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

fn count(counter: &[AtomicU64; MAX_CPUS], what: telemetry::IrqCount, cpu: usize) {
    let n = counter[cpu].fetch_add(1, Ordering::Relaxed) + 1;
    telemetry::publish_irq(cpu, what, n);
}

/// Sets the work each interrupt costs (before the threads start).
pub fn configure(work_us: u32) {
    WORK_TICKS.store(us_to_tsc(u64::from(work_us)), Ordering::Relaxed);
}

/// The interrupt (hard-IRQ context, masked; the caller sends the EOI).
pub fn on_interrupt() {
    count(&RECEIVED, telemetry::IrqCount::Received, percpu::cpu_id() as usize);
    switch_call0!(SiteOp::IrqDispatch, hard);
}

/// `hard`: the handler's work, here, masked.
extern "C" fn hard() {
    sched::park::point(sched::park::IN_IRQ_DISPATCH);
    work();
    count(&HARD, telemetry::IrqCount::Hard, percpu::cpu_id() as usize);
}

/// `threaded`: count it for this CPU's thread and wake it.
extern "C" fn threaded() {
    sched::park::point(sched::park::IN_IRQ_DISPATCH);
    let cpu = percpu::cpu_id() as usize;
    PENDING[cpu].fetch_add(1, Ordering::Release);
    QUEUES[cpu].wake_one();
}

switch_impls!((SiteOp::IrqDispatch, IrqMode::Hard, hard), (SiteOp::IrqDispatch, IrqMode::Threaded, threaded));

fn work() {
    let end = now_tsc().saturating_add(WORK_TICKS.load(Ordering::Relaxed));
    while now_tsc() < end {
        core::hint::spin_loop();
    }
}

/// The handler thread of CPU `cpu` (spawned there by the workload): works
/// off its count; its safe point is the wait (freezable).
pub fn thread(cpu: usize) {
    let pending = &PENDING[cpu];
    loop {
        QUEUES[cpu].wait_until(|| pending.load(Ordering::Acquire) != 0 || STOP.load(Ordering::Acquire));
        let n = pending.swap(0, Ordering::AcqRel);
        if n == 0 && STOP.load(Ordering::Acquire) {
            return;
        }
        for _ in 0..n {
            work();
            count(&THREADED, telemetry::IrqCount::Threaded, cpu);
        }
    }
}

/// Makes the handler threads leave (shutdown).
pub fn stop() {
    STOP.store(true, Ordering::Release);
    for q in &QUEUES {
        q.wake_all();
    }
}
