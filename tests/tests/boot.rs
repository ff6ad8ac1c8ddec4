//! Boot the real guest on /dev/kvm with several vCPU counts.

use std::time::Duration;

use rtswitch_tests::{ExitCode, Scratch, require_kvm, run_rtswitch};

const LIMIT: Duration = Duration::from_secs(60);

fn boot(vcpus: u32) {
    require_kvm();
    let n = vcpus.to_string();
    let r = run_rtswitch(&["run", "--vcpus", &n, "--duration", "0.5"], LIMIT);
    r.assert_code(ExitCode::Ok)
        .assert_contains(&format!("rtswitch guest kernel v{}: {vcpus} CPUs, 128 MiB", env!("CARGO_PKG_VERSION")))
        .assert_contains("guest ready in")
        .assert_contains(&format!("({vcpus}/{vcpus} CPUs online"))
        .assert_contains("guest speed:")
        .assert_contains("guest shut down cleanly");
    for cpu in 0..vcpus {
        r.assert_contains(&format!("cpu {cpu} online"));
    }
    r.assert_not_contains(&format!("cpu {vcpus} online"));
}

#[test]
fn boots_one_vcpu() {
    boot(1);
}

#[test]
fn boots_two_vcpus() {
    boot(2);
}

#[test]
fn boots_four_vcpus() {
    boot(4);
}

#[test]
fn serial_to_file_keeps_stdout_clean() {
    require_kvm();
    let dir = Scratch::new("serial-file");
    let log = dir.0.join("console.log");
    let arg = format!("file:{}", log.display());
    let r = run_rtswitch(&["run", "--vcpus", "2", "--duration", "0.3", "--serial", &arg], LIMIT);
    r.assert_code(ExitCode::Ok);
    assert!(!r.stdout.contains("online"), "console went to stdout: {}", r.stdout);
    let console = std::fs::read_to_string(&log).expect("the console file exists");
    assert!(console.contains("cpu 1 online"), "console file: {console}");
}

#[test]
fn serial_none_discards_the_console() {
    require_kvm();
    let r = run_rtswitch(&["run", "--vcpus", "1", "--duration", "0.3", "--serial", "none"], LIMIT);
    r.assert_code(ExitCode::Ok).assert_not_contains("cpu 0 online").assert_contains("guest ready in");
}

/// Ctrl-C once the guest is ready (seen on stderr, however long the boot
/// took) shuts the guest down cleanly.
#[test]
fn sigint_shuts_the_guest_down_cleanly() {
    require_kvm();
    let _slots = rtswitch_tests::slots::take(2);
    let dir = Scratch::new("sigint");
    let err_path = dir.0.join("err.log");
    let mut child = std::process::Command::new(rtswitch_tests::rtswitch_bin())
        .args(["run", "--vcpus", "2"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("start rtswitch");
    let read_err = || std::fs::read_to_string(&err_path).unwrap_or_default();
    let booting = std::time::Instant::now();
    while !read_err().contains("guest ready in") {
        if booting.elapsed() > LIMIT || child.try_wait().expect("wait").is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the guest never became ready:\n{}", read_err());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0, "kill(SIGINT) failed");
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("rtswitch did not exit within {LIMIT:?} of SIGINT");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = read_err();
    assert_eq!(status.code(), Some(0), "stderr:\n{err}");
    assert!(err.contains("signal received"), "stderr:\n{err}");
    assert!(err.contains("guest shut down cleanly"), "stderr:\n{err}");
}

/// Runs `f` with this thread (and so every child it starts) allowed on
/// one host CPU only, the first it may run on now; restores its mask.
fn on_one_host_cpu<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sched_getaffinity/sched_setaffinity(2) on this thread (pid
    // 0) with cpu_set_t values we own; CPU_* only touch those sets.
    unsafe {
        let mut was: libc::cpu_set_t = std::mem::zeroed();
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(libc::sched_getaffinity(0, size, &mut was), 0, "sched_getaffinity");
        let first = (0..libc::CPU_SETSIZE as usize).find(|&c| libc::CPU_ISSET(c, &was)).expect("an allowed CPU");
        let mut one: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(first, &mut one);
        assert_eq!(libc::sched_setaffinity(0, size, &one), 0, "sched_setaffinity");
        let out = f();
        assert_eq!(libc::sched_setaffinity(0, size, &was), 0, "restoring the affinity");
        out
    }
}

/// The VMM tells the guest whether each vCPU has a host CPU of its own
/// (its affinity allows at least as many CPUs as there are vCPUs); the
/// default idle policy, `haltpoll`, polls only then, as Linux's
/// cpuidle-haltpoll needs KVM_HINTS_REALTIME. Both sides say it.
#[test]
fn haltpoll_polls_only_where_each_vcpu_has_a_host_cpu() {
    require_kvm();
    let run = |vcpus: &str| {
        on_one_host_cpu(|| run_rtswitch(&["run", "--vcpus", vcpus, "--duration", "0.5", "--no-workload"], LIMIT))
    };
    let fits = run("1");
    fits.assert_code(ExitCode::Ok)
        .assert_contains("idle=haltpoll: idle CPUs poll adaptively")
        .assert_not_contains("halts at once");
    let over = run("2");
    over.assert_code(ExitCode::Ok)
        .assert_contains("rtswitch: 2 vCPUs on 1 host CPU(s): idle=haltpoll halts at once")
        .assert_contains("idle=haltpoll: idle CPUs halt in the shim (the vCPUs outnumber the host's CPUs: no polling)");
}
