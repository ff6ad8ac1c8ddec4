//! rtswitch's switcher crate.
//!
//! - [`abi`]: the guest<->host ABI (structures, ports, vectors, memory
//!   layout), `no_std`, compiled into both the guest kernel and the VMM.
//! - [`telemetry`]: the latency telemetry region (layout, seqlock, epochs).
//! - [`profile`]: the kernel's mode, a profile over three switchable
//!   dimensions (locks, preemption model, interrupt threading).
//! - [`workload`]: the latency workload's request, load kinds and defaults
//!   (a leaf that [`abi`] and [`telemetry`] share).
//! - [`cmdline`]: the guest kernel's argument keys (`--guest-arg`), one list
//!   for the VMM's check and the guest's parser.
//! - [`locktest`]: the page through which the VMM drives the guest's
//!   lock-tester threads (rt-tester's commands and states).
//! - [`calib`]: the speed-calibration loop both sides run, so that the
//!   guest kernel's speed where it runs (CPL3) can be compared with the
//!   host's native speed.
//!
//! - behind the `host` feature: [`patch`], the all-or-nothing patcher of
//!   the guest's call sites (locks, preemption points, interrupt
//!   dispatch), and [`elf`] helpers.
#![cfg_attr(not(any(test, feature = "host")), no_std)]

pub mod abi;
pub mod calib;
pub mod cmdline;
#[cfg(feature = "host")]
pub mod elf;
pub mod locktest;
#[cfg(feature = "host")]
pub mod patch;
pub mod profile;
#[cfg(feature = "host")]
pub mod stackwalk;
pub mod telemetry;
pub mod workload;
