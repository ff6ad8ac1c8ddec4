//! Rate-limited warnings: what a guest (or a client) can make the VMM say
//! as often as it likes is said at most [`BURST`] times per [`WINDOW`] per
//! kind, and the rest is counted: once the window is over, one line says
//! how many were suppressed (at the next warning of that kind, at the next
//! [`flush`], which the 1 Hz status tick and the end of the run call).
//!
//! A kind is a `&'static str` key naming the call site; the warning itself
//! goes through `log` like every other. The state is one process-wide
//! table behind a mutex (vCPU threads warn too); it never allocates per
//! warning once a kind is known.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Warnings of one kind printed per window.
pub const BURST: u32 = 16;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(5);

struct Window {
    started: Instant,
    said: u32,
    suppressed: u64,
}

static KINDS: Mutex<BTreeMap<&'static str, Window>> = Mutex::new(BTreeMap::new());

/// What [`admit`] decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Say it. `suppressed`: how many of this kind the window before
    /// left unsaid (0: none), to be said first.
    Say { suppressed: u64 },
    /// Count it only.
    Suppress,
}

/// Whether a warning of `kind` may be printed now (at `now`).
pub fn admit_at(kind: &'static str, now: Instant) -> Admit {
    let mut kinds = KINDS.lock().unwrap_or_else(|p| p.into_inner());
    let w = kinds.entry(kind).or_insert(Window { started: now, said: 0, suppressed: 0 });
    // A new window starts with the count of the one before, to be said.
    let before = if now.duration_since(w.started) >= WINDOW {
        let before = w.suppressed;
        *w = Window { started: now, said: 0, suppressed: 0 };
        before
    } else {
        0
    };
    if w.said < BURST {
        w.said += 1;
        Admit::Say { suppressed: before }
    } else {
        w.suppressed = w.suppressed.saturating_add(1);
        Admit::Suppress
    }
}

/// The suppressed-count line of `kind`.
pub fn suppressed_line(kind: &str, n: u64) -> String {
    format!("{n} more warning(s) like '{kind}' suppressed in the last {} s", WINDOW.as_secs())
}

/// Logs `message` (a warning of `kind`) unless its kind is over its rate.
pub fn warn(kind: &'static str, message: std::fmt::Arguments<'_>) {
    if let Admit::Say { suppressed } = admit_at(kind, Instant::now()) {
        if suppressed > 0 {
            log::warn!("{}", suppressed_line(kind, suppressed));
        }
        log::warn!("{message}");
    }
}

/// Says the counts of the windows that are over (at `now`); the status
/// tick calls it once a second and the end of the run once more with
/// `all` (every count, whatever its window).
pub fn flush_at(now: Instant, all: bool) -> Vec<String> {
    let mut kinds = KINDS.lock().unwrap_or_else(|p| p.into_inner());
    let mut lines = Vec::new();
    for (kind, w) in kinds.iter_mut() {
        if w.suppressed > 0 && (all || now.duration_since(w.started) >= WINDOW) {
            lines.push(suppressed_line(kind, std::mem::take(&mut w.suppressed)));
            *w = Window { started: now, said: w.said.min(BURST), suppressed: 0 };
        }
    }
    lines
}

/// [`flush_at`] now, logged as warnings.
pub fn flush(all: bool) {
    for line in flush_at(Instant::now(), all) {
        log::warn!("{line}");
    }
}

/// A rate-limited warning: `warn_limited!("kind", "format", args...)`.
#[macro_export]
macro_rules! warn_limited {
    ($kind:expr, $($arg:tt)+) => {
        $crate::ratelimit::warn($kind, format_args!($($arg)+))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_said_then_counted_then_its_count_said() {
        let t0 = Instant::now();
        let kind = "test: a burst";
        let said = (0..1000).filter(|_| admit_at(kind, t0) != Admit::Suppress).count();
        assert_eq!(said, BURST as usize);
        // The next window: the first warning carries the count.
        assert_eq!(admit_at(kind, t0 + WINDOW), Admit::Say { suppressed: 1000 - u64::from(BURST) });
        assert_eq!(admit_at(kind, t0 + WINDOW), Admit::Say { suppressed: 0 });
    }

    #[test]
    fn a_flush_says_the_counts_of_closed_windows() {
        let t0 = Instant::now();
        let kind = "test: flushed";
        for _ in 0..(BURST + 7) {
            admit_at(kind, t0);
        }
        assert!(flush_at(t0, false).iter().all(|l| !l.contains(kind)), "the window is still open");
        let lines = flush_at(t0 + WINDOW, false);
        assert!(lines.iter().any(|l| l.starts_with("7 more warning(s) like 'test: flushed'")), "{lines:?}");
        assert!(flush_at(t0 + WINDOW * 3, true).iter().all(|l| !l.contains(kind)), "said once");
    }
}
