//! Hypercalls to the VMM: one 8-byte write to a register of the doorbell
//! page (`switcher::abi::doorbell`), which no memory slot backs, so the
//! write exits to the VMM (`KVM_EXIT_MMIO`) from CPL3 as from CPL0. Each is
//! preceded by a full fence: the VMM reads the shared pages (GuestStatus,
//! PanicRecord, the mailbox, a console buffer) when the write exits, so
//! every write to them must be visible first.

use crate::arch::cpu;
use core::sync::atomic::{Ordering, fence};
use switcher::abi::{DOORBELL_ADDR, doorbell};

fn hypercall(register: u64, value: u64) {
    fence(Ordering::SeqCst);
    // SAFETY: the doorbell page is mapped (uncached, user-accessible) by
    // the boot and kernel page tables and backed by nothing: the write
    // only exits to the VMM, which validates it.
    unsafe { ((DOORBELL_ADDR + register) as *mut u64).write_volatile(value) };
}

/// Ends the guest with `status`. The VMM does not resume the guest; if it
/// did, this CPU halts rather than repeat the call.
pub fn exit(status: u32) -> ! {
    hypercall(doorbell::EXIT, u64::from(status));
    cpu::halt_forever()
}

pub fn cpu_online(cpu: u32) {
    hypercall(doorbell::CPU_ONLINE, u64::from(cpu));
}

/// Every CPU is online and the GuestStatus page is filled in.
pub fn ready() {
    hypercall(doorbell::READY, 0);
}

/// Reports the panic record at guest-physical `record_addr`, then halts.
pub fn panic(record_addr: u64) -> ! {
    hypercall(doorbell::PANIC, record_addr);
    cpu::halt_forever()
}

/// The switch mailbox changed to `state` (QUIESCENT or COMPLETE).
pub fn switch_changed(state: u32) {
    hypercall(doorbell::SWITCH, u64::from(state));
}

/// `--stop-above`: CPU `cpu` wrote the stop report (telemetry header).
pub fn stop_above(cpu: u32) {
    hypercall(doorbell::STOP_ABOVE, u64::from(cpu));
}

/// Writes `bytes` (at most `CONSOLE_MAX`) to the console in one exit.
pub fn console_write(bytes: &[u8]) {
    debug_assert!(bytes.len() <= doorbell::CONSOLE_MAX);
    if !bytes.is_empty() {
        // Identity mapped: the buffer's address is its guest-physical one.
        hypercall(doorbell::CONSOLE, doorbell::console_value(bytes.as_ptr() as u64, bytes.len()));
    }
}

/// A raw doorbell access, for the fault injection that tests the VMM's
/// checks (`faults`): `width` bytes (1, 2, 4 or 8) at `register`, a write
/// of `value` or a read.
pub fn raw_access(register: u64, width: usize, value: u64, write: bool) -> u64 {
    fence(Ordering::SeqCst);
    let addr = DOORBELL_ADDR + register;
    // SAFETY: as in `hypercall`; any access to the page only exits to the
    // VMM, whatever its width.
    unsafe {
        match (width, write) {
            (1, true) => (addr as *mut u8).write_volatile(value as u8),
            (2, true) => (addr as *mut u16).write_volatile(value as u16),
            (4, true) => (addr as *mut u32).write_volatile(value as u32),
            (_, true) => (addr as *mut u64).write_volatile(value),
            (1, false) => return u64::from((addr as *const u8).read_volatile()),
            (2, false) => return u64::from((addr as *const u16).read_volatile()),
            (4, false) => return u64::from((addr as *const u32).read_volatile()),
            (_, false) => return (addr as *const u64).read_volatile(),
        }
    }
    0
}
