//! Switch stress: many runtime switches under the lock load, then an audit
//! of everything that must hold after them.
//!
//! - every switch accounted for: `query-switches` (and the JSON report) hold
//!   one record per request, numbered in order, each a success or a failure
//!   with a reason; the client saw the same successes and failures;
//! - the load's invariants intact (`load check: ok`, the JSON's load_check);
//! - the guest's mode, the VMM's mode and the site bytes agree, and equal
//!   the last successful switch;
//! - latency samples continuous: per CPU, samples + missed periods over all
//!   epochs match the elapsed periods;
//! - no deadlock: every request is answered (each wait has a deadline), a
//!   second client's `query-status` is answered throughout, and the run ends
//!   by `quit` with exit code 0 and no socket file left behind.
//!
//! Sizes are small enough for CI. `RTSWITCH_STRESS_SWITCHES=N` sets the
//! number of client-driven switches of the 2-vCPU run (default 1000; the
//! 4-vCPU run does a tenth of it), e.g. for a longer run outside CI:
//! `RTSWITCH_STRESS_SWITCHES=20000 cargo test --release -p rtswitch-tests --test stress -- --nocapture`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rtswitch::report::json::Cpu;
use rtswitch_tests::Rng;
use rtswitch_tests::RunReport;
use rtswitch_tests::vm::{BackgroundVmm, assert_mode, check_switch_history, exec, other, set_mode, switch_records};
use serde_json::json;

/// A small critical section and a 5 ms period keep a switch near 70 ms on
/// a slow or busy host; still two lock-taking threads per CPU.
/// The stress VMs run one at a time: on a 2-core host, three of them at
/// once (8 vCPUs) only measure the host's time slicing.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serialize() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

// Generous quiesce and vCPU-stop deadlines: a slow host makes switches
// slow, not failed.
const LOAD: &[&str] = &[
    "--load",
    "locks",
    "--cs-us",
    "20",
    "--interval-us",
    "5000",
    "--load-threads",
    "2",
    "--switch-timeout",
    "20s",
    "--vcpu-stop-timeout",
    "5s",
];

fn stress_switches() -> usize {
    std::env::var("RTSWITCH_STRESS_SWITCHES").ok().and_then(|s| s.parse().ok()).unwrap_or(1000)
}

/// What a client-driven run did.
struct Tally {
    requested: usize,
    succeeded: usize,
    failed: usize,
    status_queries: u64,
}

/// Boots `vcpus` vCPUs under the lock load and toggles the mode `switches`
/// times with back-to-back `set-mode`s, auditing as it goes and at the end.
fn client_toggles(name: &str, vcpus: u32, switches: usize) -> Tally {
    let vcpus_arg = vcpus.to_string();
    let mut args = vec!["--vcpus", vcpus_arg.as_str(), "--mode", "mainline"];
    args.extend_from_slice(LOAD);
    let vmm = BackgroundVmm::start(name, &args);
    let started = Instant::now();
    let mut s = vmm.session();
    assert_mode(&mut s, "mainline");

    let stop = AtomicBool::new(false);
    let status_queries = AtomicU64::new(0);
    let mut tally = Tally { requested: 0, succeeded: 0, failed: 0, status_queries: 0 };
    let mut mode = "mainline";
    std::thread::scope(|scope| {
        // A second client: the VMM must answer it throughout.
        scope.spawn(|| {
            let mut watcher = vmm.session();
            while !stop.load(Ordering::Relaxed) {
                let st = exec(&mut watcher, json!({"execute": "query-status"}));
                assert_eq!(st["return"]["running"], true, "{st}");
                status_queries.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let _stop_on_exit = StopOnDrop(&stop);
        for i in 0..switches {
            let target = other(mode);
            let r = set_mode(&mut s, target);
            tally.requested += 1;
            if r["return"]["mode"] == target {
                assert_eq!(r["return"]["changed"], true, "{r}");
                tally.succeeded += 1;
                mode = target;
            } else {
                let desc = r["error"]["desc"].as_str().unwrap_or("");
                assert!(desc.contains("nothing was patched"), "switch #{} failed without saying why: {r}", i + 1);
                tally.failed += 1;
            }
            if i % 100 == 99 {
                assert_mode(&mut s, mode);
            }
        }
    });
    tally.status_queries = status_queries.load(Ordering::Relaxed);
    assert!(tally.status_queries > 0, "the watcher never got an answer");

    // Every switch accounted for, as the VMM saw them.
    let final_mode = assert_mode(&mut s, mode);
    let history = s.switch_list().expect("query-switches pages");
    let list = switch_records(history.records);
    let recorded = history.totals["recorded"].as_u64().expect("totals.recorded") as usize;
    assert_eq!(recorded, tally.requested, "requested {} switches; the VMM recorded {recorded}", tally.requested);
    assert_eq!(list.len() as u64 + history.totals["forgotten"].as_u64().unwrap_or(0), recorded as u64);
    let (ok, failed, last) = check_switch_history(&list, "mainline");
    let (ok, failed) = if list.len() == recorded {
        (ok, failed)
    } else {
        let t = &history.totals;
        (t["completed"].as_u64().unwrap_or(0) as usize, t["failed"].as_u64().unwrap_or(0) as usize)
    };
    assert_eq!((ok, failed), (tally.succeeded, tally.failed), "the history and the replies disagree");
    assert_eq!(last, mode, "the mode is not the last successful switch's: {final_mode}");
    assert!(
        tally.failed * 20 <= tally.requested,
        "more than 5% of the switches failed ({} of {}):\n{}",
        tally.failed,
        tally.requested,
        vmm.output()
    );
    let elapsed = started.elapsed();

    let (code, out, report) = vmm.quit();
    assert_eq!(code, 0, "the run did not end cleanly:\n{out}");
    assert!(out.contains("load check: ok"), "lock invariants:\n{out}");
    let report = report.unwrap_or_else(|| panic!("no JSON report\n{out}"));
    audit_report(&report, tally.requested, tally.succeeded);
    eprintln!(
        "{name}: {vcpus} vCPUs, {} switches ({} ok, {} failed) in {:.1} s; {} status queries answered meanwhile",
        tally.requested,
        tally.succeeded,
        tally.failed,
        elapsed.as_secs_f64(),
        tally.status_queries
    );
    tally
}

/// Sets the flag when dropped (also when the test panics), so the
/// watcher thread ends and the scope can join it.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The `--json` report of a client-driven run: switches, load check,
/// sample continuity.
fn audit_report(report: &RunReport, requested: usize, succeeded: usize) {
    let switches = &report.switches;
    let totals = &report.switch_totals;
    assert_eq!(totals.recorded, requested as u64, "JSON switch count: {totals:?}");
    assert_eq!(totals.completed, succeeded as u64, "JSON completed count: {totals:?}");
    assert_eq!(switches.len() as u64 + totals.forgotten, requested as u64);
    check_switch_history(switches, "mainline");
    let lc = &report.load_check;
    assert_eq!(lc.result, "ok", "{lc:?}");
    assert_eq!(lc.violations, Some(0), "{lc:?}");
    assert_eq!(lc.final_check.as_deref(), Some("ok"), "{lc:?}");
    assert_eq!(lc.final_tally, lc.final_locked_total, "lost or duplicated updates: {lc:?}");
    assert!(lc.load_ops.unwrap_or(0) > 0, "the load never ran: {lc:?}");
    check_sample_continuity(report);
}

/// Per CPU, over every closed epoch: samples + missed periods == the
/// periods that elapsed from the first epoch's start to the last closed
/// epoch's end, within 5% and two periods (a sample goes to the epoch
/// that holds its deadline, so only the two ends can split a period: the
/// first deadline comes after the first epoch opens, the last may fall
/// past the last one's end; a run of fast switches can close its epochs
/// within 16 periods, where 5% alone is less than one).
fn check_sample_continuity(report: &RunReport) {
    let tsc_khz = f64::from(report.host.tsc_khz);
    let interval_us = f64::from(report.config.interval_us.expect("interval_us"));
    let closed: Vec<_> = report.epochs.iter().filter(|e| e.end_tsc.is_some()).collect();
    assert!(closed.len() >= 2, "too few closed epochs: {}", closed.len());
    let first = closed.iter().map(|e| e.start_tsc).min().expect("start");
    let last = closed.iter().filter_map(|e| e.end_tsc).max().expect("end");
    let periods = (last - first) as f64 / tsc_khz * 1000.0 / interval_us;
    let closed: Vec<&[Cpu]> = closed.iter().map(|e| e.cpus.as_deref().expect("cpus")).collect();
    for cpu in 0..closed[0].len() {
        let counted: u64 = closed.iter().map(|cpus| cpus.get(cpu).map_or(0, |c| c.samples + c.missed)).sum();
        let slack = 2.0 + 0.05 * periods;
        assert!(
            (counted as f64 - periods).abs() <= slack,
            "cpu {cpu}: {counted} samples + missed over {} epochs, but {periods:.0} periods elapsed",
            closed.len()
        );
    }
}

#[test]
fn a_thousand_toggles_from_a_client_on_two_vcpus() {
    let _one = serialize();
    let n = stress_switches();
    let t = client_toggles("stress2", 2, n);
    assert_eq!(t.requested, n);
}

#[test]
fn toggles_on_four_overcommitted_vcpus() {
    let _one = serialize();
    let n = (stress_switches() / 10).max(20);
    let t = client_toggles("stress4", 4, n);
    assert_eq!(t.requested, n);
}

/// `--switch-every` toggles on a timer while a client races it with a
/// random schedule of queries, `reset-latency`, its own `set-mode`s (busy,
/// no-op or real) and disconnects in the middle of a switch; a switch is
/// also requested during boot and during shutdown. The race runs 8 s and
/// on until 20 switches have completed (however slow the host makes
/// them), bounded by [`RACE_LIMIT`].
/// Completed switches the race runs for at least.
const RACE_SWITCHES: u64 = 20;
/// Bound on the race (a hang guard: 20 switches take a second or two).
const RACE_LIMIT: Duration = Duration::from_secs(120);

#[test]
fn switch_every_races_with_a_random_client() {
    let _one = serialize();
    let seed: u64 =
        std::env::var("RTSWITCH_STRESS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_cafe_f00d_d00d);
    let mut args = vec!["--vcpus", "2", "--switch-every", "40"];
    args.extend_from_slice(LOAD);
    let vmm = BackgroundVmm::spawn("every", &args);

    // During boot: refused as booting, or (if the guest was quicker) done.
    let start = Instant::now();
    while !vmm.sock.exists() {
        vmm.assert_alive("booting");
        assert!(start.elapsed() < Duration::from_secs(60), "no socket:\n{}", vmm.output());
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut s = vmm.session();
    let r = set_mode(&mut s, "rt");
    let desc = r["error"]["desc"].as_str().unwrap_or("");
    assert!(
        r["return"].is_object() || desc.contains("booting") || desc.contains("in progress"),
        "a switch during boot: {r}"
    );
    vmm.wait_ready();

    let mut rng = Rng(seed);
    let (mut busy, mut real, mut noop, mut resets, mut abandoned, mut queries) = (0, 0, 0, 0, 0, 0);
    let run_for = Duration::from_secs(8);
    let t0 = Instant::now();
    let completed = |s: &mut rtswitch::api::client::Session| {
        let r = exec(s, json!({"execute": "query-switches", "arguments": {"last": 1}}));
        r["return"]["totals"]["completed"].as_u64().unwrap_or(0)
    };
    while t0.elapsed() < run_for || completed(&mut s) < RACE_SWITCHES {
        assert!(t0.elapsed() < RACE_LIMIT, "{RACE_SWITCHES} switches never completed:\n{}", vmm.output());
        match rng.below(10) {
            0..=3 => {
                let cmd = ["query-status", "query-mode", "query-latency", "query-switches"][rng.below(4) as usize];
                let r = exec(&mut s, json!({ "execute": cmd }));
                assert!(r["return"].is_object(), "{cmd}: {r}");
                queries += 1;
            }
            4 => {
                let r = exec(&mut s, json!({"execute": "reset-latency"}));
                assert!(r["return"].is_object(), "reset-latency: {r}");
                resets += 1;
            }
            5..=7 => {
                let target = if rng.below(2) == 0 { "rt" } else { "mainline" };
                let r = set_mode(&mut s, target);
                let desc = r["error"]["desc"].as_str().unwrap_or("");
                if r["return"]["changed"] == false {
                    noop += 1;
                } else if r["return"]["changed"] == true {
                    real += 1;
                } else if desc.contains("in progress") {
                    busy += 1;
                } else {
                    assert!(desc.contains("nothing was patched"), "set-mode {target}: {r}");
                }
            }
            _ => {
                // Ask for a switch and leave at once.
                use std::io::Write;
                let mut raw = std::os::unix::net::UnixStream::connect(&vmm.sock).expect("connect");
                let _ = raw.write_all(
                    b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"set-mode\",\"arguments\":{\"mode\":\"rt\"}}\n",
                );
                drop(raw);
                abandoned += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.below(30)));
    }

    // A moment with no switch in progress: the modes agree with the history.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st1 = exec(&mut s, json!({"execute": "query-status"}));
        let h = s.switch_list().expect("query-switches pages");
        let m = exec(&mut s, json!({"execute": "query-mode"}));
        let st2 = exec(&mut s, json!({"execute": "query-status"}));
        let list = switch_records(h.records);
        let recorded = &h.totals["recorded"];
        if st1["return"]["switching"].is_null()
            && m["return"]["switching"].is_null()
            && &st1["return"]["switches"] == recorded
            && &st2["return"]["switches"] == recorded
        {
            let (_, _, last) = check_switch_history(&list, "mainline");
            assert_eq!(m["return"]["mode"], last.as_str(), "{m}");
            assert_eq!(m["return"]["sites_mode"], last.as_str(), "{m}");
            assert_eq!(m["return"]["guest_mode"], last.as_str(), "{m}");
            break;
        }
        assert!(Instant::now() < deadline, "never saw a moment without a switch in progress");
        std::thread::sleep(Duration::from_millis(5));
    }

    // During shutdown: refused, or the connection closes cleanly.
    let mut late = vmm.session();
    let q = exec(&mut s, json!({"execute": "quit"}));
    assert!(q["return"].is_object(), "{q}");
    match late.execute(json!({"execute": "set-mode", "arguments": {"mode": "rt"}}), &mut |_| {}) {
        Ok(r) => {
            let desc = r["error"]["desc"].as_str().unwrap_or("");
            assert!(desc.contains("shutting down") || r["return"].is_object(), "a switch during shutdown: {r}");
        }
        Err(rtswitch::api::client::ClientError::Closed) => {}
        Err(e) => panic!("a switch during shutdown: {e}"),
    }
    drop(late);
    let (code, out, report) = vmm.quit_after_request();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("load check: ok"), "{out}");
    let report = report.unwrap_or_else(|| panic!("no JSON report\n{out}"));
    let (ok, failed, _) = check_switch_history(&report.switches, "mainline");
    assert!(ok as u64 >= RACE_SWITCHES, "only {ok} switches succeeded:\n{out}");
    assert_eq!(report.load_check.result, "ok");
    eprintln!(
        "switch-every race (seed {seed:#x}): {} switches ({ok} ok, {failed} failed); client: {real} real, {noop} no-op, \
         {busy} busy, {abandoned} abandoned set-modes, {resets} resets, {queries} queries",
        report.switch_totals.recorded
    );
}
