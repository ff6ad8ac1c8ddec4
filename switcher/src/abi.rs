//! The guest<->host ABI: everything the VMM and the guest kernel must agree
//! on, defined once and compiled into both (`no_std`, no dependencies).
//!
//! # Guest-physical memory layout
//!
//! ```text
//! 0x0000_0000  unused (null page)
//! 0x0000_1000  BOOT_GDT_ADDR      boot GDT written by the VMM (null, code64, data)
//! 0x0000_2000  BOOT_INFO_ADDR     BootInfo (VMM writes, guest reads)
//! 0x0000_3000  GUEST_STATUS_ADDR  GuestStatus (guest writes, VMM reads)
//! 0x0000_4000  PANIC_RECORD_ADDR  PanicRecord (guest writes before HC_PANIC)
//! 0x0000_5000  LOCK_REGISTRY_ADDR LockRegistry (guest keeps it live, VMM reads)
//! 0x0000_6000  SWITCH_MAILBOX_ADDR SwitchMailbox (the runtime-switch protocol)
//! 0x0000_7000  HEARTBEAT_ADDR     [CpuHeartbeat; MAX_CPUS] (guest watchdog, VMM reads)
//! 0x0000_8000  SHIM_STATS_ADDR    [ShimStats; MAX_CPUS] (ring-0 shim entries, VMM reads)
//! 0x0000_9000  LOCK_TABLE_ADDR    LockTable: every switchable lock's address (guest registers, VMM checks)
//! 0x0000_a000  locktest::LOCKTEST_ADDR  the lock tester's page (guest argument `locktest` only)
//! 0x0000_b000  TASK_NAMES_ADDR    [TaskName; TASK_NAME_SLOTS] (2 pages: names for owner words)
//! 0x0001_0000  PML4_ADDR          identity page tables (PML4, PDPT, PDs), 2 MiB pages
//! 0x0010_0000  KERNEL_LOAD_ADDR   the guest ELF's lowest PT_LOAD segment
//!  ...         guest memory ends (at most 3 GiB)
//! 0xFEE0_0000  LAPIC_ADDR         the local APIC (xAPIC MMIO, KVM's in-kernel LAPIC)
//! 0xFEF0_0000  DOORBELL_ADDR      the hypercall doorbell: no memory slot backs it
//! ```
//!
//! The boot page tables also map the 2 MiB page holding the LAPIC and the
//! doorbell (uncached), and every page is user-accessible: the kernel runs
//! at CPL3 after its first instructions (see "Privilege" below).
//!
//! # Boot protocol
//!
//! Every vCPU starts in 64-bit long mode at the ELF entry with paging on
//! (identity map of all guest memory), interrupts off, `rdi` = `BOOT_INFO_ADDR`,
//! `rsi` = CPU index (0-based, equal to the x2APIC id), `rsp` = 0: the guest
//! picks its own stack from the CPU index.
//!
//! # Privilege
//!
//! The guest kernel runs deprivileged: it starts at CPL0, loads its GDT,
//! TSS and IDT and drops to CPL3, where every line of the kernel runs from
//! then on. Nothing in this ABI needs CPL0: the doorbell and the LAPIC are
//! MMIO, the shared pages are plain memory.
//!
//! # Hypercalls
//!
//! A hypercall is one 8-byte write to a register of the doorbell page
//! ([`DOORBELL_ADDR`] + a [`doorbell`] offset): no memory slot backs the
//! page, so the write exits to the VMM (`KVM_EXIT_MMIO`) from any privilege
//! level. Each register has one meaning; the 64-bit value is its argument.
//! The VMM checks width, offset and value of every access.
//!
//! # ELF note
//!
//! A kernel the VMM accepts carries an ELF note (section `.note.rtswitch`)
//! with name [`NOTE_NAME`], type [`NOTE_TYPE_ABI`] and a descriptor of
//! [`AbiNote`]: the magic and the ABI version. The VMM refuses an ELF
//! without it.

/// "RTSWITCH" in little-endian ASCII: identifies every structure of this ABI.
pub const ABI_MAGIC: u64 = u64::from_le_bytes(*b"RTSWITCH");
/// Bumped on any incompatible change of a structure or a protocol here.
pub const ABI_VERSION: u32 = 9;

/// ELF note name (with its NUL, as ELF notes store it).
pub const NOTE_NAME: &[u8] = b"rtswitch\0";
/// ELF note type of the [`AbiNote`].
pub const NOTE_TYPE_ABI: u32 = 0x5254_0001;

/// Highest number of vCPUs the ABI supports.
pub const MAX_CPUS: usize = 64;

/// Boot GDT: null, 64-bit code, data.
pub const BOOT_GDT_ADDR: u64 = 0x1000;
pub const BOOT_INFO_ADDR: u64 = 0x2000;
pub const GUEST_STATUS_ADDR: u64 = 0x3000;
pub const PANIC_RECORD_ADDR: u64 = 0x4000;
pub const LOCK_REGISTRY_ADDR: u64 = 0x5000;
pub const SWITCH_MAILBOX_ADDR: u64 = 0x6000;
pub const HEARTBEAT_ADDR: u64 = 0x7000;
/// Per-CPU counts of ring-0 shim entries, by service ([`ShimStats`]).
pub const SHIM_STATS_ADDR: u64 = 0x8000;
/// The guest's table of switchable locks ([`LockTable`]).
pub const LOCK_TABLE_ADDR: u64 = 0x9000;
/// The guest's task directory ([`TaskName`] per task slot), two pages.
pub const TASK_NAMES_ADDR: u64 = 0xb000;
/// PML4, then one PDPT, then as many page directories as memory needs.
pub const PML4_ADDR: u64 = 0x1_0000;
/// Page tables must end below the kernel.
pub const PAGE_TABLES_END: u64 = 0x10_0000;

/// x86-64 page-table entry bits, as the VMM's boot tables and the guest's
/// own tables set them.
pub mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const WRITE_THROUGH: u64 = 1 << 3;
    pub const CACHE_DISABLE: u64 = 1 << 4;
    /// A 2 MiB (page directory) or 1 GiB (PDPT) page, not a table.
    pub const HUGE: u64 = 1 << 7;
    pub const NO_EXECUTE: u64 = 1 << 63;
}
/// Lowest address a kernel segment may be loaded at.
pub const KERNEL_LOAD_ADDR: u64 = 0x10_0000;
/// Guest memory ends at or below this (the MMIO hole starts here).
pub const MEMORY_LIMIT: u64 = 0xC000_0000;
/// The local APIC's MMIO page (xAPIC mode, KVM's default base).
pub const LAPIC_ADDR: u64 = 0xFEE0_0000;
/// The hypercall doorbell page (see [`doorbell`]).
pub const DOORBELL_ADDR: u64 = 0xFEF0_0000;
/// The 2 MiB page holding [`LAPIC_ADDR`] and [`DOORBELL_ADDR`].
pub const MMIO_2M_PAGE: u64 = 0xFEE0_0000;

/// Selectors of the boot GDT.
pub const BOOT_CODE_SELECTOR: u16 = 0x08;
pub const BOOT_DATA_SELECTOR: u16 = 0x10;

/// The hypercall doorbell's registers: byte offsets into the page at
/// [`super::DOORBELL_ADDR`]. Each takes one 8-byte write.
pub mod doorbell {
    /// Width of every doorbell write.
    pub const WIDTH: usize = 8;
    /// Guest exit: value = exit status (0 = success).
    pub const EXIT: u64 = 0x00;
    /// Guest panic: value = guest-physical address of a `PanicRecord`.
    pub const PANIC: u64 = 0x08;
    /// Guest ready: every CPU is online; `GuestStatus` is filled in.
    pub const READY: u64 = 0x10;
    /// One CPU is online: value = CPU index.
    pub const CPU_ONLINE: u64 = 0x18;
    /// The switch mailbox changed: value = the [`MailboxState`] the guest
    /// just published (QUIESCENT or COMPLETE).
    pub const SWITCH: u64 = 0x20;
    /// Console output: value = [`console_value`] of a guest-physical
    /// address and a length of at most [`CONSOLE_MAX`] bytes: the VMM
    /// copies those bytes to the console (one exit per message, not per
    /// byte, as Xen PV's `console_io`).
    pub const CONSOLE: u64 = 0x28;
    /// `--stop-above`: a sample crossed the threshold; value = the CPU.
    /// The stop report is complete in the telemetry header.
    pub const STOP_ABOVE: u64 = 0x30;
    /// One past the last register.
    pub const END: u64 = 0x38;
    /// Longest console write.
    pub const CONSOLE_MAX: usize = 4096;

    /// The CONSOLE value for `len` bytes at guest-physical `addr`
    /// (`addr` below 2^48, `len` below 2^16).
    pub const fn console_value(addr: u64, len: usize) -> u64 {
        ((len as u64) << 48) | (addr & 0xffff_ffff_ffff)
    }

    /// Splits a CONSOLE value into (address, length).
    pub const fn console_parts(value: u64) -> (u64, usize) {
        (value & 0xffff_ffff_ffff, (value >> 48) as usize)
    }

    /// Name of a register, for messages.
    pub fn name(offset: u64) -> Option<&'static str> {
        Some(match offset {
            EXIT => "exit",
            PANIC => "panic",
            READY => "ready",
            CPU_ONLINE => "cpu-online",
            SWITCH => "switch",
            CONSOLE => "console",
            STOP_ABOVE => "stop-above",
            _ => return None,
        })
    }
}

/// The ring-0 shim's services (the guest kernel's only ring-0 entries after
/// boot), as counted per CPU in [`ShimStats`].
pub mod shim {
    /// Idle: halt until an interrupt (ring-0 IDT loaded around `sti; hlt`).
    pub const HALT: usize = 0;
    /// Write an allow-listed MSR.
    pub const WRMSR: usize = 1;
    /// Read an allow-listed MSR.
    pub const RDMSR: usize = 2;
    /// Load the kernel's own page tables (CR3, EFER.NXE, CR0.WP).
    pub const SET_PAGE_TABLES: usize = 3;
    /// Stop this CPU for good (panic, exit).
    pub const STOP: usize = 4;
    /// Number of services (slots in [`super::ShimStats::entries`]).
    pub const SERVICES: usize = 5;
    /// Slots in [`super::ShimStats::entries`] (room for services to come).
    pub const SLOTS: usize = 8;
    /// Service names, by number.
    pub const NAMES: [&str; SERVICES] = ["halt", "wrmsr", "rdmsr", "set-page-tables", "stop"];
}

/// One CPU's ring-0 shim entries, at `SHIM_STATS_ADDR + cpu * 64`: the
/// shim's gate counts each entry, by service, before it acts on it;
/// `rejected` counts entries refused (unknown service, bad argument).
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShimStats {
    pub entries: [u64; shim::SERVICES],
    pub rejected: u64,
    pub _reserved: [u64; shim::SLOTS - shim::SERVICES - 1],
}

/// Exit status the guest reports for an orderly shutdown the VMM asked for.
pub const EXIT_STATUS_OK: u32 = 0;

/// Interrupt vectors shared by the two sides.
pub mod vector {
    /// The VMM's "look at `BootInfo::host_request`" interrupt (MSI).
    pub const HOST_REQUEST: u8 = 0x40;
    /// Local timer (x2APIC TSC-deadline mode).
    pub const TIMER: u8 = 0x30;
    /// The device interrupt of `--irq-load` (MSI through an irqfd, one
    /// route per CPU).
    pub const DEVICE: u8 = 0x38;
    /// Guest-internal wake-up IPI.
    pub const WAKEUP_IPI: u8 = 0xf0;
    /// Reschedule IPI: the target CPU re-evaluates what to run.
    pub const RESCHED_IPI: u8 = 0xf1;
    /// Serialize IPI: after a runtime switch, every CPU executes a
    /// serializing instruction before any task runs patched code.
    pub const SERIALIZE_IPI: u8 = 0xf2;
    /// x2APIC spurious vector.
    pub const SPURIOUS: u8 = 0xff;
}

/// Requests the VMM posts in [`BootInfo::host_request`] before sending
/// [`vector::HOST_REQUEST`]. (Switch requests go through the
/// [`SwitchMailbox`]; the same vector announces them.)
pub mod host_request {
    pub const NONE: u32 = 0;
    /// Shut down cleanly and report `HC_EXIT` with [`super::EXIT_STATUS_OK`].
    pub const SHUTDOWN: u32 = 1;
}

/// The guest's locking regime: one dimension of its profile.
pub use crate::profile::LockMode;

/// ELF note descriptor that marks a kernel as speaking this ABI.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbiNote {
    pub magic: u64,
    pub version: u32,
    pub _reserved: u32,
}

impl AbiNote {
    pub const CURRENT: Self = Self { magic: ABI_MAGIC, version: ABI_VERSION, _reserved: 0 };

    /// Decodes a note descriptor (little-endian); `None` if too short.
    pub fn decode(desc: &[u8]) -> Option<Self> {
        if desc.len() < 16 {
            return None;
        }
        Some(Self {
            magic: u64::from_le_bytes(desc[0..8].try_into().ok()?),
            version: u32::from_le_bytes(desc[8..12].try_into().ok()?),
            _reserved: u32::from_le_bytes(desc[12..16].try_into().ok()?),
        })
    }
}

/// [`BootInfo::hints`] bits.
pub mod hint {
    /// Every vCPU can have a host CPU of its own: the VMM may run on at
    /// least as many host CPUs as the VM has vCPUs (KVM's
    /// `KVM_HINTS_REALTIME`, which Linux's `cpuidle-haltpoll` needs before
    /// it polls). Without it, a polling idle vCPU takes a host CPU that
    /// another vCPU of the same VM waits for, so the `haltpoll` idle
    /// policy halts at once.
    pub const DEDICATED_CPUS: u32 = 1 << 0;
}

/// Length of the guest command line buffer, NUL included.
pub const CMDLINE_LEN: usize = 256;

/// Written by the VMM at [`BOOT_INFO_ADDR`] before any vCPU runs.
/// The guest reads it through the pointer in `rdi`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BootInfo {
    /// [`ABI_MAGIC`].
    pub magic: u64,
    /// [`ABI_VERSION`].
    pub version: u32,
    /// Number of vCPUs started (1..=[`MAX_CPUS`]).
    pub cpu_count: u32,
    /// Guest memory in bytes (one region from 0).
    pub memory_bytes: u64,
    /// TSC frequency in kHz (`KVM_GET_TSC_KHZ`).
    pub tsc_khz: u64,
    /// Initial mode ([`crate::profile::Profile::code`]).
    pub initial_mode: u32,
    /// A [`host_request`] value; the VMM writes it, then sends
    /// [`vector::HOST_REQUEST`]. The guest reads it volatile.
    pub host_request: u32,
    /// Guest-physical address of the [`GuestStatus`] page.
    pub guest_status_addr: u64,
    /// Guest-physical address of the [`PanicRecord`] page.
    pub panic_record_addr: u64,
    /// Guest-physical address of the [`LockRegistry`] page.
    pub lock_registry_addr: u64,
    /// Guest-physical address and size of the latency telemetry region
    /// (`crate::telemetry`), placed by the VMM above the kernel; 0 if none.
    pub telemetry_addr: u64,
    pub telemetry_size: u64,
    /// 1 µs buckets per latency histogram in the telemetry region.
    pub hist_buckets: u32,
    /// The LAPIC timer's input clock in kHz as the VMM configured KVM
    /// (0: unknown; the guest calibrates it against the TSC either way).
    pub apic_timer_khz: u32,
    /// [`hint`] bits: what the VMM tells the guest about its host.
    pub hints: u32,
    pub _reserved: u32,
    /// The latency workload to run.
    pub workload: crate::workload::WorkloadRequest,
    /// Space-separated guest arguments (`--guest-arg`), NUL-terminated.
    pub cmdline: [u8; CMDLINE_LEN],
}

impl BootInfo {
    pub fn new(cpu_count: u32, memory_bytes: u64, tsc_khz: u64, mode: crate::profile::Profile) -> Self {
        Self {
            magic: ABI_MAGIC,
            version: ABI_VERSION,
            cpu_count,
            memory_bytes,
            tsc_khz,
            initial_mode: mode.code(),
            host_request: host_request::NONE,
            guest_status_addr: GUEST_STATUS_ADDR,
            panic_record_addr: PANIC_RECORD_ADDR,
            lock_registry_addr: LOCK_REGISTRY_ADDR,
            telemetry_addr: 0,
            telemetry_size: 0,
            hist_buckets: 0,
            apic_timer_khz: 0,
            hints: 0,
            _reserved: 0,
            workload: crate::workload::WorkloadRequest {
                interval_us: 0,
                cs_us: 0,
                load: 0,
                load_threads: 0,
                enabled: 0,
                measure_prio: 0,
                measure_cpus: 0,
                load_cpus: 0,
                bucket_us: 0,
                stop_above_us: 0,
                irq_rate_hz: 0,
                irq_work_us: 0,
                irq_prio: 0,
                _reserved: 0,
            },
            cmdline: [0; CMDLINE_LEN],
        }
    }

    /// Stores `args` as the command line; `false` if it does not fit
    /// (with its NUL) or contains a NUL.
    pub fn set_cmdline(&mut self, args: &str) -> bool {
        let bytes = args.as_bytes();
        if bytes.len() >= CMDLINE_LEN || bytes.contains(&0) {
            return false;
        }
        self.cmdline = [0; CMDLINE_LEN];
        self.cmdline[..bytes.len()].copy_from_slice(bytes);
        true
    }

    /// The command line up to its NUL; `None` if it is not UTF-8.
    pub fn cmdline_str(&self) -> Option<&str> {
        let end = self.cmdline.iter().position(|&b| b == 0).unwrap_or(CMDLINE_LEN);
        core::str::from_utf8(&self.cmdline[..end]).ok()
    }

    /// Whether magic and version match this build.
    pub fn is_valid(&self) -> bool {
        self.magic == ABI_MAGIC && self.version == ABI_VERSION
    }
}

/// Length of the kernel version string in [`GuestStatus`].
pub const KERNEL_VERSION_LEN: usize = 32;

/// Written by the guest at [`BootInfo::guest_status_addr`]; complete when
/// the guest makes the `HC_READY` hypercall.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GuestStatus {
    /// [`ABI_MAGIC`] once the guest has filled the page in.
    pub magic: u64,
    /// Bit N set when CPU N is online.
    pub online_mask: u64,
    /// Calibration loop (run where the kernel runs: CPL3): iterations run.
    pub calib_iterations: u64,
    /// Calibration loop: TSC ticks those iterations took.
    pub calib_tsc_ticks: u64,
    /// Picoseconds per calibration iteration (derived by the guest).
    pub calib_ps_per_iter: u64,
    /// Active mode ([`crate::profile::Profile::code`]).
    pub mode: u32,
    pub _reserved: u32,
    /// Kernel version, NUL-padded ASCII.
    pub kernel_version: [u8; KERNEL_VERSION_LEN],
}

impl GuestStatus {
    pub const fn zeroed() -> Self {
        Self {
            magic: 0,
            online_mask: 0,
            calib_iterations: 0,
            calib_tsc_ticks: 0,
            calib_ps_per_iter: 0,
            mode: 0,
            _reserved: 0,
            kernel_version: [0; KERNEL_VERSION_LEN],
        }
    }
}

/// The guest's switchable-lock registry, kept live by the guest at
/// [`BootInfo::lock_registry_addr`] (the counters are updated atomically in
/// place) and read by the VMM. The runtime switch requires `held == 0` and
/// `waiters == 0` before it patches anything.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LockRegistry {
    /// [`ABI_MAGIC`] once the guest has initialised the page.
    pub magic: u64,
    /// Switchable locks held right now, summed over all tasks.
    pub held: u64,
    /// Tasks queued as waiters on a switchable lock right now (rt mode).
    pub waiters: u64,
    /// Acquisitions since boot (both modes).
    pub acquisitions: u64,
    /// Acquisitions that found the lock taken.
    pub contended: u64,
    /// Priority-inheritance boosts (rt mode).
    pub pi_boosts: u64,
    /// The mode the guest believes it is in ([`crate::profile::Profile::code`]).
    pub mode: u32,
    pub _reserved: u32,
    /// Tasks inside a switchable lock's slow path right now (spinning or
    /// queued for a lock, or woken to take one): the switch requires 0.
    pub slowpath: u64,
}

impl LockRegistry {
    pub const fn zeroed() -> Self {
        Self {
            magic: 0,
            held: 0,
            waiters: 0,
            acquisitions: 0,
            contended: 0,
            pi_boosts: 0,
            mode: 0,
            _reserved: 0,
            slowpath: 0,
        }
    }
}

/// What the VMM reads of a switchable lock (the guest's `LockCore`): the
/// owner word (8 bytes at [`lock_word::OWNER`]: 0 free, else the owning
/// task's address, bit 0 [`lock_word::HAS_WAITERS`] set while waiters are
/// queued, possibly with no owner) and the waiter-list handle (2 bytes at
/// [`lock_word::WAITERS`], 0 when none). A lock is free in both modes
/// exactly when both are 0.
pub mod lock_word {
    pub const OWNER: u64 = 0;
    pub const WAITERS: u64 = 8;
    pub const HAS_WAITERS: u64 = 1;
}

/// The fields at the start of every guest task (the addresses in the task
/// directory, [`TaskName::addr`]) that the VMM reads, with every vCPU held,
/// to check that the tasks the guest declared quiescent are asleep.
pub mod task_word {
    /// u32: `generation << 8 | state` (state in the low byte).
    pub const STATE: u64 = 0;
    /// u8, 1 while the task runs on its CPU (its stack in use).
    pub const ON_CPU: u64 = 4;
    /// u8, 1 while the task is parked in the freezer.
    pub const FROZEN: u64 = 5;
    /// u8, 1 for a task exempt from the freezer (it never takes a
    /// switchable lock).
    pub const NOFREEZE: u64 = 6;
    /// u8: the effective priority (1..=99; idle 0).
    pub const PRIO: u64 = 7;
    /// u8: the base ("normal") priority.
    pub const BASE_PRIO: u64 = 8;
    /// u64: the address of the switchable lock the task is queued on
    /// (rt), 0 when none.
    pub const BLOCKED_ON: u64 = 24;
    /// u8, 1 while the task is inside a switchable lock's slow path
    /// (queued or spinning for it).
    pub const IN_SLOWPATH: u64 = 32;
    /// u64: the stack pointer a switched-out task's context switch saved
    /// (valid while the task is not on its CPU): `switcher::stackwalk`
    /// starts a walk there.
    pub const SAVED_RSP: u64 = 112;
    /// Bytes to read.
    pub const LEN: usize = 8;
    /// The unmapped guard below each spawned task's stack, inside its
    /// slot of `sched_task_stacks` (`switcher::stackwalk`).
    pub const STACK_GUARD: u64 = 4096;
    pub const RUNNABLE: u32 = 2;
    pub const BLOCKED: u32 = 3;
    /// Task directory slots below this are spawned tasks; the others are
    /// the CPUs' idle tasks (exempt).
    pub const SPAWNED_SLOTS: usize = 128;
}

/// Entries in the [`LockTable`].
pub const LOCK_TABLE_CAPACITY: usize = 127;
/// Length of a lock or task name in the ABI (NUL-padded, truncated).
pub const ABI_NAME_LEN: usize = 24;

/// One registered switchable lock.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockEntry {
    /// Guest-physical address of the lock (its `LockCore`).
    pub addr: u64,
    pub name: [u8; ABI_NAME_LEN],
}

/// Every switchable lock the guest has used, at [`LOCK_TABLE_ADDR`]: a lock
/// registers itself (once, before it is first taken), so that, with every
/// vCPU held, the VMM can check every lock word before it patches, rather
/// than trust counters. Only the guest writes it; the VMM bounds-checks it
/// (`count`, each address) before it reads a lock word.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct LockTable {
    /// [`ABI_MAGIC`] once initialised.
    pub magic: u64,
    /// Entries in use (registration appends; entries are never removed).
    pub count: u32,
    pub _reserved: u32,
    pub entries: [LockEntry; LOCK_TABLE_CAPACITY],
}

/// Task slots in the task directory (spawned tasks and idle tasks).
pub const TASK_NAME_SLOTS: usize = 192;

/// One task slot's identity, for naming the owner an owner word points at:
/// at `TASK_NAMES_ADDR + slot * 32`, written by the guest when the slot is
/// (re)used.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskName {
    /// The task's address (what owner words hold), 0 for an unused slot.
    pub addr: u64,
    pub name: [u8; ABI_NAME_LEN],
}

/// The runtime-switch mailbox at [`SWITCH_MAILBOX_ADDR`] (docs/ARCHITECTURE.md, "The
/// runtime switch"). Who writes which `state`:
///
/// ```text
///  VMM:   IDLE/COMPLETE --request--> REQUESTED          (seq+1, target; SWITCH host request + MSI)
///  guest: REQUESTED --> FREEZING                         (freezer on; blocker_* kept current)
///  guest: FREEZING  --> QUIESCENT + HC_SWITCH            (every task frozen or asleep lock-free,
///                                                         registry held == 0 and waiters == 0)
///  VMM:   QUIESCENT --> DONE      (all vCPUs held, registry and site bytes re-checked, all sites patched;
///                                  `vmm_serialized` 1 if every vCPU resumes through a serializing IRETQ)
///  VMM:   REQUESTED/FREEZING/QUIESCENT --> CANCELLED     (deadline or failed check: nothing patched)
///  guest: DONE/CANCELLED --> COMPLETE + HC_SWITCH        (every CPU serialized, by the VMM's IRETQ
///                                                         or by the guest's IPIs; tasks thawed; `mode` set)
/// ```
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SwitchMailbox {
    /// [`ABI_MAGIC`] once the guest can take switch requests.
    pub magic: u64,
    /// Request number (the VMM increments it for every request).
    pub seq: u64,
    /// Requested mode ([`crate::profile::Profile::code`]).
    pub target: u32,
    /// A [`MailboxState`] (raw: the guest may write anything).
    pub state: u32,
    /// The mode the guest runs in ([`crate::profile::Profile::code`]), set by the guest.
    pub mode: u32,
    /// While freezing: CPU of the task the guest still waits for.
    pub blocker_cpu: u32,
    /// While freezing: that task's name (NUL-padded) ...
    pub blocker_name: [u8; 16],
    /// ... and the switchable locks it holds.
    pub blocker_locks: u32,
    /// At quiescence: tasks frozen at a safe point, and asleep lock-free.
    pub frozen: u32,
    pub asleep: u32,
    /// Written by the VMM with DONE, in the same hold: 1 when it made every
    /// vCPU resume through a serializing instruction (an IRETQ frame, as
    /// the fast path does), so that the guest need not send its serialize
    /// IPIs; 0 otherwise. The guest clears it when it takes a request (a
    /// VMM that never writes it leaves the guest serializing by IPI).
    pub vmm_serialized: u32,
    /// Guest TSC stamps of the switch's steps (0: not reached): request
    /// seen, quiescent, thawed, ...
    pub seen_tsc: u64,
    pub quiescent_tsc: u64,
    pub thawed_tsc: u64,
    /// ... the VMM's verdict seen, every other CPU serialized.
    pub verdict_tsc: u64,
    pub serialized_tsc: u64,
}

impl SwitchMailbox {
    pub const fn zeroed() -> Self {
        Self {
            magic: 0,
            seq: 0,
            target: 0,
            state: 0,
            mode: 0,
            blocker_cpu: 0,
            blocker_name: [0; 16],
            blocker_locks: 0,
            frozen: 0,
            asleep: 0,
            vmm_serialized: 0,
            seen_tsc: 0,
            quiescent_tsc: 0,
            thawed_tsc: 0,
            verdict_tsc: 0,
            serialized_tsc: 0,
        }
    }
}

/// [`SwitchMailbox::state`]: where one switch is, each step written by
/// one side only. Both sides move it through [`MailboxState::next`], the
/// transition table drawn at [`SwitchMailbox`]; the guest with a
/// compare-and-swap where the VMM may move it at the same time.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailboxState {
    /// No switch yet (the mailbox as the guest publishes it).
    Idle = 0,
    Requested = 1,
    Freezing = 2,
    Quiescent = 3,
    Done = 4,
    Cancelled = 5,
    Complete = 6,
}

/// Who moves the mailbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailboxWriter {
    Vmm,
    Guest,
}

impl MailboxState {
    pub const ALL: [Self; 7] =
        [Self::Idle, Self::Requested, Self::Freezing, Self::Quiescent, Self::Done, Self::Cancelled, Self::Complete];

    /// The state a raw mailbox word names (None: not a state; a guest
    /// may write anything there).
    pub const fn from_u32(raw: u32) -> Option<Self> {
        Some(match raw {
            0 => Self::Idle,
            1 => Self::Requested,
            2 => Self::Freezing,
            3 => Self::Quiescent,
            4 => Self::Done,
            5 => Self::Cancelled,
            6 => Self::Complete,
            _ => return None,
        })
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Idle => "IDLE",
            Self::Requested => "REQUESTED",
            Self::Freezing => "FREEZING",
            Self::Quiescent => "QUIESCENT",
            Self::Done => "DONE",
            Self::Cancelled => "CANCELLED",
            Self::Complete => "COMPLETE",
        }
    }

    /// The transition table: `to` if `writer` may move the mailbox from
    /// the raw state `from` to it, None if the protocol does not allow it
    /// (a state the mailbox does not hold, the other side's step, a step
    /// out of order).
    pub const fn next(from: u32, to: Self, writer: MailboxWriter) -> Option<Self> {
        let Some(from) = Self::from_u32(from) else { return None };
        use MailboxState::*;
        let ok = match writer {
            MailboxWriter::Vmm => matches!(
                (from, to),
                (Idle | Complete, Requested) | (Quiescent, Done) | (Requested | Freezing | Quiescent, Cancelled)
            ),
            MailboxWriter::Guest => {
                matches!((from, to), (Requested, Freezing) | (Freezing, Quiescent) | (Done | Cancelled, Complete))
            }
        };
        if ok { Some(to) } else { None }
    }
}

/// One CPU's watchdog state, at `HEARTBEAT_ADDR + cpu * size_of::<CpuHeartbeat>()`.
///
/// A per-CPU watchdog thread (priority just below the measurement threads)
/// bumps `beats` every [`HEARTBEAT_PERIOD_MS`]. When a CPU's timer interrupt
/// finds the last beat older than [`STALL_REPORT_MS`], it records what the
/// CPU is running (`task_name`, `preempt_count`, `locks_held`, `stalled` = 1)
/// and the guest reports it; the VMM, seeing `beats` stand still, reports it
/// too (with these details when the guest could record them: a CPU with
/// interrupts off records nothing).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuHeartbeat {
    pub beats: u64,
    pub last_beat_tsc: u64,
    pub stalled: u32,
    pub preempt_count: u32,
    pub locks_held: u32,
    /// Stalls the guest flagged on this CPU so far (`stalled` clears when
    /// the CPU makes progress again; this count stays).
    pub stalls: u32,
    pub task_name: [u8; 16],
    /// The last flagged stall: how long the watchdog thread had not run
    /// (µs), and the most host steal time any vCPU had in that window
    /// (µs), and which vCPU: a stall most of which the host took from
    /// this CPU or from the one it waits for is host starvation, not a
    /// stuck guest.
    pub stall_window_us: u32,
    pub stall_steal_us: u32,
    pub stall_steal_cpu: u32,
    pub _reserved: u32,
}

/// Watchdog beat period.
pub const HEARTBEAT_PERIOD_MS: u64 = 200;
/// A CPU whose watchdog thread has not run for this long is reported stuck.
pub const STALL_REPORT_MS: u64 = 2000;

/// Guest argument that makes the guest run its self-test suite and exit
/// with status 0 only if every test passed (`rtswitch run --selftest`).
pub const GUEST_ARG_SELFTEST: &str = "selftest";

/// Lengths of the strings in a [`PanicRecord`].
pub const PANIC_MSG_LEN: usize = 1024;
pub const PANIC_FILE_LEN: usize = 128;

/// Written by the guest at [`BootInfo::panic_record_addr`] before `HC_PANIC`.
/// Lengths are checked by the VMM: a record that lies is reported as such.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct PanicRecord {
    /// [`ABI_MAGIC`].
    pub magic: u64,
    /// CPU that panicked.
    pub cpu: u32,
    /// Source line and column (0 when unknown).
    pub line: u32,
    pub column: u32,
    /// Bytes used in `file` and `message`.
    pub file_len: u32,
    pub message_len: u32,
    pub _reserved: u32,
    pub file: [u8; PANIC_FILE_LEN],
    pub message: [u8; PANIC_MSG_LEN],
}

impl PanicRecord {
    pub const fn zeroed() -> Self {
        Self {
            magic: 0,
            cpu: 0,
            line: 0,
            column: 0,
            file_len: 0,
            message_len: 0,
            _reserved: 0,
            file: [0; PANIC_FILE_LEN],
            message: [0; PANIC_MSG_LEN],
        }
    }
}

// The layout is part of the ABI: it must not change by accident.
const _: () = {
    assert!(core::mem::size_of::<AbiNote>() == 16);
    assert!(core::mem::size_of::<BootInfo>() == 64 + 32 + 64 + CMDLINE_LEN);
    assert!(core::mem::size_of::<BootInfo>() <= 4096);
    assert!(core::mem::size_of::<GuestStatus>() == 48 + KERNEL_VERSION_LEN);
    assert!(core::mem::size_of::<PanicRecord>() == 32 + PANIC_FILE_LEN + PANIC_MSG_LEN);
    assert!(core::mem::size_of::<PanicRecord>() <= 4096);
    assert!(core::mem::size_of::<LockRegistry>() == 64);
    assert!(core::mem::size_of::<LockEntry>() == 32);
    assert!(core::mem::size_of::<LockTable>() <= 4096);
    assert!(core::mem::size_of::<TaskName>() * TASK_NAME_SLOTS <= 2 * 4096);
    assert!(TASK_NAMES_ADDR + 2 * 4096 <= PML4_ADDR);
    // 88 in ABI 3 as first published; verdict_tsc and serialized_tsc were
    // appended (a kernel that leaves them 0 just reports no phases).
    assert!(core::mem::size_of::<SwitchMailbox>() == 104);
    assert!(core::mem::size_of::<CpuHeartbeat>() == 64);
    assert!(core::mem::size_of::<CpuHeartbeat>() * MAX_CPUS <= 4096);
    assert!(core::mem::size_of::<ShimStats>() == 64);
    assert!(core::mem::size_of::<ShimStats>() * MAX_CPUS <= 4096);
    assert!(MEMORY_LIMIT <= MMIO_2M_PAGE);
    assert!(LAPIC_ADDR >= MMIO_2M_PAGE && DOORBELL_ADDR < MMIO_2M_PAGE + (2 << 20));
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The transitions the diagram at [`SwitchMailbox`] draws, read from
    /// this file's text: `(writer, from, to)`.
    fn drawn_transitions() -> Vec<(MailboxWriter, MailboxState, MailboxState)> {
        let by_name = |n: &str| MailboxState::ALL.into_iter().find(|s| s.name() == n);
        let mut out = Vec::new();
        for line in include_str!("abi.rs").lines() {
            let Some(rest) = line.trim_start().strip_prefix("///") else { continue };
            let rest = rest.trim_start();
            let (writer, rest) = if let Some(r) = rest.strip_prefix("VMM:") {
                (MailboxWriter::Vmm, r)
            } else if let Some(r) = rest.strip_prefix("guest:") {
                (MailboxWriter::Guest, r)
            } else {
                continue;
            };
            let Some((left, right)) = rest.split_once("-->") else { continue };
            let left = left.trim().trim_end_matches("--request").trim();
            let to = right.split_whitespace().next().and_then(by_name).expect("a drawn target state");
            for from in left.split('/') {
                out.push((writer, by_name(from.trim()).expect("a drawn source state"), to));
            }
        }
        out
    }

    #[test]
    fn the_mailbox_moves_exactly_as_drawn() {
        let drawn = drawn_transitions();
        assert_eq!(drawn.len(), 10, "the diagram's transitions: {drawn:?}");
        for writer in [MailboxWriter::Vmm, MailboxWriter::Guest] {
            for from in MailboxState::ALL {
                for to in MailboxState::ALL {
                    let allowed = drawn.contains(&(writer, from, to));
                    let got = MailboxState::next(from as u32, to, writer);
                    assert_eq!(got, allowed.then_some(to), "{writer:?}: {} -> {}", from.name(), to.name());
                }
            }
        }
        // Each step has one writer.
        for (w, from, to) in &drawn {
            let other = if *w == MailboxWriter::Vmm { MailboxWriter::Guest } else { MailboxWriter::Vmm };
            assert_eq!(MailboxState::next(*from as u32, *to, other), None, "{} -> {}", from.name(), to.name());
        }
    }

    #[test]
    fn a_word_that_is_no_state_moves_nowhere() {
        for raw in [7, 0x100, u32::MAX] {
            assert_eq!(MailboxState::from_u32(raw), None);
            for to in MailboxState::ALL {
                assert_eq!(MailboxState::next(raw, to, MailboxWriter::Vmm), None);
                assert_eq!(MailboxState::next(raw, to, MailboxWriter::Guest), None);
            }
        }
        for s in MailboxState::ALL {
            assert_eq!(MailboxState::from_u32(s as u32), Some(s), "the raw value round-trips");
        }
    }

    #[test]
    fn cmdline_round_trips_and_rejects_overflow() {
        let mut bi = BootInfo::new(2, 64 << 20, 2_000_000, crate::profile::Profile::MAINLINE);
        assert!(bi.is_valid());
        assert!(bi.set_cmdline("panic exit=3"));
        assert_eq!(bi.cmdline_str(), Some("panic exit=3"));
        let long = [b'a'; CMDLINE_LEN];
        assert!(!bi.set_cmdline(core::str::from_utf8(&long).unwrap()));
        assert_eq!(bi.cmdline_str(), Some("panic exit=3"), "a refused cmdline changes nothing");
        assert!(!bi.set_cmdline("a\0b"));
    }

    #[test]
    fn abi_note_decodes_little_endian() {
        let mut desc = [0u8; 16];
        desc[0..8].copy_from_slice(&ABI_MAGIC.to_le_bytes());
        desc[8..12].copy_from_slice(&ABI_VERSION.to_le_bytes());
        assert_eq!(AbiNote::decode(&desc), Some(AbiNote::CURRENT));
        assert_eq!(AbiNote::decode(&desc[..15]), None);
    }

    #[test]
    fn console_value_round_trips() {
        let v = doorbell::console_value(0x12_3456, 4096);
        assert_eq!(doorbell::console_parts(v), (0x12_3456, 4096));
        assert_eq!(doorbell::name(doorbell::CONSOLE), Some("console"));
        assert_eq!(doorbell::name(doorbell::END), None);
    }

    #[test]
    fn lock_mode_codes() {
        assert_eq!(LockMode::from_u32(0), Some(LockMode::Mainline));
        assert_eq!(LockMode::from_u32(1), Some(LockMode::Rt));
        assert_eq!(LockMode::from_u32(2), None);
        assert_eq!(LockMode::Rt.name(), "rt");
    }
}

/// Patch sites: every call of a switchable-lock operation in the guest is a
/// 5-byte `call rel32` (or `jmp rel32`) whose address is recorded in the ELF
/// section [`SITES_SECTION`] as a [`SwitchSite`]. Where each operation's
/// implementation lives in each mode is recorded in [`IMPLS_SECTION`] as
/// [`SwitchImpl`]s. The VMM reads both tables from the ELF file (trusted),
/// never from guest memory.
pub mod sites {
    /// ELF section with one [`SwitchSite`] per patchable call site.
    pub const SITES_SECTION: &str = ".switch_sites";
    /// ELF section with one [`SwitchImpl`] per (operation, mode).
    pub const IMPLS_SECTION: &str = ".switch_impls";

    /// Bytes of a patchable instruction.
    pub const SITE_LEN: usize = 5;
    pub const OPCODE_CALL_REL32: u8 = 0xe8;
    pub const OPCODE_JMP_REL32: u8 = 0xe9;

    /// The patchable operations. Each belongs to one dimension of the
    /// kernel's [`crate::profile::Profile`]; its implementations are
    /// numbered by that dimension's variants.
    #[repr(u32)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
    pub enum SiteOp {
        Lock = 0,
        Unlock = 1,
        TryLock = 2,
        /// An explicit preemption point in a long kernel loop.
        CondResched = 3,
        /// A preemption point before a (possibly blocking) lock acquisition.
        MightResched = 4,
        /// `preempt_enable` brought the count to 0 with a reschedule pending.
        PreemptResched = 5,
        /// The return from an interrupt with a reschedule pending.
        IrqExitResched = 6,
        /// A device interrupt's handler dispatch.
        IrqDispatch = 7,
    }

    impl SiteOp {
        pub const COUNT: usize = 8;
        pub const ALL: [SiteOp; Self::COUNT] = [
            SiteOp::Lock,
            SiteOp::Unlock,
            SiteOp::TryLock,
            SiteOp::CondResched,
            SiteOp::MightResched,
            SiteOp::PreemptResched,
            SiteOp::IrqExitResched,
            SiteOp::IrqDispatch,
        ];

        pub fn from_u32(v: u32) -> Option<Self> {
            Self::ALL.get(v as usize).copied()
        }

        pub fn name(self) -> &'static str {
            match self {
                SiteOp::Lock => "lock",
                SiteOp::Unlock => "unlock",
                SiteOp::TryLock => "try_lock",
                SiteOp::CondResched => "cond_resched",
                SiteOp::MightResched => "might_resched",
                SiteOp::PreemptResched => "preempt_resched",
                SiteOp::IrqExitResched => "irq_exit_resched",
                SiteOp::IrqDispatch => "irq_dispatch",
            }
        }

        /// The dimension whose variant selects this operation's implementation.
        pub fn dimension(self) -> crate::profile::Dimension {
            use crate::profile::Dimension;
            match self {
                SiteOp::Lock | SiteOp::Unlock | SiteOp::TryLock => Dimension::Locks,
                SiteOp::CondResched | SiteOp::MightResched | SiteOp::PreemptResched | SiteOp::IrqExitResched => {
                    Dimension::Preempt
                }
                SiteOp::IrqDispatch => Dimension::Irq,
            }
        }
    }

    /// One patchable call site (16 bytes in [`SITES_SECTION`]).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SwitchSite {
        /// Address of the 5-byte instruction (identity-mapped: also physical).
        pub addr: u64,
        /// A [`SiteOp`] as u32.
        pub op: u32,
        /// The opcode at the site: [`OPCODE_CALL_REL32`] or [`OPCODE_JMP_REL32`].
        pub opcode: u32,
    }

    /// Where operation `op` is implemented in mode `mode` (16 bytes in
    /// [`IMPLS_SECTION`]).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SwitchImpl {
        /// A [`SiteOp`] as u32.
        pub op: u32,
        /// The variant of the operation's dimension (for the locks: a
        /// [`super::LockMode`] as u32).
        pub mode: u32,
        /// Address of the implementation.
        pub target: u64,
    }

    /// The 5 bytes of `opcode rel32` at `site` reaching `target`, or `None`
    /// when `target` is out of rel32 range.
    pub fn encode_rel32(opcode: u8, site: u64, target: u64) -> Option<[u8; SITE_LEN]> {
        let next = site.checked_add(SITE_LEN as u64)?;
        let delta = (target as i128) - (next as i128);
        let rel = i32::try_from(delta).ok()?;
        let r = rel.to_le_bytes();
        Some([opcode, r[0], r[1], r[2], r[3]])
    }

    /// The target of the `call/jmp rel32` in `bytes` at `site`.
    pub fn decode_rel32(site: u64, bytes: [u8; SITE_LEN]) -> Option<(u8, u64)> {
        if bytes[0] != OPCODE_CALL_REL32 && bytes[0] != OPCODE_JMP_REL32 {
            return None;
        }
        let rel = i32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
        let next = site.wrapping_add(SITE_LEN as u64);
        Some((bytes[0], next.wrapping_add(rel as i64 as u64)))
    }

    const _: () = {
        assert!(core::mem::size_of::<SwitchSite>() == 16);
        assert!(core::mem::size_of::<SwitchImpl>() == 16);
    };

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn rel32_round_trips_both_directions() {
            for (site, target) in [(0x10_0000u64, 0x10_2000u64), (0x10_2000, 0x10_0000), (0x10_0000, 0x10_0005)] {
                let b = encode_rel32(OPCODE_CALL_REL32, site, target).unwrap();
                assert_eq!(decode_rel32(site, b), Some((OPCODE_CALL_REL32, target)));
            }
            assert_eq!(encode_rel32(OPCODE_CALL_REL32, 0x10_0000, 0x10_0005).unwrap(), [0xe8, 0, 0, 0, 0]);
            assert_eq!(encode_rel32(OPCODE_JMP_REL32, 0x10_0000, 0x10_0000).unwrap(), [0xe9, 0xfb, 0xff, 0xff, 0xff]);
        }

        #[test]
        fn rel32_range_is_checked() {
            assert_eq!(encode_rel32(OPCODE_CALL_REL32, 0, 1 << 40), None);
            assert_eq!(decode_rel32(0, [0x90; 5]), None);
        }

        #[test]
        fn ops_decode() {
            assert_eq!(SiteOp::from_u32(2), Some(SiteOp::TryLock));
            assert_eq!(SiteOp::from_u32(7), Some(SiteOp::IrqDispatch));
            assert_eq!(SiteOp::from_u32(8), None);
        }
    }
}
