//! Self-tests of the deprivileged kernel (part of `--selftest`): the soft
//! interrupt mask and the ring-0 shim.
//!
//! - soft mask: an interrupt raised while masked is deferred (not run
//!   inside the masked region), not lost (it runs at the unmask), nested
//!   irqsave/irqrestore keep it deferred until the outermost restore, and
//!   several deferred vectors replay highest first;
//! - shim: every entry is counted, by service, on the CPU that made it,
//!   and a refused one is counted as refused;
//! - no shim entry on the hot paths: a loop of uncontended switchable and
//!   raw lock operations, and a run of measurement activations (timer
//!   armed, IRQ at CPL3, wake-up, context switch) on a CPU kept busy (so
//!   that it never idles, which halts through the shim), leave the CPU's
//!   shim counts unchanged.
//!
//! The interrupts come from self-IPIs on three test vectors of different
//! priority classes ([`TEST_VECTORS`]); their handler logs the order they
//! ran in and whether the test's masked region was active.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicUsize, Ordering};

use crate::arch::{apic, cpu, irqflags, msr, percpu, shim};
use crate::sched::raw_lock::RawSpinLock;
use crate::sched::{self, now_tsc, us_to_tsc};
use crate::sync::spinlock::SpinLock;
use switcher::abi::shim as service;

/// Test vectors, lowest priority class first (classes 5, 9 and 14).
pub const TEST_VECTORS: [u8; 3] = [0x50, 0x90, 0xe0];

/// The order in which test vectors ran (up to 8).
static LOG: [AtomicU8; 8] = [const { AtomicU8::new(0) }; 8];
static LOG_LEN: AtomicUsize = AtomicUsize::new(0);
/// Set while a test runs masked: a handler that runs then is a bug.
static IN_MASKED_REGION: AtomicBool = AtomicBool::new(false);
static RAN_INSIDE: AtomicU32 = AtomicU32::new(0);
/// Handlers that found interrupts unmasked (they must run masked).
static RAN_UNMASKED: AtomicU32 = AtomicU32::new(0);

/// Whether `vector` is one of the test vectors.
pub fn is_test_vector(vector: u8) -> bool {
    TEST_VECTORS.contains(&vector)
}

/// The test vectors' handler (hard-IRQ context; EOI by the caller).
pub fn on_test_vector(vector: u8) {
    crate::sched::handler_mark::mark_handler_entry(crate::arch::cpu::rdtsc_ordered());
    if IN_MASKED_REGION.load(Ordering::Relaxed) {
        RAN_INSIDE.fetch_add(1, Ordering::Relaxed);
    }
    if !irqflags::disabled() {
        RAN_UNMASKED.fetch_add(1, Ordering::Relaxed);
    }
    let i = LOG_LEN.fetch_add(1, Ordering::Relaxed);
    if let Some(slot) = LOG.get(i) {
        slot.store(vector, Ordering::Relaxed);
    }
}

fn reset_log() {
    LOG_LEN.store(0, Ordering::Relaxed);
    RAN_INSIDE.store(0, Ordering::Relaxed);
    RAN_UNMASKED.store(0, Ordering::Relaxed);
}

fn logged() -> usize {
    LOG_LEN.load(Ordering::Relaxed)
}

/// Whether `vector` is recorded as pending (deferred by the soft mask).
fn is_pending(vector: u8) -> bool {
    irqflags::pending_vectors()[usize::from(vector / 64)] & (1 << (vector % 64)) != 0
}

/// Bound on waiting for a self-IPI: it comes at the CPU's next entry, so
/// this only keeps a lost one from hanging the suite.
const SELF_IPI_WAIT_US: u64 = 1_000_000;

/// Masked: raises `vectors` on this CPU and waits until the CPU has taken
/// (and recorded) every one, or a handler ran inside the masked region
/// (the bug the tests look for), or [`SELF_IPI_WAIT_US`] passed.
fn raise_masked(vectors: &[u8]) {
    for &v in vectors {
        apic::send_self_ipi(v);
    }
    let give_up = now_tsc() + us_to_tsc(SELF_IPI_WAIT_US);
    while !vectors.iter().all(|&v| is_pending(v)) && logged() == 0 && now_tsc() < give_up {
        core::hint::spin_loop();
    }
}

fn check(cond: bool, why: &'static str) -> Result<(), &'static str> {
    if cond { Ok(()) } else { Err(why) }
}

/// A masked interrupt waits for the unmask, runs then, and runs masked.
pub fn soft_mask_defers() -> Result<(), &'static str> {
    reset_log();
    cpu::disable_interrupts();
    IN_MASKED_REGION.store(true, Ordering::Relaxed);
    raise_masked(&TEST_VECTORS[2..]);
    let recorded = is_pending(TEST_VECTORS[2]);
    let ran_while_masked = logged();
    IN_MASKED_REGION.store(false, Ordering::Relaxed);
    cpu::enable_interrupts();
    check(ran_while_masked == 0 && RAN_INSIDE.load(Ordering::Relaxed) == 0, "a handler ran inside the masked region")?;
    check(recorded, "the masked interrupt was not recorded as pending")?;
    check(logged() == 1, "the deferred interrupt did not run (exactly once) at the unmask")?;
    check(RAN_UNMASKED.load(Ordering::Relaxed) == 0, "a handler ran with interrupts unmasked")
}

/// Nested irqsave/irqrestore: the vector waits for the outermost restore.
pub fn soft_mask_nests() -> Result<(), &'static str> {
    reset_log();
    let outer = cpu::save_and_disable_interrupts();
    let inner = cpu::save_and_disable_interrupts();
    IN_MASKED_REGION.store(true, Ordering::Relaxed);
    raise_masked(&TEST_VECTORS[1..2]);
    IN_MASKED_REGION.store(false, Ordering::Relaxed);
    cpu::restore_interrupts(inner);
    let after_inner = logged();
    cpu::restore_interrupts(outer);
    check(outer && !inner, "irqsave did not report the state it found")?;
    check(after_inner == 0, "the inner restore unmasked")?;
    check(logged() == 1, "the deferred interrupt did not run at the outer restore")
}

/// Several deferred vectors replay highest first (the LAPIC's order).
pub fn soft_mask_replay_order() -> Result<(), &'static str> {
    reset_log();
    cpu::disable_interrupts();
    IN_MASKED_REGION.store(true, Ordering::Relaxed);
    raise_masked(&TEST_VECTORS);
    IN_MASKED_REGION.store(false, Ordering::Relaxed);
    let ran_while_masked = logged();
    cpu::enable_interrupts();
    check(ran_while_masked == 0, "a handler ran inside the masked region")?;
    check(logged() == TEST_VECTORS.len(), "a deferred interrupt was lost")?;
    let order = [0, 1, 2].map(|i| LOG[i].load(Ordering::Relaxed));
    check(order == [TEST_VECTORS[2], TEST_VECTORS[1], TEST_VECTORS[0]], "deferred vectors did not replay highest first")
}

/// Shim entries are counted per service on this CPU; refused ones too.
pub fn shim_counts_entries() -> Result<(), &'static str> {
    let me = percpu::cpu_id() as usize;
    // Stay on this CPU's counts: no idling (a halt is an entry too).
    let _no_preempt = NoPreempt::new();
    let before = shim::stats(me);
    let mut apic_base = 0;
    for _ in 0..3 {
        apic_base = shim::rdmsr(msr::IA32_APIC_BASE).unwrap_or(0);
    }
    let refused = shim::rdmsr(0x10).is_none(); // IA32_TSC: not on the allow-list
    let after = shim::stats(me);
    let rdmsr = after.entries[service::RDMSR] - before.entries[service::RDMSR];
    check(apic_base & (1 << 11) != 0, "the shim's RDMSR of IA32_APIC_BASE did not show the APIC enabled")?;
    check(refused, "the shim read an MSR that is not on its allow-list")?;
    check(rdmsr == 4, "RDMSR entries were not counted one by one")?;
    check(after.rejected == before.rejected + 1, "the refused entry was not counted as rejected")
}

/// Preemption off for a scope (no idle, no migration of the counts).
struct NoPreempt;

impl NoPreempt {
    fn new() -> Self {
        sched::preempt_disable();
        Self
    }
}

impl Drop for NoPreempt {
    fn drop(&mut self) {
        sched::preempt_enable();
    }
}

fn total(s: &switcher::abi::ShimStats) -> u64 {
    s.entries.iter().sum::<u64>() + s.rejected
}

static FAST_LOCK: SpinLock<u64> = SpinLock::new("selftest.fast", 0);
static FAST_RAW: RawSpinLock<u64> = RawSpinLock::new("selftest.raw", 0);

/// Uncontended lock operations never enter the shim.
pub fn no_shim_on_lock_fast_paths() -> Result<(), &'static str> {
    let me = percpu::cpu_id() as usize;
    let before = shim::stats(me);
    for _ in 0..10_000 {
        *FAST_LOCK.lock() += 1;
        FAST_LOCK.try_increment();
        *FAST_RAW.lock_irqsave() += 1;
        *FAST_RAW.lock() += 1;
    }
    let after = shim::stats(me);
    check(*FAST_LOCK.lock() == 20_000 && *FAST_RAW.lock() == 20_000, "lost updates in the lock loop")?;
    check(total(&after) == total(&before), "a lock fast path entered the ring-0 shim")
}

static SPINNER_STOP: AtomicBool = AtomicBool::new(false);

fn spinner(_: usize) {
    while !SPINNER_STOP.load(Ordering::Relaxed) {
        // A kernel loop's preemption point: under none and voluntary the
        // woken measurement takes the CPU here, under full at the
        // interrupt return.
        sched::cond_resched();
        core::hint::spin_loop();
    }
}

/// Measurement activations (sleep until a deadline, the timer IRQ, the
/// wake-up and switch back) never enter the shim, on a CPU that never idles.
/// The activations run until `ACTIVATIONS` of them were served by their
/// timer IRQ (one the host delayed past the next deadline is not), bounded
/// by attempts.
pub fn no_shim_in_measurement() -> Result<(), &'static str> {
    const ACTIVATIONS: u64 = 50;
    const ATTEMPTS: u64 = 20 * ACTIVATIONS;
    let me = percpu::cpu_id();
    SPINNER_STOP.store(false, Ordering::Relaxed);
    let spinner = sched::spawn("selftest-spin", 1, me, spinner, 0);
    // Let the spinner start (it keeps this CPU out of idle from now on).
    sched::sleep_us(2_000);
    let khz = crate::hv::boot_info::tsc_khz().max(1);
    let interval = us_to_tsc(500);
    let probe = sched::this_cpu_probe();
    let before = shim::stats(me as usize);
    let mut next = now_tsc() + interval;
    let mut served = 0;
    for _ in 0..ATTEMPTS {
        let sample = crate::workload::activation(probe, next, interval, khz);
        served += u64::from(sample.irq_ns.is_some());
        next += (sample.missed + 1) * interval;
        if served == ACTIVATIONS {
            break;
        }
    }
    probe.watch(0);
    let after = shim::stats(me as usize);
    SPINNER_STOP.store(true, Ordering::Relaxed);
    sched::join(spinner);
    check(served == ACTIVATIONS, "activations were not served by their timer IRQ (50 in 1000 attempts)")?;
    check(total(&after) == total(&before), "a measurement activation entered the ring-0 shim")
}
