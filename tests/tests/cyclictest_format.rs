//! The cyclictest-compatible outputs, end to end on the real VM:
//! `--histogram` in rt-tests 2.4's `cyclictest -h` format and
//! `--cyclictest-json` in `cyclictest --json`'s shape, one file per mode,
//! read by a parser written here from rt-tests' row semantics (not the code
//! under test). When `cyclictest` is installed (`.ci/run` installs
//! rt-tests), a real `cyclictest` run's files are read by the same parser
//! and must have the same structure.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rtswitch::report::json::ModeTotal;
use rtswitch_tests::{ExitCode, RunReport, RunResult, Scratch, read_report, require_kvm, run_rtswitch};
use serde_json::Value;

/// Hard limit per run (killed and failed beyond it).
const LIMIT: Duration = Duration::from_secs(60);
const VCPUS: usize = 2;
/// The histogram range of the runs: rows 0..RANGE-1.
const RANGE: usize = 300;

/// A cyclictest `-h` file as rt-tests 2.4 writes it.
#[derive(Debug)]
struct Hist {
    /// Row `i` = samples of latency `i` µs, one count per column.
    rows: Vec<Vec<u64>>,
    /// The `# Name: n n ...` footer lines, in order.
    footer: Vec<(String, Vec<u64>)>,
    /// Per `# Thread N:` line: the cycle numbers, and the `# N others` count.
    threads: Vec<(Vec<u64>, u64)>,
}

impl Hist {
    fn footer(&self, name: &str) -> &[u64] {
        &self.footer.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no '# {name}:' line")).1
    }

    fn columns(&self) -> usize {
        self.footer("Min Latencies").len()
    }
}

/// rt-tests 2.4 `print_hist` semantics: `# Histogram`; then one row per
/// bucket from 0 up, the row's first number its index (= latency in µs),
/// then one count per column; then the footer lines in this order: `Total`,
/// `Min Latencies`, `Avg Latencies`, `Max Latencies`, `Histogram
/// Overflows`; `# Histogram Overflow at cycle number:`; one `# Thread N:`
/// line per column (cycle numbers, then `# N others`); an empty line.
fn parse(text: &str, what: &str) -> Hist {
    let mut lines = text.lines().peekable();
    assert_eq!(lines.next(), Some("# Histogram"), "{what}: first line");
    let mut rows: Vec<Vec<u64>> = Vec::new();
    while let Some(l) = lines.next_if(|l| !l.starts_with('#')) {
        let mut cells = l.split_whitespace();
        let index: usize = cells.next().and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("{what}: row {l:?}"));
        assert_eq!(index, rows.len(), "{what}: row index is the latency in µs, every row present: {l:?}");
        let counts: Vec<u64> = cells.map(|c| c.parse().unwrap_or_else(|_| panic!("{what}: row {l:?}"))).collect();
        assert!(!counts.is_empty(), "{what}: a row without counts: {l:?}");
        if let Some(first) = rows.first() {
            assert_eq!(counts.len(), first.len(), "{what}: every row has the same columns: {l:?}");
        }
        rows.push(counts);
    }
    let mut footer = Vec::new();
    for name in ["Total", "Min Latencies", "Avg Latencies", "Max Latencies", "Histogram Overflows"] {
        let l = lines.next().unwrap_or_else(|| panic!("{what}: file ends before '# {name}:'"));
        let nums =
            l.strip_prefix(&format!("# {name}:")).unwrap_or_else(|| panic!("{what}: expected '# {name}:', got {l:?}"));
        let nums: Vec<u64> =
            nums.split_whitespace().map(|n| n.parse().unwrap_or_else(|_| panic!("{what}: {l:?}"))).collect();
        footer.push((name.to_string(), nums));
    }
    assert_eq!(lines.next(), Some("# Histogram Overflow at cycle number:"), "{what}");
    let mut threads = Vec::new();
    while let Some(l) = lines.next_if(|l| l.starts_with("# Thread ")) {
        let rest = l.strip_prefix(&format!("# Thread {}:", threads.len())).unwrap_or_else(|| panic!("{what}: {l:?}"));
        let (cycles, others) = match rest.split_once(" # ") {
            Some((c, o)) => {
                let n = o.strip_suffix(" others").unwrap_or_else(|| panic!("{what}: {l:?}"));
                (c, n.parse().unwrap_or_else(|_| panic!("{what}: {l:?}")))
            }
            None => (rest, 0),
        };
        let cycles = cycles.split_whitespace().map(|c| c.parse().unwrap_or_else(|_| panic!("{what}: {l:?}"))).collect();
        threads.push((cycles, others));
    }
    assert_eq!(lines.next(), Some(""), "{what}: an empty line ends the file");
    assert_eq!(lines.next(), None, "{what}: nothing after the empty line");
    let h = Hist { rows, footer, threads };
    let cols = h.columns();
    assert!(!h.rows.is_empty(), "{what}: no rows");
    assert_eq!(h.rows[0].len(), cols, "{what}: row columns match the footer's");
    for (name, nums) in &h.footer {
        assert_eq!(nums.len(), cols, "{what}: '# {name}:' has one number per column");
    }
    assert_eq!(h.threads.len(), cols, "{what}: one '# Thread N:' line per column");
    for c in 0..cols {
        let in_rows: u64 = h.rows.iter().map(|r| r[c]).sum();
        assert_eq!(h.footer("Total")[c], in_rows, "{what}: column {c}: '# Total:' is the sum of its rows");
        let (cycles, others) = &h.threads[c];
        assert_eq!(
            cycles.len() as u64 + others,
            h.footer("Histogram Overflows")[c],
            "{what}: column {c}: logged + others = overflows"
        );
    }
    h
}

fn rtswitch(args: &[&str]) -> RunResult {
    require_kvm();
    let r = run_rtswitch(args, LIMIT);
    r.assert_code(ExitCode::Ok);
    r
}

fn read(path: &Path, r: &RunResult) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{} was not written: {e}\n{}", path.display(), r.stderr))
}

/// `modes[]` of the `--json` file by name.
fn mode<'a>(v: &'a RunReport, name: &str) -> &'a ModeTotal {
    v.mode(name).unwrap_or_else(|| panic!("no mode {name} in {:?}", v.modes))
}

/// One boot mode: `--histogram FILE` is FILE itself, every row 0..RANGE-1,
/// its figures those of the `--json` file; `--histogram-irq` adds the IRQ
/// columns after the thread columns.
#[test]
fn histogram_of_a_single_mode_run_is_rt_tests_format() {
    let dir = Scratch::new("ct-single");
    let (h, j, c) = (dir.0.join("h.txt"), dir.0.join("r.json"), dir.0.join("c.json"));
    let range = RANGE.to_string();
    let r = rtswitch(&[
        "run",
        "--vcpus",
        "2",
        "--duration",
        "2",
        "--serial",
        "none",
        "--quiet",
        "--mode",
        "rt",
        "--hist-max-us",
        &range,
        "--histogram",
        h.to_str().unwrap(),
        "--histogram-irq",
        "--json",
        j.to_str().unwrap(),
        "--cyclictest-json",
        c.to_str().unwrap(),
    ]);
    let names: Vec<String> =
        std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 3, "one mode: the files under the names given, nothing else: {names:?}");
    let hist = parse(&read(&h, &r), "rtswitch --histogram");
    assert_eq!(hist.rows.len(), RANGE, "rows 0..{}", RANGE - 1);
    assert_eq!(hist.columns(), 2 * VCPUS, "thread columns, then IRQ columns");
    let v = read_report(&j, &r.stderr);
    let rt = mode(&v, "rt");
    let samples = rt.samples;
    let thread_total: u64 = (0..VCPUS).map(|c| hist.footer("Total")[c] + hist.footer("Histogram Overflows")[c]).sum();
    assert_eq!(thread_total, samples, "thread columns: rows + overflows = the rt samples of --json");
    let irq_total: u64 =
        (VCPUS..2 * VCPUS).map(|c| hist.footer("Total")[c] + hist.footer("Histogram Overflows")[c]).sum();
    assert_eq!(irq_total, rt.irq.stats.count, "IRQ columns: rows + overflows = IRQ samples");
    let max = (0..VCPUS).map(|c| hist.footer("Max Latencies")[c]).max();
    assert_eq!(max, rt.thread.stats.max_us, "thread max");
    let cpus = v.epochs[0].cpus.as_deref().expect("epoch 0 cpus");
    assert_eq!(cpus.len(), VCPUS);
    for (cpu, entry) in cpus.iter().enumerate() {
        let buckets: BTreeMap<u64, u64> =
            entry.thread.buckets.as_ref().expect("buckets").iter().map(|&[us, n]| (us, n)).collect();
        for (us, row) in hist.rows.iter().enumerate() {
            assert_eq!(
                row[cpu],
                buckets.get(&(us as u64)).copied().unwrap_or(0),
                "cpu {cpu} row {us} vs --json buckets"
            );
        }
    }
    let cj: Value = serde_json::from_str(&read(&c, &r)).unwrap();
    assert_eq!(cj["num_threads"], VCPUS);
    assert_eq!(cj["sysinfo"]["realtime"], 1, "an rt file");
    for cpu in 0..VCPUS {
        let t = &cj["thread"][cpu.to_string()];
        let in_hist: u64 = t["histogram"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
        assert_eq!(in_hist, hist.footer("Total")[cpu], "cpu {cpu}: the JSON histogram holds the in-range samples");
        assert_eq!(t["cycles"].as_u64(), Some(hist.footer("Total")[cpu] + hist.footer("Histogram Overflows")[cpu]));
        assert_eq!(t["max"].as_u64(), Some(hist.footer("Max Latencies")[cpu]));
        assert_eq!(t["min"].as_u64(), Some(hist.footer("Min Latencies")[cpu]));
    }
}

/// Both modes ran: one file per mode (`h.mainline.txt`, `h.rt.txt`), each
/// that mode's samples only (switching epochs never included).
#[test]
fn a_run_with_both_modes_writes_one_file_per_mode() {
    let dir = Scratch::new("ct-per-mode");
    let (h, j, c) = (dir.0.join("h.txt"), dir.0.join("r.json"), dir.0.join("c.json"));
    let range = RANGE.to_string();
    let r = rtswitch(&[
        "run",
        "--vcpus",
        "2",
        "--duration",
        "2.5",
        "--serial",
        "none",
        "--quiet",
        "--switch-every",
        "800",
        // A busy host makes a switch slow, not failed.
        "--switch-timeout",
        "20s",
        "--hist-max-us",
        &range,
        "--histogram",
        h.to_str().unwrap(),
        "--json",
        j.to_str().unwrap(),
        "--cyclictest-json",
        c.to_str().unwrap(),
    ]);
    let v = read_report(&j, &r.stderr);
    assert!(v.switch_totals.completed >= 1, "a switch completed:\n{}", r.stderr);
    assert!(!h.exists() && !c.exists(), "both modes ran: no file under the name given");
    for name in ["mainline", "rt"] {
        let path = dir.0.join(format!("h.{name}.txt"));
        let hist = parse(&read(&path, &r), &format!("--histogram {name}"));
        assert_eq!(hist.rows.len(), RANGE);
        assert_eq!(hist.columns(), VCPUS);
        let total: u64 = (0..VCPUS).map(|c| hist.footer("Total")[c] + hist.footer("Histogram Overflows")[c]).sum();
        assert_eq!(total, mode(&v, name).samples, "{name}: the mode's samples, switching epochs left out");
        r.assert_contains(&format!("wrote --histogram {}", path.display()));
        let cj: Value = serde_json::from_str(&read(&dir.0.join(format!("c.{name}.json")), &r)).unwrap();
        let cycles: u64 = (0..VCPUS).map(|c| cj["thread"][c.to_string()]["cycles"].as_u64().unwrap()).sum();
        assert_eq!(cycles, total, "{name}: --cyclictest-json cycles");
        assert_eq!(cj["sysinfo"]["realtime"], u64::from(name == "rt"));
    }
}

/// The JSON's keys, recursively, with every thread's and histogram's
/// numbered keys folded (`"0"`, `"21"` -> `"N"`).
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(o) => {
            let mut out = serde_json::Map::new();
            for (k, x) in o {
                let key = if k.chars().all(|c| c.is_ascii_digit()) { "N".to_string() } else { k.clone() };
                out.insert(key, shape(x));
            }
            Value::Object(out)
        }
        Value::Number(_) => Value::from("number"),
        Value::String(_) => Value::from("string"),
        other => other.clone(),
    }
}

/// The same parser reads a real cyclictest's `-h` file and ours; the JSON
/// has the same keys. Needs rt-tests' `cyclictest` (installed by `.ci/run`).
#[test]
fn rtswitch_and_real_cyclictest_files_read_the_same() {
    let Ok(out) = Command::new("sh").args(["-c", "command -v cyclictest"]).output() else {
        panic!("cannot run sh to look for cyclictest");
    };
    if !out.status.success() {
        eprintln!(
            "NOTE: cyclictest is not installed: the comparison with rt-tests was NOT run (apt-get install rt-tests; .ci/run installs it)"
        );
        return;
    }
    let dir = Scratch::new("ct-real");
    let (ct_hist, ct_json) = (dir.0.join("ct.hist"), dir.0.join("ct.json"));
    // 100 cycles of 1 ms; the histogram range small enough that a slow host overflows too.
    let mut cmd = Command::new("timeout");
    cmd.args(["30", "cyclictest", "-h", "50", "-l", "100", "-q", "-t1", "-i", "1000"])
        .arg(format!("--histfile={}", ct_hist.display()))
        .arg(format!("--json={}", ct_json.display()));
    let out = cmd.output().expect("running cyclictest");
    let say = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    // SAFETY: geteuid has no preconditions.
    if !out.status.success() && unsafe { libc::geteuid() } != 0 && say.contains("Unable to change scheduling policy") {
        eprintln!(
            "NOTE: cyclictest needs root (or RLIMIT_RTPRIO) for its SCHED_FIFO threads: the comparison with rt-tests was \
             NOT run here (.ci/run runs as root)\n{say}"
        );
        return;
    }
    assert!(out.status.success(), "cyclictest failed ({}); it needs root for SCHED_FIFO:\n{say}", out.status);
    let real = parse(&std::fs::read_to_string(&ct_hist).expect("cyclictest wrote its --histfile"), "cyclictest -h");
    assert_eq!(real.rows.len(), 50);
    assert_eq!(real.columns(), 1);
    let real_total = real.footer("Total")[0] + real.footer("Histogram Overflows")[0];
    assert_eq!(real_total, 100, "cyclictest: rows + overflows = its 100 cycles");

    let (h, c) = (dir.0.join("rts.hist"), dir.0.join("rts.json"));
    let r = rtswitch(&[
        "run",
        "--vcpus",
        "1",
        "--duration",
        "1",
        "--serial",
        "none",
        "--quiet",
        "--hist-max-us",
        "50",
        "--histogram",
        h.to_str().unwrap(),
        "--cyclictest-json",
        c.to_str().unwrap(),
    ]);
    let ours = parse(&read(&h, &r), "rtswitch --histogram");
    assert_eq!(ours.rows.len(), 50);
    let names = |h: &Hist| h.footer.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&ours), names(&real), "the same footer lines in the same order");
    assert_eq!((ours.columns(), ours.threads.len()), (real.columns(), real.threads.len()));

    let real_json: Value =
        serde_json::from_str(&std::fs::read_to_string(&ct_json).expect("cyclictest wrote --json")).unwrap();
    let our_json: Value = serde_json::from_str(&read(&c, &r)).unwrap();
    let (mut a, mut b) = (shape(&real_json), shape(&our_json));
    // An empty histogram has no numbered key to fold: compare the keys that exist in both.
    for s in [&mut a, &mut b] {
        s["thread"]["N"]["histogram"] = Value::Null;
    }
    assert_eq!(b, a, "--cyclictest-json has cyclictest --json's keys and value types");
}

/// cyclictest's threads are the measuring CPUs: with `--measure-cpus 1`
/// the files have one column / one thread, on CPU 1. `--histogram` (1 µs
/// rows) is refused before the boot with a wider `--bucket-us`.
#[test]
fn only_measuring_cpus_are_threads_and_wide_buckets_are_refused() {
    let dir = Scratch::new("ct-measure-cpus");
    let (h, c) = (dir.0.join("h.txt"), dir.0.join("c.json"));
    let range = RANGE.to_string();
    let r = rtswitch(&[
        "run",
        "--vcpus",
        "2",
        "--duration",
        "1.5",
        "--serial",
        "none",
        "--quiet",
        "--measure-cpus",
        "1",
        "--hist-max-us",
        &range,
        "--histogram",
        h.to_str().unwrap(),
        "--cyclictest-json",
        c.to_str().unwrap(),
    ]);
    let hist = parse(&read(&h, &r), "--histogram --measure-cpus 1");
    assert_eq!(hist.columns(), 1, "one measuring CPU, one column");
    assert!(hist.footer("Total")[0] + hist.footer("Histogram Overflows")[0] > 0, "CPU 1 measured");
    let cj: Value = serde_json::from_str(&read(&c, &r)).unwrap();
    assert_eq!(cj["num_threads"], 1);
    assert_eq!(cj["thread"]["0"]["cpu"], 1, "thread 0 is the measurement thread of CPU 1");

    let r = run_rtswitch(
        &["run", "--duration", "5", "--serial", "none", "--bucket-us", "5", "--histogram", h.to_str().unwrap()],
        LIMIT,
    );
    r.assert_code(ExitCode::BadArguments).assert_contains("--bucket-us 5").assert_not_contains("guest ready");
}
