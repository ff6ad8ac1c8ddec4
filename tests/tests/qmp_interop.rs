//! Interoperability with a stock QMP client: python's `qemu.qmp` (PyPI),
//! the library QEMU's own tooling uses. `tests/qmp/drive.py` connects with
//! its asyncio `QMPClient` and with the synchronous legacy
//! `QEMUMonitorProtocol` (what qmp-shell and QEMU's iotests use), and
//! `qmp-shell` itself is fed commands on stdin.
//!
//! The library is provisioned by the test, not by CI: the system python's
//! if it has `qemu.qmp`, else a virtualenv under the cargo target
//! directory (`target/qmp-venv`, made once and reused) filled by `pip
//! install qemu.qmp`, bounded in time. If neither works the test fails and
//! says what to install; it never skips.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rtswitch_tests::vm::BackgroundVmm;
use serde_json::{Value, json};

/// Bounds on provisioning (a venv, a pip install from PyPI) and on one
/// client script.
const VENV_LIMIT: Duration = Duration::from_secs(120);
const PIP_LIMIT: Duration = Duration::from_secs(300);
const SCRIPT_LIMIT: Duration = Duration::from_secs(240);

/// Runs `cmd` with stdin `input`, killed (and failing the test) after
/// `limit`.
fn run_bounded(cmd: &mut Command, input: &[u8], limit: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{shown} did not finish within {limit:?}; killed it");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = feeder.join();
    Output { status, stdout: out_reader.join().unwrap_or_default(), stderr: err_reader.join().unwrap_or_default() }
}

fn has_qemu_qmp(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import qemu.qmp, qemu.qmp.legacy"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The cargo target directory these tests were built in.
fn target_dir() -> PathBuf {
    // current_exe: <target>/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().expect("the test knows its own path");
    exe.ancestors().nth(3).expect("test binaries live in <target>/<profile>/deps").to_path_buf()
}

fn how_to_fix(what: &str, out: &Output) -> String {
    format!(
        "{what} (status {}):\n{}\n{}\nThis test needs python3 with the qemu.qmp package: install it (`pip install \
         qemu.qmp`, or Debian's python3-venv so that the test can make its own virtualenv) or let the test reach PyPI.",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A python with `qemu.qmp`: the system's, or a virtualenv made for the
/// tests under the target directory.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let system = PathBuf::from("python3");
        if has_qemu_qmp(&system) {
            return system;
        }
        let venv = target_dir().join("qmp-venv");
        let venv_python = venv.join("bin").join("python3");
        if has_qemu_qmp(&venv_python) {
            return venv_python;
        }
        // Made aside and renamed, so that an interrupted attempt leaves
        // nothing half-made behind.
        let scratch = target_dir().join(format!("qmp-venv.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        let out = run_bounded(Command::new("python3").arg("-m").arg("venv").arg(&scratch), b"", VENV_LIMIT);
        assert!(out.status.success(), "{}", how_to_fix("`python3 -m venv` failed", &out));
        let pip = scratch.join("bin").join("pip");
        let out = run_bounded(
            Command::new(&pip).args(["install", "--disable-pip-version-check", "--quiet", "qemu.qmp"]),
            b"",
            PIP_LIMIT,
        );
        assert!(out.status.success(), "{}", how_to_fix("`pip install qemu.qmp` failed", &out));
        let _ = std::fs::remove_dir_all(&venv);
        if std::fs::rename(&scratch, &venv).is_err() {
            // Another test run put its own in place meanwhile.
            let _ = std::fs::remove_dir_all(&scratch);
        }
        assert!(has_qemu_qmp(&venv_python), "qemu.qmp is not importable from {} after pip install", venv.display());
        venv_python
    })
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("qmp").join("drive.py")
}

/// Runs drive.py with `api` against a fresh VM; checks what it saw and
/// the VM's exit.
fn drive(api: &str) {
    let python = python();
    let vmm = BackgroundVmm::start(&format!("interop-{api}"), &["--vcpus", "2", "--load", "locks"]);
    let out = run_bounded(Command::new(python).arg(script()).arg(api).arg(&vmm.sock), b"", SCRIPT_LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "drive.py {api} failed ({}):\n{stdout}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        vmm.output()
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("drive.py's summary line");
    assert_eq!(seen["events"], json!(["MODE_SWITCHED", "MODE_SWITCHED", "MODE_SWITCHED"]), "{seen}");
    assert_eq!(seen["shutdown"], json!({"guest": false, "reason": "host-qmp-quit"}), "{seen}");
    assert_eq!(seen["switches"], 3, "{seen}");
    // The script sent quit: the VM ends cleanly and its report agrees.
    let (code, out, report) = vmm.quit_after_request();
    assert_eq!(code, 0, "{out}");
    let report = report.unwrap_or_else(|| panic!("no JSON report\n{out}"));
    assert_eq!(report.switch_totals.completed, 3, "{:?}", report.switch_totals);
}

#[test]
fn qemu_qmp_asyncio_client_negotiates_switches_queries_and_quits() {
    drive("async");
}

#[test]
fn qemu_qmp_legacy_client_negotiates_switches_queries_and_quits() {
    drive("legacy");
}

/// Feeds `commands` to qmp-shell on `sock` (which must exit 0); its
/// output, and each reply it printed (one JSON object after the prompt).
fn qmp_shell(python: &Path, sock: &Path, commands: &[u8]) -> (String, Vec<Value>) {
    let out = run_bounded(Command::new(python).args(["-m", "qemu.qmp.qmp_shell"]).arg(sock), commands, SCRIPT_LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "qmp-shell failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let replies =
        stdout.lines().filter_map(|l| l.strip_prefix("(QEMU) ")).filter_map(|l| serde_json::from_str(l).ok()).collect();
    (stdout, replies)
}

#[test]
fn qmp_shell_runs_commands_from_stdin() {
    let python = python();
    let vmm = BackgroundVmm::start("interop-shell", &["--vcpus", "1", "--load", "none"]);
    let commands = b"query-status\nset-mode mode=rt\nquery-switches last=1\nquery-mode\nquit\n";
    let (stdout, replies) = qmp_shell(python, &vmm.sock, commands);
    assert_eq!(replies.len(), 5, "{stdout}");
    assert_eq!(replies[0]["return"]["running"], true, "{stdout}");
    assert_eq!(replies[1]["return"]["mode"], "rt", "{stdout}");
    assert_eq!(replies[2]["return"]["switches"][0]["seq"], 1, "{stdout}");
    assert_eq!(replies[3]["return"]["sites_mode"], "rt", "{stdout}");
    assert_eq!(replies[4], json!({"return": {}}), "{stdout}");
    let (code, out, _) = vmm.quit_after_request();
    assert_eq!(code, 0, "{out}");
}

/// The lock tester driven interactively from qmp-shell, as a person
/// would: a priority for one thread, a lock for another, the state polled
/// until both took effect (the commands are asynchronous, as in Linux's
/// rt-tester, and a thread takes one at a time: qmp-shell cannot wait
/// between two commands to one thread, so each thread gets one), and a
/// refused pending-owner command.
#[test]
fn qmp_shell_drives_the_lock_tester() {
    const POLLS: usize = 200;
    let python = python();
    let vmm = BackgroundVmm::start(
        "interop-locktest",
        &["--vcpus", "2", "--load", "none", "--profile", "rt", "--guest-arg", "locktest"],
    );
    let mut commands = String::from(
        "x-locktest-command thread=1 opcode=schedfifo data=80\nx-locktest-command thread=0 opcode=lock data=3\n",
    );
    for _ in 0..POLLS {
        commands.push_str("x-locktest-state\n");
    }
    commands.push_str("x-locktest-command thread=0 opcode=lockcont data=3\nquit\n");
    let (stdout, replies) = qmp_shell(python, &vmm.sock, commands.as_bytes());
    assert_eq!(replies.len(), POLLS + 4, "{stdout}");
    assert_eq!(replies[0], json!({"return": {}}), "{stdout}");
    assert_eq!(replies[1], json!({"return": {}}), "{stdout}");
    // Once thread 0 shows lock 3 held and thread 1 FIFO 80, it stays so.
    let held = |r: &Value| {
        let (t0, t1) = (&r["return"]["threads"][0], &r["return"]["threads"][1]);
        t0["mutex"][3] == 4
            && t0["opcode"] == 0
            && t0["busy"] == false
            && t1["normal_prio"] == 80
            && t1["busy"] == false
    };
    let states = &replies[2..2 + POLLS];
    let first = states.iter().position(held).unwrap_or_else(|| {
        panic!("thread 0 never held lock 3 with thread 1 at FIFO 80 in {POLLS} polls:\n{stdout}\n{}", vmm.output())
    });
    assert!(states[first..].iter().all(held), "{stdout}");
    assert_eq!(states[0]["return"]["locks"], "rt", "{stdout}");
    // A pending-owner command is refused, saying why.
    let refused = replies[2 + POLLS]["error"]["desc"].as_str().unwrap_or_default();
    assert!(refused.contains("pending-owner"), "{stdout}");
    assert_eq!(replies[3 + POLLS], json!({"return": {}}), "{stdout}");
    let (code, out, _) = vmm.quit_after_request();
    assert_eq!(code, 0, "{out}");
}
