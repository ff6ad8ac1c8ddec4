//! The guest's side of the VMM interface: what the VMM reads or writes in
//! guest memory, and the one way out to it (docs/ARCHITECTURE.md, "Guest
//! layering"). Above `arch` (the console masks interrupts, a hypercall
//! that ends the guest halts), below everything else.
//!
//! - `doorbell`: the one write that exits to the VMM; `hypercall`: the
//!   named hypercalls on it; `console`: `print!` and `println!` through it;
//! - `boot_info`: the VMM's `BootInfo` page; `shutdown`: whether the VMM
//!   asked to shut down;
//! - `status`: the GuestStatus page at ready, with the speed calibration
//!   it reports (`calibrate`); `mailbox`: volatile access to the switch
//!   mailbox page; `mode`: the mode word of the lock registry page (for
//!   the idle loop); `locktest_page`: the lock tester's page; `panic`: the panic report (PanicRecord, HC_PANIC);
//! - `site`: the patchable call sites the VMM rewrites, and the
//!   implementation table it patches with; `abi_note`: the ELF note that
//!   names the ABI this kernel speaks.

mod abi_note;
pub mod boot_info;
pub mod calibrate;
pub mod console;
pub mod doorbell;
pub mod hypercall;
pub mod locktest_page;
pub mod mailbox;
pub mod mode;
mod panic;
pub mod shutdown;
pub mod site;
pub mod status;
