//! The console: a paravirtual write hypercall (`doorbell::CONSOLE`), one
//! VM exit per message instead of one per byte (as Xen PV's `console_io`;
//! a UART is port I/O, which CPL3 cannot do, and a byte per exit would
//! cost a millisecond per line).
//!
//! A message is formatted into a buffer on the caller's stack first, with
//! nothing held; if it fits ([`LINE_MAX`] bytes, the common case) it is
//! written in one hypercall, which the VMM writes out whole: such messages
//! of different CPUs never interleave. Only a longer message (a register
//! dump) takes the console lock, masked, and is written in pieces under
//! it (two long messages never interleave; a short one may land between
//! the pieces of a long one).
//!
//! The lock word holds the owner's CPU id, and the holder runs masked, so
//! an interrupt handler on the same CPU can never wait for a lock its own
//! CPU holds. The panic path ([`print_panic`]) never deadlocks: if this CPU
//! already owns the lock (it faulted while printing) or the owner does not
//! let go within [`PANIC_LOCK_WAIT_MS`] (it may be stopped or dead), it
//! prints anyway.

use crate::arch::{instr, irqflags, percpu};
use crate::hv::{boot_info, doorbell};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};
use switcher::abi::doorbell as register;

/// Longest message written in one piece.
const LINE_MAX: usize = 512;

/// How long the panic path waits for another CPU to release the lock.
const PANIC_LOCK_WAIT_MS: u64 = 100;
/// TSC rate assumed when the boot info has none (only bounds a wait).
const FALLBACK_TSC_KHZ: u64 = 1_000_000;

const UNLOCKED: u32 = u32::MAX;
/// Owner id for a CPU whose per-CPU data is not set up.
const UNKNOWN_CPU: u32 = u32::MAX - 1;

/// CPU id of the lock holder, or [`UNLOCKED`].
static OWNER: AtomicU32 = AtomicU32::new(UNLOCKED);

/// A message buffer; `overflowed` once a piece did not fit.
struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
    overflowed: bool,
}

impl Write for Line {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(LINE_MAX - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            self.overflowed = true;
            return Err(fmt::Error);
        }
        Ok(())
    }
}

/// Writes through the hypercall, a full buffer at a time (under the lock).
struct Pieces {
    line: Line,
}

impl Write for Pieces {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(LINE_MAX) {
            if self.line.len + chunk.len() > LINE_MAX {
                self.flush();
            }
            self.line.buf[self.line.len..self.line.len + chunk.len()].copy_from_slice(chunk);
            self.line.len += chunk.len();
        }
        Ok(())
    }
}

impl Pieces {
    fn flush(&mut self) {
        write_out(&self.line.buf[..self.line.len]);
        self.line.len = 0;
    }
}

/// Writes `bytes` (at most `CONSOLE_MAX`) to the console in one exit.
fn write_out(bytes: &[u8]) {
    debug_assert!(bytes.len() <= register::CONSOLE_MAX);
    if !bytes.is_empty() {
        // Identity mapped: the buffer's address is its guest-physical one.
        doorbell::ring(register::CONSOLE, register::console_value(bytes.as_ptr() as u64, bytes.len()));
    }
}

/// Prints `args` as one message. Not for the panic path (use
/// [`print_panic`]). Valid once this CPU's per-CPU data is set up.
pub fn print(args: fmt::Arguments) {
    let mut line = Line { buf: [0; LINE_MAX], len: 0, overflowed: false };
    if line.write_fmt(args).is_ok() && !line.overflowed {
        write_out(&line.buf[..line.len]);
        return;
    }
    let interrupts_were_on = irqflags::save();
    let me = percpu::cpu_id();
    loop {
        if OWNER.load(Ordering::Relaxed) == UNLOCKED
            && OWNER.compare_exchange_weak(UNLOCKED, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            break;
        }
        core::hint::spin_loop();
    }
    write_pieces(args);
    OWNER.store(UNLOCKED, Ordering::Release);
    irqflags::restore(interrupts_were_on);
}

fn write_pieces(args: fmt::Arguments) {
    let mut pieces = Pieces { line: Line { buf: [0; LINE_MAX], len: 0, overflowed: false } };
    let _ = pieces.write_fmt(args);
    pieces.flush();
}

/// Prints `args` from a panic or fatal exception (either ring), masked:
/// takes the lock if it can within a bounded time, prints regardless.
pub fn print_panic(args: fmt::Arguments) {
    irqflags::disable();
    let me = percpu::try_this().map_or(UNKNOWN_CPU, |p| p.cpu_id());
    let tsc_khz = match boot_info::tsc_khz() {
        0 => FALLBACK_TSC_KHZ,
        khz => khz,
    };
    let deadline = instr::rdtsc_ordered().saturating_add(PANIC_LOCK_WAIT_MS * tsc_khz);
    let acquired = loop {
        let owner = OWNER.load(Ordering::Relaxed);
        if owner == me && me != UNKNOWN_CPU {
            // This CPU faulted while printing: its lock will never be freed.
            break false;
        }
        if owner == UNLOCKED && OWNER.compare_exchange(UNLOCKED, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            break true;
        }
        if instr::rdtsc_ordered() > deadline {
            break false;
        }
        core::hint::spin_loop();
    };
    write_pieces(args);
    if acquired {
        OWNER.store(UNLOCKED, Ordering::Release);
    }
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::hv::console::print(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::hv::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
