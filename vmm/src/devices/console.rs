//! The guest console: the paravirtual console write hypercall
//! (`switcher::abi::doorbell::CONSOLE`: a buffer of guest memory per
//! exit, each written out whole), whose output goes to stdout, a file or
//! nowhere (`--serial`). There is no UART: the guest kernel runs at CPL3,
//! where port I/O faults, and a byte per exit would cost about a
//! millisecond per line.

use std::io::{self, LineWriter, Write};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
}

/// A writer that remembers whether its output ends at a line boundary, so
/// that the VMM's own lines on stderr do not split the guest's lines.
pub struct LineTracker {
    inner: Box<dyn Write + Send>,
    at_line_start: Arc<AtomicBool>,
    /// Bumped on every write that reaches the terminal (see
    /// [`Console::output_mark`]); `None` when the output goes elsewhere.
    mark: Option<Arc<AtomicU64>>,
}

impl Write for LineTracker {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(mark) = &self.mark {
            mark.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(&last) = buf[..n].last() {
            self.at_line_start.store(last == b'\n', Ordering::Relaxed);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// How long a VMM line waits for the guest to finish its console line.
const LINE_WAIT: Duration = Duration::from_millis(20);

/// The console shared by the vCPU threads.
pub struct Console {
    out: Mutex<LineTracker>,
    at_line_start: Arc<AtomicBool>,
    /// Whether the console shares the terminal with the VMM's stderr.
    interleaves: bool,
    mark: Arc<AtomicU64>,
}

impl Console {
    pub fn new(output: &SerialOutput) -> Result<Self, SerialError> {
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
        let at_line_start = Arc::new(AtomicBool::new(true));
        let mark = Arc::new(AtomicU64::new(0));
        let interleaves = *output == SerialOutput::Stdout;
        let tracker =
            LineTracker { inner: out, at_line_start: at_line_start.clone(), mark: interleaves.then(|| mark.clone()) };
        Ok(Self { out: Mutex::new(tracker), at_line_start, interleaves, mark })
    }

    /// A number that changes whenever anything reaches the terminal
    /// through the console (guest output on stdout, a VMM line): the live
    /// status redraws in place only when nothing came in between.
    pub fn output_mark(&self) -> u64 {
        self.mark.load(Ordering::Relaxed)
    }

    /// Prints one VMM line on stderr, between two guest console lines when
    /// the console is on stdout (waiting at most a few ms for the guest to
    /// end its line).
    pub fn report(&self, line: &str) {
        self.mark.fetch_add(1, Ordering::Relaxed);
        if self.interleaves {
            let deadline = Instant::now() + LINE_WAIT;
            loop {
                let out = self.lock();
                if self.at_line_start.load(Ordering::Relaxed) || Instant::now() >= deadline {
                    let _ = io::stdout().flush();
                    eprintln!("{line}");
                    drop(out);
                    return;
                }
                drop(out);
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        eprintln!("{line}");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LineTracker> {
        // A poisoned lock only means another vCPU thread panicked mid-write;
        // the writer is still usable.
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes one guest console message, whole (no other message can
    /// come in between).
    pub fn write(&self, bytes: &[u8]) {
        let mut out = self.lock();
        if let Err(e) = out.write_all(bytes).and_then(|()| out.flush()) {
            log::warn!("guest console output failed: {e}");
        }
    }

    pub fn flush(&self) {
        let _ = self.lock().flush();
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

    #[test]
    fn writes_reach_the_file() {
        let dir = std::env::temp_dir().join(format!("rtswitch-serial-{}", std::process::id()));
        let console = Console::new(&SerialOutput::File(dir.clone())).unwrap();
        console.write(b"hel");
        console.write(b"lo\n");
        console.flush();
        assert_eq!(std::fs::read_to_string(&dir).unwrap(), "hello\n");
        let _ = std::fs::remove_file(dir);
    }
}
