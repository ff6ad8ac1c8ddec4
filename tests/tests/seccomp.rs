//! The sandbox (vmm/src/seccomp.rs): every thread of a run has its own
//! seccomp filter; a thread that makes a call outside it stops the VMM with
//! exit code 10 and a message naming the thread and the call; `--seccomp
//! off` goes without. The forbidden call comes from the VMM's test-only
//! trigger, `RTSWITCH_SECCOMP_TEST_TRIP` (the thread calls socket(2) right
//! after its filter is in). Every other end-to-end test runs with the
//! filters on (the default).

use std::time::Duration;

use rtswitch::seccomp::TEST_TRIP_ENV;
use rtswitch_tests::vm::{BackgroundVmm, REPLY_TIMEOUT, exec};
use rtswitch_tests::{CtlExit, ExitCode, Scratch, require_kvm, run_rtswitch, run_rtswitch_env};
use serde_json::json;

const LIMIT: Duration = Duration::from_secs(60);
/// socket(2) on x86-64: what the trigger calls.
const SYS_SOCKET: &str = "system call 41,";

#[test]
fn a_vcpu_thread_making_a_forbidden_call_stops_the_vmm() {
    require_kvm();
    let r = run_rtswitch_env(&["run", "--vcpus", "2", "--duration", "5"], &[(TEST_TRIP_ENV, "vcpu")], LIMIT);
    r.assert_code(ExitCode::SeccompViolation)
        .assert_contains("rtswitch: seccomp: thread vcpu0 made ")
        .assert_contains(SYS_SOCKET)
        .assert_contains("(exit code 10)")
        .assert_contains("--seccomp off");
}

#[test]
fn the_control_thread_making_a_forbidden_call_stops_the_vmm() {
    require_kvm();
    let r = run_rtswitch_env(&["run", "--vcpus", "2", "--duration", "5"], &[(TEST_TRIP_ENV, "control")], LIMIT);
    r.assert_code(ExitCode::SeccompViolation)
        .assert_contains("rtswitch: seccomp: thread control made ")
        .assert_contains(SYS_SOCKET);
}

#[test]
fn seccomp_off_lets_the_same_call_through() {
    require_kvm();
    let r = run_rtswitch_env(
        &["run", "--vcpus", "2", "--duration", "1", "--seccomp", "off"],
        &[(TEST_TRIP_ENV, "control")],
        LIMIT,
    );
    r.assert_code(ExitCode::Ok).assert_contains("calling socket(2)").assert_not_contains("rtswitch: seccomp:");
}

#[test]
fn a_bad_trigger_value_is_refused() {
    require_kvm();
    let r = run_rtswitch_env(&["run", "--vcpus", "1", "--duration", "1"], &[(TEST_TRIP_ENV, "api")], LIMIT);
    r.assert_code(ExitCode::VmmError).assert_contains("use vcpu, control");
}

/// Every output is open before the filter goes in, so the
/// control thread may neither create nor remove a file by name.
#[test]
fn the_control_thread_can_neither_create_nor_remove_a_file() {
    require_kvm();
    for (trip, nr) in [("control-openat", libc::SYS_openat), ("control-unlink", libc::SYS_unlink)] {
        let _ = std::fs::remove_file("/tmp/rtswitch-trip");
        let r = run_rtswitch_env(&["run", "--vcpus", "1", "--duration", "5"], &[(TEST_TRIP_ENV, trip)], LIMIT);
        r.assert_code(ExitCode::SeccompViolation)
            .assert_contains("rtswitch: seccomp: thread control made ")
            .assert_contains(&format!("system call {nr},"));
        assert!(!std::path::Path::new("/tmp/rtswitch-trip").exists(), "{trip}: the file was created");
    }
}

/// A panic under the filters is reported as a panic, with
/// its message and Rust's exit status, not as a seccomp violation (the
/// default hook's backtrace calls getcwd).
#[test]
fn a_panic_under_the_filters_reports_the_panic() {
    require_kvm();
    let r = run_rtswitch_env(
        &["run", "--vcpus", "1", "--duration", "5"],
        &[(TEST_TRIP_ENV, "control-panic"), ("RUST_BACKTRACE", "full")],
        LIMIT,
    );
    r.assert_code(ExitCode::VmmPanic)
        .assert_contains("rtswitch: internal error: thread main panicked")
        .assert_contains("control-panic")
        .assert_not_contains("rtswitch: seccomp:");
}

/// A second SIGINT ends the run at once even when the
/// control thread is stuck (here on purpose, spinning after its filter
/// went in): the socket file goes too.
#[test]
fn a_second_signal_ends_a_run_whose_control_thread_is_stuck() {
    let mut vmm = BackgroundVmm::spawn_env("wedge", &["--vcpus", "1"], &[(TEST_TRIP_ENV, "control-wedge")]);
    vmm.wait_for_output(TEST_TRIP_ENV, Duration::from_secs(60), "the control thread never got stuck");
    let pid = vmm.pid() as libc::pid_t;
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    unsafe { libc::kill(pid, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(200));
    let t = std::time::Instant::now();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGINT) };
    // rtswitch::signals::FORCED_EXIT (1 s) after the second signal, with
    // a margin for a loaded host.
    let (code, out) = vmm.wait_exit(Duration::from_secs(10));
    eprintln!("ended {:?} after the second SIGINT", t.elapsed());
    assert_eq!(code, i32::from(ExitCode::ShutdownTimeout.code()), "{out}");
    assert!(out.contains("second signal"), "{out}");
    assert!(!vmm.sock.exists(), "the socket file stayed behind:\n{out}");
}

/// What /proc says of each thread's seccomp state: (name, mode, filters).
fn thread_seccomp(pid: u32) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the VMM's /proc/PID/task");
    for t in tasks.flatten() {
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let field =
            |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string()).unwrap_or_default();
        out.push((field("Name:"), field("Seccomp:"), field("Seccomp_filters:")));
    }
    out
}

#[test]
fn a_filtered_run_switches_serves_ctl_and_writes_its_reports() {
    let files = Scratch::new("seccomp-files");
    let hist = files.0.join("hist.txt");
    let plot = files.0.join("plot.svg");
    let (h, p) = (hist.to_str().expect("utf-8"), plot.to_str().expect("utf-8"));
    let vmm = BackgroundVmm::start(
        "seccomp-on",
        &["--vcpus", "2", "--switch-every", "50", "--histogram", h, "--histogram-mode", "all", "--plot", p],
    );
    // Every thread (control + 2 vCPUs + the host-noise probes; KVM's own worker,
    // kvm-nx-lpage-recovery, is listed too where the kernel has it) is in filter
    // mode (2), with one filter.
    let threads = thread_seccomp(vmm.pid());
    for want in ["rtswitch", "vcpu0", "vcpu1"] {
        assert!(threads.iter().any(|(n, ..)| n == want), "no thread {want}: {threads:?}");
    }
    assert!(threads.iter().any(|(n, ..)| n.starts_with("hnoise")), "no host-noise probe thread: {threads:?}");
    for (name, mode, filters) in &threads {
        assert_eq!((mode.as_str(), filters.as_str()), ("2", "1"), "thread {name} is not filtered: {threads:?}");
    }
    let sock = vmm.sock.to_str().expect("utf-8").to_string();
    let ctl = |args: &[&str]| {
        let mut a = vec!["ctl", "--api-sock", sock.as_str()];
        a.extend_from_slice(args);
        run_rtswitch(&a, REPLY_TIMEOUT)
    };
    ctl(&["status"]).assert_ctl(CtlExit::Ok).assert_contains("running");
    ctl(&["switches"]).assert_ctl(CtlExit::Ok);
    ctl(&["latency"]).assert_ctl(CtlExit::Ok);
    ctl(&["reset-latency"]).assert_ctl(CtlExit::Ok);
    ctl(&["raw", "not json"]).assert_ctl(CtlExit::BadArguments);
    ctl(&["raw", r#"{"execute":"no-such-command"}"#]).assert_ctl(CtlExit::ErrorReply);
    // The timer's switches under the filters: one has completed before
    // the run ends, however slow the host (a hang guard bounds the wait).
    let mut s = vmm.session();
    let started = std::time::Instant::now();
    while exec(&mut s, json!({"execute": "query-switches", "arguments": {"last": 1}}))["return"]["totals"]["completed"]
        .as_u64()
        .unwrap_or(0)
        == 0
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no switch completed under the filters:\n{}",
            vmm.output()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(s);
    ctl(&["quit"]).assert_ctl(CtlExit::Ok);
    let (code, out, report) = vmm.quit_after_request();
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("rtswitch: seccomp:"), "{out}");
    let totals = report.unwrap_or_else(|| panic!("no JSON report\n{out}")).switch_totals;
    assert!(totals.completed >= 1, "the --json report shows switches done under the filters: {totals:?}\n{out}");
    assert!(std::fs::metadata(&hist).is_ok_and(|m| m.len() > 0), "--histogram written:\n{out}");
    assert!(std::fs::metadata(&plot).is_ok_and(|m| m.len() > 0), "--plot written:\n{out}");
}
