//! Per-CPU data, reached through the GS base.
//!
//! Each CPU's [`PerCpu`] lives in a static array slot; `IA32_GS_BASE`
//! points at it, and its first field points at itself, so `mov rax,
//! gs:[0]` yields a plain pointer to this CPU's data in one instruction.
//! The GS base is written once, at CPL0 in the boot prologue, and is the
//! same in both rings (the kernel at CPL3, the shim at CPL0): there is no
//! `swapgs`, and a GS-relative access works in either ring.
//!
//! Only the owning CPU writes its slot's identity fields (once, in
//! [`init`]); counters are atomics so that other CPUs (and later the
//! telemetry page) may read them.
//!
//! The scheduler's per-CPU words (preempt count, IRQ depth, need_resched,
//! current task, raw locks held) sit in the same slot and have
//! single-instruction accessors (`add dword ptr gs:[offset], 1`): an
//! interrupt cannot split them, so the owning CPU updates them without a
//! `lock` prefix. Only `need_resched` is written by other CPUs (a waker,
//! under the target's run-queue lock); the rest are written by the owner
//! only and may be read by anyone (diagnostics).

use super::msr::{self, IA32_GS_BASE};
use core::ptr;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use switcher::abi::{MAX_CPUS, SHIM_STATS_ADDR, ShimStats};
use switcher::telemetry::exit_cause;

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
    /// The soft interrupt mask (`arch::irqflags`): 1 while this CPU's
    /// kernel code has "interrupts disabled". Hardware IF stays on at CPL3;
    /// an interrupt that arrives while this is set is only recorded in
    /// `irq_pending` and runs when the mask drops. Starts masked.
    pub irq_masked: AtomicU32,
    /// Set whenever a vector is recorded in `irq_pending` (or work is
    /// requested for the next unmask): the unmask fast path tests this one
    /// word.
    pub irq_pending_any: AtomicU32,
    /// Vectors that arrived while masked (bit N = vector N), not yet run
    /// and not yet acknowledged (EOI) at the LAPIC.
    pub irq_pending: [AtomicU64; 4],
    /// EOIs owed for deliveries that merged into an already-pending vector
    /// (counted by the entry's masked path, paid by the replay:
    /// `logic::softmask`).
    pub irq_eoi_owed: AtomicU32,
    /// 1 while a nested entry that landed in another entry's window keeps
    /// the mask set for that (outer) entry, which claims it (`entry`).
    pub irq_entry_hold: AtomicU32,
    /// This CPU's [`ShimStats`] in the ABI page the VMM reads; the ring-0
    /// shim's gate counts every entry through it.
    pub shim_stats: AtomicPtr<ShimStats>,
    /// KVM's PV EOI word (bit 0 set by KVM: the next EOI may be skipped).
    pub pv_eoi: AtomicU64,
    cpu_id: AtomicU32,
    apic_id: AtomicU32,
    /// Set once this CPU's x2APIC is on: IPIs may be sent from it.
    apic_enabled: AtomicBool,
    /// Set (by any CPU, under this CPU's run-queue lock) when this CPU must
    /// reschedule; cleared by its scheduler under the same lock.
    pub need_resched: AtomicBool,
    /// Preemption-disable nesting count (0: preemptible, IRQs permitting).
    pub preempt_count: AtomicU32,
    /// Hard-IRQ nesting depth (0: task context).
    pub irq_depth: AtomicU32,
    /// Raw spinlocks held by the code running here.
    pub raw_locks_held: AtomicU32,
    /// Name of the raw spinlock taken last: `(address << 32) | length` of a
    /// `&'static str` (kernel addresses are below 4 GiB; 0 = none). One
    /// word, so that an interrupt cannot tear it.
    pub last_raw_lock: AtomicU64,
    /// The task running here (`*const sched::Task`; null before the
    /// scheduler's per-CPU init).
    pub current: AtomicPtr<()>,
    pub irq: IrqCounters,
    /// Timer interrupts, and the lateness of the last one (TSC ticks from
    /// the programmed deadline to the handler's TSC read).
    pub timer_irqs: AtomicU64,
    pub last_timer_late_tsc: AtomicU64,
    pub max_timer_late_tsc: AtomicU64,
    pub resched_ipi: AtomicU64,
    /// Context switches done by this CPU.
    pub switches: AtomicU64,
    /// Set while this CPU's idle loop polls need_resched: a waker then
    /// skips the reschedule IPI (`logic::idle`).
    pub polling: AtomicBool,
    /// Reschedule IPIs spared because this CPU was polling.
    pub ipis_spared: AtomicU64,
    /// Idle halts in the shim, and idle periods that polled instead.
    pub idle_halts: AtomicU64,
    /// Deadlines the idle loop served itself, polling (no interrupt).
    pub idle_expiries: AtomicU64,
    /// Exits to the hypervisor this CPU made, by
    /// `switcher::telemetry::exit_cause` ([`count_exit`]).
    pub exits: [AtomicU64; exit_cause::COUNT],
    /// The destination last written to the ICR's high half (`u32::MAX`:
    /// none yet): an IPI to the same destination skips that write.
    pub icr_dest: AtomicU32,
}

impl PerCpu {
    const fn new() -> Self {
        Self {
            self_ptr: AtomicPtr::new(ptr::null_mut()),
            irq_masked: AtomicU32::new(1),
            irq_pending_any: AtomicU32::new(0),
            irq_pending: [const { AtomicU64::new(0) }; 4],
            irq_eoi_owed: AtomicU32::new(0),
            irq_entry_hold: AtomicU32::new(0),
            shim_stats: AtomicPtr::new(ptr::null_mut()),
            pv_eoi: AtomicU64::new(0),
            cpu_id: AtomicU32::new(0),
            apic_id: AtomicU32::new(0),
            apic_enabled: AtomicBool::new(false),
            need_resched: AtomicBool::new(false),
            preempt_count: AtomicU32::new(0),
            irq_depth: AtomicU32::new(0),
            raw_locks_held: AtomicU32::new(0),
            last_raw_lock: AtomicU64::new(0),
            current: AtomicPtr::new(ptr::null_mut()),
            timer_irqs: AtomicU64::new(0),
            last_timer_late_tsc: AtomicU64::new(0),
            max_timer_late_tsc: AtomicU64::new(0),
            resched_ipi: AtomicU64::new(0),
            switches: AtomicU64::new(0),
            polling: AtomicBool::new(false),
            ipis_spared: AtomicU64::new(0),
            idle_halts: AtomicU64::new(0),
            idle_expiries: AtomicU64::new(0),
            exits: [const { AtomicU64::new(0) }; exit_cause::COUNT],
            icr_dest: AtomicU32::new(u32::MAX),
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

/// Points GS base at CPU `cpu`'s slot. First thing every CPU does, at
/// CPL0 (boot prologue).
pub fn init(cpu: usize) {
    let slot = &PERCPU[cpu];
    slot.self_ptr.store(ptr::from_ref(slot).cast_mut(), Ordering::Relaxed);
    slot.cpu_id.store(cpu as u32, Ordering::Relaxed);
    let stats = (SHIM_STATS_ADDR as usize + cpu * core::mem::size_of::<ShimStats>()) as *mut ShimStats;
    slot.shim_stats.store(stats, Ordering::Relaxed);
    // SAFETY: IA32_GS_BASE exists on every x86-64 CPU; the slot is static,
    // so GS stays valid forever, and nothing used GS before this. CPL0:
    // the boot prologue calls this before it drops to CPL3.
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
/// early in boot). For panic paths, which must not trust anything: at CPL3
/// the GS base is set (the prologue sets it before it drops there) and
/// `gs:[0]` is checked against the table; at CPL0 the MSR is read.
pub fn try_this() -> Option<&'static PerCpu> {
    let gs = if super::instr::current_cpl() == 3 {
        let p: usize;
        // SAFETY: at CPL3 GS base points at a static slot (see above);
        // reading its first word has no side effects.
        unsafe {
            core::arch::asm!("mov {}, qword ptr gs:[0]", out(reg) p, options(nostack, readonly, preserves_flags))
        };
        p
    } else {
        // SAFETY: at CPL0, IA32_GS_BASE exists on every x86-64 CPU; reading it is pure.
        (unsafe { msr::rdmsr(IA32_GS_BASE) }) as usize
    };
    let base = PERCPU.as_ptr() as usize;
    let size = core::mem::size_of::<PerCpu>();
    let offset = gs.checked_sub(base)?;
    (offset % size == 0 && offset / size < MAX_CPUS).then(|| &PERCPU[offset / size])
}

/// Another CPU's data (for its APIC id, counters).
pub fn of(cpu: usize) -> &'static PerCpu {
    &PERCPU[cpu]
}

/// Adds to / subtracts from a 32-bit field of this CPU's slot in one
/// instruction (interrupt-atomic on this CPU; not a barrier for others).
/// Not `nomem`: a compiler barrier, which preempt_disable relies on.
macro_rules! gs_u32_op {
    ($name:ident, $op:literal, $field:ident, $doc:literal) => {
        #[doc = $doc]
        #[inline(always)]
        pub fn $name() {
            // SAFETY: after `init`, GS points at this CPU's static slot; the
            // offset is that of an AtomicU32 in it; only this CPU writes it.
            unsafe {
                core::arch::asm!(concat!($op, " dword ptr gs:[{off}], 1"),
                    off = const core::mem::offset_of!(PerCpu, $field), options(nostack));
            }
        }
    };
}

/// Reads a field of this CPU's slot in one instruction.
macro_rules! gs_read {
    ($name:ident, $ty:ty, $reg:ident, $width:literal, $field:ident, $doc:literal) => {
        #[doc = $doc]
        #[inline(always)]
        pub fn $name() -> $ty {
            let v: $ty;
            // SAFETY: after `init`, GS points at this CPU's static slot; the
            // offset and width are those of the named field.
            unsafe {
                core::arch::asm!(concat!("mov {v", $width, "}, ", "gs:[{off}]"),
                    v = out($reg) v, off = const core::mem::offset_of!(PerCpu, $field),
                    options(nostack, readonly, preserves_flags));
            }
            v
        }
    };
}

gs_u32_op!(preempt_count_inc, "add", preempt_count, "Preempt count += 1 (this CPU).");
gs_u32_op!(preempt_count_dec, "sub", preempt_count, "Preempt count -= 1 (this CPU).");
gs_u32_op!(irq_depth_inc, "add", irq_depth, "IRQ depth += 1 (this CPU).");
gs_u32_op!(irq_depth_dec, "sub", irq_depth, "IRQ depth -= 1 (this CPU).");
gs_u32_op!(raw_locks_inc, "add", raw_locks_held, "Raw locks held += 1 (this CPU).");
gs_u32_op!(raw_locks_dec, "sub", raw_locks_held, "Raw locks held -= 1 (this CPU).");
gs_read!(preempt_count, u32, reg, ":e", preempt_count, "This CPU's preempt count.");
gs_read!(irq_depth, u32, reg, ":e", irq_depth, "This CPU's hard-IRQ depth.");
gs_read!(raw_locks_held, u32, reg, ":e", raw_locks_held, "Raw spinlocks held on this CPU.");
gs_read!(need_resched_byte, u8, reg_byte, "", need_resched, "This CPU's need_resched flag as a byte.");
gs_read!(current_ptr, *const (), reg, "", current, "This CPU's current task pointer (null before the scheduler).");

/// Counts one exit to the hypervisor of `cause` (an index of
/// `switcher::telemetry::exit_cause`) on this CPU; nothing where GS does
/// not point at a slot yet ([`try_this`]). One locked add: interrupt-safe,
/// and a few ns against the exit's tens of µs.
#[inline(always)]
pub fn count_exit(cause: usize) {
    if let Some(c) = try_this().and_then(|p| p.exits.get(cause)) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// This CPU's exit counts, by cause.
pub fn exits_now() -> [u64; exit_cause::COUNT] {
    let e = &this().exits;
    core::array::from_fn(|i| e[i].load(Ordering::Relaxed))
}

/// Whether this CPU must reschedule.
#[inline(always)]
pub fn need_resched() -> bool {
    need_resched_byte() != 0
}

/// Offsets of the fields the entry assembly reaches through `gs:`.
pub mod offset {
    use super::PerCpu;
    pub const IRQ_MASKED: usize = core::mem::offset_of!(PerCpu, irq_masked);
    pub const IRQ_PENDING_ANY: usize = core::mem::offset_of!(PerCpu, irq_pending_any);
    pub const IRQ_PENDING: usize = core::mem::offset_of!(PerCpu, irq_pending);
    pub const IRQ_EOI_OWED: usize = core::mem::offset_of!(PerCpu, irq_eoi_owed);
    pub const IRQ_ENTRY_HOLD: usize = core::mem::offset_of!(PerCpu, irq_entry_hold);
    pub const SHIM_STATS: usize = core::mem::offset_of!(PerCpu, shim_stats);
}
