//! The latency workload (docs/latency.md): a
//! cyclictest/timerlat-like measurement thread per CPU (`measure`), the
//! load beside it (`load`), its parameters (`params`), the telemetry
//! region the VMM reads (`telemetry`), and the device interrupt of
//! `--irq-load` with its handler threads (`irqdev`).
//!
//! Life cycle (CPU 0):
//! ```text
//! boot, before HC_READY:  init(calibration)  resolve params, print them,
//!                                            validate + initialise telemetry
//! after the ready action: start()            spawn the 'workload' starter
//! starter (prio 97):      spawn measurement threads, then load threads;
//!                         running = 1; exit
//! control thread, on the VMM's shutdown request:
//!                         shutdown()         stop flag; wait (bounded) for
//!                         every workload thread to exit; final load
//!                         check; then the exit hypercall
//! ```
//! The starter is a thread, not the boot context, because the boot context
//! is CPU 0's idle task: once CPU 0's load threads run, it would never run
//! again to finish spawning.
//!
//! Invariants: the workload state ([`STATE`]) is written by the starter
//! and read by the control thread after the starter is done (or after the
//! stop flag stopped it); every wait in `shutdown` is bounded by
//! [`STOP_TIMEOUT_US`] so the guest exits well inside the VMM's grace
//! period, also in mainline mode under lock load.

pub mod irqdev;
mod load;
pub mod locktest;
mod measure;
mod params;
pub mod telemetry;

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use switcher::abi::MAX_CPUS;
use switcher::profile::Profile;
use switcher::telemetry::{EpochKind, LoadKind};

use crate::hv::boot_info;
use crate::println;
use crate::sched::raw_lock::RawSpinLock;
use crate::sched::{self, MAX_TASKS, TaskId, TaskState, now_tsc, sleep_us, us_to_tsc};
pub use measure::activation;
pub use params::Params;
pub use telemetry::last_deadline;

/// Priority of the one-shot starter thread (below the measurement threads).
const STARTER_PRIO: u8 = measure::MEASURE_PRIO - 2;
/// Bound on waiting for the workload threads to stop at shutdown.
const STOP_TIMEOUT_US: u64 = 3_000_000;
/// Poll period while waiting for them.
const STOP_POLL_US: u64 = 1_000;

/// Set at shutdown: every workload thread exits at its next loop top.
static STOP: AtomicBool = AtomicBool::new(false);

/// Whether the workload is being stopped.
#[inline]
pub fn stopping() -> bool {
    STOP.load(Ordering::Acquire)
}

/// The workload as set up.
struct State {
    params: Option<Params>,
    /// The starter thread, while it may still run.
    starter: Option<TaskId>,
    measure: [Option<TaskId>; MAX_CPUS],
    load: [Option<TaskId>; MAX_TASKS],
    load_count: usize,
    /// The device interrupt handler threads (`--irq-load`), one per CPU.
    irq: [Option<TaskId>; MAX_CPUS],
    /// Set by the starter when it is done (ids complete).
    started: bool,
}

static STATE: RawSpinLock<State> = RawSpinLock::new(
    "workload",
    State {
        params: None,
        starter: None,
        measure: [None; MAX_CPUS],
        load: [None; MAX_TASKS],
        load_count: 0,
        irq: [None; MAX_CPUS],
        started: false,
    },
);

/// The measurement period in µs (0 when the workload is off).
pub fn interval_us() -> u32 {
    STATE.lock_irqsave().params.as_ref().filter(|p| p.enabled).map_or(0, |p| p.interval_us)
}

/// CPU 0, at boot before HC_READY: resolves the parameters from the boot
/// info, prints them, and initialises the telemetry
/// region (also when the workload is disabled: the VMM then sees
/// `running == 0`).
pub fn init() {
    let req = boot_info::workload();
    let params = Params::resolve(&req, boot_info::cpu_count());
    if params.enabled {
        params.print();
    }
    telemetry::init(&params, boot_info::initial_mode());
    STATE.lock_irqsave().params = Some(params);
}

/// CPU 0's boot context, after the ready action: starts the workload if
/// it is enabled (through the starter thread: module doc).
pub fn start() {
    let mut st = STATE.lock_irqsave();
    if !st.params.is_some_and(|p| p.enabled) || stopping() {
        return;
    }
    // Spawn under the state lock so that the starter's id is recorded
    // before it can run (it takes the lock to record its work).
    st.starter = Some(sched::spawn("workload", STARTER_PRIO, 0, starter, 0));
}

fn starter(_: usize) {
    let Some(p) = STATE.lock_irqsave().params else { return };
    let cpus = boot_info::cpu_count();
    let mut measure_ids = [None; MAX_CPUS];
    let mut load_ids = [None; MAX_TASKS];
    let mut irq_ids = [None; MAX_CPUS];
    if p.irq_rate_hz != 0 {
        // Before the measurement: the device's interrupts may come from
        // the first moment, and the threads' counts must be worked off.
        crate::workload::irqdev::configure(p.irq_work_us);
        for (cpu, id) in irq_ids.iter_mut().enumerate().take(cpus as usize) {
            *id = Some(sched::spawn("irq/dev", p.irq_prio, cpu as u32, crate::workload::irqdev::thread, cpu));
        }
    }
    measure::start(&p, cpus, &mut measure_ids);
    telemetry::set_running(true);
    sched::spawn("epoch-prep", PREP_PRIO, 0, prep_thread, 0);
    request_prep(telemetry::current_epoch() + 1);
    let n = load::start(p.load, p.cs_us, p.load_threads, p.load_cpus & cpu_mask(cpus), &mut load_ids);
    let mut st = STATE.lock_irqsave();
    st.measure = measure_ids;
    st.load = load_ids;
    st.load_count = n;
    st.irq = irq_ids;
    st.started = true;
}

/// The bits of CPUs `0..cpus`.
fn cpu_mask(cpus: u32) -> u64 {
    if cpus >= 64 { u64::MAX } else { (1u64 << cpus) - 1 }
}

/// The CPUs that run a measurement thread (0 when the workload is off).
pub fn measure_cpus() -> u64 {
    STATE.lock_irqsave().params.as_ref().filter(|p| p.enabled).map_or(0, |p| p.measure_cpus)
}

/// Whether task `id` has exited and left its CPU (or is gone).
fn has_exited(id: TaskId) -> bool {
    sched::task(id).is_none_or(|t| t.state() == TaskState::Dead && !t.on_cpu.load(Ordering::Acquire))
}

/// Polls (sleeping) until `done()` or `deadline_tsc`; returns `done()`.
fn wait_until(deadline_tsc: u64, mut done: impl FnMut() -> bool) -> bool {
    loop {
        if done() {
            return true;
        }
        if now_tsc() >= deadline_tsc {
            return false;
        }
        sleep_us(STOP_POLL_US);
    }
}

/// The control thread, on shutdown: stops the workload (bounded) and runs
/// the load's final check. Idempotent enough
/// for a second call (it finds nothing left to stop).
pub fn shutdown() {
    STOP.store(true, Ordering::Release);
    let (params, starter) = {
        let st = STATE.lock_irqsave();
        (st.params, st.starter)
    };
    let Some(params) = params.filter(|p| p.enabled) else { return };
    let Some(starter) = starter else { return };
    let deadline = now_tsc().saturating_add(us_to_tsc(STOP_TIMEOUT_US));
    // The starter stops spawning once it sees the flag; wait for its ids.
    wait_until(deadline, || has_exited(starter));
    let (measure_ids, load_ids, load_count, irq_ids, started) = {
        let st = STATE.lock_irqsave();
        (st.measure, st.load, st.load_count, st.irq, st.started)
    };
    crate::workload::irqdev::stop();
    if !started {
        println!("workload: the starter did not finish in time");
        return;
    }
    let all = || measure_ids.iter().chain(load_ids[..load_count].iter()).chain(irq_ids.iter()).flatten();
    let stopped = wait_until(deadline, || all().all(|&id| has_exited(id)));
    telemetry::set_running(false);
    // The last epoch's window ends here: a CPU whose measurement thread
    // never got to run shows its overdue periods up to now.
    telemetry::close_current_epoch();
    if stopped {
        for &id in all() {
            sched::join(id);
        }
    }
    // No latency summary of the guest's own: the VMM prints the run's
    // (`rtswitch: latency summary`), from the same telemetry with the
    // epochs attributed and named its way; a second table here disagreed
    // with it.
    if stopped {
        run_final_check(params.load, load_count, deadline);
    } else {
        let running = load_ids[..load_count].iter().flatten().filter(|&&id| !has_exited(id)).count();
        load::report_unchecked(running);
    }
}

/// The load's final check, run by a short-lived thread: the check takes
/// the load's switchable locks, which the control thread must not (it is
/// exempt from the freezer, so it promises never to take one).
fn run_final_check(kind: LoadKind, load_count: usize, deadline_tsc: u64) {
    FINAL_KIND.store(kind as u32, Ordering::Relaxed);
    FINAL_THREADS.store(load_count, Ordering::Relaxed);
    let id = sched::spawn("load-check", STARTER_PRIO, 0, final_check_thread, 0);
    // At least a second for the check itself, even if stopping took long.
    let deadline = deadline_tsc.max(now_tsc().saturating_add(us_to_tsc(1_000_000)));
    if wait_until(deadline, || has_exited(id)) {
        sched::join(id);
    } else {
        println!("load check: not finished in time");
    }
}

static FINAL_KIND: AtomicU32 = AtomicU32::new(0);
static FINAL_THREADS: AtomicUsize = AtomicUsize::new(0);

fn final_check_thread(_: usize) {
    let kind = LoadKind::from_u32(FINAL_KIND.load(Ordering::Relaxed)).unwrap_or(LoadKind::None);
    load::final_check(kind, FINAL_THREADS.load(Ordering::Relaxed));
}

/// Closes the current epoch and opens the next (`telemetry::open_epoch`),
/// for the runtime switch. Call only with every task frozen. Returns the
/// new epoch index (None without telemetry).
pub fn open_epoch(mode: Profile, kind: EpochKind) -> Option<u64> {
    let index = telemetry::open_epoch(mode, kind)?;
    // Not during a freeze: the woken preparer would be one more task the
    // switch waits for; the next epoch's opening zeroes what is left.
    if !sched::freezer::freezing() {
        request_prep(index + 1);
    }
    Some(index)
}

/// Priority of the slot preparer: above the load, below measurement.
const PREP_PRIO: u8 = 20;
/// Epoch index whose slot the preparer should zero next, plus 1 (0: none).
static PREP_REQUEST: AtomicU64 = AtomicU64::new(0);
static PREP_WQ: sched::WaitQueue = sched::WaitQueue::new("epoch-prep");

/// Asks the preparer to zero the slot epoch `index` will use.
fn request_prep(index: u64) {
    PREP_REQUEST.store(index + 1, Ordering::Release);
    PREP_WQ.wake_all();
}

/// The preparer thread (`telemetry::Prep`): zeroes the next epoch's slot
/// in the background, so that opening an epoch during a switch is cheap.
/// Freezable: it parks between chunks during a switch (see `prepare_slot`).
fn prep_thread(_: usize) {
    loop {
        PREP_WQ.wait_until(|| PREP_REQUEST.load(Ordering::Acquire) != 0);
        let index = PREP_REQUEST.swap(0, Ordering::AcqRel) - 1;
        telemetry::prepare_slot(index);
    }
}
