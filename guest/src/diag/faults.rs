//! Fault injection for the runtime-switch tests (guest arguments; all off
//! by default; parsed into [`Faults`] by `cmdline`).
//!
//! - `hold-lock=MS`: a task 'lock-hog' takes a `SpinLock` and keeps it for
//!   MS milliseconds, busy, never passing a safe point; then it lets go and
//!   exits. A switch requested meanwhile cannot quiesce: it must fail after
//!   its deadline, naming this task, and change nothing. Once it holds the
//!   lock it says so (`'lock-hog' holds its lock`).
//! - `irq-off-spin=MS`: a task 'irq-off-spin' on the last CPU busy-loops
//!   with interrupts disabled for MS milliseconds (no timer, no IPI reaches
//!   that CPU), from when that CPU's measurement thread has recorded its
//!   first activation (at most 1 s after boot), saying so when it starts
//!   (`'irq-off-spin' masks interrupts`). A switch requested meanwhile
//!   cannot quiesce: it must be cancelled at its deadline with nothing
//!   patched; afterwards one succeeds.
//! - `after-request`: with `hold-lock` or `irq-off-spin`, the fault lasts
//!   from its start until the VMM has made a switch request (the mailbox's
//!   request number moved since the fault started; waited for at most
//!   [`AFTER_REQUEST_WAIT_US`]), then MS more. A test that requests a
//!   switch once the fault says it holds is sure that the switch finds it
//!   held, however slow the host is between the two.
//! - `stall=MS`: a task 'stall' on the last CPU spins with preemption off
//!   (interrupts on) for MS milliseconds: that CPU's watchdog thread cannot
//!   run, so the guest's watchdog and the VMM's both report the stall.
//! - `park-in-lock`: a task 'impl-park' (cpu 0) calls a switchable
//!   lock's `lock` and stops inside the implementation the call site
//!   reaches, before it touches the lock, busy, until the VMM has made a
//!   switch request (`sched::park`: the mailbox's request number moved;
//!   bounded), saying so when it stops (`'impl-park'
//!   parked in the lock implementation`); then it takes and releases the
//!   lock (the `hold-lock` task's code with no hold: its lines name
//!   'lock-hog') and exits. The VMM's fast path must refuse (a task inside
//!   switched code, naming it and the frame); it writes no request, so
//!   the task is still there at every hold; the cooperative switch that
//!   follows writes one, the task leaves, freezes, and the switch
//!   completes.
//! - `park-in-unlock`: the same, inside `unlock` after it released the
//!   lock word (so that no lock is held: the refusal is the frame's, not
//!   the lock's).
//! - `park-in-preempt`: the same, inside the voluntary preemption point's
//!   implementation (`might_resched` before the lock: the task boots in
//!   a profile whose preemption model is `voluntary`, e.g. mainline).
//! - `park-in-try-lock`: the same, inside `try_lock` before it touches
//!   the lock word (reached through `SpinLock::try_increment`, whose call
//!   sites exist for the ring-3 selftest: the fault adds none), then it
//!   takes the lock if free and releases it.
//! - `park-in-irq`: a task 'irq-park' (cpu 0) runs busy, yielding at
//!   every turn, until a device interrupt comes to it (`--irq-load`
//!   must be on; it gives up, saying so, after [`AFTER_REQUEST_WAIT_US`]):
//!   the handler stops inside the dispatch implementation the profile
//!   selects (`hard` or `threaded`), in hard-IRQ context, busy, until a
//!   switch request (as `park-in-lock`), saying so (`'irq-park' parked
//!   in the interrupt dispatch implementation`: the interrupted task);
//!   then the handler finishes and the task exits (`'irq-park' left the
//!   interrupt dispatch implementation`). The fast path finds vCPU 0
//!   inside the dispatch, its chain (through the trap frame, on the
//!   interrupted task's stack) returning into it.
//! - `park-in-preempt-full`: a task 'preempt-high' (cpu 0, priority
//!   [`FAULT_PRIO`] + 1) spawns 'preempt-low' (cpu 0, [`FAULT_PRIO`]) and
//!   sleeps; 'preempt-low' disables preemption, wakes it (a reschedule
//!   is pending, it cannot happen yet) and enables preemption again: in
//!   a profile whose preemption model is `full`, `preempt_enable`'s point
//!   (`preempt_full`) switches to 'preempt-high' inside
//!   `preempt_schedule`. 'preempt-high', finding 'preempt-low' not yet
//!   back out of the point, says so (`'preempt-low' was preempted at
//!   preempt_enable`) and stays busy until a switch request (bounded as
//!   `sched::park`), then exits; 'preempt-low' then finishes (`'preempt-low'
//!   left the preemption point`). In another model 'preempt-high' runs
//!   only once 'preempt-low' is out, says that it was not preempted, and
//!   exits at once. (`full` tail-calls the scheduler from the point: the
//!   preempted task's stack holds no frame of `preempt_full`.)
//! - `park-in-irq-exit-full`: the same with interrupts masked around the
//!   wake instead: the unmask runs the interrupt exit work, whose point
//!   (`irq_exit_full` under `full`) switches (`'preempt-low' was
//!   preempted at the interrupt return`).
//! - `bad-frame`: a task 'bad-frame' (on the last CPU, exempt from the
//!   freezer: it takes no lock) runs with a corrupted frame pointer
//!   (rbp = 0x1234, in assembly that uses no stack), saying so (`'bad-frame'
//!   runs with a corrupted frame pointer`), until a switch request (as
//!   `park-in-lock`), then restores it and exits. Its stack cannot be
//!   walked: the fast path must refuse, naming it; the cooperative switch
//!   completes.
//! - `corrupt-mailbox`: 100 ms after boot a task scribbles garbage over the
//!   switch mailbox for 300 ms (magic included; states outside the
//!   protocol) and makes switch hypercalls with garbage values; the garbage
//!   stays. The VMM must ignore the notifications with a logged reason and
//!   refuse (or survive) later switch requests.
//! - `corrupt-telemetry`: 300 ms after boot a task overwrites the telemetry
//!   header's dimensions (cpu_count, bucket_count, epoch_slots, cpu_stride)
//!   and load kind with garbage, keeping the magic. The VMM must reject the
//!   region with a logged reason and keep running; the guest's own writers
//!   use their boot-time layout, not the header, so it stays sound.
//! - `bad-hypercalls`: right after the ready hypercall, CPU 0 writes to
//!   unknown doorbell registers, writes registers with the wrong width,
//!   reads them, reports a CPU index that does not exist, says ready again,
//!   notifies a switch that nobody asked for, and asks the console to
//!   print from outside guest memory and more than it may at once. The
//!   VMM logs each and goes on.
//! - `bad-panic-record`: then makes the panic hypercall with a record
//!   address outside guest memory: the VMM must report a panic it could not
//!   read (exit code GuestPanic), not read outside guest memory.
//! - `handoff-delay=US`: an rtmutex waiter, once woken to take the lock,
//!   stays busy US µs before it does: a switch requested meanwhile must
//!   wait for it (it is inside the lock's slow path) or back it out, never
//!   patch over the lock.
//! - `serialize-stall=US`: every CPU that serializes for a switch keeps
//!   interrupts masked US µs after it acknowledged (a slow switch step on
//!   the other CPUs, after the verdict): the measurement thread there is
//!   late by up to US µs for deadlines inside the switch. Those samples
//!   must land in the Switching epoch, never in the next Mode epoch.
//!   With it the guest serializes by IPI even after a VMM that made
//!   every vCPU serialize in its hold (the mailbox's `vmm_serialized`).
//! - `lock-queue=N`: N tasks (alternating CPUs, equal priority) take one
//!   switchable lock in turn, each holding it 30 ms, busy: a queue of
//!   waiters behind one section. A switch's freeze must wait for the
//!   section in progress only (the waiters back out), not for the queue.
//! - `text-write`: CPU 0 writes one byte of its own text (the same value
//!   it holds) through a writable alias of the page: the guest's page
//!   tables do not stop it, the hypervisor must (the text is a read-only
//!   memory slot), ending the run with the text-write exit code and the
//!   address.
//! - `stack-lock`: a task takes a switchable lock that lives on its own
//!   stack. Registering it must be refused (a guest panic naming the
//!   lock): the VMM reads every registered lock word at every switch, and
//!   that stack memory would later hold anything.
//! - `thaw-spin=US`: a task that the thaw woke spins US µs, Runnable and
//!   still marked frozen, before it leaves the freezer (as if preempted
//!   there). A switch meanwhile must not count it frozen: it would walk
//!   into a lock call site the switch is patching.
//! - `panic-in-switch`: the switch thread panics in the middle of a switch
//!   (after the VMM patched the sites, before the CPUs serialize and the
//!   tasks thaw). The VMM must report the panic and exit with GuestPanic,
//!   removing its control socket.

use core::ptr::addr_of_mut;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use switcher::abi::{SWITCH_MAILBOX_ADDR, SwitchMailbox, doorbell};
use switcher::telemetry::TelemetryHeader;

use crate::hv::hypercall::raw_access;
use crate::sched;
use crate::sync::spinlock::SpinLock;

/// The fault injections asked for on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    pub hold_lock_ms: Option<u32>,
    pub irq_off_spin_ms: Option<u32>,
    pub stall_ms: Option<u32>,
    pub corrupt_mailbox: bool,
    pub corrupt_telemetry: bool,
    pub bad_hypercalls: bool,
    pub bad_panic_record: bool,
    pub panic_in_switch: bool,
    pub text_write: bool,
    pub handoff_delay_us: Option<u32>,
    pub lock_queue: Option<u32>,
    pub serialize_stall_us: Option<u32>,
    pub stack_lock: bool,
    pub thaw_spin_us: Option<u32>,
    pub after_request: bool,
    pub park_in_lock: bool,
    pub park_in_preempt: bool,
    pub park_in_unlock: bool,
    pub park_in_try_lock: bool,
    pub park_in_irq: bool,
    pub park_in_preempt_full: bool,
    pub park_in_irq_exit_full: bool,
    pub bad_frame: bool,
}

impl Faults {
    /// Takes `word` if it names a fault; false otherwise.
    pub fn parse_word(&mut self, word: &str) -> bool {
        let ms = |prefix: &str| word.strip_prefix(prefix).and_then(|n| n.parse::<u32>().ok());
        if let Some(n) = ms("hold-lock=") {
            self.hold_lock_ms = Some(n);
        } else if let Some(n) = ms("irq-off-spin=") {
            self.irq_off_spin_ms = Some(n);
        } else if let Some(n) = ms("stall=") {
            self.stall_ms = Some(n);
        } else if let Some(n) = ms("lock-queue=") {
            self.lock_queue = Some(n.min(16));
        } else if let Some(n) = ms("serialize-stall=") {
            self.serialize_stall_us = Some(n.min(1_000_000));
        } else if let Some(n) = ms("handoff-delay=") {
            self.handoff_delay_us = Some(n);
        } else if let Some(n) = ms("thaw-spin=") {
            self.thaw_spin_us = Some(n.min(1_000_000));
        } else {
            match word {
                "corrupt-mailbox" => self.corrupt_mailbox = true,
                "corrupt-telemetry" => self.corrupt_telemetry = true,
                "bad-hypercalls" => self.bad_hypercalls = true,
                "bad-panic-record" => self.bad_panic_record = true,
                "panic-in-switch" => self.panic_in_switch = true,
                "text-write" => self.text_write = true,
                "stack-lock" => self.stack_lock = true,
                "after-request" => self.after_request = true,
                "park-in-lock" => self.park_in_lock = true,
                "park-in-preempt" => self.park_in_preempt = true,
                "park-in-unlock" => self.park_in_unlock = true,
                "park-in-try-lock" => self.park_in_try_lock = true,
                "park-in-irq" => self.park_in_irq = true,
                "park-in-preempt-full" => self.park_in_preempt_full = true,
                "park-in-irq-exit-full" => self.park_in_irq_exit_full = true,
                "bad-frame" => self.bad_frame = true,
                _ => return false,
            }
        }
        true
    }
}

static PANIC_IN_SWITCH: AtomicBool = AtomicBool::new(false);
static AFTER_REQUEST: AtomicBool = AtomicBool::new(false);
/// The longest an `after-request` fault waits for a switch request (it
/// then lasts its MS from there).
pub const AFTER_REQUEST_WAIT_US: u64 = 60_000_000;
static SERIALIZE_STALL_US: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// µs a CPU stays masked after acknowledging a switch's serialize IPI.
pub fn serialize_stall_us() -> u32 {
    SERIALIZE_STALL_US.load(Ordering::Relaxed)
}

/// Arms the faults that act inside other code (before the control thread
/// can take a switch).
pub fn arm(f: &Faults) {
    PANIC_IN_SWITCH.store(f.panic_in_switch, Ordering::Relaxed);
    AFTER_REQUEST.store(f.after_request, Ordering::Relaxed);
    if let Some(us) = f.serialize_stall_us {
        crate::println!("fault injection: CPUs stay masked {us} us after a switch's serialize IPI");
        SERIALIZE_STALL_US.store(us, Ordering::Relaxed);
    }
    if let Some(us) = f.handoff_delay_us {
        crate::println!("fault injection: woken rtmutex waiters wait {us} us before taking the lock");
        crate::sync::rt::set_wake_delay_us(us);
    }
    if let Some(us) = f.thaw_spin_us {
        crate::println!("fault injection: thawed tasks spin {us} us before they leave the freezer");
        sched::freezer::set_thaw_spin_us(us);
    }
}

/// Whether the switch thread must panic in the middle of a switch.
pub fn panic_in_switch() -> bool {
    PANIC_IN_SWITCH.load(Ordering::Relaxed)
}

/// Starts the faults that are tasks or one-off actions (CPU 0, after the
/// ready hypercall and the control thread's start).
pub fn start(f: &Faults) {
    let last = crate::hv::boot_info::cpu_count().saturating_sub(1);
    if let Some(ms) = f.hold_lock_ms {
        crate::println!("fault injection: 'lock-hog' holds a lock for {ms} ms on cpu {last}");
        sched::spawn("lock-hog", FAULT_PRIO, last, hog, ms as usize);
    }
    if let Some(ms) = f.irq_off_spin_ms {
        crate::println!("fault injection: 'irq-off-spin' spins {ms} ms with interrupts off on cpu {last}");
        sched::spawn("irq-off-spin", FAULT_PRIO, last, irq_off_spin, ms as usize);
    }
    if let Some(ms) = f.stall_ms {
        crate::println!("fault injection: 'stall' spins {ms} ms with preemption off on cpu {last}");
        sched::spawn("stall", FAULT_PRIO, last, stall, ms as usize);
    }
    if f.park_in_lock {
        crate::println!("fault injection: 'impl-park' stops inside the lock implementation on cpu 0");
        sched::spawn("impl-park", FAULT_PRIO, 0, impl_park, usize::from(sched::park::IN_LOCK));
    } else if f.park_in_preempt {
        crate::println!("fault injection: 'impl-park' stops inside the preemption point implementation on cpu 0");
        sched::spawn("impl-park", FAULT_PRIO, 0, impl_park, usize::from(sched::park::IN_PREEMPT));
    } else if f.park_in_unlock {
        crate::println!("fault injection: 'impl-park' stops inside the unlock implementation on cpu 0");
        sched::spawn("impl-park", FAULT_PRIO, 0, impl_park, usize::from(sched::park::IN_UNLOCK));
    } else if f.park_in_try_lock {
        crate::println!("fault injection: 'impl-park' stops inside the try_lock implementation on cpu 0");
        sched::spawn("impl-park", FAULT_PRIO, 0, impl_park, usize::from(sched::park::IN_TRY_LOCK));
    } else if f.park_in_irq {
        crate::println!(
            "fault injection: a device interrupt's handler stops inside the dispatch implementation on cpu 0"
        );
        sched::spawn("irq-park", FAULT_PRIO, 0, irq_park, 0);
    }
    if f.park_in_preempt_full || f.park_in_irq_exit_full {
        let (at, point) = if f.park_in_preempt_full {
            (AT_PREEMPT_ENABLE, "preempt_enable")
        } else {
            (AT_IRQ_EXIT, "the interrupt return")
        };
        crate::println!("fault injection: 'preempt-low' is preempted at {point} on cpu 0");
        sched::spawn("preempt-high", FAULT_PRIO + 1, 0, preempt_high, at);
    }
    if f.bad_frame {
        crate::println!("fault injection: 'bad-frame' corrupts its frame pointer on cpu {last}");
        sched::spawn("bad-frame", FAULT_PRIO, last, bad_frame, 0);
    }
    if f.corrupt_mailbox {
        sched::spawn("mbox-scribbler", FAULT_PRIO, last, scribble_mailbox, 0);
    }
    if f.corrupt_telemetry {
        sched::spawn("telem-scribbler", FAULT_PRIO, last, scribble_telemetry, 0);
    }
    if f.bad_hypercalls {
        bad_hypercalls();
    }
    if let Some(n) = f.lock_queue {
        crate::println!("fault injection: {n} tasks queue for one lock, each holding it {QUEUE_HOLD_US} us");
        let cpus = crate::hv::boot_info::cpu_count();
        for i in 0..n {
            sched::spawn("lock-queue", FAULT_PRIO, i % cpus, queue_member, 0);
        }
    }
    if f.text_write {
        text_write();
    }
    if f.stack_lock {
        crate::println!("fault injection: 'stack-lock' takes a switchable lock on its own stack");
        sched::spawn("stack-lock", FAULT_PRIO, 0, stack_lock, 0);
    }
    if f.bad_panic_record {
        crate::println!("fault injection: panic hypercall with a record outside guest memory");
        raw_access(doorbell::PANIC, 8, 0xffff_fff0, true);
    }
}

/// Priority of the fault-injection tasks: above the load threads (10,
/// 11, ...), below the control thread and the measurement threads. Under
/// the default lock load a CPU is never idle once the preemption model
/// is not `full` (a woken load thread waits for the running one to sleep,
/// then runs at once), so a task below the load would never run.
const FAULT_PRIO: u8 = 30;

static HOG_LOCK: SpinLock<u64> = SpinLock::new("fault.hog", 0);

/// A switchable lock on this task's stack, taken (refused at registration).
fn stack_lock(_: usize) {
    let lock = SpinLock::new("fault.on-stack", 0u64);
    let mut g = lock.lock();
    *g += 1;
    drop(g);
    crate::println!("fault injection: a lock on a stack was registered (it must not be)");
}

/// The switch mailbox's request number (the VMM bumps it per request).
fn request_seq() -> u64 {
    let m = SWITCH_MAILBOX_ADDR as *const SwitchMailbox;
    // SAFETY: the mailbox page is ABI memory, identity-mapped; a volatile
    // read of an aligned u64 the VMM writes.
    unsafe { core::ptr::addr_of!((*m).seq).read_volatile() }
}

/// Busy (never passing a safe point) for `ms` milliseconds, or with
/// `after-request` until a switch request came after `since_seq` (bounded
/// by [`AFTER_REQUEST_WAIT_US`]) and then `ms` more; `work` runs in the loop.
fn busy_for(ms: usize, since_seq: u64, mut work: impl FnMut()) {
    let hold = sched::us_to_tsc(ms as u64 * 1000);
    if AFTER_REQUEST.load(Ordering::Relaxed) {
        let give_up = sched::now_tsc() + sched::us_to_tsc(AFTER_REQUEST_WAIT_US);
        while request_seq() == since_seq && sched::now_tsc() < give_up {
            work();
            core::hint::spin_loop();
        }
    }
    let end = sched::now_tsc() + hold;
    while sched::now_tsc() < end {
        work();
        core::hint::spin_loop();
    }
}

/// Takes and releases the hog's lock (through `hog`, whose call sites
/// exist anyway: a fault adds none: `might_resched`, then the lock; for
/// `try_lock` through `SpinLock::try_increment`, whose sites exist for
/// the ring-3 selftest), parking inside the implementation `at` names
/// (`sched::park`).
fn impl_park(at: usize) {
    let at = at as u8;
    sched::park::arm(at);
    if at == sched::park::IN_TRY_LOCK {
        HOG_LOCK.try_increment();
    } else {
        hog(0);
    }
    crate::println!("fault injection: 'impl-park' left the lock implementation");
}

/// Armed for the interrupt dispatch (`sched::park`), runs on cpu 0 until
/// a device interrupt's handler, come to it, has parked and left
/// (bounded by the park's wait, and once more by
/// [`AFTER_REQUEST_WAIT_US`] for the first interrupt: without
/// `--irq-load` none comes). Busy, so that the interrupt comes to it,
/// yielding at every turn: a higher-priority task woken meanwhile (the
/// control thread) runs, whatever the preemption model.
fn irq_park(_: usize) {
    sched::park::arm(sched::park::IN_IRQ_DISPATCH);
    let give_up = sched::now_tsc() + sched::us_to_tsc(AFTER_REQUEST_WAIT_US);
    while sched::park::armed() && sched::now_tsc() < give_up {
        sched::yield_now();
        core::hint::spin_loop();
    }
    if sched::park::disarm() {
        crate::println!("fault injection: 'irq-park' saw no device interrupt (is --irq-load on?)");
    } else {
        crate::println!("fault injection: 'irq-park' left the interrupt dispatch implementation");
    }
}

/// `park-in-preempt-full`: 'preempt-low' wakes 'preempt-high' with
/// preemption disabled; its `preempt_enable` then reaches the point.
const AT_PREEMPT_ENABLE: usize = 1;
/// `park-in-irq-exit-full`: 'preempt-low' wakes 'preempt-high' with
/// interrupts masked; its unmask then runs the interrupt exit work.
const AT_IRQ_EXIT: usize = 2;
/// 'preempt-high''s task slot (for the wake).
static HIGH_SLOT: AtomicUsize = AtomicUsize::new(0);
/// 'preempt-low' has woken 'preempt-high'.
static HIGH_WOKEN: AtomicBool = AtomicBool::new(false);
/// 'preempt-low' came back out of the preemption point.
static LOW_PAST: AtomicBool = AtomicBool::new(false);

/// The higher-priority task (cpu 0): spawns 'preempt-low' below it on
/// its CPU, sleeps until that one wakes it, and, if it runs while
/// 'preempt-low' is still inside the point (preempted there: `full`),
/// stays busy until a switch request (as `sched::park`; bounded by
/// `park::WAIT_US`), then exits, letting 'preempt-low' finish.
fn preempt_high(at: usize) {
    HIGH_SLOT.store(sched::current().id().slot(), Ordering::Release);
    sched::spawn("preempt-low", FAULT_PRIO, 0, preempt_low, at);
    // The scheduler's blocking protocol, bare (a wait queue's generic
    // wait would be a new instance of its call sites).
    loop {
        sched::set_current_blocked();
        if HIGH_WOKEN.load(Ordering::Acquire) {
            sched::set_current_running();
            break;
        }
        sched::schedule();
    }
    let seq = request_seq();
    let point = if at == AT_PREEMPT_ENABLE { "preempt_enable" } else { "the interrupt return" };
    if LOW_PAST.load(Ordering::Acquire) {
        crate::println!("fault injection: 'preempt-low' was not preempted at {point} (the model is not full)");
        return;
    }
    crate::println!("fault injection: 'preempt-low' was preempted at {point}");
    let give_up = sched::now_tsc() + sched::us_to_tsc(sched::park::WAIT_US);
    while request_seq() == seq && sched::now_tsc() < give_up {
        core::hint::spin_loop();
    }
    crate::println!("fault injection: 'preempt-high' lets 'preempt-low' run");
}

/// Wakes 'preempt-high' (which outranks the caller on its CPU: a
/// reschedule is pending from here on).
fn wake_high() {
    HIGH_WOKEN.store(true, Ordering::Release);
    sched::wake_up(sched::task_by_slot(HIGH_SLOT.load(Ordering::Acquire)));
}

/// The lower-priority task (cpu 0): wakes 'preempt-high' where it cannot
/// be preempted, then leaves that section through the point `at` names,
/// where the `full` model switches to 'preempt-high' (through
/// `preempt_full` or `irq_exit_full`, into the scheduler).
fn preempt_low(at: usize) {
    if at == AT_PREEMPT_ENABLE {
        preempt_off(0, wake_high);
    } else {
        let was = crate::arch::cpu::save_and_disable_interrupts();
        wake_high();
        crate::arch::cpu::restore_interrupts(was);
    }
    LOW_PAST.store(true, Ordering::Release);
    crate::println!("fault injection: 'preempt-low' left the preemption point");
}

fn bad_frame(_: usize) {
    sched::freezer::exempt_current();
    let seq = request_seq();
    let give_up = sched::now_tsc() + sched::us_to_tsc(AFTER_REQUEST_WAIT_US);
    crate::println!("fault injection: 'bad-frame' runs with a corrupted frame pointer");
    let seq_addr = SWITCH_MAILBOX_ADDR + core::mem::offset_of!(SwitchMailbox, seq) as u64;
    // SAFETY: reads the mailbox's request number (ABI memory, identity
    // mapped) and the TSC; rbp is saved and restored around the loop,
    // which uses no stack (interrupts may come: they save rbp like any
    // register).
    unsafe {
        core::arch::asm!(
            "push rbp",
            "mov rbp, 0x1234",
            "2:",
            "pause",
            "cmp qword ptr [{seq_addr}], {seq}",
            "jne 3f",
            "rdtsc",
            "shl rdx, 32",
            "or rax, rdx",
            "cmp rax, {give_up}",
            "jb 2b",
            "3:",
            "pop rbp",
            seq_addr = in(reg) seq_addr,
            seq = in(reg) seq,
            give_up = in(reg) give_up,
            out("rax") _,
            out("rdx") _,
        );
    }
    crate::println!("fault injection: 'bad-frame' restored its frame pointer");
}

#[inline(never)]
fn hog(ms: usize) {
    let mut g = HOG_LOCK.lock();
    let seq = request_seq();
    crate::println!("fault injection: 'lock-hog' holds its lock");
    busy_for(ms, seq, || *g += 1);
    drop(g);
    crate::println!("fault injection: 'lock-hog' released its lock");
}

fn irq_off_spin(ms: usize) {
    // Start once this CPU's measurement thread has recorded an activation
    // (bounded: 1 s), so that it is asleep, waiting for its timer, when
    // the spin masks it: the spin then delays one wake-up by its length.
    // (Started before the thread ever ran, the spin only delays its first
    // deadline past: missed periods, no sample.)
    let cpu = crate::arch::percpu::cpu_id() as usize;
    let measured = crate::workload::measure_cpus() & (1 << cpu) != 0;
    let give_up = sched::now_tsc() + sched::us_to_tsc(1_000_000);
    while measured && crate::workload::last_deadline(cpu) == 0 && sched::now_tsc() < give_up {
        sched::sleep_us(1_000);
    }
    crate::println!("fault injection: 'irq-off-spin' masks interrupts");
    let seq = request_seq();
    let was = crate::arch::cpu::save_and_disable_interrupts();
    busy_for(ms, seq, || {});
    crate::arch::cpu::restore_interrupts(was);
    crate::println!("fault injection: 'irq-off-spin' enabled interrupts again");
}

/// Spins with preemption disabled (interrupts on): the CPU's watchdog thread
/// cannot run, so the watchdog reports this task.
fn stall(ms: usize) {
    preempt_off(ms, || {});
    crate::println!("fault injection: 'stall' let go of its CPU");
}

/// Disables preemption, runs `first`, spins `ms` milliseconds, enables
/// preemption. Not inlined: its `preempt_enable` is one call site for
/// all its callers (`stall`, `park-in-preempt-full`), so a caller adds
/// none.
#[inline(never)]
fn preempt_off(ms: usize, first: fn()) {
    let end = sched::now_tsc() + sched::us_to_tsc(ms as u64 * 1000);
    sched::preempt_disable();
    first();
    while sched::now_tsc() < end {
        core::hint::spin_loop();
    }
    sched::preempt_enable();
}

/// xorshift64: garbage that differs every call.
fn garbage(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A value that is not a mailbox state of the protocol (those are < 16).
fn bad_state(state: &mut u64) -> u32 {
    (garbage(state) as u32) | 0x100
}

fn scribble_mailbox(_: usize) {
    sched::sleep_us(100_000);
    crate::println!("fault injection: scribbling over the switch mailbox");
    let m = SWITCH_MAILBOX_ADDR as *mut SwitchMailbox;
    let mut g = sched::now_tsc() | 1;
    let end = sched::now_tsc() + sched::us_to_tsc(300_000);
    while sched::now_tsc() < end {
        // SAFETY: the mailbox page is ABI memory, identity-mapped RW; the
        // writes are volatile (the VMM reads it concurrently). Scribbling
        // over it is the point of this fault.
        unsafe {
            addr_of_mut!((*m).magic).write_volatile(garbage(&mut g));
            addr_of_mut!((*m).seq).write_volatile(garbage(&mut g));
            addr_of_mut!((*m).target).write_volatile(garbage(&mut g) as u32);
            addr_of_mut!((*m).state).write_volatile(bad_state(&mut g));
            addr_of_mut!((*m).mode).write_volatile(garbage(&mut g) as u32);
            addr_of_mut!((*m).blocker_cpu).write_volatile(garbage(&mut g) as u32);
            addr_of_mut!((*m).blocker_name).write_volatile([0xff; 16]);
            addr_of_mut!((*m).blocker_locks).write_volatile(garbage(&mut g) as u32);
        }
        raw_access(doorbell::SWITCH, 8, garbage(&mut g), true);
        sched::sleep_us(1000);
    }
    crate::println!("fault injection: switch mailbox left corrupted");
}

fn scribble_telemetry(_: usize) {
    sched::sleep_us(300_000);
    let h = crate::hv::boot_info::telemetry_addr() as *mut TelemetryHeader;
    let mut g = sched::now_tsc() | 1;
    // SAFETY: the telemetry region is identity-mapped RW guest memory; the
    // guest's writers use their boot-time layout, not these header fields.
    unsafe {
        addr_of_mut!((*h).cpu_count).write_volatile(garbage(&mut g) as u32 | 0x8000_0000);
        addr_of_mut!((*h).bucket_count).write_volatile(garbage(&mut g) as u32);
        addr_of_mut!((*h).epoch_slots).write_volatile(garbage(&mut g) as u32);
        addr_of_mut!((*h).cpu_stride).write_volatile(garbage(&mut g) as u32);
        addr_of_mut!((*h).load).write_volatile(garbage(&mut g) as u32 | 0x100);
    }
    crate::println!("fault injection: telemetry header corrupted");
}

static QUEUE_LOCK: SpinLock<u64> = SpinLock::new("fault.queue", 0);
/// How long each `lock-queue` member holds the lock.
pub const QUEUE_HOLD_US: u64 = 30_000;

fn queue_member(_: usize) {
    loop {
        let mut g = QUEUE_LOCK.lock();
        let end = sched::now_tsc() + sched::us_to_tsc(QUEUE_HOLD_US);
        while sched::now_tsc() < end {
            *g += 1;
            core::hint::spin_loop();
        }
        drop(g);
        sched::sleep_us(1000);
    }
}

fn text_write() {
    let target = text_write as *const () as u64;
    let alias = crate::mm::paging::alias_writable(target) + (target & 0xfff);
    crate::println!("fault injection: writing one byte of text at {target:#x} through a writable alias");
    // SAFETY: the alias maps the text page writable; the byte written is
    // the one already there, so even a hypervisor that let it through
    // would leave the code unchanged. Stopping the write is what this
    // fault injection tests.
    unsafe {
        let p = alias as *mut u8;
        p.write_volatile(p.read_volatile());
    }
    crate::println!("fault injection: the text write went through: the hypervisor did not stop it");
}

fn bad_hypercalls() {
    crate::println!("fault injection: bad hypercalls");
    raw_access(doorbell::END, 8, 0xdead_beef, true); // unknown register next to the others
    raw_access(0xff8, 8, 1, true);
    raw_access(doorbell::EXIT + 1, 8, 1, true); // misaligned
    raw_access(doorbell::EXIT, 1, 1, true); // wrong widths: must not be taken as exit/panic
    raw_access(doorbell::PANIC, 2, 0x1234, true);
    raw_access(doorbell::SWITCH, 4, 3, true);
    let read = raw_access(doorbell::READY, 8, 0, false);
    raw_access(doorbell::CPU_ONLINE, 8, 999, true); // no such CPU
    raw_access(doorbell::READY, 8, 0, true); // ready again
    raw_access(doorbell::SWITCH, 8, 3, true); // a switch nobody asked for
    raw_access(doorbell::CONSOLE, 8, doorbell::console_value(0xffff_ff00_0000, 16), true); // outside memory
    raw_access(doorbell::CONSOLE, 8, doorbell::console_value(0x10_0000, doorbell::CONSOLE_MAX + 1), true); // too long
    crate::println!("fault injection: bad hypercalls done (read {read:#x} from the ready register)");
}
