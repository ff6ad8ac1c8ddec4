//! The VMM's own output: a stdout nobody reads never
//! holds up a vCPU or the control loop, and a closed stdout and stderr
//! (`run --json F 2>&1 | head -2`) never cost the run its report.
//!
//! Time bounds: an answer within 2 s and the end of the run within its
//! duration, grace and report (a quiet host answers in milliseconds), each
//! stretched by the stalls the host imposed meanwhile (`HostStalls`), as
//! in `hostile_guest.rs`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rtswitch::api::client::Session;
use rtswitch_tests::hostile_guest::{Program, Value};
use rtswitch_tests::{ExitCode, HostStalls, Scratch, read_report, require_kvm, rtswitch_bin, slots};
use serde_json::json;
use switcher::abi::doorbell;

const ANSWER: Duration = Duration::from_secs(2);

#[test]
fn a_stdout_nobody_reads_holds_up_nothing() {
    require_kvm();
    let _slots = slots::take(1);
    let stalls = HostStalls::watch();
    let dir = Scratch::new("stdout-unread");
    // 4 KiB of console per exit: the pipe (64 KiB) is full at once.
    let mut p = Program::new();
    p.flood(doorbell::CONSOLE, Value::Imm(doorbell::console_value(0x20_0000, doorbell::CONSOLE_MAX)));
    let kernel = p.write(&dir, "evil.elf");
    let sock = dir.0.join("api.sock");
    let mut cmd = Command::new(rtswitch_bin());
    cmd.args(["run", "--vcpus", "1", "--duration", "3", "--shutdown-timeout", "1", "--kernel"])
        .arg(&kernel)
        .arg("--api-sock")
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().expect("start rtswitch");
    // The read end is kept, never read: writes to stdout block.
    let _unread = child.stdout.take();
    let started = Instant::now();
    while !sock.exists() {
        assert!(started.elapsed() < Duration::from_secs(30), "no control socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        let mut s = Session::connect(&sock, Duration::from_secs(10)).expect("connect");
        let r = s.execute(json!({"execute": "query-status"}), &mut |_| {}).expect("query-status answered");
        assert_eq!(r["return"]["running"], true, "{r}");
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    // --duration 3, the 1 s grace (the guest ignores the request), the report.
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if started.elapsed() > stalls.bound(Duration::from_secs(4) + ANSWER * 3) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "stdout blocked: slowest answer {worst:?}; exited after {:?}; host stalls up to {:?}",
        started.elapsed(),
        stalls.worst()
    );
    assert!(
        worst < stalls.bound(ANSWER),
        "answers took {worst:?} with stdout blocked (host stalls {:?})",
        stalls.worst()
    );
    let status = status.expect("the run did not end with its stdout blocked");
    assert_eq!(status.code(), Some(i32::from(ExitCode::ShutdownTimeout.code())));
}

#[test]
fn closed_stdout_and_stderr_do_not_lose_the_report() {
    require_kvm();
    let _slots = slots::take(1);
    let dir = Scratch::new("closed-stderr");
    let json_path = dir.0.join("r.json");
    let mut cmd = Command::new(rtswitch_bin());
    cmd.args(["run", "--vcpus", "1", "--duration", "1", "--json"])
        .arg(&json_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start rtswitch");
    // As `| head -0`: the reader is gone before the VMM writes a line.
    drop(child.stdout.take());
    drop(child.stderr.take());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "the run did not end");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "a closed stderr ended the run with {status:?}");
    let report = read_report(&json_path, "(stderr closed)");
    assert_eq!(report.outcome.exit_code, 0);
}
