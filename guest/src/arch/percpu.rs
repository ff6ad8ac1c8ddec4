//! Per-CPU data, reached through the GS base.
//!
//! Each CPU's [`PerCpu`] lives in a static array slot; `IA32_GS_BASE`
//! points at it, and its first field points at itself, so `mov rax,
//! gs:[0]` yields a plain pointer to this CPU's data in one instruction.
//! This kernel never enters ring 3, so there is no `swapgs`: GS base stays
//! fixed from [`init`] on.
//!
//! Only the owning CPU writes its slot's identity fields (once, in
//! [`init`]); counters are atomics so that other CPUs (and later the
//! telemetry page) may read them.

use super::msr::{self, IA32_GS_BASE};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use switcher::abi::MAX_CPUS;

/// Interrupt counters of one CPU.
pub struct IrqCounters {
    pub wakeup_ipi: AtomicU64,
    pub host_request: AtomicU64,
    pub nmi: AtomicU64,
    /// APIC spurious-vector interrupts.
    pub spurious: AtomicU64,
    /// Vectors nobody registered for; counted, not fatal.
    pub unexpected: AtomicU64,
    pub last_unexpected_vector: AtomicU32,
}

/// One CPU's data. `self_ptr` must stay the first field (read as `gs:[0]`).
#[repr(C, align(64))]
pub struct PerCpu {
    self_ptr: AtomicPtr<PerCpu>,
    cpu_id: AtomicU32,
    apic_id: AtomicU32,
    /// Set once this CPU's x2APIC is on: IPIs may be sent from it.
    apic_enabled: AtomicBool,
    pub irq: IrqCounters,
}

impl PerCpu {
    const fn new() -> Self {
        Self {
            self_ptr: AtomicPtr::new(ptr::null_mut()),
            cpu_id: AtomicU32::new(0),
            apic_id: AtomicU32::new(0),
            apic_enabled: AtomicBool::new(false),
            irq: IrqCounters {
                wakeup_ipi: AtomicU64::new(0),
                host_request: AtomicU64::new(0),
                nmi: AtomicU64::new(0),
                spurious: AtomicU64::new(0),
                unexpected: AtomicU64::new(0),
                last_unexpected_vector: AtomicU32::new(0),
            },
        }
    }

    pub fn cpu_id(&self) -> u32 {
        self.cpu_id.load(Ordering::Relaxed)
    }

    pub fn apic_id(&self) -> u32 {
        self.apic_id.load(Ordering::Relaxed)
    }

    /// SeqCst, paired with the online mask: a CPU that sets its online bit
    /// and then sees CPU 0's APIC off knows CPU 0 has not yet checked the
    /// mask (and will see the bit), so it need not send a wake-up IPI.
    pub fn apic_enabled(&self) -> bool {
        self.apic_enabled.load(Ordering::SeqCst)
    }

    pub fn set_apic(&self, apic_id: u32) {
        self.apic_id.store(apic_id, Ordering::Relaxed);
        self.apic_enabled.store(true, Ordering::SeqCst);
    }
}

static PERCPU: [PerCpu; MAX_CPUS] = [const { PerCpu::new() }; MAX_CPUS];

/// Points GS base at CPU `cpu`'s slot. First thing every CPU does.
pub fn init(cpu: usize) {
    let slot = &PERCPU[cpu];
    slot.self_ptr.store(ptr::from_ref(slot).cast_mut(), Ordering::Relaxed);
    slot.cpu_id.store(cpu as u32, Ordering::Relaxed);
    // SAFETY: IA32_GS_BASE exists on every x86-64 CPU; the slot is static,
    // so GS stays valid forever, and nothing used GS before this.
    unsafe { msr::wrmsr(IA32_GS_BASE, ptr::from_ref(slot) as u64) };
}

/// This CPU's data. Valid after [`init`].
#[inline]
pub fn this() -> &'static PerCpu {
    let p: *const PerCpu;
    // SAFETY: after `init`, gs:[0] holds the address of this CPU's static
    // slot (its self pointer); reading it has no side effects.
    unsafe {
        core::arch::asm!("mov {}, qword ptr gs:[0]", out(reg) p,
            options(nostack, readonly, preserves_flags));
        &*p
    }
}

/// This CPU's index. Valid after [`init`].
#[inline]
pub fn cpu_id() -> u32 {
    this().cpu_id()
}

/// This CPU's data if GS base points at a slot, `None` otherwise (too
/// early in boot). Slower than [`this`] (an MSR read): for panic paths,
/// which must not trust anything.
pub fn try_this() -> Option<&'static PerCpu> {
    // SAFETY: IA32_GS_BASE exists on every x86-64 CPU; reading it is pure.
    let gs = unsafe { msr::rdmsr(IA32_GS_BASE) } as usize;
    let base = PERCPU.as_ptr() as usize;
    let size = core::mem::size_of::<PerCpu>();
    let offset = gs.checked_sub(base)?;
    (offset % size == 0 && offset / size < MAX_CPUS).then(|| &PERCPU[offset / size])
}

/// Another CPU's data (for its APIC id, counters).
pub fn of(cpu: usize) -> &'static PerCpu {
    &PERCPU[cpu]
}
