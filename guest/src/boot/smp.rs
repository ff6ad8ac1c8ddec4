//! CPU bring-up: the online mask and the boot handshake between CPU 0 and
//! the others (all vCPUs start at `_start` at the same time).
//!
//! ```text
//! CPU 0                                  CPU n > 0
//! init_cpu, banner, online(0)            init_cpu (APIC on)
//! release_secondaries: flag, IPI all ──> halt_until(released)
//!                                        online(n): print, HC_CPU_ONLINE,
//! calibrate                                 set bit n, IPI CPU 0
//! halt_until(all bits set) <────────────────┘
//! GuestStatus, HC_READY
//! ```
//!
//! No CPU spins: each waits in `sti; hlt` and is woken by a WAKEUP IPI.
//! A sender skips the IPI when the target's APIC is not up yet; the
//! target then has not checked its condition yet either (SeqCst on both
//! sides), so it sees the flag without the IPI.

use crate::arch::{apic, cpu, percpu};
use crate::hv::hypercall;
use crate::println;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use switcher::abi::vector;

static ONLINE_MASK: AtomicU64 = AtomicU64::new(0);
static SECONDARIES_RELEASED: AtomicBool = AtomicBool::new(false);

/// CPU 0, after its banner and its own online line: lets the other CPUs
/// report online (so that their lines come after those).
pub fn release_secondaries() {
    SECONDARIES_RELEASED.store(true, Ordering::SeqCst);
    apic::broadcast_ipi(vector::WAKEUP_IPI);
}

/// CPU n > 0: waits for [`release_secondaries`]. Needs this CPU's APIC up.
pub fn wait_for_release() {
    cpu::halt_until(|| SECONDARIES_RELEASED.load(Ordering::SeqCst));
}

/// Reports this CPU online: console, hypercall, online mask, and a
/// wake-up for CPU 0, which waits for the mask to fill.
pub fn online(cpu: u32) {
    let this = percpu::this();
    println!("cpu {cpu} online (apic id {})", this.apic_id());
    hypercall::cpu_online(cpu);
    ONLINE_MASK.fetch_or(1 << cpu, Ordering::SeqCst);
    let cpu0 = percpu::of(0);
    if cpu != 0 && cpu0.apic_enabled() {
        apic::send_ipi(cpu0.apic_id(), vector::WAKEUP_IPI);
    }
}

pub fn online_mask() -> u64 {
    ONLINE_MASK.load(Ordering::SeqCst)
}

/// Whether CPUs `0..cpu_count` are all online.
pub fn all_online(cpu_count: u32) -> bool {
    let all = if cpu_count >= 64 { u64::MAX } else { (1u64 << cpu_count) - 1 };
    online_mask() & all == all
}
