//! The SHUTDOWN event says why the VM stopped, with QEMU's fields (docs/qmp.md,
//! "Events"): `guest` false when the host asked (`quit`, a
//! signal, `--duration`), true when the guest did (it exited, panicked,
//! triple-faulted), and `reason` from the documented set.

use std::path::Path;
use std::time::{Duration, Instant};

use rtswitch_tests::qmp::RawQmp;
use rtswitch_tests::vm::{BOOT_LIMIT, BackgroundVmm};
use serde_json::{Value, json};

/// A negotiated connection made as soon as the socket exists (the guest
/// may end right after it boots).
fn early_client(vmm: &BackgroundVmm) -> RawQmp {
    let start = Instant::now();
    while !Path::new(&vmm.sock).exists() {
        assert!(start.elapsed() < BOOT_LIMIT, "the control socket never appeared:\n{}", vmm.output());
        std::thread::sleep(Duration::from_millis(2));
    }
    RawQmp::negotiated(&vmm.sock)
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
    let mut c = early_client(&vmm);
    c.send(br#"{"execute":"quit","id":"q"}"#);
    // As QEMU: the reply, then the event.
    assert_eq!(c.message(), json!({"return": {}, "id": "q"}));
    assert_eq!(shutdown(vmm, c, 0), json!({"guest": false, "reason": "host-qmp-quit"}));
}

#[test]
fn a_signal_is_host_signal() {
    let vmm = BackgroundVmm::start("sd-signal", &["--vcpus", "1", "--load", "none"]);
    let c = early_client(&vmm);
    // SAFETY: kill only sends a signal to the VMM child this test started.
    assert_eq!(unsafe { libc::kill(vmm.pid() as i32, libc::SIGTERM) }, 0);
    assert_eq!(shutdown(vmm, c, 0), json!({"guest": false, "reason": "host-signal"}));
}

#[test]
fn duration_is_host_duration() {
    let vmm = BackgroundVmm::spawn("sd-duration", &["--vcpus", "1", "--load", "none", "--duration", "3"]);
    let c = early_client(&vmm);
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
        let vmm =
            BackgroundVmm::spawn(&format!("sd-{reason}"), &["--vcpus", "1", "--load", "none", "--guest-arg", arg]);
        let c = early_client(&vmm);
        assert_eq!(shutdown(vmm, c, code), json!({"guest": true, "reason": reason}), "--guest-arg {arg}");
    }
}
