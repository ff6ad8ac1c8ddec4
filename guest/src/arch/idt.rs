//! The two IDTs (one of each for all CPUs) and the frame every stub builds.
//!
//! ```text
//!  vector    kernel IDT (loaded while the kernel runs)   halt IDT (loaded by the shim around sti; hlt)
//!  0..32     ring-0 interrupt gates: exception reports   the same
//!            (#UD: the shim gate; NMI, #DF, #MC on IST)
//!  32..256   DPL-3 trap gates: `entry` (soft mask)       ring-0 interrupt gates: record the vector
//! ```
//!
//! Why two: the kernel runs at CPL3, and an interrupt taken there must run
//! its handler at CPL3 through a *trap* gate (an interrupt gate would clear
//! IF, and CPL3 cannot set it again). The shim halts an idle CPU at CPL0,
//! and an interrupt taken at CPL0 through a gate aimed at DPL-3 code is not
//! architecturally defined (#GP on real hardware), so the shim loads the
//! halt IDT around its `sti; hlt`: there an interrupt is only recorded as
//! pending, and the kernel runs it at CPL3 when it unmasks.
//!
//! Exceptions go to ring 0 in both tables: they are all fatal here, ring 0
//! can read CR2 for a page fault, and the privilege change puts the report
//! on the CPU's own ring-0 stack even when a task stack overflowed.
//!
//! Filling: the boot prologue (CPL0, emulated on some hosts: every
//! instruction counts) writes only the gates that early boot can need and
//! loads the kernel IDT; each CPU then fills both tables at CPL3 with the
//! same values (atomic stores, no CPU waits for another) before it enables
//! its APIC.

use super::gdt::{IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, KERNEL_CS, USER_CS};
use core::sync::atomic::{AtomicU64, Ordering};

pub const VECTORS: usize = 256;

/// Vectors of the CPU exceptions this kernel names.
pub mod exception {
    pub const NMI: u8 = 2;
    pub const INVALID_OPCODE: u8 = 6;
    pub const DOUBLE_FAULT: u8 = 8;
    pub const GENERAL_PROTECTION: u8 = 13;
    pub const PAGE_FAULT: u8 = 14;
    pub const MACHINE_CHECK: u8 = 18;
    /// Vectors 0..32 are reserved for exceptions.
    pub const COUNT: u8 = 32;
}

/// The stack every stub builds before it calls into Rust, lowest address
/// first: general-purpose registers, then the vector and error code (0
/// where the CPU pushes none), then the CPU's interrupt frame.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// Words of [`TrapFrame`] below the CPU's frame (registers, vector, error code).
pub const FRAME_SAVED_WORDS: usize = 17;
const _: () = assert!(core::mem::size_of::<TrapFrame>() == (FRAME_SAVED_WORDS + 5) * 8);

/// Two words per gate.
static KERNEL_IDT: [AtomicU64; VECTORS * 2] = [const { AtomicU64::new(0) }; VECTORS * 2];
static HALT_IDT: [AtomicU64; VECTORS * 2] = [const { AtomicU64::new(0) }; VECTORS * 2];

/// An `lidt` operand (limit, then base) laid out so that the base is an
/// aligned atomic: the operand starts at `limit`, 6 bytes into the struct.
#[repr(C, align(16))]
pub struct IdtPointer {
    _pad: [u16; 3],
    limit: u16,
    base: AtomicU64,
}

impl IdtPointer {
    const fn new() -> Self {
        Self { _pad: [0; 3], limit: (VECTORS * 16 - 1) as u16, base: AtomicU64::new(0) }
    }
}

/// The `lidt` operands of the two tables, at `&X.limit` (the shim's halt
/// path loads them by symbol: `KERNEL_IDTR + 6`, `HALT_IDTR + 6`).
#[unsafe(no_mangle)]
pub(super) static KERNEL_IDTR: IdtPointer = IdtPointer::new();
#[unsafe(no_mangle)]
pub(super) static HALT_IDTR: IdtPointer = IdtPointer::new();
/// Offset of the `lidt` operand in an [`IdtPointer`].
pub const IDTR_OPERAND_OFFSET: usize = core::mem::offset_of!(IdtPointer, limit);

/// Gate type/attribute bytes: present, DPL 0, 64-bit interrupt gate (IF
/// cleared on entry) or trap gate (IF kept).
const INTERRUPT_GATE: u64 = 0x8e;
const TRAP_GATE: u64 = 0x8f;

/// Where each vector's gate points, in each table. The stubs live in
/// `entry` and `shim`, above this module: the caller (`arch`) gathers
/// their addresses and spacing.
pub struct Targets {
    /// Ring-0 exception stub of vector 0; vector `v`'s is
    /// `exception_stride` bytes further per vector, v < 32.
    pub exception: u64,
    pub exception_stride: u64,
    /// The shim gate (#UD).
    pub shim_gate: u64,
    /// CPL3 interrupt stub of vector 0 if there were one; vector `v`'s
    /// (from vector 32) is `irq3_stride` bytes further per vector.
    pub irq3: u64,
    pub irq3_stride: u64,
    /// Ring-0 recording stub of vector 32; vector `v`'s is `record_stride`
    /// bytes further per vector above 32.
    pub record0: u64,
    pub record_stride: u64,
}

/// The IST slot a vector runs on (0 = the stack the entry picks).
fn ist_for(vector: u8) -> u8 {
    match vector {
        exception::DOUBLE_FAULT => IST_DOUBLE_FAULT,
        exception::NMI => IST_NMI,
        exception::MACHINE_CHECK => IST_MACHINE_CHECK,
        _ => 0,
    }
}

/// The two IDT words of a gate.
fn gate(handler: u64, selector: u16, ist: u8, kind: u64) -> [u64; 2] {
    let low = (handler & 0xffff)
        | (u64::from(selector) << 16)
        | (u64::from(ist) << 32)
        | (kind << 40)
        | (((handler >> 16) & 0xffff) << 48);
    [low, handler >> 32]
}

/// The gate of exception `vector` (ring 0, both tables).
fn exception_gate(t: &Targets, vector: u8) -> [u64; 2] {
    let handler = if vector == exception::INVALID_OPCODE {
        t.shim_gate
    } else {
        t.exception + u64::from(vector) * t.exception_stride
    };
    gate(handler, KERNEL_CS, ist_for(vector), INTERRUPT_GATE)
}

fn store(table: &[AtomicU64; VECTORS * 2], vector: usize, [low, high]: [u64; 2]) {
    table[2 * vector].store(low, Ordering::Relaxed);
    table[2 * vector + 1].store(high, Ordering::Relaxed);
}

/// Boot prologue (CPL0): the gates early boot can need (the shim gate, the
/// fatal faults, NMI) and `lidt` of the kernel table. The rest of the
/// table is filled at CPL3 by [`fill`] before the APIC delivers anything.
pub fn init_early(t: &Targets) {
    for v in [
        exception::INVALID_OPCODE,
        exception::NMI,
        exception::DOUBLE_FAULT,
        exception::GENERAL_PROTECTION,
        exception::PAGE_FAULT,
    ] {
        store(&KERNEL_IDT, usize::from(v), exception_gate(t, v));
    }
    KERNEL_IDTR.base.store(KERNEL_IDT.as_ptr() as u64, Ordering::Relaxed);
    HALT_IDTR.base.store(HALT_IDT.as_ptr() as u64, Ordering::Relaxed);
    // SAFETY: CPL0 (prologue); the table is static and its pointer's base
    // was just written; vectors not yet filled are not present and nothing
    // raises them before `fill` (the APIC is still disabled).
    unsafe { lidt(&KERNEL_IDTR) };
}

/// Fills both tables completely (same values on every CPU). CPL3, before
/// this CPU's APIC is enabled.
pub fn fill(t: &Targets) {
    for v in 0..exception::COUNT {
        let g = exception_gate(t, v);
        store(&KERNEL_IDT, usize::from(v), g);
        store(&HALT_IDT, usize::from(v), g);
    }
    for v in usize::from(exception::COUNT)..VECTORS {
        let irq3 = t.irq3 + v as u64 * t.irq3_stride;
        store(&KERNEL_IDT, v, gate(irq3, USER_CS, 0, TRAP_GATE));
        let rec = t.record0 + (v - usize::from(exception::COUNT)) as u64 * t.record_stride;
        store(&HALT_IDT, v, gate(rec, KERNEL_CS, 0, INTERRUPT_GATE));
    }
}

/// Clears every gate of both tables: the next exception becomes a triple
/// fault (#UD -> #NP -> #DF, none present). For the `triple-fault` guest
/// argument, which tests that the VMM reports it. The tables are kernel
/// memory, writable at CPL3 like the rest of the kernel's data.
pub fn clear_all() {
    for w in KERNEL_IDT.iter().chain(HALT_IDT.iter()) {
        w.store(0, Ordering::SeqCst);
    }
}

/// # Safety
/// CPL0; `p` must describe a valid IDT for as long as it is loaded.
unsafe fn lidt(p: &IdtPointer) {
    let operand = &raw const p.limit;
    // SAFETY: per the function contract; the operand is limit then base.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) operand, options(readonly, nostack, preserves_flags)) };
}
