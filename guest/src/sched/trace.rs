//! The per-CPU scheduler trace: a small ring of the last scheduler events
//! on each CPU (context switches, wake-ups, interrupts), kept always, for
//! `--stop-above`: when a sample crosses the threshold, its measurement
//! thread copies its CPU's ring into the stop report, so the VMM can print
//! what happened on that CPU just before the spike (rtla timerlat's
//! auto-analysis and cyclictest `-b` answer the same question with ftrace).
//!
//! Invariants: an event goes to the ring of the CPU it concerns (a wake-up
//! to the woken task's CPU, which may be written from another CPU, under
//! that CPU's run-queue lock); a slot is claimed with one `fetch_add` and
//! its fields are separate atomics, so writers never corrupt each other
//! and a reader at worst sees one entry half old, half new (diagnostics
//! only). Cost per event: an rdtsc and five relaxed stores.

use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use switcher::abi::MAX_CPUS;
use switcher::telemetry::{TASK_NAME_LEN, TRACE_LEN, TraceEntry, trace_kind};

use super::task::Task;

struct Slot {
    tsc: AtomicU64,
    /// kind << 32 | arg.
    kind_arg: AtomicU64,
    name: [AtomicU64; TASK_NAME_LEN / 8],
}

impl Slot {
    const fn new() -> Self {
        Self { tsc: AtomicU64::new(0), kind_arg: AtomicU64::new(0), name: [const { AtomicU64::new(0) }; 2] }
    }
}

struct Ring {
    /// Events ever written (the next slot is `head % TRACE_LEN`).
    head: AtomicUsize,
    slots: [Slot; TRACE_LEN],
}

static RINGS: [Ring; MAX_CPUS] =
    [const { Ring { head: AtomicUsize::new(0), slots: [const { Slot::new() }; TRACE_LEN] } }; MAX_CPUS];

fn name_words(name: &str) -> [u64; 2] {
    let mut b = [0u8; TASK_NAME_LEN];
    let n = name.len().min(TASK_NAME_LEN);
    b[..n].copy_from_slice(&name.as_bytes()[..n]);
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&b[..8]);
    hi.copy_from_slice(&b[8..]);
    [u64::from_le_bytes(lo), u64::from_le_bytes(hi)]
}

#[inline]
fn record(cpu: u32, kind: u32, arg: u32, name: [u64; 2]) {
    let Some(ring) = RINGS.get(cpu as usize) else { return };
    let i = ring.head.fetch_add(1, Ordering::Relaxed) % TRACE_LEN;
    let s = &ring.slots[i];
    s.tsc.store(crate::arch::cpu::rdtsc_ordered(), Ordering::Relaxed);
    s.kind_arg.store((u64::from(kind) << 32) | u64::from(arg), Ordering::Relaxed);
    s.name[0].store(name[0], Ordering::Relaxed);
    s.name[1].store(name[1], Ordering::Relaxed);
}

/// `cpu` switches to `next`.
#[inline]
pub fn switch(cpu: u32, next: &Task) {
    record(cpu, trace_kind::SWITCH, u32::from(next.prio()), name_words(next.name()));
}

/// `t` becomes runnable (on its own CPU's ring).
#[inline]
pub fn wake(t: &Task) {
    record(t.cpu(), trace_kind::WAKE, u32::from(t.prio()), name_words(t.name()));
}

/// `cpu` runs the handler of `vector`; `deferred`: it had arrived while
/// interrupts were soft-masked and ran at the unmask.
#[inline]
pub fn irq(cpu: u32, vector: u8, deferred: bool) {
    let kind = if deferred { trace_kind::IRQ_DEFERRED } else { trace_kind::IRQ };
    record(cpu, kind, u32::from(vector), [0, 0]);
}

/// A copy of `cpu`'s ring, oldest first; returns the valid entries.
pub fn snapshot(cpu: u32, out: &mut [TraceEntry; TRACE_LEN]) -> usize {
    let Some(ring) = RINGS.get(cpu as usize) else { return 0 };
    let head = ring.head.load(Ordering::Relaxed);
    let n = head.min(TRACE_LEN);
    for (k, o) in out.iter_mut().enumerate().take(n) {
        let s = &ring.slots[(head - n + k) % TRACE_LEN];
        let ka = s.kind_arg.load(Ordering::Relaxed);
        let mut name = [0u8; TASK_NAME_LEN];
        name[..8].copy_from_slice(&s.name[0].load(Ordering::Relaxed).to_le_bytes());
        name[8..].copy_from_slice(&s.name[1].load(Ordering::Relaxed).to_le_bytes());
        *o =
            TraceEntry { tsc: s.tsc.load(Ordering::Relaxed), kind: (ka >> 32) as u32, arg: ka as u32, task_name: name };
    }
    n
}
