//! The SHUTDOWN event says why the VM stopped, with QEMU's fields (docs/qmp.md,
//! "Events"): `guest` false when the host asked (`quit`, a
//! signal, `--duration`), true when the guest did (it exited, panicked,
//! triple-faulted), and `reason` from the documented set.

use std::path::Path;
use std::time::{Duration, Instant};

use rtswitch_tests::qmp::RawQmp;
use rtswitch_tests::vm::{BOOT_LIMIT, BackgroundVmm};
use serde_json::{Value, json};

/// A negotiated connection to a `--paused` VMM, once its socket is there
/// (it waits for `cont`: nothing ends it meanwhile).
fn paused_session(vmm: &BackgroundVmm) -> RawQmp {
    let start = Instant::now();
    while !Path::new(&vmm.sock).exists() {
        vmm.assert_alive("paused, before its socket existed");
        assert!(start.elapsed() < BOOT_LIMIT, "the control socket never appeared:\n{}", vmm.output());
        std::thread::sleep(Duration::from_millis(2));
    }
    RawQmp::negotiated(&vmm.sock)
}

/// A negotiated connection to a `--paused` VMM (which waits for `cont`,
/// so it cannot end before the client is there, however slow the host),
/// then `cont`: the reply, then RESUME, as QEMU after `-S`.
fn launched_client(vmm: &BackgroundVmm) -> RawQmp {
    let mut c = paused_session(vmm);
    c.send(br#"{"execute":"query-status"}"#);
    let st = c.reply();
    assert_eq!((&st["return"]["status"], &st["return"]["running"]), (&json!("prelaunch"), &json!(false)), "{st}");
    c.send(br#"{"execute":"cont","id":"c"}"#);
    assert_eq!(c.message(), json!({"return": {}, "id": "c"}));
    assert_eq!(c.event("RESUME", BOOT_LIMIT)["data"], json!({}));
    c
}

/// Waits for SHUTDOWN, then for the VMM to exit with `code`.
fn shutdown(mut vmm: BackgroundVmm, mut c: RawQmp, code: i32) -> Value {
    let event = c.event("SHUTDOWN", BOOT_LIMIT);
    assert!(event["timestamp"]["seconds"].is_u64(), "{event}");
    assert!(c.try_message().is_none(), "the connection stays open after SHUTDOWN");
    let (got, out) = vmm.wait_exit(BOOT_LIMIT);
    assert_eq!(got, code, "{out}");
    event["data"].clone()
}

#[test]
fn quit_is_host_qmp_quit_and_answered_before_the_event() {
    let vmm = BackgroundVmm::start("sd-quit", &["--vcpus", "1", "--load", "none"]);
    let mut c = RawQmp::negotiated(&vmm.sock);
    c.send(br#"{"execute":"quit","id":"q"}"#);
    // As QEMU: the reply, then the event.
    assert_eq!(c.message(), json!({"return": {}, "id": "q"}));
    assert_eq!(shutdown(vmm, c, 0), json!({"guest": false, "reason": "host-qmp-quit"}));
}

#[test]
fn a_signal_is_host_signal() {
    let vmm = BackgroundVmm::start("sd-signal", &["--vcpus", "1", "--load", "none"]);
    let c = RawQmp::negotiated(&vmm.sock);
    // SAFETY: kill only sends a signal to the VMM child this test started.
    assert_eq!(unsafe { libc::kill(vmm.pid() as i32, libc::SIGTERM) }, 0);
    assert_eq!(shutdown(vmm, c, 0), json!({"guest": false, "reason": "host-signal"}));
}

#[test]
fn duration_is_host_duration() {
    let vmm = BackgroundVmm::spawn("sd-duration", &["--vcpus", "1", "--load", "none", "--duration", "3", "--paused"]);
    let c = launched_client(&vmm);
    assert_eq!(shutdown(vmm, c, 0), json!({"guest": false, "reason": "host-duration"}));
}

#[test]
fn the_guest_shutting_down_or_failing_is_said_by_the_guest() {
    for (arg, code, reason) in [
        ("exit=0", 0, "guest-shutdown"),
        ("exit=3", 1, "guest-shutdown"),
        ("panic", 3, "guest-panic"),
        ("triple-fault", 4, "guest-reset"),
    ] {
        let vmm = BackgroundVmm::spawn(
            &format!("sd-{reason}"),
            &["--vcpus", "1", "--load", "none", "--guest-arg", arg, "--paused"],
        );
        let c = launched_client(&vmm);
        assert_eq!(shutdown(vmm, c, code), json!({"guest": true, "reason": reason}), "--guest-arg {arg}");
    }
}

#[test]
fn a_paused_vm_runs_nothing_before_cont_and_quits_cleanly() {
    let vmm = BackgroundVmm::spawn("sd-prelaunch", &["--vcpus", "1", "--load", "none", "--paused"]);
    let mut c = paused_session(&vmm);
    // Held before the first instruction: no CPU came online, the shim was never entered.
    std::thread::sleep(Duration::from_millis(300));
    c.send(br#"{"execute":"query-status"}"#);
    let st = c.reply()["return"].clone();
    assert_eq!((&st["status"], &st["running"], &st["ready"]), (&json!("prelaunch"), &json!(false), &json!(false)));
    let entries: u64 = st["shim"]["cpus"]
        .as_array()
        .expect("shim cpus")
        .iter()
        .flat_map(|c| c["entries"].as_array().expect("entries").iter().map(|n| n.as_u64().expect("count")))
        .sum();
    assert_eq!(entries, 0, "a held guest entered its shim: {st}");
    c.send(br#"{"execute":"set-mode","arguments":{"mode":"rt"}}"#);
    let r = c.reply();
    assert!(r["error"]["desc"].as_str().is_some_and(|d| d.contains("cont")), "a switch before cont: {r}");
    assert!(!vmm.output().contains("guest ready"), "{}", vmm.output());
    c.send(br#"{"execute":"quit","id":"q"}"#);
    assert_eq!(c.message(), json!({"return": {}, "id": "q"}));
    assert_eq!(shutdown(vmm, c, 0), json!({"guest": false, "reason": "host-qmp-quit"}));
}
