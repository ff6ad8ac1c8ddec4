//! The IDT (one table for all CPUs) and its 256 assembly entry stubs.
//!
//! Every vector has a 16-byte stub that makes the stack uniform: it pushes
//! 0 where the CPU pushed no error code, then the vector number, and jumps
//! to `isr_common`, which saves all general-purpose registers and calls
//! [`super::trap::dispatch`] with a pointer to the resulting [`TrapFrame`]:
//!
//! ```text
//!   ss, rsp, rflags, cs, rip     pushed by the CPU
//!   error code (or 0)            pushed by the CPU or the stub
//!   vector                       pushed by the stub
//!   rax .. r15                   pushed by isr_common
//! ```
//!
//! The kernel uses no SSE/x87 (soft-float target), so no FPU state is saved.
//!
//! The table is filled by every CPU with the same values (atomic stores):
//! no CPU waits for another before loading it, which matters where ring 0
//! is emulated and a wait would spin.

use super::gdt::{IST_DOUBLE_FAULT, IST_MACHINE_CHECK, IST_NMI, KERNEL_CS};
use core::sync::atomic::{AtomicU64, Ordering};

pub const VECTORS: usize = 256;
const STUB_SIZE: usize = 16;

/// Vectors of the CPU exceptions this kernel names.
pub mod exception {
    pub const NMI: u8 = 2;
    pub const DOUBLE_FAULT: u8 = 8;
    pub const PAGE_FAULT: u8 = 14;
    pub const MACHINE_CHECK: u8 = 18;
    /// Vectors 0..32 are reserved for exceptions.
    pub const COUNT: u8 = 32;
}

/// The stack at `isr_common`'s call into Rust, lowest address first.
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

// The stubs. Vectors whose exceptions push an error code (8, 10-14, 17,
// 21, 29, 30: bit mask 0x6022_7d00) skip the `push 0`. Each stub is at most
// 12 bytes (push imm8, push imm32, jmp rel32) and aligned to 16, so stub N
// is at isr_stubs + 16 * N; `load` checks the total length.
//
// Alignment: the CPU aligns RSP to 16 before pushing its 5-word frame;
// with the error code, the vector and 15 registers the stack holds 22
// words at the call, so RSP is 16-byte aligned there, as the ABI wants.
core::arch::global_asm!(
    ".section .text.isr, \"ax\"",
    ".global isr_stubs",
    ".global isr_stubs_end",
    ".balign 16",
    "isr_stubs:",
    ".set vec, 0",
    ".rept 256",
    ".balign 16",
    ".if vec < 32",
    ".if ((0x60227d00 >> vec) & 1) == 0",
    "push 0",
    ".endif",
    ".else",
    "push 0",
    ".endif",
    "push vec",
    "jmp isr_common",
    ".set vec, vec + 1",
    ".endr",
    ".balign 16",
    "isr_stubs_end:",
    "",
    "isr_common:",
    "push rax",
    "push rbx",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push rbp",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rdi, rsp",
    "cld",
    "call {dispatch}",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rbp",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rbx",
    "pop rax",
    "add rsp, 16",
    "iretq",
    dispatch = sym super::trap::dispatch,
);

unsafe extern "C" {
    static isr_stubs: u8;
    static isr_stubs_end: u8;
}

/// Two words per gate.
static IDT: [AtomicU64; VECTORS * 2] = [const { AtomicU64::new(0) }; VECTORS * 2];

/// Present, DPL 0, 64-bit interrupt gate (IF cleared on entry).
const INTERRUPT_GATE: u64 = 0x8e;

/// The IST slot a vector runs on (0 = the current stack).
fn ist_for(vector: u8) -> u8 {
    match vector {
        exception::DOUBLE_FAULT => IST_DOUBLE_FAULT,
        exception::NMI => IST_NMI,
        exception::MACHINE_CHECK => IST_MACHINE_CHECK,
        _ => 0,
    }
}

/// The two IDT words of an interrupt gate to `handler`.
fn gate(handler: u64, ist: u8) -> [u64; 2] {
    let low = (handler & 0xffff)
        | (u64::from(KERNEL_CS) << 16)
        | (u64::from(ist) << 32)
        | (INTERRUPT_GATE << 40)
        | (((handler >> 16) & 0xffff) << 48);
    [low, handler >> 32]
}

/// Fills the shared IDT (same values on every CPU) and loads it here.
pub fn load() {
    let base = &raw const isr_stubs as u64;
    let end = &raw const isr_stubs_end as u64;
    assert_eq!(end - base, (VECTORS * STUB_SIZE) as u64, "IDT stubs are not 16 bytes apart");
    for vector in 0..VECTORS {
        let [low, high] = gate(base + (vector * STUB_SIZE) as u64, ist_for(vector as u8));
        IDT[2 * vector].store(low, Ordering::Relaxed);
        IDT[2 * vector + 1].store(high, Ordering::Relaxed);
    }
    // SAFETY: the IDT is static, complete, and points at the stubs above.
    unsafe { lidt(IDT.as_ptr() as u64, (core::mem::size_of_val(&IDT) - 1) as u16) };
}

/// Loads an empty IDT: the next exception becomes a triple fault. For the
/// `triple-fault` guest argument, which tests that the VMM reports it.
pub fn load_empty() {
    // SAFETY: deliberately invalid; the caller wants the CPU to shut down.
    unsafe { lidt(0, 0) };
}

/// # Safety
/// `base`/`limit` must describe a valid IDT for as long as it is loaded,
/// or the caller must want the resulting fault.
unsafe fn lidt(base: u64, limit: u16) {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let pointer = Pointer { limit, base };
    // SAFETY: per the function contract.
    unsafe { core::arch::asm!("lidt [{}]", in(reg) &raw const pointer, options(readonly, nostack, preserves_flags)) };
}
