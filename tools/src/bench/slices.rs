//! The latency family's interleaved slices: each of the six (mode, load)
//! configurations runs as `--slices` short runs (a fresh VM each) that
//! together last `--duration`, made round by round. Within a round the two
//! runs compared under one load come back to back, and which goes first
//! alternates from pair to pair and from round to round:
//!
//! ```text
//! round 0: mainline+none rt+none | rt+cpu mainline+cpu | mainline+locks rt+locks
//! round 1: rt+none mainline+none | mainline+cpu rt+cpu | rt+locks mainline+locks
//! ```
//!
//! Each round starts with one `platform-costs` boot (the timer delivery
//! to a busy vCPU the targets compare with), and where `cyclictest` is
//! installed each rt + locks slice has the host's own cyclictest running
//! beside it ([`super::cyclictest`]). Host noise, which comes and goes,
//! so lands on both sides of each comparison, and the slices are the
//! repeats of the family: a figure's median over them is its headline.

use std::path::{Path, PathBuf};

use super::cyclictest::{self, HostConfig, Sched};
use super::latency::{
    self, ConfigRuns, HostFloor, HostRun, LatencyConfig, LatencyResult, RoundPlatform, SliceRun, guest_over_host,
};
use super::median::Paired;
use super::progress::Progress;
use super::targets::{self, PLATFORM_TIMER_BUSY};

/// Slices per configuration by default, and with `--quick`: the
/// family's repeats. A median of 7 paired ratios stands while up to 3 of
/// the 7 slices are hit by host noise (5: up to 2); a slice costs ~0.15 s
/// beyond its share of the duration, so more slices cost little time.
pub const DEFAULT_SLICES: u32 = 7;
pub const QUICK_SLICES: u32 = 5;
/// Shortest slice: shorter ones would be mostly boot.
pub const MIN_SLICE_S: f64 = 0.5;
/// Seconds a slice costs beyond its duration (boot, shutdown, report), and a
/// round's platform-costs boot, on this project's host (measured: a 1.67 s
/// slice took 1.75 s).
pub const SLICE_OVERHEAD_S: f64 = 0.15;
pub const ROUND_OVERHEAD_S: f64 = 0.5;

/// The slices to make of `asked` over `duration_s`: no slice under
/// [`MIN_SLICE_S`], at least one.
pub fn effective(asked: u32, duration_s: f64) -> u32 {
    let fit = (duration_s / MIN_SLICE_S).floor().clamp(1.0, f64::from(u32::MAX)) as u32;
    asked.clamp(1, fit.max(1))
}

/// The runs of round `k`, in the order they are made.
pub fn order(k: u32) -> [(&'static str, &'static str); 6] {
    let mut v = [("", ""); 6];
    for (p, load) in latency::LOADS.iter().enumerate() {
        let ml_first = (k as usize + p).is_multiple_of(2);
        let (a, b) = if ml_first { ("mainline", "rt") } else { ("rt", "mainline") };
        v[2 * p] = (a, *load);
        v[2 * p + 1] = (b, *load);
    }
    v
}

/// Estimated seconds of the family.
pub fn estimate(cfg: &LatencyConfig) -> f64 {
    f64::from(cfg.slices) * (6.0 * (cfg.slice_s() + SLICE_OVERHEAD_S) + ROUND_OVERHEAD_S)
}

/// Runs the family: every round, then the medians, ratios and targets.
/// `scratch` names a scratch file; `after_step` runs after each VM (the
/// suite's interrupt notice).
pub fn run(
    exe: &Path,
    cfg: &LatencyConfig,
    bar: &Progress,
    scratch: &dyn Fn(&str) -> PathBuf,
    after_step: &dyn Fn(),
) -> LatencyResult {
    let interrupted = rtswitch::signals::interrupted;
    let slice_cfg = cfg.slice();
    let each = estimate(cfg) / f64::from(cfg.slices.max(1)) / 6.0;
    let sched = Sched::permitted();
    let host_exe = cyclictest::find();
    let interval = cfg.interval_us.unwrap_or(switcher::telemetry::defaults::INTERVAL_US);
    let host_cfg = HostConfig::new(slice_cfg.duration_s, interval, cfg.hist_max_us, sched);
    if host_exe.is_none() {
        log::warn!("cyclictest is not installed: the bench has no host floor to compare with (rt-tests has it)");
    } else if sched == Sched::Other {
        log::warn!("no permission for SCHED_FIFO (not root, RLIMIT_RTPRIO 0): the host's cyclictest runs SCHED_OTHER");
    }
    let mut slices: Vec<(u32, &'static str, &'static str, SliceRun)> = Vec::new();
    let mut platform = Vec::new();
    let mut host_runs = Vec::new();
    let mut seq = 0u32;
    'rounds: for k in 0..cfg.slices {
        if interrupted() {
            break;
        }
        bar.begin(format!("latency: platform costs, round {}/{}", k + 1, cfg.slices), ROUND_OVERHEAD_S);
        let costs = super::platform_costs(exe, cfg.vcpus);
        bar.end();
        let timer = costs.iter().find(|c| c.what == PLATFORM_TIMER_BUSY);
        if timer.is_none() {
            log::warn!("round {}: the platform-costs run gave no '{PLATFORM_TIMER_BUSY}' line", k + 1);
        }
        platform.push(RoundPlatform {
            slice: k,
            timer_busy_p50_ns: timer.map(|c| c.p50_ns),
            timer_busy_p99_ns: timer.map(|c| c.p99_ns),
        });
        for (mode, load) in order(k) {
            if interrupted() {
                break 'rounds;
            }
            bar.begin(
                format!("latency: {mode} + {load}, slice {}/{}, {:.2} s", k + 1, cfg.slices, slice_cfg.duration_s),
                each,
            );
            let beside = (mode, load) == ("rt", "locks");
            let host = match (&host_exe, beside) {
                (Some(ct), true) => Some(cyclictest::start(ct, &host_cfg, &scratch("cyclictest"))),
                _ => None,
            };
            let r = latency::run_one(exe, &slice_cfg, mode, load, &scratch("latency"));
            if let Some(h) = host {
                let result = h.and_then(cyclictest::Running::finish);
                if let Err(e) = &result {
                    log::warn!("host cyclictest beside rt + locks slice {}: {e}", k + 1);
                }
                let (figures, error) = match result {
                    Ok(f) => (Some(f), None),
                    Err(e) => (None, Some(e.to_string())),
                };
                host_runs.push(HostRun { slice: k, figures, error });
            }
            if r.exit_code != Some(0) {
                bar.note(&format!(
                    "rtswitch bench: latency run {mode} + {load} (slice {}) exited with {:?}",
                    k + 1,
                    r.exit_code
                ));
            }
            bar.end();
            after_step();
            slices.push((k, mode, load, SliceRun { slice: k, seq, run: r }));
            seq += 1;
        }
    }
    // The configurations that made at least one slice (all six unless interrupted).
    let runs: Vec<ConfigRuns> = latency::RUNS
        .iter()
        .filter(|&&(mode, load)| slices.iter().any(|s| s.1 == mode && s.2 == load))
        .map(|&(mode, load)| {
            let mine =
                slices.iter().filter(|s| s.1 == mode && s.2 == load).map(|s| s.3.clone()).collect::<Vec<SliceRun>>();
            ConfigRuns::of(mode, load, mine)
        })
        .collect();
    let host = HostFloor {
        unavailable: host_exe.is_none().then(|| cyclictest::CyclictestError::NotInstalled.to_string()),
        sched: host_exe.as_ref().map(|_| sched.text()),
        guest_over_host: if host_exe.is_some() {
            guest_over_host(&runs, &host_runs, cfg.slices)
        } else {
            Paired::of(Vec::new())
        },
        runs: host_runs,
    };
    let targets = targets::judge(&runs, cfg.slices, &platform, &host);
    LatencyResult {
        slices: cfg.slices,
        slice_s: slice_cfg.duration_s,
        rt_gain: latency::rt_gains(&runs, cfg.slices),
        runs,
        platform,
        host,
        targets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compared_runs_come_back_to_back_and_alternate_which_goes_first() {
        let name = |k| order(k).iter().map(|(m, l)| format!("{m}+{l}")).collect::<Vec<_>>().join(" ");
        assert_eq!(name(0), "mainline+none rt+none rt+cpu mainline+cpu mainline+locks rt+locks");
        assert_eq!(name(1), "rt+none mainline+none mainline+cpu rt+cpu rt+locks mainline+locks");
        assert_eq!(name(2), name(0));
        for k in 0..4 {
            let o = order(k);
            // Every configuration once per round; each pair is one load, one run per mode.
            for (mode, load) in latency::RUNS {
                assert_eq!(o.iter().filter(|r| **r == (mode, load)).count(), 1, "round {k}");
            }
            for pair in o.chunks(2) {
                assert_eq!(pair[0].1, pair[1].1, "round {k}: {pair:?}");
                assert_ne!(pair[0].0, pair[1].0, "round {k}: {pair:?}");
            }
        }
        // Over two rounds each mode goes first once per load.
        for p in 0..3 {
            assert_ne!(order(0)[2 * p].0, order(1)[2 * p].0);
        }
    }

    #[test]
    fn slices_share_the_duration_and_are_never_too_short() {
        assert_eq!(effective(7, 20.0), 7);
        assert_eq!(effective(5, 5.0), 5);
        // --quick --duration 1: two half-second slices, not five of 0.2 s.
        assert_eq!(effective(5, 1.0), 2);
        assert_eq!(effective(5, 0.2), 1);
        assert_eq!(effective(0, 20.0), 1);
        let cfg = LatencyConfig {
            duration_s: 20.0,
            vcpus: 2,
            interval_us: None,
            cs_us: None,
            hist_max_us: 100_000,
            slices: 5,
        };
        assert_eq!(cfg.slice_s(), 4.0);
        assert_eq!((cfg.slice().duration_s, cfg.slice().slices), (4.0, 1));
        assert!(latency::run_args(&cfg.slice(), "rt", "locks").join(" ").contains("--duration 4 "));
        assert!((estimate(&cfg) - 5.0 * (6.0 * 4.15 + 0.5)).abs() < 1e-9);
    }
}
