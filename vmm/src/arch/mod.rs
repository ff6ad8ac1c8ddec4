//! x86-64 boot-time state the VMM builds for the guest: GDT, identity page
//! tables, vCPU registers and CPUID. Pure builders are host-testable; the
//! functions that take a `VcpuFd` apply them.
pub mod cpuid;
pub mod gdt;
pub mod paging;
pub mod regs;
