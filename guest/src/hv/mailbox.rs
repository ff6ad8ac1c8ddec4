//! The switch mailbox page (`switcher::abi::SwitchMailbox`, where its
//! protocol is drawn), as volatile field reads and writes and one
//! compare-and-swap of its state: the VMM writes the page concurrently,
//! so no Rust reference to it is ever formed. The switch's protocol
//! (`switch::modeswitch`) runs on these; the raw page access stays here.

use core::sync::atomic::{AtomicU32, Ordering, fence};

use switcher::abi::{ABI_MAGIC, MailboxState, MailboxWriter, SWITCH_MAILBOX_ADDR, SwitchMailbox};
use switcher::profile::Profile;

/// The mailbox page (ABI memory, identity-mapped RW).
pub fn page() -> *mut SwitchMailbox {
    SWITCH_MAILBOX_ADDR as *mut SwitchMailbox
}

/// Reads mailbox field `$field` (volatile).
macro_rules! mbox_read {
    ($field:ident) => {
        // SAFETY: the mailbox page is ABI memory, identity-mapped RW; the
        // VMM writes it concurrently, so every access is volatile.
        unsafe { core::ptr::addr_of!((*$crate::hv::mailbox::page()).$field).read_volatile() }
    };
}
pub(crate) use mbox_read;

/// Writes `$v` to mailbox field `$field` (volatile).
macro_rules! mbox_write {
    ($field:ident, $v:expr) => {
        // SAFETY: as for `mbox_read`.
        unsafe { core::ptr::addr_of_mut!((*$crate::hv::mailbox::page()).$field).write_volatile($v) }
    };
}
pub(crate) use mbox_write;

/// Publishes the mailbox: the VMM accepts switch requests from now on.
pub fn publish(mode: Profile) {
    // SAFETY: as for `mbox_read`; nobody else writes it before `magic`.
    unsafe { page().write_volatile(SwitchMailbox::zeroed()) };
    mbox_write!(mode, mode.code());
    fence(Ordering::Release);
    mbox_write!(magic, ABI_MAGIC);
}

/// The mailbox's state (None: a word that is no state of the protocol).
pub fn state() -> Option<MailboxState> {
    MailboxState::from_u32(mbox_read!(state))
}

/// Takes the guest's step of the protocol from `from` to `to`
/// ([`MailboxState::next`]) unless the VMM moved the mailbox meanwhile
/// (its cancel on a deadline must never be overwritten): a
/// compare-and-swap. False if the state was no longer `from`. A step the
/// protocol does not give the guest is a bug of this kernel: it panics.
pub fn advance(from: MailboxState, to: MailboxState) -> bool {
    if MailboxState::next(from as u32, to, MailboxWriter::Guest).is_none() {
        panic!("switch mailbox: {} -> {} is not the guest's step", from.name(), to.name());
    }
    // SAFETY: `state` is an aligned u32 of the mailbox page (ABI memory,
    // identity-mapped RW), shared with the VMM, which only stores to it.
    let state = unsafe { AtomicU32::from_ptr(core::ptr::addr_of_mut!((*page()).state)) };
    state.compare_exchange(from as u32, to as u32, Ordering::AcqRel, Ordering::Acquire).is_ok()
}
