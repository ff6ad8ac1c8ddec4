//! Interrupt dispatch (`dispatch`): the vector table of the kernel, which
//! hands each interrupt to the layer that owns it (the scheduler, the
//! switch, the workload's device interrupt, the self-tests). The arch
//! layer reaches it through the hook set at boot (`irqflags::set_hooks`),
//! so it stands at the top, below only the boot code.

pub mod dispatch;
