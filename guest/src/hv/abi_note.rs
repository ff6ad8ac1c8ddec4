//! The ELF note (`.note.rtswitch`) that marks this kernel as speaking the
//! VMM's ABI: name "rtswitch", type `NOTE_TYPE_ABI`, descriptor `AbiNote`
//! (magic, version). The VMM refuses a kernel without it.

use switcher::abi;

const NAME_LEN: usize = abi::NOTE_NAME.len();
/// The name is padded to 4 bytes.
const NAME_PADDED: usize = NAME_LEN.div_ceil(4) * 4;
const DESC_LEN: usize = core::mem::size_of::<abi::AbiNote>();
const NOTE_LEN: usize = 12 + NAME_PADDED + DESC_LEN;

#[unsafe(link_section = ".note.rtswitch")]
#[used]
static ABI_NOTE: [u8; NOTE_LEN] = {
    let mut n = [0u8; NOTE_LEN];
    n = put(n, 0, &(NAME_LEN as u32).to_le_bytes());
    n = put(n, 4, &(DESC_LEN as u32).to_le_bytes());
    n = put(n, 8, &abi::NOTE_TYPE_ABI.to_le_bytes());
    n = put(n, 12, abi::NOTE_NAME);
    n = put(n, 12 + NAME_PADDED, &abi::AbiNote::CURRENT.magic.to_le_bytes());
    n = put(n, 12 + NAME_PADDED + 8, &abi::AbiNote::CURRENT.version.to_le_bytes());
    n
};

/// `note[at..at + bytes.len()] = bytes`, in a const context.
const fn put(mut note: [u8; NOTE_LEN], at: usize, bytes: &[u8]) -> [u8; NOTE_LEN] {
    let mut i = 0;
    while i < bytes.len() {
        note[at + i] = bytes[i];
        i += 1;
    }
    note
}
