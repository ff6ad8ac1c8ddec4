//! The host-noise probe (rtla osnoise/hwnoise's question, asked from the
//! VMM): did the host itself stall while the guest measured?
//!
//! A host that is itself a VM (this project's) stalls its own CPUs for
//! milliseconds; the guest sees that as latency, and KVM's steal time
//! does not count it (the vCPU thread was not runnable-and-waiting on
//! this host: this host was not running at all). So every `rtswitch run`
//! starts one probe thread per host CPU it may run on (its affinity at
//! start, at most [`MAX_CPUS`]), each pinned to its CPU at SCHED_FIFO 1
//! (where the host refuses real-time priority, at normal priority, and
//! the report says so: its lateness then includes our own vCPU threads'
//! time slices), waking on an absolute CLOCK_MONOTONIC period
//! (`--host-noise`, 1 ms by default) and recording each wake-up's
//! lateness (`probe.rs`). A wake-up [`STALL_THRESHOLD`] or more late is a
//! host stall, kept as an interval of host TSC ticks (`stalls.rs`:
//! bounded ring, exact totals, a lateness distribution).
//!
//! Guest samples carry guest TSC values; `clock.rs` maps them to host TSC
//! (KVM's TSC offset, read before the vCPUs run, with its error bound),
//! so the reports can ask how long the host stalled across a worst
//! sample or an epoch ([`Snapshot::stall_across`]). A stall on a host CPU
//! delays whatever ran there; the probe does not know which host CPU a
//! vCPU was on, so a window's figure is the longest stall time over the
//! probed CPUs (with the CPU named).
//!
//! Layers: the runner starts and stops it; `report` reads its
//! [`Snapshot`]; this module imports neither.

pub mod clock;
pub mod probe;
pub mod stalls;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use self::clock::{RATE_PPM_MAX, TscMap, rdtsc};
use self::probe::{Job, Phase, ThreadState, mono_ns};
use self::stalls::CpuNoise;
use crate::seccomp::Sandbox;

/// Host CPUs probed at most (the first ones of the VMM's affinity).
pub const MAX_CPUS: usize = 16;
/// The default period (`--host-noise`): each wake-up preempts a vCPU
/// thread for 20-30 µs on this project's host, so at 1 ms the probe took
/// 2.5 % of the vCPUs' time and raised the guest's p99 (interleaved runs,
/// rt + cpu: p99 100-174 µs against 96 without it); at 4 ms it took 0.7 %
/// and the p99 read 97-101 µs (docs/latency.md, "Cost").
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(4);
/// A wake-up this late is a host stall. This host's own cyclictest p99 is
/// 36-52 µs and the probe's p99.9 at SCHED_FIFO about 100 µs on a quiet
/// host (docs/latency.md, "Host stalls"); its stalls reach 15 ms.
pub const STALL_THRESHOLD: Duration = Duration::from_micros(200);

#[derive(Debug, thiserror::Error)]
pub enum HostNoiseError {
    #[error("starting the host-noise probe thread for host cpu {cpu} failed: {err}; run with --host-noise off")]
    Spawn { cpu: u32, err: std::io::Error },
}

/// The probe's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub period: Duration,
    pub threshold: Duration,
}

/// How long the host stalled across a window, on the probed CPU that
/// stalled longest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStall {
    pub ns: u64,
    /// The host CPU (`null` when none stalled).
    pub host_cpu: Option<u32>,
    /// False when part of the window lies where the probe's ring no longer
    /// holds the stalls, or outside the probe's run: `ns` is a lower bound.
    pub complete: bool,
}

struct Cpu {
    host_cpu: u32,
    record: Arc<Mutex<CpuNoise>>,
    state: Arc<ThreadState>,
    thread: Option<JoinHandle<()>>,
}

/// The running probe.
pub struct Probe {
    settings: Settings,
    khz: u64,
    map: Option<TscMap>,
    cpus: Vec<Cpu>,
    /// Host CPUs the VMM may run on beyond [`MAX_CPUS`] (not probed).
    unprobed: usize,
    stop: Arc<AtomicBool>,
    /// Host TSC and CLOCK_MONOTONIC at the start (the rate check).
    start: (u64, u64),
}

/// The host CPUs the calling thread may run on.
fn allowed_cpus() -> Vec<u32> {
    // SAFETY: sched_getaffinity(2) fills a cpu_set_t we own; CPU_ISSET reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as u32).filter(|&c| libc::CPU_ISSET(c as usize, &set)).collect()
    }
}

impl Probe {
    /// Maps the vCPUs' TSCs (before they first run) and starts a probe
    /// thread per host CPU. `khz`: the TSC rate (KVM's, checked against the
    /// host's at the end).
    pub fn start(
        settings: Settings,
        khz: u32,
        vcpus: &[kvm_ioctls::VcpuFd],
        sandbox: &Arc<Sandbox>,
    ) -> Result<Self, HostNoiseError> {
        // Without the map the probe still counts the host's stalls; the
        // reports then place no guest sample among them.
        let map = TscMap::measure(vcpus).unwrap_or_else(|e| {
            log::warn!("{e}");
            None
        });
        if let Some(m) = &map {
            log::debug!("host-noise: guest TSC offsets {:?}, error {} ticks", m.offsets, m.error_ticks);
        }
        let all = allowed_cpus();
        let stop = Arc::new(AtomicBool::new(false));
        let threshold_ns = u64::try_from(settings.threshold.as_nanos()).unwrap_or(u64::MAX);
        let period_ns = u64::try_from(settings.period.as_nanos()).unwrap_or(u64::MAX);
        let mut cpus = Vec::with_capacity(all.len().min(MAX_CPUS));
        for &host_cpu in all.iter().take(MAX_CPUS) {
            let record = Arc::new(Mutex::new(CpuNoise::new(u64::from(khz), threshold_ns)));
            let state = Arc::new(ThreadState::default());
            let job = Job {
                host_cpu,
                period_ns,
                record: record.clone(),
                state: state.clone(),
                stop: stop.clone(),
                sandbox: sandbox.clone(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("hnoise{host_cpu}"))
                .spawn(move || probe::run(job))
                .map_err(|err| HostNoiseError::Spawn { cpu: host_cpu, err })?;
            cpus.push(Cpu { host_cpu, record, state, thread: Some(thread) });
        }
        Ok(Self {
            settings,
            khz: u64::from(khz),
            map,
            cpus,
            unprobed: all.len().saturating_sub(MAX_CPUS),
            stop,
            start: (rdtsc(), mono_ns()),
        })
    }

    /// Stops the threads (each ends within a period) and returns what they
    /// recorded.
    pub fn stop(mut self) -> Snapshot {
        let end = (rdtsc(), mono_ns());
        self.stop.store(true, Ordering::Release);
        for c in &mut self.cpus {
            if let Some(t) = c.thread.take()
                && t.join().is_err()
            {
                log::warn!("the host-noise probe of host cpu {} panicked", c.host_cpu);
            }
        }
        let rate_ppm = clock::rate_ppm(end.0.wrapping_sub(self.start.0), end.1.saturating_sub(self.start.1), self.khz);
        let cpus = self
            .cpus
            .iter()
            .map(|c| CpuSnapshot {
                host_cpu: c.host_cpu,
                pinned: c.state.pinned.load(Ordering::Acquire),
                rt: c.state.rt.load(Ordering::Acquire),
                ran: Phase::of(c.state.phase.load(Ordering::Acquire)) != Phase::Failed,
                cpu_ns: (Phase::of(c.state.phase.load(Ordering::Acquire)) == Phase::Ended)
                    .then(|| c.state.cpu_ns.load(Ordering::Acquire)),
                noise: c.record.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
            })
            .collect();
        let ran_s = Duration::from_nanos(end.1.saturating_sub(self.start.1)).as_secs_f64();
        Snapshot {
            settings: self.settings,
            khz: self.khz,
            map: self.map.clone(),
            rate_ppm,
            cpus,
            unprobed: self.unprobed,
            ran_s,
        }
    }
}

/// One host CPU's record at the end.
#[derive(Clone, Debug)]
pub struct CpuSnapshot {
    pub host_cpu: u32,
    pub pinned: bool,
    /// SCHED_FIFO granted.
    pub rt: bool,
    /// False: its seccomp filter failed and it never probed.
    pub ran: bool,
    /// The CPU time the probe thread used (`None`: it did not end).
    pub cpu_ns: Option<u64>,
    pub noise: CpuNoise,
}

/// What the probe recorded over the run.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub settings: Settings,
    /// The TSC rate, kHz.
    pub khz: u64,
    /// Guest TSC -> host TSC (`None`: no vCPU).
    pub map: Option<TscMap>,
    /// The host TSC's rate over the run against `khz`, ppm.
    pub rate_ppm: Option<i64>,
    pub cpus: Vec<CpuSnapshot>,
    /// Host CPUs not probed (beyond [`MAX_CPUS`]).
    pub unprobed: usize,
    /// How long the probe ran, s.
    pub ran_s: f64,
}

impl Snapshot {
    /// Whether every probe thread ran at SCHED_FIFO.
    pub fn rt_granted(&self) -> bool {
        !self.cpus.is_empty() && self.cpus.iter().all(|c| c.rt)
    }

    /// The map, when the host TSC kept the guest's rate (an unscaled TSC).
    pub fn usable_map(&self) -> Option<&TscMap> {
        match self.rate_ppm {
            Some(p) if p.abs() > RATE_PPM_MAX => None,
            _ => self.map.as_ref(),
        }
    }

    /// The map's error bound, ns.
    pub fn error_ns(&self) -> Option<u64> {
        let m = self.usable_map()?;
        Some(u64::try_from(u128::from(m.error_ticks) * 1_000_000 / u128::from(self.khz.max(1))).unwrap_or(u64::MAX))
    }

    /// How long the host stalled across guest TSC `[from, from + len_ns)`
    /// of vCPU `vcpu` (`None`: a time no vCPU owns), on the probed CPU
    /// that stalled longest; `None` when guest times cannot be mapped.
    pub fn stall_across(&self, vcpu: Option<usize>, from: u64, len_ns: u64) -> Option<HostStall> {
        let map = self.usable_map()?;
        let start = map.to_host(vcpu, from);
        let ticks = u64::try_from(u128::from(len_ns) * u128::from(self.khz) / 1_000_000).unwrap_or(u64::MAX);
        let end = start.saturating_add(ticks);
        let mut best = HostStall { ns: 0, host_cpu: None, complete: true };
        for c in self.cpus.iter().filter(|c| c.ran) {
            let a = c.noise.stall_across(start, end);
            best.complete &= a.complete;
            if a.ns > best.ns {
                best.ns = a.ns;
                best.host_cpu = Some(c.host_cpu);
            }
        }
        Some(best)
    }

    /// The same over a guest TSC range `[from, to)`; `to` `None`: until the
    /// probe's last wake-up (an epoch still open at the end).
    pub fn stall_between(&self, vcpu: Option<usize>, from: u64, to: Option<u64>) -> Option<HostStall> {
        let map = self.usable_map()?;
        let to = match to {
            Some(t) => t,
            None => {
                let last = self.cpus.iter().map(|c| c.noise.last_tick()).max().unwrap_or(0);
                last.wrapping_add(map.to_host(vcpu, 0).wrapping_neg())
            }
        };
        let len = to.saturating_sub(from);
        let ns = u64::try_from(u128::from(len) * 1_000_000 / u128::from(self.khz.max(1))).unwrap_or(u64::MAX);
        self.stall_across(vcpu, from, ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_noise::clock::Bracket;

    /// A 1 GHz TSC; guest TSC = host TSC + 1000.
    fn snapshot(stalls: &[(u32, u64, u64)], rate_ppm: Option<i64>) -> Snapshot {
        let khz = 1_000_000;
        let mut cpus: Vec<CpuSnapshot> = (0..2)
            .map(|host_cpu| CpuSnapshot {
                host_cpu,
                pinned: true,
                rt: true,
                ran: true,
                cpu_ns: None,
                noise: CpuNoise::new(khz, 100_000),
            })
            .collect();
        for c in &mut cpus {
            c.noise.record(0, 0, 0);
        }
        for &(cpu, tick, late) in stalls {
            cpus[cpu as usize].noise.record(tick, late, 0);
        }
        for c in &mut cpus {
            c.noise.record(1_000_000_000, 0, 0);
        }
        Snapshot {
            settings: Settings { period: DEFAULT_PERIOD, threshold: STALL_THRESHOLD },
            khz,
            map: TscMap::from_brackets(&[Bracket { before: 10, guest: 1010, after: 10 }]),
            rate_ppm,
            cpus,
            unprobed: 0,
            ran_s: 1.0,
        }
    }

    #[test]
    fn a_guest_window_is_asked_in_host_time_on_the_cpu_that_stalled_longest() {
        // Host cpu 0 stalled [100 ms, 180 ms), cpu 1 [150 ms, 160 ms).
        let s = snapshot(&[(0, 180_000_000, 80_000_000), (1, 160_000_000, 10_000_000)], Some(3));
        // A guest sample with deadline at host 170 ms (guest +1000), 30 ms long.
        let w = s.stall_across(Some(0), 170_001_000, 30_000_000).unwrap();
        assert_eq!(w, HostStall { ns: 10_000_000, host_cpu: Some(0), complete: true });
        let all = s.stall_between(None, 1000, Some(500_001_000)).unwrap();
        assert_eq!(all, HostStall { ns: 80_000_000, host_cpu: Some(0), complete: true });
        // An open epoch: until the probe's last wake-up (host 1 s).
        let open = s.stall_between(None, 150_001_000, None).unwrap();
        assert_eq!(open, HostStall { ns: 30_000_000, host_cpu: Some(0), complete: true });
        let quiet = s.stall_across(Some(1), 300_001_000, 1_000_000).unwrap();
        assert_eq!(quiet, HostStall { ns: 0, host_cpu: None, complete: true });
        assert!(s.rt_granted());
        assert_eq!(s.error_ns(), Some(0));
    }

    #[test]
    fn a_scaled_guest_tsc_is_not_mapped() {
        let s = snapshot(&[(0, 180_000_000, 80_000_000)], Some(20_000));
        assert_eq!(s.stall_across(Some(0), 0, 1_000_000_000), None);
        assert_eq!(s.error_ns(), None);
    }
}
