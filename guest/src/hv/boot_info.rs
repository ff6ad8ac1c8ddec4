//! The VMM's [`BootInfo`] page: where it is and volatile reads of its
//! fields. The VMM keeps writing `host_request` while the guest runs, so no
//! Rust reference to the page is ever formed; every field is read through
//! a raw pointer with `read_volatile`.

use core::fmt;
use core::ptr;
use core::sync::atomic::{AtomicPtr, Ordering};
use switcher::abi::{self, BootInfo, CMDLINE_LEN};
use switcher::profile::Profile;

static BOOT_INFO: AtomicPtr<BootInfo> = AtomicPtr::new(ptr::null_mut());

/// The boot info's address (the ABI's fixed one before [`init`]).
fn page() -> *const BootInfo {
    let p = BOOT_INFO.load(Ordering::Relaxed).cast_const();
    if p.is_null() { abi::BOOT_INFO_ADDR as *const BootInfo } else { p }
}

/// Reads one field of the boot info, volatile.
macro_rules! read {
    ($field:ident) => {{
        let p = page();
        // SAFETY: the VMM maps the boot info page (identity mapped) before
        // any vCPU runs and never unmaps it; only a field is projected and
        // read, no reference to the page is formed.
        unsafe { ptr::read_volatile(&raw const (*p).$field) }
    }};
}

/// Why a boot info page is refused.
pub enum BootInfoError {
    Magic(u64),
    Version(u32),
    CpuCount(u32),
    Mode(u32),
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Magic(m) => write!(f, "magic {m:#x}, expected {:#x}", abi::ABI_MAGIC),
            Self::Version(v) => {
                write!(f, "ABI version {v}, this kernel speaks {}", abi::ABI_VERSION)
            }
            Self::CpuCount(n) => write!(f, "cpu count {n}, expected 1..={}", abi::MAX_CPUS),
            Self::Mode(m) => write!(f, "unknown lock mode {m}"),
        }
    }
}

/// Records and checks the boot info the VMM passed in `rdi`.
pub fn init(boot_info: *const BootInfo) -> Result<(), BootInfoError> {
    BOOT_INFO.store(boot_info.cast_mut(), Ordering::Relaxed);
    let magic = read!(magic);
    if magic != abi::ABI_MAGIC {
        return Err(BootInfoError::Magic(magic));
    }
    let version = read!(version);
    if version != abi::ABI_VERSION {
        return Err(BootInfoError::Version(version));
    }
    let cpus = cpu_count();
    if cpus == 0 || cpus as usize > abi::MAX_CPUS {
        return Err(BootInfoError::CpuCount(cpus));
    }
    let mode = read!(initial_mode);
    if Profile::from_u32(mode).is_none() {
        return Err(BootInfoError::Mode(mode));
    }
    Ok(())
}

pub fn cpu_count() -> u32 {
    read!(cpu_count)
}

pub fn memory_bytes() -> u64 {
    read!(memory_bytes)
}

pub fn tsc_khz() -> u64 {
    read!(tsc_khz)
}

/// The LAPIC timer's input rate in kHz as the VMM configured it (0: unknown).
pub fn apic_timer_khz() -> u64 {
    u64::from(read!(apic_timer_khz))
}

/// Whether every vCPU can have a host CPU of its own
/// ([`switcher::abi::hint::DEDICATED_CPUS`]).
pub fn dedicated_cpus() -> bool {
    read!(hints) & switcher::abi::hint::DEDICATED_CPUS != 0
}

/// Checked in [`init`]; `Mainline` before that.
pub fn initial_mode() -> Profile {
    Profile::from_u32(read!(initial_mode)).unwrap_or(Profile::MAINLINE)
}

/// The pending [`abi::host_request`] word (the VMM may change it any time).
pub fn host_request() -> u32 {
    read!(host_request)
}

pub fn guest_status_addr() -> u64 {
    read!(guest_status_addr)
}

/// Where the panic record goes: the boot info's address if the page is
/// valid, the ABI's fixed address otherwise (a panic may come before or
/// because of a bad boot info).
pub fn panic_record_addr() -> u64 {
    let valid = read!(magic) == abi::ABI_MAGIC && read!(version) == abi::ABI_VERSION;
    let addr = read!(panic_record_addr);
    if valid && addr != 0 { addr } else { abi::PANIC_RECORD_ADDR }
}

/// A copy of the command line buffer (NUL-terminated unless full).
pub fn cmdline() -> [u8; CMDLINE_LEN] {
    read!(cmdline)
}

/// Guest-physical address of the latency telemetry region (0: none).
pub fn telemetry_addr() -> u64 {
    read!(telemetry_addr)
}

/// Size in bytes the VMM reserved for the telemetry region.
pub fn telemetry_size() -> u64 {
    read!(telemetry_size)
}

/// 1 µs buckets per latency histogram in the telemetry region.
pub fn hist_buckets() -> u32 {
    read!(hist_buckets)
}

/// The workload the VMM asks for (zeros: the guest's defaults).
pub fn workload() -> switcher::telemetry::WorkloadRequest {
    read!(workload)
}
