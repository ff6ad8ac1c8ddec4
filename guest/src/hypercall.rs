//! Hypercalls to the VMM: one 32-bit `out` per call, to the ports in
//! `switcher::abi::port`. Each is preceded by a full fence: the VMM reads
//! the shared pages (GuestStatus, PanicRecord) when the `out` exits, so
//! every write to them must be visible first.

use crate::arch::cpu;
use crate::arch::port::outl;
use core::sync::atomic::{Ordering, fence};
use switcher::abi::port;

fn hypercall(port: u16, value: u32) {
    fence(Ordering::SeqCst);
    outl(port, value);
}

/// Ends the guest with `status`. The VMM does not resume the guest; if it
/// did, this CPU halts rather than repeat the call.
pub fn exit(status: u32) -> ! {
    hypercall(port::HC_EXIT, status);
    cpu::halt_forever()
}

pub fn cpu_online(cpu: u32) {
    hypercall(port::HC_CPU_ONLINE, cpu);
}

/// Every CPU is online and the GuestStatus page is filled in.
pub fn ready() {
    hypercall(port::HC_READY, 0);
}

/// Reports the panic record at guest-physical `record_addr`, then halts.
pub fn panic(record_addr: u64) -> ! {
    hypercall(port::HC_PANIC, record_addr as u32);
    cpu::halt_forever()
}
