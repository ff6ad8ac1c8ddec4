//! `--histogram FILE`: thread latency (what cyclictest measures) in
//! cyclictest's `-h` output format (rt-tests `print_hist`), one column per
//! CPU, so that existing cyclictest tooling reads it:
//!
//! ```text
//! # Histogram
//! 000012 000034\t000051          bucket (µs), then one count per CPU
//! ...
//! # Total: 000001234 000001250    samples in the buckets, per CPU
//! # Min Latencies: 00003 00002
//! # Avg Latencies: 00011 00010
//! # Max Latencies: 00512 00140
//! # Histogram Overflows: 00002 00000
//! # Histogram Overflow at cycle number:
//! # Thread 0: # 00002 others
//! # Thread 1:
//! ```
//! As in rt-tests 2.x, rows where every CPU has 0 are left out; the
//! `# Total:` line of rt-tests 1.x is kept (2.x dropped it; parsers skip
//! it). Cycle numbers of overflows are not recorded by the guest, so a
//! thread's overflow line only says how many (` # N others`, as cyclictest
//! does when its outlier log is full). A CPU without samples shows 0 for
//! its min/avg/max.
//!
//! A run with several epochs (modes) is written merged per CPU over all
//! epochs: the whole run, as one cyclictest run over the same time would
//! have measured it. The per-epoch histograms are in the `--json` file.

use std::fmt::Write;

use super::Measurement;

/// The file's text.
pub fn render(m: &Measurement) -> String {
    let cpus = m.per_cpu_whole_run();
    let mut out = String::from("# Histogram\n");
    for us in 0..m.bucket_count {
        let counts: Vec<u64> = cpus.iter().map(|c| c.thread.buckets()[us]).collect();
        if counts.iter().all(|&c| c == 0) {
            continue;
        }
        let cols: Vec<String> = counts.iter().map(|c| format!("{c:06}")).collect();
        let _ = writeln!(out, "{us:06} {}", cols.join("\t"));
    }
    let line = |out: &mut String, title: &str, width: usize, f: &dyn Fn(&super::CpuRow) -> u64| {
        out.push_str(title);
        for c in &cpus {
            let _ = write!(out, " {:0width$}", f(c));
        }
        out.push('\n');
    };
    line(&mut out, "# Total:", 9, &|c| c.thread.count() - c.thread.overflow());
    line(&mut out, "# Min Latencies:", 5, &|c| c.thread.min_ns().map_or(0, |n| n / 1000));
    line(&mut out, "# Avg Latencies:", 5, &|c| c.thread.avg_ns().map_or(0, |a| a as u64 / 1000));
    line(&mut out, "# Max Latencies:", 5, &|c| c.thread.max_ns().map_or(0, |n| n / 1000));
    line(&mut out, "# Histogram Overflows:", 5, &|c| c.thread.overflow());
    out.push_str("# Histogram Overflow at cycle number:\n");
    for (i, c) in cpus.iter().enumerate() {
        let _ = write!(out, "# Thread {i}:");
        if c.thread.overflow() > 0 {
            let _ = write!(out, " # {:05} others", c.thread.overflow());
        }
        out.push('\n');
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::json::tests::measurement;
    use super::*;

    /// What a cyclictest histogram parser makes of a file.
    #[derive(Debug, Default)]
    struct Parsed {
        rows: BTreeMap<u64, Vec<u64>>,
        footer: BTreeMap<String, Vec<u64>>,
        threads: Vec<String>,
    }

    /// A parser written from the format, as a tool would read it: rows of
    /// numbers split on whitespace; `# Name: numbers` footer lines.
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
                assert!(p.rows.insert(bucket, it.collect()).is_none(), "bucket {bucket} twice");
            }
        }
        p
    }

    #[test]
    fn idle_and_overflow_only_cpus_keep_their_columns() {
        use switcher::abi::LockMode;
        use switcher::telemetry::EpochKind;

        use super::super::telemetry::TelemetryReader;
        use super::super::telemetry::synth::*;

        // cpu 0: in range; cpu 1: no samples; cpu 2: only overflows (range 50 µs).
        let (mem, layout) = region(3, 50);
        let mut h = header(&layout);
        h.epochs[0] = epoch(0, LockMode::Mainline, EpochKind::Mode, 0);
        write_header(&mem, &h);
        write_record(&mem, &layout, 0, 0, &[1, 1], &[3, 3, 49]);
        write_record(&mem, &layout, 0, 1, &[], &[]);
        write_record(&mem, &layout, 0, 2, &[1, 1], &[50, 7000]);
        let mut r = TelemetryReader::new(mem.clone(), ADDR, layout);
        r.harvest();
        let text = render(&Measurement::from_reader(&r));
        println!("{text}");
        let p = parse(&text);
        assert_eq!(p.rows.keys().copied().collect::<Vec<_>>(), vec![3, 49], "only non-empty rows, in order");
        assert_eq!(p.rows[&3], vec![2, 0, 0]);
        assert_eq!(p.rows[&49], vec![1, 0, 0]);
        assert!(text.contains("\n000003 000002\t000000\t000000\n"), "{text}");
        assert_eq!(p.footer["Total"], vec![3, 0, 0]);
        assert_eq!(p.footer["Min Latencies"], vec![3, 0, 50], "an idle CPU shows 0");
        assert_eq!(p.footer["Max Latencies"], vec![49, 0, 7000], "max counts overflowed samples");
        assert_eq!(p.footer["Avg Latencies"], vec![18, 0, 3525]);
        assert_eq!(p.footer["Histogram Overflows"], vec![0, 0, 2]);
        assert_eq!(p.threads, vec!["0:", "1:", "2: # 00002 others"]);
        // Bucket sums + overflows == samples, per CPU.
        for (cpu, row) in Measurement::from_reader(&r).per_cpu_whole_run().iter().enumerate() {
            let in_rows: u64 = p.rows.values().map(|c| c[cpu]).sum();
            assert_eq!(in_rows + p.footer["Histogram Overflows"][cpu], row.samples);
        }
    }

    #[test]
    fn a_run_without_samples_is_still_the_format() {
        use switcher::abi::LockMode;
        use switcher::telemetry::EpochKind;

        use super::super::telemetry::TelemetryReader;
        use super::super::telemetry::synth::*;

        let (mem, layout) = region(2, 20);
        let mut h = header(&layout);
        h.epochs[0] = epoch(0, LockMode::Rt, EpochKind::Mode, 0);
        write_header(&mem, &h);
        let mut r = TelemetryReader::new(mem.clone(), ADDR, layout);
        r.harvest();
        let text = render(&Measurement::from_reader(&r));
        let p = parse(&text);
        assert!(p.rows.is_empty(), "{text}");
        assert_eq!(p.footer["Max Latencies"], vec![0, 0]);
        assert_eq!(p.footer["Histogram Overflows"], vec![0, 0]);
        assert_eq!(p.threads, vec!["0:", "1:"]);
    }

    #[test]
    fn a_parser_reads_back_what_the_writer_wrote() {
        let m = measurement();
        let text = render(&m);
        println!("{text}");
        // Row format: "%06d " then tab-separated "%06lu" columns.
        assert!(text.contains("\n000010 000002\t000000\n"), "{text}");
        let p = parse(&text);
        let whole = m.per_cpu_whole_run();
        // One column per CPU on every row; column sums are the in-range samples.
        for cols in p.rows.values() {
            assert_eq!(cols.len(), 2);
            assert!(cols.iter().any(|&c| c > 0), "all-zero rows are left out");
        }
        for (cpu, row) in whole.iter().enumerate() {
            let sum: u64 = p.rows.values().map(|c| c[cpu]).sum();
            assert_eq!(sum, row.thread.count() - row.thread.overflow());
            assert_eq!(p.footer["Total"][cpu], sum);
            assert_eq!(p.footer["Histogram Overflows"][cpu], row.thread.overflow());
            assert_eq!(p.footer["Max Latencies"][cpu], row.thread.max_ns().unwrap() / 1000);
            assert_eq!(p.footer["Min Latencies"][cpu], row.thread.min_ns().unwrap() / 1000);
        }
        // Epochs are merged per CPU: cpu 0 had 3 samples in epoch 0 and 1 in epoch 1.
        assert_eq!(p.footer["Total"], vec![3, 3]);
        assert_eq!(p.footer["Max Latencies"], vec![250, 30]);
        assert_eq!(p.footer["Avg Latencies"], vec![(10_500 * 2 + 250_500 + 5_500) / 4 / 1000, 14]);
        assert_eq!(p.footer["Histogram Overflows"], vec![1, 0]);
        assert_eq!(p.threads, vec!["0: # 00001 others", "1:"]);
        assert!(text.ends_with("# Thread 1:\n\n"));
        assert!(text.contains("# Min Latencies: 00005 00006\n"));
    }
}
