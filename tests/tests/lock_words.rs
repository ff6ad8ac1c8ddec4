//! Switch safety at the lock words (issue 13): a woken rtmutex waiter
//! takes its lock itself, so a switch can never patch over a lock that is
//! owned by a task the freezer took for asleep; waiters leave their wait
//! when a freeze starts, so a switch waits for at most the critical
//! section in progress.

use std::time::Duration;

use rtswitch_tests::vm::{BackgroundVmm, assert_mode, exec, set_mode};
use serde_json::{Value, json};

/// rt → mainline switches while woken waiters linger (fault injection
/// `handoff-delay`: 2 ms between a waiter's wake-up and its taking the
/// lock, busy). Every switch must succeed or fail with nothing patched,
/// the modes must agree after each, no guest panic (a lock owned across a
/// switch trips the preempt- and held-count underflow checks), and the
/// load's consistency check must stay clean.
#[test]
fn lingering_woken_waiters_never_let_a_switch_patch_over_a_lock() {
    let vmm = BackgroundVmm::start(
        "handoff",
        &[
            "--vcpus",
            "2",
            "--mode",
            "rt",
            "--load",
            "locks",
            "--load-threads",
            "3",
            "--cs-us",
            "200",
            "--switch-timeout-ms",
            "20000",
            "--guest-arg",
            "handoff-delay=2000",
        ],
    );
    let mut s = vmm.session();
    let mut mode = "rt";
    let mut ok = 0;
    for _ in 0..24 {
        let target = if mode == "rt" { "mainline" } else { "rt" };
        let r = set_mode(&mut s, target);
        if r["return"].is_object() {
            mode = target;
            ok += 1;
        } else {
            let desc = r["error"]["desc"].as_str().unwrap_or_default();
            assert!(desc.contains("nothing was patched"), "a failed switch must change nothing: {r}\n{}", vmm.output());
        }
        assert_mode(&mut s, mode);
    }
    assert!(ok >= 12, "only {ok} of 24 switches succeeded:\n{}", vmm.output());
    let (c, out, report) = vmm.quit();
    assert_eq!(c, 0, "{out}");
    assert!(out.contains("woken rtmutex waiters wait 2000 us"), "the fault injection did not run:\n{out}");
    assert_eq!(report["load_check"]["result"], "ok", "{report}");
}

/// Under a lock load with long sections and queues of waiters (8 threads
/// over 4 locks), the freeze waits for the sections in progress, not for
/// the queues behind them: every switch's freeze (request to quiescent,
/// the guest's own stamps) stays within two critical sections and a
/// margin for the host, where draining the queues would take several.
#[test]
fn waiters_back_out_so_a_freeze_waits_for_one_section() {
    const CS_MS: u64 = 20;
    for boot_mode in ["mainline", "rt"] {
        let cs = (CS_MS * 1000).to_string();
        let vmm = BackgroundVmm::start(
            "backout",
            &[
                "--vcpus",
                "2",
                "--mode",
                boot_mode,
                "--load",
                "locks",
                "--load-threads",
                "4",
                "--cs-us",
                &cs,
                "--interval-us",
                "10000",
                "--switch-timeout-ms",
                "20000",
            ],
        );
        let mut s = vmm.session();
        let mut mode = boot_mode;
        for _ in 0..8 {
            let target = if mode == "rt" { "mainline" } else { "rt" };
            let r = set_mode(&mut s, target);
            assert!(r["return"].is_object(), "switch to {target}: {r}\n{}", vmm.output());
            mode = target;
            std::thread::sleep(Duration::from_millis(50));
        }
        let page = exec(&mut s, json!({"execute": "query-switches", "arguments": {"last": 8}}));
        let list: Vec<Value> = page["return"]["switches"].as_array().cloned().unwrap_or_default();
        assert_eq!(list.len(), 8, "{page}");
        let bound_us = 2 * CS_MS * 1000 + 30_000;
        for r in &list {
            let freeze = r["phases"]["guest_freeze_us"].as_u64().expect("guest freeze phase");
            assert!(
                freeze <= bound_us,
                "{boot_mode}: a freeze took {freeze} us, more than two {CS_MS} ms sections and a 30 ms margin: {r}"
            );
        }
        let (c, out, report) = vmm.quit();
        assert_eq!(c, 0, "{out}");
        assert_eq!(report["load_check"]["result"], "ok", "{report}");
    }
}
