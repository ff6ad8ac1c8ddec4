//! Hypercalls to the VMM, each a write to one register of the doorbell
//! page (`doorbell`, which says how it exits). The console's own write is
//! in `console`.

use crate::arch::cpu;
use crate::hv::doorbell::ring;
use core::sync::atomic::{Ordering, fence};
use switcher::abi::{DOORBELL_ADDR, MailboxState, doorbell};

/// Ends the guest with `status`. The VMM does not resume the guest; if it
/// did, this CPU halts rather than repeat the call.
pub fn exit(status: u32) -> ! {
    ring(doorbell::EXIT, u64::from(status));
    cpu::halt_forever()
}

pub fn cpu_online(cpu: u32) {
    ring(doorbell::CPU_ONLINE, u64::from(cpu));
}

/// Every CPU is online and the GuestStatus page is filled in.
pub fn ready() {
    ring(doorbell::READY, 0);
}

/// Reports the panic record at guest-physical `record_addr`, then halts.
pub fn panic(record_addr: u64) -> ! {
    ring(doorbell::PANIC, record_addr);
    cpu::halt_forever()
}

/// The switch mailbox changed to `state` (QUIESCENT or COMPLETE).
pub fn switch_changed(state: MailboxState) {
    ring(doorbell::SWITCH, u64::from(state as u32));
}

/// `--stop-above`: CPU `cpu` wrote the stop report (telemetry header).
pub fn stop_above(cpu: u32) {
    ring(doorbell::STOP_ABOVE, u64::from(cpu));
}

/// A raw doorbell access, for the fault injection that tests the VMM's
/// checks (`faults`): `width` bytes (1, 2, 4 or 8) at `register`, a write
/// of `value` or a read.
pub fn raw_access(register: u64, width: usize, value: u64, write: bool) -> u64 {
    fence(Ordering::SeqCst);
    let addr = DOORBELL_ADDR + register;
    // SAFETY: as in `doorbell::ring`; any access to the page only exits to the
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
