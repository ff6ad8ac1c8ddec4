//! Per-CPU GDT and TSS, the ring-0 stacks the TSS points at, and the drop
//! from CPL0 to CPL3 at the end of the boot prologue.
//!
//! Every CPU owns one GDT and one TSS:
//!
//! ```text
//!   0x00  null
//!   0x08  KERNEL_CS   64-bit code, DPL 0   the ring-0 shim and boot prologue
//!   0x10  KERNEL_DS   data, DPL 0          (= the VMM's boot GDT selectors)
//!   0x1b  USER_DS     data, DPL 3          SS/DS/ES/FS/GS of the kernel at CPL3
//!   0x23  USER_CS     64-bit code, DPL 3   the kernel, after the prologue
//!   0x28  TSS         (two slots)
//! ```
//!
//! The TSS gives the CPU a stack for every entry into ring 0 from CPL3
//! (`rsp0`: the shim gate, the exception gates), and IST stacks of their
//! own to #DF, NMI and #MC, so a blown task stack or an NMI at an awkward
//! moment still gets reported. An interrupt taken at CPL3 through a DPL-3
//! trap gate changes no privilege and no stack: it runs on the task's own
//! stack (no red zone on this target), which is always valid.

use core::cell::UnsafeCell;
use switcher::abi::{self, MAX_CPUS};
use x86_64::VirtAddr;
use x86_64::structures::tss::TaskStateSegment;

pub const KERNEL_CS: u16 = abi::BOOT_CODE_SELECTOR;
pub const KERNEL_DS: u16 = abi::BOOT_DATA_SELECTOR;
/// RPL 3 selectors of the DPL-3 segments.
pub const USER_DS: u16 = 0x18 | 3;
pub const USER_CS: u16 = 0x20 | 3;
const TSS_SELECTOR: u16 = 0x28;

/// IST slots (1-based, as IDT gates name them).
pub const IST_DOUBLE_FAULT: u8 = 1;
pub const IST_NMI: u8 = 2;
pub const IST_MACHINE_CHECK: u8 = 3;
const IST_STACKS_PER_CPU: usize = 3;
const IST_STACK_SIZE: usize = 8 * 1024;
/// The ring-0 stack of each CPU (`rsp0`): shim services and exception reports.
const RING0_STACK_SIZE: usize = 16 * 1024;

/// Present, DPL 0, execute/read, accessed, long mode (L), 4 KiB granularity.
const KERNEL_CODE64: u64 = 0x00af_9b00_0000_ffff;
/// Present, DPL 0, read/write, accessed, 4 KiB granularity.
const KERNEL_DATA: u64 = 0x00cf_9300_0000_ffff;
/// As the kernel ones, with DPL 3 (access byte 0xfb / 0xf3).
const USER_CODE64: u64 = 0x00af_fb00_0000_ffff;
const USER_DATA: u64 = 0x00cf_f300_0000_ffff;
/// System descriptor type "available 64-bit TSS", present.
const TSS_TYPE_PRESENT: u64 = 0x89;
/// RFLAGS at the drop: IF on (the soft mask, not IF, masks interrupts at
/// CPL3), reserved bit 1.
const RFLAGS_IF: u64 = 0x202;

#[repr(C, align(16))]
struct CpuTables {
    gdt: [u64; 7],
    tss: TaskStateSegment,
}

/// One CPU's tables. Written only by their CPU, once, in [`init`], before
/// the CPU loads them; afterwards only the CPU itself (the TSS busy bit)
/// touches them.
struct CpuSlot(UnsafeCell<CpuTables>);

// SAFETY: each slot is accessed by exactly one CPU (see `CpuSlot`).
unsafe impl Sync for CpuSlot {}

static TABLES: [CpuSlot; MAX_CPUS] =
    [const { CpuSlot(UnsafeCell::new(CpuTables { gdt: [0; 7], tss: TaskStateSegment::new() })) }; MAX_CPUS];

#[repr(C, align(16))]
struct IstStack([u8; IST_STACK_SIZE]);

#[repr(C, align(16))]
struct Ring0Stack([u8; RING0_STACK_SIZE]);

/// Only the CPU uses these (as stacks); Rust code takes their addresses.
/// In the linker script's stack range.
#[unsafe(link_section = ".bss.stacks.ist")]
static mut IST_STACKS: [[IstStack; IST_STACKS_PER_CPU]; MAX_CPUS] =
    [const { [const { IstStack([0; IST_STACK_SIZE]) }; IST_STACKS_PER_CPU] }; MAX_CPUS];
/// Named for the VMM, which finds a CPU's ring-0 stack top (the CPL3
/// context of a CPU held in the shim) from it.
#[unsafe(export_name = "shim_ring0_stacks")]
#[unsafe(link_section = ".bss.stacks.ring0")]
static mut RING0_STACKS: [Ring0Stack; MAX_CPUS] = [const { Ring0Stack([0; RING0_STACK_SIZE]) }; MAX_CPUS];

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

/// Builds CPU `cpu`'s GDT and TSS and loads them: `lgdt`, CS by far
/// return, SS = KERNEL_DS, DS/ES/FS/GS = USER_DS (so that the drop to CPL3
/// keeps them: it nulls data selectors of a lower DPL), `ltr`. CPL0 (the
/// boot prologue), before the GS base is written: loading GS clears it.
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
    let ring0 = (&raw const RING0_STACKS).cast::<Ring0Stack>().wrapping_add(cpu);
    t.tss.privilege_stack_table[0] = VirtAddr::new(ring0 as u64 + RING0_STACK_SIZE as u64);
    let [tss_low, tss_high] = tss_descriptor(&raw const t.tss);
    t.gdt = [0, KERNEL_CODE64, KERNEL_DATA, USER_DATA, USER_CODE64, tss_low, tss_high];

    let pointer = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of_val(&t.gdt) - 1) as u16,
        base: VirtAddr::new(t.gdt.as_ptr() as u64),
    };
    // SAFETY: CPL0. The GDT is static and valid (same kernel selectors as
    // the boot GDT); the far return reloads CS from it; the TSS descriptor
    // points at this CPU's static TSS, whose stacks are static too.
    unsafe {
        core::arch::asm!(
            "lgdt [{pointer}]",
            "mov ss, {kds:x}",
            "mov ds, {uds:x}",
            "mov es, {uds:x}",
            "mov fs, {uds:x}",
            "mov gs, {uds:x}",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "ltr {tss:x}",
            pointer = in(reg) &raw const pointer,
            kds = in(reg) KERNEL_DS,
            uds = in(reg) USER_DS,
            cs = in(reg) u64::from(KERNEL_CS),
            tss = in(reg) TSS_SELECTOR,
            tmp = out(reg) _,
        );
    }
}

/// Leaves CPL0 for good: `iretq` to `entry(arg0, arg1)` at CPL3 on the
/// current stack, with interrupts on in RFLAGS (the soft mask, still set,
/// keeps them deferred until the kernel unmasks).
///
/// # Safety
/// CPL0, after [`init`] and with the GS base set; `entry` must be a
/// kernel function that never returns; the stack must stay valid.
pub unsafe fn drop_to_cpl3(entry: extern "C" fn(u64, u64) -> !, arg0: u64, arg1: u64) -> ! {
    // SAFETY: per the contract: the frame names DPL-3 segments of this
    // CPU's GDT, the current stack (aligned as the call ABI wants it at a
    // function's entry; what lies above is dead: this never returns), and
    // the entry.
    unsafe {
        core::arch::asm!(
            // As after a call: rsp = 8 (mod 16) at the entry.
            "mov rax, rsp",
            "and rax, -16",
            "sub rax, 8",
            // The entry's frame chain ends here: return address 0, rbp 0
            // (the VMM's stack walker ends an idle task's walk there).
            "mov qword ptr [rax], 0",
            "mov rsp, rax",
            "xor ebp, ebp",
            "push {ss}",
            "push rax",
            "push {rflags}",
            "push {cs}",
            "push {entry}",
            "iretq",
            ss = in(reg) u64::from(USER_DS),
            rflags = in(reg) RFLAGS_IF,
            cs = in(reg) u64::from(USER_CS),
            entry = in(reg) entry as usize,
            in("rdi") arg0,
            in("rsi") arg1,
            // Scratch (clobbered): taken as an input so that no other
            // operand is given rax.
            in("rax") 0u64,
            options(noreturn),
        )
    }
}
