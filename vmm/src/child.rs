//! The one launcher for child processes (in practice `rtswitch run ...`
//! VMs): bench, stress, the API's child VM and the end-to-end tests all
//! start theirs here.
//!
//! The caller configures a [`Command`] (arguments, environment, where
//! stdin/stdout/stderr go); [`Launched::spawn`] starts it and drains any
//! piped stdout/stderr on reader threads, so a chatty child never blocks
//! on a full pipe, keeping only the last [`KEPT_BYTES`] of each (a child
//! whose guest floods its console cannot grow the tool's memory). Every
//! wait is bounded; a child still running when its handle is dropped is
//! killed and reaped.
//!
//! In a tool that catches interrupts (`signals::catch_interrupts`: bench,
//! stress) each child runs in its own process group, so a terminal's
//! Ctrl-C reaches the tool only; the child gets SIGTERM from the kernel if
//! the tool dies (`PR_SET_PDEATHSIG`), and a wait of a child started with
//! [`Launched::spawn_forwarding`] passes the tool's first interrupt on to
//! it as one SIGINT (a `rtswitch run` child then shuts down cleanly and
//! writes its reports).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a bounded wait polls the child.
const POLL: Duration = Duration::from_millis(20);

/// A started child process.
pub struct Launched {
    child: Child,
    reaped: bool,
    /// Pass the tool's first interrupt on to the child (once).
    forward: bool,
    /// The interrupt was passed on.
    forwarded: bool,
    started: Instant,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

/// How a child ended under [`Launched::finish`].
#[derive(Debug)]
pub struct Finished {
    /// Its exit status; `None` when it was still running at the limit and
    /// was killed (or could not be waited for).
    pub status: Option<ExitStatus>,
    /// Piped stdout and stderr, whole (empty when not piped).
    pub stdout: String,
    pub stderr: String,
    /// From spawn to exit (or kill).
    pub elapsed: Duration,
    /// The tool's interrupt was passed on to it ([`Launched::spawn_forwarding`]).
    pub interrupted: bool,
}

impl Finished {
    /// The exit code; `None` if killed at the limit or ended by a signal.
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }
}

/// Bytes kept of a child's piped stdout, and of its stderr: the end.
pub const KEPT_BYTES: usize = 1 << 20;

/// Reads `pipe` to its end, keeping its last [`KEPT_BYTES`]; a first line
/// says how much came before them.
fn drain(pipe: Option<impl Read + Send + 'static>) -> Option<JoinHandle<String>> {
    pipe.map(|mut p| {
        std::thread::spawn(move || {
            let mut tail = std::collections::VecDeque::new();
            let mut dropped = 0u64;
            let mut buf = [0u8; 8192];
            loop {
                match p.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        tail.extend(&buf[..n]);
                        let excess = tail.len().saturating_sub(KEPT_BYTES);
                        tail.drain(..excess);
                        dropped += excess as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let text = String::from_utf8_lossy(tail.make_contiguous()).into_owned();
            if dropped > 0 { format!("[... {dropped} earlier bytes not kept ...]\n{text}") } else { text }
        })
    })
}

impl Launched {
    /// Starts `cmd`; its piped stdout/stderr (if any) are collected.
    pub fn spawn(cmd: &mut Command) -> std::io::Result<Self> {
        if crate::signals::catching_interrupts() {
            cmd.process_group(0);
            // SAFETY: the closure runs in the forked child before exec and
            // only calls prctl(2), which is async-signal-safe and touches
            // no memory of the parent.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let started = Instant::now();
        let mut child = cmd.spawn()?;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        Ok(Self { child, reaped: false, forward: false, forwarded: false, started, stdout, stderr })
    }

    /// [`Self::spawn`], and its waits pass the tool's first interrupt on
    /// to the child as one SIGINT.
    pub fn spawn_forwarding(cmd: &mut Command) -> std::io::Result<Self> {
        let mut l = Self::spawn(cmd)?;
        l.forward = true;
        Ok(l)
    }

    /// Whether an interrupt was passed on to this child.
    pub fn interrupted(&self) -> bool {
        self.forwarded
    }

    /// Passes the tool's interrupt on, once, if asked to.
    fn forward_interrupt(&mut self) {
        if self.forward && !self.forwarded && !self.reaped && crate::signals::interrupted() {
            self.forwarded = true;
            // SAFETY: kill(2) on the pid of our own child, not yet reaped.
            unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGINT) };
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits at most `limit` for the child to exit by itself; `None` if it
    /// is still running then (it is left running) or cannot be waited for.
    pub fn wait_for(&mut self, limit: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.reaped = true;
                    return Some(status);
                }
                Ok(None) if start.elapsed() >= limit => return None,
                Ok(None) => {
                    self.forward_interrupt();
                    std::thread::sleep(POLL);
                }
                Err(e) => {
                    log::warn!("cannot wait for child process {}: {e}", self.child.id());
                    return None;
                }
            }
        }
    }

    /// Kills the child (if it still runs) and reaps it.
    pub fn kill(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.reaped = true;
        }
    }

    /// Waits at most `limit` for the exit, kills the child past it, and
    /// returns its status and whole piped output.
    pub fn finish(mut self, limit: Duration) -> Finished {
        let status = self.wait_for(limit);
        if status.is_none() {
            self.kill();
        }
        let elapsed = self.started.elapsed();
        let join = |h: Option<JoinHandle<String>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
        let stdout = join(self.stdout.take());
        let stderr = join(self.stderr.take());
        Finished { status, stdout, stderr, elapsed, interrupted: self.forwarded }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use super::*;

    #[test]
    fn captures_output_and_status() {
        let f = Launched::spawn(
            Command::new("sh")
                .args(["-c", "echo out; echo err >&2; exit 3"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        )
        .expect("sh")
        .finish(Duration::from_secs(10));
        assert_eq!(f.code(), Some(3));
        assert_eq!((f.stdout.as_str(), f.stderr.as_str()), ("out\n", "err\n"));
    }

    #[test]
    fn keeps_only_the_end_of_a_flood() {
        let f = Launched::spawn(
            Command::new("sh")
                .args(["-c", "head -c 3145728 /dev/zero | tr '\\0' x; echo; echo last"])
                .stdout(Stdio::piped()),
        )
        .expect("sh")
        .finish(Duration::from_secs(30));
        assert!(f.stdout.len() <= KEPT_BYTES + 64, "{} bytes kept", f.stdout.len());
        assert!(f.stdout.starts_with("[... 2097") && f.stdout.ends_with("\nlast\n"), "{}", &f.stdout[..80]);
    }

    #[test]
    fn kills_at_the_limit() {
        let f = Launched::spawn(Command::new("sleep").arg("30").stdout(Stdio::piped()))
            .expect("sleep")
            .finish(Duration::from_millis(100));
        assert!(f.status.is_none() && f.elapsed < Duration::from_secs(10), "{f:?}");
    }
}
