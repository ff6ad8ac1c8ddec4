//! Latency measurement under load, end to end on the real VM:
//! samples on every CPU with each load kind, the printed summary table and
//! the `--json`, `--histogram` and `--plot` files agreeing with each other,
//! the honesty check (a mainline critical section shows up in the thread
//! latency, and is absent without load), the load's consistency check, the
//! live status line, and bad output paths.
//!
//! Timings on this host are noisy (nested KVM, shared cores), so every
//! assertion is about behaviour: a figure is compared with another of the
//! same run (a thread latency with the IRQ latency the host gave it), never
//! with the host's speed; each run lasts about two seconds of guest time.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use rtswitch::report::json::{Cpu, Hist};
use rtswitch::stats::Percentile;
use rtswitch_tests::{ExitCode, RunReport, RunResult, Scratch, read_report, require_kvm, run_rtswitch};

/// Hard limit per run (killed and failed beyond it); a run takes ~2.5 s.
const LIMIT: Duration = Duration::from_secs(60);
const VCPUS: usize = 2;
/// Guest seconds per run.
const DURATION: &str = "2";

/// One run with `extra` options; returns the result and the
/// `--json` report (written into `dir`). The run must end Ok.
fn run_json(dir: &Scratch, name: &str, extra: &[&str]) -> (RunResult, RunReport) {
    let (r, v) = run_json_any(dir, name, extra);
    r.assert_code(ExitCode::Ok);
    (r, v)
}

/// [`run_json`] whatever the exit code (the caller checks it).
fn run_json_any(dir: &Scratch, name: &str, extra: &[&str]) -> (RunResult, RunReport) {
    require_kvm();
    let json = dir.0.join(format!("{name}.json"));
    let vcpus = VCPUS.to_string();
    let mut args = vec!["run", "--vcpus", &vcpus, "--serial", "none", "--json", json.to_str().unwrap()];
    if !extra.contains(&"--duration") {
        args.extend(["--duration", DURATION]);
    }
    args.extend_from_slice(extra);
    let r = run_rtswitch(&args, LIMIT);
    let v = read_report(&json, &r.stderr);
    (r, v)
}

/// A row of the summary table: `epoch mode cpu samples missed | IRQ 7 | thread 7`.
#[derive(Debug)]
struct TableRow {
    epoch: u64,
    mode: String,
    /// `None` for the `all` row.
    cpu: Option<usize>,
    samples: u64,
    missed: u64,
    /// min avg p50 p99 p99.9 max ovf, as printed.
    irq: Vec<String>,
    thread: Vec<String>,
}

/// The rows of the latency summary on stderr, checked for shape.
fn summary_table(r: &RunResult) -> Vec<TableRow> {
    let mut lines = r.stderr.lines().skip_while(|l| !l.starts_with("rtswitch: latency summary"));
    assert!(lines.next().is_some(), "no latency summary on stderr:\n{}", r.stderr);
    let rows: Vec<TableRow> = lines
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .take_while(|c| c.first().is_some_and(|f| !f.starts_with("rtswitch:")))
        .filter(|c| c.first().is_some_and(|f| f.parse::<u64>().is_ok()))
        .map(|c| {
            assert_eq!(c.len(), 22, "a table row has 22 cells: {c:?}");
            assert_eq!((c[6], c[14]), ("|", "|"), "group separators: {c:?}");
            assert!(c[5].parse::<f64>().is_ok(), "steal_ms is a number: {c:?}");
            TableRow {
                epoch: c[0].parse().unwrap(),
                mode: c[1].to_string(),
                cpu: if c[2] == "all" { None } else { Some(c[2].parse().unwrap()) },
                samples: c[3].parse().unwrap(),
                missed: c[4].parse().unwrap(),
                irq: c[7..14].iter().map(|s| s.to_string()).collect(),
                thread: c[15..22].iter().map(|s| s.to_string()).collect(),
            }
        })
        .collect();
    assert!(!rows.is_empty(), "the latency summary has no rows:\n{}", r.stderr);
    rows
}

/// A JSON histogram's figures as the table prints them (`-`: none;
/// `>=N`: a percentile in the overflow).
fn group(h: &Hist) -> Vec<String> {
    let n = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let pct = |p: Option<Percentile>| p.map_or_else(|| "-".to_string(), |p| p.to_string());
    let s = &h.stats;
    vec![
        n(s.min_us),
        s.avg_us.map_or_else(|| "-".to_string(), |a| format!("{a:.1}")),
        pct(s.p50),
        pct(s.p99),
        pct(s.p99_9),
        n(s.max_us),
        n(Some(s.overflow)),
    ]
}

/// The per-CPU entries of the report's first epoch.
fn epoch0_cpus(v: &RunReport) -> &[Cpu] {
    v.epochs[0].cpus.as_deref().expect("epoch 0 cpus")
}

/// Every table row agrees with the JSON entry of its epoch and CPU.
fn table_agrees_with_json(rows: &[TableRow], v: &RunReport) {
    for row in rows {
        let e = v.epochs.iter().find(|e| e.index == row.epoch).unwrap_or_else(|| panic!("epoch {} in JSON", row.epoch));
        assert_eq!(e.mode, row.mode.trim_start_matches("sw:"), "{row:?}");
        let entry = match row.cpu {
            Some(c) => &e.cpus.as_deref().expect("cpus")[c],
            None => &e.all,
        };
        assert_eq!(entry.samples, row.samples, "samples of {row:?}");
        assert_eq!(entry.missed, row.missed, "missed of {row:?}");
        assert_eq!(group(&entry.thread), row.thread, "thread latency of {row:?} vs JSON {:?}", entry.thread);
        assert_eq!(group(&entry.irq), row.irq, "IRQ latency of {row:?} vs JSON {:?}", entry.irq);
    }
}

/// What a cyclictest `-h` histogram reader makes of a file.
#[derive(Debug, Default)]
struct CyclictestHist {
    /// bucket (µs) -> one count per CPU
    rows: BTreeMap<u64, Vec<u64>>,
    /// `# Name: n n ...` footer lines
    footer: BTreeMap<String, Vec<u64>>,
}

/// Parses rt-tests' histogram output: `# Histogram`, rows of a 6-digit
/// bucket then one count per CPU, then the `# ...:` footer lines.
fn parse_cyclictest_hist(text: &str) -> CyclictestHist {
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("# Histogram"), "first line:\n{text}");
    let mut h = CyclictestHist::default();
    let mut in_footer = false;
    for l in lines {
        if l.is_empty() || l.starts_with("# Thread ") || l == "# Histogram Overflow at cycle number:" {
            in_footer = true;
            continue;
        }
        if let Some(rest) = l.strip_prefix("# ") {
            in_footer = true;
            let (name, nums) = rest.split_once(':').unwrap_or_else(|| panic!("footer line without ':': {l:?}"));
            let nums = nums.split_whitespace().map(|n| n.parse().unwrap_or_else(|_| panic!("{l:?}"))).collect();
            assert!(h.footer.insert(name.to_string(), nums).is_none(), "footer {name} twice");
            continue;
        }
        assert!(!in_footer, "a histogram row after the footer: {l:?}");
        let (bucket, counts) = l.split_once(' ').unwrap_or_else(|| panic!("row {l:?}"));
        assert_eq!(bucket.len(), 6, "bucket is %06d: {l:?}");
        let bucket: u64 = bucket.parse().unwrap();
        let counts: Vec<u64> = counts
            .split('\t')
            .map(|c| {
                assert_eq!(c.len(), 6, "count is %06lu: {l:?}");
                c.parse().unwrap()
            })
            .collect();
        if let Some((&last, _)) = h.rows.last_key_value() {
            assert!(bucket > last, "rows ascend: {l:?}");
        }
        h.rows.insert(bucket, counts);
    }
    h
}

/// The `--histogram` file: cyclictest's format, one column per CPU,
/// consistent with itself and with the JSON's thread latency.
fn check_histogram(path: &Path, v: &RunReport) {
    let text = std::fs::read_to_string(path).expect("the --histogram file exists");
    let h = parse_cyclictest_hist(&text);
    assert!(!h.rows.is_empty(), "no histogram rows:\n{text}");
    for key in ["Min Latencies", "Avg Latencies", "Max Latencies", "Histogram Overflows"] {
        let vals = h.footer.get(key).unwrap_or_else(|| panic!("no '# {key}:' line:\n{text}"));
        assert_eq!(vals.len(), VCPUS, "'# {key}:' has one column per CPU:\n{text}");
    }
    let range = u64::from(v.config.hist_max_us);
    assert!(
        h.rows.keys().copied().eq(0..range),
        "every row 0..{} is written, all-zero ones too (rt-tests 2.4)",
        range - 1
    );
    for (bucket, counts) in &h.rows {
        assert_eq!(counts.len(), VCPUS, "row {bucket} has one column per CPU");
    }
    for (cpu, j) in epoch0_cpus(v).iter().enumerate() {
        let in_buckets: u64 = h.rows.values().map(|c| c[cpu]).sum();
        let overflows = h.footer["Histogram Overflows"][cpu];
        let samples = j.samples;
        let thread = &j.thread.stats;
        assert_eq!(in_buckets + overflows, samples, "cpu {cpu}: bucket sum + overflows == samples\n{text}");
        assert_eq!(thread.count, samples, "cpu {cpu}: one thread sample per activation");
        assert_eq!(Some(h.footer["Max Latencies"][cpu]), thread.max_us, "cpu {cpu} max");
        assert_eq!(Some(h.footer["Min Latencies"][cpu]), thread.min_us, "cpu {cpu} min");
        let avg = thread.avg_us.unwrap();
        assert_eq!(h.footer["Avg Latencies"][cpu], avg as u64, "cpu {cpu} avg (truncated)");
        if let Some(total) = h.footer.get("Total") {
            assert_eq!(total[cpu], in_buckets, "cpu {cpu}: '# Total:' is the in-range samples");
        }
    }
}

/// Tags balance, as in well-formed XML (a minimal check, no DTD, no CDATA).
fn check_xml_balanced(svg: &str) {
    let mut stack: Vec<&str> = Vec::new();
    let mut rest = svg;
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        let end = rest.find('>').unwrap_or_else(|| panic!("unterminated tag at {:?}", &rest[..rest.len().min(60)]));
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') || tag.ends_with('/') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let open = stack.pop().unwrap_or_else(|| panic!("</{name}> closes nothing"));
            assert_eq!(open, name.trim(), "</{name}> closes <{open}>");
        } else {
            let name = tag.split_whitespace().next().unwrap_or_else(|| panic!("empty tag"));
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed tags: {stack:?}");
}

fn check_plot(path: &Path) {
    let svg = std::fs::read_to_string(path).expect("the --plot file exists");
    assert!(!svg.is_empty());
    let head = svg.trim_start();
    assert!(head.starts_with("<svg") || head.starts_with("<?xml"), "not an SVG: {}", &svg[..svg.len().min(200)]);
    assert!(svg.trim_end().ends_with("</svg>"), "the SVG does not end with </svg>");
    check_xml_balanced(&svg);
    assert!(svg.contains("<text"), "no text in the plot");
    assert!(svg.contains("latency (µs)"), "no x axis label in the plot");
    assert!(svg.contains("log scale"), "no y axis label in the plot");
}

/// A short run with one load kind: samples on every CPU; table, JSON,
/// histogram and plot agree.
fn load_kind_run(load: &str) {
    let dir = Scratch::new(&format!("latency-{load}"));
    let (hist, plot) = (dir.0.join("a.hist"), dir.0.join("a.svg"));
    let (r, v) = run_json(
        &dir,
        load,
        &["--load", load, "--quiet", "--histogram", hist.to_str().unwrap(), "--plot", plot.to_str().unwrap()],
    );
    assert_eq!(v.schema_version, 2);
    assert_eq!(v.config.load, load);
    assert_eq!(v.workload.as_ref().expect("workload").load, load);
    assert_eq!(v.outcome.exit_code, 0);
    assert_eq!(v.epochs.len(), 1, "no switch: one epoch");
    let cpus = epoch0_cpus(&v);
    assert_eq!(cpus.len(), VCPUS);
    for (i, c) in cpus.iter().enumerate() {
        assert_eq!(c.cpu, Some(i));
        let samples = c.samples;
        assert!(samples >= 10, "cpu {i} has only {samples} samples with --load {load}:\n{}", r.stderr);
        assert_eq!(c.problem, None, "cpu {i}");
    }
    let rows = summary_table(&r);
    assert_eq!(rows.len(), VCPUS + 1, "one row per CPU and the all row");
    for cpu in 0..VCPUS {
        assert!(rows.iter().any(|row| row.cpu == Some(cpu) && row.samples > 0), "cpu {cpu} in the table");
    }
    table_agrees_with_json(&rows, &v);
    let all = &v.epochs[0].all;
    let sum: u64 = cpus.iter().map(|c| c.samples).sum();
    assert_eq!(all.samples, sum, "the all row sums the CPUs");
    let max = cpus.iter().map(|c| c.thread.stats.max_us.unwrap()).max();
    assert_eq!(all.thread.stats.max_us, max, "the all row's max is the CPUs' max");
    check_histogram(&hist, &v);
    check_plot(&plot);
}

#[test]
fn load_none_samples_every_cpu_and_the_reports_agree() {
    load_kind_run("none");
}

#[test]
fn load_cpu_samples_every_cpu_and_the_reports_agree() {
    load_kind_run("cpu");
}

#[test]
fn load_locks_samples_every_cpu_and_the_reports_agree() {
    load_kind_run("locks");
}

/// The thread latency across all CPUs from the JSON's boot epoch.
fn thread_all(v: &RunReport) -> &rtswitch::stats::LatencyStats {
    &v.epochs[0].all.thread.stats
}

/// The critical section must show up: in mainline mode a measurement
/// thread waits behind a spinning lock holder (preemption off) for up to a
/// whole critical section, so the worst thread latency is at least it;
/// without load the typical (p50) latency is far below it.
///
/// Without load, what the guest adds to a wake-up is measured against
/// what the host gave it: the thread latency's p50 above the IRQ
/// latency's p50 (the timer interrupt's own lateness, which a busy host
/// stretches for the thread alike). A critical section in every wake-up
/// would put that difference at the section's length.
#[test]
fn honesty_mainline_critical_section_shows_up_and_is_absent_without_load() {
    const CS_US: u64 = 5000;
    let dir = Scratch::new("latency-honesty");
    let cs = CS_US.to_string();
    let common = ["--mode", "mainline", "--quiet", "--interval-us", "10000", "--cs-us", &cs, "--hist-max-us", "50000"];
    // 5 ms sections with preemption off, spun on from the other CPU: a
    // host that deschedules a holder's vCPU for seconds makes the guest's
    // watchdog fire, which the run says is host starvation (a stuck guest
    // still fails).
    let (r, locks) = run_json_any(&dir, "locks", &[&common[..], &["--load", "locks"]].concat());
    assert!(rtswitch_tests::ok_or_host_starved(r.code(), &r.all_output()), "exit {:?}:\n{}", r.code(), r.stderr);
    let ran = locks.workload.as_ref().expect("workload");
    assert_eq!(u64::from(ran.cs_us), CS_US, "the explicit --cs-us is what ran");
    assert_eq!(ran.interval_us, 10000);
    let max = thread_all(&locks).max_us.expect("thread max");
    assert!(max >= CS_US, "mainline + locks: thread latency max {max} us is below the {CS_US} us critical section");
    let per_cpu_max = epoch0_cpus(&locks).iter().filter_map(|c| c.thread.stats.max_us);
    assert_eq!(per_cpu_max.max(), Some(max));

    let (_, none) = run_json(&dir, "none", &[&common[..], &["--load", "none"]].concat());
    let p50 = thread_all(&none).p50.expect("thread p50");
    assert!(!p50.at_least(), "--load none: p50 overflowed the 50 ms range: {p50}");
    let irq_p50 = none.epochs[0].all.irq.stats.p50.expect("IRQ p50").us();
    let p50 = p50.us();
    assert!(
        p50.saturating_sub(irq_p50) < CS_US / 2,
        "--load none: thread latency p50 {p50} us is not far below {CS_US} us above the IRQ latency's p50 {irq_p50} us"
    );
}

/// The load's consistency check (lost updates under the switchable locks)
/// passes in both regimes, on the console line and in the JSON.
#[test]
fn load_check_is_ok_under_locks_in_both_modes() {
    let dir = Scratch::new("latency-load-check");
    for mode in ["mainline", "rt"] {
        let (r, v) = run_json(&dir, mode, &["--mode", mode, "--load", "locks", "--quiet"]);
        let line = r.stderr.lines().find(|l| l.trim_start().starts_with("load check:")).unwrap_or_else(|| {
            panic!("{mode}: no load check line\n{}", r.stderr);
        });
        assert!(line.trim_start().starts_with("load check: ok ("), "{mode}: {line}");
        assert!(line.contains(" 0 violations"), "{mode}: {line}");
        let lc = &v.load_check;
        assert_eq!(lc.result, "ok", "{mode}: {lc:?}");
        assert_eq!(lc.final_check.as_deref(), Some("ok"), "{mode}: {lc:?}");
        assert_eq!(lc.violations, Some(0), "{mode}: {lc:?}");
        assert!(lc.load_ops.unwrap() > 0, "{mode}: the load ran: {lc:?}");
        assert_eq!(lc.final_tally, lc.final_locked_total, "{mode}: {lc:?}");
        assert_eq!(v.config.mode, mode);
        assert_eq!(v.epochs[0].mode, mode);
    }
}

/// The cyclictest-style status block comes once a second, for every CPU,
/// and `--quiet` hides it (a short run gets no progress line either).
#[test]
fn status_line_once_a_second_unless_quiet() {
    let dir = Scratch::new("latency-status");
    let (r, _) = run_json(&dir, "loud", &["--duration", "2.6"]);
    let headers: Vec<u64> = r
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("rtswitch: ")?.split_once(" s, epoch ")?.0.parse().ok())
        .collect();
    // Ticks at 1 s and 2 s; a late first tick (slow boot) may drop one.
    assert!((1..=3).contains(&headers.len()), "status headers {headers:?}\n{}", r.stderr);
    assert!(headers.windows(2).all(|w| w[0] < w[1]), "one status block per second: {headers:?}");
    for cpu in 0..VCPUS {
        let tag = format!("T:{cpu:2} (cpu {cpu:2}) P:99 I:");
        let n = r.stderr.lines().filter(|l| l.starts_with(&tag)).count();
        assert_eq!(n, headers.len(), "one {tag:?} line per status block\n{}", r.stderr);
    }
    r.assert_contains("T: 0 (cpu  0)").assert_contains(" C:").assert_contains(" Max:").assert_contains(" IRQ Min:");
    assert!(!r.stderr.contains('\x1b'), "no terminal escapes on a pipe");

    let (q, _) = run_json(&dir, "quiet", &["--duration", "2.6", "--quiet"]);
    q.assert_not_contains("T: 0 (cpu  0)").assert_not_contains("progress:").assert_contains("latency summary");
}

/// Output paths are checked before the boot: a path that cannot be
/// written, or a --plot that is not .svg, is refused at once (exit code 2,
/// BadArguments), no VM is started and no file is left behind. The run
/// asks for a duration longer than the test's limit: one refused after
/// its boot could only end by being killed.
#[test]
fn bad_output_paths_are_refused_before_the_boot() {
    require_kvm();
    let dir = Scratch::new("latency-bad-paths");
    let good = dir.0.join("ok.hist");
    let common = ["run", "--vcpus", "2", "--duration", "600", "--serial", "none", "--quiet"];
    let cases: [(&[&str], &str); 3] = [
        (
            &["--json", "/nonexistent/dir/x.json"],
            "--json /nonexistent/dir/x.json: its directory /nonexistent/dir does not exist",
        ),
        (
            &["--plot", "/tmp/x.png"],
            "--plot /tmp/x.png: rtswitch draws SVG only; name the file with the .svg extension",
        ),
        (&["--cyclictest-json", "/nonexistent/c.json"], "--cyclictest-json /nonexistent/c.json: its directory"),
    ];
    for (bad, message) in cases {
        let args: Vec<&str> =
            common.iter().copied().chain(bad.iter().copied()).chain(["--histogram", good.to_str().unwrap()]).collect();
        let r = run_rtswitch(&args, LIMIT);
        r.assert_code(ExitCode::BadArguments)
            .assert_contains(message)
            .assert_not_contains("guest ready")
            .assert_not_contains("latency summary")
            .assert_not_contains("panicked");
        assert!(!good.exists(), "no file is written or left behind");
    }
}
