//! `rtswitch stress`: hammers the runtime switch of a real VM for a while
//! and tallies what happened (the long-running form of the switch-stress
//! tests in `tests/`).
//!
//! It starts `rtswitch run --api-sock ... --load locks --irq-load ...
//! --json ...` (this binary), then until `--duration` passes: requests
//! switches to random profiles (any of the 36, or with `--modes
//! mainline-rt` only those two) at random intervals, and between them
//! races queries, `reset-latency` and clients that connect and vanish
//! mid-switch. At the end it quits the VM and checks: every switch
//! accounted for (requested == completed + failed with a reason), the
//! guest's profile and the site bytes equal to the last completed switch,
//! the load's consistency check ok, every device interrupt taken handled
//! (in hard-IRQ context or by a thread) or still pending, the VM exit code
//! 0. Exit code 0 only if every check holds.
//!
//! Ctrl-C (SIGINT or SIGTERM) ends the hammering early: the same final
//! checks run on what was done, the tally says it was interrupted, and the
//! exit code is `Interrupted` (130) unless a check failed; a second Ctrl-C
//! stops at once.

use std::io::{IsTerminal, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use switcher::profile::Profile;

use rtswitch::api::child::ChildVm;
use rtswitch::exit_code::ExitCode;
use rtswitch::report::json::RunReport;
use rtswitch::telemetry::IrqCounts;
use rtswitch::units::{Unit, parse_duration_in, show};

/// Which profiles the stress run switches between.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StressModes {
    /// Any of the 36 profiles (every idle policy too).
    All,
    /// Only the two named ones.
    MainlineRt,
}

#[derive(Debug, Args, Clone)]
pub struct StressArgs {
    /// How long to hammer: `60s`, `10m`, `1.5h` (a bare number is seconds; 1s to 1d).
    #[arg(long, short = 'D', value_name = "DURATION", default_value = "60s", value_parser = parse_stress_duration)]
    pub duration: Duration,
    /// vCPUs of the VM.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub vcpus: u32,
    /// Longest random pause between two switches: `50ms`, `1s` (a bare number is ms; old name --max-gap-ms).
    #[arg(long, alias = "max-gap-ms", value_name = "DURATION", default_value = "50ms", value_parser = parse_max_gap)]
    pub max_gap: Duration,
    /// Critical section of the lock load in µs (a bare number is µs, or `1ms`).
    #[arg(long, value_name = "US", default_value_t = 1000, value_parser = rtswitch::units::us_in(1, 200_000))]
    pub cs_us: u32,
    /// Seed of the random schedule (printed, so a run can be repeated).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The profiles to switch between: all (any of the 36) or mainline-rt.
    #[arg(long, value_enum, default_value_t = StressModes::All)]
    pub modes: StressModes,
    /// The VM's device interrupt load (`run --irq-load`).
    #[arg(long, value_name = "RATE[,WORK_US]", default_value = "1000,20", value_parser = rtswitch::cli::parse_irq_load)]
    pub irq_load: rtswitch::cli::IrqLoad,
}

fn parse_stress_duration(s: &str) -> Result<Duration, String> {
    parse_duration_in(s, Unit::Secs, Duration::from_secs(1), Duration::from_secs(86_400))
}

fn parse_max_gap(s: &str) -> Result<Duration, String> {
    parse_duration_in(s, Unit::Millis, Duration::ZERO, Duration::from_secs(60))
}

/// xorshift64*: a small, seedable generator (no crate needed).
struct Rng(u64);

impl StressModes {
    fn name(self) -> &'static str {
        match self {
            StressModes::All => "all",
            StressModes::MainlineRt => "mainline-rt",
        }
    }
}

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

#[derive(Default, Debug)]
struct Tally {
    requested: u64,
    completed: u64,
    failed: u64,
    no_ops: u64,
    /// Requests refused because another switch was running.
    busy: u64,
    queries: u64,
    resets: u64,
    abandoned_clients: u64,
    errors: Vec<String>,
}

impl Tally {
    fn check(&mut self, ok: bool, what: String) {
        if !ok {
            self.errors.push(what);
        }
    }
}

/// Runs `rtswitch stress`.
pub fn run(args: &StressArgs) -> ExitCode {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64) | 1
    });
    if let Err(e) = rtswitch::signals::catch_interrupts() {
        eprintln!("rtswitch stress: warning: cannot catch Ctrl-C ({e}); it will stop the run without a tally");
    }
    eprintln!(
        "rtswitch stress: {} on {} vCPUs, lock load cs {} us, seed {seed} (Ctrl-C: stop early, check and tally)",
        show(args.duration),
        args.vcpus,
        args.cs_us
    );
    // A private scratch directory (mkdtemp, mode 0700): never one that
    // already exists, which another user could own.
    let scratch = match tempfile::Builder::new().prefix("rtswitch-stress-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "rtswitch stress: cannot create a scratch directory under {}: {e}",
                std::env::temp_dir().display()
            );
            return ExitCode::VmmError;
        }
    };
    let dir = scratch.path().to_path_buf();
    let json_path = dir.join("result.json");
    let sock = dir.join("api.sock");
    let vm_args: Vec<String> = [
        "--load",
        "locks",
        "--vcpus",
        &args.vcpus.to_string(),
        "--cs-us",
        &args.cs_us.to_string(),
        "--interval-us",
        &(args.cs_us * 5).max(1000).to_string(),
        "--hist-max-us",
        "50000",
        "--switch-timeout",
        "5s",
        "--irq-load",
        &format!("{},{}", args.irq_load.rate_hz, args.irq_load.work_us),
        "--json",
        &json_path.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let started =
        ChildVm::start(&sock, &vm_args).and_then(|vm| vm.wait_ready(Duration::from_secs(60)).map(|s| (vm, s)));
    let (mut vm, mut session) = match started {
        Ok(x) => x,
        Err(e) => {
            eprintln!("rtswitch stress: {e}");
            return ExitCode::VmmError;
        }
    };
    let mut rng = Rng(seed);
    let mut tally = Tally::default();
    let mut last_mode = "mainline".to_string();
    let targets: Vec<&'static str> = match args.modes {
        StressModes::All => Profile::all().map(Profile::name).collect(),
        StressModes::MainlineRt => vec![Profile::MAINLINE.name(), Profile::RT.name()],
    };
    let mut visited = std::collections::BTreeSet::new();
    let start = Instant::now();
    let total = args.duration;
    let tty = std::io::stderr().is_terminal();
    let mut last_progress = Instant::now();
    while start.elapsed() < total && !rtswitch::signals::interrupted() {
        match rng.below(10) {
            // Mostly switches.
            0..=5 => {
                let target = targets[rng.below(targets.len() as u64) as usize];
                tally.requested += 1;
                match session.execute(json!({"execute": "set-mode", "arguments": {"mode": target}}), &mut |_| {}) {
                    Ok(r) if r["return"]["changed"] == json!(false) => {
                        tally.requested -= 1;
                        tally.no_ops += 1;
                    }
                    Ok(r) if r.get("return").is_some() => {
                        tally.completed += 1;
                        visited.insert(target);
                        last_mode = target.to_string();
                    }
                    Ok(r) if r["error"]["desc"].as_str().is_some_and(|d| d.contains("already in progress")) => {
                        // Refused as busy (an abandoned client's switch runs):
                        // not a switch attempt.
                        tally.requested -= 1;
                        tally.busy += 1;
                    }
                    Ok(r) => {
                        tally.failed += 1;
                        let reason = r["error"]["desc"].as_str().unwrap_or_default();
                        tally.check(!reason.is_empty(), format!("a failed switch without a reason: {r}"));
                    }
                    Err(e) => tally.errors.push(format!("set-mode: {e}")),
                }
            }
            6 | 7 => {
                tally.queries += 1;
                let cmd = ["query-status", "query-mode", "query-latency", "query-switches"][rng.below(4) as usize];
                if let Err(e) = session.execute(json!({"execute": cmd}), &mut |_| {}) {
                    tally.errors.push(format!("{cmd}: {e}"));
                }
            }
            8 => {
                tally.resets += 1;
                if let Err(e) = session.execute(json!({"execute": "reset-latency"}), &mut |_| {}) {
                    tally.errors.push(format!("reset-latency: {e}"));
                }
            }
            _ => {
                // A client that asks for a switch and vanishes.
                if let Ok(mut s) = UnixStream::connect(&sock) {
                    let _ = s.write_all(
                        b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"set-mode\",\"arguments\":{\"mode\":\"rt\"}}\n",
                    );
                    tally.abandoned_clients += 1;
                }
                // Its switch may run now: wait until the VM is idle again.
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(10) {
                    match session.execute(json!({"execute": "query-mode"}), &mut |_| {}) {
                        Ok(m) if m["return"]["switching"].is_null() => {
                            last_mode = m["return"]["mode"].as_str().unwrap_or("?").to_string();
                            break;
                        }
                        Ok(_) => std::thread::sleep(Duration::from_millis(5)),
                        Err(e) => {
                            tally.errors.push(format!("query-mode: {e}"));
                            break;
                        }
                    }
                }
            }
        }
        let max_gap_ms = args.max_gap.as_millis() as u64;
        std::thread::sleep(Duration::from_millis(rng.below(max_gap_ms + 1)));
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let line = format!(
                "rtswitch stress: {:>4}/{} s, {} switches ({} failed), {} queries, {} errors",
                start.elapsed().as_secs(),
                total.as_secs(),
                tally.completed,
                tally.failed,
                tally.queries,
                tally.errors.len()
            );
            if tty {
                eprint!("\r{line}");
            } else if start.elapsed().as_secs().is_multiple_of(10) {
                eprintln!("{line}");
            }
        }
    }
    if tty {
        eprintln!();
    }
    let interrupted = rtswitch::signals::interrupted();
    if interrupted {
        eprintln!(
            "rtswitch stress: interrupted after {:.1} s; checking what was done (Ctrl-C again: stop at once)",
            start.elapsed().as_secs_f64()
        );
    }
    // Final state checks through the socket, once the VM is idle (an
    // abandoned client's switch may still be starting or running).
    let idle_by = Instant::now() + Duration::from_secs(10);
    while Instant::now() < idle_by {
        match session.execute(json!({"execute": "query-mode"}), &mut |_| {}) {
            Ok(m) if m["return"]["switching"].is_null() => break,
            Ok(_) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => {
                tally.errors.push(format!("query-mode: {e}"));
                break;
            }
        }
    }
    // Counts from the exact totals; reasons from every record still kept.
    let history = session.switch_list().unwrap_or_else(|e| {
        tally.errors.push(format!("query-switches: {e}"));
        Default::default()
    });
    let list = &history.records;
    let ok = history.totals["completed"].as_u64().unwrap_or(0);
    let bad = history.totals["failed"].as_u64().unwrap_or(0);
    tally.check(
        list.iter().all(|r| r["ok"] == json!(true) || !r["reason"].as_str().unwrap_or("").is_empty()),
        "a failed switch in the history has no reason".into(),
    );
    // The VM also ran switches for abandoned clients: its history counts them.
    tally.check(
        ok >= tally.completed && bad >= tally.failed,
        format!("history has {ok} completed / {bad} failed, the client saw {} / {}", tally.completed, tally.failed),
    );
    // The mode is where the VM's last completed switch went (this client's
    // or an abandoned one's), or where this client last saw it.
    let last_mode = list
        .iter()
        .rev()
        .find(|r| r["ok"] == json!(true))
        .and_then(|r| r["to"].as_str())
        .map_or(last_mode, str::to_string);
    let mode = session.execute(json!({"execute": "query-mode"}), &mut |_| {}).unwrap_or(Value::Null);
    let m = &mode["return"];
    tally.check(
        m["mode"] == json!(last_mode),
        format!("final mode {} but the last switch went to {last_mode}", m["mode"]),
    );
    tally.check(
        m["sites_mode"] == m["mode"],
        format!("site bytes say {} while the mode is {}", m["sites_mode"], m["mode"]),
    );
    tally.check(
        m["guest_mode"] == m["mode"],
        format!("the guest says {} while the mode is {}", m["guest_mode"], m["mode"]),
    );
    let _ = session.execute(json!({"execute": "quit"}), &mut |_| {});
    let code = vm.wait_exit(Duration::from_secs(60));
    tally.check(code == Some(0), format!("the VM exited with {code:?}"));
    let report = std::fs::read_to_string(&json_path).ok().and_then(|t| RunReport::parse(&t).ok());
    let load = report.as_ref().map_or_else(|| "missing".to_string(), |r| r.load_check.result.clone());
    tally.check(load == "ok", format!("load consistency check: {load}"));
    let irqs = report.as_ref().and_then(|r| r.irq_load.as_ref()).map(|i| IrqCounts::total(&i.cpus));
    match irqs {
        Some(IrqCounts { received, hard, threaded }) => tally.check(
            received > 0 && hard + threaded <= received,
            format!("device interrupts: {received} taken, {hard} handled in hard-IRQ context, {threaded} by threads"),
        ),
        None => tally.check(false, "the report has no device interrupt counts".into()),
    }
    drop(scratch);

    let cut = if interrupted { format!(", interrupted: {} asked", show(total)) } else { String::new() };
    println!("stress tally (seed {seed}, {:.1} s{cut}):", start.elapsed().as_secs_f64());
    println!(
        "  switches requested by this client: {} ({} completed, {} failed with a reason)",
        tally.requested, tally.completed, tally.failed
    );
    println!("  switches in the VM's history: {} ({ok} completed, {bad} failed)", ok + bad);
    println!("  no-op requests (already in that mode): {}, refused as busy: {}", tally.no_ops, tally.busy);
    println!(
        "  queries: {}, latency resets: {}, clients abandoned mid-switch: {}",
        tally.queries, tally.resets, tally.abandoned_clients
    );
    println!(
        "  final mode {} (site bytes {}, guest {}); load check {load}",
        m["mode"], m["sites_mode"], m["guest_mode"]
    );
    println!("  profiles switched to: {} of {} ({})", visited.len(), targets.len(), args.modes.name());
    if let Some(IrqCounts { received, hard, threaded }) = irqs {
        println!(
            "  device interrupts: {received} taken, {hard} handled in hard-IRQ context, {threaded} by handler threads"
        );
    }
    println!("  invariant violations and errors: {}", tally.errors.len());
    for e in tally.errors.iter().take(20) {
        println!("    - {e}");
    }
    match (tally.errors.is_empty(), interrupted) {
        (false, _) => ExitCode::GuestFailure,
        (true, true) => ExitCode::Interrupted,
        (true, false) => ExitCode::Ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let (mut a, mut b) = (Rng(42), Rng(42));
        for _ in 0..1000 {
            let x = a.below(7);
            assert_eq!(x, b.below(7));
            assert!(x < 7);
        }
        assert_eq!(Rng(1).below(0), 0);
    }

    #[test]
    fn durations_take_units_and_bare_numbers_keep_their_unit() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: StressArgs,
        }
        let a = Cli::try_parse_from(["stress", "--duration", "2s", "--max-gap", "1s", "--cs-us", "1ms"]).unwrap().args;
        assert_eq!((a.duration, a.max_gap, a.cs_us), (Duration::from_secs(2), Duration::from_secs(1), 1000));
        let a = Cli::try_parse_from(["stress", "-D", "90", "--max-gap-ms", "20"]).unwrap().args;
        assert_eq!((a.duration, a.max_gap), (Duration::from_secs(90), Duration::from_millis(20)));
        let a = Cli::try_parse_from(["stress"]).unwrap().args;
        assert_eq!((a.duration, a.max_gap), (Duration::from_secs(60), Duration::from_millis(50)));
        assert!(Cli::try_parse_from(["stress", "--duration", "0.5s"]).is_err());
    }
}
