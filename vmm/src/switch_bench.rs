//! `rtswitch bench-switch`: what a runtime switch costs, measured on real
//! VMs through the real control socket (a benchmark: it prints figures and
//! judges them against the project's targets; it never fails on speed).
//!
//! Two phases, each on a fresh VM (`rtswitch run --api-sock ...`, this same
//! binary): under the lock load, and with an idle guest (`--load none`). In
//! each, N `set-mode` toggles (freeze, blackout and total as the VMM
//! measured them, and the round trip the client saw), then N
//! `x-pause-resume` calls: the VMM holding and releasing every vCPU with no
//! checks and no patch, the platform floor of a blackout, measured in the
//! same run.

use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::api::child::{ChildVm, ChildVmError};
use crate::api::client::{ClientError, Session};
use crate::exit_code::ExitCode;
use crate::switch::Spread;

#[derive(Debug, Args, Clone)]
pub struct SwitchBenchArgs {
    /// Switches (and pause+resume rounds) per phase.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(2..=100_000))]
    pub count: u32,
    /// vCPUs of the benchmark VMs.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub vcpus: u32,
    /// Critical-section length of the lock load in µs (default: the guest's).
    #[arg(long, value_name = "US")]
    pub cs_us: Option<u32>,
    /// Pause between two switches, in ms (the guest prepares the next
    /// latency epoch's memory in the background meanwhile; 0: back to back).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub gap_ms: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Vm(#[from] ChildVmError),
    #[error("control socket: {0}")]
    Client(#[from] ClientError),
    #[error("the VM refused {what}: {reply}")]
    Refused { what: &'static str, reply: String },
}

/// One phase's figures, in µs.
#[derive(Debug, Default)]
struct Phase {
    freeze: Vec<u64>,
    blackout: Vec<u64>,
    total: Vec<u64>,
    client_rtt: Vec<u64>,
    floor_blackout: Vec<u64>,
    floor_rtt: Vec<u64>,
    cs_us: Option<u64>,
}

const REPLY_LIMIT: Duration = Duration::from_secs(60);

fn start_vm(args: &SwitchBenchArgs, load: &str) -> Result<(ChildVm, Session), BenchError> {
    let sock = std::env::temp_dir().join(format!("rtswitch-bench-{load}-{}.sock", std::process::id()));
    let mut vm_args = vec!["--load".to_string(), load.to_string(), "--vcpus".into(), args.vcpus.to_string()];
    if let Some(cs) = args.cs_us {
        vm_args.extend(["--cs-us".to_string(), cs.to_string()]);
    }
    let vm = ChildVm::start(&sock, &vm_args)?;
    let session = vm.wait_ready(REPLY_LIMIT)?;
    Ok((vm, session))
}

fn run_phase(args: &SwitchBenchArgs, load: &str) -> Result<Phase, BenchError> {
    let (_vm, mut s) = start_vm(args, load)?;
    let mut p = Phase::default();
    let lat = s.execute(json!({"execute": "query-latency"}), &mut |_| {})?;
    p.cs_us = lat["return"]["workload"]
        .as_str()
        .and_then(|w| w.split("cs ").nth(1))
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok());
    for i in 0..args.count {
        let mode = if i % 2 == 0 { "rt" } else { "mainline" };
        let t = Instant::now();
        let r = s.execute(json!({"execute": "set-mode", "arguments": {"mode": mode}}), &mut |_| {})?;
        let rtt = t.elapsed().as_micros() as u64;
        let ret = r.get("return").ok_or_else(|| BenchError::Refused { what: "a switch", reply: r.to_string() })?;
        p.client_rtt.push(rtt);
        for (v, k) in [(&mut p.freeze, "freeze_us"), (&mut p.blackout, "blackout_us"), (&mut p.total, "total_us")] {
            v.push(ret[k].as_u64().unwrap_or(0));
        }
        std::thread::sleep(Duration::from_millis(args.gap_ms));
    }
    for _ in 0..args.count {
        let t = Instant::now();
        let r = s.execute(json!({"execute": "x-pause-resume"}), &mut |_| {})?;
        p.floor_rtt.push(t.elapsed().as_micros() as u64);
        let us = r["return"]["blackout_us"]
            .as_u64()
            .ok_or_else(|| BenchError::Refused { what: "a pause+resume", reply: r.to_string() })?;
        p.floor_blackout.push(us);
    }
    let _ = s.execute(json!({"execute": "quit"}), &mut |_| {});
    Ok(p)
}

fn row(name: &str, v: &mut [u64]) -> String {
    match Spread::of(v) {
        Some(s) => format!("  {name:<28} {}", s.describe_ms()),
        None => format!("  {name:<28} (no data)"),
    }
}

fn p50(v: &mut [u64]) -> u64 {
    Spread::of(v).map_or(0, |s| s.p50_us)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT met" }
}

/// Runs the benchmark and prints its figures.
pub fn run(args: &SwitchBenchArgs) -> ExitCode {
    eprintln!(
        "rtswitch bench-switch: {} switches per phase, {} ms apart, on {} vCPUs; two VMs, one after the other",
        args.count, args.gap_ms, args.vcpus
    );
    let mut phases = Vec::new();
    for load in ["locks", "none"] {
        match run_phase(args, load) {
            Ok(p) => phases.push((load, p)),
            Err(e) => {
                eprintln!("rtswitch bench-switch: error in the {load} phase: {e}");
                return ExitCode::VmmError;
            }
        }
    }
    println!("switch timings, min / p50 / p99 / max (ms)");
    for (load, p) in phases.iter_mut() {
        let title = if *load == "locks" { "under the lock load" } else { "idle guest (--load none)" };
        println!("{title}{}:", p.cs_us.map(|c| format!(" (cs {c} us)")).unwrap_or_default());
        println!("{}", row("freeze (request -> quiescent)", &mut p.freeze));
        println!("{}", row("blackout (vCPUs held)", &mut p.blackout));
        println!("{}", row("total (request -> guest ack)", &mut p.total));
        println!("{}", row("set-mode round trip (client)", &mut p.client_rtt));
        println!("{}", row("floor: pause+resume blackout", &mut p.floor_blackout));
        println!("{}", row("floor: pause+resume round trip", &mut p.floor_rtt));
    }
    println!("targets (DESIGN/issue 5; ring 0 is emulated on this host, so these are this host's figures):");
    if let Some((_, p)) = phases.iter_mut().find(|(l, _)| *l == "locks") {
        let b = p50(&mut p.blackout);
        println!("  blackout p50 <= 100 us under load: {} us, {}", b, verdict(b <= 100));
        let max_total = p.total.iter().copied().max().unwrap_or(0);
        let bound = p.cs_us.unwrap_or(0) + 2000;
        println!("  total <= cs + 2 ms under load ({bound} us): max {max_total} us, {}", verdict(max_total <= bound));
        println!(
            "  blackout above the platform floor (p50): {} us vs {} us",
            p50(&mut p.blackout),
            p50(&mut p.floor_blackout)
        );
    }
    if let Some((_, p)) = phases.iter_mut().find(|(l, _)| *l == "none") {
        let r = p50(&mut p.client_rtt);
        println!("  idle set-mode round trip p50 <= 1 ms: {:.3} ms, {}", r as f64 / 1e3, verdict(r <= 1000));
    }
    ExitCode::Ok
}
