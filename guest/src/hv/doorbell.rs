//! The doorbell, the one way out to the VMM: one 8-byte write to a
//! register of the doorbell page (`switcher::abi::doorbell`), which no
//! memory slot backs, so the write exits to the VMM (`KVM_EXIT_MMIO`) from
//! CPL3 as from CPL0. Each is preceded by a full fence: the VMM reads the
//! shared pages (GuestStatus, PanicRecord, the mailbox, a console buffer)
//! when the write exits, so every write to them must be visible first.
//!
//! A leaf: the console (`console`) and the named hypercalls (`hypercall`)
//! ring it.

use core::sync::atomic::{Ordering, fence};
use switcher::abi::DOORBELL_ADDR;

/// Writes `value` to doorbell `register`: one exit to the VMM.
pub fn ring(register: u64, value: u64) {
    crate::arch::percpu::count_exit(switcher::telemetry::exit_cause::DOORBELL);
    fence(Ordering::SeqCst);
    // SAFETY: the doorbell page is mapped (uncached, user-accessible) by
    // the boot and kernel page tables and backed by nothing: the write
    // only exits to the VMM, which validates it.
    unsafe { ((DOORBELL_ADDR + register) as *mut u64).write_volatile(value) };
}
