//! A VMM running in the background with its control socket, for the tests
//! that talk to a live VM (stress, hostile input, fault injection).
//!
//! Every wait has a deadline; the VMM is killed when the handle is dropped
//! (a failing test never leaves a VM behind).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rtswitch::api::child::ready_session;
use rtswitch::api::client::Session;
use rtswitch::child::Launched;
use serde_json::{Value, json};

use crate::{RunReport, Scratch, SwitchRecord, require_kvm, rtswitch_bin};

/// How long a VM may take to boot, and a reply to come.
pub const BOOT_LIMIT: Duration = Duration::from_secs(60);
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// `rtswitch run --api-sock ... --json ...` in the background.
pub struct BackgroundVmm {
    child: Option<Launched>,
    /// Its vCPUs' slots, given back after the VMM has exited (the field
    /// order drops the child, which kills and reaps it, first).
    _slots: Option<crate::slots::VmSlots>,
    pub sock: PathBuf,
    pub json: PathBuf,
    dir: Scratch,
}

impl BackgroundVmm {
    /// Starts `rtswitch run --quiet --api-sock S --json J ARGS` and waits
    /// until the guest is ready.
    pub fn start(name: &str, args: &[&str]) -> Self {
        let vmm = Self::spawn(name, args);
        vmm.wait_ready();
        vmm
    }

    /// Starts it without waiting for the guest.
    pub fn spawn(name: &str, args: &[&str]) -> Self {
        Self::spawn_env(name, args, &[])
    }

    /// [`Self::spawn`] with `env` added to its environment.
    pub fn spawn_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        require_kvm();
        let dir = Scratch::new(name);
        let sock = dir.0.join("api.sock");
        let json = dir.0.join("run.json");
        let mut all = vec![
            "run".to_string(),
            "--quiet".into(),
            "--api-sock".into(),
            sock.display().to_string(),
            "--json".into(),
            json.display().to_string(),
        ];
        all.extend(args.iter().map(|s| s.to_string()));
        let slots = crate::slots::take_for(&all.iter().map(String::as_str).collect::<Vec<_>>());
        let child = Launched::spawn(
            Command::new(rtswitch_bin())
                .args(&all)
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(dir.0.join("out.log")).expect("log file"))
                .stderr(std::fs::File::create(dir.0.join("err.log")).expect("log file")),
        )
        .expect("start rtswitch");
        Self { child: Some(child), _slots: slots, sock, json, dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").pid()
    }

    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// Threads of the VMM process now (`/proc/PID/task`).
    pub fn thread_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid())).map(|d| d.count()).unwrap_or(0)
    }

    /// Waits until the VMM's output contains `needle`, failing the test with
    /// `what` after `limit`.
    pub fn wait_for_output(&self, needle: &str, limit: Duration, what: &str) {
        let start = Instant::now();
        while !self.output().contains(needle) {
            assert!(start.elapsed() < limit, "{what}:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until `query-status` says ready.
    pub fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if self.sock.exists() && ready_session(&self.sock, REPLY_TIMEOUT).is_some() {
                return;
            }
            self.assert_alive("booting");
            assert!(start.elapsed() < BOOT_LIMIT, "the VMM never became ready:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fails the test if the VMM has exited.
    pub fn assert_alive(&self, when: &str) {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Field 3 is the state; Z (zombie) means it exited and is not reaped.
        let state = status.rsplit(')').next().and_then(|r| r.split_whitespace().next()).unwrap_or("?");
        assert!(!status.is_empty() && state != "Z" && state != "X", "the VMM exited ({when}):\n{}", self.output());
    }

    pub fn session(&self) -> Session {
        Session::connect(&self.sock, REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to the control socket: {e}\n{}", self.output()))
    }

    /// What the VMM printed so far (guest console, then its own lines).
    pub fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            std::fs::read_to_string(self.dir.0.join("out.log")).unwrap_or_default(),
            std::fs::read_to_string(self.dir.0.join("err.log")).unwrap_or_default()
        )
    }

    /// Waits (at most `limit`) for the VMM to exit by itself; returns its
    /// exit code and output.
    pub fn wait_exit(&mut self, limit: Duration) -> (i32, String) {
        let mut child = self.child.take().expect("running");
        let Some(status) = child.wait_for(limit) else {
            child.kill();
            panic!("the VMM did not exit within {limit:?}; killed it:\n{}", self.output());
        };
        (status.code().unwrap_or(-1), self.output())
    }

    /// Sends `quit`, waits for the exit, checks that the socket file is
    /// gone; returns the exit code, the output and the `--json` report
    /// (`None`: not written; one that does not match its schema fails the test).
    pub fn quit(self) -> (i32, String, Option<RunReport>) {
        let reply = self.session().execute(json!({"execute": "quit"}), &mut |_| {});
        assert!(reply.is_ok_and(|r| r.get("return").is_some()), "quit was not accepted:\n{}", self.output());
        self.quit_after_request()
    }

    /// As [`Self::quit`], when `quit` was already sent.
    pub fn quit_after_request(mut self) -> (i32, String, Option<RunReport>) {
        let (code, out) = self.wait_exit(BOOT_LIMIT);
        assert!(!self.sock.exists(), "the VMM left its socket file behind:\n{out}");
        let report = std::fs::read_to_string(&self.json).ok().map(|t| crate::parse_report(&t));
        (code, out, report)
    }
}

impl Drop for BackgroundVmm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill();
        }
    }
}

/// Runs one command; panics (with the command) when no reply comes.
pub fn exec(s: &mut Session, cmd: Value) -> Value {
    let shown = cmd.to_string();
    s.execute(cmd, &mut |_| {}).unwrap_or_else(|e| panic!("no reply to {shown}: {e}"))
}

/// Repeats `set-mode` (200 ms apart) until it succeeds, failing the test
/// after `limit`: for switches that must work once an obstacle is gone.
pub fn switch_until_ok(s: &mut Session, mode: &str, limit: Duration, vmm: &BackgroundVmm) {
    let start = Instant::now();
    loop {
        let r = set_mode(s, mode);
        if r["return"]["mode"] == mode {
            return;
        }
        assert!(start.elapsed() < limit, "the switch to {mode} never succeeded: {r}\n{}", vmm.output());
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn set_mode(s: &mut Session, mode: &str) -> Value {
    exec(s, json!({"execute": "set-mode", "arguments": {"mode": mode}}))
}

/// The other mode.
pub fn other(mode: &str) -> &'static str {
    if mode == "rt" { "mainline" } else { "rt" }
}

/// Asserts the VMM's, the guest's and the site bytes' modes agree and
/// equal `expected`; returns the `query-mode` reply.
pub fn assert_mode(s: &mut Session, expected: &str) -> Value {
    let m = exec(s, json!({"execute": "query-mode"}));
    let r = &m["return"];
    assert_eq!(r["mode"], expected, "VMM mode: {m}");
    assert_eq!(r["sites_mode"], expected, "site bytes disagree with the mode: {m}");
    assert_eq!(r["guest_mode"], expected, "guest mode disagrees: {m}");
    assert!(r["switching"].is_null(), "a switch is still in progress: {m}");
    m
}

/// Checks a `switches` list (from `query-switches` pages, read with
/// [`switch_records`], or the JSON report): numbered consecutively in order
/// from 1 (or, when the oldest records were forgotten, from the first
/// listed), each a success or a failure with a reason, successes chaining
/// from one mode to the other starting at `boot_mode` (or the first listed
/// record's `from`). Returns (succeeded, failed) among them and the mode
/// after the last success.
pub fn check_switch_history(list: &[SwitchRecord], boot_mode: &str) -> (usize, usize, String) {
    let first = list.first().map_or(1, |r| r.seq);
    let mut mode = match list.first() {
        Some(r) if first > 1 => r.from.clone(),
        _ => boot_mode.to_string(),
    };
    let (mut ok, mut failed) = (0, 0);
    for (i, r) in list.iter().enumerate() {
        assert_eq!(r.seq, first + i as u64, "switch records out of order or missing at #{i}: {r:?}");
        assert_eq!(r.from, mode, "switch #{} starts from the wrong mode: {r:?}", i + 1);
        assert_eq!(r.to, other(&mode), "switch #{} is not a toggle: {r:?}", i + 1);
        if r.ok {
            assert_eq!(r.reason, "", "{r:?}");
            assert!(r.sites_patched > 0, "a success patched nothing: {r:?}");
            ok += 1;
            mode = other(&mode).to_string();
        } else {
            assert!(!r.reason.trim().is_empty(), "a failed switch without a reason: {r:?}");
            assert_eq!(r.sites_patched, 0, "a failed switch patched sites: {r:?}");
            failed += 1;
        }
    }
    (ok, failed, mode)
}

/// The records of `query-switches` pages, read as the switch record they
/// are written from.
pub fn switch_records(list: Vec<Value>) -> Vec<SwitchRecord> {
    serde_json::from_value(Value::Array(list)).unwrap_or_else(|e| panic!("a switch record does not read: {e}"))
}
