//! No exit between a timer interrupt and the thread it wakes: the guest
//! counts every operation that exits to the hypervisor, per CPU and cause,
//! and files with each activation those made between the serving timer
//! interrupt's entry and the thread running (docs/latency.md, "exits per
//! activation"). The kernel keeps that path free of exits
//! (`guest/src/logic/clockevent.rs`): no timer re-arm and no EOI before
//! the woken thread, which no sleeper outranks, leaves the CPU; an idle
//! CPU serves its own deadline. Before that rule the path held 1.4 to 3.1
//! exits per activation on this project's host (a timer write and an EOI).
//!
//! Counts, not times: a busy host stretches the path but adds no exit to
//! it. The bound leaves room for an interrupt of another kind landing on
//! the path now and then (its EOI counts), never for one per activation.

use std::time::Duration;

use rtswitch::report::exits::Exits;
use rtswitch_tests::{ExitCode, Scratch, read_report, require_kvm, run_rtswitch};

const LIMIT: Duration = Duration::from_secs(60);
/// At most this many exits per activation between the timer interrupt
/// and the thread.
const PATH_BOUND: f64 = 0.05;

/// Runs 2 s with `args` and returns epoch 0's all-CPU exits, its samples,
/// and the per-CPU exits.
fn exits_of(name: &str, args: &[&str]) -> (Exits, u64, Vec<Exits>, String) {
    require_kvm();
    let dir = Scratch::new(&format!("exits-{name}"));
    let json = dir.0.join("run.json");
    let mut all = vec!["run", "--vcpus", "2", "--duration", "2", "--serial", "none", "--json", json.to_str().unwrap()];
    all.extend_from_slice(args);
    let r = run_rtswitch(&all, LIMIT);
    r.assert_code(ExitCode::Ok);
    let v = read_report(&json, &r.stderr);
    let e = &v.epochs[0];
    let cpus = e.cpus.as_ref().expect("per-CPU figures").iter().map(|c| c.exits.clone()).collect();
    (e.all.exits.clone(), e.all.samples, cpus, r.stderr)
}

fn check(name: &str, args: &[&str]) {
    let (all, samples, cpus, stderr) = exits_of(name, args);
    assert!(samples >= 100, "{name}: only {samples} activations:\n{stderr}");
    // The counters count: every activation's thread armed the timer once
    // for its next deadline (or an earlier sleeper's arming served it).
    assert!(all.total.timer * 2 >= samples, "{name}: {} timer writes for {samples} activations", all.total.timer);
    // The all-CPU figure is the CPUs' sum.
    let sum: u64 = cpus.iter().map(|c| c.total.total()).sum();
    assert_eq!(all.total.total(), sum, "{name}: all = sum of the CPUs");
    let path = all.irq_to_thread_per_activation.expect("activations");
    assert!(
        path <= PATH_BOUND,
        "{name}: {path:.2} exits per activation between the timer interrupt and the thread ({:?}), at most \
         {PATH_BOUND} expected",
        all.irq_to_thread
    );
    let line = stderr.lines().find(|l| l.contains("epoch 0 exits per activation:")).expect("summary line");
    assert!(line.ends_with("between the timer IRQ and the thread: 0") || line.contains("thread: 0.0"), "{line}");
}

#[test]
fn no_exit_between_the_timer_and_a_busy_cpus_thread_in_rt() {
    check("rt-cpu", &["--profile", "rt", "--load", "cpu"]);
}

#[test]
fn no_exit_between_the_timer_and_a_busy_cpus_thread_in_mainline() {
    check("mainline-cpu", &["--profile", "mainline", "--load", "cpu"]);
}

#[test]
fn no_exit_between_the_timer_and_an_idle_cpus_thread_under_each_idle_policy() {
    for policy in ["haltpoll", "halt", "poll"] {
        let profile = format!("rt,idle={policy}");
        check(&format!("idle-{policy}"), &["--profile", &profile, "--load", "none"]);
    }
}

/// The idle policy is a profile dimension, switched at run time with the
/// rest of the mode: a run that boots `rt,idle=halt` and toggles to
/// `rt,idle=poll` halts its idle CPUs in the halt epochs (a shim entry per
/// activation, the halt) and never in the poll epochs. Counts, not
/// times: a busy host changes neither.
#[test]
fn the_idle_policy_switches_at_run_time() {
    require_kvm();
    let dir = Scratch::new("exits-idle-switch");
    let json = dir.0.join("run.json");
    let r = run_rtswitch(
        &[
            "run",
            "--vcpus",
            "2",
            "--duration",
            "4",
            "--serial",
            "none",
            "--load",
            "none",
            "--profile",
            "rt,idle=halt",
            "--switch-every",
            "700",
            "--switch-to",
            "rt,idle=poll",
            "--json",
            json.to_str().unwrap(),
        ],
        LIMIT,
    );
    r.assert_code(ExitCode::Ok);
    let v = read_report(&json, &r.stderr);
    assert!(v.switch_totals.completed >= 2 && v.switch_totals.failed == 0, "{:?}\n{}", v.switch_totals, r.stderr);
    let shim_per_activation = |mode: &str| {
        let m =
            v.modes.iter().find(|m| m.mode == mode).unwrap_or_else(|| panic!("no figures in {mode}:\n{}", r.stderr));
        assert!(m.samples >= 100, "{mode}: only {} activations", m.samples);
        m.exits.total.shim as f64 / m.samples as f64
    };
    let halt = shim_per_activation("rt,idle=halt");
    let poll = shim_per_activation("rt,idle=poll");
    assert!(halt >= 0.5, "rt,idle=halt: {halt:.2} shim entries (halts) per activation, at least 0.5 expected");
    assert!(poll <= 0.05, "rt,idle=poll: {poll:.2} shim entries per activation, none expected");
}
