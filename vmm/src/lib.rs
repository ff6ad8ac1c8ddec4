//! rtswitch: a KVM VMM that boots its own Rust guest kernel on several vCPUs
//! and (in later stages) switches that running kernel between mainline and
//! rt locking.
//!
//! Threads: the main thread parses the command line, builds the VM and then
//! runs the control loop (`runner`, an event-manager epoll loop over
//! signals, timers and vCPU events); each vCPU has its own thread
//! (`vstate::vcpu`). Each thread installs its own seccomp filter once set
//! up (`seccomp`).

pub mod api;
pub mod arch;
pub mod bench;
pub mod child;
pub mod cli;
pub mod devices;
pub mod exit_code;
pub mod host_speed;
pub mod loader;
pub mod report;
pub mod runner;
pub mod seccomp;
pub mod signals;
pub mod stats;
pub mod stress;
pub mod switch;
pub mod vstate;
pub mod watchdog;

/// Page-aligned storage for the embedded kernel image.
#[repr(C, align(4096))]
struct PageAligned<T: ?Sized>(T);

static EMBEDDED_KERNEL: &PageAligned<[u8]> = &PageAligned(*include_bytes!(env!("RTSWITCH_GUEST_ELF")));

/// The guest kernel built from `guest/` by build.rs: the default `--kernel`.
pub const DEFAULT_KERNEL: &[u8] = &EMBEDDED_KERNEL.0;
