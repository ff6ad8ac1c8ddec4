//! Per-vCPU CPUID: KVM's supported set, with this vCPU's APIC ids and the
//! features the guest relies on (x2APIC, TSC-deadline) made visible.

use kvm_bindings::{CpuId, kvm_cpuid_entry2};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_EXT_TOPOLOGY_V2: u32 = 0x1f;
const ECX_X2APIC: u32 = 1 << 21;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;

/// Adjusts `cpuid` (KVM's supported set) for vCPU `cpu` (APIC id == `cpu`).
pub fn apply_vcpu_cpuid(cpuid: &mut CpuId, cpu: u32, tsc_deadline: bool) {
    for e in cpuid.as_mut_slice().iter_mut() {
        adjust_entry(e, cpu, tsc_deadline);
    }
}

fn adjust_entry(e: &mut kvm_cpuid_entry2, cpu: u32, tsc_deadline: bool) {
    match e.function {
        LEAF_FEATURES => {
            e.ebx = (e.ebx & 0x00ff_ffff) | ((cpu & 0xff) << 24);
            e.ecx |= ECX_X2APIC | ECX_HYPERVISOR;
            if tsc_deadline {
                e.ecx |= ECX_TSC_DEADLINE;
            }
        }
        LEAF_EXT_TOPOLOGY | LEAF_EXT_TOPOLOGY_V2 => e.edx = cpu,
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 { function, index, ebx: 0x0001_0800, ..Default::default() }
    }

    #[test]
    fn sets_apic_ids_and_features() {
        let mut cpuid =
            CpuId::from_entries(&[entry(1, 0), entry(0xb, 0), entry(0xb, 1), entry(0x1f, 0), entry(7, 0)]).unwrap();
        apply_vcpu_cpuid(&mut cpuid, 5, true);
        let s = cpuid.as_slice();
        assert_eq!(s[0].ebx >> 24, 5);
        assert_eq!(s[0].ebx & 0xff_ffff, 0x0001_0800, "other EBX fields kept");
        assert_ne!(s[0].ecx & ECX_X2APIC, 0);
        assert_ne!(s[0].ecx & ECX_TSC_DEADLINE, 0);
        assert_eq!((s[1].edx, s[2].edx, s[3].edx), (5, 5, 5));
        assert_eq!(s[4].ebx, 0x0001_0800, "unrelated leaves untouched");
    }

    #[test]
    fn tsc_deadline_only_when_kvm_has_it() {
        let mut cpuid = CpuId::from_entries(&[entry(1, 0)]).unwrap();
        apply_vcpu_cpuid(&mut cpuid, 0, false);
        assert_eq!(cpuid.as_slice()[0].ecx & ECX_TSC_DEADLINE, 0);
    }
}
