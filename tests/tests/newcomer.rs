//! An RT engineer's first hour, end to end on the real binary:
//! cyclictest's habits work, nothing printed misleads, and Ctrl-C on the
//! tools keeps what was measured. Each test boots at most 2 vCPUs and is
//! bounded in time; nothing asserts the host's speed.

use std::time::Duration;

use rtswitch_tests::vm::{BackgroundVmm, REPLY_TIMEOUT, switch_until_ok};
use rtswitch_tests::{CtlExit, ExitCode, Scratch, interrupt_rtswitch_when, read_report, require_kvm, run_rtswitch_env};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(120);

/// One VM of this file at a time: on a 2-core host several at once only
/// measure the host's time slicing (and each stays within 2 vCPUs).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serialize() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every line the VMM prints on stderr that is not a table row (indented)
/// starts with `rtswitch` (env_logger's `[... WARN module]` lines did not).
fn assert_one_style(stderr: &str) {
    for line in stderr.lines().filter(|l| !l.is_empty() && !l.starts_with(' ')) {
        assert!(line.starts_with("rtswitch"), "a line in another style: {line:?}\n--- stderr ---\n{stderr}");
    }
}

/// cyclictest's short options; a critical section longer than the period
/// is warned about before the boot and named as the cause of the missed
/// periods; log lines (here `RUST_LOG=info`) read like the VMM's others;
/// the guest prints no latency summary of its own; the JSON config holds
/// what reproduces the run.
#[test]
fn cyclictest_options_a_cs_longer_than_the_period_and_one_output_style() {
    require_kvm();
    let _one = serialize();
    let dir = Scratch::new("newcomer-run");
    let json = dir.0.join("run.json");
    let r = run_rtswitch_env(
        &[
            "run",
            "--vcpus",
            "1",
            "-D",
            "2",
            "-i",
            "1000",
            "-p",
            "90",
            "-h",
            "5000",
            "-q",
            "-t",
            "1",
            "--cs-us",
            "3000",
            "--json",
            json.to_str().unwrap(),
        ],
        &[("RUST_LOG", "info")],
        LIMIT,
    );
    r.assert_code(ExitCode::Ok);
    let err = &r.stderr;
    let warn = err.lines().position(|l| l.contains("warning: --cs-us 3000 is not shorter than the measurement period"));
    let boot = err.lines().position(|l| l.contains(" call sites ("));
    assert!(warn.is_some() && warn < boot, "the section is warned about before the boot:\n{err}");
    assert!(
        err.lines().any(|l| l.contains("call sites (") && l.contains(" lock, ") && l.contains(" preemption, ")),
        "the sites by dimension:\n{err}"
    );
    // One vCPU with 3 ms preempt-off sections misses most 1 ms periods; the
    // warning says why (steal may be named too on a busy host).
    let keepup = err.lines().find(|l| l.contains("warning: the guest missed")).unwrap_or_else(|| panic!("{err}"));
    assert!(keepup.contains("critical sections (--cs-us 3000)"), "{keepup}");
    assert!(err.contains("rtswitch: info: "), "RUST_LOG=info lines in the VMM's style:\n{err}");
    assert_one_style(err);
    assert!(!r.stdout.contains(": epoch "), "the guest prints no summary of its own:\n{}", r.stdout);
    let report = read_report(&json, err);
    let c = serde_json::to_value(&report.config).expect("config");
    assert_eq!((c["priority"].as_u64(), c["duration_s"].as_f64()), (Some(90), Some(2.0)), "{c}");
    assert_eq!((c["hist_max_us"].as_u64(), c["cs_us"].as_u64()), (Some(5000), Some(3000)), "{c}");
    assert_eq!(c["measure_cpus"], serde_json::json!([0]), "{c}");
    assert!(c["command_line"].as_array().is_some_and(|a| a.iter().any(|w| w == "-D")), "{c}");
}

/// `--switch-every`: the config says so, and the shutdown prints only
/// `rtswitch:` lines (a timer tick that finds the VM shutting down is no
/// warning).
#[test]
fn switch_every_is_in_the_config_and_its_shutdown_says_nothing_odd() {
    require_kvm();
    let _one = serialize();
    let dir = Scratch::new("newcomer-every");
    let json = dir.0.join("run.json");
    let r = run_rtswitch_env(
        &[
            "run",
            "--vcpus",
            "2",
            "--load",
            "cpu",
            "-D",
            "1.5",
            "-q",
            "--switch-every",
            "50ms",
            "--switch-to",
            "preempt=full",
            "--json",
            json.to_str().unwrap(),
        ],
        &[],
        LIMIT,
    );
    r.assert_code(ExitCode::Ok);
    assert_one_style(&r.stderr);
    r.assert_not_contains("no switch now");
    let c = serde_json::to_value(read_report(&json, &r.stderr).config).expect("config");
    assert_eq!(c["switch_every_ms"].as_f64(), Some(50.0), "{c}");
    assert_eq!(c["switch_to"], "locks=mainline,preempt=full,irq=hard", "{c}");
}

/// `-b` (`--stop-above`): the cause ends with a verdict; vectors are named.
#[test]
fn stop_above_gives_a_verdict() {
    require_kvm();
    let _one = serialize();
    let r = run_rtswitch_env(&["run", "--vcpus", "1", "-b", "150", "-D", "10", "-q"], &[], LIMIT);
    r.assert_code(ExitCode::StoppedAbove);
    let verdict =
        r.stderr.lines().find(|l| l.starts_with("rtswitch:   verdict: ")).unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(verdict.len() > "rtswitch:   verdict: ".len() + 20, "{verdict}");
    assert!(!r.stderr.contains("irq vector 0x30\n"), "the timer vector is named:\n{}", r.stderr);
}

/// Ctrl-C on `bench`, as on cyclictest: what finished is printed and
/// written, marked interrupted, exit code 130. The interrupt comes 1 s
/// into the second run (once its step began, however long the first
/// took): the first is done, the second measuring (a boot takes
/// milliseconds here; one slice per configuration, so each run lasts 2 s).
#[test]
fn ctrl_c_on_bench_prints_and_writes_what_finished() {
    require_kvm();
    let _one = serialize();
    let dir = Scratch::new("newcomer-bench");
    let out = dir.0.join("out");
    let r = interrupt_rtswitch_when(
        &[
            "bench",
            "--quick",
            "--only",
            "latency",
            "--duration",
            "2",
            "--slices",
            "1",
            "--vcpus",
            "1",
            "--out",
            out.to_str().unwrap(),
        ],
        "latency: rt + none",
        Duration::from_secs(1),
        LIMIT,
    );
    r.assert_code(ExitCode::Interrupted);
    r.assert_contains("INTERRUPTED (Ctrl-C) after ").assert_contains("latency (us, all CPUs merged");
    r.assert_contains("rtswitch bench: interrupted after ");
    let text = std::fs::read_to_string(out.join("bench.json")).expect("bench.json written");
    let v: Value = serde_json::from_str(&text).expect("bench.json parses");
    assert_eq!((v["interrupted"].as_bool(), v["exit_code"].as_u64()), (Some(true), Some(130)), "{text}");
    let runs = v["latency"]["runs"].as_array().expect("the runs that started");
    assert!(!runs.is_empty() && runs.len() < 6, "{text}");
    // The run in progress was stopped cleanly: its report was read.
    let last = runs.last().expect("a run");
    assert_eq!(last["interrupted"], true, "{last}");
    assert!(last["figures"]["samples"].as_u64().is_some_and(|n| n > 0), "{last}");
}

/// `stress` takes units like `run` and `bench`, and Ctrl-C ends it with its
/// checks and tally (sent once it said it catches Ctrl-C, then 5 s into
/// its work).
#[test]
fn stress_takes_units_and_ctrl_c_tallies() {
    require_kvm();
    let _one = serialize();
    let r = interrupt_rtswitch_when(
        &["stress", "--duration", "1m", "--vcpus", "1", "--max-gap", "20ms", "--cs-us", "200"],
        "(Ctrl-C: stop early",
        Duration::from_secs(5),
        LIMIT,
    );
    r.assert_code(ExitCode::Interrupted);
    r.assert_contains("stress tally (seed ").assert_contains(", interrupted: 60s asked)");
    r.assert_contains("invariant violations and errors: 0");
}

/// `ctl` as a QEMU user reads it: sites by dimension, an aligned switch
/// table with `-` for a failed switch's timings, `--json` is QMP's reply,
/// and `--timeout 0` says what it takes.
#[test]
fn ctl_tables_json_and_timeouts() {
    let _one = serialize();
    // The lock-hog holds its lock from before the first request until 1 s
    // after it, however slow the host.
    let vmm = BackgroundVmm::start(
        "newcomer-ctl",
        &[
            "--vcpus",
            "2",
            "--load",
            "none",
            "--switch-timeout",
            "200ms",
            "--guest-arg",
            "hold-lock=1000",
            "--guest-arg",
            "after-request",
        ],
    );
    vmm.wait_for_output("'lock-hog' holds its lock", Duration::from_secs(30), "the lock-hog never took its lock");
    let sock = vmm.sock.to_str().expect("utf-8").to_string();
    let ctl = |args: &[&str]| {
        let mut all = vec!["ctl", "--api-sock", &sock];
        all.extend_from_slice(args);
        run_rtswitch_env(&all, &[], REPLY_TIMEOUT)
    };
    // The lock-hog holds a lock: this switch fails.
    ctl(&["mode", "rt"]).assert_ctl(CtlExit::ErrorReply);
    let mut s = vmm.session();
    switch_until_ok(&mut s, "rt", Duration::from_secs(30), &vmm);
    let m = ctl(&["mode", "mainline"]);
    m.assert_ctl(CtlExit::Ok).assert_contains(" call sites patched (").assert_contains(" interrupt dispatch)");
    let t = ctl(&["switches"]);
    t.assert_ctl(CtlExit::Ok);
    let lines: Vec<&str> = t.stdout.lines().filter(|l| l.contains("->")).collect();
    assert!(lines.len() >= 3, "{}", t.stdout);
    let arrow = lines[0].find("->").expect("heading");
    assert!(lines.iter().all(|l| l.get(arrow..arrow + 2) == Some("->")), "aligned:\n{}", t.stdout);
    let failed = lines.iter().find(|l| l.contains("FAILED")).expect("the failed switch");
    assert!(!failed.contains("0.000"), "no timings for a failed switch: {failed}");
    let cells: Vec<&str> = failed.split_whitespace().collect();
    assert_eq!(&cells[5..8], ["-", "-", "-"], "{failed}");
    let j = ctl(&["latency", "--json"]);
    j.assert_ctl(CtlExit::Ok);
    let v: Value = serde_json::from_str(j.stdout.trim()).expect("one JSON reply");
    assert!(v["return"]["modes"].is_array(), "QMP's reply: the figures are under .return: {v}");
    let z = ctl(&["status", "--timeout", "0"]);
    z.assert_ctl(CtlExit::BadArguments).assert_contains("more than 0");
    let (c, out, _) = vmm.quit();
    assert!([0, 11].contains(&c), "{out}");
}
