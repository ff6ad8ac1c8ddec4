//! The lock tester end to end: `rtswitch locktest` boots a real VM with
//! the tester threads and runs the project's scenario suite
//! (`tests/locktest/*.tst`, Linux rt-tester's format) over the real QMP
//! socket:
//! - in the rt profile every file passes: FIFO order among equals, PI over
//!   one lock and over chains of four and five locks with stepwise
//!   deboost, steals, the review's ownerless-top-boost deadlock, deadlock
//!   detection, switches idle and refused with a boosted chain;
//! - in mainline the same files check mutual exclusion and say where PI
//!   and rt-only steps do not apply, and none fails;
//! - a scenario that expects what does not happen fails, naming its file,
//!   line and what was expected and seen, with exit code 1.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rtswitch_tests::{Scratch, require_kvm, run_rtswitch};

/// Each scenario waits at most its W: timeout per step; the suite has
/// about 250 steps, most of which take milliseconds. Two of them wait
/// out a 2 s hand-off window twice.
const SUITE_LIMIT: Duration = Duration::from_secs(600);

fn suite() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("locktest");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "tst"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the suite lost files: {files:?}");
    files.iter().map(|p| p.display().to_string()).collect()
}

fn run_suite(profile: &str) -> rtswitch_tests::RunResult {
    require_kvm();
    let files = suite();
    let mut args = vec!["locktest", "--profile", profile];
    args.extend(files.iter().map(String::as_str));
    run_rtswitch(&args, SUITE_LIMIT)
}

#[test]
fn the_suite_passes_in_the_rt_profile() {
    let r = run_suite("rt");
    let out = r.all_output();
    assert_eq!(r.code(), Some(0), "{out}");
    for f in suite() {
        let name = Path::new(&f).file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        assert!(out.lines().any(|l| l.starts_with("PASS") && l.contains(&name)), "{name} did not pass:\n{out}");
    }
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn in_mainline_the_suite_checks_mutual_exclusion_and_says_what_does_not_apply() {
    let r = run_suite("mainline");
    let out = r.all_output();
    assert_eq!(r.code(), Some(0), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    // PI steps are skipped, and said to be.
    assert!(out.contains("not applicable"), "{out}");
}

#[test]
fn a_failing_step_is_named_with_its_line_and_what_was_seen() {
    require_kvm();
    let dir = Scratch::new("locktest-fail");
    // T1 (80) waits for L0, so T0 runs at 80, not 50: line 6 fails.
    let file = dir.file(
        "wrong.tst",
        b"C: schedfifo: 1: 80\nW: nprioeq: 1: 80\nC: lock: 0: 0\nW: locked: 0: 0\nC: lock: 1: 0\nW: prioeq: 0: 50\n",
    );
    let path = file.display().to_string();
    let r = run_rtswitch(&["locktest", "--profile", "rt", "--wait-timeout", "2000", &path], SUITE_LIMIT);
    let out = r.all_output();
    assert_eq!(r.code(), Some(1), "{out}");
    assert!(out.contains("wrong.tst:6"), "{out}");
    assert!(out.contains("FAIL"), "{out}");
}

#[test]
fn scenarios_with_what_this_kernel_lacks_are_refused_before_a_vm_boots() {
    let dir = Scratch::new("locktest-refused");
    let file = dir.file("old.tst", b"C: lock: 0: 0\nC: lockcont: 0: 0\n");
    let path = file.display().to_string();
    let r = run_rtswitch(&["locktest", &path], Duration::from_secs(60));
    let out = r.all_output();
    assert_eq!(r.code(), Some(2), "{out}");
    assert!(out.contains("old.tst:2") && out.contains("pending-owner"), "{out}");
}
