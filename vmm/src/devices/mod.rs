//! Devices: the paravirtual console and the hypercall doorbell (MMIO).
pub mod console;
pub mod hypercall;
