//! The command line as a newcomer meets it: `ctl`'s
//! options after the subcommand, Ctrl-C on `ctl mode` cancelling the switch,
//! `reset-latency` over the real socket, `--guest-arg` keys checked before
//! boot, durations with units.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rtswitch_tests::vm::{BackgroundVmm, REPLY_TIMEOUT, assert_mode, exec, switch_until_ok};
use rtswitch_tests::{CtlExit, ExitCode, rtswitch_bin, run_rtswitch};
use serde_json::{Value, json};

/// `ctl mode rt` interrupted by Ctrl-C while the guest cannot quiesce (a
/// task holds a lock from before the request until 4 s after it, the
/// switch would wait up to 20 s): the switch is cancelled while the lock is
/// still held, and changes nothing; the options given after the subcommand
/// are honoured.
#[test]
fn ctrl_c_on_ctl_mode_cancels_the_switch_and_options_go_after_the_subcommand() {
    let vmm = BackgroundVmm::start(
        "ctl-cancel",
        &[
            "--vcpus",
            "2",
            "--load",
            "none",
            "--switch-timeout",
            "20s",
            "--guest-arg",
            "hold-lock=4000",
            "--guest-arg",
            "after-request",
        ],
    );
    vmm.wait_for_output("'lock-hog' holds its lock", Duration::from_secs(30), "the lock-hog never took its lock");
    let sock = vmm.sock.to_str().expect("utf-8").to_string();
    // Nothing to cancel: a success that says so.
    let mut s = vmm.session();
    let r = exec(&mut s, json!({"execute": "x-cancel-switch"}));
    assert_eq!(r["return"]["cancelled"], false, "{r}");

    let started = Instant::now();
    let mut child = Command::new(rtswitch_bin())
        .args(["ctl", "mode", "rt", "--api-sock", &sock, "--timeout", "30s"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rtswitch ctl");
    // Wait until the switch is under way, then Ctrl-C.
    let deadline = Instant::now() + Duration::from_secs(10);
    while exec(&mut s, json!({"execute": "query-status"}))["return"]["switching"].is_null() {
        assert!(Instant::now() < deadline, "the switch never started:\n{}", vmm.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
    let out = loop {
        if child.try_wait().expect("wait").is_some() {
            break child.wait_with_output().expect("ctl output");
        }
        if started.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("ctl did not end after Ctrl-C:\n{}", vmm.output());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(i32::from(CtlExit::ErrorReply.code())), "{stdout}\n{stderr}");
    assert!(stderr.contains("switch #1 cancelled"), "{stderr}");
    assert!(stderr.contains("cancelled by a client") && stderr.contains("nothing was patched"), "{stderr}");
    assert!(stderr.contains("'lock-hog'"), "the error names what the freeze waited for: {stderr}");
    // Cancelled while the lock was held: the hog had not let go by then.
    assert!(!vmm.output().contains("'lock-hog' released its lock"), "cancelled only after the lock-hog let go");
    // Nothing changed.
    assert_mode(&mut s, "mainline");
    let sw = exec(&mut s, json!({"execute": "query-switches"}));
    assert_eq!(sw["return"]["totals"]["failed"], 1, "{sw}");

    // Options after the subcommand; the switch works once the hog is gone.
    switch_until_ok(&mut s, "rt", Duration::from_secs(30), &vmm);
    let r =
        run_rtswitch(&["ctl", "mode", "mainline", "--json", "--api-sock", &sock, "--timeout", "20s"], REPLY_TIMEOUT);
    r.assert_ctl(CtlExit::Ok);
    let v: Value = serde_json::from_str(r.stdout.trim()).expect("--json after the subcommand prints the raw reply");
    assert_eq!(v["return"]["mode"], "mainline", "{v}");
    run_rtswitch(&["ctl", "status", "--api-sock", &sock], REPLY_TIMEOUT)
        .assert_ctl(CtlExit::Ok)
        .assert_contains("mode mainline");
    run_rtswitch(&["ctl", "status"], REPLY_TIMEOUT).assert_ctl(CtlExit::BadArguments).assert_contains("--api-sock");
    let (c, out, _) = vmm.quit();
    // The hog starves cpu 1's measurement for seconds: the run may say so.
    let ok = [ExitCode::Ok, ExitCode::MeasurementNotOk].map(|e| i32::from(e.code()));
    assert!(ok.contains(&c), "exit {c}:\n{out}");
    assert!(out.contains("load check: ok"), "{out}");
}

/// docs/qmp.md: `reset-latency` forgets the closed epochs and the totals; what
/// is reported next starts at the reset.
#[test]
fn reset_latency_forgets_closed_epochs_over_the_socket() {
    const VCPUS: u64 = 2;
    /// The measurement's period (the default --interval-us), in µs.
    const INTERVAL_US: u64 = 1000;
    // Cooperative switches: each opens its epochs before it is answered
    // (two fast switches in a row can come before the guest opens any).
    let vmm = BackgroundVmm::start("ctl-reset", &["--vcpus", "2", "--load", "cpu", "--fast-switch", "off"]);
    let sock = vmm.sock.to_str().expect("utf-8").to_string();
    let mut s = vmm.session();
    switch_until_ok(&mut s, "rt", Duration::from_secs(30), &vmm);
    switch_until_ok(&mut s, "mainline", Duration::from_secs(30), &vmm);
    let q = || json!({"execute": "query-latency", "arguments": {"last": 64}});
    let samples = |v: &Value| -> u64 {
        v["modes"].as_array().into_iter().flatten().map(|m| m["samples"].as_u64().unwrap_or(0)).sum()
    };
    // Waited for, however slow the host: the mainline Mode epoch after the
    // second switch is open and holds a second's worth of samples (which a
    // reset that did not start it over would keep).
    let started = Instant::now();
    let before = loop {
        let v = exec(&mut s, q());
        let last = v["return"]["epochs"].as_array().and_then(|e| e.last()).cloned().unwrap_or_default();
        let open_samples = last["all"]["samples"].as_u64().unwrap_or(0);
        if last["label"] == "mainline" && open_samples >= VCPUS * 1_000_000 / INTERVAL_US {
            break v;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the run never got there: {v}\n{}", vmm.output());
        std::thread::sleep(Duration::from_millis(50));
    };
    let seen_before = before["return"]["totals"]["seen"].as_u64().unwrap_or(0);
    // mainline, 2 x (switching, new mode); the rt mode epoch only if the
    // second request came after the first switch's guard.
    assert!(seen_before >= 4, "mainline, switching, [rt], switching, mainline: {before}");
    let reset_at = Instant::now();
    run_rtswitch(&["ctl", "reset-latency", "--api-sock", &sock], REPLY_TIMEOUT)
        .assert_ctl(CtlExit::Ok)
        .assert_contains("reset");
    let after = exec(&mut s, q());
    let since_reset = reset_at.elapsed();
    let ret = &after["return"];
    let epochs = ret["epochs"].as_array().expect("epochs");
    assert!(epochs.len() <= 1, "only the epoch open at the reset is listed: {after}");
    assert_eq!(ret["totals"]["forgotten"], 0, "{after}");
    assert!(ret["totals"]["seen"].as_u64().unwrap_or(99) <= 1, "{after}");
    let modes = ret["modes"].as_array().expect("modes");
    assert!(modes.iter().all(|m| m["mode"] == "mainline"), "no rt totals survive the reset: {after}");
    // The current epoch starts over: no more samples than the periods
    // since the reset request hold (one per period and CPU, measured by
    // this test's clock, which a busy host stretches alike).
    let (b, a) = (samples(&before["return"]), samples(ret));
    let most = VCPUS * (since_reset.as_micros() as u64 / INTERVAL_US + 2);
    assert!(a <= most, "the samples start over: {a} after the reset ({since_reset:?} ago, at most {most}), {b} before");
    let (c, out, _) = vmm.quit();
    assert_eq!(c, 0, "{out}");
}

/// `--guest-arg` keys are checked before boot against the guest's own list
/// (the runs ask for longer than the test waits: one refused after its
/// boot could only end by being killed).
#[test]
fn guest_arg_keys_are_checked_before_boot() {
    let r = run_rtswitch(&["run", "--guest-arg", "hold-lok=4000", "--duration", "600s"], Duration::from_secs(30));
    r.assert_code(ExitCode::BadArguments);
    let err = &r.stderr;
    assert!(err.contains("unknown key 'hold-lok'") && err.contains("hold-lock=MS"), "{err}");
    assert!(!r.all_output().contains("guest kernel v"), "nothing booted: {}", r.all_output());
    run_rtswitch(&["run", "--guest-arg", "exit", "--duration", "600s"], Duration::from_secs(30))
        .assert_code(ExitCode::BadArguments)
        .assert_contains("write it as exit=N");
    // A known key boots, and the guest does not call it unknown.
    let r = run_rtswitch(
        &[
            "run",
            "--vcpus",
            "1",
            "--load",
            "none",
            "--guest-arg",
            "no-spin",
            "--profile",
            "rt,idle=poll",
            "--duration",
            "1s",
        ],
        Duration::from_secs(60),
    );
    r.assert_code(ExitCode::Ok).assert_not_contains("unknown guest argument");
}
