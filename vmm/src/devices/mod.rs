//! Port-I/O devices: the 16550 UART and the hypercall ports.
pub mod hypercall;
pub mod serial;
