//! Hostile local clients of the control socket: slots
//! held by clients that never negotiate, clients that stay silent, a VMM
//! out of file descriptors, and a socket path taken over by someone else.
//!
//! Time bounds: the server closes an un-negotiated client 5 s after it
//! connected, checked once a second (`NEGOTIATION_DEADLINE`,
//! `SWEEP_PERIOD` in vmm/src); the waits below allow twice that and more
//! for a loaded host. Nothing here depends on the host's speed beyond it.

use std::io::{BufRead, BufReader};
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use rtswitch::api::server::{MAX_CLIENTS, NEGOTIATION_DEADLINE};
use rtswitch_tests::qmp::RawQmp;
use rtswitch_tests::vm::{BackgroundVmm, exec};
use serde_json::{Value, json};

const VM: &[&str] = &["--vcpus", "1", "--load", "none"];

/// The next line a raw connection receives, as JSON (`None`: closed or
/// nothing within `limit`).
fn next_line(r: &mut BufReader<UnixStream>, limit: Duration) -> Option<Value> {
    r.get_ref().set_read_timeout(Some(limit)).ok()?;
    let mut line = String::new();
    match r.read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => serde_json::from_str(&line).ok(),
    }
}

/// Whether the server closed the connection (EOF within `limit`).
fn closed(r: &mut BufReader<UnixStream>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        r.get_ref().set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let mut line = String::new();
        match r.read_line(&mut line) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn clients_that_never_negotiate_cannot_hold_every_slot() {
    let vmm = BackgroundVmm::start("abuse-slots", VM);
    let mut squatters: Vec<BufReader<UnixStream>> = (0..MAX_CLIENTS)
        .map(|i| {
            let s = UnixStream::connect(&vmm.sock).unwrap_or_else(|e| panic!("squatter {i}: {e}"));
            let mut r = BufReader::new(s);
            let greeting = next_line(&mut r, Duration::from_secs(30)).expect("a greeting");
            assert!(greeting.get("QMP").is_some(), "{greeting}");
            r
        })
        .collect();
    // Full: the next client is refused.
    let mut late = BufReader::new(UnixStream::connect(&vmm.sock).expect("connect"));
    let refused = next_line(&mut late, Duration::from_secs(30)).expect("a refusal");
    assert!(refused["error"]["desc"].as_str().is_some_and(|d| d.contains("too many clients")), "{refused}");
    // After the negotiation deadline every squatter is closed, with a reason.
    let started = Instant::now();
    let limit = NEGOTIATION_DEADLINE * 2 + Duration::from_secs(10);
    for (i, r) in squatters.iter_mut().enumerate() {
        let left = limit.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
        let why = next_line(r, left).unwrap_or_else(|| panic!("squatter {i} was not told why it is closed"));
        assert!(why["error"]["desc"].as_str().is_some_and(|d| d.contains("negotiation")), "{why}");
        assert!(closed(r, Duration::from_secs(5)), "squatter {i} is still connected");
    }
    eprintln!("{MAX_CLIENTS} squatters closed {:?} after the last connected", started.elapsed());
    // A real client gets in and is served.
    let mut s = vmm.session();
    let st = exec(&mut s, json!({"execute": "query-status"}));
    assert_eq!(st["return"]["running"], true, "{st}");
    drop(s);
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_silent_client_is_closed_after_the_idle_timeout() {
    let mut args = VM.to_vec();
    args.extend(["--api-idle-timeout", "2"]);
    let vmm = BackgroundVmm::start("abuse-idle", &args);
    let mut quiet = RawQmp::negotiated(&vmm.sock);
    let t = Instant::now();
    let why = quiet.try_message().expect("a closing message");
    assert!(why["error"]["desc"].as_str().is_some_and(|d| d.contains("--api-idle-timeout")), "{why}");
    assert!(quiet.try_message().is_none(), "the connection is closed");
    let waited = t.elapsed();
    // 2 s of silence, then the next sweep (1 s), with room for a loaded host.
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(15), "closed after {waited:?}");
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
}

/// The lowest descriptor number `pid` has free (a limit of it leaves
/// no descriptor to open).
fn lowest_free_fd(pid: u32) -> u64 {
    let open: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    (0..).find(|n| !open.contains(n)).unwrap_or(0)
}

/// The share of a CPU `pid` used over `for_`.
fn cpu_share(pid: u32, for_: Duration) -> f64 {
    let (ticks, t) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(for_);
    // USER_HZ is 100 on Linux.
    (cpu_ticks(pid) - ticks) as f64 / 100.0 / t.elapsed().as_secs_f64()
}

/// CPU time (user + system) of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

#[test]
fn a_vmm_out_of_descriptors_backs_off_instead_of_spinning() {
    let vmm = BackgroundVmm::start("abuse-emfile", VM);
    let pid = vmm.pid();
    let first = RawQmp::negotiated(&vmm.sock);
    let idle = cpu_share(pid, Duration::from_secs(2));
    let mut old = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
    // No descriptor left to open (the soft limit only).
    let lim = |cur: u64, max: u64| libc::rlimit64 { rlim_cur: cur, rlim_max: max };
    // SAFETY: prlimit64(2) on a child this test started, into a local struct.
    let rc = unsafe { libc::prlimit64(pid as libc::pid_t, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let low = lim(lowest_free_fd(pid), old.rlim_max);
    // SAFETY: as above, from a local struct.
    let rc = unsafe { libc::prlimit64(pid as libc::pid_t, libc::RLIMIT_NOFILE, &low, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    // These wait in the listen backlog: accept fails with EMFILE.
    let waiting: Vec<UnixStream> = (0..8).map(|_| UnixStream::connect(&vmm.sock).expect("connect")).collect();
    let starved = cpu_share(pid, Duration::from_secs(3));
    let err = std::fs::read_to_string(vmm.dir().join("err.log")).unwrap_or_default();
    let accept_lines = err.lines().filter(|l| l.contains("accept failed")).count();
    eprintln!(
        "out of descriptors for 3 s: {:.0}% of a CPU (idle: {:.0}%), {accept_lines} accept warnings",
        starved * 100.0,
        idle * 100.0
    );
    assert!(accept_lines >= 1, "accept never failed: the test did not starve the VMM:\n{err}");
    // A spinning loop takes a whole CPU more than idle and logs per
    // wake-up; backing off (0.5 s) retries twice a second and warns at
    // most ratelimit::BURST times per 5 s (and a count).
    assert!(starved - idle < 0.5, "the VMM spun: {:.0}% of a CPU", starved * 100.0);
    assert!(accept_lines <= rtswitch::ratelimit::BURST as usize + 2, "{accept_lines} accept warnings:\n{err}");
    // With a descriptor free again the waiting clients are served.
    drop(first);
    // SAFETY: as above: the limit as it was.
    let rc = unsafe { libc::prlimit64(pid as libc::pid_t, libc::RLIMIT_NOFILE, &old, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    drop(waiting);
    let mut s = vmm.session();
    assert_eq!(exec(&mut s, json!({"execute": "query-status"}))["return"]["running"], true);
    drop(s);
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
}

#[test]
fn the_vmm_removes_only_its_own_socket() {
    let mut vmm = BackgroundVmm::start("abuse-owner", VM);
    // Someone else takes the path over during the run.
    std::fs::remove_file(&vmm.sock).expect("remove the VMM's socket");
    let theirs = UnixListener::bind(&vmm.sock).expect("bind another socket at the path");
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    unsafe { libc::kill(vmm.pid() as libc::pid_t, libc::SIGINT) };
    let (code, out) = vmm.wait_exit(Duration::from_secs(60));
    assert_eq!(code, 0, "{out}");
    assert!(vmm.sock.exists(), "the VMM removed a socket that was not its own:\n{out}");
    assert!(out.contains("was not removed"), "{out}");
    // A VMM started at a path someone serves is refused, and leaves it alone.
    let r = rtswitch_tests::run_rtswitch(
        &["run", "--vcpus", "1", "--duration", "1", "--api-sock", vmm.sock.to_str().expect("utf-8")],
        Duration::from_secs(60),
    );
    r.assert_code(rtswitch_tests::ExitCode::BadArguments).assert_contains("in use");
    assert!(vmm.sock.exists());
    drop(theirs);
}
