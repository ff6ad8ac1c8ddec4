//! Switch safety at the lock words: a woken rtmutex waiter
//! takes its lock itself, so a switch can never patch over a lock that is
//! owned by a task the freezer took for asleep; waiters leave their wait
//! when a freeze starts, so a switch waits for at most the critical
//! section in progress.

use std::time::Duration;

use rtswitch_tests::vm::{BackgroundVmm, assert_mode, set_mode};

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
            "--switch-timeout",
            "20s",
            "--guest-arg",
            "handoff-delay=2000",
            // The subject is the freezer's back-out of lingering waiters.
            "--fast-switch",
            "off",
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
    let report = report.unwrap_or_else(|| panic!("no JSON report\n{out}"));
    assert_eq!(report.load_check.result, "ok", "{:?}", report.load_check);
}

/// Six tasks queue for one lock, each holding it 30 ms (fault injection
/// `lock-queue`): a freeze waits for the section in progress and one more
/// at most (the one a waiter may have taken just before the request), not
/// for the queue behind it, which would take 150 ms or more. In both modes.
#[test]
fn a_queue_of_waiters_backs_out_of_a_freeze() {
    for boot_mode in ["rt", "mainline"] {
        let vmm = BackgroundVmm::start(
            "queue",
            &[
                "--vcpus",
                "2",
                "--mode",
                boot_mode,
                "--load",
                "none",
                "--switch-timeout",
                "20s",
                // The watchdog is off: what it would see here is the lock's
                // known unfairness, not a fault. A mainline waiter spins
                // with preemption off and may be overtaken (the lock is not
                // FIFO, so a freeze can make it back out); with the host
                // taking either vCPU at the moments the lock is let go, a
                // waiter was seen overtaken for 4 s while the host took
                // half of each vCPU. The watchdog is tested in faults.rs;
                // a stuck guest still fails here (switches, quit, exit 0).
                "--watchdog",
                "0",
                "--guest-arg",
                "lock-queue=6",
                // The subject is the freeze's back-out (its phases).
                "--fast-switch",
                "off",
            ],
        );
        let mut s = vmm.session();
        vmm.wait_for_output("tasks queue for one lock", Duration::from_secs(30), "the queue never started");
        std::thread::sleep(Duration::from_millis(300));
        let mut mode = boot_mode;
        for _ in 0..6 {
            let target = if mode == "rt" { "mainline" } else { "rt" };
            let r = set_mode(&mut s, target);
            assert!(r["return"].is_object(), "switch to {target}: {r}\n{}", vmm.output());
            let freeze = r["return"]["phases"]["guest_freeze_us"].as_u64().expect("guest freeze phase");
            assert!(
                freeze <= 90_000,
                "a freeze from {mode} took {freeze} us: more than two 30 ms sections and a 30 ms margin (the queue was not left): {r}"
            );
            mode = target;
            std::thread::sleep(Duration::from_millis(100));
        }
        let (c, out, _) = vmm.quit();
        assert_eq!(c, 0, "exit {c}:\n{out}");
    }
}
