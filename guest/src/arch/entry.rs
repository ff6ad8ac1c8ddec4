//! Interrupt entry and exit at CPL3: the assembly behind the kernel IDT's
//! trap gates for vectors 32..256, and the soft interrupt mask's two cases.
//!
//! The CPU delivers an interrupt at CPL3 through a DPL-3 trap gate: no
//! privilege change, no stack switch, IF stays on. Each vector's 16-byte
//! stub pushes a zero error code and its vector and jumps to `irq3_entry`:
//!
//! ```text
//! irq3_entry: bts gs:[irq_masked]           (one instruction: test and set the mask)
//!   was masked ──> record: bts gs:[irq_pending], vector; irq_pending_any = 1; iretq
//!                  (no EOI: the LAPIC keeps its in-service bit, which holds back
//!                  every vector of the same or a lower priority class meanwhile)
//!   was not  ───> now masked (as an interrupt gate would clear IF); save the
//!                 registers; irqflags::on_interrupt (the handler, then every vector
//!                 that arrived meanwhile, highest first, then the exit work:
//!                 preemption); then the exit window:
//! irq3_exit:   irq_masked = 0; anything pending? -> mask again, replay, retry
//!              restore the registers from the frame (movs: the frame stays intact)
//! irq3_exit_iret: iretq
//! ```
//!
//! The exit window is the one place an interrupt can nest on an unmasked
//! CPU without bound in principle (a new one lands after the unmask and
//! before the `iretq`, again and again). As Xen's PV event upcall does,
//! an entry that finds it interrupted the window does not nest: it reuses
//! the frame being left (which is intact in memory until the `iretq`), so
//! at most one frame per unmasked CPU is ever live:
//! - interrupted before the `iretq`: the outer frame starts at the
//!   interrupted rsp; its vector slot takes the new vector and dispatch runs
//!   again on it;
//! - interrupted at the `iretq`: the registers are already the interrupted
//!   context's and the CPU frame is at the interrupted rsp; the new
//!   vector and error code go just below it and entry proceeds as if the
//!   interrupt had come straight there (the frame keeps its alignment:
//!   the CPU built it from a 16-byte aligned rsp).
//!
//! Stack: an entry pushes 22 words on the interrupted task's stack (no red
//! zone on this target, so nothing live lies below rsp).

use super::idt::{FRAME_SAVED_WORDS, TrapFrame};
use super::percpu::offset;

/// Bytes between two CPL3 interrupt stubs.
pub const IRQ_STUB_SIZE: usize = 16;
/// First vector with a CPL3 stub.
pub const FIRST_IRQ_VECTOR: usize = 32;
const IRQ_STUBS: usize = 256 - FIRST_IRQ_VECTOR;

core::arch::global_asm!(
    ".section .text.irq3, \"ax\"",
    ".balign 16",
    ".global irq3_stubs",
    "irq3_stubs:",
    ".set vec, {first}",
    ".rept {count}",
    ".balign 16",
    "push 0",
    "push vec",
    "jmp irq3_entry",
    ".set vec, vec + 1",
    ".endr",
    ".balign 16",
    ".global irq3_stubs_end",
    "irq3_stubs_end:",
    "",
    "irq3_entry:",
    "bts dword ptr gs:[{masked}], 0",
    "jc 50f",
    // Unmasked: did this interrupt land in the exit window?
    "push rax",
    "mov rax, [rsp + 24]",
    "cmp rax, offset irq3_exit",
    "jb 10f",
    "cmp rax, offset irq3_exit_end",
    "jae 10f",
    "cmp rax, offset irq3_exit_iret",
    "je 20f",
    // Before the window's iretq: reuse the frame at the interrupted rsp.
    "mov rax, [rsp + 8]",
    "mov rsp, [rsp + 48]",
    "mov [rsp + {vector_slot}], rax",
    "jmp irq3_dispatch",
    // At the window's iretq: the interrupted rsp points at the CPU frame
    // being returned through (the CPU may have left an alignment gap
    // above this entry's own frame, so go by that rsp, not by offsets).
    "20:",
    "push rcx",
    "mov rax, [rsp + 56]",
    "mov rcx, [rsp + 16]",
    "mov [rax - 16], rcx",
    "mov qword ptr [rax - 8], 0",
    "sub rax, 16",
    "pop rcx",
    "xchg rax, [rsp]",
    "mov rsp, [rsp]",
    "jmp irq3_save",
    "10:",
    "pop rax",
    "irq3_save:",
    push_gprs!(),
    "irq3_dispatch:",
    "mov rdi, rsp",
    "cld",
    "call {on_interrupt}",
    ".global irq3_exit",
    "irq3_exit:",
    "mov dword ptr gs:[{masked}], 0",
    "cmp dword ptr gs:[{pending_any}], 0",
    "jne 30f",
    "mov r15, [rsp + 0]",
    "mov r14, [rsp + 8]",
    "mov r13, [rsp + 16]",
    "mov r12, [rsp + 24]",
    "mov r11, [rsp + 32]",
    "mov r10, [rsp + 40]",
    "mov r9, [rsp + 48]",
    "mov r8, [rsp + 56]",
    "mov rbp, [rsp + 64]",
    "mov rdi, [rsp + 72]",
    "mov rsi, [rsp + 80]",
    "mov rdx, [rsp + 88]",
    "mov rcx, [rsp + 96]",
    "mov rbx, [rsp + 104]",
    "mov rax, [rsp + 112]",
    "lea rsp, [rsp + {saved_bytes}]",
    "irq3_exit_iret:",
    "iretq",
    "30:",
    "mov dword ptr gs:[{masked}], 1",
    "irq3_exit_end:",
    "mov rdi, rsp",
    "call {on_exit_replay}",
    "jmp irq3_exit",
    // Masked: record the vector and return; it runs at the unmask.
    "50:",
    "push rax",
    "mov rax, [rsp + 8]",
    "bts qword ptr gs:[{pending}], rax",
    "mov dword ptr gs:[{pending_any}], 1",
    "pop rax",
    "add rsp, 16",
    "iretq",
    first = const FIRST_IRQ_VECTOR,
    count = const IRQ_STUBS,
    masked = const offset::IRQ_MASKED,
    pending_any = const offset::IRQ_PENDING_ANY,
    pending = const offset::IRQ_PENDING,
    vector_slot = const 15 * 8,
    saved_bytes = const FRAME_SAVED_WORDS * 8,
    on_interrupt = sym irq3_on_interrupt,
    on_exit_replay = sym irq3_on_exit_replay,
);

unsafe extern "C" {
    static irq3_stubs: u8;
    static irq3_stubs_end: u8;
}

/// Address of vector 0's stub if there were one (the IDT adds
/// `vector * IRQ_STUB_SIZE`); panics if the stubs are not evenly spaced.
pub fn irq_stubs_base() -> u64 {
    let base = &raw const irq3_stubs as u64;
    let end = &raw const irq3_stubs_end as u64;
    assert_eq!(end - base, (IRQ_STUBS * IRQ_STUB_SIZE) as u64, "CPL3 interrupt stubs are not 16 bytes apart");
    base - (FIRST_IRQ_VECTOR * IRQ_STUB_SIZE) as u64
}

/// From `irq3_dispatch`, masked: one interrupt that came to an unmasked CPU.
extern "C" fn irq3_on_interrupt(frame: &mut TrapFrame) {
    super::irqflags::on_interrupt(frame.vector as u8);
}

/// From the exit window, masked: vectors recorded after the last replay.
extern "C" fn irq3_on_exit_replay(_frame: &mut TrapFrame) {
    super::irqflags::replay_pending();
}
