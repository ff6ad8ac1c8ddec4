//! The panic path: one report to the console and to the VMM, then halt.
//!
//! ```text
//! panic on cpu N ──first?──yes──> format the message into the PanicRecord,
//!      │                          publish it (magic last), print
//!      │                          "guest panic on cpu N at file:line:col: msg",
//!      │                          NMI every other CPU (they halt),
//!      │                          HC_PANIC(record), halt
//!      ├─ again on cpu N, once ──> same, message marked "panic while panicking"
//!      ├─ again on cpu N, deeper ─> HC_PANIC(record), halt
//!      └─ while cpu M panics ────> halt (M reports)
//! ```
//!
//! Recursion (a panic while formatting the message, a fault in the console)
//! is detected by the panicking CPU's id and counted, so it cannot loop.

use crate::arch::{apic, cpu, percpu};
use crate::hv::boot_info;
use crate::hv::hypercall;
use core::fmt::{self, Write};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicU32, Ordering};
use switcher::abi::{self, MAX_CPUS, PanicRecord};

const NOBODY: u32 = u32::MAX;
/// Id used for a CPU whose per-CPU data is not set up yet.
const UNKNOWN_CPU: u32 = u32::MAX - 1;

/// The CPU that is panicking, or [`NOBODY`].
static PANIC_CPU: AtomicU32 = AtomicU32::new(NOBODY);
/// How deep the panicking CPU's panics nest (1: the first; only it writes).
static PANIC_DEPTH: AtomicU32 = AtomicU32::new(1);
/// Levels that write a report: the first panic, and one panic inside it
/// (its record replaces the first's, marked "panic while panicking").
/// Deeper, only the hypercall is made: the report path itself is failing.
const MAX_REPORTS: u32 = 2;

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    cpu::disable_interrupts();
    let me = percpu::try_this().map_or(UNKNOWN_CPU, |p| p.cpu_id());
    let record_addr = boot_info::panic_record_addr();
    let depth = match PANIC_CPU.compare_exchange(NOBODY, me, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => 1,
        Err(owner) if owner == me => PANIC_DEPTH.fetch_add(1, Ordering::Relaxed) + 1,
        Err(_) => cpu::halt_forever(),
    };
    if depth > MAX_REPORTS {
        hypercall::panic(record_addr);
    }

    // The message is formatted once, into the record; the console prints
    // those bytes, so a message that panics while formatting is caught
    // before anything is half-printed.
    let (file, line, column) = info.location().map_or(("<unknown>", 0, 0), |l| (l.file(), l.line(), l.column()));
    let mut record = PanicRecord::zeroed();
    record.cpu = me;
    record.line = line;
    record.column = column;
    record.file_len = copy_truncated(&mut record.file, file) as u32;
    let mut writer = Truncating { buf: &mut record.message, len: 0, full: false };
    let _ = write!(writer, "{}", info.message());
    if depth > 1 {
        let _ = writer.write_str(" (panic while panicking)");
    }
    record.message_len = writer.len as u32;
    publish(record_addr, &record);

    let message =
        core::str::from_utf8(&record.message[..record.message_len as usize]).unwrap_or("<message is not UTF-8>");
    crate::hv::console::print_panic(format_args!(
        "guest panic on cpu {} at {file}:{line}:{column}: {message}\n",
        CpuName(me)
    ));
    stop_other_cpus(me);
    hypercall::panic(record_addr)
}

/// Writes the record to the shared page, magic last.
fn publish(addr: u64, record: &PanicRecord) {
    let page = addr as *mut PanicRecord;
    // SAFETY: the VMM reserves this page (identity mapped, ours to write)
    // for the panic record; nothing else in the guest uses it.
    unsafe {
        core::ptr::write_volatile(&raw mut (*page).magic, 0);
        core::ptr::write_volatile(page, PanicRecord { magic: 0, ..*record });
        core::ptr::write_volatile(&raw mut (*page).magic, abi::ABI_MAGIC);
    }
}

/// Sends an NMI to every other CPU whose APIC (hence IDT) is up; their
/// NMI handler (ring 0) sees the panic and halts. CPUs still booting are
/// left alone: an NMI before their IDT would triple-fault them.
fn stop_other_cpus(me: u32) {
    if !percpu::try_this().is_some_and(|p| p.apic_enabled()) {
        return;
    }
    crate::arch::nmi_means_stop();
    let cpus = (boot_info::cpu_count() as usize).min(MAX_CPUS);
    for cpu in (0..cpus).filter(|&c| c as u32 != me) {
        let other = percpu::of(cpu);
        if other.apic_enabled() {
            apic::send_nmi(other.apic_id());
        }
    }
}

/// Copies as much of `s` as fits into `buf` (whole characters only).
fn copy_truncated(buf: &mut [u8], s: &str) -> usize {
    let mut n = s.len().min(buf.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    buf[..n].copy_from_slice(&s.as_bytes()[..n]);
    n
}

/// A `fmt::Write` into a fixed buffer that keeps the longest prefix that
/// fits and drops the rest (never a later piece after a dropped one).
struct Truncating<'a> {
    buf: &'a mut [u8],
    len: usize,
    full: bool,
}

impl Write for Truncating<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !self.full {
            let n = copy_truncated(&mut self.buf[self.len..], s);
            self.len += n;
            self.full = n < s.len();
        }
        Ok(())
    }
}

/// A CPU id for messages: `?` when unknown.
struct CpuName(u32);

impl fmt::Display for CpuName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == UNKNOWN_CPU { f.write_str("?") } else { write!(f, "{}", self.0) }
    }
}
