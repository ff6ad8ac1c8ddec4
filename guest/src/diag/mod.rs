//! Diagnostics: what the kernel runs to test and measure itself, or to
//! misbehave on purpose, when a guest argument asks (docs/ARCHITECTURE.md,
//! "Guest layering"). Above the workload (the ring-3 self-test times
//! measurement activations), below the switch (which honours the fault
//! injections aimed at it).
//!
//! - `selftest`: the `--selftest` suite; `selftest_ring3`: its tests of
//!   the soft interrupt mask and the ring-0 shim, and the test vectors;
//! - `costs`: the platform's primitives timed (`platform-costs`);
//! - `faults`: fault injection for the switch tests.

pub mod costs;
pub mod faults;
pub mod selftest;
pub mod selftest_ring3;
