//! The host's own latency floor in the same run: rt-tests' `cyclictest`
//! on the host, one thread, started with each guest rt + locks slice and
//! running as many periods of the same interval as the slice lasts, with
//! a histogram as wide as the bench's. The guest's rt + locks thread p99
//! over the host's p99 is how far the guest stands above what this
//! machine itself delivers (a host that is a VM stalls on its own).
//!
//! cyclictest runs SCHED_FIFO (priority 99, memory locked) as root, at
//! the highest priority `RLIMIT_RTPRIO` allows otherwise, and as an
//! ordinary thread where neither permits it (the figure says which).
//! Its `--json` file (rt-tests 2.x) is read with serde, bounded in size
//! and in the buckets it may hold, into the VMM's own histogram, whose
//! percentiles are the guest's (nearest rank over 1 µs buckets).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use rtswitch::child::Launched;
use rtswitch::stats::{Histogram, Percentile};

/// Largest `--json` file read (a 100 ms histogram of 1 µs buckets, every
/// bucket used, is about 2 MB).
pub const MAX_JSON_BYTES: u64 = 16 << 20;
/// Highest priority asked for.
const FIFO_PRIORITY: u64 = 99;

#[derive(Debug, thiserror::Error)]
pub enum CyclictestError {
    #[error("cyclictest is not installed (no `cyclictest` on PATH; rt-tests has it)")]
    NotInstalled,
    #[error("cannot start {path}: {source}")]
    Spawn { path: String, source: std::io::Error },
    #[error("did not exit within {0} s; killed")]
    Timeout(u64),
    #[error("exited with status {code:?}: {stderr}")]
    Failed { code: Option<i32>, stderr: String },
    #[error("cannot read its --json file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("its --json file is {0} bytes, over the {MAX_JSON_BYTES}-byte bound")]
    TooLarge(u64),
    #[error("its --json file does not parse: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("its --json file has no thread")]
    NoThread,
    #[error("histogram bucket '{0}' is not a µs value below the histogram's range of {1} µs")]
    Bucket(String, u32),
    #[error("histogram holds {buckets} samples, more than the {cycles} cycles it reports")]
    Count { buckets: u64, cycles: u64 },
}

/// How cyclictest was scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Sched {
    /// SCHED_FIFO at this priority.
    Fifo(u64),
    /// SCHED_OTHER: no permission for a real-time class.
    Other,
}

impl Sched {
    /// What this process may ask for: root, or `RLIMIT_RTPRIO`.
    pub fn permitted() -> Self {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            return Sched::Fifo(FIFO_PRIORITY);
        }
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit(2) writes into the rlimit we own.
        let ok = unsafe { libc::getrlimit(libc::RLIMIT_RTPRIO, &mut lim) } == 0;
        match lim.rlim_cur {
            n if ok && n > 0 => Sched::Fifo(n.min(FIFO_PRIORITY)),
            _ => Sched::Other,
        }
    }

    pub fn text(self) -> String {
        match self {
            Sched::Fifo(p) => format!("SCHED_FIFO {p}"),
            Sched::Other => "SCHED_OTHER (no real-time permission)".to_string(),
        }
    }
}

/// The cyclictest on `PATH`, if any.
pub fn find() -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("cyclictest"))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// One host measurement's settings.
#[derive(Clone, Debug, PartialEq)]
pub struct HostConfig {
    pub interval_us: u32,
    /// Periods to measure (`-l`): the slice's duration over the interval.
    pub loops: u64,
    pub hist_max_us: u32,
    pub sched: Sched,
}

impl HostConfig {
    /// As many periods of `interval_us` as `duration_s` holds (at least one).
    pub fn new(duration_s: f64, interval_us: u32, hist_max_us: u32, sched: Sched) -> Self {
        let loops = ((duration_s * 1e6 / f64::from(interval_us.max(1))).round() as u64).max(1);
        Self { interval_us, loops, hist_max_us, sched }
    }

    /// cyclictest's arguments, the `--json` file last.
    pub fn args(&self, json: &Path) -> Vec<String> {
        let mut v: Vec<String> = ["-q", "-t1"].iter().map(|s| s.to_string()).collect();
        v.extend(["-i".into(), self.interval_us.to_string(), "-l".into(), self.loops.to_string()]);
        v.extend(["-h".into(), self.hist_max_us.to_string()]);
        if let Sched::Fifo(p) = self.sched {
            v.extend(["-p".into(), p.to_string()]);
            if p == FIFO_PRIORITY {
                v.push("-m".into());
            }
        }
        v.push(format!("--json={}", json.display()));
        v
    }

    /// Seconds it is given before it is killed: its periods and slack.
    pub fn limit(&self) -> Duration {
        Duration::from_secs_f64(self.loops as f64 * f64::from(self.interval_us) / 1e6 + 30.0)
    }
}

/// What one host cyclictest measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HostFigures {
    pub samples: u64,
    pub p50: Option<Percentile>,
    pub p99: Option<Percentile>,
    pub max_us: Option<u64>,
    /// Samples beyond the histogram.
    pub overflow: u64,
}

/// A cyclictest started beside a guest slice.
pub struct Running {
    launched: Launched,
    json: PathBuf,
    cfg: HostConfig,
}

/// Starts cyclictest at `exe` (see [`find`]); its `--json` goes to `json`.
pub fn start(exe: &Path, cfg: &HostConfig, json: &Path) -> Result<Running, CyclictestError> {
    let _ = std::fs::remove_file(json);
    let launched = Launched::spawn_forwarding(
        Command::new(exe).args(cfg.args(json)).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()),
    )
    .map_err(|source| CyclictestError::Spawn { path: exe.display().to_string(), source })?;
    Ok(Running { launched, json: json.to_path_buf(), cfg: cfg.clone() })
}

impl Running {
    /// Waits for it (bounded), reads and removes its `--json` file.
    pub fn finish(self) -> Result<HostFigures, CyclictestError> {
        let limit = self.cfg.limit();
        let done = self.launched.finish(limit);
        let read = || -> Result<HostFigures, CyclictestError> {
            let Some(status) = done.status else { return Err(CyclictestError::Timeout(limit.as_secs())) };
            if !status.success() {
                let stderr = done.stderr.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
                return Err(CyclictestError::Failed { code: status.code(), stderr });
            }
            let path = self.json.display().to_string();
            let len =
                std::fs::metadata(&self.json).map_err(|source| CyclictestError::Read { path: path.clone(), source })?;
            if len.len() > MAX_JSON_BYTES {
                return Err(CyclictestError::TooLarge(len.len()));
            }
            let text = std::fs::read_to_string(&self.json).map_err(|source| CyclictestError::Read { path, source })?;
            parse_json(&text, self.cfg.hist_max_us)
        };
        let r = read();
        let _ = std::fs::remove_file(&self.json);
        r
    }
}

#[derive(Deserialize)]
struct Json {
    thread: BTreeMap<String, Thread>,
}

#[derive(Deserialize)]
struct Thread {
    /// µs bucket (a decimal string) -> samples; only non-empty buckets.
    histogram: BTreeMap<String, u64>,
    cycles: u64,
    max: u64,
}

/// Reads cyclictest's `--json` text (one thread: the first) into figures:
/// its 1 µs buckets into a histogram of `hist_max_us` buckets; samples
/// the buckets do not hold are the overflow.
pub fn parse_json(text: &str, hist_max_us: u32) -> Result<HostFigures, CyclictestError> {
    if text.len() as u64 > MAX_JSON_BYTES {
        return Err(CyclictestError::TooLarge(text.len() as u64));
    }
    let j: Json = serde_json::from_str(text)?;
    let t = j.thread.into_values().next().ok_or(CyclictestError::NoThread)?;
    let mut h = Histogram::new(hist_max_us as usize);
    let mut in_buckets = 0u64;
    for (us, n) in &t.histogram {
        let bucket = us.parse::<u64>().ok().filter(|&b| b < u64::from(hist_max_us));
        let b = bucket.ok_or_else(|| CyclictestError::Bucket(us.clone(), hist_max_us))?;
        h.record_ns_times(b * 1000, *n);
        in_buckets = in_buckets.saturating_add(*n);
    }
    let overflow =
        t.cycles.checked_sub(in_buckets).ok_or(CyclictestError::Count { buckets: in_buckets, cycles: t.cycles })?;
    h.record_ns_times(h.range_ns(), overflow);
    Ok(HostFigures {
        samples: t.cycles,
        p50: h.percentile(50.0),
        p99: h.percentile(99.0),
        max_us: (t.cycles > 0).then_some(t.max),
        overflow,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtswitch::stats::Percentile::{AtLeast, Us};

    /// Real output of `cyclictest -q -t1 -i 1000 -l 3000 -h 1000 -p 99 -m
    /// --json=FILE` (rt-tests 2.40) on this project's host, 2026-12-07:
    /// three samples beyond 1 ms (a host stall, max 8487 µs).
    const REAL: &str = include_str!("testdata/cyclictest-2.40.json");

    #[test]
    fn real_cyclictest_json_reads_into_percentiles() {
        let f = parse_json(REAL, 1000).unwrap();
        assert_eq!(f.samples, 3000);
        // 2997 samples in the buckets: the other 3 overflowed.
        assert_eq!(f.overflow, 3);
        assert_eq!(f.max_us, Some(8487));
        // 3000 samples: p50 is rank 1500, p99 rank 2970 (counted from the file with a script).
        assert_eq!(f.p50, Some(Us(37)));
        assert_eq!(f.p99, Some(Us(52)));
    }

    #[test]
    fn samples_beyond_the_buckets_are_the_overflow() {
        let text = r#"{"thread": {"0": {"histogram": {"10": 90, "20": 5}, "cycles": 100, "min": 10, "max": 50000, "avg": 300.0}}}"#;
        let f = parse_json(text, 1000).unwrap();
        assert_eq!((f.overflow, f.p50, f.p99), (5, Some(Us(10)), Some(AtLeast(1000))));
    }

    #[test]
    fn bad_files_are_refused_with_their_reason() {
        let bad = |text: &str| parse_json(text, 1000).unwrap_err().to_string();
        assert!(bad("not json").contains("does not parse"));
        assert!(bad(r#"{"thread": {}}"#).contains("no thread"));
        let t = |hist: &str, cycles: u64| {
            format!(r#"{{"thread": {{"0": {{"histogram": {hist}, "cycles": {cycles}, "max": 1}}}}}}"#)
        };
        assert!(bad(&t(r#"{"x": 1}"#, 1)).contains("bucket 'x'"));
        assert!(bad(&t(r#"{"1000": 1}"#, 1)).contains("bucket '1000'"));
        assert!(bad(&t(r#"{"5": 10}"#, 3)).contains("more than the 3 cycles"));
        let huge = " ".repeat(MAX_JSON_BYTES as usize + 1);
        assert!(bad(&huge).contains("bound"));
    }

    #[test]
    fn the_command_line_matches_the_slice() {
        let c = HostConfig::new(4.0, 1000, 100_000, Sched::Fifo(99));
        let a = c.args(Path::new("/tmp/x.json")).join(" ");
        assert_eq!(a, "-q -t1 -i 1000 -l 4000 -h 100000 -p 99 -m --json=/tmp/x.json");
        let c = HostConfig::new(1.666, 1000, 20_000, Sched::Other);
        assert_eq!(c.args(Path::new("j")).join(" "), "-q -t1 -i 1000 -l 1666 -h 20000 --json=j");
        assert_eq!(HostConfig::new(1.0, 500, 10, Sched::Fifo(10)).args(Path::new("j"))[7], "10");
    }
}
