//! x86-64 specifics behind a small interface, and the boundary between the
//! deprivileged kernel and the few things it runs at CPL0.
//!
//! The kernel runs at CPL3, Xen-PV style (docs/ARCHITECTURE.md, "The guest kernel model"):
//!
//! ```text
//!  _start (CPL0) ── prologue: GDT+TSS, GS base, the early IDT gates, xAPIC mode
//!        │          (a few hundred instructions: ring 0 may be emulated)
//!        └─iretq──> kernel (CPL3): init_cpu fills the IDTs, enables the LAPIC;
//!                   everything else, for good
//!  kernel ──ud2 gate──> shim (CPL0): halt, allow-listed MSRs, page tables, stop;
//!                       every entry counted per CPU and service (`shim`)
//!  interrupt at CPL3 ──trap gate──> entry (CPL3): soft mask (`irqflags`)
//!  exception ──interrupt gate──> shim (CPL0): fatal report (`trap`)
//! ```
//!
//! The rest of the kernel uses `apic`, `cpu`, `irqflags` and `percpu`;
//! MSR numbers, descriptor formats, entry stubs and the shim stay in here.
//! The lowest layer but `logic`, which is all it imports of the kernel:
//! what it runs of the layers above comes in as function pointers (the
//! interrupt handler and exit work, `irqflags::set_hooks`; the console's
//! panic print for `trap`, handed to [`prologue`]). Layers, lowest first
//! (no file imports one above it): `msr`, `gdt`, `instr`, `idt`, `percpu`,
//! `irqflags`; `trap`, `shim`, `entry`; `cpu`, `apic`, `steal`; this
//! module, which hands `idt` the stubs' addresses.

/// The assembly that saves the 15 general-purpose registers below an
/// interrupt frame in `idt::TrapFrame` order (rax pushed first), and the
/// one that restores them: shared by the CPL3 entry and the ring-0 shim.
macro_rules! push_gprs {
    () => {
        "push rax\npush rbx\npush rcx\npush rdx\npush rsi\npush rdi\npush rbp\npush r8\npush r9\npush r10\npush r11\npush r12\npush r13\npush r14\npush r15"
    };
}
macro_rules! pop_gprs {
    () => {
        "pop r15\npop r14\npop r13\npop r12\npop r11\npop r10\npop r9\npop r8\npop rbp\npop rdi\npop rsi\npop rdx\npop rcx\npop rbx\npop rax"
    };
}

pub mod apic;
pub mod cpu;
mod entry;
pub mod gdt;
pub mod idt;
pub mod instr;
pub mod irqflags;
pub mod msr;
pub mod percpu;
pub mod shim;
pub mod steal;
mod trap;

pub use trap::nmi_means_stop;

const APIC_BASE_BSP: u64 = 1 << 8;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const APIC_BASE_ENABLE: u64 = 1 << 11;

/// The boot prologue of CPU `cpu`, at CPL0: GDT and TSS, the GS base, the
/// IDT's early gates, the LAPIC in xAPIC mode at its default base; then
/// drops to CPL3 for good, calling `entry(boot_info, cpu)` there on the
/// same stack. First of all it takes `print`, the console's panic-path
/// print, for the fatal-exception report (`trap`).
pub fn prologue(
    cpu: usize,
    boot_info: u64,
    entry: extern "C" fn(u64, u64) -> !,
    print: fn(core::fmt::Arguments<'_>),
) -> ! {
    trap::set_printer(print);
    gdt::init(cpu);
    percpu::init(cpu);
    idt::init_early(&idt_targets());
    xapic_mode();
    // SAFETY: CPL0, GDT/TSS loaded, GS base set; `entry` never returns.
    unsafe { gdt::drop_to_cpl3(entry, boot_info, cpu as u64) }
}

/// Puts the LAPIC in xAPIC mode at `LAPIC_ADDR` (KVM's reset state; a
/// hypervisor that left it in x2APIC mode gets it taken out, through
/// "disabled" as the architecture requires). CPL0.
fn xapic_mode() {
    // SAFETY: CPL0; IA32_APIC_BASE exists on every CPU with an APIC, and
    // the writes only move it between the architectural states.
    unsafe {
        let base = msr::rdmsr(msr::IA32_APIC_BASE);
        let want = switcher::abi::LAPIC_ADDR | APIC_BASE_ENABLE | (base & APIC_BASE_BSP);
        if base != want {
            if base & APIC_BASE_X2APIC != 0 {
                msr::wrmsr(msr::IA32_APIC_BASE, base & !(APIC_BASE_X2APIC | APIC_BASE_ENABLE));
            }
            msr::wrmsr(msr::IA32_APIC_BASE, want);
        }
    }
}

/// Where the IDT gates point: the stubs of `shim` and `entry`.
fn idt_targets() -> idt::Targets {
    idt::Targets {
        exception: shim::exception_stubs_base(),
        exception_stride: shim::EXCEPTION_STUB_SIZE as u64,
        shim_gate: shim::gate_address(),
        irq3: entry::irq_stubs_base(),
        irq3_stride: entry::IRQ_STUB_SIZE as u64,
        record0: shim::record_stubs_base(),
        record_stride: shim::RECORD_STUB_SIZE as u64,
    }
}

/// Brings up this CPU at CPL3: fills the IDTs, enables the LAPIC (from
/// here on interrupts arrive; the soft mask, still set, defers them), and
/// registers KVM's PV EOI word and steal-time area where offered (two
/// shim WRMSRs). Returns whether PV EOI is on.
pub fn init_cpu(cpu: usize) -> bool {
    debug_assert_eq!(cpu::current_cpl(), 3);
    idt::fill(&idt_targets());
    apic::init();
    let pv_eoi = apic::init_pv_eoi(cpu);
    steal::init(cpu);
    pv_eoi
}
