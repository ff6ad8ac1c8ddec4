//! The model kernel: what the protocol cores need of a kernel (tasks,
//! blocking and waking, a PI lock, a preempt count, the freezer's flag and
//! its thaw queue, the registry counters, the lock call sites), built on
//! shuttle threads, one per task, and [`MAtomic`]s.
//!
//! It implements the cores' kernel traits (`RtKernel`, `MainlineKernel`,
//! `FreezerKernel`) with the kernel's semantics where a protocol relies on
//! them, and nothing more:
//! - blocking is Linux's protocol, as `sched/scheduler.rs` has it: the
//!   task marks itself Blocked with a full barrier, re-checks, and
//!   `schedule` parks it while it stays Blocked; `wake_up` turns a
//!   Blocked task Runnable (and unparks it), so a wake-up that comes
//!   before the park is not lost; `on_cpu` is cleared while it is parked;
//! - which task runs is any interleaving (shuttle's, bounded by the
//!   explorer): a superset of what priorities and pinning allow, so a
//!   property that holds here holds in the kernel; priorities are kept
//!   (PI) and checked, not used to pick;
//! - the thaw's wait queue follows `WaitQueue::wait_until_unfreezable`.
//!
//! *Ground truth* the cores cannot fake is kept beside them, with plain
//! (non-scheduling) state: which task is inside a lock implementation and
//! which one, who holds each lock, and whether a switch has declared the
//! tasks quiescent. The checks ([`World::check_rt_invariants`], the
//! assertions in [`World::site_lock`] and [`World::patch`]) read it.

use std::cell::Cell;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering};

use shuttle::sync::{Mutex, MutexGuard};

use crate::atomics::{self, MAtomic};
use crate::logic::atomic::{Atomic, AtomicInt};
use crate::logic::freezer::{self, FreezerKernel, TaskState};
use crate::logic::mainline_lock::{self, MainlineKernel};
use crate::logic::prio_list::Prio;
use crate::logic::rtmutex::{self, HAS_WAITERS, LockWord, PiState, RtKernel};

const RUNNABLE: u8 = 0;
const BLOCKED: u8 = 1;
const DONE: u8 = 2;

/// A lock implementation a call site can select.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Impl {
    Mainline = 0,
    Rt = 1,
}

impl Impl {
    fn from_u8(v: u8) -> Self {
        if v == 0 { Impl::Mainline } else { Impl::Rt }
    }

    pub fn other(self) -> Self {
        match self {
            Impl::Mainline => Impl::Rt,
            Impl::Rt => Impl::Mainline,
        }
    }
}

/// A one-way gate a scenario orders its steps with: waiting blocks the
/// model thread (no spinning, which the search would have to interleave)
/// until the gate opens.
pub struct Gate {
    open: Mutex<bool>,
    opened: shuttle::sync::Condvar,
}

impl Gate {
    pub fn new() -> Self {
        Self { open: Mutex::new(false), opened: shuttle::sync::Condvar::new() }
    }

    pub fn open(&self) {
        *self.open.lock().expect("not poisoned") = true;
        self.opened.notify_all();
    }

    pub fn wait(&self) {
        let mut open = self.open.lock().expect("not poisoned");
        while !*open {
            open = self.opened.wait(open).expect("not poisoned");
        }
    }
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

/// A model task.
pub struct MTask {
    pub name: &'static str,
    base_prio: Prio,
    prio: AtomicU8,
    /// Exempt from the freezer (the switch thread).
    nofreeze: bool,
    state: MAtomic<u8>,
    on_cpu: MAtomic<bool>,
    frozen: MAtomic<bool>,
    held: MAtomic<u32>,
    blocked_on: MAtomic<usize>,
    in_slowpath: MAtomic<bool>,
    /// The task's wake-up channel: `schedule` waits on it while the
    /// task is Blocked, `wake_up` sends (shuttle's `park` may wake
    /// spuriously, which a search would explore without end).
    wake_tx: std::sync::Mutex<shuttle::sync::mpsc::Sender<()>>,
    wake_rx: std::sync::Mutex<shuttle::sync::mpsc::Receiver<()>>,
    /// The mainline lock's preempt count.
    preempt_count: AtomicU32,
    /// Ground truth: inside this lock implementation now.
    in_impl: AtomicU8,
    /// On the thaw queue (guarded by the queue's mutex).
    on_thaw_queue: AtomicBool,
    /// Waiting in `schedule` for a wake-up (the kernel's "asleep": off its
    /// run queue, not current).
    parked: AtomicBool,
    /// Opens when the task first queues as a lock waiter.
    pub queued: Gate,
    /// Opens when a lock implementation first backs out for a freeze.
    pub backed_out: Gate,
    /// A signal is pending (the kernel's `lock_wait::SIGNAL`).
    signal: MAtomic<bool>,
    /// In an interruptible lock (the kernel's `lock_wait::INTERRUPTIBLE`).
    interruptible: AtomicBool,
    /// Asks for deadlocks to be returned (the kernel's
    /// `lock_wait::DETECT_DEADLOCK`).
    detect_deadlock: AtomicBool,
}

const NO_IMPL: u8 = u8::MAX;

impl MTask {
    /// The lock it is queued on (0: none), read without a scheduling point.
    pub fn queued_on(&self) -> usize {
        self.blocked_on.peek()
    }

    /// In a lock slow path now, read without a scheduling point.
    pub fn in_slow_path(&self) -> bool {
        self.in_slowpath.peek()
    }
}

/// A model lock: the core's words, a name, and who holds it (ground truth).
pub struct MLock {
    pub name: &'static str,
    pub word: LockWord<MAtomic<usize>, MAtomic<u16>>,
    holders: AtomicU32,
    /// The implementation its holder took it with.
    taken_with: AtomicU8,
}

/// Everything one model execution shares.
pub struct World {
    pub tasks: Vec<MTask>,
    pub locks: Vec<MLock>,
    pi: Mutex<PiState>,
    pi_enabled: bool,
    spin_budget: u32,
    freeze_requested: MAtomic<bool>,
    thaw_queue: Mutex<()>,
    /// The lock call sites' target.
    site: AtomicU8,
    /// Registry counters (the guest's shared page).
    pub reg_held: MAtomic<u32>,
    pub reg_waiters: MAtomic<u32>,
    pub reg_slowpath: MAtomic<u32>,
    /// Ground truth: a switch declared the tasks quiescent and has not
    /// thawed them yet.
    quiescent: AtomicBool,
    /// Ground truth: the freeze request's wake-up scan is over (until the
    /// thaw): a lock waiter that holds nothing else and has not backed out
    /// by now must have seen the freeze, or nobody wakes it for it.
    freeze_scanned: AtomicBool,
    /// Checks of the rt invariants made (at PI lock acquisitions).
    pub checks: AtomicUsize,
}

/// A task's description for [`World::new`].
#[derive(Clone, Copy)]
pub struct TaskSpec {
    pub name: &'static str,
    pub prio: Prio,
    pub nofreeze: bool,
}

impl TaskSpec {
    pub const fn new(name: &'static str, prio: Prio) -> Self {
        Self { name, prio, nofreeze: false }
    }

    pub const fn exempt(name: &'static str, prio: Prio) -> Self {
        Self { name, prio, nofreeze: true }
    }
}

/// The model's configuration.
#[derive(Clone, Copy)]
pub struct Config {
    pub site: Impl,
    pub pi: bool,
    /// Adaptive spin iterations (each a scheduling point).
    pub spin_budget: u32,
}

impl Default for Config {
    fn default() -> Self {
        Self { site: Impl::Rt, pi: true, spin_budget: 1 }
    }
}

shuttle::thread_local! {
    /// The task the running model thread is.
    static CURRENT: Cell<usize> = const { Cell::new(usize::MAX) };
}

impl World {
    pub fn new(tasks: &[TaskSpec], locks: &[&'static str], config: Config) -> Arc<Self> {
        Arc::new(Self {
            tasks: tasks
                .iter()
                .map(|s| {
                    let (tx, rx) = shuttle::sync::mpsc::channel();
                    MTask {
                        name: s.name,
                        base_prio: s.prio,
                        prio: AtomicU8::new(s.prio),
                        nofreeze: s.nofreeze,
                        state: MAtomic::new(RUNNABLE),
                        on_cpu: MAtomic::new(true),
                        frozen: MAtomic::new(false),
                        held: MAtomic::new(0),
                        blocked_on: MAtomic::buffered(0),
                        in_slowpath: MAtomic::new(false),
                        wake_tx: std::sync::Mutex::new(tx),
                        wake_rx: std::sync::Mutex::new(rx),
                        preempt_count: AtomicU32::new(0),
                        in_impl: AtomicU8::new(NO_IMPL),
                        on_thaw_queue: AtomicBool::new(false),
                        parked: AtomicBool::new(false),
                        queued: Gate::new(),
                        backed_out: Gate::new(),
                        signal: MAtomic::new(false),
                        interruptible: AtomicBool::new(false),
                        detect_deadlock: AtomicBool::new(false),
                    }
                })
                .collect(),
            locks: locks
                .iter()
                .map(|&name| MLock {
                    name,
                    word: LockWord { owner: MAtomic::new(0), waiters: MAtomic::new(0) },
                    holders: AtomicU32::new(0),
                    taken_with: AtomicU8::new(NO_IMPL),
                })
                .collect(),
            pi: Mutex::new(PiState::new()),
            pi_enabled: config.pi,
            spin_budget: config.spin_budget,
            freeze_requested: MAtomic::buffered(false),
            thaw_queue: Mutex::new(()),
            site: AtomicU8::new(config.site as u8),
            reg_held: MAtomic::new(0),
            reg_waiters: MAtomic::new(0),
            reg_slowpath: MAtomic::new(0),
            quiescent: AtomicBool::new(false),
            freeze_scanned: AtomicBool::new(false),
            checks: AtomicUsize::new(0),
        })
    }

    /// Starts task `t` as a model thread running `body`.
    pub fn spawn(
        self: &Arc<Self>,
        t: usize,
        body: impl FnOnce(&World) + Send + 'static,
    ) -> shuttle::thread::JoinHandle<()> {
        let w = self.clone();
        shuttle::thread::spawn(move || {
            CURRENT.with(|c| c.set(t));
            body(&w);
            atomics::drain_all();
            let task = &w.tasks[t];
            assert_eq!(task.held.peek(), 0, "task '{}' ended holding a switchable lock", task.name);
            assert_eq!(
                task.preempt_count.load(Ordering::Relaxed),
                0,
                "task '{}' ended with preemption disabled",
                task.name
            );
            task.state.store(DONE, Ordering::SeqCst);
        })
    }

    fn me(&self) -> usize {
        let t = CURRENT.with(|c| c.get());
        assert!(t < self.tasks.len(), "a model kernel call outside a model task");
        t
    }

    pub fn task(&self, t: usize) -> &MTask {
        &self.tasks[t]
    }

    pub fn lock(&self, l: usize) -> &MLock {
        &self.locks[l]
    }

    /// The implementation the call sites select now.
    pub fn site(&self) -> Impl {
        Impl::from_u8(self.site.load(Ordering::SeqCst))
    }

    // --- The switchable lock's call sites (as `sync/spinlock.rs`) ---

    /// `SpinLock::lock`: the patched call in the freezer's lock loop, then
    /// the held count. Returns whether it was contended.
    pub fn site_lock(&self, l: usize) -> bool {
        let r = self.lock_call(l);
        self.acquired(l);
        r != 0
    }

    /// `SpinLock::lock_held` as the lock tester's `lockint` calls it: an
    /// interruptible wait (a pending signal cleared first, as the kernel's
    /// `lock_wait` store does). `Some(contended)` with the lock, `None`
    /// when a signal ([`World::signal`]) ended the wait.
    pub fn site_lock_interruptible(&self, l: usize) -> Option<bool> {
        let me = &self.tasks[self.me()];
        me.signal.store(false, Ordering::SeqCst);
        me.interruptible.store(true, Ordering::Relaxed);
        let r = self.lock_call(l);
        me.interruptible.store(false, Ordering::Relaxed);
        if r == rtmutex::INTERRUPTED {
            return None;
        }
        self.acquired(l);
        Some(r != 0)
    }

    /// `SpinLock::lock_held` as the lock tester's `lock` calls it: a
    /// deadlock found when the task blocks is returned (`None`) instead
    /// of a panic. `Some(contended)` with the lock.
    pub fn site_lock_detecting(&self, l: usize) -> Option<bool> {
        let me = &self.tasks[self.me()];
        me.detect_deadlock.store(true, Ordering::Relaxed);
        let r = self.lock_call(l);
        me.detect_deadlock.store(false, Ordering::Relaxed);
        if r == rtmutex::DEADLOCK {
            return None;
        }
        self.acquired(l);
        Some(r != 0)
    }

    /// A signal to task `t` (the lock tester's `signal`, from the
    /// HOST_REQUEST handler): the pending bit, then the wake-up.
    pub fn signal(&self, t: usize) {
        self.tasks[t].signal.store(true, Ordering::SeqCst);
        RtKernel::wake_up(self, t);
    }

    /// The patched lock call in the freezer's lock loop; the
    /// implementation's result.
    fn lock_call(&self, l: usize) -> u64 {
        let lock = &self.locks[l];
        freezer::lock_loop(self, || {
            self.enter_impl();
            let imp = self.site();
            self.task(self.me()).in_impl.store(imp as u8, Ordering::Relaxed);
            let r = match imp {
                Impl::Mainline => mainline_lock::lock(self, &lock.word.owner),
                Impl::Rt => rtmutex::lock(self, &lock.word),
            };
            self.leave_impl();
            if r == rtmutex::BACKED_OUT {
                self.task(self.me()).backed_out.open();
            } else if r != rtmutex::INTERRUPTED && r != rtmutex::DEADLOCK {
                lock.taken_with.store(imp as u8, Ordering::Relaxed);
            }
            r
        })
    }

    /// A thread's safe point (`try_to_freeze` at the top of its loop).
    pub fn try_to_freeze(&self) {
        freezer::try_to_freeze(self);
    }

    /// `SpinLock::try_lock`.
    pub fn site_try_lock(&self, l: usize) -> bool {
        let lock = &self.locks[l];
        self.enter_impl();
        let imp = self.site();
        let ok = match imp {
            Impl::Mainline => mainline_lock::try_lock(self, &lock.word.owner),
            Impl::Rt => rtmutex::try_lock(self, &lock.word),
        };
        self.leave_impl();
        if ok != 0 {
            lock.taken_with.store(imp as u8, Ordering::Relaxed);
            self.acquired(l);
        }
        ok != 0
    }

    /// The guard's drop: the held count, then the patched unlock call.
    pub fn site_unlock(&self, l: usize) {
        let lock = &self.locks[l];
        let me = self.me();
        let left = lock.holders.fetch_sub(1, Ordering::Relaxed);
        assert_eq!(left, 1, "lock '{}' released by '{}' while {left} tasks held it", lock.name, self.tasks[me].name);
        self.reg_held.fetch_sub(1, Ordering::Release);
        if self.tasks[me].held.fetch_sub(1, Ordering::Relaxed) == 0 {
            panic!("task '{}' released a switchable lock it does not hold", self.tasks[me].name);
        }
        self.enter_impl();
        let imp = self.site();
        let taken = Impl::from_u8(lock.taken_with.load(Ordering::Relaxed));
        assert_eq!(
            imp, taken,
            "lock '{}' taken through the {taken:?} implementation is released through the {imp:?} one: \
             a switch patched the sites while it was held",
            lock.name
        );
        match imp {
            Impl::Mainline => mainline_lock::unlock(self, &lock.word.owner),
            Impl::Rt => rtmutex::unlock(self, &lock.word),
        };
        self.leave_impl();
    }

    fn acquired(&self, l: usize) {
        let lock = &self.locks[l];
        let me = self.me();
        let before = lock.holders.fetch_add(1, Ordering::Relaxed);
        assert_eq!(
            before, 0,
            "mutual exclusion: '{}' took lock '{}' while another task held it",
            self.tasks[me].name, lock.name
        );
        self.tasks[me].held.fetch_add(1, Ordering::Relaxed);
        self.reg_held.fetch_add(1, Ordering::Relaxed);
    }

    /// Ground truth: the current task enters a lock implementation. None
    /// may while a switch holds the tasks quiescent (they are all at safe
    /// points or exempt), and an exempt task never takes a switchable lock.
    fn enter_impl(&self) {
        let me = &self.tasks[self.me()];
        assert!(!me.nofreeze, "task '{}' is exempt from the freezer and took a switchable lock", me.name);
        assert!(
            !self.quiescent.load(Ordering::SeqCst),
            "task '{}' entered lock code while the switch had declared every task quiescent",
            me.name
        );
    }

    fn leave_impl(&self) {
        self.tasks[self.me()].in_impl.store(NO_IMPL, Ordering::Relaxed);
    }

    // --- The switch (as `modeswitch::run` with the VMM's hold) ---

    /// One switch, run by an exempt task, as `modeswitch::run` does it: the
    /// freeze request, the census until quiescent (each try a yield; after
    /// `attempts` the VMM's deadline cancels it), the wait for the VMM's
    /// verdict (a scheduling point: the VMM takes time to hold every
    /// vCPU), the VMM's patch with every vCPU held, the thaw, and the
    /// sleep that follows (another scheduling point). Returns whether it
    /// patched.
    pub fn switch(&self, attempts: usize) -> bool {
        freezer::request(self);
        self.freeze_scanned.store(true, Ordering::SeqCst);
        let mut quiescent = false;
        for _ in 0..attempts {
            if self.quiescent_now() {
                quiescent = true;
                break;
            }
            shuttle::thread::yield_now();
        }
        let patched = if quiescent {
            self.declare_quiescent();
            shuttle::thread::yield_now();
            let patched = self.patch();
            self.end_quiescence();
            patched
        } else {
            false
        };
        self.freeze_scanned.store(false, Ordering::SeqCst);
        freezer::thaw(self);
        // The switch thread then sleeps (the epoch guard) until the next
        // request: others run first.
        shuttle::thread::yield_now();
        patched
    }

    /// The guest's quiescence check: the census and the registry.
    pub fn quiescent_now(&self) -> bool {
        let c = freezer::census(self);
        c.blocker.is_none()
            && self.reg_held.load(Ordering::Acquire) == 0
            && self.reg_waiters.load(Ordering::Acquire) == 0
    }

    /// The guest declares quiescence (ground truth from here to the thaw).
    pub fn declare_quiescent(&self) {
        self.quiescent.store(true, Ordering::SeqCst);
    }

    /// The VMM, every vCPU held (one atomic step: no scheduling point):
    /// its checks of the lock words, then the patch. Returns false when
    /// it refused (nothing changed). The ground truth is asserted: no task
    /// is inside a lock implementation.
    pub fn patch(&self) -> bool {
        if !self.locks.iter().all(|l| l.word.owner.peek() == 0 && l.word.waiters.peek() == 0) {
            return false;
        }
        for t in &self.tasks {
            let imp = t.in_impl.load(Ordering::Relaxed);
            assert!(
                imp == NO_IMPL,
                "the switch patched the call sites while task '{}' was inside the {:?} lock implementation",
                t.name,
                Impl::from_u8(imp)
            );
        }
        let to = self.site().other();
        self.site.store(to as u8, Ordering::SeqCst);
        true
    }

    /// The thaw: quiescence ends.
    pub fn end_quiescence(&self) {
        self.quiescent.store(false, Ordering::SeqCst);
    }

    // --- Checks ---

    /// The rt lock's invariants (see `logic::rtmutex`), from the words
    /// and waiter lists themselves. Call holding the PI lock, at a point
    /// between its critical sections (it is checked at every acquisition).
    fn check_rt_invariants(&self, pi: &PiState) {
        self.checks.fetch_add(1, Ordering::Relaxed);
        let owner_of = |lock: &MLock| {
            let w = lock.word.owner.peek() & !HAS_WAITERS;
            (w != 0).then(|| self.task_of_word(w))
        };
        for lock in &self.locks {
            let word = lock.word.owner.peek();
            let waiters = lock.word.waiter_slot().and_then(|s| pi.waiters(s));
            let top = waiters.and_then(|w| w.top_id());
            if word == HAS_WAITERS {
                let Some(top) = top else { panic!("lock '{}' is marked contended without waiters", lock.name) };
                let t = &self.tasks[top];
                assert!(
                    t.state.peek() != BLOCKED,
                    "lost wake-up: lock '{}' has no owner, and its top waiter '{}' sleeps ({})",
                    lock.name,
                    t.name,
                    self.describe(pi)
                );
            }
            if let (Some(owner), Some(top)) = (owner_of(lock), top) {
                let (o, w) = (&self.tasks[owner], &self.tasks[top]);
                assert!(
                    o.prio.load(Ordering::Relaxed) >= w.prio.load(Ordering::Relaxed),
                    "PI: '{}' owns '{}' at priority {} below its top waiter '{}' ({})",
                    o.name,
                    lock.name,
                    o.prio.load(Ordering::Relaxed),
                    w.name,
                    w.prio.load(Ordering::Relaxed)
                );
            }
        }
        // Every task runs at exactly max(base, top waiters of what it
        // owns): boosted as needed, deboosted back when that goes.
        for (i, t) in self.tasks.iter().enumerate() {
            let mut expected = t.base_prio;
            for lock in &self.locks {
                if owner_of(lock) == Some(i)
                    && let Some(w) = lock.word.waiter_slot().and_then(|s| pi.waiters(s))
                {
                    for (waiter, _) in w {
                        expected = expected.max(self.tasks[waiter].prio.load(Ordering::Relaxed));
                    }
                }
            }
            assert_eq!(
                t.prio.load(Ordering::Relaxed),
                expected,
                "PI: task '{}' runs at priority {}, its base and its waiters say {expected} ({})",
                t.name,
                t.prio.load(Ordering::Relaxed),
                self.describe(pi)
            );
        }
    }

    /// The locks' owners and waiters, for failure messages.
    fn describe(&self, pi: &PiState) -> String {
        let mut s = String::new();
        for lock in &self.locks {
            let w = lock.word.owner.peek();
            let owner = match w & !HAS_WAITERS {
                0 => "-".to_string(),
                o => self.tasks[self.task_of_word(o)].name.to_string(),
            };
            let _ = write!(s, "{}: owner {owner}, waiters [", lock.name);
            if let Some(list) = lock.word.waiter_slot().and_then(|sl| pi.waiters(sl)) {
                for (i, (t, p)) in list.iter().enumerate() {
                    let state = if self.tasks[t].state.peek() == BLOCKED { "asleep" } else { "awake" };
                    let _ = write!(s, "{}{} prio {p} {state}", if i > 0 { ", " } else { "" }, self.tasks[t].name);
                }
            }
            s.push_str("]; ");
        }
        s
    }

    /// At the end of an execution: every lock free, every priority back to
    /// base, every counter at zero.
    pub fn check_idle(&self) {
        for lock in &self.locks {
            assert!(
                lock.word.is_free(),
                "lock '{}' is not free at the end: owner word {:#x}",
                lock.name,
                lock.word.owner.peek()
            );
        }
        for t in &self.tasks {
            assert_eq!(t.prio.load(Ordering::Relaxed), t.base_prio, "task '{}' kept a PI boost", t.name);
            assert_eq!(t.blocked_on.peek(), 0, "task '{}' is still queued on a lock", t.name);
        }
        assert_eq!(self.reg_held.peek(), 0, "the registry counts held locks at the end");
        assert_eq!(self.reg_waiters.peek(), 0, "the registry counts waiters at the end");
        assert_eq!(self.reg_slowpath.peek(), 0, "the registry counts tasks in a slow path at the end");
    }
}

/// The PI lock held; the rt invariants were checked when it was taken.
pub struct PiGuard<'a> {
    guard: MutexGuard<'a, PiState>,
}

impl std::ops::Deref for PiGuard<'_> {
    type Target = PiState;
    fn deref(&self) -> &PiState {
        &self.guard
    }
}

impl std::ops::DerefMut for PiGuard<'_> {
    fn deref_mut(&mut self) -> &mut PiState {
        &mut self.guard
    }
}

impl RtKernel for World {
    type Task = usize;
    type Word = MAtomic<usize>;
    type Slot = MAtomic<u16>;
    type PiGuard<'a> = PiGuard<'a>;

    fn current(&self) -> usize {
        self.me()
    }

    fn task_word(&self, t: usize) -> usize {
        (t + 1) * 16
    }

    fn task_of_word(&self, word: usize) -> usize {
        (word & !HAS_WAITERS) / 16 - 1
    }

    fn slot_of(&self, t: usize) -> usize {
        t
    }

    fn task_at(&self, slot: usize) -> usize {
        slot
    }

    fn task_name(&self, t: usize) -> &str {
        self.tasks[t].name
    }

    fn prio(&self, t: usize) -> Prio {
        self.tasks[t].prio.load(Ordering::Relaxed)
    }

    fn base_prio(&self, t: usize) -> Prio {
        self.tasks[t].base_prio
    }

    fn set_prio(&self, t: usize, prio: Prio) {
        self.tasks[t].prio.store(prio, Ordering::Relaxed);
    }

    fn on_cpu(&self, t: usize) -> bool {
        self.tasks[t].on_cpu.load(Ordering::Relaxed)
    }

    fn vcpu_preempted(&self, _t: usize) -> bool {
        false
    }

    fn locks_held(&self, t: usize) -> u32 {
        self.tasks[t].held.load(Ordering::Relaxed)
    }

    fn blocked_on(&self, t: usize) -> usize {
        self.tasks[t].blocked_on.load(Ordering::Acquire)
    }

    fn set_blocked_on(&self, t: usize, lock: usize) {
        self.tasks[t].blocked_on.store(lock, Ordering::Release);
        if lock != 0 {
            self.tasks[t].queued.open();
        }
    }

    fn lock_at(&self, addr: usize) -> &rtmutex::Lock<Self> {
        &self.locks.iter().find(|l| std::ptr::from_ref(&l.word) as usize == addr).expect("a model lock").word
    }

    fn lock_name(&self, addr: usize) -> &str {
        self.locks.iter().find(|l| std::ptr::from_ref(&l.word) as usize == addr).map_or("?", |l| l.name)
    }

    fn might_sleep(&self) {
        let me = &self.tasks[self.me()];
        assert_eq!(
            me.preempt_count.load(Ordering::Relaxed),
            0,
            "task '{}' may sleep with preemption disabled",
            me.name
        );
    }

    fn block_current(&self) {
        self.tasks[self.me()].state.swap(BLOCKED, Ordering::SeqCst);
    }

    fn unblock_current(&self) {
        self.tasks[self.me()].state.store(RUNNABLE, Ordering::Release);
    }

    fn schedule(&self) {
        let me = &self.tasks[self.me()];
        while me.state.load(Ordering::SeqCst) == BLOCKED {
            atomics::drain_all();
            assert!(
                !(self.freeze_scanned.load(Ordering::SeqCst) && me.blocked_on.peek() != 0 && me.held.peek() == 0),
                "missed wake at freeze start: task '{}' sleeps queued for a lock, holding none, \
                 through a freeze it should have backed out of",
                me.name
            );
            me.on_cpu.store(false, Ordering::SeqCst);
            let rx = me.wake_rx.lock().expect("only its task takes it");
            me.parked.store(true, Ordering::SeqCst);
            let _ = rx.recv();
            me.parked.store(false, Ordering::SeqCst);
            me.on_cpu.store(true, Ordering::SeqCst);
        }
    }

    fn wake_up(&self, t: usize) {
        let task = &self.tasks[t];
        if task.state.compare_exchange(BLOCKED, RUNNABLE, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            let _ = task.wake_tx.lock().expect("never held across a scheduling point").send(());
        }
    }

    fn freezing(&self) -> bool {
        freezer::freezing(self)
    }

    fn slowpath_enter(&self, t: usize) {
        self.tasks[t].in_slowpath.store(true, Ordering::Release);
        self.reg_slowpath.fetch_add(1, Ordering::AcqRel);
    }

    fn slowpath_exit(&self, t: usize) {
        self.reg_slowpath.fetch_sub(1, Ordering::AcqRel);
        self.tasks[t].in_slowpath.store(false, Ordering::Release);
    }

    fn pi_lock(&self) -> PiGuard<'_> {
        let guard = self.pi.lock().expect("the PI lock is never poisoned (a panic ends the execution)");
        self.check_rt_invariants(&guard);
        PiGuard { guard }
    }

    fn pi_enabled(&self) -> bool {
        self.pi_enabled
    }

    fn spin_budget(&self) -> u32 {
        self.spin_budget
    }

    fn waiter_queued(&self) {
        self.reg_waiters.fetch_add(1, Ordering::Relaxed);
    }

    fn waiter_dequeued(&self) {
        self.reg_waiters.fetch_sub(1, Ordering::Release);
    }

    fn wait_interrupted(&self, t: usize) -> bool {
        self.tasks[t].interruptible.load(Ordering::Relaxed) && self.tasks[t].signal.load(Ordering::SeqCst)
    }

    fn detects_deadlock(&self, t: usize) -> bool {
        self.tasks[t].detect_deadlock.load(Ordering::Relaxed)
    }

    fn relax(&self) {
        shuttle::thread::yield_now();
    }
}

impl MainlineKernel for World {
    type Task = usize;

    fn current(&self) -> usize {
        self.me()
    }

    fn task_word(&self, t: usize) -> usize {
        RtKernel::task_word(self, t)
    }

    fn preempt_disable(&self) {
        self.tasks[self.me()].preempt_count.fetch_add(1, Ordering::Relaxed);
    }

    fn preempt_enable(&self) {
        let me = &self.tasks[self.me()];
        let before = me.preempt_count.fetch_sub(1, Ordering::Relaxed);
        assert!(before > 0, "task '{}' enabled preemption more often than it disabled it", me.name);
    }

    fn freezing(&self) -> bool {
        freezer::freezing(self)
    }

    fn locks_held(&self, t: usize) -> u32 {
        self.tasks[t].held.load(Ordering::Relaxed)
    }

    fn slowpath_enter(&self, t: usize) {
        RtKernel::slowpath_enter(self, t);
    }

    fn slowpath_exit(&self, t: usize) {
        RtKernel::slowpath_exit(self, t);
    }

    fn wait_interrupted(&self, t: usize) -> bool {
        self.tasks[t].interruptible.load(Ordering::Relaxed) && self.tasks[t].signal.load(Ordering::SeqCst)
    }

    fn relax(&self) {
        shuttle::thread::yield_now();
    }
}

impl FreezerKernel for World {
    type Task = usize;
    type Bool = MAtomic<bool>;
    type U32 = MAtomic<u32>;
    type Usize = MAtomic<usize>;

    fn freeze_requested(&self) -> &MAtomic<bool> {
        &self.freeze_requested
    }

    fn current(&self) -> usize {
        self.me()
    }

    fn tasks(&self) -> impl Iterator<Item = usize> + '_ {
        0..self.tasks.len()
    }

    fn state(&self, t: usize) -> TaskState {
        match self.tasks[t].state.load(Ordering::Acquire) {
            RUNNABLE => TaskState::Runnable,
            BLOCKED => TaskState::Blocked,
            _ => TaskState::NotLive,
        }
    }

    fn task_name(&self, t: usize) -> &str {
        self.tasks[t].name
    }

    fn exempt(&self, t: usize) -> bool {
        self.tasks[t].nofreeze
    }

    /// Parked (the kernel reads its run-queue state under the lock: one
    /// step here too, after a scheduling point).
    fn asleep(&self, t: usize) -> bool {
        let task = &self.tasks[t];
        task.state.load(Ordering::Acquire) == BLOCKED && task.parked.load(Ordering::SeqCst)
    }

    fn frozen(&self, t: usize) -> &MAtomic<bool> {
        &self.tasks[t].frozen
    }

    fn locks_held(&self, t: usize) -> &MAtomic<u32> {
        &self.tasks[t].held
    }

    fn blocked_on(&self, t: usize) -> &MAtomic<usize> {
        &self.tasks[t].blocked_on
    }

    fn in_lock_slowpath(&self, t: usize) -> &MAtomic<bool> {
        &self.tasks[t].in_slowpath
    }

    /// `WaitQueue::wait_until_unfreezable` on the thaw queue.
    fn wait_for_thaw(&self, mut cond: impl FnMut() -> bool) {
        if cond() {
            return;
        }
        let me = self.me();
        loop {
            {
                let _q = self.thaw_queue.lock().expect("not poisoned");
                self.tasks[me].on_thaw_queue.store(true, Ordering::Relaxed);
                RtKernel::block_current(self);
            }
            if cond() {
                break;
            }
            RtKernel::schedule(self);
        }
        self.tasks[me].state.store(RUNNABLE, Ordering::Release);
        let _q = self.thaw_queue.lock().expect("not poisoned");
        self.tasks[me].on_thaw_queue.store(false, Ordering::Relaxed);
    }

    fn wake_thawed(&self) {
        let _q = self.thaw_queue.lock().expect("not poisoned");
        for t in 0..self.tasks.len() {
            if self.tasks[t].on_thaw_queue.swap(false, Ordering::Relaxed) {
                RtKernel::wake_up(self, t);
            }
        }
    }

    fn wake_up(&self, t: usize) {
        RtKernel::wake_up(self, t);
    }

    fn full_barrier(&self) {
        atomics::fence();
    }
}
