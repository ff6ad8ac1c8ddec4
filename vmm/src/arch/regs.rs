//! Initial vCPU register state: 64-bit long mode with paging, at the ELF
//! entry, `rdi` = boot info, `rsi` = CPU index (see `switcher::abi`).

use super::gdt::{BOOT_GDT, kvm_segment_from_gdt};
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use switcher::abi::{BOOT_GDT_ADDR, BOOT_INFO_ADDR, PML4_ADDR};

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Bit 1 of RFLAGS is reserved and always set.
const RFLAGS_RESERVED: u64 = 1 << 1;

/// General-purpose registers at the entry of CPU `cpu`.
pub fn boot_regs(entry: u64, cpu: u32) -> kvm_regs {
    kvm_regs {
        rip: entry,
        rdi: BOOT_INFO_ADDR,
        rsi: u64::from(cpu),
        rsp: 0,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

/// Long-mode segment and control registers, starting from the vCPU's
/// current `sregs` (which carry KVM's APIC base and the like).
pub fn boot_sregs(mut sregs: kvm_sregs) -> kvm_sregs {
    let code = kvm_segment_from_gdt(BOOT_GDT[1], 1);
    let data = kvm_segment_from_gdt(BOOT_GDT[2], 2);
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.gdt.base = BOOT_GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&BOOT_GDT) - 1) as u16;
    // No IDT until the guest loads its own: an early exception triple-faults
    // and the VMM reports it.
    sregs.idt.base = 0;
    sregs.idt.limit = 0;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 = CR4_PAE;
    sregs.cr0 = CR0_PE | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.efer = EFER_LME | EFER_LMA;
    sregs
}

/// x87/SSE state as after FINIT, with the default MXCSR.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu { fcw: 0x37f, mxcsr: 0x1f80, ..Default::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_registers_follow_the_abi() {
        let r = boot_regs(0x10_0000, 3);
        assert_eq!((r.rip, r.rdi, r.rsi, r.rsp), (0x10_0000, BOOT_INFO_ADDR, 3, 0));
        assert_eq!(r.rflags & (1 << 9), 0, "interrupts start disabled");
    }

    #[test]
    fn long_mode_with_paging() {
        let s = boot_sregs(kvm_sregs::default());
        assert_ne!(s.efer & EFER_LMA, 0);
        assert_ne!(s.cr0 & CR0_PG, 0);
        assert_ne!(s.cr4 & CR4_PAE, 0);
        assert_eq!(s.cr3, PML4_ADDR);
        assert_eq!(s.cs.l, 1);
        assert_eq!(s.gdt.limit, 23);
    }

    #[test]
    fn keeps_kvm_apic_base() {
        let s = boot_sregs(kvm_sregs { apic_base: 0xfee0_0900, ..Default::default() });
        assert_eq!(s.apic_base, 0xfee0_0900);
    }
}
