//! KVM state: guest memory, the VM, the vCPUs and their threads, and the
//! shim statistics read from guest memory (the latency telemetry, the
//! measurement's own model, is `crate::telemetry`).
pub mod bus;
pub mod events;
pub mod hold;
pub mod irq_load;
pub mod memory;
pub mod shim_stats;
pub mod vcpu;
pub mod vm;
