//! The boot GDT: null, 64-bit code, data (selectors in `switcher::abi`).

use kvm_bindings::kvm_segment;

/// GDT entries as the VMM writes them at `BOOT_GDT_ADDR`.
pub const BOOT_GDT: [u64; 3] = [
    0,
    gdt_entry(0xa09b, 0, 0xfffff), // code: present, ring 0, exec/read, accessed, L=1, G=1
    gdt_entry(0xc093, 0, 0xfffff), // data: present, ring 0, read/write, accessed, D/B=1, G=1
];

/// Packs a GDT descriptor from flags (access byte low, flags nibble high),
/// base and limit, as the SDM lays it out.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
        | (((limit as u64 & 0x000f_0000) >> 16) << 48)
        | ((flags as u64 & 0x0000_f0ff) << 40)
}

/// The KVM segment register state for GDT entry `index`.
pub fn kvm_segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
    let granular = (entry >> 55) & 1 == 1;
    kvm_segment {
        base: ((entry >> 16) & 0xff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if granular { (limit << 12) | 0xfff } else { limit },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: ((entry >> 47) & 1) as u8,
        dpl: ((entry >> 45) & 3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g: granular as u8,
        avl: ((entry >> 52) & 1) as u8,
        padding: 0,
        unusable: u8::from((entry >> 47) & 1 == 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switcher::abi::{BOOT_CODE_SELECTOR, BOOT_DATA_SELECTOR};

    #[test]
    fn boot_gdt_matches_the_well_known_encodings() {
        assert_eq!(BOOT_GDT[1], 0x00af_9b00_0000_ffff);
        assert_eq!(BOOT_GDT[2], 0x00cf_9300_0000_ffff);
    }

    #[test]
    fn code_segment_is_64_bit_ring_0() {
        let cs = kvm_segment_from_gdt(BOOT_GDT[1], 1);
        assert_eq!(cs.selector, BOOT_CODE_SELECTOR);
        assert_eq!((cs.l, cs.db, cs.dpl, cs.present, cs.s, cs.g), (1, 0, 0, 1, 1, 1));
        assert_eq!(cs.type_, 0xb);
        assert_eq!(cs.limit, 0xffff_ffff);
        assert_eq!(cs.unusable, 0);
    }

    #[test]
    fn data_segment_is_writable() {
        let ds = kvm_segment_from_gdt(BOOT_GDT[2], 2);
        assert_eq!(ds.selector, BOOT_DATA_SELECTOR);
        assert_eq!(ds.type_, 0x3);
        assert_eq!((ds.l, ds.db), (0, 1));
    }

    #[test]
    fn null_entry_is_unusable() {
        assert_eq!(kvm_segment_from_gdt(BOOT_GDT[0], 0).unusable, 1);
    }

    #[test]
    fn base_and_limit_round_trip() {
        let e = gdt_entry(0x0093, 0x1234_5678, 0x000a_bcde);
        let s = kvm_segment_from_gdt(e, 3);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xa_bcde);
    }
}
