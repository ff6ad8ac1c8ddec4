//! The ring-0 shim: everything this kernel still runs at CPL0 after boot.
//!
//! The kernel runs at CPL3 (see `arch`); a few things only CPL0 can do:
//! halting an idle CPU, the MSRs KVM's paravirtual features live behind,
//! loading the page tables, stopping a CPU for good. The shim does exactly
//! those, entered through one checked gate, and counts every entry per CPU
//! and service in the `ShimStats` page the VMM reads
//! (`switcher::abi::shim`). No shim entry happens on the lock fast paths,
//! the context switch, the timer interrupt or the measurement loop.
//!
//! # The gate
//!
//! `int N` is unusable here (#UD at CPL3 on hosts like ours) and SYSCALL
//! does not raise privilege on some of them, so the gate is #UD: the kernel
//! calls [`call`], whose one `ud2` (`shim_call_ud2`) faults into the
//! ring-0 #UD handler `shim_gate` (an interrupt gate: IF off, the TSS's
//! ring-0 stack). The handler:
//!
//! ```text
//!   rip != shim_call_ud2 ──> a real #UD: the fatal exception path
//!   service (eax) unknown ─> counted as rejected, returns u64::MAX
//!   count it; rip += 2 (past the ud2)
//!   HALT ─────────────────> in assembly: unless an interrupt is already
//!                           pending, load the halt IDT; sti; hlt; cli;
//!                           load the kernel IDT; iretq
//!   other ────────────────> `service` (Rust, at CPL0): checks its
//!                           arguments against an allow-list, acts, and
//!                           returns the result in rax (u64::MAX: refused)
//! ```
//!
//! Every instruction here may be emulated (about 1 µs each on hosts that
//! emulate guest ring 0), so the halt path is a handful of instructions
//! and the counting is one `inc`.
//!
//! # Idle
//!
//! A halted CPU must wake on an interrupt and give the interrupt to the
//! kernel at CPL3. It halts with the *halt IDT* loaded, whose vectors
//! 32..256 are ring-0 stubs that only record the vector as pending (as
//! the soft mask does at CPL3) and return; back at CPL3 the kernel
//! unmasks and runs it. The check of `irq_pending_any` before `sti; hlt`
//! runs with IF off, so a vector recorded after the kernel's last look is
//! not slept through.
//!
//! # Exceptions
//!
//! Both IDTs send exceptions here too (`shim_exception_stubs`): NMIs are
//! counted (or stop the CPU during a panic), everything else is fatal and
//! reported from ring 0 (`trap`).

use super::idt::{IDTR_OPERAND_OFFSET, TrapFrame};
use super::percpu::{self, offset};
use super::{instr, msr, trap};
use core::sync::atomic::Ordering;
use switcher::abi::shim;

/// Bytes between two ring-0 exception stubs.
pub const EXCEPTION_STUB_SIZE: usize = 16;
/// Bytes between two ring-0 recording stubs (halt IDT, vectors 32..256).
pub const RECORD_STUB_SIZE: usize = 32;
const RECORD_STUBS: usize = 256 - 32;

core::arch::global_asm!(
    ".section .text.shim, \"ax\"",
    // Exceptions 0..32 (vectors 8, 10-14, 17, 21, 29, 30 come with an
    // error code: bit mask 0x6022_7d00; the others get a 0).
    ".balign 16",
    ".global shim_exception_stubs",
    "shim_exception_stubs:",
    ".set vec, 0",
    ".rept 32",
    ".balign 16",
    ".if ((0x60227d00 >> vec) & 1) == 0",
    "push 0",
    ".endif",
    "push vec",
    "jmp shim_exception_common",
    ".set vec, vec + 1",
    ".endr",
    ".balign 16",
    ".global shim_exception_stubs_end",
    "shim_exception_stubs_end:",
    "",
    "shim_exception_common:",
    push_gprs!(),
    "mov rdi, rsp",
    "cld",
    "call {ring0_trap}",
    "shim_pop_and_return:",
    pop_gprs!(),
    "add rsp, 16",
    "iretq",
    "",
    // The gate (#UD).
    ".global shim_gate",
    "shim_gate:",
    "cmp qword ptr [rsp], offset shim_call_ud2",
    "jne 90f",
    "cmp eax, {services}",
    "jae 80f",
    "push rcx",
    "mov rcx, qword ptr gs:[{stats}]",
    "inc qword ptr [rcx + rax * 8]",
    "pop rcx",
    "add qword ptr [rsp], 2",
    "test eax, eax",
    "jnz 70f",
    // HALT (service 0).
    "cmp dword ptr gs:[{pending_any}], 0",
    "jne 60f",
    "lidt [rip + {halt_idtr} + {idtr_operand}]",
    "sti",
    "hlt",
    "cli",
    "lidt [rip + {kernel_idtr} + {idtr_operand}]",
    "60:",
    "iretq",
    // The other services, in Rust. From here rbp is no longer the CPL3
    // caller's: the VMM's stack walker knows the gate only up to here.
    ".global shim_gate_services",
    "shim_gate_services:",
    "70:",
    "push 0",
    "push 6",
    push_gprs!(),
    "mov rdi, rsp",
    "cld",
    "call {service}",
    "jmp shim_pop_and_return",
    // Unknown service: counted, refused.
    "80:",
    "push rcx",
    "mov rcx, qword ptr gs:[{stats}]",
    "inc qword ptr [rcx + {rejected}]",
    "pop rcx",
    "mov rax, -1",
    "add qword ptr [rsp], 2",
    "iretq",
    // Not the gate: a real invalid opcode.
    "90:",
    "push 0",
    "push 6",
    "jmp shim_exception_common",
    "",
    // Halt IDT, vectors 32..256: record the vector, return to the hlt.
    ".balign 32",
    ".global shim_record_stubs",
    "shim_record_stubs:",
    ".set vec, 32",
    ".rept {record_stubs}",
    ".balign 32",
    "push rax",
    "mov eax, vec",
    "bts qword ptr gs:[{pending}], rax",
    "mov dword ptr gs:[{pending_any}], 1",
    "pop rax",
    "iretq",
    ".set vec, vec + 1",
    ".endr",
    ".balign 32",
    ".global shim_record_stubs_end",
    "shim_record_stubs_end:",
    "",
    // The kernel's side of the gate: service in edi, arguments in rsi, rdx.
    ".global shim_enter",
    "shim_enter:",
    "mov eax, edi",
    "mov rdi, rsi",
    "mov rsi, rdx",
    ".global shim_call_ud2",
    "shim_call_ud2:",
    "ud2",
    "ret",
    services = const shim::SERVICES,
    stats = const offset::SHIM_STATS,
    rejected = const core::mem::offset_of!(switcher::abi::ShimStats, rejected),
    pending_any = const offset::IRQ_PENDING_ANY,
    pending = const offset::IRQ_PENDING,
    halt_idtr = sym super::idt::HALT_IDTR,
    kernel_idtr = sym super::idt::KERNEL_IDTR,
    idtr_operand = const IDTR_OPERAND_OFFSET,
    record_stubs = const RECORD_STUBS,
    ring0_trap = sym trap::ring0_trap,
    service = sym service,
);

unsafe extern "C" {
    static shim_exception_stubs: u8;
    static shim_exception_stubs_end: u8;
    static shim_record_stubs: u8;
    static shim_record_stubs_end: u8;
    static shim_gate: u8;
    fn shim_enter(service: u64, a: u64, b: u64) -> u64;
}

/// Address of exception 0's stub; panics if the stubs are not evenly spaced.
pub fn exception_stubs_base() -> u64 {
    let base = &raw const shim_exception_stubs as u64;
    let end = &raw const shim_exception_stubs_end as u64;
    assert_eq!(end - base, (32 * EXCEPTION_STUB_SIZE) as u64, "exception stubs are not 16 bytes apart");
    base
}

/// Address of vector 32's recording stub; panics if they are not evenly spaced.
pub fn record_stubs_base() -> u64 {
    let base = &raw const shim_record_stubs as u64;
    let end = &raw const shim_record_stubs_end as u64;
    assert_eq!(end - base, (RECORD_STUBS * RECORD_STUB_SIZE) as u64, "recording stubs are not 32 bytes apart");
    base
}

/// The #UD handler, the shim's gate.
pub fn gate_address() -> u64 {
    &raw const shim_gate as u64
}

/// Enters the shim for `service` with two arguments; returns its result
/// (`u64::MAX`: refused). From either ring (at CPL0 the gate runs on the
/// current stack).
fn call(service: usize, a: u64, b: u64) -> u64 {
    percpu::count_exit(switcher::telemetry::exit_cause::SHIM);
    // SAFETY: `shim_enter` is the gate's one `ud2`, which the #UD handler
    // turns into a call of the service; it follows the C ABI.
    unsafe { shim_enter(service as u64, a, b) }
}

/// Halts this CPU until an interrupt arrives, unless one is already
/// pending. Call masked (`irqflags`): the interrupt is recorded, and runs
/// when the caller unmasks.
#[inline]
pub fn halt() {
    call(shim::HALT, 0, 0);
}

/// Writes an allow-listed MSR; `false` if the shim refused.
pub fn wrmsr(msr: u32, value: u64) -> bool {
    call(shim::WRMSR, u64::from(msr), value) != u64::MAX
}

/// Reads an allow-listed MSR; `None` if the shim refused.
pub fn rdmsr(msr: u32) -> Option<u64> {
    let v = call(shim::RDMSR, u64::from(msr), 0);
    (v != u64::MAX).then_some(v)
}

/// Loads the page tables rooted at `pml4` (which must lie in the kernel's
/// .bss), with EFER.NXE and CR0.WP on; `false` if the shim refused.
pub fn set_page_tables(pml4: u64) -> bool {
    call(shim::SET_PAGE_TABLES, pml4, 0) != u64::MAX
}

/// Stops this CPU for good.
pub fn stop() -> ! {
    call(shim::STOP, 0, 0);
    // The shim never returns from STOP.
    loop {
        core::hint::spin_loop();
    }
}

/// This CPU's shim entries so far, by service, and the refused ones.
pub fn stats(cpu: usize) -> switcher::abi::ShimStats {
    let p = percpu::of(cpu).shim_stats.load(Ordering::Relaxed);
    if p.is_null() {
        return switcher::abi::ShimStats::default();
    }
    // SAFETY: the pointer is this CPU's slot in the ABI page (set at boot);
    // the shim updates it, so read it volatile.
    unsafe { p.read_volatile() }
}

unsafe extern "C" {
    static __bss_start: u8;
    static __bss_end: u8;
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// MSRs the shim writes on the kernel's behalf: KVM's steal-time area and
/// PV-EOI word (each the address of a kernel static, aligned as KVM wants,
/// with its enable bit).
const WRITABLE_MSRS: [(u32, u64); 2] = [(msr::MSR_KVM_STEAL_TIME, 64), (msr::MSR_KVM_PV_EOI_EN, 4)];
/// MSRs the shim reads for the kernel.
const READABLE_MSRS: [u32; 5] =
    [msr::IA32_APIC_BASE, msr::IA32_GS_BASE, msr::IA32_EFER, msr::MSR_KVM_STEAL_TIME, msr::MSR_KVM_PV_EOI_EN];

fn in_kernel(addr: u64, len: u64) -> bool {
    let start = &raw const __kernel_start as u64;
    let end = &raw const __kernel_end as u64;
    addr >= start && addr.checked_add(len).is_some_and(|e| e <= end)
}

/// The services other than HALT, at CPL0 (`shim_gate`, counted already).
/// `frame.rax` is the service, `rdi` and `rsi` its arguments; the result
/// goes back in `rax`.
extern "C" fn service(frame: &mut TrapFrame) {
    let result = match frame.rax as usize {
        shim::WRMSR => {
            let (msr, value) = (frame.rdi as u32, frame.rsi);
            let allowed = WRITABLE_MSRS.iter().any(|&(m, align)| {
                let addr = value & !1;
                m == msr && (value == 0 || (addr.is_multiple_of(align) && in_kernel(addr, align)))
            });
            // SAFETY: CPL0; the MSR and value passed the allow-list above.
            allowed.then(|| unsafe { msr::wrmsr(msr, value) }).map(|()| 0)
        }
        shim::RDMSR => {
            let msr = frame.rdi as u32;
            // SAFETY: CPL0; the MSR is on the allow-list (all exist where
            // the kernel asks: KVM's only after its CPUID check).
            READABLE_MSRS.contains(&msr).then(|| unsafe { msr::rdmsr(msr) })
        }
        shim::SET_PAGE_TABLES => {
            let root = frame.rdi;
            let bss = &raw const __bss_start as u64..&raw const __bss_end as u64;
            // SAFETY: CPL0; the root is a page of the kernel's .bss, where
            // its page tables live (mm::paging builds a complete map there).
            (root.is_multiple_of(4096) && bss.contains(&root))
                .then(|| unsafe { instr::load_page_tables(root) })
                .map(|()| 0)
        }
        shim::STOP => instr::halt_forever_cpl0(),
        _ => None,
    };
    frame.rax = match result {
        Some(v) => v,
        None => {
            let p = percpu::this().shim_stats.load(Ordering::Relaxed);
            // SAFETY: this CPU's slot in the ABI page (set at boot).
            unsafe { core::ptr::addr_of_mut!((*p).rejected).write_volatile((*p).rejected + 1) };
            u64::MAX
        }
    };
}
