//! The benchmark suite, end to end on real VMs, shrunk to a
//! few seconds per family: every family runs, the table has each section,
//! the JSON holds every family's figures and agrees with the table, the
//! plots are SVG, and the adaptive-spinning switch really reaches the
//! guest. It asserts behaviour, never speed: figures are whatever this
//! host gives.

use std::time::Duration;

use rtswitch_tests::{ExitCode, Scratch, require_kvm, run_rtswitch};
use serde_json::Value;

/// Every VM of the shrunk suite is short; the whole run takes ~30 s here.
const LIMIT: Duration = Duration::from_secs(300);

#[test]
fn a_shrunk_suite_prints_every_family_and_writes_json_and_plots() {
    require_kvm();
    let dir = Scratch::new("bench-suite");
    let out = dir.0.join("out");
    let r = run_rtswitch(
        &[
            "bench",
            "--quick",
            "--out",
            out.to_str().unwrap(),
            "--boots",
            "2",
            "--duration",
            "1",
            "--throughput-window",
            "1s",
            "--switches",
            "4",
            "--gap",
            "20ms",
            "--scale-vcpus",
            "1,2",
            "--scale-switches",
            "2",
            "--json",
            dir.0.join("suite.json").to_str().unwrap(),
        ],
        LIMIT,
    );
    r.assert_code(ExitCode::Ok);
    for section in [
        "rtswitch benchmark suite (--quick;",
        "host: ",
        "boot: process start -> guest ready, 2 vCPUs, no workload, 2 of 2 boots: min ",
        "latency (us, all CPUs merged; 1 s per configuration in 2 interleaved slices of 0.50 s",
        "rt gain = mainline / rt thread p99, paired per slice (above 1x rt is lower):",
        "latency targets (judged on the median over 2 slices",
        "rt + none thread p99 / platform timer p99 (busy vCPU): ",
        "rt + cpu thread p99 / platform timer p99 (busy vCPU): ",
        "rt + locks / rt + cpu thread p99: ",
        "rt gain under the lock load (mainline + locks / rt + locks thread p99): ",
        "spread of that rt gain over the repeats (max / min of each repeat's median): no figure (one repeat: ",
        "guest rt + locks thread p99 / host cyclictest p99: ",
        "host CPU of an idle 2-vCPU VM per idle policy",
        "lock throughput (lock operations per second",
        "rt, no adaptive spinning",
        "switch (4 switches per phase, 20 ms apart, 2 vCPUs, ",
        " call sites: ",
        " lock, ",
        "floor: pause+resume blackout",
        "scale (switches under the lock load per vCPU count, 2 each",
        "switch targets (p50 and p99 over each phase's switches):",
        "idle set-mode round trip p50 / QEMU stop+cont p50: ",
        "idle blackout p50 / platform floor (pause+resume) p50: ",
        "lock-load total p99 / (critical section + 1 ms): ",
        "scale: total p50 at 8 vCPUs / at 1 vCPU: no figure",
    ] {
        r.assert_contains(section);
    }
    for run in ["mainline + none", "rt + none", "mainline + cpu", "rt + cpu", "mainline + locks", "rt + locks"] {
        let row = r.stdout.lines().find(|l| l.trim_start().starts_with(run)).unwrap_or_else(|| panic!("no {run} row"));
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells.last(), Some(&"0"), "{run} exit status: {row}");
    }

    let text = std::fs::read_to_string(out.join("bench.json")).expect("bench.json written");
    let v: Value = serde_json::from_str(&text).expect("bench.json parses");
    assert_eq!(v["bench_version"], 8);
    assert_eq!((v["interrupted"].as_bool(), v["not_run"].as_array().map(Vec::len)), (Some(false), Some(0)), "{text}");
    let copy: Value = serde_json::from_str(&std::fs::read_to_string(dir.0.join("suite.json")).expect("--json written"))
        .expect("--json parses");
    assert_eq!(copy, v, "--json and OUT/bench.json differ");
    assert_eq!(v["failures"], serde_json::json!([]), "{text}");
    assert!(v["host"]["kernel_emulated"].as_bool().is_some(), "the guest kernel's speed not recorded");
    let costs = v["host"]["platform_costs"].as_array().expect("platform costs");
    assert!(
        costs
            .iter()
            .any(|c| c["what"].as_str().is_some_and(|w| w.contains("idle wake-up")) && c["p50_ns"].as_u64() > Some(0)),
        "no idle wake-up among the platform costs: {costs:?}"
    );
    r.assert_contains("boot p50").assert_contains("rt lock throughput");
    let boots = v["boot"]["boots"].as_array().expect("boots");
    assert_eq!(boots.len(), 2);
    assert!(boots.iter().all(|b| b["ready_ms"].as_f64().is_some_and(|ms| ms > 0.0)));
    let runs = v["latency"]["runs"].as_array().expect("latency runs");
    assert_eq!(runs.len(), 6);
    let mut seqs = Vec::new();
    for run in runs {
        assert_eq!(run["exit_code"], 0, "{run}");
        assert!(run["figures"]["samples"].as_u64().is_some_and(|n| n > 0), "no samples: {run}");
        // Every slice kept, each a run of its own with its figures.
        let slices = run["slices"].as_array().expect("slices");
        assert_eq!(slices.iter().map(|s| s["slice"].as_u64().unwrap()).collect::<Vec<_>>(), [0, 1], "{run}");
        assert!(slices.iter().all(|s| s["figures"]["thread"]["p99"]["us"].is_u64()), "{run}");
        seqs.extend(slices.iter().map(|s| (s["seq"].as_u64().unwrap(), format!("{}+{}", run["mode"], run["load"]))));
    }
    // Interleaved: slice 0 of every configuration, then slice 1, the
    // compared pair back to back, its order reversed in the next slice.
    seqs.sort();
    let order: Vec<&str> = seqs.iter().map(|s| s.1.as_str()).collect();
    assert_eq!(
        order.join(" ").replace('"', ""),
        "mainline+none rt+none rt+cpu mainline+cpu mainline+locks rt+locks \
         rt+none mainline+none mainline+cpu rt+cpu rt+locks mainline+locks"
    );
    // The table's rt + locks p99 is the JSON's median, named as in the run report (`thread.p99.us`).
    let p99 = runs[5]["figures"]["thread"]["p99"]["us"].as_u64().expect("rt + locks p99");
    let row = r.stdout.lines().find(|l| l.trim_start().starts_with("rt + locks")).expect("rt + locks row");
    assert_eq!(row.split_whitespace().nth(8), Some(p99.to_string().as_str()), "{row}");
    // The platform timed once per round, and the targets judged.
    let l = &v["latency"];
    assert_eq!(l["platform"].as_array().map(Vec::len), Some(2), "{l}");
    assert_eq!(l["targets"].as_array().map(Vec::len), Some(6), "{l}");
    assert!(l["targets"].as_array().unwrap().iter().all(|t| t["verdict"].is_string()), "{l}");
    // The host floor: cyclictest beside each rt + locks slice where it is
    // installed, said where it is not.
    let host = &l["host"];
    if host["unavailable"].is_null() {
        assert_eq!(host["runs"].as_array().map(Vec::len), Some(2), "{host}");
        r.assert_contains("host floor: cyclictest on the host beside each rt + locks slice");
    } else {
        r.assert_contains("host floor: cyclictest is not installed");
    }

    let tput = v["throughput"]["runs"].as_array().expect("throughput runs");
    assert_eq!(tput.len(), 3);
    for t in tput {
        assert!(t["ops_per_s"].as_f64().is_some_and(|x| x > 0.0), "no lock throughput: {t}");
        assert_eq!(t["violations"], 0, "{t}");
        assert_eq!(t["exit_code"], 0, "{t}");
    }
    assert_eq!(tput[2]["adaptive_spinning"], false);

    for phase in [&v["switch"]["under_load"], &v["switch"]["idle"]] {
        let vals = &phase["values"];
        assert_eq!(vals["total"].as_array().map(Vec::len), Some(4), "{phase}");
        assert_eq!(vals["floor_blackout"].as_array().map(Vec::len), Some(4), "{phase}");
        // Every switch completed cooperatively carries the guest's
        // breakdown of its steps; one in one blackout has none.
        let fast = vals["fast"].as_u64().expect("the fast path's count") as usize;
        assert!(fast <= 4, "{phase}");
        for step in ["guest_freeze", "verdict", "serialize", "thaw", "messaging"] {
            assert_eq!(vals[step].as_array().map(Vec::len), Some(4 - fast), "{step}: {phase}");
        }
        let freeze: Vec<u64> =
            vals["freeze"].as_array().unwrap().iter().filter_map(Value::as_u64).filter(|&f| f > 0).collect();
        let guest: Vec<u64> = vals["guest_freeze"].as_array().unwrap().iter().filter_map(Value::as_u64).collect();
        // The guest's freeze is part of the host-measured one (request -> quiescent seen by the VMM).
        assert!(guest.iter().zip(&freeze).all(|(g, f)| g <= f), "guest freeze {guest:?} above host freeze {freeze:?}");
        let s = &phase["spreads"]["blackout"];
        assert!(s["min_us"].as_u64() <= s["p50_us"].as_u64() && s["p50_us"].as_u64() <= s["max_us"].as_u64());
    }
    // QEMU's reference: measured where it is installed, said where not.
    let q = &v["switch"]["qemu"];
    if q["unavailable"].is_null() {
        assert_eq!(q["stop_cont_us"].as_array().map(Vec::len), Some(4), "{q}");
    } else {
        r.assert_contains("no figure (qemu-system-x86_64 ");
    }
    let targets = v["switch_targets"].as_array().expect("switch_targets");
    assert_eq!(targets.len(), 4, "{targets:?}");
    assert!(targets[1]["value"]["value"].as_f64().is_some_and(|x| x > 0.0), "the blackout over the floor: {targets:?}");
    let scale = v["scale"].as_array().expect("scale");
    assert_eq!(scale.iter().map(|p| p["config"]["vcpus"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2]);

    for (plot, needle) in [("latency.svg", "--load locks"), ("switch.svg", "blackout"), ("scale.svg", "vCPU")] {
        let svg = std::fs::read_to_string(out.join(plot)).unwrap_or_else(|e| panic!("{plot} not written: {e}"));
        assert!(svg.starts_with("<svg") || svg.contains("<svg"), "{plot} is not SVG");
        assert!(svg.contains(needle), "{plot} lacks '{needle}'");
    }
}

#[test]
fn the_no_spin_guest_flag_turns_adaptive_spinning_off() {
    require_kvm();
    let r = run_rtswitch(
        &["run", "--mode", "rt", "--no-workload", "--duration", "0.3", "--guest-arg", "no-spin", "--quiet"],
        Duration::from_secs(60),
    );
    r.assert_code(ExitCode::Ok).assert_contains("adaptive spinning DISABLED (guest argument no-spin)");
    let r = run_rtswitch(
        &["run", "--mode", "rt", "--no-workload", "--duration", "0.3", "--quiet"],
        Duration::from_secs(60),
    );
    r.assert_code(ExitCode::Ok).assert_not_contains("adaptive spinning DISABLED");
}

#[test]
fn bad_bench_options_are_refused() {
    for bad in [
        &["bench", "--only", "nothing"][..],
        &["bench", "--boots", "0"],
        &["bench", "--switches", "1"],
        &["bench", "--scale-vcpus", "0"],
        &["bench", "--duration", "-1"],
        &["bench", "--throughput-window", "1.5s"],
    ] {
        let r = run_rtswitch(bad, Duration::from_secs(30));
        r.assert_code(ExitCode::BadArguments);
    }
    // A bad output path is a bad argument, as for `rtswitch run` (exit 2),
    // said before anything runs.
    let dir = Scratch::new("bench-bad-out");
    let file = dir.file("not-a-dir", b"x");
    let r = run_rtswitch(&["bench", "--only", "boot", "--out", file.to_str().unwrap()], Duration::from_secs(30));
    r.assert_code(ExitCode::BadArguments).assert_contains("rtswitch bench: error: --out ");
    // Said before anything ran: no step began, no platform costs were timed.
    let out = r.all_output();
    assert!(!out.contains("platform costs") && !out.contains("rtswitch bench: ["), "something ran:\n{out}");
    let out = dir.0.join("out");
    let r = run_rtswitch(
        &["bench", "--only", "boot", "--out", out.to_str().unwrap(), "--json", "/nonexistent/dir/b.json"],
        Duration::from_secs(30),
    );
    r.assert_code(ExitCode::BadArguments).assert_contains("--json /nonexistent/dir/b.json: its directory");
}

/// `--repeat N`: the measurements run N times; each headline figure is
/// printed with its min / median / max, and the JSON keeps every repeat.
#[test]
fn repeat_prints_the_spread_of_each_headline_and_keeps_every_repeat() {
    require_kvm();
    let dir = Scratch::new("bench-repeat");
    let out = dir.0.join("out");
    let r = run_rtswitch(
        &[
            "bench",
            "--quick",
            "--only",
            "boot,latency,switch",
            "--boots",
            "2",
            "--duration",
            "1",
            "--slices",
            "2",
            "--switches",
            "2",
            "--gap",
            "20ms",
            "--repeat",
            "2",
            "--out",
            out.to_str().unwrap(),
        ],
        LIMIT,
    );
    r.assert_code(ExitCode::Ok);
    r.assert_contains("spread over 2 repeats (min / median / max of each headline figure");
    // The rt gain's spread target is judged over the repeats: a figure,
    // a verdict and each repeat's gain (not "no figure", as with one).
    let line = r
        .stdout
        .lines()
        .find(|l| l.contains("spread of that rt gain over the repeats"))
        .expect("the gain spread target");
    assert!(
        line.contains("x, target <= 1.5x: ") && line.contains("[each repeat's gain: ") && !line.contains("no figure"),
        "{line}"
    );
    // The spread table comes after its title (the targets' verdicts, which
    // also start with "boot p50", come before it).
    let boot = r
        .stdout
        .lines()
        .skip_while(|l| !l.contains("spread over 2 repeats"))
        .find(|l| l.trim_start().starts_with("boot p50"))
        .expect("a boot p50 spread row");
    let cells: Vec<&str> = boot.split_whitespace().collect();
    assert_eq!(cells.len(), 9, "boot p50 ms min median max | two repeats: {boot}");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).expect("bench.json"))
        .expect("bench.json parses");
    let reps = v["repeats"].as_array().expect("repeats[]");
    assert_eq!(reps.len(), 2, "{v}");
    assert!(reps.iter().all(|r| r["failures"] == serde_json::json!([])), "{v}");
    let spread = v["repeat_spread"].as_array().expect("repeat_spread[]");
    let total =
        spread.iter().find(|s| s["name"] == "switch under load: total p50").expect("switch total in the spread");
    assert_eq!(total["values"].as_array().map(Vec::len), Some(2), "{total}");
    assert!(total["min"].as_f64() <= total["median"].as_f64() && total["median"].as_f64() <= total["max"].as_f64());
}

/// The idle family: one run per idle policy, each with its latency and
/// the host CPU its vCPU thread used; polling for ever costs the host
/// more than halting at once (the trade the table shows).
#[test]
fn the_idle_family_runs_each_policy_and_shows_what_it_costs() {
    require_kvm();
    let dir = Scratch::new("bench-idle");
    let out = dir.0.join("out");
    let r = run_rtswitch(
        &["bench", "--quick", "--only", "idle", "--duration", "2", "--vcpus", "1", "--out", out.to_str().unwrap()],
        LIMIT,
    );
    r.assert_code(ExitCode::Ok);
    r.assert_contains("idle: what each idle policy buys and costs");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).expect("bench.json"))
        .expect("bench.json parses");
    let runs = v["idle"].as_array().expect("idle[]");
    let policies: Vec<&str> = runs.iter().map(|r| r["policy"].as_str().unwrap_or("?")).collect();
    assert_eq!(policies, ["halt", "haltpoll", "poll"], "{v}");
    let cpu = |p: &str| {
        let run = runs.iter().find(|r| r["policy"] == p).expect("the run");
        assert!(run["figures"]["thread"]["p99"]["us"].is_u64(), "idle={p} has latency figures: {run}");
        run["vcpu_cpu_mean_pct"].as_f64().unwrap_or_else(|| panic!("idle={p} has a host CPU figure: {run}"))
    };
    let (halt, poll) = (cpu("halt"), cpu("poll"));
    // Polling for ever holds a host core; halting gives it back between
    // activations (about a fifth of a core here): 1.5x is far inside that.
    assert!(
        poll > 1.5 * halt,
        "expected a vCPU that polls for ever to use more host CPU than one that halts: poll {poll:.0}%, halt {halt:.0}%"
    );
}
