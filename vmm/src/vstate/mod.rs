//! KVM state: guest memory, the VM, the vCPUs and their threads, and the
//! readers of guest memory (the shim statistics, the latency telemetry).
pub mod bus;
pub mod events;
pub mod hold;
pub mod irq_load;
pub mod memory;
pub mod shim_stats;
pub mod telemetry;
pub mod vcpu;
pub mod vm;
