//! KVM's steal-time area (`MSR_KVM_STEAL_TIME`), one per CPU: while this
//! vCPU's thread is scheduled out on the host, KVM sets its `preempted`
//! byte. The rtmutex's adaptive spinning reads it so as not to spin on an
//! owner whose vCPU is not running (docs/ARCHITECTURE.md, "The guest kernel model": spin while the
//! owner runs and its vCPU is not preempted), the same hint Linux's
//! `vcpu_is_preempted()` gives its own adaptive spinners. Where the
//! hypervisor does not offer steal time, every vCPU reads as running.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use switcher::abi::MAX_CPUS;

use super::{msr, shim};

const KVM_MSR_ENABLED: u64 = 1;
/// CPUID leaf of KVM's signature and the one of its feature bits.
const KVM_CPUID_SIGNATURE: u32 = 0x4000_0000;
const KVM_CPUID_FEATURES: u32 = 0x4000_0001;
const KVM_FEATURE_STEAL_TIME: u32 = 1 << 5;
/// `preempted` bit 0: the vCPU is scheduled out (`KVM_VCPU_PREEMPTED`).
const KVM_VCPU_PREEMPTED: u8 = 1;

/// `struct kvm_steal_time` (Linux `arch/x86/include/uapi/asm/kvm_para.h`),
/// 64-byte aligned as KVM requires. The guest reads `steal` and
/// `preempted`; the other fields are the ABI's layout.
#[repr(C, align(64))]
#[allow(dead_code)] // The ABI's layout: KVM writes fields the guest never reads.
struct StealTime {
    steal: u64,
    version: u32,
    flags: u32,
    preempted: u8,
    pad: [u8; 3],
    pad2: [u32; 11],
}

struct Area(UnsafeCell<StealTime>);

// SAFETY: the area is written by the hypervisor and read with volatile
// loads only; the guest never writes it after registering it.
unsafe impl Sync for Area {}

static AREAS: [Area; MAX_CPUS] = [const {
    Area(UnsafeCell::new(StealTime { steal: 0, version: 0, flags: 0, preempted: 0, pad: [0; 3], pad2: [0; 11] }))
}; MAX_CPUS];

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether the hypervisor is KVM and offers steal time.
fn offered() -> bool {
    let sig = raw_cpuid::cpuid!(KVM_CPUID_SIGNATURE);
    let kvm = sig.ebx == 0x4b4d_564b && sig.ecx == 0x564b_4d56 && sig.edx == 0x4d;
    kvm && sig.eax >= KVM_CPUID_FEATURES && raw_cpuid::cpuid!(KVM_CPUID_FEATURES).eax & KVM_FEATURE_STEAL_TIME != 0
}

/// Registers this CPU's area with the hypervisor (once per CPU, at
/// bring-up, through the ring-0 shim's WRMSR); returns whether steal time
/// is on.
pub fn init(cpu: usize) -> bool {
    if cpu >= MAX_CPUS || !offered() {
        return false;
    }
    // Guest memory is identity-mapped: the static's address is its
    // guest-physical address.
    let addr = AREAS[cpu].0.get() as u64;
    // CPUID says KVM offers MSR_KVM_STEAL_TIME; the value is the 64-byte
    // aligned guest-physical address of a static area that lives for the
    // whole run and that nothing else writes (the shim checks both).
    if !shim::wrmsr(msr::MSR_KVM_STEAL_TIME, addr | KVM_MSR_ENABLED) {
        return false;
    }
    ENABLED.store(true, Ordering::Relaxed);
    true
}

/// Whether steal time was registered (on CPU 0, at least).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Nanoseconds the host has kept `cpu`'s vCPU from running while it was
/// runnable (KVM's steal time; 0 where steal time is off).
pub fn steal_ns(cpu: usize) -> u64 {
    let Some(area) = AREAS.get(cpu) else { return 0 };
    // SAFETY: as for `vcpu_preempted`. A torn read during an update is
    // possible (KVM brackets it with `version`); this is a report figure.
    unsafe { core::ptr::addr_of!((*area.0.get()).steal).read_volatile() }
}

/// Whether `cpu`'s vCPU is scheduled out on the host right now (a hint:
/// it may change the moment it is read). False where steal time is off.
#[inline]
pub fn vcpu_preempted(cpu: usize) -> bool {
    let Some(area) = AREAS.get(cpu) else { return false };
    // SAFETY: the area is a valid static; the hypervisor writes it
    // concurrently, so the read is volatile.
    let p = unsafe { core::ptr::addr_of!((*area.0.get()).preempted).read_volatile() };
    p & KVM_VCPU_PREEMPTED != 0
}
