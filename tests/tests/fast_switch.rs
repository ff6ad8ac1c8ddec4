//! The switch in one blackout (`vmm/src/switch/fast.rs`): with every vCPU
//! held once, the VMM proves from memory and registers that no task is
//! inside the code it changes, patches and releases; when a check fails
//! it changes nothing, names the check (the lock and its owner, the task
//! and its frame), and the cooperative switch runs as before.
//!
//! Each refusal is arranged by a guest fault that lasts until the VMM's
//! first cooperative request (the mailbox's request number moves only
//! then), so every fast hold finds it, however slow the host: a held lock
//! (`hold-lock` with `after-request`), a task stopped inside the lock
//! implementation (`park-in-lock`) or the voluntary preemption point's
//! (`park-in-preempt`), a task whose frame pointer is garbage
//! (`bad-frame`). The stress toggles as fast as a client can under the
//! device interrupt load, with the lock load (where a lock is held at
//! almost every instant, so most switches fall back) and with the CPU
//! load (where most take the fast path), bounded in time by what its
//! first switches took; every switch must succeed, the modes agree
//! (VMM, guest, site bytes), and the load's consistency check stays
//! clean.

use std::time::{Duration, Instant};

use rtswitch::api::client::Session;
use rtswitch_tests::SwitchRecord;
use rtswitch_tests::vm::{BackgroundVmm, assert_mode, check_switch_history, exec, other, set_mode, switch_records};
use serde_json::{Value, json};

/// The last `n` (at most 256) switch records of the run.
fn records(client: &mut Session, n: u64) -> Vec<SwitchRecord> {
    let r = exec(client, json!({"execute": "query-switches", "arguments": {"last": n.min(256)}}));
    switch_records(r["return"]["switches"].as_array().cloned().unwrap_or_else(|| panic!("{r}")))
}

fn totals(client: &mut Session) -> Value {
    let r = exec(client, json!({"execute": "query-switches", "arguments": {"last": 1}}));
    r["return"]["totals"].clone()
}

/// A generous deadline for the cooperative fallback: a busy host makes a
/// switch slow, not failed.
const SLOW_HOST: &str = "20s";

#[test]
fn idle_switches_take_the_fast_path() {
    let vmm = BackgroundVmm::start("fast-idle", &["--vcpus", "2", "--load", "none"]);
    let mut client = vmm.session();
    let mut mode = "mainline".to_string();
    for _ in 0..10 {
        let to = other(&mode);
        let r = set_mode(&mut client, to);
        assert_eq!(r["return"]["mode"], to, "{r}");
        mode = to.to_string();
        assert_mode(&mut client, &mode);
    }
    let recs = records(&mut client, 10);
    let (ok, failed, _) = check_switch_history(&recs, "mainline");
    assert_eq!((ok, failed), (10, 0));
    let fast: Vec<&SwitchRecord> = recs.iter().filter(|r| r.path.fast).collect();
    eprintln!("idle: {} of 10 switches took the fast path", fast.len());
    for r in &recs {
        assert!(r.path.holds >= 1, "the fast path was tried: {r:?}");
        if r.path.fast {
            assert!(r.path.refused.is_none() && r.timings.freeze_us == 0 && r.phases.is_none(), "{r:?}");
        } else {
            assert!(r.path.refused.is_some() && r.path.refused_by.is_some(), "a refusal says why: {r:?}");
        }
    }
    assert!(!fast.is_empty(), "no idle switch took the fast path: {recs:?}");
    assert_eq!(totals(&mut client)["fast"], fast.len(), "the totals count the fast switches");
    drop(client);
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
}

/// One switch with `fault` in place: the fast path refused by `check`,
/// saying `says`, and the fallback completed.
fn refused_then_cooperative(name: &str, fault: &[&str], ready: &str, check: &str, says: &[&str]) {
    let mut args = vec!["--vcpus", "2", "--load", "none", "--switch-timeout", SLOW_HOST];
    for f in fault {
        args.extend(["--guest-arg", f]);
    }
    let vmm = BackgroundVmm::start(name, &args);
    vmm.wait_for_output(ready, Duration::from_secs(30), "the fault never started");
    let mut client = vmm.session();
    let r = set_mode(&mut client, "rt");
    assert_eq!(r["return"]["mode"], "rt", "the fallback completes: {r}\n{}", vmm.output());
    assert_mode(&mut client, "rt");
    let rec = records(&mut client, 1).pop().expect("a record");
    assert!(!rec.path.fast, "{rec:?}");
    assert_eq!(rec.path.refused_by.as_deref(), Some(check), "{rec:?}");
    let why = rec.path.refused.clone().unwrap_or_default();
    for s in says {
        assert!(why.contains(s), "the refusal names {s:?}: {why}");
    }
    assert!(rec.timings.freeze_us > 0, "the cooperative switch ran: {rec:?}");
    assert_eq!(totals(&mut client)["fast_refused_by"][check], 1);
    drop(client);
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_held_lock_refuses_the_fast_path_naming_it_and_its_owner() {
    refused_then_cooperative(
        "fast-held",
        &["hold-lock=100", "after-request"],
        "'lock-hog' holds its lock",
        "lock-word",
        &["lock 'fault.hog' is held by task 'lock-hog'"],
    );
}

#[test]
fn a_task_inside_the_lock_implementation_refuses_the_fast_path() {
    refused_then_cooperative(
        "fast-park",
        &["park-in-lock"],
        "'impl-park' parked in the lock implementation",
        "in-switched-code",
        &["task 'impl-park' is inside", "lock", "mainline"],
    );
}

#[test]
fn a_task_inside_the_unlock_implementation_refuses_the_fast_path() {
    refused_then_cooperative(
        "fast-park-unlock",
        &["park-in-unlock"],
        "'impl-park' parked in the unlock implementation",
        "in-switched-code",
        &["task 'impl-park' is inside", "unlock", "mainline"],
    );
}

#[test]
fn a_task_inside_a_preemption_point_refuses_the_fast_path() {
    refused_then_cooperative(
        "fast-park-preempt",
        &["park-in-preempt"],
        "'impl-park' parked in the preemption point implementation",
        "in-switched-code",
        &["task 'impl-park' is inside", "resched"],
    );
}

#[test]
fn an_unreliable_stack_refuses_the_fast_path_naming_the_task() {
    refused_then_cooperative(
        "fast-badfp",
        &["bad-frame"],
        "'bad-frame' runs with a corrupted frame pointer",
        "unreliable-stack",
        &["task 'bad-frame' has an unreliable stack", "0x1234"],
    );
}

/// What the issue asks for; the budget may allow fewer.
const STRESS_SWITCHES: usize = 10_000;

/// Toggles `set-mode` under `load` and 2000 device interrupts a second
/// per vCPU, [`STRESS_SWITCHES`] times or until `budget` has passed
/// (on this host: 10,000 under the CPU load in about 13 s, about 300 a
/// second under the lock load), checking every reply and, at the end, the
/// history, the modes and the load's consistency. Returns (switches, fast
/// ones).
fn stress(load: &str, budget: Duration) -> (usize, u64) {
    let vmm = BackgroundVmm::start(
        &format!("fast-stress-{load}"),
        &["--vcpus", "2", "--load", load, "--irq-load", "2000", "--switch-timeout", SLOW_HOST],
    );
    let mut client = vmm.session();
    let mut mode = "mainline";
    let started = Instant::now();
    let mut done = 0;
    while done < STRESS_SWITCHES && (done < 20 || started.elapsed() < budget) {
        let to = other(mode);
        let r = set_mode(&mut client, to);
        assert_eq!(r["return"]["mode"], to, "switch #{} failed: {r}\n{}", done + 1, vmm.output());
        mode = to;
        done += 1;
    }
    assert_mode(&mut client, mode);
    let t = totals(&mut client);
    assert_eq!((t["completed"].as_u64(), t["failed"].as_u64()), (Some(done as u64), Some(0)), "{t}");
    let recs = records(&mut client, 256);
    let boot = if recs.first().is_some_and(|r| r.seq == 1) { "mainline" } else { "" };
    check_switch_history(&recs, boot);
    let fast = t["fast"].as_u64().unwrap_or(0);
    eprintln!(
        "stress under the {load} load: {done} switches of {STRESS_SWITCHES} asked for in {:.1} s (budget {} s), {fast} \
         fast; refusals {}",
        started.elapsed().as_secs_f64(),
        budget.as_secs(),
        t["fast_refused_by"]
    );
    drop(client);
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
    if load == "locks" {
        assert!(out.contains("load check: ok") && out.contains(" 0 violations"), "{out}");
    }
    (done, fast)
}

#[test]
fn many_switches_under_load_and_device_interrupts_keep_every_invariant() {
    stress("locks", Duration::from_secs(40));
    let (_, fast) = stress("cpu", Duration::from_secs(20));
    assert!(fast > 0, "no switch took the fast path under the CPU load");
}
