//! x86-64 specifics behind a small interface: the rest of the kernel calls
//! [`init_cpu`] once per CPU and uses `apic`, `cpu` and `percpu`; MSR
//! numbers, descriptor formats and entry stubs stay in here.

pub mod apic;
pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod msr;
pub mod percpu;
pub mod port;
pub mod steal;
mod trap;

/// Brings up this CPU: per-CPU data (GS base), GDT/TSS, IDT, x2APIC,
/// KVM steal time (where offered).
/// Interrupts stay off; the caller enables them when it idles.
pub fn init_cpu(cpu: usize) {
    percpu::init(cpu);
    gdt::init(cpu);
    idt::load();
    apic::init();
    steal::init(cpu);
}
