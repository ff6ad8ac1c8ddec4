//! Serial console on the 16550 UART at COM1.
use crate::arch::port::{inb, outb};
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use switcher::abi::port::SERIAL_COM1;

const LSR: u16 = 5;
const LSR_THR_EMPTY: u8 = 0x20;
/// With the FIFO enabled, an empty THR means 16 bytes may be written.
const FIFO_DEPTH: usize = 16;

static LOCK: AtomicBool = AtomicBool::new(false);

pub fn init() {
    outb(SERIAL_COM1 + 1, 0x00); // no interrupts
    outb(SERIAL_COM1 + 3, 0x03); // 8N1
    outb(SERIAL_COM1 + 2, 0x07); // FIFO on, cleared
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

pub fn print(args: fmt::Arguments) {
    while LOCK.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
        core::hint::spin_loop();
    }
    let _ = Uart.write_fmt(args);
    LOCK.store(false, Ordering::Release);
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
