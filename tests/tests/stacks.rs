//! Reliable stack walks of the guest from the VMM (`x-query-stacks`):
//! with every vCPU held, every task's frame chain is walked, a
//! switched-out task's from its saved context and a running task's from
//! its vCPU's registers (through interrupt frames and the shim's halt
//! path), each bounded by the task's own stack, and judged reliable only
//! when it ends at the task's base through known frames. Under the lock
//! load and the device interrupt load, repeatedly: every spawned task
//! that is not on a CPU walks reliably to the trampoline through the
//! scheduler, most running tasks walk reliably too (one stopped in
//! assembly without a frame record is the accepted reason not to), the
//! idle tasks end at the boot entry, and the hold is released (the run
//! goes on and ends cleanly).

use rtswitch_tests::vm::{BackgroundVmm, exec};
use serde_json::json;

const QUERIES: usize = 30;

#[test]
fn every_task_is_walked_to_its_base() {
    let vmm = BackgroundVmm::start("stacks", &["--vcpus", "2", "--load", "locks", "--irq-load", "2000"]);
    let mut client = vmm.session();
    let (mut reliable, mut running_reliable, mut running, mut interrupted) = (0, 0, 0, 0);
    let mut reasons = Vec::new();
    for _ in 0..QUERIES {
        let r = exec(&mut client, json!({"execute": "x-query-stacks"}));
        let r = &r["return"];
        let tasks = r["tasks"].as_array().unwrap_or_else(|| panic!("no tasks: {r}"));
        assert!(tasks.len() >= 8, "{r}");
        for t in tasks {
            let why = t["why"].as_str().unwrap_or_default().to_string();
            if t["running"] == true {
                running += 1;
                running_reliable += usize::from(t["reliable"] == true);
            }
            if t["reliable"] == true {
                reliable += 1;
                interrupted += usize::from(t["interrupts"].as_u64().unwrap_or(0) > 0);
                let depth = t["depth"].as_u64().unwrap();
                assert!((1..=64).contains(&depth), "{t}");
            } else {
                // A task off its CPU has no reason to be unreliable; a
                // running one may have stopped in the entry's assembly or
                // mid context switch.
                assert!(t["running"] == true || t["slot"].as_u64() >= Some(128), "{t}");
                reasons.push(format!("{}: {why}", t["task"]));
            }
            if t["slot"].as_u64() >= Some(128) && t["reliable"] == true {
                let frames = t["frames"].as_array().unwrap();
                assert!(frames.iter().any(|f| f.as_str().is_some_and(|f| f.contains("kernel_main"))), "{t}");
            }
        }
    }
    eprintln!(
        "{reliable} reliable walks; running tasks {running_reliable}/{running} reliable; {interrupted} through an \
         interrupt frame; unreliable: {reasons:#?}"
    );
    assert!(running_reliable * 2 >= running, "most running tasks walk reliably");
    assert!(interrupted > 0, "no walk went through an interrupt frame");
    drop(client);
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
}
