//! The soft interrupt mask's replay, as a protocol core: what runs when a
//! CPU unmasks, or after the handler of an interrupt that came to an
//! unmasked CPU. The kernel runs it through `arch/irqflags.rs` on its
//! per-CPU words; the model checker (`model/`) runs the same code on a
//! model CPU whose interrupts arrive between any two accesses.
//!
//! The per-CPU words (`arch/percpu.rs`), and who writes them:
//!
//! ```text
//!   masked       1 while interrupts are (soft-)masked      the CPU's own code
//!   pending[4]   vectors taken while masked, not yet run    entry sets, replay clears
//!   pending_any  "look at pending" (or run the exit work)   entry sets, replay clears
//!   eoi_owed     EOIs owed for deliveries merged into an    entry adds, replay pays
//!                already-pending vector
//! ```
//!
//! Delivery accounting: every delivery the LAPIC makes (but the spurious
//! vector's) sets an in-service bit that only an EOI retires, and an EOI
//! retires the highest one in service, whichever vector's handler writes
//! it. So a CPU owes exactly one EOI per accepted delivery. A delivery
//! taken while masked is recorded as a pending bit and runs (and EOIs)
//! once, at the unmask; a second delivery of the same vector before that
//! run merges into the same bit, and its EOI is owed (`eoi_owed`, counted
//! by the entry), paid after the next handler here. Without it, a higher
//! vector accepted twice during a lower one's handler leaves the lower
//! one's in-service bit set for good: the LAPIC then holds back its whole
//! priority class (timer 0x30, device 0x38, host request 0x40).
//!
//! The entry itself (`arch/entry.rs`) is assembly: its masked path is
//! [`record`] instruction for instruction (`bts pending`, the owed EOI
//! when the bit was set, `pending_any = 1`); the model runs `record`.

use core::sync::atomic::Ordering;

use super::atomic::{Atomic, AtomicInt};

/// The vector the LAPIC delivers when an interrupt went away before it
/// was accepted: it sets no in-service bit, so it owes no EOI.
pub const SPURIOUS: u8 = 0xff;

/// One CPU's soft-mask words and what the replay calls.
pub trait SoftMaskCpu {
    type U32: AtomicInt<u32>;
    type U64: AtomicInt<u64>;

    fn pending(&self) -> &[Self::U64; 4];
    fn pending_any(&self) -> &Self::U32;
    fn eoi_owed(&self) -> &Self::U32;
    /// The kernel's handler of `vector` (runs masked; it EOIs itself,
    /// but for the spurious vector).
    fn handler(&self, vector: u8);
    /// The work after a batch of handlers (preemption: may switch tasks).
    fn exit_work(&self);
    /// One EOI at the LAPIC.
    fn eoi(&self);
    /// A handler runs now for an interrupt deferred to the unmask
    /// (diagnostics).
    fn set_replaying(&self, replaying: bool);
}

/// The entry's masked path: records `vector` to run at the unmask. (The
/// kernel's entry does this in assembly; see the module doc.)
pub fn record<C: SoftMaskCpu>(c: &C, vector: u8) {
    let word = &c.pending()[usize::from(vector / 64)];
    let bit = 1u64 << (vector % 64);
    if word.fetch_or(bit, Ordering::Relaxed) & bit != 0 && vector != SPURIOUS {
        c.eoi_owed().fetch_add(1, Ordering::Relaxed);
    }
    c.pending_any().store(1, Ordering::Relaxed);
}

/// Takes the highest pending vector off this CPU's pending set. Masked.
pub fn take_highest<C: SoftMaskCpu>(c: &C) -> Option<u8> {
    let p = c.pending();
    for word in (0..4).rev() {
        let bits = p[word].load(Ordering::Relaxed);
        if bits != 0 {
            let bit = 63 - bits.leading_zeros();
            // An interrupt-atomic clear: a vector recorded meanwhile by an
            // entry on this CPU (another bit) is kept.
            p[word].fetch_and(!(1u64 << bit), Ordering::Relaxed);
            return Some((word * 64) as u8 + bit as u8);
        }
    }
    None
}

/// Runs every recorded vector, highest first (including those recorded
/// while it runs), paying the EOIs owed for merged deliveries after each,
/// then the exit work. Masked.
pub fn replay_pending<C: SoftMaskCpu>(c: &C) {
    c.pending_any().store(0, Ordering::Relaxed);
    while let Some(v) = take_highest(c) {
        c.set_replaying(true);
        c.handler(v);
        c.set_replaying(false);
        pay_owed_eois(c);
    }
    c.exit_work();
}

/// One interrupt taken on an unmasked CPU (now masked): its handler, then
/// whatever was recorded meanwhile, then the exit work.
pub fn on_interrupt<C: SoftMaskCpu>(c: &C, vector: u8) {
    c.handler(vector);
    pay_owed_eois(c);
    replay_pending(c);
}

fn pay_owed_eois<C: SoftMaskCpu>(c: &C) {
    let owed = c.eoi_owed().swap(0, Ordering::Relaxed);
    for _ in 0..owed {
        c.eoi();
    }
}
