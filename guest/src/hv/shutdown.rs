//! Whether the VMM asked this guest to shut down: noted by the
//! HOST_REQUEST interrupt handler (`irq::dispatch`), read by the control
//! thread, the switch's guard and CPU 0's boot wait. Here, far below the
//! interrupt dispatch that notes it, so that what reads it need not
//! depend on that dispatch.

use crate::hv::boot_info;
use core::sync::atomic::{AtomicBool, Ordering};
use switcher::abi::host_request;

static SHUTDOWN_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether the VMM asked for a shutdown (noted by the handler, or seen in
/// the boot info directly in case its interrupt came before our APIC was
/// up and was lost).
pub fn requested() -> bool {
    SHUTDOWN_REQUESTED.load(Ordering::Acquire) || boot_info::host_request() == host_request::SHUTDOWN
}

/// From the HOST_REQUEST handler: the VMM's request is a shutdown.
pub fn note_requested() {
    SHUTDOWN_REQUESTED.store(true, Ordering::Release);
}
