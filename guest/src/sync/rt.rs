//! The rt implementation of the switchable lock: the rtmutex protocol core
//! (`logic::rtmutex`, where the protocol, the owner-word table and the
//! invariants are documented) run on the kernel's own tasks, scheduler,
//! freezer and PI lock ([`Kernel`]), behind the `extern "C"` entry points
//! the patched call sites reach.
//!
//! Here lives what is the kernel's own: the PI lock (one raw spinlock
//! with IRQs saved over every waiter list and every task's PI state), the
//! adaptive-spin budget (calibrated at boot), the `no-pi` and `no-spin`
//! switches, the `handoff-delay` fault injection, and the spin statistics.

use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use super::lock_core::{LockCore, slowpath_enter, slowpath_exit};
use super::registry;
use crate::logic::prio_list::Prio;
use crate::logic::rtmutex::{self, Lock, PiState, RtKernel, SpinEnd};
use crate::sched::raw_lock::{RawSpinIrqGuard, RawSpinLock};
use crate::sched::{self, Task, TaskRef};

const _: () = assert!(sched::TASK_SLOTS <= rtmutex::TASK_SLOTS, "waiter lists index every task slot");

/// Priority inheritance on (default) or off (`no-pi` guest argument: the
/// self-test that needs PI must then fail, proving it can).
static PI_ENABLED: AtomicBool = AtomicBool::new(true);

/// Adaptive spinning budget, in spin-loop iterations (set from the boot
/// calibration so that it is a bounded time on any host).
static SPIN_BUDGET: AtomicU32 = AtomicU32::new(64);

/// How long a contended locker spins while the owner runs before it sleeps.
pub const SPIN_BUDGET_NS: u64 = 50_000;

static PI_LOCK: RawSpinLock<PiState> = RawSpinLock::new("pi_lock", PiState::new());

/// Turns priority inheritance off (self-test honesty check).
pub fn disable_pi() {
    PI_ENABLED.store(false, Ordering::Relaxed);
}

/// Sets the adaptive-spin budget from the boot calibration: `ps_per_iter`
/// is the cost of one 2-instruction calibration iteration; one spin
/// iteration is about four such.
pub fn calibrate_spin(ps_per_iter: u64) {
    let per_spin_ps = ps_per_iter.saturating_mul(4).max(1);
    let iters = (SPIN_BUDGET_NS * 1000 / per_spin_ps).clamp(4, 1 << 20);
    SPIN_BUDGET.store(iters as u32, Ordering::Relaxed);
}

/// Turns adaptive spinning off (`no-spin` guest argument): a contended
/// locker goes straight to the slow path and sleeps. For the lock
/// throughput benchmark, which compares both.
pub fn disable_spinning() {
    SPIN_BUDGET.store(0, Ordering::Relaxed);
}

/// Fault injection (`handoff-delay=US`): a woken waiter stays this long
/// between its wake-up and taking the lock, busy (the window in which an
/// unlocker-side hand-off once left a lock owned by a task that looked
/// asleep to the freezer).
static WAKE_DELAY_US: AtomicU32 = AtomicU32::new(0);

/// Sets the fault injection's delay (0: off).
pub fn set_wake_delay_us(us: u32) {
    WAKE_DELAY_US.store(us, Ordering::Relaxed);
}

/// How adaptive spins ended (reported at shutdown: [`spin_stats`]).
static SPIN_TOOK: AtomicU64 = AtomicU64::new(0);
static SPIN_OWNER_OFF_CPU: AtomicU64 = AtomicU64::new(0);
static SPIN_VCPU_PREEMPTED: AtomicU64 = AtomicU64::new(0);
static SPIN_OUT_OF_BUDGET: AtomicU64 = AtomicU64::new(0);

/// Adaptive spins so far: (took the lock, stopped because the owner left
/// its CPU or others queued, stopped because the owner's vCPU was
/// preempted on the host, ran out of budget).
pub fn spin_stats() -> (u64, u64, u64, u64) {
    let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
    (l(&SPIN_TOOK), l(&SPIN_OWNER_OFF_CPU), l(&SPIN_VCPU_PREEMPTED), l(&SPIN_OUT_OF_BUDGET))
}

/// Takes the lock, sleeping if needed (`rtmutex::lock`).
pub extern "C" fn lock(lock: *const LockCore) -> u64 {
    crate::sched::park::point(crate::sched::park::IN_LOCK);
    // SAFETY: call sites pass a pointer to a live LockCore (`spinlock.rs`).
    rtmutex::lock(&Kernel, unsafe { &(*lock).word })
}

/// Takes the lock only if it is free right now (`rtmutex::try_lock`).
pub extern "C" fn try_lock(lock: *const LockCore) -> u64 {
    crate::sched::park::point(crate::sched::park::IN_TRY_LOCK);
    // SAFETY: as for `lock`.
    rtmutex::try_lock(&Kernel, unsafe { &(*lock).word })
}

/// Changes `t`'s base priority to `prio` and restores priority
/// inheritance along its chain (`rtmutex::set_base_prio`): whatever the
/// lock mode, since waiter lists are empty in mainline mode.
pub fn set_base_prio(t: &'static Task, prio: u8) {
    rtmutex::set_base_prio(&Kernel, TaskRef(t), || t.store_base_prio(prio));
}

/// Releases the lock (`rtmutex::unlock`).
pub extern "C" fn unlock(lock: *const LockCore) -> u64 {
    // SAFETY: as for `lock`.
    let r = rtmutex::unlock(&Kernel, unsafe { &(*lock).word });
    crate::sched::park::point(crate::sched::park::IN_UNLOCK);
    r
}

/// The kernel as the rtmutex core sees it.
pub struct Kernel;

impl RtKernel for Kernel {
    type Task = TaskRef;
    type Word = AtomicUsize;
    type Slot = AtomicU16;
    type PiGuard<'a> = RawSpinIrqGuard<'a, PiState>;

    fn current(&self) -> TaskRef {
        TaskRef(sched::current())
    }

    fn task_word(&self, t: TaskRef) -> usize {
        core::ptr::from_ref(t.0) as usize
    }

    fn task_of_word(&self, word: usize) -> TaskRef {
        // SAFETY: owner words hold addresses of entries of the static task
        // table (written by the lock cores from `task_word`), valid for
        // the whole run.
        TaskRef(unsafe { &*((word & !rtmutex::HAS_WAITERS) as *const Task) })
    }

    fn slot_of(&self, t: TaskRef) -> usize {
        t.0.id().slot()
    }

    fn task_at(&self, slot: usize) -> TaskRef {
        TaskRef(sched::task_by_slot(slot))
    }

    fn task_name(&self, t: TaskRef) -> &str {
        t.0.name()
    }

    fn prio(&self, t: TaskRef) -> Prio {
        t.0.prio()
    }

    fn base_prio(&self, t: TaskRef) -> Prio {
        t.0.base_prio()
    }

    fn set_prio(&self, t: TaskRef, prio: Prio) {
        sched::set_prio(t.0, prio);
    }

    fn on_cpu(&self, t: TaskRef) -> bool {
        t.0.on_cpu.load(Ordering::Relaxed)
    }

    fn vcpu_preempted(&self, t: TaskRef) -> bool {
        crate::arch::steal::vcpu_preempted(t.0.cpu() as usize)
    }

    fn locks_held(&self, t: TaskRef) -> u32 {
        t.0.switch_locks_held.load(Ordering::Relaxed)
    }

    fn blocked_on(&self, t: TaskRef) -> usize {
        t.0.blocked_on.load(Ordering::Acquire)
    }

    fn set_blocked_on(&self, t: TaskRef, lock: usize) {
        t.0.blocked_on.store(lock, Ordering::Release);
    }

    fn lock_at(&self, addr: usize) -> &Lock<Self> {
        // SAFETY: the core only names locks it was given by a call site
        // (live LockCores) or found in its waiter table (locks with
        // waiters, which cannot go away while their owner and waiters
        // hold references); a LockCore's address is its word's.
        unsafe { &(*(addr as *const LockCore)).word }
    }

    fn lock_name(&self, addr: usize) -> &str {
        // SAFETY: as for `lock_at`.
        unsafe { (*(addr as *const LockCore)).name() }
    }

    fn might_sleep(&self) {
        sched::might_sleep("rt lock");
    }

    fn block_current(&self) {
        sched::set_current_blocked();
    }

    fn unblock_current(&self) {
        sched::set_current_running();
    }

    fn schedule(&self) {
        sched::schedule();
    }

    fn wake_up(&self, t: TaskRef) {
        sched::wake_up(t.0);
    }

    fn freezing(&self) -> bool {
        sched::freezer::freezing()
    }

    fn slowpath_enter(&self, t: TaskRef) {
        slowpath_enter(t.0);
    }

    fn slowpath_exit(&self, t: TaskRef) {
        slowpath_exit(t.0);
    }

    fn pi_lock(&self) -> RawSpinIrqGuard<'_, PiState> {
        PI_LOCK.lock_irqsave()
    }

    fn pi_enabled(&self) -> bool {
        PI_ENABLED.load(Ordering::Relaxed)
    }

    fn spin_budget(&self) -> u32 {
        SPIN_BUDGET.load(Ordering::Relaxed)
    }

    fn waiter_queued(&self) {
        registry::get().waiter_queued();
    }

    fn waiter_dequeued(&self) {
        registry::get().waiter_dequeued();
    }

    fn pi_boosted(&self) {
        registry::get().pi_boosted();
    }

    fn spin_ended(&self, how: SpinEnd) {
        let counter = match how {
            SpinEnd::Took => &SPIN_TOOK,
            SpinEnd::OwnerOffCpu => &SPIN_OWNER_OFF_CPU,
            SpinEnd::VcpuPreempted => &SPIN_VCPU_PREEMPTED,
            SpinEnd::OutOfBudget => &SPIN_OUT_OF_BUDGET,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn wait_interrupted(&self, t: TaskRef) -> bool {
        super::lock_core::signalled(t.0)
    }

    fn detects_deadlock(&self, t: TaskRef) -> bool {
        t.0.lock_wait.load(Ordering::Relaxed) & sched::lock_wait::DETECT_DEADLOCK != 0
    }

    fn after_wake(&self) {
        let own = sched::current().wake_delay_us.load(Ordering::Relaxed);
        let us = WAKE_DELAY_US.load(Ordering::Relaxed).max(own);
        if us != 0 {
            let end = sched::now_tsc() + sched::us_to_tsc(u64::from(us));
            while sched::now_tsc() < end {
                core::hint::spin_loop();
            }
        }
    }
}
