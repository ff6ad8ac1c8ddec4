//! The suite's progress bar on stderr. The suite is a list of steps with
//! an estimated duration each; the bar shows the share of the estimated
//! total that is done, the time spent and an estimate of what is left.
//! On a terminal it is redrawn in place four times a second; otherwise
//! one line is printed when a step starts (a log stays readable).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const WIDTH: usize = 30;

struct State {
    total_est: f64,
    done_est: f64,
    step: String,
    step_est: f64,
    step_started: Instant,
    /// Sub-steps done of the current step, when it counts them.
    sub: Option<(u32, u32)>,
    started: Instant,
}

impl State {
    fn fraction(&self) -> f64 {
        let within = match self.sub {
            Some((done, of)) if of > 0 => self.step_est * f64::from(done.min(of)) / f64::from(of),
            _ => self.step_started.elapsed().as_secs_f64().min(self.step_est * 0.95),
        };
        ((self.done_est + within) / self.total_est.max(1e-9)).clamp(0.0, 1.0)
    }

    fn line(&self) -> String {
        let f = self.fraction();
        let filled = (f * WIDTH as f64).round() as usize;
        let elapsed = self.started.elapsed().as_secs_f64();
        let left = if f > 0.02 { elapsed / f - elapsed } else { self.total_est - elapsed };
        let sub = self.sub.map_or_else(String::new, |(d, o)| format!(" ({d}/{o})"));
        format!(
            "rtswitch bench: [{}{}] {:>3.0}% {} elapsed, ~{} left: {}{sub}",
            "#".repeat(filled),
            ".".repeat(WIDTH - filled),
            f * 100.0,
            clock(elapsed),
            clock(left.max(0.0)),
            self.step
        )
    }
}

/// `m:ss`.
pub fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

/// The bar.
pub struct Progress {
    state: Arc<Mutex<State>>,
    tty: bool,
    stop: Arc<AtomicBool>,
    painter: Option<JoinHandle<()>>,
}

impl Progress {
    /// A bar for a suite estimated to take `total_est` seconds.
    pub fn new(total_est: f64) -> Self {
        let now = Instant::now();
        let state = Arc::new(Mutex::new(State {
            total_est,
            done_est: 0.0,
            step: "starting".into(),
            step_est: 0.0,
            step_started: now,
            sub: None,
            started: now,
        }));
        let tty = std::io::stderr().is_terminal();
        let stop = Arc::new(AtomicBool::new(false));
        let painter = tty.then(|| {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(s) = state.lock() {
                        let mut err = std::io::stderr().lock();
                        let _ = write!(err, "\r\x1b[2K{}", s.line());
                        let _ = err.flush();
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
        });
        Self { state, tty, stop, painter }
    }

    fn with(&self, f: impl FnOnce(&mut State)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
    }

    /// A step starts, expected to take `est` seconds.
    pub fn begin(&self, step: impl Into<String>, est: f64) {
        let step = step.into();
        self.with(|s| {
            s.step = step;
            s.step_est = est;
            s.step_started = Instant::now();
            s.sub = None;
            if !self.tty {
                eprintln!("{}", s.line());
            }
        });
    }

    /// `done` of the current step's `of` sub-steps are done.
    pub fn sub(&self, done: u32, of: u32) {
        self.with(|s| s.sub = Some((done, of)));
    }

    /// The current step is done.
    pub fn end(&self) {
        self.with(|s| {
            s.done_est += s.step_est;
            s.step_est = 0.0;
            s.sub = None;
        });
    }

    /// Prints a message on its own line (the bar is redrawn below it).
    pub fn note(&self, msg: &str) {
        self.with(|_| {
            if self.tty {
                eprintln!("\r\x1b[2K{msg}");
            } else {
                eprintln!("{msg}");
            }
        });
    }

    /// Stops the bar and clears its line.
    pub fn finish(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.painter.take() {
            let _ = p.join();
            eprint!("\r\x1b[2K");
        }
        let elapsed = self.state.lock().map(|s| s.started.elapsed().as_secs_f64()).unwrap_or(0.0);
        eprintln!("rtswitch bench: done in {}", clock(elapsed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_counts_estimated_time_and_sub_steps() {
        let now = Instant::now();
        let mut s = State {
            total_est: 100.0,
            done_est: 40.0,
            step: "latency: rt + locks".into(),
            step_est: 20.0,
            step_started: now,
            sub: Some((5, 10)),
            started: now,
        };
        assert!((s.fraction() - 0.5).abs() < 1e-9);
        assert!(s.line().contains("[###############...............]  50%"), "{}", s.line());
        assert!(s.line().ends_with("latency: rt + locks (5/10)"), "{}", s.line());
        s.sub = None;
        assert!(s.fraction() >= 0.4 && s.fraction() < 0.6);
        assert_eq!(clock(125.4), "2:05");
    }
}
