//! The GuestStatus page: what the guest tells the VMM about itself when
//! it becomes ready (online CPUs, calibration, mode, version).

use crate::hv::boot_info;
use crate::hv::calibrate::Calibration;
use switcher::abi::{self, GuestStatus, KERNEL_VERSION_LEN};
use switcher::profile::Profile;

/// This kernel's version, as in the banner and the status page.
pub const KERNEL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Fills the status page at `BootInfo::guest_status_addr`, magic last.
/// The ready hypercall (which fences) must follow.
pub fn publish(online_mask: u64, calibration: &Calibration, mode: Profile) {
    let mut status = GuestStatus::zeroed();
    status.online_mask = online_mask;
    status.calib_iterations = calibration.iterations;
    status.calib_tsc_ticks = calibration.tsc_ticks;
    status.calib_ps_per_iter = calibration.ps_per_iter;
    status.mode = mode.code();
    let version = KERNEL_VERSION.as_bytes();
    let n = version.len().min(KERNEL_VERSION_LEN);
    status.kernel_version[..n].copy_from_slice(&version[..n]);

    let page = boot_info::guest_status_addr() as *mut GuestStatus;
    // SAFETY: the VMM reserves this page (identity mapped) for the guest
    // status and reads it only after HC_READY; nothing else writes it.
    unsafe {
        core::ptr::write_volatile(page, status);
        core::ptr::write_volatile(&raw mut (*page).magic, abi::ABI_MAGIC);
    }
}
