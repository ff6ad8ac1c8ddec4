//! The live status, once a second (the control loop's status timer):
//! a header line and one cyclictest-style line per CPU, for the epoch
//! being recorded:
//!
//! ```text
//! rtswitch: 3 s, epoch 0 (mainline), load locks x2 cs 100 us, 12345 load ops, 0 violations
//! T: 0 (cpu  0) P:99 I:1000 C:   2950 Min:      2 Act:   40 Avg:   35 Max:      512 IRQ Min:      1 Act:    3 Avg:    2 Max:       30
//! ```
//! As cyclictest prints it: `T` the measurement thread (one per measuring
//! CPU, numbered from 0; CPUs that do not measure get no line), then its
//! CPU where cyclictest prints the thread id, `P` its priority, `I` the
//! interval, `C` the activations; thread latency first, then IRQ latency,
//! in µs (truncated, like cyclictest); `Act` the latest sample, `-`
//! before the first.
//!
//! On a terminal the block is redrawn in place (ANSI cursor up), unless
//! anything else was printed since (guest console, VMM lines): then it is
//! appended, like on a pipe or file.
//!
//! With `--quiet` and a run longer than a few seconds, a progress line
//! replaces the block: every second in place on a terminal, every
//! [`PROGRESS_EVERY_PLAIN`] appended elsewhere.

use std::fmt::Write;
use std::time::Duration;

use crate::stats::Histogram;
use crate::telemetry::TelemetryReader;

/// Runs shorter than this get no progress line with `--quiet`.
pub const PROGRESS_MIN_RUN: Duration = Duration::from_secs(5);
/// Progress lines on a pipe or file come this often.
pub const PROGRESS_EVERY_PLAIN: Duration = Duration::from_secs(10);

/// What the status timer prints.
pub struct StatusPrinter {
    quiet: bool,
    tty: bool,
    duration: Option<Duration>,
    /// Terminal rows of the last block drawn, and the console mark right
    /// after it.
    last_frame: Option<(usize, u64)>,
    last_progress: Option<Duration>,
}

impl StatusPrinter {
    pub fn new(quiet: bool, tty: bool, duration: Option<Duration>) -> Self {
        Self { quiet, tty, duration, last_frame: None, last_progress: None }
    }

    /// The text to print for this tick (`None`: nothing), after a
    /// [`TelemetryReader::harvest`]. `console_mark` is the console's
    /// output mark now; call [`Self::printed`] with the mark after printing.
    /// `columns` is the terminal's width, if known (long lines wrap).
    pub fn tick(
        &mut self,
        reader: &TelemetryReader,
        elapsed: Duration,
        console_mark: u64,
        columns: Option<usize>,
    ) -> Option<String> {
        let lines = if self.quiet { self.progress(reader, elapsed)? } else { self.status(reader, elapsed)? };
        let mut text = String::new();
        if self.tty
            && let Some((n, mark)) = self.last_frame
            && mark == console_mark
        {
            // Cursor up over the last block, clear to the end of the screen.
            let _ = write!(text, "\x1b[{n}A\x1b[J");
        }
        let n = lines.iter().map(|l| columns.filter(|&c| c > 0).map_or(1, |c| l.len().div_ceil(c).max(1))).sum();
        text.push_str(&lines.join("\n"));
        self.last_frame = Some((n, u64::MAX));
        Some(text)
    }

    /// Records the console mark right after the block was printed.
    pub fn printed(&mut self, console_mark: u64) {
        if let Some((_, mark)) = self.last_frame.as_mut() {
            *mark = console_mark;
        }
    }

    fn status(&mut self, reader: &TelemetryReader, elapsed: Duration) -> Option<Vec<String>> {
        let w = reader.workload().filter(|w| w.running)?;
        let epoch = reader.epoch(w.current_epoch)?;
        let load = match w.load {
            switcher::telemetry::LoadKind::None => "load none".to_string(),
            k => format!("load {} x{} cs {} us", k.name(), w.load_threads, w.cs_us),
        };
        let mut lines = vec![format!(
            "rtswitch: {} s, epoch {} ({}), {load}, {} load ops, {} violations",
            elapsed.as_secs(),
            epoch.info.index,
            epoch.info.label(),
            w.load_ops,
            w.load_violations
        )];
        let measuring = epoch.cpus.iter().enumerate().filter(|(cpu, _)| w.measures(*cpu));
        for (thread, (cpu, entry)) in measuring.enumerate() {
            let Some(s) = &entry.snapshot else {
                lines.push(format!("T:{thread:2} (cpu {cpu:2}) no consistent record yet"));
                continue;
            };
            // cyclictest's Act: the latest sample (none yet: `-`).
            let (thread_act, irq_act) = match s.samples {
                0 => (None, None),
                _ => (Some(s.last_thread_ns / 1000), Some(s.last_irq_ns / 1000)),
            };
            lines.push(format!(
                "T:{thread:2} (cpu {cpu:2}) P:{:2} I:{} C:{:7} {} IRQ {}",
                w.measure_prio,
                w.interval_us,
                s.samples,
                figures(&s.thread, thread_act),
                figures(&s.irq, irq_act)
            ));
        }
        Some(lines)
    }

    fn progress(&mut self, reader: &TelemetryReader, elapsed: Duration) -> Option<Vec<String>> {
        if self.duration.is_some_and(|d| d <= PROGRESS_MIN_RUN) || elapsed < PROGRESS_MIN_RUN {
            return None;
        }
        if !self.tty && self.last_progress.is_some_and(|t| elapsed < t + PROGRESS_EVERY_PLAIN) {
            return None;
        }
        self.last_progress = Some(elapsed);
        let samples = reader.total_samples();
        let secs = elapsed.as_secs();
        let of = match self.duration {
            Some(d) => {
                let total = d.as_secs_f64();
                format!("{secs} s of {total:.0} s ({:.0}%)", (elapsed.as_secs_f64() / total * 100.0).min(100.0))
            }
            None => format!("{secs} s"),
        };
        let epoch = reader
            .workload()
            .and_then(|w| reader.epoch(w.current_epoch))
            .map_or_else(String::new, |e| format!(", epoch {} ({})", e.info.index, e.info.label()));
        Some(vec![format!("rtswitch: progress: {of}, {samples} samples{epoch}")])
    }
}

/// The width of the terminal on stderr, if it is one.
pub fn terminal_columns() -> Option<usize> {
    let mut ws = libc::winsize { ws_row: 0, ws_col: 0, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCGWINSZ only writes a winsize into the struct we pass,
    // which lives across the call; a non-terminal fd just fails.
    let rc = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_col > 0).then_some(usize::from(ws.ws_col))
}

/// `Min: Act: Avg: Max:` of one histogram, µs.
fn figures(h: &Histogram, act_us: Option<u64>) -> String {
    let d = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    format!(
        "Min:{:>7} Act:{:>5} Avg:{:>5} Max:{:>8}",
        d(h.min_ns().map(|n| n / 1000)),
        d(act_us),
        d(h.avg_ns().map(|a| a as u64 / 1000)),
        d(h.max_ns().map(|n| n / 1000))
    )
}

#[cfg(test)]
mod tests {
    use switcher::profile::Profile;
    use switcher::telemetry::EpochKind;

    use super::*;
    use crate::telemetry::synth::*;

    fn setup() -> (TelemetryReader, std::sync::Arc<crate::vstate::memory::GuestMemory>, switcher::telemetry::Layout) {
        let (mem, layout) = region(2, 1000);
        let mut h = header(&layout);
        h.epochs[0] = epoch(0, Profile::MAINLINE, EpochKind::Mode, 0);
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 0, &[1, 3], &[10, 30]);
        write_record(&mem, &layout, 0, 1, &[2], &[20]);
        let mut r = TelemetryReader::new(mem.clone(), ADDR, layout);
        r.harvest();
        (r, mem, layout)
    }

    /// Sets a record's latest sample (`write_record` leaves it 0).
    fn set_last(
        mem: &crate::vstate::memory::GuestMemory,
        layout: &switcher::telemetry::Layout,
        cpu: usize,
        thread_us: u64,
        irq_us: u64,
    ) {
        use switcher::telemetry::CpuLatencyHeader;
        use vm_memory::{Bytes, GuestAddress};
        let at = ADDR + layout.record(0, cpu) as u64;
        let field = |off: usize| GuestAddress(at + off as u64);
        mem.write_obj(thread_us * 1000 + 400, field(std::mem::offset_of!(CpuLatencyHeader, last_thread_ns))).unwrap();
        mem.write_obj(irq_us * 1000 + 400, field(std::mem::offset_of!(CpuLatencyHeader, last_irq_ns))).unwrap();
    }

    #[test]
    fn status_lines_are_cyclictest_like_and_plain_off_a_terminal() {
        let (mut r, mem, layout) = setup();
        set_last(&mem, &layout, 0, 30, 3);
        r.harvest();
        let mut p = StatusPrinter::new(false, false, Some(Duration::from_secs(3)));
        let text = p.tick(&r, Duration::from_secs(1), 0, None).unwrap();
        p.printed(5);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("rtswitch: 1 s, epoch 0 (mainline), load locks x2 cs 100 us"), "{}", lines[0]);
        assert_eq!(
            lines[1],
            "T: 0 (cpu  0) P:99 I:1000 C:      2 Min:     10 Act:   30 Avg:   20 Max:      30 IRQ Min:      1 Act:    3 \
             Avg:    2 Max:       3"
        );
        // New samples: Act is the latest one; no ANSI off a terminal.
        write_record(&mem, &layout, 0, 0, &[1, 3, 5], &[10, 30, 100]);
        set_last(&mem, &layout, 0, 10, 1);
        r.harvest();
        let text = p.tick(&r, Duration::from_secs(2), 5, None).unwrap();
        assert!(!text.contains('\x1b'));
        assert!(text.lines().nth(1).unwrap().contains("Act:   10"), "{text}");
        assert!(text.lines().nth(1).unwrap().contains("IRQ Min:      1 Act:    1"), "{text}");
    }

    #[test]
    fn only_measuring_cpus_get_a_line_numbered_as_threads() {
        let (mem, layout) = region(3, 1000);
        let mut h = header(&layout);
        h.epochs[0] = epoch(0, Profile::RT, EpochKind::Mode, 0);
        h.measure_cpus = 0b110;
        h.measure_prio = 80;
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 1, &[1], &[10]);
        write_record(&mem, &layout, 0, 2, &[], &[]);
        let mut r = TelemetryReader::new(mem.clone(), ADDR, layout);
        r.harvest();
        let text = StatusPrinter::new(false, false, None).tick(&r, Duration::from_secs(1), 0, None).unwrap();
        let lines: Vec<&str> = text.lines().skip(1).collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with("T: 0 (cpu  1) P:80 I:1000 C:      1"), "{text}");
        assert!(lines[1].starts_with("T: 1 (cpu  2) P:80 "), "{text}");
        assert!(lines[1].contains("Act:    -"), "no sample yet: {text}");
    }

    #[test]
    fn terminal_redraws_in_place_unless_something_else_was_printed() {
        let (r, ..) = setup();
        let mut p = StatusPrinter::new(false, true, None);
        assert!(!p.tick(&r, Duration::from_secs(1), 0, None).unwrap().contains('\x1b'));
        p.printed(10);
        assert!(p.tick(&r, Duration::from_secs(2), 10, None).unwrap().starts_with("\x1b[3A\x1b[J"));
        p.printed(20);
        // Lines wider than the terminal take several rows.
        let text = p.tick(&r, Duration::from_secs(3), 20, Some(80)).unwrap();
        let rows: usize = text.trim_start_matches("\x1b[3A\x1b[J").lines().map(|l| l.len().div_ceil(80)).sum();
        assert!(rows > 3);
        p.printed(20);
        assert!(p.tick(&r, Duration::from_secs(3), 20, None).unwrap().starts_with(&format!("\x1b[{rows}A\x1b[J")));
        p.printed(20);
        // The guest printed a line since: append instead of overwriting it.
        assert!(!p.tick(&r, Duration::from_secs(3), 21, None).unwrap().contains('\x1b'));
    }

    #[test]
    fn nothing_before_the_workload_runs() {
        let (mem, layout) = region(1, 100);
        let mut h = header(&layout);
        h.running = 0;
        write_header(&mem, &h);
        let mut r = TelemetryReader::new(mem.clone(), ADDR, layout);
        r.harvest();
        assert!(StatusPrinter::new(false, false, None).tick(&r, Duration::from_secs(1), 0, None).is_none());
    }

    #[test]
    fn quiet_shows_progress_only_on_long_runs() {
        let (r, ..) = setup();
        let mut short = StatusPrinter::new(true, false, Some(Duration::from_secs(3)));
        assert!(short.tick(&r, Duration::from_secs(2), 0, None).is_none());
        let mut long = StatusPrinter::new(true, false, Some(Duration::from_secs(60)));
        assert!(long.tick(&r, Duration::from_secs(2), 0, None).is_none(), "not in the first seconds");
        let line = long.tick(&r, Duration::from_secs(6), 0, None).unwrap();
        assert_eq!(line, "rtswitch: progress: 6 s of 60 s (10%), 3 samples, epoch 0 (mainline)");
        assert!(long.tick(&r, Duration::from_secs(7), 0, None).is_none(), "plain output: every 10 s");
        assert!(long.tick(&r, Duration::from_secs(16), 0, None).is_some());
        let mut tty = StatusPrinter::new(true, true, None);
        assert!(tty.tick(&r, Duration::from_secs(6), 0, None).unwrap().contains("progress: 6 s, 3 samples"));
        assert!(tty.tick(&r, Duration::from_secs(7), 0, None).is_some(), "every second on a terminal");
    }
}
