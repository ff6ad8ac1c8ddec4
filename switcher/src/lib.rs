//! rtswitch's switcher crate.
//!
//! - [`abi`]: the guest<->host ABI (structures, ports, vectors, memory
//!   layout), `no_std`, compiled into both the guest kernel and the VMM.
//! - [`calib`]: the speed-calibration loop both sides run, so that the
//!   guest's ring-0 speed can be compared with the host's native speed.
//!
//! The coordinator that patches guest memory lives behind the `host`
//! feature (added with the patch-site work).
#![cfg_attr(not(any(test, feature = "host")), no_std)]

pub mod abi;
pub mod calib;
