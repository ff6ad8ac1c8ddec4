//! Helpers for the end-to-end tests: find (or build) the real `rtswitch`
//! binary, check /dev/kvm, run the VMM with a hard time limit and capture
//! what it printed.
//!
//! Every run is bounded: a VMM that does not exit within its limit is
//! killed and the test fails saying so, so no test can hang CI.

pub mod hostile_guest;
pub mod qmp;
pub mod slots;
pub mod vm;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// Exit codes of `rtswitch ctl` (docs/usage.md, "Exit codes"; vmm/src/api/ctl.rs).
pub use rtswitch::api::ctl::CtlExit;
use rtswitch::child::Launched;
/// The run report's schema, which the VMM writes and bench reads (vmm/src/report/json.rs).
pub use rtswitch::report::json::RunReport;
/// A switch record, as the run report and `query-switches` list it.
pub use rtswitch::switch::SwitchRecord;

/// Reads a `--json` report's text through its schema, failing the test
/// if it does not match.
pub fn parse_report(text: &str) -> RunReport {
    RunReport::parse(text).unwrap_or_else(|e| panic!("the --json report does not read: {e}\n{text}"))
}

/// Reads the `--json` report at `path`, failing the test (with the run's
/// stderr) when it was not written or does not match its schema.
pub fn read_report(path: &Path, stderr: &str) -> RunReport {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("--json {} was not written: {e}\n{stderr}", path.display()));
    parse_report(&text)
}
/// Exit codes of `rtswitch` (docs/usage.md, "Exit codes"; vmm/src/exit_code.rs).
pub use rtswitch::exit_code::ExitCode;

/// The `rtswitch` binary under test: `$RTSWITCH_BIN` if set, else the one
/// of this build's profile, built on first use with the cargo running the
/// tests.
pub fn rtswitch_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("RTSWITCH_BIN") {
            return PathBuf::from(p);
        }
        // current_exe: <target>/<profile>/deps/<test>-<hash>
        let exe = std::env::current_exe().expect("the test knows its own path");
        let profile_dir = exe.parent().and_then(Path::parent).expect("test binaries live in <target>/<profile>/deps");
        let profile = profile_dir.file_name().and_then(|s| s.to_str()).unwrap_or("debug");
        let cargo_profile = if profile == "debug" { "dev" } else { profile };
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "rtswitch-tools", "--bin", "rtswitch", "--profile", cargo_profile])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("could not run cargo to build the rtswitch binary");
        assert!(status.success(), "building the rtswitch binary failed: {status}");
        let bin = profile_dir.join("rtswitch");
        assert!(bin.is_file(), "{} is missing after the build", bin.display());
        bin
    })
}

/// Fails the test, with a message that says so, when /dev/kvm cannot be
/// opened: these tests boot real VMs and never skip silently.
pub fn require_kvm() {
    if let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!(
            "this test boots a real VM and needs /dev/kvm, which cannot be opened: {e}. Run it on a host with KVM (as a user with access to /dev/kvm)."
        );
    }
}

/// What one run of the VMM did.
#[derive(Debug)]
pub struct RunResult {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl RunResult {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Both streams, for assertions on what a user would see.
    pub fn all_output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// Asserts the exit code, printing the whole output when it differs.
    pub fn assert_code(&self, expected: ExitCode) -> &Self {
        assert_eq!(
            self.code(),
            Some(i32::from(expected.code())),
            "expected exit code {} ({expected:?}); got {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            expected.code(),
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Asserts `rtswitch ctl`'s exit code, printing the whole output when
    /// it differs.
    pub fn assert_ctl(&self, expected: CtlExit) -> &Self {
        assert_eq!(
            self.code(),
            Some(i32::from(expected.code())),
            "expected ctl exit code {} ({expected:?}); got {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            expected.code(),
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn assert_contains(&self, needle: &str) -> &Self {
        let all = self.all_output();
        assert!(all.contains(needle), "expected output to contain {needle:?}\n--- output ---\n{all}");
        self
    }

    pub fn assert_not_contains(&self, needle: &str) -> &Self {
        let all = self.all_output();
        assert!(!all.contains(needle), "expected output NOT to contain {needle:?}\n--- output ---\n{all}");
        self
    }
}

/// Runs `rtswitch ARGS`, killing it (and failing) after `limit`. A
/// command line that boots VMs first takes their vCPUs' slots (`slots`).
pub fn run_rtswitch(args: &[&str], limit: Duration) -> RunResult {
    run_rtswitch_env(args, &[], limit)
}

/// As [`run_rtswitch`], with `env` added to its environment.
pub fn run_rtswitch_env(args: &[&str], env: &[(&str, &str)], limit: Duration) -> RunResult {
    let _slots = slots::take_for(args);
    let done = Launched::spawn(
        Command::new(rtswitch_bin())
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .expect("could not start the rtswitch binary")
    .finish(limit);
    let Some(status) = done.status else {
        panic!(
            "rtswitch {args:?} did not exit within {limit:?}; killed it\n--- stdout ---\n{}\n--- stderr ---\n{}",
            done.stdout, done.stderr
        );
    };
    RunResult { status, stdout: done.stdout, stderr: done.stderr, elapsed: done.elapsed }
}

/// Runs `rtswitch ARGS`, sends it SIGINT (Ctrl-C) once its output (stdout
/// or stderr) contains `ready` and `after` has passed since, and waits
/// for it to end, killing it (and failing) after `limit`. The handshake
/// makes the interrupt land after what `ready` says, however slow the
/// host is to get there; `after` only lets the run get on with its work.
pub fn interrupt_rtswitch_when(args: &[&str], ready: &str, after: Duration, limit: Duration) -> RunResult {
    let _slots = slots::take_for(args);
    let dir = Scratch::new(&format!("interrupt-{}", args.first().copied().unwrap_or("rtswitch")));
    let (out_path, err_path) = (dir.0.join("out.log"), dir.0.join("err.log"));
    let mut launched = Launched::spawn(
        Command::new(rtswitch_bin())
            .args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out_path).expect("stdout file"))
            .stderr(std::fs::File::create(&err_path).expect("stderr file")),
    )
    .expect("could not start the rtswitch binary");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let output = || format!("--- stdout ---\n{}\n--- stderr ---\n{}", read(&out_path), read(&err_path));
    let started = std::time::Instant::now();
    while !(read(&out_path).contains(ready) || read(&err_path).contains(ready)) {
        if started.elapsed() > limit || launched.wait_for(Duration::ZERO).is_some() {
            launched.kill();
            panic!("rtswitch {args:?} never printed {ready:?}\n{}", output());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(after);
    // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
    unsafe { libc::kill(launched.pid() as libc::pid_t, libc::SIGINT) };
    let done = launched.finish(limit);
    let Some(status) = done.status else {
        panic!("rtswitch {args:?} did not exit within {limit:?} of Ctrl-C; killed it\n{}", output());
    };
    RunResult { status, stdout: read(&out_path), stderr: read(&err_path), elapsed: done.elapsed }
}

/// Whether a run that should have ended `Ok` did, or ended "not ok" only
/// because the host starved the guest: every reason the VMM gave is a
/// watchdog stall it judged host starvation (`vmm/src/watchdog.rs`: steal
/// time and host stalls took at least half the stall's window). For tests
/// that provoke long sections on a busy host, where a watchdog may fire
/// through no fault of the guest; a stuck guest still fails them.
pub fn ok_or_host_starved(code: Option<i32>, output: &str) -> bool {
    if code == Some(i32::from(ExitCode::Ok.code())) {
        return true;
    }
    if code != Some(i32::from(ExitCode::MeasurementNotOk.code())) {
        return false;
    }
    let Some(result) = output.lines().find_map(|l| l.strip_prefix("rtswitch: result: not ok: ")) else {
        return false;
    };
    let all_starved = result.split("; watchdog: ").all(|reason| reason.contains("host starvation, not a stuck guest"));
    if all_starved {
        eprintln!("NOTE: the run was 'not ok' only because the host starved the guest: {result}");
    }
    all_starved
}

/// How long this host kept a runnable thread waiting, watched while a
/// test measures something by the wall clock: a thread that sleeps
/// [`HostStalls::TICK`] at a time records how late each wake-up came.
/// A wall-clock bound of a test is the time the behaviour needs plus what
/// the host took meanwhile ([`HostStalls::bound`]), so a host busy with
/// other work (which delays the VMM and the test's own threads alike)
/// stretches it, while a VMM slow by itself on a quiet host still fails.
pub struct HostStalls {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    worst_us: std::sync::Arc<std::sync::atomic::AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HostStalls {
    /// The watcher's sleep: short, so a stall shows within a few ms.
    pub const TICK: Duration = Duration::from_millis(5);

    /// Starts watching.
    pub fn watch() -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let worst_us = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let thread = {
            let (stop, worst_us) = (stop.clone(), worst_us.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let t = std::time::Instant::now();
                    std::thread::sleep(Self::TICK);
                    let late = t.elapsed().saturating_sub(Self::TICK);
                    worst_us.fetch_max(late.as_micros() as u64, Ordering::Relaxed);
                }
            })
        };
        Self { stop, worst_us, thread: Some(thread) }
    }

    /// The longest wake-up delay seen so far.
    pub fn worst(&self) -> Duration {
        Duration::from_micros(self.worst_us.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// `base` stretched by what the host took meanwhile: twice the worst
    /// stall seen (a request and its answer are two threads, the client's
    /// and the VMM's, and the host may have kept each waiting once).
    pub fn bound(&self, base: Duration) -> Duration {
        base + self.worst() * 2
    }
}

impl Drop for HostStalls {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A scratch directory for one test, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rtswitch-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a scratch directory");
        Self(dir)
    }

    pub fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("writing a scratch file");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tiny deterministic generator (xorshift64*) for the tests' random
/// schedules, so a failing one can be replayed from its seed (never 0).
pub struct Rng(pub u64);

impl Rng {
    /// The next value below `n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1)
    }
}
