//! A VM run by this same binary in a child process, driven through its
//! control socket: what `bench` and `stress` measure and hammer.
//! The child is killed and its socket removed when this is dropped.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::client::Session;
use crate::child::Launched;

#[derive(Debug, thiserror::Error)]
pub enum ChildVmError {
    #[error("cannot start `{0} run`: {1}")]
    Spawn(String, std::io::Error),
    #[error("the VM did not become ready within {0:?}")]
    NotReady(Duration),
}

pub struct ChildVm {
    child: Launched,
    sock: PathBuf,
}

/// Bound on a child VM becoming ready.
pub const READY_LIMIT: Duration = Duration::from_secs(60);

impl ChildVm {
    /// Starts `rtswitch run --quiet --serial none --api-sock SOCK ARGS...`.
    pub fn start(sock: &Path, args: &[String]) -> Result<Self, ChildVmError> {
        let exe = std::env::current_exe().map_err(|e| ChildVmError::Spawn("rtswitch".into(), e))?;
        let _ = std::fs::remove_file(sock);
        let child = Launched::spawn(
            Command::new(&exe)
                .args(["run", "--quiet", "--serial", "none", "--api-sock"])
                .arg(sock)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        )
        .map_err(|e| ChildVmError::Spawn(exe.display().to_string(), e))?;
        Ok(Self { child, sock: sock.to_path_buf() })
    }

    /// Waits until the guest is ready; returns a negotiated session.
    pub fn wait_ready(&self, reply_timeout: Duration) -> Result<Session, ChildVmError> {
        let start = Instant::now();
        while start.elapsed() < READY_LIMIT {
            if let Some(s) = ready_session(&self.sock, reply_timeout) {
                return Ok(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(ChildVmError::NotReady(READY_LIMIT))
    }

    pub fn sock(&self) -> &Path {
        &self.sock
    }

    /// Waits for the child to exit (after `quit`); its exit code, or
    /// `None` if it is still running after `limit` or was killed.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        self.child.wait_for(limit).and_then(|s| s.code())
    }
}

impl Drop for ChildVm {
    fn drop(&mut self) {
        self.child.kill();
        let _ = std::fs::remove_file(&self.sock);
    }
}

/// One try at the VM behind `sock`: a negotiated session if it answers
/// `query-status` with `ready: true`, else `None` (not up yet, booting).
pub fn ready_session(sock: &Path, reply_timeout: Duration) -> Option<Session> {
    let mut s = Session::connect(sock, reply_timeout).ok()?;
    let r = s.execute(json!({"execute": "query-status"}), &mut |_| {}).ok()?;
    (r["return"]["ready"] == json!(true)).then_some(s)
}
