//! KVM state: guest memory, the VM, the vCPUs and their threads.
pub mod hold;
pub mod memory;
pub mod shim_stats;
pub mod vcpu;
pub mod vm;
