//! The lock tester (guest argument `locktest`): Linux's rt-mutex tester
//! (`kernel/rtmutex-tester.c`) for this kernel. [`THREADS`] kernel
//! threads, thread `i` pinned to CPU `i % cpus`, each waiting for the
//! next command the VMM posts in the lock tester's page
//! (`switcher::locktest`, where the protocol and the opcodes are) and
//! running it against [`LOCKS`] switchable locks `lt.0`..`lt.7`: statics
//! of the ordinary switchable class, registered in the lock table like
//! every other, reached through the same patched call sites, so that a
//! runtime switch treats them and these threads exactly as any other.
//!
//! A thread waits for commands asleep on a wait queue that the VMM's
//! HOST_REQUEST interrupt wakes ([`on_host_request`]), which also delivers
//! signals: a signal sets the thread's pending bit (`sched::lock_wait`) and
//! wakes it, so that an interruptible lock wait (`lockint`) ends with
//! -EINTR. A thread that holds a mainline lock has preemption disabled
//! and may not sleep: it polls for its next command instead, keeping its
//! CPU (what a mainline lock holder does).
//!
//! Every lock command asks the rt lock to report a deadlock (-EDEADLK, the
//! thread not queued) instead of panicking; a thread that locks a lock it
//! holds gets -EDEADLK at once in either mode. A signal reaches only a
//! thread in an interruptible lock wait; sent at any other time it is
//! dropped at the thread's next lock command.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use switcher::locktest::{GUEST_PRIO_OTHER, LOCKS, Opcode, THREADS, errno, guest_prio_of_fifo, mutex};

use crate::hv::boot_info;
use crate::hv::locktest_page as page;
use crate::sched::{self, Task, WaitQueue, lock_wait};
use crate::sync::rt;
use crate::sync::spinlock::{LockFailure, SpinLock};

static TEST_LOCKS: [SpinLock<()>; LOCKS] = [
    SpinLock::new("lt.0", ()),
    SpinLock::new("lt.1", ()),
    SpinLock::new("lt.2", ()),
    SpinLock::new("lt.3", ()),
    SpinLock::new("lt.4", ()),
    SpinLock::new("lt.5", ()),
    SpinLock::new("lt.6", ()),
    SpinLock::new("lt.7", ()),
];

const NAMES: [&str; THREADS] =
    ["locktest.0", "locktest.1", "locktest.2", "locktest.3", "locktest.4", "locktest.5", "locktest.6", "locktest.7"];

static ENABLED: AtomicBool = AtomicBool::new(false);
static COMMANDS: WaitQueue = WaitQueue::new("locktest");
/// rt-tester's event counter (`resetevent` sets it to 0).
static EVENT: AtomicU64 = AtomicU64::new(0);
/// Each thread's task slot + 1 (0 until started).
static TASKS: [AtomicUsize; THREADS] = [const { AtomicUsize::new(0) }; THREADS];
/// The last signal counter value delivered to each thread.
static SIGNALS_SEEN: [AtomicU64; THREADS] = [const { AtomicU64::new(0) }; THREADS];

/// Starts the tester threads and publishes the page (CPU 0, once ready).
pub fn start() {
    let cpus = boot_info::cpu_count().max(1);
    let mut lock_addr = [0u64; LOCKS];
    for (a, l) in lock_addr.iter_mut().zip(&TEST_LOCKS) {
        crate::sync::lock_table::register(l.core());
        *a = core::ptr::from_ref(l.core()) as u64;
    }
    let mut tasks = [(0u64, 0u32); THREADS];
    for (i, t) in tasks.iter_mut().enumerate() {
        let cpu = i as u32 % cpus;
        let id = sched::spawn(NAMES[i], GUEST_PRIO_OTHER, cpu, tester, i);
        let Some(task) = sched::task(id) else { panic!("lock tester thread {i} died at once") };
        TASKS[i].store(id.slot() + 1, Ordering::Release);
        *t = (core::ptr::from_ref(task) as u64, cpu);
    }
    page::publish(&lock_addr, &tasks);
    ENABLED.store(true, Ordering::Release);
    crate::println!("locktest: {THREADS} tester threads on {cpus} CPUs (thread i on CPU i % {cpus}), locks lt.0..lt.7");
}

fn task_of(thread: usize) -> Option<&'static Task> {
    match TASKS[thread].load(Ordering::Acquire) {
        0 => None,
        slot => Some(sched::task_by_slot(slot - 1)),
    }
}

/// From the HOST_REQUEST handler: deliver new signals, wake the threads
/// to look at their commands.
pub fn on_host_request() {
    if !ENABLED.load(Ordering::Acquire) {
        return;
    }
    for (i, seen) in SIGNALS_SEEN.iter().enumerate() {
        let seq = page::signal_seq(i);
        if seq == seen.load(Ordering::Relaxed) {
            continue;
        }
        seen.store(seq, Ordering::Relaxed);
        if let Some(t) = task_of(i) {
            // The bit first, then the wake-up: the lock wait reads the bit
            // after it marked itself Blocked (`rtmutex::lock_slow`).
            t.lock_wait.fetch_or(lock_wait::SIGNAL, Ordering::AcqRel);
            sched::wake_up(t);
        }
    }
    COMMANDS.wake_all();
}

fn bump_event(thread: usize) {
    page::set_event(thread, EVENT.fetch_add(1, Ordering::AcqRel) + 1);
}

/// One tester thread: its locks, and the commands it has run.
struct Tester {
    index: usize,
    me: &'static Task,
    held: [bool; LOCKS],
    done: u64,
}

fn tester(index: usize) {
    let mut t = Tester { index, me: sched::current(), held: [false; LOCKS], done: 0 };
    loop {
        t.wait_for_command();
        let (seq, opcode, data) = page::command(index);
        let result = match Opcode::from_u32(opcode) {
            Some(op) => {
                page::set_result(index, i64::from(opcode));
                t.run(op, data)
            }
            None => -errno::EINVAL,
        };
        t.done = seq;
        bump_event(index);
        page::set_done(index, seq, result);
    }
}

impl Tester {
    fn new_command(&self) -> bool {
        page::command(self.index).0 != self.done
    }

    fn wait_for_command(&self) {
        if sched::preempt_count() > 0 {
            // Holding a mainline lock: preemption is off, no sleeping.
            while !self.new_command() {
                core::hint::spin_loop();
            }
        } else {
            // Asleep; lock-free, this is a safe point for the freezer.
            COMMANDS.wait_until(|| self.new_command());
        }
    }

    fn run(&mut self, op: Opcode, data: i32) -> i64 {
        // The ranges are the ABI's (the VMM checks them before posting);
        // a command outside them does nothing.
        let Ok(data) = op.check_data(i64::from(data)) else { return -errno::EINVAL };
        // In range for every command that names a lock.
        let l = data as usize;
        match op {
            Opcode::SchedOther => {
                rt::set_base_prio(self.me, GUEST_PRIO_OTHER);
                0
            }
            Opcode::SchedFifo => match guest_prio_of_fifo(data) {
                Some(p) => {
                    rt::set_base_prio(self.me, p);
                    0
                }
                None => -errno::EINVAL,
            },
            Opcode::Lock | Opcode::LockNoWait | Opcode::LockInt | Opcode::LockIntNoWait => {
                self.lock(l, op.interruptible())
            }
            Opcode::Unlock if self.held[l] => {
                self.unlock(l);
                0
            }
            Opcode::Unlock => -errno::EINVAL,
            // Delivered by the VMM (`on_host_request`), never run.
            Opcode::Signal => -errno::EINVAL,
            Opcode::ResetEvent => {
                EVENT.store(0, Ordering::Release);
                0
            }
            Opcode::Reset => {
                for l in (0..LOCKS).rev() {
                    if self.held[l] {
                        self.unlock(l);
                    }
                }
                self.me.wake_delay_us.store(0, Ordering::Relaxed);
                rt::set_base_prio(self.me, GUEST_PRIO_OTHER);
                0
            }
            Opcode::WakeDelay => {
                self.me.wake_delay_us.store(data as u32 * 1000, Ordering::Relaxed);
                0
            }
        }
    }

    fn lock(&mut self, l: usize, interruptible: bool) -> i64 {
        if self.held[l] {
            return -errno::EDEADLK;
        }
        let flags = lock_wait::DETECT_DEADLOCK | if interruptible { lock_wait::INTERRUPTIBLE } else { 0 };
        // Clears a signal sent outside an interruptible wait.
        self.me.lock_wait.store(flags, Ordering::Release);
        page::set_mutex(self.index, l, mutex::LOCKING);
        bump_event(self.index);
        let r = TEST_LOCKS[l].lock_held();
        self.me.lock_wait.store(0, Ordering::Release);
        match r {
            Ok(()) => {
                self.held[l] = true;
                page::set_mutex(self.index, l, mutex::LOCKED);
                bump_event(self.index);
                0
            }
            Err(e) => {
                page::set_mutex(self.index, l, mutex::UNLOCKED);
                match e {
                    LockFailure::Interrupted => -errno::EINTR,
                    LockFailure::Deadlock => -errno::EDEADLK,
                }
            }
        }
    }

    /// Unlocks `l`, published first (as Linux's tester did): the waiter
    /// that takes it may preempt this thread inside the unlock (it
    /// outranks the deboosted unlocker) and publish itself the holder
    /// before this thread could say it let go.
    fn unlock(&mut self, l: usize) {
        page::set_mutex(self.index, l, mutex::UNLOCKED);
        self.held[l] = false;
        TEST_LOCKS[l].unlock_held();
    }
}
