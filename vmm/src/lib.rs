//! rtswitch: a KVM VMM that boots its own Rust guest kernel on several vCPUs
//! and switches that running kernel between mainline and rt locking (and
//! the other profiles over locks, preemption model and interrupt threading)
//! at runtime. This is the VMM library; the `rtswitch` executable, with the
//! tools above it (bench, stress, plots), is the `rtswitch-tools` crate in
//! `tools/`.
//!
//! Threads: the main thread parses the command line, builds the VM and then
//! runs the control loop (`runner`, an event-manager epoll loop over
//! signals, timers and vCPU events); each vCPU has its own thread
//! (`vstate::vcpu`); a writer thread serves the guest console, and a
//! host-noise probe thread per host CPU times the host's own stalls
//! (`host_noise`). Each thread installs its own seccomp filter once set
//! up (`seccomp`).

// The core VMM.
pub mod api;
pub mod arch;
pub mod child;
pub mod cli;
pub mod devices;
pub mod exit_code;
pub mod guest_text;
pub mod host_noise;
pub mod host_speed;
pub mod landlock_fs;
pub mod limits;
pub mod loader;
pub mod locktest;
pub mod logging;
pub mod misbehaviour;
pub mod outfile;
pub mod page;
pub mod panic_exit;
pub mod ratelimit;
pub mod realtime;
pub mod report;
pub mod rlimits;
pub mod runner;
pub mod seccomp;
pub mod signals;
pub mod stacks;
pub mod stats;
pub mod switch;
pub mod telemetry;
pub mod units;
pub mod vstate;
pub mod watchdog;

#[cfg(test)]
mod guest_memory_fuzz;

/// Page-aligned storage for the embedded kernel image.
#[repr(C, align(4096))]
struct PageAligned<T: ?Sized>(T);

static EMBEDDED_KERNEL: &PageAligned<[u8]> = &PageAligned(*include_bytes!(env!("RTSWITCH_GUEST_ELF")));

/// The guest kernel built from `guest/` by build.rs: the default `--kernel`.
pub const DEFAULT_KERNEL: &[u8] = &EMBEDDED_KERNEL.0;
