//! The latency table printed at the end of every run that measured: per
//! epoch and CPU, and all CPUs of each epoch, then the worst samples, the
//! workload and the load check.
//!
//! ```text
//! rtswitch: latency summary (us; percentiles from 1 us buckets, ">=N": in the overflow beyond N us)
//!   epoch mode     cpu  samples missed |  IRQ  min    avg  p50  p99 p99.9  max ovf | thread min ...
//!       0 mainline   0     2950      0 |         2    3.1    3    8    20   45   0 |          9 ...
//!       0 mainline all     5900      0 |  ...
//! ```
//! Columns are separated by whitespace (and `|` between the groups) so a
//! script can split rows; a missing figure (no samples) is `-`.

use std::fmt::Write;

use super::{CpuRow, EpochRows, Measurement, load_check_line, workload_line};
use crate::stats::{Histogram, Percentile};

const GROUP: [&str; 7] = ["min", "avg", "p50", "p99", "p99.9", "max", "ovf"];

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn group(h: &Histogram) -> [String; 7] {
    let s = h.stats();
    let pct = |p: Option<Percentile>| opt(p);
    [
        opt(s.min_us),
        s.avg_us.map_or_else(|| "-".to_string(), |a| format!("{a:.1}")),
        pct(s.p50),
        pct(s.p99),
        pct(s.p99_9),
        opt(s.max_us),
        s.overflow.to_string(),
    ]
}

/// An epoch's label, the same in the summary, `ctl latency`, the JSON and
/// the plots: the mode, or `sw:` and the mode switched from for a
/// switching epoch (`sw:mainline`).
pub fn mode_label(e: &EpochRows) -> String {
    e.info.label()
}

/// Lays out `rows` (cells, the first row the heading) in columns as wide as
/// their widest cell, separated by one space after a two-space indent;
/// columns in `left` are left-aligned, the others right-aligned.
pub fn columns(rows: &[Vec<String>], left: &[usize]) -> Vec<String> {
    let mut widths: Vec<usize> = Vec::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            let n = c.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(n),
                None => widths.push(n),
            }
        }
    }
    rows.iter()
        .map(|r| {
            let mut out = String::from(" ");
            for (i, (c, w)) in r.iter().zip(&widths).enumerate() {
                if left.contains(&i) {
                    let _ = write!(out, " {c:<w$}");
                } else {
                    let _ = write!(out, " {c:>w$}");
                }
            }
            out.trim_end().to_string()
        })
        .collect()
}

/// A latency figure for a ratio: µs, and whether it is only a lower bound
/// (a percentile in the overflow).
pub type Figure = Option<(f64, bool)>;

/// `a / b` as `1.48x`; `>=` or `<=` when one side is a lower bound only,
/// `?` when both are, `-` without both figures.
pub fn ratio(a: Figure, b: Figure) -> String {
    match (a, b) {
        (Some((a, a_min)), Some((b, b_min))) if b > 0.0 => match (a_min, b_min) {
            (false, false) => format!("{:.2}x", a / b),
            (true, false) => format!(">={:.2}x", a / b),
            (false, true) => format!("<={:.2}x", a / b),
            (true, true) => "?".to_string(),
        },
        _ => "-".to_string(),
    }
}

/// The rt gain line from the two modes' thread-latency figures (p50, p99,
/// max), when both modes were measured. Every ratio rtswitch prints reads
/// one way, higher is better for rt: gain = mainline / rt.
pub fn ratio_line(rt: [Figure; 3], mainline: [Figure; 3]) -> Option<String> {
    if rt.iter().chain(&mainline).all(Option::is_none) || rt[2].is_none() || mainline[2].is_none() {
        return None;
    }
    Some(format!(
        "{RT_GAIN_TITLE}: p50 {}, p99 {}, max {}",
        ratio(mainline[0], rt[0]),
        ratio(mainline[1], rt[1]),
        ratio(mainline[2], rt[2])
    ))
}

/// The title of the gain line (the summary's and `ctl latency`'s).
pub const RT_GAIN_TITLE: &str =
    "rt gain = mainline / rt thread latency (every epoch of each mode merged; above 1x rt is lower)";

/// p50, p99 and max of a histogram as ratio figures.
fn figures(h: &Histogram) -> [Figure; 3] {
    let s = h.stats();
    let p = |p: Option<Percentile>| p.map(|p| (p.us() as f64, matches!(p, Percentile::AtLeast(_))));
    [p(s.p50), p(s.p99), s.max_ns.map(|n| (n as f64 / 1000.0, false))]
}

/// The whole block, lines separated by `\n`, the first prefixed `rtswitch: `.
/// With the host-noise probe's record (`host`), each worst sample says
/// whether the host stalled across it, and each epoch has a line with its
/// steal time beside the host's stall time.
pub fn render(m: &Measurement, host: Option<&crate::host_noise::Snapshot>) -> String {
    let range = m.bucket_count as u64 * m.bucket_us;
    let bucket = m.bucket_us;
    let row = |epoch: String, label: &str, r: &CpuRow| {
        let mut row = vec![
            epoch,
            label.to_string(),
            r.cpu.map_or_else(|| "all".to_string(), |c| c.to_string()),
            r.figures.samples.to_string(),
            r.figures.missed.to_string(),
            format!("{:.1}", r.figures.steal_ns as f64 / 1e6),
            "|".to_string(),
        ];
        row.extend(group(&r.figures.irq));
        row.push("|".to_string());
        row.extend(group(&r.figures.thread));
        row
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    for e in &m.epochs {
        let label = mode_label(e);
        for r in &e.cpus {
            rows.push(row(e.info.index.to_string(), &label, r));
        }
        if e.cpus.len() > 1 {
            rows.push(row(e.info.index.to_string(), &label, &e.all));
        }
    }
    // Every epoch of each mode merged (forgotten ones included), when the
    // run has more than one epoch.
    let per_mode = m.per_mode();
    if m.forgotten > 0 || m.epochs.len() > 1 {
        for t in &per_mode {
            rows.push(row("all".to_string(), t.mode.name(), &t.all));
        }
    }
    let of = |mode| per_mode.iter().find(|t| t.mode == mode).map(|t| figures(&t.all.figures.thread));
    let ratios = match (of(switcher::profile::Profile::RT), of(switcher::profile::Profile::MAINLINE)) {
        (Some(rt), Some(ml)) => ratio_line(rt, ml),
        _ => None,
    };
    let mut head = vec!["epoch", "mode", "cpu", "samples", "missed", "steal_ms", "|"];
    head.extend(GROUP);
    head.push("|");
    head.extend(GROUP);
    let head: Vec<String> = head.into_iter().map(str::to_string).collect();
    let mut widths: Vec<usize> = head.iter().map(String::len).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    rows.insert(0, head);
    // Mode left-aligned, numbers right-aligned.
    let lines = columns(&rows, &[1]);
    // Group titles over the first column of each group.
    let start = |col: usize| -> usize { 1 + widths[..col].iter().map(|w| w + 1).sum::<usize>() + 1 };
    let (irq_at, thread_at) = (start(7), start(15));
    let titles = format!("{:irq_at$}{:<w$}{}", "", "IRQ latency", "thread latency", w = thread_at - irq_at);

    let mut out = format!(
        "rtswitch: latency summary (us; percentiles from {bucket} us buckets; \">={range}\": in the overflow, beyond \
         the {range} us histogram range; steal_ms: host steal time, the vCPU runnable but not running)\n"
    );
    let _ = writeln!(out, "{}", titles.trim_end());
    for l in &lines {
        let _ = writeln!(out, "{l}");
    }
    if let Some(r) = ratios {
        let _ = writeln!(out, "  {r}");
    }
    for e in &m.epochs {
        if let Some(w) = &e.all.figures.worst {
            let cpu = e
                .cpus
                .iter()
                .find(|c| c.figures.worst.as_ref().is_some_and(|cw| cw == w))
                .and_then(|c| c.cpu)
                .map_or_else(String::new, |c| format!(" on cpu {c}"));
            let masked = if w.masked_ns > 0 { ", the timer IRQ deferred by masked interrupts" } else { "" };
            let vcpu = e.cpus.iter().find(|c| c.figures.worst.as_ref() == Some(w)).and_then(|c| c.cpu);
            let stalled = host.map_or_else(String::new, |s| {
                super::host_noise::worst_clause(super::host_noise::worst_stall(s, vcpu, w.deadline_tsc, w.thread_ns))
            });
            let _ = writeln!(
                out,
                "  epoch {} worst thread latency: {} us{cpu} (IRQ {} us, host steal {} us in its period{stalled}{masked}), \
                 interrupting '{}' with {} switchable lock(s) held, preempt count {}",
                e.info.index,
                w.thread_ns / 1000,
                w.irq_ns / 1000,
                w.steal_ns / 1000,
                w.task,
                w.locks_held,
                w.preempt_count
            );
        }
        if let Some(line) = super::exits::summary_line(e.info.index, &e.all.figures) {
            let _ = writeln!(out, "  {line}");
        }
        if let Some(s) = host {
            let end = e.info.closed().then_some(e.info.end_tsc);
            let stall = s.stall_between(None, e.info.start_tsc, end);
            let _ = writeln!(out, "  {}", super::host_noise::epoch_line(e.info.index, e.all.figures.steal_ns, stall));
        }
        let c = e.all.figures.corrected.stats();
        if c.count > 0 && e.all.figures.missed > 0 {
            let _ = writeln!(
                out,
                "  epoch {} every period (missed ones at the latency that ended them, coordinated omission \
                 corrected): {} periods, p50 {} p99 {} max {} us",
                e.info.index,
                c.count,
                opt(c.p50),
                opt(c.p99),
                opt(c.max_us)
            );
        }
        for c in &e.cpus {
            if let (Some(cpu), Some(p)) = (c.cpu, &c.problem) {
                let _ = writeln!(out, "  epoch {} cpu {cpu}: {p}", e.info.index);
            }
        }
    }
    if let Some(w) = &m.workload {
        let _ = writeln!(out, "  {}", workload_line(w));
    }
    let _ = write!(out, "  {}", load_check_line(m.workload.as_ref()));
    out
}

#[cfg(test)]
mod tests {
    use switcher::profile::Profile;
    use switcher::telemetry::EpochKind;

    use super::*;
    use crate::telemetry::TelemetryReader;
    use crate::telemetry::synth::*;

    #[test]
    fn table_has_a_row_per_cpu_and_epoch_and_the_checks() {
        let (mem, layout) = region(2, 100);
        let mut h = header(&layout);
        h.current_epoch = 1;
        h.epochs[0] = epoch(0, Profile::MAINLINE, EpochKind::Mode, 10);
        h.epochs[1] = epoch(1, Profile::RT, EpochKind::Mode, 0);
        h.load_violations = 2;
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 0, &[1, 2], &[10, 250]);
        write_record(&mem, &layout, 0, 1, &[1], &[30]);
        write_record(&mem, &layout, 1, 0, &[1], &[5]);
        // cpu 1 of epoch 1 stuck mid-update.
        write_record_seq(&mem, &layout, 1, 1, &[1], &[5], 7);
        let mut r = TelemetryReader::new(mem.clone(), ADDR, layout);
        r.harvest();
        let text = render(&Measurement::from_reader(&r), None);
        println!("{text}");
        let rows: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|c| c.first().is_some_and(|f| f.parse::<u64>().is_ok()))
            .collect();
        assert_eq!(rows.len(), 6, "2 epochs x (2 cpus + all)");
        // epoch 0, all CPUs: 3 samples; thread max 250 us overflows the 100 us range.
        let all0 = &rows[2];
        assert_eq!(&all0[..5], ["0", "mainline", "all", "3", "2"]);
        assert_eq!(all0[5], "0.0", "steal_ms");
        let thread = &all0[15..22];
        assert_eq!(thread, ["10", "97.2", "30", ">=100", ">=100", "250", "1"].as_slice(), "{all0:?}");
        assert_eq!(&rows[4][..4], ["1", "rt", "1", "0"]);
        assert!(rows[4].contains(&"-"));
        assert!(text.contains("epoch 1 cpu 1: no consistent copy"));
        assert!(text.contains("epoch 0 worst thread latency: 250 us on cpu 0"));
        assert!(text.contains("load check: VIOLATED"));
        assert!(text.contains("workload: load locks, 2 threads per CPU, cs 100 us, interval 1000 us"));
        // Two epochs: a row per mode merged, and the rt gain (mainline / rt)
        // (thread p50 30 vs 5 us, max 250 vs 5 us; mainline p99 overflowed).
        let all: Vec<&str> = text
            .lines()
            .find(|l| l.trim_start().starts_with("all mainline"))
            .unwrap_or("")
            .split_whitespace()
            .collect();
        assert_eq!(&all[..7], ["all", "mainline", "all", "3", "2", "0.0", "|"], "{text}");
        assert!(
            text.contains(
                "rt gain = mainline / rt thread latency (every epoch of each mode merged; above 1x rt is lower): p50 \
                 6.00x, p99 >=20.00x, max 45.55x"
            ),
            "{text}"
        );
    }

    #[test]
    fn one_epoch_has_no_per_mode_rows_and_ratios_mark_bounds() {
        let (mem, layout) = region(1, 100);
        let mut h = header(&layout);
        h.epochs[0] = epoch(0, Profile::MAINLINE, EpochKind::Mode, 0);
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 0, &[1], &[10]);
        let mut r = TelemetryReader::new(mem.clone(), ADDR, layout);
        r.harvest();
        let text = render(&Measurement::from_reader(&r), None);
        assert!(!text.contains(" all mainline ") && !text.contains("rt gain"), "{text}");
        assert_eq!(ratio(Some((300.0, true)), Some((100.0, false))), ">=3.00x");
        assert_eq!(ratio(Some((300.0, true)), Some((100.0, true))), "?");
        assert_eq!(ratio(None, Some((100.0, false))), "-");
        assert_eq!(ratio(Some((1.0, false)), Some((0.0, false))), "-");
        let rows = columns(&[vec!["a".into(), "bbb".into()], vec!["sw:mainline".into(), "1".into()]], &[0]);
        assert_eq!(rows, ["  a           bbb", "  sw:mainline   1"]);
    }

    #[test]
    fn forgotten_epochs_show_up_in_per_mode_total_rows() {
        let (mem, layout) = region(1, 100);
        let mut r = TelemetryReader::new(mem.clone(), ADDR, layout);
        let mut h = header(&layout);
        let n = r.retain() as u64 + 10;
        for i in 0..n {
            h.current_epoch = i;
            let mode = if i % 2 == 0 { Profile::MAINLINE } else { Profile::RT };
            h.epochs[(i % 4) as usize] = epoch(i, mode, EpochKind::Mode, 0);
            if i > 0 {
                h.epochs[((i - 1) % 4) as usize].end_tsc = 9000 + i;
            }
            write_header(&mem, &h);
            write_record(&mem, &layout, (i % 4) as usize, 0, &[1], &[7]);
            r.harvest();
        }
        let text = render(&Measurement::from_reader(&r), None);
        let totals: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .filter(|c| c.first() == Some(&"all"))
            .collect();
        assert_eq!(totals.len(), 2, "{text}");
        assert_eq!(&totals[0][..4], ["all", "mainline", "all", &(n / 2).to_string()]);
        assert_eq!(&totals[1][..4], ["all", "rt", "all", &(n / 2).to_string()]);
    }
}
