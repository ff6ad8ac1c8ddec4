//! The runtime switch through the real control socket of a real VM.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use rtswitch_tests::vm::{BackgroundVmm, REPLY_TIMEOUT, exec, set_mode, switch_until_ok};
use rtswitch_tests::{CtlExit, ExitCode, Scratch, require_kvm, run_rtswitch};
use serde_json::{Value, json};

/// Labels of the epochs `query-latency` lists.
fn epoch_labels(s: &mut rtswitch::api::client::Session) -> Vec<String> {
    let lat = exec(s, json!({"execute": "query-latency"}));
    let epochs = lat["return"]["epochs"].as_array().expect("epochs").clone();
    epochs.iter().map(|e| e["label"].as_str().unwrap_or("").to_string()).collect()
}

// The VMs below that must switch get a generous quiesce deadline: a busy
// host makes a switch slow, never failed.

#[test]
fn toggle_under_lock_load_through_the_socket() {
    let vmm = BackgroundVmm::start(
        "toggle",
        &["--vcpus", "2", "--load", "locks", "--mode", "mainline", "--switch-timeout", "20s"],
    );
    let mut s = vmm.session();
    let m = exec(&mut s, json!({"execute": "query-mode"}));
    assert_eq!(m["return"]["mode"], "mainline", "{m}");
    assert_eq!(m["return"]["sites_mode"], "mainline", "{m}");

    let r = set_mode(&mut s, "rt");
    assert_eq!(r["return"]["mode"], "rt", "{r}\n{}", vmm.output());
    assert_eq!(r["return"]["changed"], true);
    assert!(r["return"]["sites_patched"].as_u64().unwrap_or(0) > 0, "{r}");
    for k in ["freeze_us", "blackout_us", "total_us"] {
        assert!(r["return"][k].is_u64(), "{k} missing: {r}");
    }
    let m = exec(&mut s, json!({"execute": "query-mode"}));
    assert_eq!(m["return"]["mode"], "rt");
    assert_eq!(m["return"]["sites_mode"], "rt", "the site bytes follow the mode: {m}");
    assert_eq!(m["return"]["guest_mode"], "rt", "{m}");

    // Same mode again: a no-op success.
    let r = set_mode(&mut s, "rt");
    assert_eq!(r["return"]["changed"], false, "{r}");

    // The rt Mode epoch opens once every CPU completed a period after the
    // thaw: waited for (not slept for) before switching back.
    let start = Instant::now();
    while !epoch_labels(&mut s).iter().any(|l| l == "rt") {
        assert!(start.elapsed() < REPLY_TIMEOUT, "no rt Mode epoch opened after the switch:\n{}", vmm.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = set_mode(&mut s, "mainline");
    assert_eq!(r["return"]["mode"], "mainline", "{r}\n{}", vmm.output());
    let m = exec(&mut s, json!({"execute": "query-mode"}));
    assert_eq!(m["return"]["sites_mode"], "mainline");

    let sw = exec(&mut s, json!({"execute": "query-switches"}));
    let list = sw["return"]["switches"].as_array().expect("a list").clone();
    assert_eq!(list.len(), 2, "{sw}");
    assert!(list.iter().all(|r| r["ok"] == true), "{sw}");

    let labels = epoch_labels(&mut s);
    assert!(labels.iter().any(|l| l == "mainline"), "{labels:?}");
    assert!(labels.iter().any(|l| l == "rt"), "{labels:?}");
    assert!(labels.iter().any(|l| l == "sw:mainline" || l == "sw:rt"), "{labels:?}");

    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("load check: ok"), "{out}");
}

#[test]
fn toggle_with_the_ctl_command() {
    let vmm = BackgroundVmm::start("ctl", &["--vcpus", "2", "--load", "locks", "--switch-timeout", "20s"]);
    let sock = vmm.sock.to_str().expect("utf-8").to_string();
    let ctl = |args: &[&str]| {
        let mut a = vec!["ctl", "--api-sock", sock.as_str()];
        a.extend_from_slice(args);
        run_rtswitch(&a, REPLY_TIMEOUT)
    };
    ctl(&["mode", "rt"]).assert_ctl(CtlExit::Ok).assert_contains("switched to rt").assert_contains("blackout");
    ctl(&["status"]).assert_ctl(CtlExit::Ok).assert_contains("mode rt");
    ctl(&["switches"]).assert_ctl(CtlExit::Ok).assert_contains("mainline -> rt").assert_contains("1 switches in all");
    ctl(&["switches", "--since", "1", "--limit", "1"]).assert_ctl(CtlExit::Ok).assert_contains("mainline -> rt");
    ctl(&["latency"]).assert_ctl(CtlExit::Ok).assert_contains("rt").assert_contains("all mainline");
    ctl(&["latency", "--last", "1"]).assert_ctl(CtlExit::Ok).assert_contains("earlier epochs not shown");
    let raw = ctl(&["--json", "raw", r#"{"execute":"query-mode"}"#]);
    raw.assert_ctl(CtlExit::Ok);
    let v: Value = serde_json::from_str(raw.stdout.trim()).expect("--json prints the reply");
    assert_eq!(v["return"]["mode"], "rt");
    ctl(&["raw", r#"{"execute":"no-such-command"}"#])
        .assert_ctl(CtlExit::ErrorReply)
        .assert_contains("CommandNotFound");
    ctl(&["raw", "[1]"]).assert_ctl(CtlExit::BadArguments);
    ctl(&["switches", "--limit", "3"]).assert_ctl(CtlExit::BadArguments);
    ctl(&["quit"]).assert_ctl(CtlExit::Ok);
    let (code, out, _) = vmm.quit_after_request();
    assert_eq!(code, 0, "{out}");
}

/// Raw QMP over the socket, as any QMP client would see it (replies are
/// one per line).
fn raw_client(sock: &Path) -> (std::os::unix::net::UnixStream, std::io::BufReader<std::os::unix::net::UnixStream>) {
    let s = std::os::unix::net::UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(REPLY_TIMEOUT)).expect("timeout");
    let r = std::io::BufReader::new(s.try_clone().expect("clone"));
    (s, r)
}

fn read_json(r: &mut impl std::io::BufRead) -> Value {
    loop {
        let mut line = String::new();
        assert!(r.read_line(&mut line).expect("read") > 0, "the server closed the connection");
        let v: Value = serde_json::from_str(line.trim_end()).expect("one JSON object per line");
        if v.get("event").is_none() {
            return v;
        }
    }
}

#[test]
fn qmp_behaviour() {
    use std::io::Write;
    let vmm = BackgroundVmm::start("qmp", &["--vcpus", "2", "--load", "none", "--switch-timeout", "20s"]);
    let mode = std::fs::metadata(&vmm.sock).expect("socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the control socket is private");

    let (mut w, mut r) = raw_client(&vmm.sock);
    let greeting = read_json(&mut r);
    assert!(greeting["QMP"]["version"].is_object(), "{greeting}");
    assert_eq!(greeting["QMP"]["capabilities"], json!([]));

    w.write_all(b"{\"execute\":\"query-status\",\"id\":1}\n").expect("write");
    let v = read_json(&mut r);
    assert_eq!(v["error"]["class"], "CommandNotFound", "{v}");
    assert!(v["error"]["desc"].as_str().unwrap_or("").contains("qmp_capabilities"));
    assert_eq!(v["id"], 1);

    w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n").expect("write");
    assert_eq!(read_json(&mut r), json!({"return": {}}));

    w.write_all(b"{\"execute\":\"query-status\",\"id\":{\"nested\":[1,2]}}\n").expect("write");
    let v = read_json(&mut r);
    assert_eq!(v["id"], json!({"nested": [1, 2]}), "the id is echoed as sent");
    assert_eq!(v["return"]["running"], true);

    w.write_all(b"{\"execute\":\"frobnicate\",\"id\":\"x\"}\n").expect("write");
    let v = read_json(&mut r);
    assert_eq!(v["error"]["class"], "CommandNotFound");
    assert_eq!(v["id"], "x");

    // Invalid JSON, once its braces balance (a newline does not end it).
    w.write_all(b"{this is not json\n}").expect("write");
    let v = read_json(&mut r);
    assert_eq!(v["error"]["class"], "GenericError");

    w.write_all(b"{\"execute\":\"set-mode\",\"arguments\":{\"mode\":\"turbo\"}}\n").expect("write");
    assert!(read_json(&mut r)["error"]["desc"].as_str().unwrap_or("").contains("turbo"));

    // A second client at the same time.
    let mut other = vmm.session();
    assert_eq!(exec(&mut other, json!({"execute": "query-mode"}))["return"]["mode"], "mainline");

    // query-commands lists what is documented.
    w.write_all(b"{\"execute\":\"query-commands\"}\n").expect("write");
    let v = read_json(&mut r);
    let names: Vec<&str> = v["return"].as_array().expect("list").iter().filter_map(|c| c["name"].as_str()).collect();
    for c in ["query-status", "query-mode", "set-mode", "query-latency", "reset-latency", "query-switches", "quit"] {
        assert!(names.contains(&c), "{c} missing from {names:?}");
    }

    // A client that disconnects in the middle of a switch.
    w.write_all(b"{\"execute\":\"set-mode\",\"arguments\":{\"mode\":\"rt\"}}\n").expect("write");
    drop(r);
    drop(w);
    let start = Instant::now();
    loop {
        let m = exec(&mut other, json!({"execute": "query-mode"}));
        if m["return"]["mode"] == "rt" && m["return"]["switching"].is_null() {
            break;
        }
        assert!(start.elapsed() < REPLY_TIMEOUT, "the abandoned switch never completed: {m}");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The VM still answers after all of that.
    assert_eq!(exec(&mut other, json!({"execute": "query-status"}))["return"]["running"], true);
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
}

/// A task holding a lock (`hold-lock` with `after-request`: held from
/// before the request until 2.5 s after it, however slow the host) makes
/// the switch fail at its deadline, naming the task, with nothing patched.
#[test]
fn a_task_holding_a_lock_makes_the_switch_fail_cleanly() {
    let vmm = BackgroundVmm::start(
        "holdfail",
        &[
            "--vcpus",
            "2",
            "--load",
            "none",
            "--switch-timeout",
            "300ms",
            "--guest-arg",
            "hold-lock=2500",
            "--guest-arg",
            "after-request",
        ],
    );
    vmm.wait_for_output("'lock-hog' holds its lock", Duration::from_secs(30), "the lock-hog never took its lock");
    let mut s = vmm.session();
    let before = exec(&mut s, json!({"execute": "query-mode"}));
    let r = set_mode(&mut s, "rt");
    let desc = r["error"]["desc"].as_str().unwrap_or_default().to_string();
    assert!(desc.contains("lock-hog"), "the error names the task: {r}\n{}", vmm.output());
    assert!(desc.contains("nothing was patched"), "{r}");
    let after = exec(&mut s, json!({"execute": "query-mode"}));
    assert_eq!(after["return"]["mode"], before["return"]["mode"]);
    assert_eq!(after["return"]["sites_mode"], "mainline", "no site byte changed: {after}");
    assert_eq!(exec(&mut s, json!({"execute": "query-status"}))["return"]["running"], true);
    // Once the hog lets go, the same switch succeeds.
    switch_until_ok(&mut s, "rt", Duration::from_secs(30), &vmm);
    let sw = exec(&mut s, json!({"execute": "query-switches"}));
    let list = sw["return"]["switches"].as_array().expect("list");
    assert!(list.iter().any(|r| r["ok"] == false) && list.iter().any(|r| r["ok"] == true), "{sw}");
    let (code, out, _) = vmm.quit();
    // The hog kept CPU 1 from its watchdog for 2.5 s: a stall, so the
    // run's measurement is "not ok" (docs/latency.md, "Result").
    assert_eq!(code, i32::from(ExitCode::MeasurementNotOk.code()), "{out}");
    assert!(out.contains("result: not ok") && out.contains("stalled"), "{out}");
}

#[test]
fn switch_every_alternates_epochs() {
    require_kvm();
    let dir = Scratch::new("every");
    let json_path = dir.0.join("r.json");
    let r = run_rtswitch(
        &[
            "run",
            "--vcpus",
            "2",
            "--load",
            "locks",
            "--switch-every",
            "700",
            // A slow host makes switches slow, never failed.
            "--switch-timeout",
            "20s",
            "--duration",
            "6",
            "--quiet",
            "--json",
            json_path.to_str().expect("utf-8"),
        ],
        Duration::from_secs(120),
    );
    r.assert_code(ExitCode::Ok);
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).expect("json written")).expect("valid JSON");
    let switches = v["switches"].as_array().expect("switches in the JSON");
    assert!(switches.len() >= 2, "{}", r.stderr);
    assert!(switches.iter().all(|s| s["ok"] == true), "{switches:?}");
    let modes: Vec<&str> = v["epochs"].as_array().expect("epochs").iter().filter_map(|e| e["label"].as_str()).collect();
    assert!(
        modes.iter().filter(|m| **m == "rt").count() >= 1 && modes.iter().filter(|m| **m == "mainline").count() >= 2,
        "{modes:?}"
    );
    r.assert_contains("load check: ok");
}
