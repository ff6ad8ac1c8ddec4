//! Fault injection around the runtime switch: guest options
//! (`guest/src/diag/faults.rs`, off by default) that misbehave on purpose; the
//! VMM must fail cleanly (nothing patched), keep running, or report and
//! exit with the documented code, never crash or hang.

use std::time::Duration;

use rtswitch_tests::ExitCode;
use rtswitch_tests::vm::{BOOT_LIMIT, BackgroundVmm, assert_mode, exec, set_mode, switch_until_ok};
use serde_json::json;

fn code(c: ExitCode) -> i32 {
    i32::from(c.code())
}

/// A switch requested while a CPU spins with interrupts off is cancelled
/// at its deadline with nothing patched; once the CPU is back, it works.
/// The spin (`after-request`) lasts from before the request until 3 s
/// after it, however slow the host.
#[test]
fn a_cpu_spinning_with_interrupts_off_makes_the_switch_cancel() {
    let vmm = BackgroundVmm::start(
        "irqoff",
        &[
            // The subject is the freezer's deadline: the fast path would
            // switch past a CPU with interrupts masked (correctly).
            "--fast-switch",
            "off",
            "--vcpus",
            "2",
            "--load",
            "none",
            "--switch-timeout",
            "300ms",
            "--guest-arg",
            "irq-off-spin=3000",
            "--guest-arg",
            "after-request",
        ],
    );
    vmm.wait_for_output("'irq-off-spin' masks interrupts", Duration::from_secs(30), "the spin never started");
    let mut s = vmm.session();
    let r = set_mode(&mut s, "rt");
    let desc = r["error"]["desc"].as_str().unwrap_or_default();
    assert!(desc.contains("irq-off-spin") && desc.contains("nothing was patched"), "{r}\n{}", vmm.output());
    assert_mode(&mut s, "mainline");
    assert_eq!(exec(&mut s, json!({"execute": "query-status"}))["return"]["running"], true);
    // After the spin the same switch succeeds.
    switch_until_ok(&mut s, "rt", Duration::from_secs(30), &vmm);
    assert_mode(&mut s, "rt");
    let (c, out, _) = vmm.quit();
    // 3 s without its watchdog thread: a stall, so "not ok" (exit 11).
    assert_eq!(c, i32::from(ExitCode::MeasurementNotOk.code()), "{out}");
    assert!(out.contains("result: not ok"), "{out}");
    assert!(out.contains("'irq-off-spin' enabled interrupts again"), "{out}");
}

/// Garbage in the switch mailbox and unsolicited switch notifications:
/// ignored with a logged reason (the notifications, before any switch,
/// counted as misbehaviour: exit 13); a later request is refused cleanly (a
/// generous quiesce deadline: a busy host makes a switch slow, not failed).
#[test]
fn a_corrupted_mailbox_is_rejected_and_the_vm_keeps_running() {
    let vmm = BackgroundVmm::start(
        "mbox",
        &["--vcpus", "2", "--load", "locks", "--switch-timeout", "20s", "--guest-arg", "corrupt-mailbox"],
    );
    let mut s = vmm.session();
    // Wait for the scribbler to finish (it runs 100..400 ms after boot).
    vmm.wait_for_output("switch mailbox left corrupted", Duration::from_secs(30), "the scribbler never finished");
    for target in ["rt", "mainline", "rt"] {
        let r = set_mode(&mut s, target);
        let desc = r["error"]["desc"].as_str().unwrap_or_default();
        assert!(
            r["return"].is_object() || desc.contains("mailbox is not initialised"),
            "set-mode {target} on a corrupted mailbox: {r}"
        );
    }
    let m = exec(&mut s, json!({"execute": "query-mode"}));
    assert_eq!(m["return"]["sites_mode"], m["return"]["mode"], "{m}");
    assert_eq!(exec(&mut s, json!({"execute": "query-status"}))["return"]["running"], true);
    let (c, out, _) = vmm.quit();
    // Its notifications came before any switch was requested: counted as
    // misbehaviour (nothing else is: a scribbled mailbox is only refused).
    assert_eq!(c, code(ExitCode::GuestMisbehaved), "{out}");
    assert!(out.contains("with no switch in progress; ignored"), "the bogus notifications are logged:\n{out}");
    assert!(out.contains("switch notification before any switch: "), "and counted:\n{out}");
    assert!(out.contains("load check: ok"), "{out}");
}

/// A telemetry header with garbage dimensions is rejected with a logged
/// reason; switching and the run go on.
#[test]
fn a_corrupted_telemetry_header_is_rejected_and_the_vm_keeps_running() {
    let vmm = BackgroundVmm::start("telem", &["--vcpus", "2", "--load", "locks", "--guest-arg", "corrupt-telemetry"]);
    let mut s = vmm.session();
    vmm.wait_for_output("telemetry header corrupted", Duration::from_secs(30), "the scribbler never ran");
    let r = set_mode(&mut s, "rt");
    assert!(r["return"]["mode"] == "rt" || r["error"]["desc"].is_string(), "{r}");
    let lat = exec(&mut s, json!({"execute": "query-latency"}));
    assert!(lat["return"].is_object(), "{lat}");
    let m = exec(&mut s, json!({"execute": "query-mode"}));
    assert_eq!(m["return"]["sites_mode"], m["return"]["mode"], "{m}");
    let (c, out, _) = vmm.quit();
    // The refused header is the guest's misbehaviour: it names the exit
    // code (outranking the "not ok" measurement it also causes).
    assert_eq!(c, code(ExitCode::GuestMisbehaved), "{out}");
    assert!(out.contains("latency telemetry:"), "the rejection is logged:\n{out}");
    assert!(out.contains("telemetry header refused: "), "and counted:\n{out}");
    assert!(!out.contains("panicked"), "{out}");
}

/// Unknown doorbell registers, misaligned and wrong-width writes, reads, a
/// CPU that does not exist, ready twice, an unsolicited switch
/// notification, console writes outside memory and too long: logged, and
/// the VM goes on (and switches: a generous quiesce deadline, as a busy
/// host makes a switch slow, not failed).
#[test]
fn bad_hypercalls_are_logged_and_ignored() {
    let vmm = BackgroundVmm::start(
        "badhc",
        &["--vcpus", "2", "--load", "none", "--switch-timeout", "20s", "--guest-arg", "bad-hypercalls"],
    );
    let mut s = vmm.session();
    vmm.wait_for_output("bad hypercalls done", Duration::from_secs(30), "the bad hypercalls never ran");
    let r = set_mode(&mut s, "rt");
    assert_eq!(r["return"]["mode"], "rt", "{r}\n{}", vmm.output());
    assert_mode(&mut s, "rt");
    let (c, out, _) = vmm.quit();
    // Each was refused, counted, and named at the end.
    assert_eq!(c, code(ExitCode::GuestMisbehaved), "{out}");
    for kind in ["unexpected vCPU exit: ", "vcpu reported another cpu online: 1", "vcpu reported ready again: 1"] {
        assert!(out.contains(kind), "the end names {kind:?}:\n{out}");
    }
    for needle in [
        "no doorbell register at offset 0x38",
        "no doorbell register at offset 0xff8",
        "no doorbell register at offset 0x1",
        "doorbell register 0x0 (exit) takes an 8-byte write, got 1 bytes",
        "doorbell register 0x8 (panic) takes an 8-byte write, got 2 bytes",
        "doorbell register 0x20 (switch) takes an 8-byte write, got 4 bytes",
        "of the hypercall doorbell (write-only) returns all ones",
        "reported cpu 999 online; ignored",
        "reported ready again; ignored",
        "with no switch in progress; ignored",
        "console write of 16 bytes at 0xffffff000000 is outside guest memory",
        "console write of 4097 bytes is longer than the 4096 a write may carry",
        "(read 0xffffffffffffffff from the ready register)",
    ] {
        assert!(out.contains(needle), "expected {needle:?} in the output:\n{out}");
    }
}

/// A panic hypercall whose record lies outside guest memory: reported as
/// such, exit code GuestPanic.
#[test]
fn a_panic_record_outside_memory_is_reported_not_read() {
    let mut vmm =
        BackgroundVmm::spawn("badpanic", &["--vcpus", "2", "--load", "none", "--guest-arg", "bad-panic-record"]);
    let (c, out) = vmm.wait_exit(BOOT_LIMIT);
    assert_eq!(c, code(ExitCode::GuestPanic), "{out}");
    assert!(out.contains("panic record address 0xfffffff0 is outside guest memory"), "{out}");
    assert!(!vmm.sock.exists(), "socket left behind");
}

/// The guest panics in the middle of a switch: the client gets an error
/// (or the connection closes), the VMM reports the panic, exits with
/// GuestPanic and removes its socket.
#[test]
fn a_guest_panic_in_the_middle_of_a_switch() {
    let mut vmm = BackgroundVmm::start(
        "panicsw",
        &["--fast-switch", "off", "--vcpus", "2", "--load", "locks", "--guest-arg", "panic-in-switch"],
    );
    let mut s = vmm.session();
    match s.execute(json!({"execute": "set-mode", "arguments": {"mode": "rt"}}), &mut |_| {}) {
        Ok(r) => assert!(r["error"]["desc"].as_str().unwrap_or("").contains("shut down"), "{r}"),
        Err(rtswitch::api::client::ClientError::Closed) => {}
        Err(e) => panic!("set-mode during a panicking switch: {e}"),
    }
    let (c, out) = vmm.wait_exit(BOOT_LIMIT);
    assert_eq!(c, code(ExitCode::GuestPanic), "{out}");
    assert!(out.contains("guest panic on cpu 0") && out.contains("panic-in-switch"), "{out}");
    assert!(!vmm.sock.exists(), "the VMM left its socket file behind:\n{out}");
}

/// A CPU stuck with preemption off (interrupts on): the guest's watchdog
/// and the VMM's both report it, naming the task; the run still ends
/// cleanly once the task lets go (asked to end once the VMM saw the CPU
/// make progress again, however long the host took to get there).
#[test]
fn a_stalled_cpu_is_reported_by_both_watchdogs() {
    let vmm = BackgroundVmm::spawn(
        "stall",
        &["--vcpus", "2", "--load", "none", "--watchdog", "2s", "--guest-arg", "stall=5000"],
    );
    vmm.wait_for_output(
        "rtswitch: watchdog: cpu 1 makes progress again",
        Duration::from_secs(120),
        "the VMM never saw cpu 1 make progress again",
    );
    let (c, out, _) = vmm.quit();
    assert_eq!(c, code(ExitCode::MeasurementNotOk), "{out}");
    for needle in [
        "result: not ok",
        "watchdog: cpu 1 stuck for",
        "in task 'stall' (preempt count 1",
        "rtswitch: watchdog: cpu 1 made no progress for",
    ] {
        assert!(out.contains(needle), "expected {needle:?} in the output:\n{out}");
    }
}

/// `thaw-spin=12000`: a task the thaw woke spins 12 ms, Runnable and still
/// marked frozen, before it leaves the freezer (as if preempted there),
/// while the VMM asks for a switch every 10 ms under the lock load. The
/// guest must not count such a task frozen; the VMM checks, with every
/// vCPU held, that every task marked frozen is asleep, and refuses the
/// switch if not. So: no switch fails, many complete, no update is lost.
#[test]
fn a_thawed_task_still_marked_frozen_is_not_counted_frozen() {
    rtswitch_tests::require_kvm();
    let dir = rtswitch_tests::Scratch::new("thaw-spin");
    let json = dir.0.join("thaw.json");
    let args = [
        "run",
        "--vcpus",
        "2",
        "--duration",
        "4",
        "--serial",
        "none",
        "--switch-every",
        "10",
        "--guest-arg",
        "thaw-spin=12000",
        // The subject is the freezer's census.
        "--fast-switch",
        "off",
        "--json",
        json.to_str().unwrap(),
    ];
    let r = rtswitch_tests::run_rtswitch(&args, Duration::from_secs(90));
    let v = rtswitch_tests::read_report(&json, &r.stderr);
    let totals = &v.switch_totals;
    assert_eq!(totals.failed, 0, "switches failed:\n{}", r.stderr);
    // A switch takes tens of ms with a 12 ms spin in every thaw: 4 s hold
    // dozens even on a slow host; one is enough to have checked something.
    assert!(totals.completed >= 1, "no switch completed:\n{}", r.stderr);
    assert_eq!(v.load_check.violations, Some(0), "{}", r.stderr);
}
