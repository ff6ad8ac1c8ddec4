//! Tasks: the statically allocated task table, kernel stacks, task ids,
//! and the life cycle of a slot.
//!
//! ```text
//!            spawn: claim (CAS, generation + 1)
//!   Free ───────────────────────────────────> Claimed ──enqueue──> Runnable
//!    ^                                                              │  ^
//!    │ join (CAS Dead -> Free)                     set_current_blocked │ wake_up / timer
//!    │ or spawn reaps it (CAS Dead -> Claimed)                      v  │
//!   Dead <────────── entry returns: task_exit ─────────────────── Blocked
//!   (and !on_cpu: the CPU has switched away from its stack)     (Runnable too)
//! ```
//!
//! `Runnable` covers "running" and "in the run queue": which one is told by
//! the run queue (`curr`, `on_rq`), as in Linux. A slot's state word holds
//! `generation << 8 | state`; every claim bumps the generation, so a stale
//! [`TaskId`] never names the slot's next occupant, and CAS on the word is
//! ABA-free.
//!
//! Slots `0..MAX_TASKS` are spawned kernel threads; slot `MAX_TASKS + cpu`
//! is CPU `cpu`'s idle task (its boot context; priority 0, never queued,
//! never blocks, never dies).
//!
//! Field ownership:
//! - set at spawn while the slot is `Claimed` (exclusive), read-only while
//!   the task lives: name, cpu, base priority;
//! - `SchedNode` (run-queue links, timer, `on_rq`): the run-queue lock of
//!   the task's CPU;
//! - `saved_rsp`: the task's CPU, with interrupts off, in the switch path;
//! - `WaitNode`: the lock of the wait queue the task is queued on;
//! - atomics: as documented on each.
//!
//! Stacks: each spawned slot owns a 16 KiB stack with an unmapped 4 KiB
//! guard page below it (mm::paging leaves it out), so an overflow faults
//! (as a double fault on its IST stack) instead of corrupting a neighbour.

use crate::arch::percpu;
use core::cell::UnsafeCell;
use core::fmt;
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering};
use switcher::abi::MAX_CPUS;

/// Spawnable kernel threads (idle tasks not counted).
pub const MAX_TASKS: usize = 128;
/// Kernel stack per spawned task.
pub const STACK_SIZE: usize = 16 * 1024;
/// Unmapped guard below each stack.
pub const GUARD_SIZE: usize = switcher::abi::task_word::STACK_GUARD as usize;
/// Lowest and highest priority of a kernel thread (higher runs first; the
/// idle tasks, never queued, are at 0).
pub const MIN_PRIO: u8 = 1;
pub const MAX_PRIO: u8 = 99;

const SLOTS: usize = MAX_TASKS + MAX_CPUS;
const _: () = assert!(SLOTS <= 256, "slot indices are 8 bits in TaskId");

/// [`Task::lock_wait`] bits.
pub mod lock_wait {
    /// A signal may end the task's lock waits ([`SIGNAL`]): rt-tester's `lockint`.
    pub const INTERRUPTIBLE: u8 = 1 << 0;
    /// A deadlock found when the task blocks is returned to it, not a panic.
    pub const DETECT_DEADLOCK: u8 = 1 << 1;
    /// A signal is pending.
    pub const SIGNAL: u8 = 1 << 2;
}

/// A slot's life-cycle state (the low byte of the state word).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    Free = 0,
    /// Being set up by `spawn` (or reaped by it).
    Claimed = 1,
    /// Running on its CPU or waiting in its run queue.
    Runnable = 2,
    /// Waiting for `wake_up` (or its timer); may still be on its CPU.
    Blocked = 3,
    /// Its entry returned; the slot is freed by `join` or reused by spawn.
    Dead = 4,
}

impl TaskState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Free,
            1 => Self::Claimed,
            2 => Self::Runnable,
            3 => Self::Blocked,
            _ => Self::Dead,
        }
    }
}

/// Names one incarnation of a task slot: `generation << 8 | slot`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct TaskId(u32);

impl TaskId {
    pub fn slot(self) -> usize {
        (self.0 & 0xff) as usize
    }
    fn generation(self) -> u32 {
        self.0 >> 8
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.slot(), self.generation())
    }
}

/// Run-queue bookkeeping of a task; guarded by its CPU's run-queue lock.
pub(super) struct SchedNode {
    pub next: *const Task,
    pub prev: *const Task,
    /// In its run queue's priority list (never while it is `curr`).
    pub on_rq: bool,
    /// Absolute TSC deadline while on the timer list, else 0.
    pub wake_deadline_tsc: u64,
    /// Next on the CPU's timer list (sorted by deadline).
    pub timer_next: *const Task,
}

/// Wait-queue bookkeeping; guarded by the lock of the queue it is on.
pub(super) struct WaitNode {
    pub next: *const Task,
    pub queued: bool,
}

/// A kernel thread (or a CPU's idle task). `repr(C)`: its first fields
/// are ABI (`switcher::abi::task_word`): with every vCPU held, the VMM
/// reads them to check that the tasks the guest declared quiescent are.
#[repr(C)]
pub struct Task {
    /// `generation << 8 | TaskState`.
    word: AtomicU32,
    /// Running on its CPU right now (set before switching to it, cleared
    /// once its CPU has switched away: its stack is no longer in use).
    pub on_cpu: AtomicBool,
    /// Parked in the freezer right now.
    pub frozen: AtomicBool,
    /// Never frozen: the task promises never to take a switchable lock
    /// (asserted by `SpinLock`); see `freezer`.
    pub nofreeze: AtomicBool,
    /// Effective priority (1..=99; idle 0): `base_prio`, or higher while
    /// boosted by priority inheritance. Written by `sched::set_prio` under
    /// the task's run-queue lock; read by anyone.
    pub prio: AtomicU8,
    base_prio: AtomicU8,
    cpu: AtomicU32,
    /// Switchable locks held (maintained by the lock code).
    pub switch_locks_held: AtomicU32,
    /// The address of the switchable lock this task is queued on, or 0
    /// (lock code).
    pub blocked_on: AtomicUsize,
    /// Inside a switchable lock's slow path (spinning or queued for it):
    /// busy for the freezer (lock code).
    pub in_lock_slowpath: AtomicBool,
    /// How this task's switchable-lock waits behave ([`lock_wait`] bits):
    /// set by the task itself around a lock call (the lock tester), read
    /// by the lock code; a pending signal is set by anyone.
    pub lock_wait: AtomicU8,
    /// Fault injection for the lock tester (`wakedelay`): once woken as
    /// the top waiter of an ownerless rt lock, stay busy this many µs
    /// before taking it (0: off). Written by the task itself.
    pub wake_delay_us: AtomicU32,
    name: UnsafeCell<&'static str>,
    pub(super) sched: UnsafeCell<SchedNode>,
    pub(super) wait: UnsafeCell<WaitNode>,
    /// Stack pointer saved by the context switch while switched out.
    pub(super) saved_rsp: UnsafeCell<usize>,
}

// SAFETY: every field is an atomic or an UnsafeCell whose guarding lock or
// owner is documented above (and in the module doc).
unsafe impl Sync for Task {}

impl Task {
    const fn new() -> Self {
        Self {
            word: AtomicU32::new(TaskState::Free as u32),
            prio: AtomicU8::new(0),
            base_prio: AtomicU8::new(0),
            cpu: AtomicU32::new(0),
            on_cpu: AtomicBool::new(false),
            switch_locks_held: AtomicU32::new(0),
            blocked_on: AtomicUsize::new(0),
            nofreeze: AtomicBool::new(false),
            frozen: AtomicBool::new(false),
            in_lock_slowpath: AtomicBool::new(false),
            lock_wait: AtomicU8::new(0),
            wake_delay_us: AtomicU32::new(0),
            name: UnsafeCell::new(""),
            sched: UnsafeCell::new(SchedNode {
                next: ptr::null(),
                prev: ptr::null(),
                on_rq: false,
                wake_deadline_tsc: 0,
                timer_next: ptr::null(),
            }),
            wait: UnsafeCell::new(WaitNode { next: ptr::null(), queued: false }),
            saved_rsp: UnsafeCell::new(0),
        }
    }

    /// This incarnation's id.
    pub fn id(&self) -> TaskId {
        TaskId((self.word.load(Ordering::Relaxed) & !0xff) | self.slot() as u32)
    }

    /// The name given to `spawn` ("idle" for idle tasks).
    pub fn name(&self) -> &'static str {
        // SAFETY: written only while the slot is Claimed (exclusively owned
        // by the spawner), before the task is published.
        unsafe { *self.name.get() }
    }

    /// The CPU the task is pinned to.
    pub fn cpu(&self) -> u32 {
        self.cpu.load(Ordering::Relaxed)
    }

    /// Its base ("normal") priority: the one it was spawned with, or set
    /// by [`Task::store_base_prio`].
    pub fn base_prio(&self) -> u8 {
        self.base_prio.load(Ordering::Relaxed)
    }

    /// Changes the base priority (the field only). Only the rt lock code
    /// calls it (`sync::rt::set_base_prio`), under its PI lock, and then
    /// recomputes the effective priority: invariant E of `logic::pi`.
    pub fn store_base_prio(&self, prio: u8) {
        assert!((MIN_PRIO..=MAX_PRIO).contains(&prio), "base priority {prio} out of range {MIN_PRIO}..={MAX_PRIO}");
        self.base_prio.store(prio, Ordering::Relaxed);
    }

    /// Effective priority (same as `prio.load(Relaxed)`).
    pub fn prio(&self) -> u8 {
        self.prio.load(Ordering::Relaxed)
    }

    pub fn state(&self) -> TaskState {
        TaskState::from_u8(self.word.load(Ordering::Acquire) as u8)
    }

    pub fn is_idle(&self) -> bool {
        self.slot() >= MAX_TASKS
    }

    fn slot(&self) -> usize {
        (ptr::from_ref(self) as usize - TASKS.as_ptr() as usize) / core::mem::size_of::<Task>()
    }

    /// Sets the state, keeping the generation. Plain store (Release).
    pub(super) fn set_state(&self, state: TaskState) {
        let generation = self.word.load(Ordering::Relaxed) & !0xff;
        self.word.store(generation | state as u32, Ordering::Release);
    }

    /// Sets the state with a full barrier (xchg): later loads (the
    /// caller's re-check of its wait condition) are not reordered before it.
    pub(super) fn set_state_mb(&self, state: TaskState) {
        let generation = self.word.load(Ordering::Relaxed) & !0xff;
        self.word.swap(generation | state as u32, Ordering::SeqCst);
    }

    /// The run-queue node. Caller holds this task's CPU's run-queue lock.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn node(&self) -> &mut SchedNode {
        // SAFETY: the caller holds the lock that guards the node, so no
        // other reference to it exists.
        unsafe { &mut *self.sched.get() }
    }

    /// The wait-queue node. Caller holds the lock of the queue the task is
    /// on (or is about to be put on).
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn wait_node(&self) -> &mut WaitNode {
        // SAFETY: as for `node`, with the wait queue's lock.
        unsafe { &mut *self.wait.get() }
    }
}

impl fmt::Debug for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {} '{}' (cpu {}, prio {})", self.id(), self.name(), self.cpu(), self.prio())
    }
}

/// A task compared by identity: the handle the protocol cores
/// (`logic::rtmutex`, `logic::freezer`) name tasks by.
#[derive(Clone, Copy)]
pub struct TaskRef(pub &'static Task);

impl PartialEq for TaskRef {
    fn eq(&self, other: &Self) -> bool {
        ptr::eq(self.0, other.0)
    }
}

impl Eq for TaskRef {}

static TASKS: [Task; SLOTS] = [const { Task::new() }; SLOTS];

#[repr(C, align(4096))]
struct StackSlot {
    guard: [u8; GUARD_SIZE],
    stack: [u8; STACK_SIZE],
}

/// Used only as stacks (through raw addresses). In the linker script's
/// stack range.
/// Named for the VMM, which bounds each task's stack walk by its own
/// stack (`switcher::stackwalk`).
#[unsafe(export_name = "sched_task_stacks")]
#[unsafe(link_section = ".bss.stacks.tasks")]
static mut STACKS: [StackSlot; MAX_TASKS] =
    [const { StackSlot { guard: [0; GUARD_SIZE], stack: [0; STACK_SIZE] } }; MAX_TASKS];

/// Where the stack guard pages are, for the page tables: the first page of
/// `count` blocks of `stride` bytes from `base`.
pub struct GuardPages {
    pub base: u64,
    pub stride: u64,
    pub count: u64,
}

pub fn stack_guard_pages() -> GuardPages {
    GuardPages {
        base: (&raw const STACKS) as u64,
        stride: core::mem::size_of::<StackSlot>() as u64,
        count: MAX_TASKS as u64,
    }
}

/// The top (exclusive, 16-aligned) of slot `slot`'s stack.
pub(super) fn stack_top(slot: usize) -> usize {
    (&raw const STACKS) as usize + (slot + 1) * core::mem::size_of::<StackSlot>()
}

/// CPU `cpu`'s idle task.
pub(super) fn idle_task(cpu: usize) -> &'static Task {
    &TASKS[MAX_TASKS + cpu]
}

/// Makes the calling boot context CPU `cpu`'s idle task (running, prio 0).
pub(super) fn init_idle(cpu: usize) -> &'static Task {
    let idle = idle_task(cpu);
    // SAFETY: only CPU `cpu` touches its idle slot, once, before it is
    // published through the per-CPU `current` pointer.
    unsafe { *idle.name.get() = "idle" };
    publish_name(MAX_TASKS + cpu, idle, "idle");
    idle.cpu.store(cpu as u32, Ordering::Relaxed);
    idle.set_state(TaskState::Runnable);
    idle.on_cpu.store(true, Ordering::Relaxed);
    percpu::this().current.store(ptr::from_ref(idle).cast_mut().cast(), Ordering::Release);
    idle
}

/// The task running on this CPU. Panics before the scheduler's per-CPU
/// init (`sched::init_cpu`).
#[inline]
pub fn current() -> &'static Task {
    let p = percpu::current_ptr().cast::<Task>();
    assert!(!p.is_null(), "sched::current() before sched::init_cpu");
    // SAFETY: a non-null `current` points into the static task table.
    unsafe { &*p }
}

/// Task slots (spawned tasks, then one idle task per CPU): the range of
/// [`Task::slot`] and of [`task_by_slot`].
pub const TASK_SLOTS: usize = SLOTS;

/// One past the highest spawned-thread slot ever claimed: slots at and
/// above it (below `MAX_TASKS`) have never held a task.
static SPAWNED_HIGH: AtomicUsize = AtomicUsize::new(0);

/// Spawned-thread slots `0..spawned_slots()` are the only ones that ever
/// held a task (the per-CPU idle tasks live at `MAX_TASKS..`): what a scan
/// of every spawned thread needs to look at.
pub fn spawned_slots() -> usize {
    SPAWNED_HIGH.load(Ordering::Acquire)
}

/// The task in table slot `slot` (whatever its state). Lock code names
/// tasks by slot in its waiter lists.
pub fn task_by_slot(slot: usize) -> &'static Task {
    &TASKS[slot]
}

/// The live task named by `id`, if that incarnation still exists.
pub fn task(id: TaskId) -> Option<&'static Task> {
    let t = TASKS.get(id.slot())?;
    let word = t.word.load(Ordering::Acquire);
    (word >> 8 == id.generation() && word as u8 != TaskState::Free as u8).then_some(t)
}

/// Claims a slot for a new task: a free one, else a dead one no longer on
/// its CPU (reaped: its joiner, if any, sees the generation change).
pub(super) fn claim_slot() -> Option<&'static Task> {
    for want in [TaskState::Free, TaskState::Dead] {
        for (i, t) in TASKS[..MAX_TASKS].iter().enumerate() {
            let word = t.word.load(Ordering::Acquire);
            if word as u8 != want as u8 || (want == TaskState::Dead && t.on_cpu.load(Ordering::Acquire)) {
                continue;
            }
            let claimed = (word & !0xff).wrapping_add(0x100) | TaskState::Claimed as u32;
            if t.word.compare_exchange(word, claimed, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                SPAWNED_HIGH.fetch_max(i + 1, Ordering::AcqRel);
                return Some(t);
            }
        }
    }
    None
}

/// Fills a claimed slot (exclusively owned by the caller).
pub(super) fn init_claimed(t: &'static Task, name: &'static str, prio: u8, cpu: u32, initial_rsp: usize) {
    // SAFETY: the slot is Claimed by the caller: nobody else reads or
    // writes these cells until it is published (enqueued).
    unsafe {
        *t.name.get() = name;
        *t.saved_rsp.get() = initial_rsp;
        *t.sched.get() = SchedNode {
            next: ptr::null(),
            prev: ptr::null(),
            on_rq: false,
            wake_deadline_tsc: 0,
            timer_next: ptr::null(),
        };
        *t.wait.get() = WaitNode { next: ptr::null(), queued: false };
    }
    t.prio.store(prio, Ordering::Relaxed);
    t.base_prio.store(prio, Ordering::Relaxed);
    t.cpu.store(cpu, Ordering::Relaxed);
    t.on_cpu.store(false, Ordering::Relaxed);
    t.switch_locks_held.store(0, Ordering::Relaxed);
    t.blocked_on.store(0, Ordering::Relaxed);
    t.nofreeze.store(false, Ordering::Relaxed);
    t.frozen.store(false, Ordering::Relaxed);
    t.in_lock_slowpath.store(false, Ordering::Relaxed);
    t.lock_wait.store(0, Ordering::Relaxed);
    t.wake_delay_us.store(0, Ordering::Relaxed);
    publish_name(t.id().slot(), t, name);
}

const _: () = assert!(SLOTS == switcher::abi::TASK_NAME_SLOTS, "the task directory has a slot per task slot");
const _: () = {
    use switcher::abi::task_word;
    assert!(MAX_TASKS == task_word::SPAWNED_SLOTS);
    assert!(core::mem::offset_of!(Task, word) as u64 == task_word::STATE);
    assert!(core::mem::offset_of!(Task, on_cpu) as u64 == task_word::ON_CPU);
    assert!(core::mem::offset_of!(Task, frozen) as u64 == task_word::FROZEN);
    assert!(core::mem::offset_of!(Task, nofreeze) as u64 == task_word::NOFREEZE);
    assert!(core::mem::offset_of!(Task, prio) as u64 == task_word::PRIO);
    assert!(core::mem::offset_of!(Task, base_prio) as u64 == task_word::BASE_PRIO);
    assert!(core::mem::offset_of!(Task, blocked_on) as u64 == task_word::BLOCKED_ON);
    assert!(core::mem::offset_of!(Task, in_lock_slowpath) as u64 == task_word::IN_SLOWPATH);
    assert!(core::mem::offset_of!(Task, saved_rsp) as u64 == task_word::SAVED_RSP);
    assert!(TaskState::Runnable as u32 == task_word::RUNNABLE && TaskState::Blocked as u32 == task_word::BLOCKED);
};

/// Writes slot `slot`'s entry of the task directory the VMM reads
/// (`switcher::abi::TaskName`): the address owner words hold, and the name.
fn publish_name(slot: usize, t: &Task, name: &str) {
    let mut entry = switcher::abi::TaskName { addr: 0, name: [0; switcher::abi::ABI_NAME_LEN] };
    let n = name.len().min(entry.name.len());
    entry.name[..n].copy_from_slice(&name.as_bytes()[..n]);
    entry.addr = ptr::from_ref(t) as u64;
    let at = (switcher::abi::TASK_NAMES_ADDR as usize + slot * core::mem::size_of::<switcher::abi::TaskName>())
        as *mut switcher::abi::TaskName;
    // SAFETY: the task directory is ABI memory reserved for it (identity
    // mapped, two pages, asserted to hold every slot); only the slot's
    // owner writes its entry, the VMM only reads.
    unsafe { at.write_volatile(entry) };
}

/// Frees `id`'s slot if it is dead and off its CPU; `true` if the slot no
/// longer holds that incarnation (freed now, or reaped before).
pub(super) fn try_free(id: TaskId) -> bool {
    let t = &TASKS[id.slot()];
    let word = t.word.load(Ordering::Acquire);
    if word >> 8 != id.generation() {
        return true;
    }
    if word as u8 != TaskState::Dead as u8 || t.on_cpu.load(Ordering::Acquire) {
        return false;
    }
    let freed = (word & !0xff) | TaskState::Free as u32;
    // A failed CAS means a spawner reaped it: gone either way.
    let _ = t.word.compare_exchange(word, freed, Ordering::AcqRel, Ordering::Relaxed);
    true
}
