//! The host-noise probe end to end: a host stall is arranged, not hoped
//! for. The test stops the whole VMM process with SIGSTOP (every vCPU and
//! every probe thread with it, as a host that deschedules this machine
//! would), holds it stopped for a measured time, continues it, and checks
//! that the `--json` report and the summary report a host stall at least
//! that long: in the probe's totals on every probed host CPU, in the
//! epoch's host stall, and across the worst guest sample (the activation
//! the stop delayed), with no steal time to explain it.
//!
//! The bounds come from what the run measured: the stop is timed from the
//! moment every thread of the VMM is seen stopped (`/proc/PID/task/*/stat`)
//! to the SIGCONT, a lower bound of the time it was stopped.

use std::time::{Duration, Instant};

use rtswitch_tests::HostStalls;
use rtswitch_tests::vm::BackgroundVmm;

/// How long the test holds the VMM stopped (at least).
const STOP: Duration = Duration::from_millis(80);
/// The guest's measurement period (the run's `-i`) and the probe's period
/// (`--host-noise`, set to it: the default is longer).
const INTERVAL: Duration = Duration::from_millis(1);

/// Whether every thread of `pid` is stopped (state `T` or `t`).
fn all_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    let mut n = 0;
    for t in tasks.flatten() {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let state = stat.rsplit(')').next().and_then(|r| r.split_whitespace().next()).unwrap_or("?");
        if state != "T" && state != "t" {
            return false;
        }
        n += 1;
    }
    n > 0
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) takes no pointers; `pid` is our child's.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}

/// Stops the VMM, waits until every thread is stopped, holds it `STOP`,
/// continues it; returns how long it was surely stopped.
fn stall(vmm: &BackgroundVmm) -> Duration {
    let pid = vmm.pid();
    signal(pid, libc::SIGSTOP);
    let asked = Instant::now();
    while !all_stopped(pid) {
        if asked.elapsed() > Duration::from_secs(10) {
            signal(pid, libc::SIGCONT);
            panic!("the VMM's threads did not all stop within 10 s of SIGSTOP:\n{}", vmm.output());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let stopped = Instant::now();
    std::thread::sleep(STOP);
    let held = stopped.elapsed();
    signal(pid, libc::SIGCONT);
    held
}

#[test]
fn a_stopped_vmm_is_reported_as_a_host_stall_across_the_sample_it_delayed() {
    let watch = HostStalls::watch();
    let vmm = BackgroundVmm::start(
        "host-noise-stop",
        &["--vcpus", "1", "--load", "none", "-i", "1000", "--host-noise", "1ms"],
    );
    std::thread::sleep(Duration::from_millis(500));
    let held = stall(&vmm);
    std::thread::sleep(Duration::from_millis(500));
    let (code, out, report) = vmm.quit();
    assert_eq!(code, 0, "{out}");
    for l in out.lines().filter(|l| l.contains("host") && (l.contains("worst") || l.contains("stall"))) {
        eprintln!("held {held:?}: {l}");
    }
    let report = report.unwrap_or_else(|| panic!("no --json report:\n{out}"));
    let noise = report.host_noise.as_ref().unwrap_or_else(|| panic!("no host_noise in the report:\n{out}"));
    // The probe's own wake-up was due at most a period after the stop took
    // hold and came after the continue.
    let at_least = held.saturating_sub(INTERVAL).as_nanos() as u64;
    assert!(!noise.cpus.is_empty() && noise.cpus.iter().all(|c| c.ran), "{noise:?}");
    for c in &noise.cpus {
        assert!(c.stalls >= 1 && c.worst_ns >= at_least, "host cpu {}: held {held:?}, probe saw {c:?}", c.host_cpu);
    }
    assert!(noise.stall_ns >= at_least, "{noise:?}");
    let map = noise.tsc_map.as_ref().unwrap_or_else(|| panic!("no TSC map: {noise:?}"));
    assert!(map.usable, "the guest TSC could not be mapped on this host: {map:?}");

    // The epoch (one: no switch) holds the whole stall.
    let epoch = &report.epochs[0];
    let epoch_stall = epoch.host_stall.unwrap_or_else(|| panic!("epoch 0 has no host_stall:\n{out}"));
    assert!(epoch_stall.ns >= at_least, "epoch 0: held {held:?}, {epoch_stall:?}");

    // The measurement thread asleep when the stop came woke after it: the
    // worst sample is at least the stop, less a period.
    let worst = epoch.all.worst.as_ref().unwrap_or_else(|| panic!("no worst sample:\n{out}"));
    assert!(worst.thread_ns >= at_least, "held {held:?}, worst {worst:?}");
    // It is the delayed activation unless the host itself stalled as long
    // elsewhere in the run (the watcher times this process's wake-ups).
    if watch.worst() * 2 < held {
        let across = worst.host_stall.unwrap_or_else(|| panic!("the worst sample has no host_stall: {worst:?}"));
        // Its window runs from its deadline (at most a period before the
        // stop) to its wake-up (after the continue); the map's error on both ends.
        let slack = INTERVAL.as_nanos() as u64 + 2 * map.error_ns;
        assert!(
            across.ns + slack >= held.as_nanos() as u64 && across.host_cpu.is_some(),
            "held {held:?}, worst {worst:?}, error {} ns",
            map.error_ns
        );
        let line = out.lines().find(|l| l.contains("epoch 0 worst thread latency")).unwrap_or_default();
        assert!(line.contains(&format!("host stalled {} us across it", across.ns / 1000)), "{line}");
    } else {
        eprintln!("the host stalled {:?} meanwhile: the worst sample may be another one", watch.worst());
    }
    assert!(out.contains("epoch 0 host: steal "), "{out}");
    assert!(out.contains("rtswitch: host noise: probe every 1000 us"), "{out}");
}
