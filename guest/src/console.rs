//! Serial console on the 16550 UART at COM1, shared by all CPUs.
//!
//! One lock serializes whole messages (a `println!` is never interleaved
//! with another CPU's). The lock word holds the owner's CPU id, and the
//! holder runs with interrupts off, so an interrupt handler on the same CPU
//! can never wait for a lock its own CPU holds.
//!
//! The panic path ([`print_panic`]) never deadlocks: if this CPU already
//! owns the lock (it faulted while printing) or the owner does not let go
//! within [`PANIC_LOCK_WAIT_MS`] (it may be stopped or dead), it prints
//! anyway.
//!
//! FIFO discipline: with the FIFO enabled, "transmit holding register
//! empty" means 16 bytes may be written, so the line status is read once
//! per 16 bytes, not once per byte (each `in` is an exit to the VMM).

use crate::arch::cpu;
use crate::arch::percpu;
use crate::arch::port::{inb, outb};
use crate::boot_info;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicU32, Ordering};
use switcher::abi::port::SERIAL_COM1;

const IER: u16 = 1;
const FCR: u16 = 2;
const LCR: u16 = 3;
const LSR: u16 = 5;
const LSR_THR_EMPTY: u8 = 0x20;
const LCR_8N1: u8 = 0x03;
const FCR_ENABLE_AND_CLEAR: u8 = 0x07;
/// With the FIFO enabled, an empty THR means 16 bytes may be written.
const FIFO_DEPTH: usize = 16;

/// How long the panic path waits for another CPU to release the lock.
const PANIC_LOCK_WAIT_MS: u64 = 100;
/// TSC rate assumed when the boot info has none (only bounds a wait).
const FALLBACK_TSC_KHZ: u64 = 1_000_000;

const UNLOCKED: u32 = u32::MAX;
/// Owner id for a CPU whose per-CPU data is not set up.
const UNKNOWN_CPU: u32 = u32::MAX - 1;

/// CPU id of the lock holder, or [`UNLOCKED`].
static OWNER: AtomicU32 = AtomicU32::new(UNLOCKED);

/// Programs the UART: no interrupts, 8N1, FIFO on. CPU 0, once, at boot.
pub fn init() {
    outb(SERIAL_COM1 + IER, 0x00);
    outb(SERIAL_COM1 + LCR, LCR_8N1);
    outb(SERIAL_COM1 + FCR, FCR_ENABLE_AND_CLEAR);
}

struct Uart;

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for chunk in s.as_bytes().chunks(FIFO_DEPTH) {
            while inb(SERIAL_COM1 + LSR) & LSR_THR_EMPTY == 0 {
                core::hint::spin_loop();
            }
            for &b in chunk {
                outb(SERIAL_COM1, b);
            }
        }
        Ok(())
    }
}

/// Prints `args` as one message. Not for the panic path (use
/// [`print_panic`]). Valid once this CPU's per-CPU data is set up.
pub fn print(args: fmt::Arguments) {
    let interrupts_were_on = cpu::interrupts_enabled();
    cpu::disable_interrupts();
    let me = percpu::cpu_id();
    loop {
        if OWNER.load(Ordering::Relaxed) == UNLOCKED
            && OWNER.compare_exchange_weak(UNLOCKED, me, Ordering::Acquire, Ordering::Relaxed).is_ok()
        {
            break;
        }
        core::hint::spin_loop();
    }
    let _ = Uart.write_fmt(args);
    OWNER.store(UNLOCKED, Ordering::Release);
    if interrupts_were_on {
        cpu::enable_interrupts();
    }
}

/// Prints `args` from a panic or fatal exception, with interrupts off:
/// takes the lock if it can within a bounded time, prints regardless.
pub fn print_panic(args: fmt::Arguments) {
    cpu::disable_interrupts();
    let me = percpu::try_this().map_or(UNKNOWN_CPU, |p| p.cpu_id());
    let tsc_khz = match boot_info::tsc_khz() {
        0 => FALLBACK_TSC_KHZ,
        khz => khz,
    };
    let deadline = cpu::rdtsc_ordered().saturating_add(PANIC_LOCK_WAIT_MS * tsc_khz);
    let acquired = loop {
        let owner = OWNER.load(Ordering::Relaxed);
        if owner == me && me != UNKNOWN_CPU {
            // This CPU faulted while printing: its lock will never be freed.
            break false;
        }
        if owner == UNLOCKED && OWNER.compare_exchange(UNLOCKED, me, Ordering::Acquire, Ordering::Relaxed).is_ok() {
            break true;
        }
        if cpu::rdtsc_ordered() > deadline {
            break false;
        }
        core::hint::spin_loop();
    };
    let _ = Uart.write_fmt(args);
    if acquired {
        OWNER.store(UNLOCKED, Ordering::Release);
    }
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
