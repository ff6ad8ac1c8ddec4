//! The guest's writer of the latency telemetry region
//! (`switcher::telemetry`: layout, seqlock, epochs): validation and
//! initialisation at boot, the per-CPU record writer, the header's load
//! counters and the final check, and opening a new epoch.
//!
//! Invariants:
//! - Nothing is written outside `[base, base + Layout::size())`, and only
//!   after [`init`] has checked that range against the boot info's size,
//!   guest memory and the end of the kernel image; if any check fails the
//!   workload runs without telemetry ([`is_active`] is false).
//! - Each CPU record has one writer, that CPU's measurement thread
//!   ([`record_sample`]); it holds the seqlock (odd `seq`) for the whole
//!   update, which goes to the epoch whose window holds the sample's
//!   deadline ([`record_sample`]). Epoch headers, `current_epoch` and
//!   record zeroing change only at [`init`] (before any measurement thread
//!   exists), in [`open_epoch`] (the control thread; a slot is published
//!   by its index only once zeroed) and when the last epoch closes.
//! - The header's magic is stored last, with Release, so a reader that
//!   sees it sees a complete header.
//!
//! No Rust reference to the region is ever formed (the VMM reads it
//! concurrently): fields are reached by raw-pointer projection and
//! accessed as atomics or volatile.

use core::ptr::{self, addr_of_mut};
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering, fence};

use switcher::abi::{ABI_MAGIC, MAX_CPUS};
use switcher::profile::Profile;
use switcher::telemetry::{
    CpuLatencyHeader, CpuMeasureState, EPOCH_SLOTS, EpochHeader, EpochKind, HistSummary, Layout, OVERFLOW_LOG,
    RECORD_ALIGN, StopReport, TASK_NAME_LEN, TRACE_LEN, TelemetryHeader, TraceEntry, WRITABLE_EPOCHS, exit_cause,
    periods_in,
};

use super::params::Params;
use crate::hv::boot_info;
use crate::println;

/// Region base address (0: no telemetry), CPU count and buckets per
/// histogram, set once by [`init`] before any reader in the guest.
static BASE: AtomicUsize = AtomicUsize::new(0);
static CPUS: AtomicUsize = AtomicUsize::new(0);
static BUCKETS: AtomicUsize = AtomicUsize::new(0);
/// Bucket width in ns, and the measurement period in TSC ticks (set by
/// [`init`] and [`set_interval_tsc`]).
static BUCKET_NS: AtomicU64 = AtomicU64::new(1000);
static INTERVAL_TSC: AtomicU64 = AtomicU64::new(0);

unsafe extern "C" {
    /// End of the kernel image (linker script).
    static __kernel_end: u8;
}

/// One measurement, ready to be recorded.
pub struct Sample {
    pub deadline_tsc: u64,
    /// The thread slept until the deadline. When it reached its wait after
    /// the deadline had passed, no wake-up was measured: the period counts
    /// as missed (its lateness in the corrected histogram), not as a
    /// thread sample of a few ns.
    pub slept: bool,
    pub thread_ns: u64,
    /// IRQ latency, if a timer IRQ served the deadline.
    pub irq_ns: Option<u64>,
    /// Periods skipped before this activation (their deadlines follow
    /// `deadline_tsc`, one interval apart).
    pub missed: u64,
    /// What the timer IRQ interrupted (for the worst sample).
    pub locks_held: u32,
    pub preempt_count: u32,
    pub task_name: &'static str,
    /// The interrupted task's address (0: none).
    pub task_addr: u64,
    /// The timer IRQ arrived while interrupts were soft-masked.
    pub deferred: bool,
    /// Host steal time on this CPU since the previous activation.
    pub steal_ns: u64,
    /// Activation number (cyclictest's cycle).
    pub cycle: u64,
    /// Exits this CPU made since the previous recorded activation, by
    /// `switcher::telemetry::exit_cause`.
    pub exits: [u64; exit_cause::COUNT],
    /// Of those, the ones between the serving timer IRQ's entry and the
    /// thread running (all 0 when no timer IRQ served the deadline).
    pub path_exits: [u64; exit_cause::COUNT],
}

/// Whether the region was validated and initialised.
pub fn is_active() -> bool {
    BASE.load(Ordering::Acquire) != 0
}

fn layout() -> Layout {
    Layout { cpu_count: CPUS.load(Ordering::Relaxed), bucket_count: BUCKETS.load(Ordering::Relaxed) }
}

fn header() -> *mut TelemetryHeader {
    BASE.load(Ordering::Relaxed) as *mut TelemetryHeader
}

/// A field of the region as an atomic.
macro_rules! atomic64 {
    ($place:expr) => {
        // SAFETY: the place lies inside the validated region (the macro's
        // callers project from `header()` or `record()`), is 8-aligned (repr(C)
        // of u64 fields at 64-aligned bases), and is only accessed atomically
        // or volatile while the region is live (forever).
        unsafe { AtomicU64::from_ptr(addr_of_mut!($place)) }
    };
}
macro_rules! atomic32 {
    ($place:expr) => {
        // SAFETY: as for `atomic64!`, 4-aligned.
        unsafe { AtomicU32::from_ptr(addr_of_mut!($place)) }
    };
}

/// Why the boot info's region is refused.
fn check_region(addr: u64, size: u64, layout: &Layout) -> Result<(), &'static str> {
    let need = layout.size() as u64;
    let kernel_end = (&raw const __kernel_end) as u64;
    if addr == 0 {
        return Err("no region given (telemetry_addr 0)");
    }
    if layout.bucket_count == 0 {
        return Err("hist_buckets is 0");
    }
    if !addr.is_multiple_of(RECORD_ALIGN as u64) {
        return Err("telemetry_addr is not 64-byte aligned");
    }
    if size < need {
        return Err("telemetry_size is smaller than the layout needs");
    }
    if addr < kernel_end {
        return Err("the region overlaps the kernel image");
    }
    if addr.checked_add(need).is_none_or(|end| end > boot_info::memory_bytes()) {
        return Err("the region ends past guest memory");
    }
    Ok(())
}

/// Validates the region the boot info names and initialises it (CPU 0,
/// before any measurement thread exists). Returns whether telemetry is on;
/// prints why not.
pub fn init(params: &Params, mode: Profile) -> bool {
    let cpus = boot_info::cpu_count() as usize;
    let buckets = boot_info::hist_buckets() as usize;
    BUCKET_NS.store(u64::from(params.bucket_us.max(1)) * 1000, Ordering::Relaxed);
    let (addr, size) = (boot_info::telemetry_addr(), boot_info::telemetry_size());
    // No overflow: at most 2^32 buckets * 8 bytes * 64 CPUs * 4 slots.
    let layout = Layout { cpu_count: cpus, bucket_count: buckets };
    if let Err(why) = check_region(addr, size, &layout) {
        println!(
            "telemetry: not used ({why}: addr {addr:#x}, size {size}, need {}, {buckets} buckets); measuring without it",
            layout.size()
        );
        return false;
    }
    CPUS.store(cpus, Ordering::Relaxed);
    BUCKETS.store(layout.bucket_count, Ordering::Relaxed);
    let h = addr as *mut TelemetryHeader;
    let header = TelemetryHeader {
        magic: 0,
        cpu_count: cpus as u32,
        bucket_count: layout.bucket_count as u32,
        epoch_slots: EPOCH_SLOTS as u32,
        cpu_stride: layout.cpu_stride() as u32,
        current_epoch: 0,
        interval_us: params.interval_us,
        cs_us: params.cs_us,
        load: params.load as u32,
        load_threads: params.load_threads,
        vmm_read_epoch: 0,
        running: 0,
        load_ops: 0,
        load_violations: 0,
        final_check: switcher::telemetry::final_check::PENDING,
        reset_gen: 0,
        final_tally: 0,
        final_locked_total: 0,
        unread_recycled: 0,
        measure_prio: u32::from(params.measure_prio),
        bucket_us: params.bucket_us.max(1),
        stop_above_us: params.stop_above_us,
        measure_cpus: params.measure_cpus,
        load_cpus: params.load_cpus,
        now_tsc: 0,
        interval_tsc: crate::sched::us_to_tsc(u64::from(params.interval_us)).max(1),
        stopped: 0,
        irq_rate_hz: params.irq_rate_hz,
        irq_work_us: params.irq_work_us,
        irq_prio: u32::from(params.irq_prio),
        epochs: [EpochHeader::UNUSED; EPOCH_SLOTS],
        cpus: [CpuMeasureState::default(); MAX_CPUS],
        stop: StopReport::EMPTY,
    };
    // SAFETY: `check_region` proved [addr, addr + size()) is guest memory
    // above the kernel, reserved for this region; nothing in the guest
    // uses it yet. Magic stays 0 until the end.
    unsafe {
        ptr::write_volatile(h, header);
    }
    BASE.store(addr as usize, Ordering::Release);
    // Slot 0 now; the others when their epochs open (`Prep`).
    finish_slot(0);
    let start_tsc = crate::sched::now_tsc();
    let epoch0 = EpochHeader { index: 0, mode: mode.code(), kind: EpochKind::Mode as u32, start_tsc, end_tsc: 0 };
    // SAFETY: inside the region's header (validated above).
    unsafe { ptr::write_volatile(addr_of_mut!((*h).epochs[0]), epoch0) };
    atomic64!((*h).magic).store(ABI_MAGIC, Ordering::Release);
    true
}

/// Words (u64) of a record's three histograms (`3 * 4 * bucket_count`
/// bytes, rounded up: the record stride is 64-byte aligned, so the last
/// half word is padding inside the record).
fn hist_words(layout: &Layout) -> usize {
    (3 * layout.bucket_count).div_ceil(2)
}

/// Zeroes `words` u64s at `dst` with one `rep stosq`: a single instruction
/// where ring 0 is emulated, instead of a loop of thousands.
///
/// # Safety
/// `dst` must be valid for writes of `words` u64s and 8-byte aligned.
unsafe fn zero_words(dst: *mut u64, words: usize) {
    // SAFETY: the caller guarantees the destination range; rep stosq
    // writes exactly rcx qwords upward from rdi (DF is clear in Rust code).
    unsafe {
        core::arch::asm!(
            "rep stosq",
            inout("rdi") dst => _,
            inout("rcx") words => _,
            in("rax") 0u64,
            options(nostack, preserves_flags),
        );
    }
}

/// A record with no samples.
const EMPTY_RECORD: CpuLatencyHeader = CpuLatencyHeader {
    seq: 0,
    samples: 0,
    missed: 0,
    irq: HistSummary::EMPTY,
    thread: HistSummary::EMPTY,
    corrected: HistSummary::EMPTY,
    worst: switcher::telemetry::WorstSample {
        deadline_tsc: 0,
        thread_ns: 0,
        irq_ns: 0,
        locks_held: 0,
        preempt_count: 0,
        task_name: [0; TASK_NAME_LEN],
        steal_ns: 0,
        masked_ns: 0,
        cycle: 0,
    },
    steal_ns: 0,
    max_net_ns: 0,
    last_thread_ns: 0,
    last_irq_ns: 0,
    overflow_cycles: [0; OVERFLOW_LOG],
    exits: [0; exit_cause::SLOTS],
    path_exits: [0; exit_cause::SLOTS],
};

/// Per CPU: the last `reset_gen` acted on.
static SEEN_RESET: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

/// Empties one record, as its only writer, under its seqlock.
fn reset_record(rec: *mut CpuLatencyHeader, layout: &Layout) {
    let seq = atomic64!((*rec).seq);
    let start = seq.load(Ordering::Relaxed);
    seq.store(start | 1, Ordering::Relaxed);
    fence(Ordering::Release);
    let empty = CpuLatencyHeader { seq: start | 1, ..EMPTY_RECORD };
    // SAFETY: the record and its histograms lie inside the region; this
    // CPU's measurement thread is its only writer and holds the seqlock.
    unsafe {
        ptr::write_volatile(rec, empty);
        zero_words(rec.cast::<u8>().add(layout.irq_buckets()).cast::<u64>(), hist_words(layout));
    }
    seq.store((start | 1) + 1, Ordering::Release);
}

/// Background preparation of the next epoch slot.
///
/// Zeroing a slot's histograms is tens of thousands of stores: on a host
/// that emulates ring 0, tens of milliseconds. So it is not done when an
/// epoch opens (in the middle of a mode switch) but ahead of time: after an
/// epoch opens in slot s, the preparer thread zeroes slot s+1 in small
/// chunks (each under `PREP`, a raw lock held for 64 stores), and
/// `open_epoch` takes whatever is left. The lock keeps interrupts on (only
/// threads use it): a timer interrupt is never held back by the zeroing. The slot being prepared holds the
/// epoch 3 before the current one, which the VMM has read and kept by then
/// (it reads once per switch, and every switch opens two epochs).
struct Prep {
    /// Slot being (or been) prepared; `usize::MAX`: none.
    slot: usize,
    /// Zeroing units done: `cpu * (hist_words + 1) + word`, word 0 being
    /// the record header.
    done: usize,
}

static PREP: crate::sched::raw_lock::RawSpinLock<Prep> =
    crate::sched::raw_lock::RawSpinLock::new("telemetry.prep", Prep { slot: usize::MAX, done: 0 });
/// Words zeroed per chunk.
const PREP_CHUNK: usize = 64;

fn prep_units(layout: &Layout) -> usize {
    layout.cpu_count * (hist_words(layout) + 1)
}

/// Zeroes units `[from, to)` of slot `slot` (see [`Prep::done`]).
fn zero_units(slot: usize, from: usize, to: usize, layout: &Layout) {
    let per = hist_words(layout) + 1;
    let mut u = from;
    while u < to {
        let (cpu, word) = (u / per, u % per);
        let rec = record(slot, cpu);
        if word == 0 {
            let empty = EMPTY_RECORD;
            // SAFETY: the record lies inside the region; the slot has no
            // writer (it is not the current epoch's, and `PREP` is held).
            unsafe { ptr::write_volatile(rec, empty) };
            u += 1;
            continue;
        }
        let n = (to - u).min(per - word);
        // SAFETY: words `word - 1 .. word - 1 + n` of this record's
        // histograms (`hist_words` in all) lie inside the record.
        unsafe { zero_words(rec.cast::<u8>().add(layout.irq_buckets()).cast::<u64>().add(word - 1), n) };
        u += n;
    }
}

/// The preparer's work: zero the slot epoch `epoch` will use, chunk by
/// chunk, giving up once that epoch has opened (its opening zeroes what is
/// left) or the VMM is too slow to read the slot's previous epoch.
pub fn prepare_slot(epoch: u64) {
    let slot = (epoch % EPOCH_SLOTS as u64) as usize;
    // Never zero an epoch the VMM has not read yet; if it is slow, the
    // opening of `epoch` zeroes the slot itself (after its own bounded wait).
    if !wait_until_slot_free(epoch, PREP_WAIT_US) {
        return;
    }
    let layout = layout();
    let total = prep_units(&layout);
    // An epoch that has opened meanwhile (the preparer ran late) had its
    // slot zeroed by its opening and is being recorded now: never touch
    // it. `open_epoch` publishes the new epoch only after `finish_slot`,
    // which takes the same lock, so the check under the lock is exact.
    let opened = || atomic64!((*header()).current_epoch).load(Ordering::Acquire) >= epoch;
    {
        let mut p = PREP.lock();
        if opened() {
            return;
        }
        p.slot = slot;
        p.done = 0;
    }
    loop {
        // Between chunks: a safe point (no lock held). A switch's freeze
        // parks the preparer here rather than waiting for the whole slot:
        // it outranks the load threads on its CPU, and they must run to
        // reach their own safe points.
        crate::sched::freezer::try_to_freeze();
        let mut p = PREP.lock();
        if p.slot != slot || p.done >= total || opened() {
            return;
        }
        let to = (p.done + PREP_CHUNK).min(total);
        zero_units(slot, p.done, to, &layout);
        p.done = to;
    }
}

/// How long opening an epoch waits for the VMM to read the epoch whose
/// slot it reuses (the VMM reads at every switch request and completion,
/// so this is only ever waited for on a host that starves the VMM).
const UNREAD_WAIT_US: u64 = 50_000;
/// How long the background preparer waits for it before leaving the slot
/// to the epoch's opening.
const PREP_WAIT_US: u64 = 20_000;

/// Whether epoch `epoch` may take its slot: the epoch that held it before
/// (`epoch - EPOCH_SLOTS`) has been read by the VMM.
fn slot_free_for(epoch: u64) -> bool {
    let Some(previous) = epoch.checked_sub(EPOCH_SLOTS as u64) else { return true };
    let read = atomic32!((*header()).vmm_read_epoch).load(Ordering::Acquire);
    (read.wrapping_sub(previous as u32) as i32) > 0
}

/// Sleeps (in 200 µs steps) until [`slot_free_for`]`(epoch)`, at most
/// `limit_us`; returns whether it is.
fn wait_until_slot_free(epoch: u64, limit_us: u64) -> bool {
    let deadline = crate::sched::now_tsc() + crate::sched::us_to_tsc(limit_us);
    while !slot_free_for(epoch) {
        if crate::sched::now_tsc() >= deadline {
            return false;
        }
        crate::sched::sleep_us(200);
    }
    true
}

/// Zeroes what the preparer has not yet zeroed of `slot` (all of it when
/// it was preparing another slot), then stops the preparer on it.
fn finish_slot(slot: usize) {
    let layout = layout();
    let total = prep_units(&layout);
    let mut p = PREP.lock();
    let from = if p.slot == slot { p.done } else { 0 };
    p.slot = usize::MAX;
    drop(p);
    zero_units(slot, from, total, &layout);
}

/// The CPU record of `cpu` in epoch slot `slot`.
fn record(slot: usize, cpu: usize) -> *mut CpuLatencyHeader {
    (BASE.load(Ordering::Relaxed) + layout().record(slot, cpu)) as *mut CpuLatencyHeader
}

/// The epoch being recorded now (0 without telemetry).
pub fn current_epoch() -> u64 {
    if !is_active() {
        return 0;
    }
    atomic64!((*header()).current_epoch).load(Ordering::Acquire)
}

/// Adds one sample to a histogram summary and its bucket array; returns
/// whether it overflowed the bucket range.
///
/// # Safety
/// `s` and `buckets` (`bucket_count` u32s) lie inside the region, in a
/// record whose seqlock the caller holds.
unsafe fn add(s: *mut HistSummary, buckets: *mut u32, bucket_count: usize, ns: u64) -> bool {
    let count = atomic64!((*s).count);
    count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    let sum = atomic64!((*s).sum_ns);
    sum.store(sum.load(Ordering::Relaxed).saturating_add(ns), Ordering::Relaxed);
    let min = atomic64!((*s).min_ns);
    if ns < min.load(Ordering::Relaxed) {
        min.store(ns, Ordering::Relaxed);
    }
    let max = atomic64!((*s).max_ns);
    if ns > max.load(Ordering::Relaxed) {
        max.store(ns, Ordering::Relaxed);
    }
    let bucket = (ns / BUCKET_NS.load(Ordering::Relaxed).max(1)) as usize;
    if bucket >= bucket_count {
        let overflow = atomic64!((*s).overflow);
        overflow.store(overflow.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        true
    } else {
        // SAFETY: `bucket < bucket_count`: inside the caller's bucket array.
        let b = unsafe { AtomicU32::from_ptr(buckets.add(bucket)) };
        b.store(b.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        false
    }
}

/// Sets the period the epoch attribution of missed periods steps by
/// (before the measurement threads start).
pub fn set_interval_tsc(ticks: u64) {
    INTERVAL_TSC.store(ticks, Ordering::Relaxed);
}

/// An epoch that may be written: its index, slot, window start and end
/// (0 while open).
#[derive(Clone, Copy)]
struct Window {
    index: u64,
    slot: usize,
    start: u64,
    end: u64,
}

/// The epoch whose window holds `tsc`, among those this side may write
/// (the current one and the one before it: `WRITABLE_EPOCHS`, the rule
/// the VMM freezes epochs by); the older of those when `tsc` is earlier
/// still.
fn window_for(tsc: u64) -> Window {
    let h = header();
    let current = atomic64!((*h).current_epoch).load(Ordering::Acquire);
    let mut found = None;
    for back in 0..WRITABLE_EPOCHS {
        let Some(index) = current.checked_sub(back) else { break };
        let slot = (index % EPOCH_SLOTS as u64) as usize;
        if atomic64!((*h).epochs[slot].index).load(Ordering::Acquire) != index {
            break;
        }
        let start = atomic64!((*h).epochs[slot].start_tsc).load(Ordering::Relaxed);
        let end = atomic64!((*h).epochs[slot].end_tsc).load(Ordering::Relaxed);
        found = Some(Window { index, slot, start, end });
        if tsc >= start {
            break;
        }
    }
    found.unwrap_or(Window { index: current, slot: (current % EPOCH_SLOTS as u64) as usize, start: 0, end: 0 })
}

/// The window after `w`, if it has opened.
fn window_after(w: &Window) -> Option<Window> {
    let h = header();
    let index = w.index + 1;
    if atomic64!((*h).current_epoch).load(Ordering::Acquire) < index {
        return None;
    }
    let slot = (index % EPOCH_SLOTS as u64) as usize;
    if atomic64!((*h).epochs[slot].index).load(Ordering::Acquire) != index {
        return None;
    }
    let start = atomic64!((*h).epochs[slot].start_tsc).load(Ordering::Relaxed);
    let end = atomic64!((*h).epochs[slot].end_tsc).load(Ordering::Relaxed);
    Some(Window { index, slot, start, end })
}

/// Runs `f` on CPU `cpu`'s record of `w` under the record's seqlock (this
/// CPU's measurement thread is its only writer).
fn with_record(cpu: usize, w: &Window, f: impl FnOnce(*mut CpuLatencyHeader, &Layout)) {
    let layout = layout();
    let rec = record(w.slot, cpu);
    let seq = atomic64!((*rec).seq);
    let start = seq.load(Ordering::Relaxed);
    seq.store(start | 1, Ordering::Relaxed);
    // Readers that see any of the stores below see the odd seq.
    fence(Ordering::Release);
    f(rec, &layout);
    seq.store((start | 1) + 1, Ordering::Release);
}

/// The corrected histogram of a record.
///
/// # Safety
/// `rec` is a record inside the region whose seqlock the caller holds.
unsafe fn add_corrected(rec: *mut CpuLatencyHeader, layout: &Layout, ns: u64) {
    // SAFETY: the caller's guarantee; the corrected buckets are inside it.
    unsafe {
        let b = rec.cast::<u8>().add(layout.corrected_buckets()).cast::<u32>();
        add(addr_of_mut!((*rec).corrected), b, layout.bucket_count, ns);
    }
}

/// Records one activation of CPU `cpu`'s measurement thread (the only
/// writer of its records) into the epoch whose window holds its deadline,
/// and each period it skipped into the epoch holding that period's
/// deadline (switcher::telemetry, "Epoch attribution"), each record under
/// its seqlock. Also advances the CPU's [`CpuMeasureState`] to `next` (the
/// deadline it waits for now).
pub fn record_sample(cpu: usize, s: &Sample, next: u64) {
    if !is_active() || cpu >= CPUS.load(Ordering::Relaxed) {
        return;
    }
    let h = header();
    // First the state, then the records: a reader between the two sees
    // the skipped periods neither as overdue nor as recorded (never twice).
    atomic64!((*h).cpus[cpu].next_deadline_tsc).store(next, Ordering::Release);
    atomic64!((*h).cpus[cpu].cycles).store(s.cycle + 1, Ordering::Relaxed);
    atomic64!((*h).cpus[cpu].last_deadline_tsc).store(s.deadline_tsc, Ordering::Release);
    raise_now(crate::sched::now_tsc());
    let reset_gen = atomic32!((*h).reset_gen).load(Ordering::Acquire);
    if let Some(seen) = SEEN_RESET.get(cpu)
        && seen.swap(reset_gen, Ordering::Relaxed) != reset_gen
    {
        let w = window_for(u64::MAX);
        reset_record(record(w.slot, cpu), &layout());
        // Tell the readers the record is empty now (until then they show
        // it as empty themselves).
        atomic32!((*h).cpus[cpu].reset_seen).store(reset_gen, Ordering::Release);
    }
    let w = window_for(s.deadline_tsc);
    if s.slept {
        with_record(cpu, &w, |rec, layout| record_activation(rec, layout, s));
    } else {
        record_periods(cpu, s.deadline_tsc, 1, s.thread_ns, w);
    }
    if s.missed != 0 {
        record_missed(cpu, s, w);
    }
}

/// The activation itself, into its deadline's record (seqlock held).
fn record_activation(rec: *mut CpuLatencyHeader, layout: &Layout, s: &Sample) {
    let samples = atomic64!((*rec).samples);
    samples.store(samples.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    let base = rec.cast::<u8>();
    let overflowed;
    // SAFETY: the summaries and the histograms are inside this record
    // (Layout offsets), and this CPU holds its seqlock.
    unsafe {
        if let Some(irq_ns) = s.irq_ns {
            let b = base.add(layout.irq_buckets()).cast::<u32>();
            add(addr_of_mut!((*rec).irq), b, layout.bucket_count, irq_ns);
        }
        let b = base.add(layout.thread_buckets()).cast::<u32>();
        overflowed = add(addr_of_mut!((*rec).thread), b, layout.bucket_count, s.thread_ns);
        add_corrected(rec, layout, s.thread_ns);
    }
    if overflowed {
        // `overflow` already counts this one.
        let n = atomic64!((*rec).thread.overflow).load(Ordering::Relaxed) as usize;
        if (1..=OVERFLOW_LOG).contains(&n) {
            atomic64!((*rec).overflow_cycles[n - 1]).store(s.cycle, Ordering::Relaxed);
        }
    }
    let steal = atomic64!((*rec).steal_ns);
    steal.store(steal.load(Ordering::Relaxed).saturating_add(s.steal_ns), Ordering::Relaxed);
    let net = s.thread_ns.saturating_sub(s.steal_ns);
    let max_net = atomic64!((*rec).max_net_ns);
    if net > max_net.load(Ordering::Relaxed) {
        max_net.store(net, Ordering::Relaxed);
    }
    for c in 0..exit_cause::COUNT {
        let e = atomic64!((*rec).exits[c]);
        e.store(e.load(Ordering::Relaxed).saturating_add(s.exits[c]), Ordering::Relaxed);
        let p = atomic64!((*rec).path_exits[c]);
        p.store(p.load(Ordering::Relaxed).saturating_add(s.path_exits[c]), Ordering::Relaxed);
    }
    atomic64!((*rec).last_thread_ns).store(s.thread_ns, Ordering::Relaxed);
    atomic64!((*rec).last_irq_ns).store(s.irq_ns.unwrap_or(0), Ordering::Relaxed);
    let worst = atomic64!((*rec).worst.thread_ns);
    if s.thread_ns > worst.load(Ordering::Relaxed) {
        let w = switcher::telemetry::WorstSample {
            deadline_tsc: s.deadline_tsc,
            thread_ns: s.thread_ns,
            irq_ns: s.irq_ns.unwrap_or(0),
            locks_held: s.locks_held,
            preempt_count: s.preempt_count,
            task_name: name_bytes(s.task_name),
            steal_ns: s.steal_ns,
            masked_ns: if s.deferred { s.irq_ns.unwrap_or(0) } else { 0 },
            cycle: s.cycle,
        };
        // SAFETY: inside this record, under its seqlock.
        unsafe { ptr::write_volatile(addr_of_mut!((*rec).worst), w) };
    }
}

fn name_bytes(name: &str) -> [u8; TASK_NAME_LEN] {
    let mut out = [0u8; TASK_NAME_LEN];
    let n = name.len().min(TASK_NAME_LEN);
    out[..n].copy_from_slice(&name.as_bytes()[..n]);
    out
}

/// The periods a late activation skipped (deadlines `deadline + j *
/// interval`, j = 1..=missed), each counted as missed in the epoch that
/// holds its deadline, with the latency it saw (the activation's minus
/// `j` periods) in that epoch's corrected histogram.
fn record_missed(cpu: usize, s: &Sample, first_window: Window) {
    let interval = INTERVAL_TSC.load(Ordering::Relaxed).max(1);
    let step_ns = interval.saturating_mul(1_000_000) / boot_info::tsc_khz().max(1);
    let first_ns = s.thread_ns.saturating_sub(step_ns);
    record_periods(cpu, s.deadline_tsc + interval, s.missed, first_ns, first_window);
}

/// A measurement thread that stops while periods are overdue (it could
/// not run until the workload stopped): those periods, up to now, are
/// missed, each with at least the time it waited.
pub fn record_stalled(cpu: usize, next: u64) {
    if !is_active() || cpu >= CPUS.load(Ordering::Relaxed) || next == 0 {
        return;
    }
    let interval = INTERVAL_TSC.load(Ordering::Relaxed).max(1);
    let now = crate::sched::now_tsc();
    if now <= next {
        return;
    }
    let n = (now - next).div_ceil(interval);
    let first_ns = (now - next).saturating_mul(1_000_000) / boot_info::tsc_khz().max(1);
    atomic64!((*header()).cpus[cpu].next_deadline_tsc).store(0, Ordering::Release);
    record_periods(cpu, next, n, first_ns, window_for(next));
}

/// `n` missed periods with deadlines `first + j * interval` (j = 0..n),
/// each counted in the epoch holding its deadline (from `first_window`
/// on), with latency `first_ns - j * interval` in the corrected histogram.
fn record_periods(cpu: usize, first: u64, n: u64, first_ns: u64, first_window: Window) {
    let interval = INTERVAL_TSC.load(Ordering::Relaxed).max(1);
    let step_ns = interval.saturating_mul(1_000_000) / boot_info::tsc_khz().max(1);
    let last = first + n.saturating_sub(1) * interval;
    if n == 0 {
        return;
    }
    let mut win = first_window;
    let mut j = 0u64;
    loop {
        let after = window_after(&win);
        // The last window that has opened takes every deadline left (one
        // being opened right now has not published its start yet).
        let to = if win.end == 0 || after.is_none() { u64::MAX } else { win.end };
        let from = if win.index == first_window.index { 0 } else { win.start };
        let here = periods_in(first, interval, from, to.min(last + 1));
        if here != 0 {
            let from_j = j;
            with_record(cpu, &win, |rec, layout| {
                let missed = atomic64!((*rec).missed);
                missed.store(missed.load(Ordering::Relaxed) + here, Ordering::Relaxed);
                // Bounded work: past this many, each waited longer than
                // any histogram range (counted once more at the range's end).
                for k in from_j..from_j + here.min(100_000) {
                    // SAFETY: this CPU's record, under its seqlock.
                    unsafe { add_corrected(rec, layout, first_ns.saturating_sub(k.saturating_mul(step_ns))) };
                }
            });
            j += here;
        }
        match after {
            Some(next) if j < n => win = next,
            _ => break,
        }
    }
}

/// Raises the header's `now_tsc` to `tsc` (activations and watchdog
/// beats: the readers' clock for overdue periods).
pub fn raise_now(tsc: u64) {
    if is_active() {
        atomic64!((*header()).now_tsc).fetch_max(tsc, Ordering::Relaxed);
    }
}

/// CPU `cpu`'s measurement thread waits for `deadline` (0: it stopped).
pub fn set_next_deadline(cpu: usize, deadline: u64) {
    if is_active() && cpu < CPUS.load(Ordering::Relaxed) {
        atomic64!((*header()).cpus[cpu].next_deadline_tsc).store(deadline, Ordering::Release);
    }
}

/// The deadline CPU `cpu`'s measurement thread waits for (0: none).
pub fn next_deadline(cpu: usize) -> u64 {
    if !is_active() || cpu >= CPUS.load(Ordering::Relaxed) {
        return 0;
    }
    atomic64!((*header()).cpus[cpu].next_deadline_tsc).load(Ordering::Acquire)
}

/// Deadline of CPU `cpu`'s last recorded activation (0: none yet).
pub fn last_deadline(cpu: usize) -> u64 {
    if !is_active() || cpu >= CPUS.load(Ordering::Relaxed) {
        return 0;
    }
    atomic64!((*header()).cpus[cpu].last_deadline_tsc).load(Ordering::Acquire)
}

/// Writes the `--stop-above` report for sample `s` of CPU `cpu`, once per
/// run (the first CPU to cross wins); returns whether this call wrote it.
pub fn write_stop(cpu: usize, s: &Sample) -> bool {
    if !is_active() {
        return false;
    }
    let h = header();
    // 0 -> 2 (being written) -> 1 (complete): one writer.
    if atomic32!((*h).stopped).compare_exchange(0, 2, Ordering::AcqRel, Ordering::Relaxed).is_err() {
        return false;
    }
    let mut trace = [TraceEntry::default(); TRACE_LEN];
    let n = crate::sched::trace::snapshot(cpu as u32, &mut trace);
    let report = StopReport {
        cpu: cpu as u32,
        locks_held: s.locks_held,
        preempt_count: s.preempt_count,
        irq_masked: u32::from(s.deferred),
        masked_ns: if s.deferred { s.irq_ns.unwrap_or(0) } else { 0 },
        deadline_tsc: s.deadline_tsc,
        thread_ns: s.thread_ns,
        irq_ns: s.irq_ns.unwrap_or(0),
        steal_ns: s.steal_ns,
        trace_len: n as u32,
        _reserved: 0,
        task_addr: s.task_addr,
        task_name: name_bytes(s.task_name),
        trace,
    };
    // SAFETY: inside the validated header; only this writer (claimed above).
    unsafe { ptr::write_volatile(addr_of_mut!((*h).stop), report) };
    atomic32!((*h).stopped).store(1, Ordering::Release);
    true
}

/// Closes the current epoch at shutdown (end TSC now), after the
/// measurement threads stopped: its window is final, and a CPU whose
/// thread never ran shows its overdue periods up to here.
pub fn close_current_epoch() {
    if !is_active() {
        return;
    }
    let h = header();
    let index = atomic64!((*h).current_epoch).load(Ordering::Acquire);
    let slot = (index % EPOCH_SLOTS as u64) as usize;
    let now = crate::sched::now_tsc();
    raise_now(now);
    atomic64!((*h).epochs[slot].end_tsc).store(now, Ordering::Release);
}

/// Publishes that the measurement threads run.
pub fn set_running(running: bool) {
    if is_active() {
        atomic32!((*header()).running).store(u32::from(running), Ordering::Release);
    }
}

/// Which device-interrupt count [`publish_irq`] sets.
pub enum IrqCount {
    Received,
    Hard,
    Threaded,
}

/// CPU `cpu`'s device interrupt count `what` is `n` (only that CPU, or
/// its handler thread, writes it).
pub fn publish_irq(cpu: usize, what: IrqCount, n: u64) {
    if !is_active() || cpu >= MAX_CPUS {
        return;
    }
    let h = header();
    match what {
        IrqCount::Received => atomic64!((*h).cpus[cpu].irq_received).store(n, Ordering::Relaxed),
        IrqCount::Hard => atomic64!((*h).cpus[cpu].irq_hard).store(n, Ordering::Relaxed),
        IrqCount::Threaded => atomic64!((*h).cpus[cpu].irq_threaded).store(n, Ordering::Relaxed),
    }
}

/// One more load operation (any load thread).
pub fn add_load_op() {
    if is_active() {
        atomic64!((*header()).load_ops).fetch_add(1, Ordering::Relaxed);
    }
}

/// One more invariant violation seen inside a critical section.
pub fn add_load_violation() {
    if is_active() {
        atomic64!((*header()).load_violations).fetch_add(1, Ordering::Relaxed);
    }
}

/// Publishes the load's final check (a `final_check` value).
pub fn set_final_check(tally: u64, locked_total: u64, check: u32) {
    if !is_active() {
        return;
    }
    let h = header();
    atomic64!((*h).final_tally).store(tally, Ordering::Relaxed);
    atomic64!((*h).final_locked_total).store(locked_total, Ordering::Relaxed);
    atomic32!((*h).final_check).store(check, Ordering::Release);
}

/// Closes the current epoch (end TSC now) and opens the next one in
/// `mode`, `kind`, in slot `(index + 1) % EPOCH_SLOTS` with zeroed
/// records (mostly zeroed ahead of time by the preparer: [`Prep`]). One
/// caller at a time (the control thread). Measurement threads may record
/// meanwhile: they write only epochs whose slot is published with its
/// index ([`window_for`]), and the new slot is published only once zeroed,
/// with its start at or after every deadline recorded so far. Returns the
/// new epoch index.
pub fn open_epoch(mode: Profile, kind: EpochKind) -> Option<u64> {
    if !is_active() {
        return None;
    }
    let h = header();
    let next = atomic64!((*h).current_epoch).load(Ordering::Relaxed) + 1;
    if !wait_until_slot_free(next, UNREAD_WAIT_US) {
        atomic32!((*h).unread_recycled).fetch_add(1, Ordering::Relaxed);
    }
    let now = crate::sched::now_tsc();
    let index = atomic64!((*h).current_epoch).load(Ordering::Relaxed);
    let old = (index % EPOCH_SLOTS as u64) as usize;
    atomic64!((*h).epochs[old].end_tsc).store(now, Ordering::Relaxed);
    let next = index + 1;
    let slot = (next % EPOCH_SLOTS as u64) as usize;
    // Mark the slot unused while its records are reset, then publish it.
    atomic64!((*h).epochs[slot].index).store(u64::MAX, Ordering::Release);
    finish_slot(slot);
    let epoch = EpochHeader { index: u64::MAX, mode: mode.code(), kind: kind as u32, start_tsc: now, end_tsc: 0 };
    // SAFETY: inside the header; no reader relies on a slot with index MAX.
    unsafe { ptr::write_volatile(addr_of_mut!((*h).epochs[slot]), epoch) };
    atomic64!((*h).epochs[slot].index).store(next, Ordering::Release);
    atomic64!((*h).current_epoch).store(next, Ordering::Release);
    Some(next)
}
