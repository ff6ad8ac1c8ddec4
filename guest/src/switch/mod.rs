//! The runtime mode switch, guest side (docs/ARCHITECTURE.md, "The
//! runtime switch"): `modeswitch` runs one switch request against the
//! mailbox; `control`, the control thread, runs it and acts on the VMM's
//! shutdown request. Above the scheduler, the locks, the workload and the
//! fault injections it drives; below the interrupt dispatch that wakes it.

pub mod control;
pub mod modeswitch;
