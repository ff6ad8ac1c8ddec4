//! What only the boot sequence (`main.rs`) uses: the guest arguments
//! (`cmdline`) and the CPU bring-up handshake (`smp`). The top layer with
//! `main.rs`: it may import any layer.

pub mod cmdline;
pub mod smp;
