//! `--histogram FILE`: thread latency (what cyclictest measures) in
//! rt-tests 2.4's `cyclictest -h` output format (`print_hist`), one column
//! per measuring CPU (cyclictest's threads, in CPU order; a CPU left out of
//! `--measure-cpus` has none), so that existing cyclictest tooling reads
//! it. Rows are the 1 µs buckets (`--histogram` is refused with a wider
//! `--bucket-us`, see `outputs`):
//!
//! ```text
//! # Histogram
//! 000000 000000\t000000          every bucket 0..hist_max-1 (µs), one count per CPU
//! 000001 000034\t000051
//! ...
//! # Total: 000001234 000001250    samples in the buckets, per CPU (%09)
//! # Min Latencies: 00003 00002
//! # Avg Latencies: 00011 00010
//! # Max Latencies: 00512 00140
//! # Histogram Overflows: 00002 00000
//! # Histogram Overflow at cycle number:
//! # Thread 0: 00017 00342
//! # Thread 1:
//! (empty line)
//! ```
//! Row `i` counts the samples in `[i, i+1)` µs: every row is written,
//! all-zero ones included, as rt-tests 2.4 does, so the row index is the
//! latency. A thread's overflow line lists the cycle numbers the guest
//! logged (per measurement thread, from 0; ascending, at most
//! `telemetry::MAX_OVERFLOW_CYCLES`) and then ` # N others` for the
//! overflows it did not log, as cyclictest does when its log is full. A CPU
//! without samples shows 0 for its min/avg/max. Latencies are truncated to
//! whole µs; `Avg` is the exact ns sum over the samples, truncated.
//!
//! With `--histogram-irq` the IRQ-latency columns of every CPU follow the
//! thread-latency columns on every row and footer line (column `k` of `n`
//! CPUs: thread latency of CPU `k` for `k < n`, IRQ latency of CPU `k - n`
//! after), and `# Thread k:` lines follow the columns (IRQ overflows have
//! no cycle numbers: ` # N others` only).
//!
//! Which epochs a file holds (one file per mode, or a selection) is
//! `outputs`' rule; this module writes one file from per-CPU rows.

use std::fmt::Write;

use super::CpuRow;
use crate::stats::Histogram;

/// One column: a histogram and the cycle numbers of its logged overflows.
struct Column<'a> {
    hist: &'a Histogram,
    overflow_cycles: &'a [u64],
}

/// The file's text for `cpus` (per-CPU rows, merged as the caller chose),
/// `bucket_count` rows; IRQ-latency columns after the thread ones with `irq`.
pub fn render(cpus: &[CpuRow], bucket_count: usize, irq: bool) -> String {
    let mut cols: Vec<Column> =
        cpus.iter().map(|c| Column { hist: &c.figures.thread, overflow_cycles: &c.figures.overflow_cycles }).collect();
    if irq {
        cols.extend(cpus.iter().map(|c| Column { hist: &c.figures.irq, overflow_cycles: &[] }));
    }
    let mut out = String::with_capacity(16 + bucket_count * (8 + 7 * cols.len()) + 200);
    out.push_str("# Histogram\n");
    for us in 0..bucket_count {
        let _ = write!(out, "{us:06} ");
        for (i, c) in cols.iter().enumerate() {
            if i > 0 {
                out.push('\t');
            }
            let _ = write!(out, "{:06}", c.hist.buckets().get(us).copied().unwrap_or(0));
        }
        out.push('\n');
    }
    let line = |out: &mut String, title: &str, width: usize, f: &dyn Fn(&Histogram) -> u64| {
        out.push_str(title);
        for c in &cols {
            let _ = write!(out, " {:0width$}", f(c.hist));
        }
        out.push('\n');
    };
    line(&mut out, "# Total:", 9, &|h| h.count() - h.overflow());
    line(&mut out, "# Min Latencies:", 5, &|h| h.min_ns().map_or(0, |n| n / 1000));
    line(&mut out, "# Avg Latencies:", 5, &|h| h.avg_ns().map_or(0, |a| a as u64 / 1000));
    line(&mut out, "# Max Latencies:", 5, &|h| h.max_ns().map_or(0, |n| n / 1000));
    line(&mut out, "# Histogram Overflows:", 5, &|h| h.overflow());
    out.push_str("# Histogram Overflow at cycle number:\n");
    for (i, c) in cols.iter().enumerate() {
        let _ = write!(out, "# Thread {i}:");
        let overflow = c.hist.overflow();
        let mut logged = c.overflow_cycles.to_vec();
        logged.sort_unstable();
        logged.truncate(overflow as usize);
        for cycle in &logged {
            let _ = write!(out, " {cycle:05}");
        }
        if (logged.len() as u64) < overflow {
            let _ = write!(out, " # {:05} others", overflow - logged.len() as u64);
        }
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use switcher::profile::Profile;
    use switcher::telemetry::EpochKind;

    use super::super::Measurement;
    use super::super::json::tests::measurement;
    use super::*;
    use crate::telemetry::TelemetryReader;
    use crate::telemetry::synth::*;

    /// What a cyclictest histogram parser makes of a file.
    #[derive(Debug, Default)]
    struct Parsed {
        rows: Vec<Vec<u64>>,
        footer: BTreeMap<String, Vec<u64>>,
        threads: Vec<String>,
    }

    /// A parser written from rt-tests 2.4's format: `# Histogram`, then row
    /// `i` is latency `i` µs (every row present, in order), then the
    /// `# Name: numbers` footer, the thread lines and an empty line.
    fn parse(text: &str) -> Parsed {
        let mut p = Parsed::default();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("# Histogram"));
        for l in lines {
            if let Some(rest) = l.strip_prefix("# Thread ") {
                p.threads.push(rest.to_string());
            } else if let Some(rest) = l.strip_prefix("# ") {
                let (name, nums) = rest.split_once(':').unwrap();
                let nums = nums.split_whitespace().map(|n| n.parse().unwrap()).collect();
                p.footer.insert(name.to_string(), nums);
            } else if !l.is_empty() {
                let mut it = l.split_whitespace().map(|n| n.parse::<u64>().unwrap());
                let bucket = it.next().unwrap();
                assert_eq!(bucket, p.rows.len() as u64, "row index is the latency: {l:?}");
                p.rows.push(it.collect());
            }
        }
        assert!(text.ends_with("\n\n"), "an empty line ends the file");
        p
    }

    fn reader(cpus: usize, range: usize, records: &[(usize, &[u64], &[u64])]) -> TelemetryReader {
        let (mem, layout) = region(cpus, range);
        let mut h = header(&layout);
        h.epochs[0] = epoch(0, Profile::MAINLINE, EpochKind::Mode, 0);
        write_header(&mem, &h);
        for &(cpu, irq, thread) in records {
            write_record(&mem, &layout, 0, cpu, irq, thread);
        }
        let mut r = TelemetryReader::new(mem.clone(), ADDR, layout);
        r.harvest();
        r
    }

    #[test]
    fn every_row_is_written_and_idle_and_overflow_only_cpus_keep_their_columns() {
        // cpu 0: in range; cpu 1: no samples; cpu 2: only overflows (range 50 µs).
        let r = reader(3, 50, &[(0, &[1, 1, 1], &[3, 3, 49]), (1, &[], &[]), (2, &[1, 1], &[50, 7000])]);
        let m = Measurement::from_reader(&r);
        let mut cpus = m.per_cpu_mode(None);
        cpus[2].figures.overflow_cycles = vec![4];
        let text = render(&cpus, m.bucket_count, false);
        println!("{text}");
        let p = parse(&text);
        assert_eq!(p.rows.len(), 50, "rows 0..49, all-zero ones included");
        assert_eq!(p.rows[0], vec![0, 0, 0]);
        assert_eq!(p.rows[3], vec![2, 0, 0]);
        assert_eq!(p.rows[49], vec![1, 0, 0]);
        assert!(text.starts_with("# Histogram\n000000 000000\t000000\t000000\n"), "{text}");
        assert!(text.contains("\n000003 000002\t000000\t000000\n"), "{text}");
        assert_eq!(p.footer["Total"], vec![3, 0, 0]);
        assert_eq!(p.footer["Min Latencies"], vec![3, 0, 50], "an idle CPU shows 0");
        assert_eq!(p.footer["Max Latencies"], vec![49, 0, 7000], "max counts overflowed samples");
        assert_eq!(p.footer["Avg Latencies"], vec![18, 0, 3525]);
        assert_eq!(p.footer["Histogram Overflows"], vec![0, 0, 2]);
        assert_eq!(p.threads, vec!["0:", "1:", "2: 00004 # 00001 others"]);
        assert!(text.contains("# Total: 000000003 000000000 000000000\n"));
        for (cpu, row) in cpus.iter().enumerate() {
            let in_rows: u64 = p.rows.iter().map(|c| c[cpu]).sum();
            assert_eq!(in_rows + p.footer["Histogram Overflows"][cpu], row.figures.samples);
        }
    }

    #[test]
    fn logged_cycle_numbers_are_printed_then_the_others() {
        let r = reader(1, 10, &[(0, &[1, 1, 1], &[20, 30, 40])]);
        let m = Measurement::from_reader(&r);
        let mut cpus = m.per_cpu_mode(None);
        cpus[0].figures.overflow_cycles = vec![7, 123_456];
        assert!(render(&cpus, 10, false).contains("\n# Thread 0: 00007 123456 # 00001 others\n"));
        cpus[0].figures.overflow_cycles = vec![1, 2, 3];
        assert!(render(&cpus, 10, false).contains("\n# Thread 0: 00001 00002 00003\n\n"));
    }

    #[test]
    fn irq_columns_follow_the_thread_columns() {
        let r = reader(2, 20, &[(0, &[1, 2], &[5, 6]), (1, &[3], &[15])]);
        let m = Measurement::from_reader(&r);
        let text = render(&m.per_cpu_mode(None), 20, true);
        let p = parse(&text);
        assert_eq!(p.rows.len(), 20);
        assert_eq!(p.rows[1], vec![0, 0, 1, 0], "thread cpu0, thread cpu1, IRQ cpu0, IRQ cpu1");
        assert_eq!(p.rows[3], vec![0, 0, 0, 1]);
        assert_eq!(p.rows[15], vec![0, 1, 0, 0]);
        assert_eq!(p.footer["Max Latencies"], vec![6, 15, 2, 3]);
        assert_eq!(p.threads, vec!["0:", "1:", "2:", "3:"]);
    }

    #[test]
    fn a_run_without_samples_is_still_the_format() {
        let r = reader(2, 20, &[]);
        let m = Measurement::from_reader(&r);
        let p = parse(&render(&m.per_cpu_mode(None), m.bucket_count, false));
        assert_eq!(p.rows.len(), 20);
        assert!(p.rows.iter().all(|r| r == &[0, 0]));
        assert_eq!(p.footer["Max Latencies"], vec![0, 0]);
        assert_eq!(p.footer["Histogram Overflows"], vec![0, 0]);
        assert_eq!(p.threads, vec!["0:", "1:"]);
    }

    #[test]
    fn a_mode_file_holds_that_modes_epochs_only() {
        // measurement(): epoch 0 mainline, epoch 1 rt, two CPUs, range 100.
        let m = measurement();
        let mainline = parse(&render(&m.per_cpu_mode(Some(Profile::MAINLINE)), m.bucket_count, false));
        let rt = parse(&render(&m.per_cpu_mode(Some(Profile::RT)), m.bucket_count, false));
        let all = parse(&render(&m.per_cpu_mode(None), m.bucket_count, false));
        assert_eq!(mainline.rows.len(), 100);
        assert_eq!(mainline.footer["Total"], vec![2, 1]);
        assert_eq!(mainline.footer["Histogram Overflows"], vec![1, 0]);
        assert_eq!(mainline.footer["Max Latencies"], vec![250, 30]);
        assert_eq!(rt.footer["Total"], vec![1, 2]);
        assert_eq!(rt.footer["Max Latencies"], vec![5, 7]);
        assert_eq!(all.footer["Total"], vec![3, 3]);
        assert_eq!(all.footer["Avg Latencies"], vec![(10_500 * 2 + 250_500 + 5_500) / 4 / 1000, 14]);
        // The synthetic record logs its overflow at cycle 0.
        assert_eq!(mainline.threads, vec!["0: 00000", "1:"]);
    }
}
