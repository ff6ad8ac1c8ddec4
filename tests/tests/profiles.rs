//! The whole RT personality: profiles over the lock
//! implementation, the preemption model, interrupt threading and the idle
//! policy, at boot and at runtime, under the lock load and the device
//! interrupt load.
//!
//! - a boot in any profile patches every dimension and runs as it says
//!   (the guest's self-tests observe the preemption model; the device
//!   interrupts are handled where the irq dimension says);
//! - `set-mode` and `ctl mode` switch between any two profiles, and refuse
//!   a spelling that is none with the item named;
//! - random profile switches under load keep every invariant of the lock
//!   switch's stress test: every request answered and recorded in order,
//!   the VMM's, the guest's and the site bytes' profile agree, the load's
//!   lock invariants hold, no device interrupt is lost, and every epoch
//!   names a valid profile.
//!
//! `RTSWITCH_PROFILE_SWITCHES=N` sets the number of random switches
//! (default 200).

use std::time::Duration;

use rtswitch::api::client::Session;
use rtswitch_tests::vm::{BackgroundVmm, exec, set_mode};
use rtswitch_tests::{ExitCode, Rng, require_kvm, run_rtswitch};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(120);

/// Every profile, spelled out independently of the VMM's own table.
fn all_profiles() -> Vec<String> {
    let mut v = Vec::new();
    for idle in ["haltpoll", "halt", "poll"] {
        for locks in ["mainline", "rt"] {
            for preempt in ["none", "voluntary", "full"] {
                for irq in ["hard", "threaded"] {
                    v.push(canonical(locks, preempt, irq, idle));
                }
            }
        }
    }
    v
}

/// The name the VMM reports: the two named profiles by name, the idle
/// policy only when it is not the default.
fn canonical(locks: &str, preempt: &str, irq: &str, idle: &str) -> String {
    let base = match (locks, preempt, irq) {
        ("mainline", "voluntary", "hard") => "mainline".into(),
        ("rt", "full", "threaded") => "rt".into(),
        _ => format!("locks={locks},preempt={preempt},irq={irq}"),
    };
    if idle == "haltpoll" { base } else { format!("{base},idle={idle}") }
}

/// `query-mode`: the VMM's, the site bytes' and the guest's profile all
/// equal `expected`, and the structured profile spells it.
fn assert_profile(s: &mut Session, expected: &str) {
    let m = exec(s, json!({"execute": "query-mode"}));
    let r = &m["return"];
    assert_eq!(r["mode"], expected, "VMM profile: {m}");
    assert_eq!(r["sites_mode"], expected, "site bytes disagree with the profile: {m}");
    assert_eq!(r["guest_mode"], expected, "guest disagrees: {m}");
    let p = &r["profile"];
    let spelled = canonical(
        p["locks"].as_str().unwrap_or("?"),
        p["preempt"].as_str().unwrap_or("?"),
        p["irq"].as_str().unwrap_or("?"),
        p["idle"].as_str().unwrap_or("?"),
    );
    assert_eq!(spelled, expected, "{m}");
}

/// The `device interrupts` line: (raised per vCPU, taken, hard, threaded, unhandled).
fn irq_line(out: &str) -> (u64, u64, u64, u64, u64) {
    let line = out.lines().find(|l| l.contains("device interrupts (--irq-load")).expect("the device interrupt line");
    let num_after = |key: &str| -> u64 {
        let at = line.find(key).unwrap_or_else(|| panic!("'{key}' in {line}"));
        let rest = &line[at + key.len()..];
        rest.trim_start().split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).expect(key)
    };
    let before = |key: &str| -> u64 {
        let at = line.find(key).unwrap_or_else(|| panic!("'{key}' in {line}"));
        line[..at].trim_end().rsplit(' ').next().and_then(|n| n.parse().ok()).expect(key)
    };
    (
        num_after("raised"),
        num_after("the guest took"),
        before("handled in hard-IRQ context"),
        before("by handler threads"),
        before("not yet handled"),
    )
}

#[test]
fn a_boot_in_any_profile_runs_as_it_says() {
    require_kvm();
    for (profile, threaded) in [("locks=rt,preempt=full,irq=threaded", true), ("preempt=none", false)] {
        let r = run_rtswitch(
            &["run", "--vcpus", "2", "--profile", profile, "--irq-load", "500,20", "--duration", "1.5", "--quiet"],
            LIMIT,
        );
        r.assert_code(ExitCode::Ok);
        let name = if profile.starts_with("locks=rt") { "rt" } else { "locks=mainline,preempt=none,irq=hard" };
        r.assert_contains(&format!("mode {name}:"));
        let (raised, took, hard, thr, left) = irq_line(&r.stderr);
        assert!(raised > 0 && took > 0, "no device interrupts: {}", r.stderr);
        assert_eq!(hard + thr + left, took, "every interrupt taken is handled or pending: {}", r.stderr);
        if threaded {
            assert!(thr > 0 && hard == 0, "threaded: handled by the threads only: {}", r.stderr);
        } else {
            assert!(hard > 0 && thr == 0, "hard: handled in the handler only: {}", r.stderr);
        }
    }
}

#[test]
fn the_self_tests_observe_the_preemption_model() {
    require_kvm();
    for profile in ["mainline", "rt", "locks=rt,preempt=none,irq=threaded", "locks=mainline,preempt=full"] {
        let r = run_rtswitch(&["run", "--vcpus", "2", "--selftest", "--profile", profile], LIMIT);
        r.assert_code(ExitCode::Ok)
            .assert_contains("test preemption model in force ... ok")
            .assert_contains(" 0 failed");
    }
}

#[test]
fn set_mode_and_ctl_switch_between_any_two_profiles() {
    require_kvm();
    // A generous quiesce deadline: a busy host makes a switch slow, not failed.
    let vmm = BackgroundVmm::start(
        "profiles-ctl",
        &["--vcpus", "2", "--load", "locks", "--irq-load", "1000,10", "--switch-timeout", "20s"],
    );
    let mut s = vmm.session();
    assert_profile(&mut s, "mainline");
    let r = set_mode(&mut s, "locks=rt,preempt=none");
    assert_eq!(r["return"]["mode"], "locks=rt,preempt=none,irq=hard", "{r}");
    assert_profile(&mut s, "locks=rt,preempt=none,irq=hard");
    // ctl, the user's client.
    let sock = vmm.sock.to_str().expect("utf-8 path");
    let out = run_rtswitch(&["ctl", "--api-sock", sock, "mode", "irq=threaded,preempt=full,locks=mainline"], LIMIT);
    assert_eq!(out.code(), Some(0), "{}", out.all_output());
    assert!(out.stdout.contains("locks=mainline,preempt=full,irq=threaded"), "{}", out.all_output());
    assert_profile(&mut s, "locks=mainline,preempt=full,irq=threaded");
    // A named profile changed in one dimension: the idle policy.
    let r = set_mode(&mut s, "rt,idle=poll");
    assert_eq!(r["return"]["mode"], "rt,idle=poll", "{r}");
    assert_profile(&mut s, "rt,idle=poll");
    let r = set_mode(&mut s, "locks=mainline,preempt=full,irq=threaded");
    assert_profile(&mut s, "locks=mainline,preempt=full,irq=threaded");
    assert_eq!(r["return"]["changed"], true, "{r}");
    // Refused spellings name the bad item; nothing changes.
    let bad = set_mode(&mut s, "locks=rt,preempt=always");
    let desc = bad["error"]["desc"].as_str().unwrap_or("");
    assert!(desc.contains("'preempt=always'") && desc.contains("none, voluntary, full"), "{bad}");
    let out = run_rtswitch(&["ctl", "--api-sock", sock, "mode", "fast"], LIMIT);
    assert_ne!(out.code(), Some(0));
    assert!(out.stderr.contains("'fast'"), "{}", out.all_output());
    assert_profile(&mut s, "locks=mainline,preempt=full,irq=threaded");
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
}

#[test]
fn random_profile_switches_under_load_keep_every_invariant() {
    require_kvm();
    let n: usize = std::env::var("RTSWITCH_PROFILE_SWITCHES").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1;
    eprintln!("random profile switches: seed {seed:#x}");
    let mut rng = Rng(seed);
    let profiles = all_profiles();
    let vmm = BackgroundVmm::start(
        "profiles-stress",
        &[
            "--vcpus",
            "2",
            "--load",
            "locks",
            "--cs-us",
            "20",
            "--interval-us",
            "5000",
            "--irq-load",
            "1000,10",
            "--switch-timeout",
            "20s",
            "--vcpu-stop-timeout",
            "5s",
        ],
    );
    let mut s = vmm.session();
    assert_profile(&mut s, "mainline");
    let mut mode = "mainline".to_string();
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut requests: Vec<(String, String, bool)> = Vec::with_capacity(n);
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..n {
        let target = loop {
            let t = &profiles[rng.below(profiles.len() as u64) as usize];
            if *t != mode {
                break t.clone();
            }
        };
        let r = set_mode(&mut s, &target);
        if r["return"]["mode"] == target.as_str() {
            assert_eq!(r["return"]["changed"], true, "#{i} {mode} -> {target}: {r}");
            requests.push((mode.clone(), target.clone(), true));
            seen.insert(target.clone());
            mode = target;
            ok += 1;
        } else {
            let desc = r["error"]["desc"].as_str().unwrap_or("");
            assert!(desc.contains("nothing was patched"), "#{i} {mode} -> {target} failed without saying why: {r}");
            requests.push((mode.clone(), target.clone(), false));
            failed += 1;
        }
        if i % 25 == 24 {
            assert_profile(&mut s, &mode);
        }
    }
    assert_profile(&mut s, &mode);
    assert!(failed * 20 <= n, "more than 5% of the switches failed ({failed} of {n}):\n{}", vmm.output());
    assert!(seen.len() >= 8.min(n / 4), "the schedule reached only {} profiles: {seen:?}", seen.len());

    // The VMM's history: one record per request, in order, each the
    // request's from -> to, successes chaining.
    let history = s.switch_list().expect("query-switches pages");
    assert_eq!(history.totals["recorded"], json!(n), "{}", history.totals);
    let list = history.records;
    let skip = n - list.len();
    for (r, (from, to, success)) in list.iter().zip(requests.iter().skip(skip)) {
        assert_eq!(r["from"], from.as_str(), "{r}");
        assert_eq!(r["to"], to.as_str(), "{r}");
        assert_eq!(r["ok"], *success, "{r}");
        if *success {
            // Every site is rewritten (with its own bytes where its
            // dimension did not change: a switch of the idle policy alone
            // checks and rewrites them all too).
            assert!(r["sites_patched"].as_u64().unwrap_or(0) > 0, "{r}");
        } else {
            assert_eq!(r["sites_patched"], 0, "a failed switch patched sites: {r}");
        }
    }

    let (code, out, report) = vmm.quit();
    assert_eq!(code, 0, "the run did not end cleanly:\n{out}");
    assert!(out.contains("load check: ok"), "lock invariants:\n{out}");
    let report = report.unwrap_or_else(|| panic!("no --json report:\n{out}"));
    let lc = &report.load_check;
    assert_eq!((lc.result.as_str(), lc.violations), ("ok", Some(0)), "{lc:?}");
    assert_eq!(lc.final_tally, lc.final_locked_total, "lost or duplicated updates: {lc:?}");
    // No device interrupt lost: each one taken was handled, in hard-IRQ
    // context or by a thread (or still pending at the stop).
    let (_, took, hard, thr, left) = irq_line(&out);
    assert!(took > 0 && hard > 0, "{out}");
    assert_eq!(hard + thr + left, took, "{out}");
    let irq = report.irq_load.as_ref().expect("irq_load in the report");
    assert_eq!(irq.cpus.iter().map(|c| c.received).sum::<u64>(), took, "{irq:?}");
    assert_eq!(irq.cpus.iter().map(|c| c.hard).sum::<u64>(), hard, "{irq:?}");
    // Every epoch names a profile.
    let valid: std::collections::BTreeSet<String> = all_profiles().into_iter().collect();
    for e in &report.epochs {
        assert!(valid.contains(&e.mode), "epoch {} with an unknown profile {}", e.index, e.mode);
    }
    eprintln!(
        "{n} random profile switches ({ok} ok, {failed} failed) over {} profiles; {took} device interrupts: {hard} hard, \
         {thr} threaded",
        seen.len()
    );
}
