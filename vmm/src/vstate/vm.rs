//! The KVM VM: in-kernel irqchip, memory slots over all guest memory (the
//! kernel's text in a read-only slot of its own), and vCPUs configured to start in long mode (see `arch`).

use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, KVM_MEM_READONLY, KVM_MP_STATE_RUNNABLE, kvm_mp_state, kvm_userspace_memory_region,
};
use kvm_ioctls::{Cap, Kvm, SyncReg, VcpuFd, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::arch::{cpuid, regs};
use crate::vstate::memory::GuestMemory;
use crate::vstate::vcpu::SYNC_ALL;

/// The LAPIC timer's input clock in kHz: KVM's in-kernel LAPIC runs it at
/// one tick per nanosecond unless the VMM asks otherwise
/// (`KVM_CAP_X86_APIC_BUS_CYCLES_NS`, which rtswitch leaves alone). The
/// guest checks it against the TSC at boot and uses its own measurement
/// if the two disagree.
pub const APIC_TIMER_KHZ: u32 = 1_000_000;

/// Intel VMX needs a 3-page TSS region it uses for real-mode emulation;
/// placed in the 32-bit hole, away from guest memory.
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error(
        "cannot open /dev/kvm: {0}; rtswitch needs KVM (is the kvm module loaded and /dev/kvm readable and writable by you?)"
    )]
    OpenKvm(kvm_ioctls::Error),
    #[error("KVM lacks a capability rtswitch needs: {0}")]
    MissingCap(&'static str),
    #[error("KVM ioctl {0} failed: {1}")]
    Ioctl(&'static str, kvm_ioctls::Error),
}

fn ioctl<T>(name: &'static str, r: Result<T, kvm_ioctls::Error>) -> Result<T, VmError> {
    r.map_err(|e| VmError::Ioctl(name, e))
}

/// A VM with its vCPUs created and set up, not yet running.
pub struct Vm {
    pub kvm: Kvm,
    pub fd: VmFd,
    pub vcpus: Vec<VcpuFd>,
    /// TSC frequency in kHz (`KVM_GET_TSC_KHZ`).
    pub tsc_khz: u32,
}

/// Opens /dev/kvm (the first thing a run does, so its error comes first).
pub fn open_kvm() -> Result<Kvm, VmError> {
    let kvm = Kvm::new().map_err(VmError::OpenKvm)?;
    for (cap, name) in [
        (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
        (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        (Cap::ImmediateExit, "KVM_CAP_IMMEDIATE_EXIT"),
        (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
        (Cap::SignalMsi, "KVM_CAP_SIGNAL_MSI"),
        (Cap::GetTscKhz, "KVM_CAP_GET_TSC_KHZ"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(VmError::MissingCap(name));
        }
    }
    Ok(kvm)
}

/// Creates the VM over `mem` and `vcpu_count` vCPUs at `entry`.
///
/// The memory slots are registered before the in-kernel irqchip exists:
/// on some hosts a memory slot registered after it is slow (about 7 ms on
/// this project's nested KVM, against 0.2 ms before it: the update then
/// waits for the irqchip's readers), and that was most of the VMM's boot.
///
/// `text` (whole pages) becomes a memory slot of its own with
/// `KVM_MEM_READONLY`: a guest write there exits to the VMM
/// (`KVM_EXIT_MMIO`), which reports it; only the VMM changes the guest's
/// text, through its own mapping.
pub fn create(
    kvm: Kvm,
    mem: &GuestMemory,
    vcpu_count: u32,
    entry: u64,
    text: std::ops::Range<u64>,
) -> Result<Vm, VmError> {
    if !kvm.check_extension(Cap::ReadonlyMem) {
        return Err(VmError::MissingCap("KVM_CAP_READONLY_MEM"));
    }
    let fd = ioctl("KVM_CREATE_VM", kvm.create_vm())?;
    register_memory(&fd, mem, text)?;
    ioctl("KVM_SET_TSS_ADDR", fd.set_tss_address(KVM_TSS_ADDRESS))?;
    ioctl("KVM_CREATE_IRQCHIP", fd.create_irq_chip())?;
    let vcpus = create_vcpus(&kvm, &fd, vcpu_count, entry)?;
    let tsc_khz = match vcpus.first() {
        Some(v) => ioctl("KVM_GET_TSC_KHZ", v.get_tsc_khz())?,
        None => 0,
    };
    Ok(Vm { kvm, fd, vcpus, tsc_khz })
}

/// The memory slots: each region of `mem`, cut around `text`, which gets
/// a read-only slot of its own.
fn register_memory(fd: &VmFd, mem: &GuestMemory, text: std::ops::Range<u64>) -> Result<(), VmError> {
    let mut slot = 0u32;
    for region in mem.iter() {
        let base = region.start_addr().0;
        let end = base + region.len();
        let host = region.as_ptr() as u64;
        let ro = text.start.max(base)..text.end.min(end);
        let pieces = if ro.start < ro.end {
            vec![(base..ro.start, 0), (ro.clone(), KVM_MEM_READONLY), (ro.end..end, 0)]
        } else {
            vec![(base..end, 0)]
        };
        for (range, flags) in pieces.into_iter().filter(|(r, _)| r.start < r.end) {
            let r = kvm_userspace_memory_region {
                slot,
                guest_phys_addr: range.start,
                memory_size: range.end - range.start,
                userspace_addr: host + (range.start - base),
                flags,
            };
            // SAFETY: the range lies inside a live mapping owned by `mem`,
            // which the VMM keeps (in an Arc) until after the VM and its
            // vCPUs are gone.
            ioctl("KVM_SET_USER_MEMORY_REGION", unsafe { fd.set_user_memory_region(r) })?;
            slot += 1;
        }
    }
    Ok(())
}

/// The vCPUs, set up to start at `entry` in long mode.
fn create_vcpus(kvm: &Kvm, fd: &VmFd, vcpu_count: u32, entry: u64) -> Result<Vec<VcpuFd>, VmError> {
    let supported = ioctl("KVM_GET_SUPPORTED_CPUID", kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES))?;
    let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
    let sync_regs = u64::try_from(kvm.check_extension_int(Cap::SyncRegs)).unwrap_or(0) & SYNC_ALL == SYNC_ALL;
    let mut vcpus = Vec::with_capacity(vcpu_count as usize);
    for cpu in 0..vcpu_count {
        let mut vcpu = ioctl("KVM_CREATE_VCPU", fd.create_vcpu(u64::from(cpu)))?;
        let mut cpuid = supported.clone();
        cpuid::apply_vcpu_cpuid(&mut cpuid, cpu, tsc_deadline);
        ioctl("KVM_SET_CPUID2", vcpu.set_cpuid2(&cpuid))?;
        ioctl("KVM_SET_REGS", vcpu.set_regs(&regs::boot_regs(entry, cpu)))?;
        let sregs = ioctl("KVM_GET_SREGS", vcpu.get_sregs())?;
        ioctl("KVM_SET_SREGS", vcpu.set_sregs(&regs::boot_sregs(sregs)))?;
        ioctl("KVM_SET_FPU", vcpu.set_fpu(&regs::boot_fpu()))?;
        // Every vCPU starts at the entry in long mode: no INIT/SIPI.
        ioctl("KVM_SET_MP_STATE", vcpu.set_mp_state(kvm_mp_state { mp_state: KVM_MP_STATE_RUNNABLE }))?;
        if sync_regs {
            // Every return from KVM_RUN stores the registers, system
            // registers and pending events into kvm_run (in the kernel,
            // no ioctl): a vCPU parking at the hold gate reads them there
            // (`vcpu::capture`). KVM stores them only on a return to
            // userspace, which a held vCPU's kick is, and an in-kernel
            // exit (a timer, an EOI, a halt) is not.
            for reg in [SyncReg::Register, SyncReg::SystemRegister, SyncReg::VcpuEvents] {
                vcpu.set_sync_valid_reg(reg);
            }
        }
        vcpus.push(vcpu);
    }
    Ok(vcpus)
}

/// Sends MSI `vector` to the LAPIC with APIC id `cpu` (fixed delivery,
/// physical destination).
pub fn send_msi(vm: &VmFd, cpu: u32, vector: u8) -> Result<(), VmError> {
    let msi = kvm_bindings::kvm_msi {
        address_lo: 0xfee0_0000 | ((cpu & 0xff) << 12),
        address_hi: 0,
        data: u32::from(vector),
        ..Default::default()
    };
    ioctl("KVM_SIGNAL_MSI", vm.signal_msi(msi)).map(|_| ())
}
