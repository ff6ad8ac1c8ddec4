//! The guest console: the paravirtual console write hypercall
//! (`switcher::abi::doorbell::CONSOLE`: a buffer of guest memory per
//! exit, each written out whole), whose output goes to stdout, a file or
//! nowhere (`--serial`). There is no UART: the guest kernel runs at CPL3,
//! where port I/O faults, and a byte per exit would cost about a
//! millisecond per line.
//!
//! A guest decides how much it prints and the reader of stdout how fast
//! it reads, so neither may hold up the VMM:
//!
//! - A vCPU thread only queues its message ([`Console::write`]); one
//!   writer thread (`console`, under its own seccomp filter) writes the
//!   queue out. The queue holds at most [`QUEUE_BYTES`]: a message that
//!   does not fit (stdout paused or unread) is dropped and counted, so a
//!   blocked stdout never blocks a vCPU or the control loop.
//! - A run writes at most `--console-limit` bytes of guest console in all
//!   (default 64 MiB); past it the guest's messages are dropped and
//!   counted. The counts are printed at the end (`console: dropped ...`)
//!   and when the limit is first reached.
//! - On a terminal (the console on stdout, stdout a tty) the guest's
//!   control characters other than newline and tab, ESC among them, are
//!   shown escaped (`\x1b`, as `guest_text` writes them): a guest cannot
//!   move the cursor, erase or fake the VMM's lines, or reach the terminal
//!   (OSC 52, the clipboard). On a pipe or a file the bytes go out raw.
//! - The VMM's own lines ([`Console::report`]) go to stderr from the
//!   caller's thread, ignoring errors (a closed stderr does not stop the
//!   run), after waiting at most [`LINE_WAIT`] for the guest to end its
//!   line when both share the terminal.

use std::collections::VecDeque;
use std::io::{self, IsTerminal, LineWriter, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Where the guest console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialOutput {
    Stdout,
    None,
    File(PathBuf),
}

impl FromStr for SerialOutput {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" => Ok(Self::Stdout),
            "none" => Ok(Self::None),
            _ => match s.strip_prefix("file:") {
                Some("") => Err("file: needs a path, e.g. file:/tmp/console.log".into()),
                Some(path) => Ok(Self::File(PathBuf::from(path))),
                None => Err(format!("'{s}' is not a serial output; use stdout, none or file:PATH")),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    #[error("cannot open serial output file {0}: {1}")]
    Open(String, io::Error),
    #[error("cannot start the console writer thread: {0}")]
    Thread(io::Error),
}

/// Bytes of guest console queued for the writer at most.
pub const QUEUE_BYTES: usize = 1 << 20;
/// How long a VMM line waits for the guest to finish its console line.
const LINE_WAIT: Duration = Duration::from_millis(20);
/// How long the end of the run waits for the queue to be written out.
const FLUSH_WAIT: Duration = Duration::from_secs(1);

/// The queue between the vCPU threads and the writer.
#[derive(Default)]
struct Queue {
    messages: VecDeque<Vec<u8>>,
    bytes: usize,
    /// Bytes accepted in the whole run (against the limit).
    accepted: u64,
    /// The writer is between taking a message and having written it.
    writing: bool,
    closed: bool,
}

/// What was dropped, for the end of the run.
#[derive(Default)]
struct Dropped {
    /// Past `--console-limit`.
    over_limit: AtomicU64,
    /// The queue was full (stdout not taking it).
    queue_full: AtomicU64,
    /// Writing failed (stdout closed, disk full).
    failed: AtomicU64,
    /// The limit was reported.
    said_limit: AtomicBool,
}

struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
    idle: Condvar,
    at_line_start: AtomicBool,
    /// Bumped on every write that reaches the terminal (see
    /// [`Console::output_mark`]).
    mark: AtomicU64,
    dropped: Dropped,
    limit: u64,
}

/// The console shared by the vCPU threads.
pub struct Console {
    shared: Arc<Shared>,
    /// The output, until the writer thread takes it.
    out: Mutex<Option<Box<dyn Write + Send>>>,
    /// Escape control characters (the console is a terminal).
    escape: bool,
    /// Whether the console shares the terminal with the VMM's stderr.
    interleaves: bool,
}

impl Console {
    /// The console for `output`, writing at most `limit` bytes in all (0:
    /// no limit). Its writer starts with [`Self::start`].
    pub fn new(output: &SerialOutput, limit: u64) -> Result<Self, SerialError> {
        let out: Box<dyn Write + Send> = match output {
            SerialOutput::Stdout => Box::new(io::stdout()),
            SerialOutput::None => Box::new(io::sink()),
            SerialOutput::File(p) => {
                // A new file renamed over the path: what was there (a
                // symlink, a hard link) is replaced, never written through.
                let file =
                    crate::outfile::create_fresh(p).map_err(|e| SerialError::Open(p.display().to_string(), e))?;
                Box::new(LineWriter::new(file))
            }
        };
        let interleaves = *output == SerialOutput::Stdout;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            idle: Condvar::new(),
            at_line_start: AtomicBool::new(true),
            mark: AtomicU64::new(0),
            dropped: Dropped::default(),
            limit: if limit == 0 { u64::MAX } else { limit },
        });
        let escape = interleaves && io::stdout().is_terminal();
        Ok(Self { shared, out: Mutex::new(Some(out)), escape, interleaves })
    }

    /// Starts the writer thread (`console`), which installs its seccomp
    /// filter first.
    pub fn start(&self, sandbox: Arc<crate::seccomp::Sandbox>) -> Result<(), SerialError> {
        let Some(out) = self.out.lock().unwrap_or_else(|p| p.into_inner()).take() else { return Ok(()) };
        let shared = self.shared.clone();
        let (escape, interleaves) = (self.escape, self.interleaves);
        std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                if let Err(e) = sandbox.enter(crate::seccomp::Thread::Console) {
                    log::error!("{e}; the guest console is not written");
                    shared.queue.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
                    return;
                }
                writer(&shared, out, escape, interleaves);
            })
            .map(drop)
            .map_err(SerialError::Thread)
    }

    /// A number that changes whenever anything reaches the terminal
    /// through the console (guest output on stdout, a VMM line): the live
    /// status redraws in place only when nothing came in between.
    pub fn output_mark(&self) -> u64 {
        self.shared.mark.load(Ordering::Relaxed)
    }

    /// Prints one VMM line on stderr, between two guest console lines when
    /// the console is on stdout (waiting at most a few ms for the guest to
    /// end its line). Errors are ignored (a closed stderr).
    pub fn report(&self, line: &str) {
        self.shared.mark.fetch_add(1, Ordering::Relaxed);
        if self.interleaves {
            let deadline = Instant::now() + LINE_WAIT;
            while !self.shared.at_line_start.load(Ordering::Relaxed) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        crate::logging::stderr_line(line);
    }

    /// Queues one guest console message, whole (no other message can come
    /// in between); never waits for the output. Dropped and counted past
    /// the limit or when the queue is full.
    pub fn write(&self, bytes: &[u8]) {
        let s = &self.shared;
        let mut q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.closed {
            return;
        }
        let n = bytes.len() as u64;
        if s.dropped.said_limit.load(Ordering::Relaxed) || q.accepted.saturating_add(n) > s.limit {
            s.dropped.over_limit.fetch_add(n, Ordering::Relaxed);
            if !s.dropped.said_limit.swap(true, Ordering::Relaxed) {
                log::warn!(
                    "console: the guest wrote --console-limit ({} MiB); its console output is dropped from now on \
                     (counted at the end)",
                    s.limit >> 20
                );
            }
            return;
        }
        if q.bytes + bytes.len() > QUEUE_BYTES {
            s.dropped.queue_full.fetch_add(n, Ordering::Relaxed);
            return;
        }
        q.accepted += n;
        q.bytes += bytes.len();
        q.messages.push_back(bytes.to_vec());
        drop(q);
        s.ready.notify_one();
    }

    /// Waits (at most [`FLUSH_WAIT`]) until the writer has written what is
    /// queued; what it could not is counted as dropped.
    pub fn flush(&self) {
        let s = &self.shared;
        let deadline = Instant::now() + FLUSH_WAIT;
        let mut q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
        while (!q.messages.is_empty() || q.writing) && !q.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            q = s.idle.wait_timeout(q, left).unwrap_or_else(|p| p.into_inner()).0;
        }
        if !q.messages.is_empty() {
            let n = q.bytes as u64;
            q.messages.clear();
            q.bytes = 0;
            s.dropped.queue_full.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The end of the run's line on what was dropped, if anything was.
    pub fn dropped_line(&self) -> Option<String> {
        let d = &self.shared.dropped;
        let (limit, full, failed) = (
            d.over_limit.load(Ordering::Relaxed),
            d.queue_full.load(Ordering::Relaxed),
            d.failed.load(Ordering::Relaxed),
        );
        (limit + full + failed > 0).then(|| {
            format!(
                "console: dropped {limit} bytes of guest output past --console-limit, {full} while the output did \
                 not take it (queue full), {failed} that could not be written"
            )
        })
    }
}

/// The writer thread: takes messages off the queue and writes them out.
fn writer(s: &Shared, mut out: Box<dyn Write + Send>, escape: bool, interleaves: bool) {
    loop {
        let msg = {
            let mut q = s.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(m) = q.messages.pop_front() {
                    q.bytes -= m.len();
                    q.writing = true;
                    break m;
                }
                q.writing = false;
                s.idle.notify_all();
                q = s.ready.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let bytes = if escape { crate::guest_text::escape_console(&msg) } else { msg };
        if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
            s.dropped.failed.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        if interleaves {
            s.mark.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(&last) = bytes.last() {
            s.at_line_start.store(last == b'\n', Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_outputs() {
        assert_eq!("stdout".parse::<SerialOutput>(), Ok(SerialOutput::Stdout));
        assert_eq!("none".parse::<SerialOutput>(), Ok(SerialOutput::None));
        assert_eq!("file:/tmp/x".parse::<SerialOutput>(), Ok(SerialOutput::File("/tmp/x".into())));
        assert!("file:".parse::<SerialOutput>().is_err());
        assert!("tty".parse::<SerialOutput>().unwrap_err().contains("stdout, none or file:PATH"));
    }

    fn unfiltered() -> Arc<crate::seccomp::Sandbox> {
        Arc::new(crate::seccomp::Sandbox::new(false, &Default::default()).unwrap())
    }

    #[test]
    fn writes_reach_the_file() {
        let dir = tempfile::Builder::new().prefix("rtswitch-serial-").tempdir().unwrap();
        let path = dir.path().join("console.log");
        let console = Console::new(&SerialOutput::File(path.clone()), 0).unwrap();
        console.start(unfiltered()).unwrap();
        console.write(b"hel");
        console.write(b"lo\n");
        console.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "hello\n");
        assert_eq!(console.dropped_line(), None);
    }

    /// A writer that never returns: stdout paused, or a pipe nobody reads.
    struct Stuck(Arc<std::sync::Barrier>);

    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            self.0.wait();
            std::thread::sleep(Duration::from_secs(3600));
            Ok(0)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_output_never_blocks_a_writer_and_the_rest_is_counted() {
        let console = Console::new(&SerialOutput::None, 0).unwrap();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        *console.out.lock().unwrap() = Some(Box::new(Stuck(barrier.clone())));
        console.start(unfiltered()).unwrap();
        console.write(b"first\n");
        barrier.wait();
        let t = Instant::now();
        let msg = vec![b'x'; 4096];
        for _ in 0..1000 {
            console.write(&msg);
        }
        console.flush();
        // Queuing 4 MB and the bounded flush: the flush's own wait, not the output's.
        assert!(t.elapsed() < FLUSH_WAIT * 3, "writes waited for the output: {:?}", t.elapsed());
        let line = console.dropped_line().expect("something was dropped");
        assert!(line.contains(&format!("{} while the output did not take it", 1000 * 4096)), "{line}");
    }

    #[test]
    fn output_past_the_limit_is_dropped_and_counted() {
        let dir = tempfile::Builder::new().prefix("rtswitch-serial-").tempdir().unwrap();
        let path = dir.path().join("console.log");
        let console = Console::new(&SerialOutput::File(path.clone()), 10).unwrap();
        console.start(unfiltered()).unwrap();
        console.write(b"12345\n");
        console.write(b"67890\n");
        console.write(b"abc\n");
        console.flush();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "12345\n");
        let line = console.dropped_line().unwrap();
        assert!(line.starts_with("console: dropped 10 bytes of guest output past --console-limit"), "{line}");
    }
}
