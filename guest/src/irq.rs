//! Interrupt handlers of the kernel (vectors 32..=255), called by the arch
//! trap dispatcher with interrupts off. They are short: note, count, EOI.
//!
//! Host requests: the VMM writes `BootInfo::host_request`, then sends
//! `vector::HOST_REQUEST` to CPU 0. The handler notes a shutdown request
//! here; CPU 0's idle loop acts on it (printing and the exit hypercall
//! do not belong in an interrupt handler).

use crate::arch::{apic, percpu};
use crate::boot_info;
use core::sync::atomic::{AtomicBool, Ordering};
use switcher::abi::{host_request, vector};

static SHUTDOWN_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether the VMM asked for a shutdown (noted by the handler, or seen in
/// the boot info directly in case its interrupt came before our APIC was
/// up and was lost).
pub fn shutdown_requested() -> bool {
    SHUTDOWN_REQUESTED.load(Ordering::Acquire) || boot_info::host_request() == host_request::SHUTDOWN
}

/// Handles one interrupt vector (not an exception, not NMI).
pub fn handle(vector: u8) {
    let this = percpu::this();
    let counters = &this.irq;
    match vector {
        vector::SPURIOUS => {
            // Not in service: no EOI.
            counters.spurious.fetch_add(1, Ordering::Relaxed);
            return;
        }
        vector::WAKEUP_IPI => {
            counters.wakeup_ipi.fetch_add(1, Ordering::Relaxed);
        }
        vector::HOST_REQUEST => {
            counters.host_request.fetch_add(1, Ordering::Relaxed);
            if boot_info::host_request() == host_request::SHUTDOWN {
                SHUTDOWN_REQUESTED.store(true, Ordering::Release);
                // CPU 0 acts on it; wake it if the request landed elsewhere.
                let cpu0 = percpu::of(0);
                if this.cpu_id() != 0 && cpu0.apic_enabled() {
                    apic::send_ipi(cpu0.apic_id(), vector::WAKEUP_IPI);
                }
            }
        }
        other => {
            counters.unexpected.fetch_add(1, Ordering::Relaxed);
            counters.last_unexpected_vector.store(u32::from(other), Ordering::Relaxed);
        }
    }
    apic::eoi();
}
