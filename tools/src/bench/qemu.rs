//! QEMU's own pause and resume, the reference the switch targets name
//! (issue: "a switch in one blackout"): `qemu-system-x86_64` booted with
//! KVM, as many vCPUs as the idle switch phase, no disk and no display,
//! its QMP monitor on a Unix socket; then N rounds of QMP `stop` and
//! `cont`, each round timed from sending `stop` to `cont`'s reply, as a
//! client sees it. `stop` returns once every vCPU is out of the guest,
//! `cont` once they are released: the same hold-and-release as an
//! rtswitch blackout, with nothing checked or patched.
//!
//! The guest is QEMU's firmware finding nothing to boot: whatever it
//! does, its vCPUs are stopped and resumed. Where QEMU is not installed,
//! or does not start here (a KVM that runs only paravirtual guests, say),
//! the figures are `None` with the reason, and the bench prints it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use rtswitch::api::client::Session;
use rtswitch::switch::Spread;

/// The executable looked for on `PATH`.
pub const QEMU: &str = "qemu-system-x86_64";
/// How long QEMU gets to open its QMP socket.
const START_LIMIT: Duration = Duration::from_secs(20);
/// Bound on one QMP reply.
const REPLY_LIMIT: Duration = Duration::from_secs(10);
/// Memory of the QEMU guest, MiB.
const MEM_MB: u32 = 128;

/// What the reference measured, or why it did not.
#[derive(Clone, Debug, Default, Serialize)]
pub struct QemuFloor {
    /// The executable used.
    pub qemu: Option<PathBuf>,
    /// `query-version`'s `qemu` triple, `7.2.0`.
    pub version: Option<String>,
    pub vcpus: u32,
    /// Every `stop` + `cont` round trip, µs, in the order measured.
    pub stop_cont_us: Vec<u64>,
    pub stop_cont: Option<Spread>,
    /// Why there are no figures.
    pub unavailable: Option<String>,
}

/// `name` on `PATH` (`path_var`: the variable's value), if it is an
/// executable file there.
pub fn find_on_path(name: &str, path_var: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path_var?)
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// QEMU's arguments: KVM, `vcpus` vCPUs, no devices, display or disk, the
/// QMP monitor at `sock`.
pub fn args(vcpus: u32, sock: &Path) -> Vec<String> {
    [
        "-accel",
        "kvm",
        "-smp",
        &vcpus.to_string(),
        "-m",
        &MEM_MB.to_string(),
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "none",
        "-monitor",
        "none",
        "-qmp",
        &format!("unix:{},server=on,wait=off", sock.display()),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Kills QEMU when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Measures `rounds` stop + cont round trips of a `vcpus`-vCPU QEMU, its
/// socket in `dir`. Never fails: what went wrong is `unavailable`.
pub fn measure(vcpus: u32, rounds: u32, dir: &Path) -> QemuFloor {
    let mut floor = QemuFloor { vcpus, ..QemuFloor::default() };
    let Some(exe) = find_on_path(QEMU, std::env::var_os("PATH").as_deref()) else {
        floor.unavailable = Some(format!("{QEMU} is not installed (not on PATH): no QEMU reference in this run"));
        return floor;
    };
    floor.qemu = Some(exe.clone());
    match run(&exe, vcpus, rounds, dir) {
        Ok((version, us)) => {
            floor.version = version;
            floor.stop_cont = Spread::of(&mut us.clone());
            floor.stop_cont_us = us;
        }
        Err(why) => floor.unavailable = Some(why),
    }
    floor
}

fn run(exe: &Path, vcpus: u32, rounds: u32, dir: &Path) -> Result<(Option<String>, Vec<u64>), String> {
    let sock = dir.join("qemu-qmp.sock");
    let _ = std::fs::remove_file(&sock);
    let err = dir.join("qemu-stderr.txt");
    let stderr = std::fs::File::create(&err).map_err(|e| format!("cannot create {}: {e}", err.display()))?;
    let child = Command::new(exe)
        .args(args(vcpus, &sock))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
    let mut qemu = Qemu(child);
    let said = |what: String| {
        let text = std::fs::read_to_string(&err).unwrap_or_default();
        let text: String = text.trim().chars().take(300).collect();
        if text.is_empty() { what } else { format!("{what}; it said: {text}") }
    };
    let started = Instant::now();
    let mut session = loop {
        if let Ok(Some(status)) = qemu.0.try_wait() {
            return Err(said(format!("{QEMU} exited at start ({status})")));
        }
        if sock.exists()
            && let Ok(s) = Session::connect(&sock, REPLY_LIMIT)
        {
            break s;
        }
        if started.elapsed() > START_LIMIT {
            return Err(said(format!("{QEMU} opened no QMP socket within {START_LIMIT:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut exec = |cmd: &str| -> Result<serde_json::Value, String> {
        let r = session.execute(json!({ "execute": cmd }), &mut |_| {}).map_err(|e| said(format!("QMP {cmd}: {e}")))?;
        if let Some(e) = r.get("error") {
            return Err(format!("QMP {cmd} refused: {e}"));
        }
        Ok(r)
    };
    let version = exec("query-version")?.pointer("/return/qemu").map(|q| {
        let n = |k: &str| q.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
        format!("{}.{}.{}", n("major"), n("minor"), n("micro"))
    });
    // Let the guest start before the first stop.
    std::thread::sleep(Duration::from_millis(200));
    let mut us = Vec::with_capacity(rounds as usize);
    for _ in 0..rounds {
        let t = Instant::now();
        exec("stop")?;
        exec("cont")?;
        us.push(t.elapsed().as_micros() as u64);
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = exec("quit");
    Ok((version, us))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_is_found_only_as_an_executable_file_on_path() {
        let dir = std::env::temp_dir().join(format!("rtswitch-qemu-path-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let exe = dir.join(QEMU);
        std::fs::write(&exe, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o644)).unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), &dir]).unwrap();
        assert_eq!(find_on_path(QEMU, Some(&path)), None, "not executable");
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_on_path(QEMU, Some(&path)), Some(exe.clone()));
        assert_eq!(find_on_path(QEMU, None), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn without_qemu_the_reference_says_why() {
        // This machine has no QEMU (the bench says so); where it has one,
        // the figures are checked instead.
        let dir = std::env::temp_dir().join(format!("rtswitch-qemu-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = measure(2, 5, &dir);
        match &f.unavailable {
            Some(why) if f.qemu.is_none() => assert!(why.contains("not installed"), "{why}"),
            Some(why) => assert!(why.contains(QEMU) || why.contains("QMP"), "{why}"),
            None => {
                assert_eq!(f.stop_cont_us.len(), 5);
                assert!(f.stop_cont.is_some() && f.version.is_some(), "{f:?}");
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_qemu_command_line_has_kvm_the_vcpus_and_the_monitor() {
        let a = args(2, Path::new("/tmp/q.sock"));
        let at = |k: &str| a.iter().position(|x| x == k).map(|i| a[i + 1].as_str());
        assert_eq!(at("-accel"), Some("kvm"));
        assert_eq!(at("-smp"), Some("2"));
        assert_eq!(at("-qmp"), Some("unix:/tmp/q.sock,server=on,wait=off"));
        assert!(a.contains(&"-nodefaults".to_string()));
    }
}
