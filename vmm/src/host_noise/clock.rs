//! Guest TSC to host TSC: where a guest sample's window lies in the host
//! time the probe's stalls are kept in.
//!
//! KVM runs a vCPU's TSC as the host's plus an offset (times a ratio
//! where the host scales TSCs, which the run checks: [`rate_ppm`]). Before
//! the vCPUs first run, the VMM reads each vCPU's `IA32_TSC` with
//! `KVM_GET_MSRS`, which KVM computes from the host TSC at the call,
//! bracketed by two host `rdtsc`: the offset is the guest value minus
//! the bracket's middle, exact to half the bracket's width. The narrowest
//! of a few brackets is kept. The error bound of a mapped time is that
//! half-width plus the spread of the vCPUs' offsets (KVM syncs the TSCs
//! of vCPUs created together, so they normally agree to a tick).
//!
//! On this project's host (nested `kvm_pvm`) a bracket is a few µs wide;
//! the vCPUs' offsets agree exactly (docs/latency.md, "Host stalls").

use kvm_bindings::{Msrs, kvm_msr_entry};
use kvm_ioctls::VcpuFd;

/// `IA32_TIME_STAMP_COUNTER`.
const MSR_IA32_TSC: u32 = 0x10;
/// Brackets tried per vCPU; the narrowest is kept.
const TRIES: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum ClockError {
    #[error(
        "reading vCPU {cpu}'s TSC with KVM_GET_MSRS failed: {err}; the host-noise probe cannot place guest samples \
         in host time (run with --host-noise off to go without it)"
    )]
    ReadTsc { cpu: usize, err: kvm_ioctls::Error },
}

/// The host's TSC now.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC reads a counter; it has no memory effects and every
    // x86-64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// One reading: host TSC before, the guest's TSC, host TSC after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bracket {
    pub before: u64,
    pub guest: u64,
    pub after: u64,
}

impl Bracket {
    fn width(&self) -> u64 {
        self.after.saturating_sub(self.before)
    }

    /// Guest minus host at the bracket's middle.
    fn offset(&self) -> i64 {
        let mid = self.before + self.width() / 2;
        self.guest.wrapping_sub(mid) as i64
    }
}

/// Guest TSC -> host TSC, per vCPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TscMap {
    /// Guest TSC minus host TSC, per vCPU.
    pub offsets: Vec<i64>,
    /// How far a mapped time may be off, ticks.
    pub error_ticks: u64,
}

impl TscMap {
    /// The map from each vCPU's narrowest bracket.
    pub fn from_brackets(best: &[Bracket]) -> Option<Self> {
        let offsets: Vec<i64> = best.iter().map(Bracket::offset).collect();
        let half = best.iter().map(|b| b.width().div_ceil(2)).max()?;
        let (lo, hi) = (offsets.iter().min()?, offsets.iter().max()?);
        Some(Self { error_ticks: half + hi.abs_diff(*lo), offsets: offsets.clone() })
    }

    /// Reads every vCPU's TSC (call before they first run).
    pub fn measure(vcpus: &[VcpuFd]) -> Result<Option<Self>, ClockError> {
        let mut best = Vec::with_capacity(vcpus.len());
        for (cpu, fd) in vcpus.iter().enumerate() {
            let mut narrowest: Option<Bracket> = None;
            for _ in 0..TRIES {
                let b = read(fd).map_err(|err| ClockError::ReadTsc { cpu, err })?;
                if narrowest.is_none_or(|n| b.width() < n.width()) {
                    narrowest = Some(b);
                }
            }
            best.extend(narrowest);
        }
        Ok(Self::from_brackets(&best))
    }

    /// The host TSC at guest TSC `guest` of vCPU `cpu` (vCPU 0's offset
    /// for a time no vCPU owns, such as an epoch's bounds: the spread is
    /// in the error bound).
    pub fn to_host(&self, cpu: Option<usize>, guest: u64) -> u64 {
        let off = cpu.and_then(|c| self.offsets.get(c)).or(self.offsets.first()).copied().unwrap_or(0);
        guest.wrapping_sub(off as u64)
    }
}

fn read(fd: &VcpuFd) -> Result<Bracket, kvm_ioctls::Error> {
    let mut msrs = Msrs::from_entries(&[kvm_msr_entry { index: MSR_IA32_TSC, ..Default::default() }])
        .map_err(|_| kvm_ioctls::Error::new(libc::E2BIG))?;
    let before = rdtsc();
    let n = fd.get_msrs(&mut msrs)?;
    let after = rdtsc();
    if n != 1 {
        return Err(kvm_ioctls::Error::new(libc::EINVAL));
    }
    Ok(Bracket { before, guest: msrs.as_slice()[0].data, after })
}

/// How far the host TSC's rate, measured over `(ticks, ns)` apart, is from
/// the guest's `guest_khz`, in parts per million (None: too short to say).
/// Beyond [`RATE_PPM_MAX`] the guest's TSC is scaled and the map does not hold.
pub fn rate_ppm(ticks: u64, ns: u64, guest_khz: u64) -> Option<i64> {
    if ns < 10_000_000 || guest_khz == 0 {
        return None;
    }
    let host_khz = u128::from(ticks) * 1_000_000 / u128::from(ns);
    let diff = host_khz as i128 - i128::from(guest_khz);
    i64::try_from(diff * 1_000_000 / i128::from(guest_khz)).ok()
}

/// The rate difference past which the map is not trusted: 1000 ppm is 1 ms
/// over a second of run, far beyond any real clock's error (a scaled TSC
/// differs by percents).
pub const RATE_PPM_MAX: i64 = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offset_is_the_guest_value_against_the_brackets_middle() {
        let b = [
            Bracket { before: 1000, guest: 5_000_600, after: 1200 },
            Bracket { before: 2000, guest: 5_001_600, after: 2300 },
        ];
        let m = TscMap::from_brackets(&b).unwrap();
        assert_eq!(m.offsets, [4_999_500, 4_999_450]);
        // Half the wider bracket (150) plus the spread of the offsets (50).
        assert_eq!(m.error_ticks, 200);
        assert_eq!(m.to_host(Some(1), 5_001_450), 2000);
        assert_eq!(m.to_host(None, 5_000_500), 1000, "vCPU 0's offset");
        assert_eq!(m.to_host(Some(7), 5_000_500), 1000, "an unknown vCPU: vCPU 0's");
        assert_eq!(TscMap::from_brackets(&[]), None);
    }

    #[test]
    fn a_guest_tsc_behind_the_hosts_maps_too() {
        let m = TscMap::from_brackets(&[Bracket { before: 9_000, guest: 100, after: 9_000 }]).unwrap();
        assert_eq!(m.offsets, [-8_900]);
        assert_eq!(m.to_host(Some(0), 150), 9_050);
    }

    #[test]
    fn rates_are_compared_in_ppm() {
        // 2.596 GHz host over 1 s against a guest told 2596000 kHz.
        assert_eq!(rate_ppm(2_596_000_000, 1_000_000_000, 2_596_000), Some(0));
        assert_eq!(rate_ppm(2_598_596_000, 1_000_000_000, 2_596_000), Some(1000));
        assert_eq!(rate_ppm(1, 1_000, 2_596_000), None, "too short");
    }
}
