//! The context switch and the first entry of a new task, in assembly.
//!
//! `sched_context_switch(prev_rsp: *mut usize, next_rsp: usize, prev)`
//! pushes the callee-saved registers (rbx, rbp, r12-r15) on the current
//! stack, stores rsp through `prev_rsp`, loads `next_rsp`, pops the next
//! task's callee-saved registers and returns on its stack, with `prev` in
//! rax (so the resumed task learns whom it replaced). 16 instructions.
//! Caller-saved registers are the caller's business (System V ABI); there
//! is no FPU/SSE state (soft-float target). Interrupts are off throughout.
//!
//! A new task's stack is built by [`initial_stack`] to look like a
//! switched-out one whose return address is `sched_task_trampoline`, with
//! r12 = entry, r13 = argument and r14 = the Rust function the trampoline
//! calls (`lifecycle::task_start`, passed in: this file imports nothing
//! above it):
//!
//! ```text
//!   top -  8  0              (padding: rsp is 16-aligned at the trampoline)
//!   top - 16  0
//!   top - 24  sched_task_trampoline   <- `ret` target
//!   top - 32  rbp = 0
//!   top - 40  rbx = 0
//!   top - 48  r12 = entry
//!   top - 56  r13 = arg
//!   top - 64  r14 = start
//!   top - 72  r15 = 0                 <- saved rsp
//! ```

use super::task::Task;

core::arch::global_asm!(
    ".section .text.sched_switch, \"ax\"",
    ".global sched_context_switch",
    "sched_context_switch:",
    "push rbp",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov [rdi], rsp",
    "mov rsp, rsi",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "pop rbp",
    "mov rax, rdx",
    "ret",
    "",
    ".global sched_task_trampoline",
    "sched_task_trampoline:",
    "mov rdi, rax",
    "mov rsi, r12",
    "mov rdx, r13",
    "xor ebp, ebp",
    "call r14",
    "ud2",
);

/// What a new task's trampoline calls: `start(prev, entry, arg)`, with the
/// task it was switched in from (interrupts off); never returns.
pub(super) type TaskStart = extern "C" fn(prev: *const Task, entry: usize, arg: usize) -> !;

unsafe extern "C" {
    /// See the module doc. `prev` is a `*const Task`; returns the task
    /// (`*const Task`) that switched to the one resuming here.
    pub(super) fn sched_context_switch(prev_rsp: *mut usize, next_rsp: usize, prev: usize) -> usize;
    fn sched_task_trampoline();
}

/// Writes the initial frame (see the module doc) below `top` and returns
/// the saved rsp to give the new task.
///
/// # Safety
/// `top` must be the 16-aligned top of a stack nobody uses.
pub(super) unsafe fn initial_stack(top: usize, start: TaskStart, entry: fn(usize), arg: usize) -> usize {
    debug_assert_eq!(top % 16, 0);
    let frame: [usize; 9] =
        [0, start as usize, arg, entry as usize, 0, 0, sched_task_trampoline as *const () as usize, 0, 0];
    let rsp = top - frame.len() * 8;
    // SAFETY: the caller owns the stack; the frame lies inside it.
    unsafe { core::ptr::copy_nonoverlapping(frame.as_ptr(), rsp as *mut usize, frame.len()) };
    rsp
}
