//! The VMM's threads' scheduling, read from `/proc/PID/task/*/stat` of a
//! running VM: the control thread (the process's main thread: the control
//! socket, the switch coordinator, the stop-machine hold) at SCHED_FIFO 1
//! by default where the host allows it (root here, as in CI), at normal
//! priority with `--control-fifo off`; the vCPU threads at normal
//! priority either way (a real-time vCPU that polls would starve the
//! host's other threads on a small host).

use rtswitch_tests::vm::BackgroundVmm;

const SCHED_OTHER: u32 = 0;
const SCHED_FIFO: u32 = 1;

/// A thread's name, scheduling policy and real-time priority.
type Sched = (String, u32, u32);

/// Every thread of `pid`.
fn threads(pid: u32) -> Vec<Sched> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the VMM's /proc entry");
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default().trim().to_string();
        // After the parenthesised name: field 3 (state) onwards; the rt
        // priority is field 40 and the policy field 41 (proc(5)).
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse().ok()).unwrap_or(u32::MAX);
        out.push((name, field(41), field(40)));
    }
    out
}

fn main_and_vcpus(vmm: &BackgroundVmm) -> ((u32, u32), Vec<Sched>) {
    let pid = vmm.pid();
    let all = threads(pid);
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string();
    let main = all.iter().find(|(n, ..)| *n == comm).map(|&(_, p, r)| (p, r)).expect("the main thread");
    let vcpus: Vec<_> = all.into_iter().filter(|(n, ..)| n.starts_with("vcpu")).collect();
    assert_eq!(vcpus.len(), 2, "two vCPU threads");
    (main, vcpus)
}

#[test]
fn the_control_thread_runs_at_fifo_1_and_the_vcpus_at_normal_priority() {
    // SAFETY: geteuid(2) has no failure mode and touches no memory.
    let root = unsafe { libc::geteuid() } == 0;
    let vmm = BackgroundVmm::start("threads-fifo", &["--vcpus", "2", "--load", "none"]);
    let (main, vcpus) = main_and_vcpus(&vmm);
    if root {
        assert_eq!(main, (SCHED_FIFO, 1), "the control thread at SCHED_FIFO 1");
    } else {
        eprintln!("not root: the control thread's SCHED_FIFO is refused here (policy {main:?})");
    }
    for (name, policy, _) in &vcpus {
        assert_eq!(*policy, SCHED_OTHER, "{name} at normal priority");
    }
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");

    let vmm = BackgroundVmm::start("threads-normal", &["--vcpus", "2", "--load", "none", "--control-fifo", "off"]);
    let (main, vcpus) = main_and_vcpus(&vmm);
    assert_eq!(main.0, SCHED_OTHER, "--control-fifo off: the control thread at normal priority");
    assert!(vcpus.iter().all(|(_, p, _)| *p == SCHED_OTHER), "{vcpus:?}");
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
}
