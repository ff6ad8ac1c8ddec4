//! Interrupt entry and exit at CPL3: the assembly behind the kernel IDT's
//! trap gates for vectors 32..256, and the soft interrupt mask's two cases.
//!
//! The CPU delivers an interrupt at CPL3 through a DPL-3 trap gate: no
//! privilege change, no stack switch, IF stays on. Each vector's 16-byte
//! stub pushes a zero error code and its vector and jumps to `irq3_entry`:
//!
//! ```text
//! irq3_entry: bts gs:[irq_masked]           (one instruction: test and set the mask)
//!   was masked ──> record: bts gs:[irq_pending], vector; if the bit was set
//!                  already (a merged delivery) irq_eoi_owed += 1;
//!                  irq_pending_any = 1; iretq
//!                  (no EOI: the LAPIC keeps its in-service bit, which holds back
//!                  every vector of the same or a lower priority class meanwhile)
//!   was not  ───> now masked (as an interrupt gate would clear IF); save the
//!                 registers; irqflags::on_interrupt (the handler, then every vector
//!                 that arrived meanwhile, highest first, each followed by the EOIs
//!                 owed, then the exit work: preemption); then the exit window:
//! irq3_exit:   irq_masked = 0; anything pending? -> mask again, replay, retry
//!              restore the registers from the frame (movs: the frame stays intact)
//! irq3_exit_iret: iretq
//! ```
//!
//! EOIs: one per accepted delivery (`logic::softmask` says why, and pays
//! the owed ones).
//!
//! The entry window: a trap gate leaves IF set, so a second interrupt can
//! arrive before the first one's stub reaches its `bts` (anywhere from the
//! stub's first instruction to the `bts` itself). The mask is still clear
//! there: the second entry would run its handler and exit work, and could
//! switch tasks, while the first vector is accepted (in service at the
//! LAPIC) but recorded nowhere. So an entry whose interrupted RIP lies in
//! `irq3_stubs..irq3_window_end` records its vector as a masked one does,
//! and returns to the interrupted entry leaving the mask set and
//! `irq_entry_hold` = 1 (the tail that sets it lies inside the window,
//! so an interrupt there records itself too). The interrupted entry's
//! `bts` then finds the mask set; a masked entry that finds the hold set
//! and was not itself in a window is that entry: it clears the hold and
//! goes on as an unmasked one (exit-window check included), and its replay
//! runs the vectors recorded for it.
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
//! The model checker runs these paths step by step (`model/src/softmask.rs`)
//! around the replay core, with interrupts arriving between any two steps.
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
    // The entry window's tail (inside the window, so that an interrupt
    // here records itself too): a nested entry that recorded its vector
    // keeps the mask set for the entry it interrupted, which claims it.
    "irq3_window_hold:",
    "mov dword ptr gs:[{hold}], 1",
    "pop rax",
    "add rsp, 16",
    "iretq",
    "",
    "irq3_entry:",
    "bts dword ptr gs:[{masked}], 0",
    ".global irq3_window_end",
    "irq3_window_end:",
    "jc 50f",
    "push rax",
    "mov rax, [rsp + 24]",
    // Unmasked: did this interrupt land in another entry's window (its
    // stub, up to its own bts), whose vector is accepted but not yet
    // recorded? Then record this one and return to it: it runs both.
    "cmp rax, offset irq3_stubs",
    "jb 5f",
    "cmp rax, offset irq3_window_end",
    "jb 40f",
    // Did it land in the exit window?
    "5:",
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
    // Named for the VMM's stack walker: this call and `irq3_dispatch`'s
    // return here and to `irq3_exit` with the trap frame 16 bytes above
    // the handler's frame (switcher::stackwalk).
    ".global irq3_replay_ret",
    "irq3_replay_ret:",
    "jmp irq3_exit",
    // Masked: record the vector and return; it runs at the unmask.
    // Landed in an entry's window, unmasked: record (as masked), keep the
    // mask for the interrupted entry.
    "40:",
    "mov rax, [rsp + 8]",
    "bts qword ptr gs:[{pending}], rax",
    "jnc 41f",
    "cmp rax, {spurious}",
    "je 41f",
    "inc dword ptr gs:[{eoi_owed}]",
    "41:",
    "mov dword ptr gs:[{pending_any}], 1",
    "jmp irq3_window_hold",
    // Masked. First: is this the entry a nested one kept the mask for
    // (the hold is set, and it did not itself land in a window)? It owns
    // the mask now: on as if it had found it clear.
    "50:",
    "push rax",
    "cmp dword ptr gs:[{hold}], 0",
    "je 55f",
    "mov rax, [rsp + 24]",
    "cmp rax, offset irq3_stubs",
    "jb 52f",
    "cmp rax, offset irq3_window_end",
    "jb 55f",
    "52:",
    "mov dword ptr gs:[{hold}], 0",
    "jmp 5b",
    // Record the vector; a delivery that merges into a pending bit owes
    // its EOI (logic::softmask::record, instruction for instruction).
    "55:",
    "mov rax, [rsp + 8]",
    "bts qword ptr gs:[{pending}], rax",
    "jnc 56f",
    "cmp rax, {spurious}",
    "je 56f",
    "inc dword ptr gs:[{eoi_owed}]",
    "56:",
    "mov dword ptr gs:[{pending_any}], 1",
    "pop rax",
    "add rsp, 16",
    "iretq",
    first = const FIRST_IRQ_VECTOR,
    count = const IRQ_STUBS,
    masked = const offset::IRQ_MASKED,
    pending_any = const offset::IRQ_PENDING_ANY,
    pending = const offset::IRQ_PENDING,
    eoi_owed = const offset::IRQ_EOI_OWED,
    hold = const offset::IRQ_ENTRY_HOLD,
    spurious = const switcher::abi::vector::SPURIOUS as u32,
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
