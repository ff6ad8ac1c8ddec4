//! Reliable stack walks of the guest from the VMM (`x-query-stacks`), the
//! first piece of the one-blackout switch: with every vCPU held, every
//! switched-out task's frame chain is walked from its saved context and
//! judged reliable only when it ends at the task trampoline through known
//! functions. Under the lock load, repeatedly: every task that is not on
//! a CPU is walked reliably (an interrupt frame, which the walker does not
//! know yet, is the one accepted reason not to be), the chains pass
//! through the scheduler and end in the trampoline, and the hold is
//! released (the run goes on and ends cleanly).

use rtswitch_tests::vm::{BackgroundVmm, exec};
use serde_json::json;

const QUERIES: usize = 20;

#[test]
fn every_switched_out_task_is_walked_to_its_trampoline() {
    let vmm = BackgroundVmm::start("stacks", &["--vcpus", "2", "--load", "locks"]);
    let mut client = vmm.session();
    let mut reliable = 0;
    for _ in 0..QUERIES {
        let r = exec(&mut client, json!({"execute": "x-query-stacks"}));
        let r = &r["return"];
        let tasks = r["tasks"].as_array().unwrap_or_else(|| panic!("no tasks: {r}"));
        assert!(tasks.len() >= 8, "{r}");
        for t in tasks.iter().filter(|t| t["running"] == false) {
            if t["reliable"] == true {
                reliable += 1;
                let frames: Vec<&str> = t["frames"].as_array().unwrap().iter().filter_map(|f| f.as_str()).collect();
                assert!(frames.iter().any(|f| f.contains("schedule")), "{t}");
                let depth = t["depth"].as_u64().unwrap();
                assert!((2..=64).contains(&depth), "{t}");
            } else {
                let why = t["why"].as_str().unwrap_or_default();
                assert!(why.contains("interrupt frame"), "a walk failed for another reason: {t}");
            }
        }
    }
    assert!(reliable >= QUERIES * 5, "only {reliable} reliable walks in {QUERIES} queries");
    drop(client);
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
}
