//! Hypercalls to the VMM (see `switcher::abi::port`).
use crate::arch::port::outl;
use switcher::abi::port;

pub fn exit(status: u32) -> ! {
    loop {
        outl(port::HC_EXIT, status);
    }
}

pub fn cpu_online(cpu: u32) {
    outl(port::HC_CPU_ONLINE, cpu);
}

pub fn ready() {
    outl(port::HC_READY, 0);
}

/// Reports the panic record at `addr`; the VMM stops the guest.
pub fn panic(addr: u64) -> ! {
    loop {
        outl(port::HC_PANIC, addr as u32);
    }
}
