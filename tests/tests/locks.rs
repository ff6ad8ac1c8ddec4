//! The two lock regimes, patched in at boot, and the in-guest self-tests.

use std::time::Duration;

use rtswitch_tests::{ExitCode, RunResult, require_kvm, run_rtswitch};

const LIMIT: Duration = Duration::from_secs(120);

/// The closing `N passed, N failed` line of an in-guest test run.
fn tally(r: &RunResult) -> (u32, u32) {
    let line = r.stdout.lines().rev().find(|l| l.contains(" passed, ") && l.contains(" failed")).unwrap_or_else(|| {
        panic!("no 'N passed, N failed' line\n--- stdout ---\n{}\n--- stderr ---\n{}", r.stdout, r.stderr)
    });
    let nums: Vec<u32> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    assert!(nums.len() >= 2, "malformed tally line {line:?}");
    (nums[0], nums[1])
}

fn selftest(mode: &str, extra: &[&str]) -> RunResult {
    require_kvm();
    let mut args = vec!["run", "--vcpus", "2", "--selftest", "--mode", mode];
    args.extend_from_slice(extra);
    run_rtswitch(&args, LIMIT)
}

#[test]
fn selftests_pass_in_mainline_mode() {
    let r = selftest("mainline", &[]);
    r.assert_code(ExitCode::Ok).assert_contains("mode mainline");
    let (passed, failed) = tally(&r);
    assert_eq!(failed, 0, "{}", r.stdout);
    assert!(passed >= 4, "only {passed} tests ran:\n{}", r.stdout);
    r.assert_contains("mutual exclusion").assert_contains("mainline: holder not preempted");
}

#[test]
fn selftests_pass_in_rt_mode() {
    let r = selftest("rt", &[]);
    r.assert_code(ExitCode::Ok).assert_contains("mode rt");
    let (passed, failed) = tally(&r);
    assert_eq!(failed, 0, "{}", r.stdout);
    assert!(passed >= 6, "only {passed} tests ran:\n{}", r.stdout);
    r.assert_contains("rt: priority inversion").assert_contains("rt: PI chain");
    r.assert_contains("rt: an adaptive spin takes the lock from a running owner");
}

/// The priority-inversion test must be able to fail: with priority
/// inheritance switched off in the guest, it does.
#[test]
fn priority_inversion_test_fails_without_pi() {
    let r = selftest("rt", &["--guest-arg", "no-pi"]);
    r.assert_code(ExitCode::GuestFailure);
    let (_, failed) = tally(&r);
    assert!(failed >= 1, "{}", r.stdout);
    let line = r.stdout.lines().find(|l| l.contains("rt: priority inversion")).expect("the PI test ran");
    assert!(line.contains("FAILED"), "{line}");
}

#[test]
fn rt_deadlock_is_detected_and_names_the_cycle() {
    require_kvm();
    let r = run_rtswitch(&["run", "--vcpus", "2", "--mode", "rt", "--guest-arg", "deadlock"], LIMIT);
    r.assert_code(ExitCode::GuestPanic).assert_contains("deadlock");
    r.assert_contains("deadlock-a").assert_contains("deadlock-b");
}

#[test]
fn boot_mode_is_patched_and_reported() {
    require_kvm();
    for mode in ["mainline", "rt"] {
        let r = run_rtswitch(&["run", "--vcpus", "2", "--mode", mode, "--duration", "0.5"], LIMIT);
        r.assert_code(ExitCode::Ok).assert_contains(&format!("mode {mode}"));
        // `mode rt: 217 call sites (83 lock, 133 preemption, 1 interrupt dispatch) verified, 217 patched`
        let line = r.stderr.lines().find(|l| l.contains(" call sites (")).expect("the patch line");
        assert!(line.contains(" lock, ") && line.contains(" preemption, ") && line.contains(" interrupt dispatch)"));
        let nums: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
        assert!(nums.len() == 5 && nums[0] > 0, "{line}");
        assert_eq!(nums[1] + nums[2] + nums[3], nums[0], "the sites by dimension add up: {line}");
        assert_eq!(nums[0], nums[4], "every verified site is patched to the boot mode: {line}");
    }
}

/// The `rtmutex adaptive spinning: ...` counts a run printed at shutdown:
/// (took the lock, owner off CPU, owner's vCPU preempted, out of budget).
fn spin_counts(r: &RunResult) -> Option<[u64; 4]> {
    let line = r.stdout.lines().find(|l| l.starts_with("rtmutex adaptive spinning: "))?;
    let nums: Vec<u64> = line.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
    Some([nums[0], nums[1], nums[2], nums[3]])
}

#[test]
fn contended_rtmutexes_spin_adaptively_unless_told_not_to() {
    require_kvm();
    let args =
        ["run", "--vcpus", "2", "--mode", "rt", "--load", "locks", "--cs-us", "20", "--duration", "2", "--quiet"];
    let r = run_rtswitch(&args, LIMIT);
    r.assert_code(ExitCode::Ok).assert_contains("load check: ok");
    // Steal time is reported either way: on where KVM offers it (the
    // vCPU-preempted hint the spinners read), or said to be missing.
    assert!(
        r.stdout.contains("steal time: on") || r.stdout.contains("steal time: not offered"),
        "no steal-time line\n{}",
        r.stdout
    );
    // Under the lock load contended locks spin, whatever the host's
    // timing: a spin that finds the owner's vCPU preempted still counts
    // (it stops). That a spin takes the lock is arranged by the self-test
    // below, not hoped for from the load.
    let counts = spin_counts(&r).unwrap_or_else(|| panic!("no adaptive-spinning line under lock load\n{}", r.stdout));
    assert!(counts.iter().sum::<u64>() > 0, "no contended lock spun: {counts:?}");

    let mut no_spin = args.to_vec();
    no_spin.extend(["--guest-arg", "no-spin"]);
    let r = run_rtswitch(&no_spin, LIMIT);
    r.assert_code(ExitCode::Ok).assert_contains("load check: ok");
    assert_eq!(spin_counts(&r), None, "a spinner ran with spinning off\n{}", r.stdout);
}

/// The arranged case (a running owner lets go within the spin budget)
/// passes in `selftests_pass_in_rt_mode`; with spinning off it must fail.
#[test]
fn the_adaptive_spin_self_test_fails_without_spinning() {
    let r = selftest("rt", &["--guest-arg", "no-spin"]);
    r.assert_code(ExitCode::GuestFailure);
    let line = r.stdout.lines().find(|l| l.contains("an adaptive spin takes the lock")).expect("the spin test ran");
    assert!(line.contains("FAILED"), "{line}\n{}", r.stdout);
}
