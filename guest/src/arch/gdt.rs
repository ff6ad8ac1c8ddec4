//! Per-CPU GDT and TSS, and the interrupt stacks (IST) the TSS points at.
//!
//! Every CPU owns one GDT (null, 64-bit code, data, its TSS) and one TSS
//! whose IST slots give #DF, NMI and #MC a known-good stack of their own,
//! so a stack overflow or an NMI at an awkward moment still gets reported.
//! The selectors equal the VMM's boot GDT's (`switcher::abi`), so nothing
//! changes meaning when this GDT replaces the boot one.

use core::cell::UnsafeCell;
use switcher::abi::{self, MAX_CPUS};
use x86_64::VirtAddr;
use x86_64::structures::tss::TaskStateSegment;

pub const KERNEL_CS: u16 = abi::BOOT_CODE_SELECTOR;
pub const KERNEL_DS: u16 = abi::BOOT_DATA_SELECTOR;
const TSS_SELECTOR: u16 = 0x18;

/// IST slots (1-based, as IDT gates name them).
pub const IST_DOUBLE_FAULT: u8 = 1;
pub const IST_NMI: u8 = 2;
pub const IST_MACHINE_CHECK: u8 = 3;
const IST_STACKS_PER_CPU: usize = 3;
const IST_STACK_SIZE: usize = 8 * 1024;

/// Present, DPL 0, execute/read, accessed, long mode (L), 4 KiB granularity.
const CODE64_DESCRIPTOR: u64 = 0x00af_9b00_0000_ffff;
/// Present, DPL 0, read/write, accessed, 4 KiB granularity.
const DATA_DESCRIPTOR: u64 = 0x00cf_9300_0000_ffff;
/// System descriptor type "available 64-bit TSS", present.
const TSS_TYPE_PRESENT: u64 = 0x89;

#[repr(C, align(16))]
struct CpuTables {
    gdt: [u64; 5],
    tss: TaskStateSegment,
}

/// One CPU's tables. Written only by their CPU, once, in [`init`], before
/// the CPU loads them; afterwards only the CPU itself (the TSS busy bit)
/// touches them.
struct CpuSlot(UnsafeCell<CpuTables>);

// SAFETY: each slot is accessed by exactly one CPU (see `CpuSlot`).
unsafe impl Sync for CpuSlot {}

static TABLES: [CpuSlot; MAX_CPUS] =
    [const { CpuSlot(UnsafeCell::new(CpuTables { gdt: [0; 5], tss: TaskStateSegment::new() })) }; MAX_CPUS];

#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);

/// Only the CPU uses these (as stacks); Rust code takes their addresses.
static mut IST_STACKS: [[IstStack; IST_STACKS_PER_CPU]; MAX_CPUS] =
    [const { [const { IstStack([0; IST_STACK_SIZE]) }; IST_STACKS_PER_CPU] }; MAX_CPUS];

/// The two GDT words of a 64-bit TSS descriptor for `tss`.
fn tss_descriptor(tss: *const TaskStateSegment) -> [u64; 2] {
    let base = tss as u64;
    let limit = (core::mem::size_of::<TaskStateSegment>() - 1) as u64;
    let low = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (TSS_TYPE_PRESENT << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    [low, base >> 32]
}

/// Builds CPU `cpu`'s GDT and TSS and loads them: `lgdt`, data segments,
/// CS by far return, `ltr`. GS is not reloaded: that would clear the GS
/// base the per-CPU data lives behind.
pub fn init(cpu: usize) {
    let tables = TABLES[cpu].0.get();
    // SAFETY: only CPU `cpu` runs this, once, before the tables are loaded;
    // no other reference to the slot exists.
    let t = unsafe { &mut *tables };
    for (slot, ist) in [IST_DOUBLE_FAULT, IST_NMI, IST_MACHINE_CHECK].into_iter().enumerate() {
        // Only the address is taken: the CPU is the sole user of the stack.
        let stacks = (&raw const IST_STACKS).cast::<IstStack>();
        let stack = stacks.wrapping_add(cpu * IST_STACKS_PER_CPU + slot);
        let top = stack as u64 + IST_STACK_SIZE as u64;
        t.tss.interrupt_stack_table[usize::from(ist) - 1] = VirtAddr::new(top);
    }
    let [tss_low, tss_high] = tss_descriptor(&raw const t.tss);
    t.gdt = [0, CODE64_DESCRIPTOR, DATA_DESCRIPTOR, tss_low, tss_high];

    let pointer = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of_val(&t.gdt) - 1) as u16,
        base: VirtAddr::new(t.gdt.as_ptr() as u64),
    };
    // SAFETY: the GDT is static and valid (same selectors as the boot GDT
    // for code and data); the far return reloads CS from it; the TSS
    // descriptor points at this CPU's static TSS, whose IST stacks are
    // static too.
    unsafe {
        core::arch::asm!(
            "lgdt [{pointer}]",
            "mov ds, {ds:x}",
            "mov es, {ds:x}",
            "mov ss, {ds:x}",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "ltr {tss:x}",
            pointer = in(reg) &raw const pointer,
            ds = in(reg) KERNEL_DS,
            cs = in(reg) u64::from(KERNEL_CS),
            tss = in(reg) TSS_SELECTOR,
            tmp = out(reg) _,
        );
    }
}
