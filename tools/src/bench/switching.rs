//! The switch and scale families of `rtswitch bench`: what a runtime
//! switch costs, measured on a real VM through the real control socket.
//!
//! One phase is one VM (`rtswitch run --api-sock ...`, this executable):
//! N `set-mode` toggles, recording freeze, blackout and total as the VMM
//! measured them and the round trip the client saw, interleaved with N
//! `x-pause-resume` calls: the VMM holding and releasing every vCPU with
//! no checks and no patch, the platform floor of a blackout, measured in
//! the same VM. Each call follows half the gap after the one before (the
//! guest prepares the next latency epoch's memory in the background
//! meanwhile), so a switch and a floor round find the host alike: after
//! a gap, a host CPU that idled wakes first, which one measured back to
//! back does not pay (on this project's host the floor read 79 µs back to
//! back, against about 130 µs after a gap). A switch that fails (the guest
//! did not quiesce in time, ...) is counted with its reason, not hidden,
//! and the phase goes on.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use rtswitch::api::child::{ChildVm, ChildVmError};
use rtswitch::api::client::{ClientError, Session};
use rtswitch::api::protocol::SiteCounts;
use rtswitch::switch::Spread;

#[derive(Debug, thiserror::Error)]
pub enum SwitchBenchError {
    #[error(transparent)]
    Vm(#[from] ChildVmError),
    #[error("control socket: {0}; the VM may have exited (run it alone with `rtswitch run --api-sock` to see why)")]
    Client(#[from] ClientError),
    #[error("the VM refused {what}: {reply}")]
    Refused { what: &'static str, reply: String },
}

/// One phase's settings.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseConfig {
    pub vcpus: u32,
    /// `locks` or `none`.
    pub load: &'static str,
    /// Critical section of the lock load (`None`: the guest's default).
    pub cs_us: Option<u32>,
    /// Switches, then as many pause+resume rounds.
    pub count: u32,
    /// Pause after each switch; its floor round comes half-way through it.
    pub gap_ms: u64,
}

/// Deadline for the guest to quiesce in one switch: generous, so that a
/// busy host makes switches slow rather than failed (a benchmark measures,
/// it does not judge the host).
const SWITCH_TIMEOUT_MS: u32 = 20_000;
/// Bound on one reply.
const REPLY_LIMIT: Duration = Duration::from_secs(60);

/// One phase's figures, in µs (successful switches only).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Phase {
    pub freeze: Vec<u64>,
    pub blackout: Vec<u64>,
    pub total: Vec<u64>,
    pub client_rtt: Vec<u64>,
    pub floor_blackout: Vec<u64>,
    pub floor_rtt: Vec<u64>,
    /// The critical section the guest ran (from its workload line).
    pub cs_us: Option<u64>,
    /// The guest's steps of each switch (its mailbox stamps; see
    /// `switch::GuestPhases`): freeze proper, quiescent -> verdict,
    /// serialize, thaw, host<->guest messaging.
    pub guest_freeze: Vec<u64>,
    pub verdict: Vec<u64>,
    pub serialize: Vec<u64>,
    pub thaw: Vec<u64>,
    pub messaging: Vec<u64>,
    /// Call sites one switch rewrote (every dimension's), and how many of
    /// each dimension the kernel has.
    pub sites: Option<u64>,
    pub sites_by_dimension: Option<SiteCounts>,
    /// Switches that took the fast path (one blackout, no freezer), and
    /// the refused ones by the first check that failed (`query-switches`'s
    /// `path`).
    #[serde(default)]
    pub fast: u64,
    #[serde(default)]
    pub refused_by: std::collections::BTreeMap<String, u64>,
    /// Where each fast switch's blackout went (`path.blackout`): holding
    /// every vCPU with its registers read, the checks, the patch, the
    /// release.
    #[serde(default)]
    pub fast_hold: Vec<u64>,
    #[serde(default)]
    pub fast_checks: Vec<u64>,
    #[serde(default)]
    pub fast_patch: Vec<u64>,
    #[serde(default)]
    pub fast_release: Vec<u64>,
    /// Switches that failed, with the VMM's reason.
    pub failed: Vec<String>,
    /// Ctrl-C on the suite ended the phase early (the figures are the
    /// switches and rounds done by then).
    pub interrupted: bool,
}

/// min / p50 / p99 / max of each figure.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseSpreads {
    pub freeze: Option<Spread>,
    pub blackout: Option<Spread>,
    pub total: Option<Spread>,
    pub client_rtt: Option<Spread>,
    pub floor_blackout: Option<Spread>,
    pub floor_rtt: Option<Spread>,
    pub guest_freeze: Option<Spread>,
    pub verdict: Option<Spread>,
    pub serialize: Option<Spread>,
    pub thaw: Option<Spread>,
    pub messaging: Option<Spread>,
    pub fast_hold: Option<Spread>,
    pub fast_checks: Option<Spread>,
    pub fast_patch: Option<Spread>,
    pub fast_release: Option<Spread>,
}

impl Phase {
    /// "fast path N of M (P %)[; refused: check N, ...]", for the table.
    pub fn hit_rate(&self) -> Option<String> {
        let done = self.total.len() as u64;
        if done == 0 {
            return None;
        }
        let mut s = format!("fast path {} of {done} ({:.0} %)", self.fast, self.fast as f64 * 100.0 / done as f64);
        if !self.refused_by.is_empty() {
            let by: Vec<String> = self.refused_by.iter().map(|(k, v)| format!("{k} {v}")).collect();
            s.push_str(&format!("; refused: {}", by.join(", ")));
        }
        Some(s)
    }

    pub fn spreads(&self) -> PhaseSpreads {
        let s = |v: &Vec<u64>| Spread::of(&mut v.clone());
        PhaseSpreads {
            freeze: s(&self.freeze),
            blackout: s(&self.blackout),
            total: s(&self.total),
            client_rtt: s(&self.client_rtt),
            floor_blackout: s(&self.floor_blackout),
            floor_rtt: s(&self.floor_rtt),
            guest_freeze: s(&self.guest_freeze),
            verdict: s(&self.verdict),
            serialize: s(&self.serialize),
            thaw: s(&self.thaw),
            messaging: s(&self.messaging),
            fast_hold: s(&self.fast_hold),
            fast_checks: s(&self.fast_checks),
            fast_patch: s(&self.fast_patch),
            fast_release: s(&self.fast_release),
        }
    }
}

fn start_vm(cfg: &PhaseConfig) -> Result<(ChildVm, Session), SwitchBenchError> {
    let sock = super::scratch::path(&format!("switch-{}-{}.sock", cfg.load, cfg.vcpus));
    let mut vm_args: Vec<String> = ["--load", cfg.load, "--vcpus"].iter().map(|s| s.to_string()).collect();
    vm_args.push(cfg.vcpus.to_string());
    vm_args.extend(["--switch-timeout".to_string(), format!("{SWITCH_TIMEOUT_MS}ms")]);
    if let Some(cs) = cfg.cs_us {
        vm_args.extend(["--cs-us".to_string(), cs.to_string()]);
    }
    let vm = ChildVm::start(&sock, &vm_args)?;
    let session = vm.wait_ready(REPLY_LIMIT)?;
    Ok((vm, session))
}

/// Runs one phase; `progress` is called after each switch and round with
/// how many of the `2 * count` steps are done.
pub fn run_phase(cfg: &PhaseConfig, progress: &mut dyn FnMut(u32)) -> Result<Phase, SwitchBenchError> {
    let (_vm, mut s) = start_vm(cfg)?;
    let mut p = Phase::default();
    let lat = s.execute(json!({"execute": "query-latency"}), &mut |_| {})?;
    p.cs_us = lat["return"]["workload"]
        .as_str()
        .and_then(|w| w.split("cs ").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    let mut mode = "rt";
    let stop = || rtswitch::signals::interrupted();
    let half_gap = Duration::from_millis(cfg.gap_ms) / 2;
    for i in 0..cfg.count {
        if stop() {
            p.interrupted = true;
            break;
        }
        let t = Instant::now();
        let r = s.execute(json!({"execute": "set-mode", "arguments": {"mode": mode}}), &mut |_| {})?;
        let rtt = t.elapsed().as_micros() as u64;
        if let Some(ret) = r.get("return") {
            p.client_rtt.push(rtt);
            for (v, k) in [(&mut p.freeze, "freeze_us"), (&mut p.blackout, "blackout_us"), (&mut p.total, "total_us")] {
                v.push(ret[k].as_u64().unwrap_or(0));
            }
            p.fast += u64::from(ret["path"]["fast"] == true);
            if let Some(check) = ret["path"]["refused_by"].as_str() {
                // Bounded: the VMM's fixed check names.
                *p.refused_by.entry(check.chars().take(40).collect()).or_default() += 1;
            }
            push_present(
                &ret["path"]["blackout"],
                [
                    (&mut p.fast_hold, "hold_us"),
                    (&mut p.fast_checks, "checks_us"),
                    (&mut p.fast_patch, "patch_us"),
                    (&mut p.fast_release, "release_us"),
                ],
            );
            p.sites = ret["sites_patched"].as_u64().or(p.sites);
            p.sites_by_dimension = SiteCounts::from_reply(ret).or(p.sites_by_dimension);
            push_present(
                &ret["phases"],
                [
                    (&mut p.guest_freeze, "guest_freeze_us"),
                    (&mut p.verdict, "verdict_us"),
                    (&mut p.serialize, "serialize_us"),
                    (&mut p.thaw, "thaw_us"),
                    (&mut p.messaging, "messaging_us"),
                ],
            );
            mode = if mode == "rt" { "mainline" } else { "rt" };
        } else {
            let why = r["error"]["desc"].as_str().map_or_else(|| r.to_string(), str::to_string);
            p.failed.push(why);
        }
        progress(2 * i + 1);
        std::thread::sleep(half_gap);
        floor_round(&mut s, &mut p)?;
        progress(2 * i + 2);
        std::thread::sleep(half_gap);
    }
    let _ = s.execute(json!({"execute": "quit"}), &mut |_| {});
    Ok(p)
}

/// Appends each field of `obj` that the reply has (a fast switch has no
/// guest phases, a cooperative one no blackout steps) to its list.
fn push_present<const N: usize>(obj: &serde_json::Value, fields: [(&mut Vec<u64>, &str); N]) {
    for (list, key) in fields {
        if let Some(us) = obj[key].as_u64() {
            list.push(us);
        }
    }
}

/// One `x-pause-resume`: the floor's round trip and blackout.
fn floor_round(s: &mut Session, p: &mut Phase) -> Result<(), SwitchBenchError> {
    let t = Instant::now();
    let r = s.execute(json!({"execute": "x-pause-resume"}), &mut |_| {})?;
    p.floor_rtt.push(t.elapsed().as_micros() as u64);
    let us = r["return"]["blackout_us"]
        .as_u64()
        .ok_or_else(|| SwitchBenchError::Refused { what: "a pause+resume", reply: r.to_string() })?;
    p.floor_blackout.push(us);
    Ok(())
}

/// One row of a spread table: name, then min / p50 / p99 / max in ms.
pub fn spread_row(name: &str, s: Option<Spread>) -> Vec<String> {
    let ms = |us: u64| format!("{:.3}", us as f64 / 1e3);
    match s {
        Some(s) => vec![name.to_string(), ms(s.min_us), ms(s.p50_us), ms(s.p99_us), ms(s.max_us)],
        None => vec![name.to_string(), "-".into(), "-".into(), "-".into(), "-".into()],
    }
}
