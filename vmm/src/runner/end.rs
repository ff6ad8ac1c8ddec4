//! The end of a run, once the vCPUs are joined: how it ended in words,
//! the lock and shim counters, the latency summary and the verdict, the
//! `--json`/`--histogram`/`--plot` files, and the exit code (a violated
//! load check is never success).

use std::time::Duration;

use switcher::abi::{self, LockRegistry};
use switcher::profile::Profile;

use super::lifecycle::Outcome;
use super::shared::Run;
use super::switching::Switching;
use crate::cli::RunConfig;
use crate::exit_code::ExitCode;
use crate::report::{self, LoadVerdict, Measurement, RunInfo};
use crate::vstate::memory;
use crate::watchdog::Watchdog;

/// What the end report reads besides the shared run state.
pub struct EndInputs<'a> {
    pub config: &'a RunConfig,
    pub switching: &'a Switching,
    pub watchdog: &'a mut Watchdog,
    /// `--irq-load`: the injector's rate and counts.
    pub irq_load: Option<crate::vstate::irq_load::IrqLoadCounts>,
    /// The host CPU time of the run's threads (`None`: the guest never ran).
    pub host_cpu: Option<report::host_cpu::HostCpu>,
    /// What the host-noise probe recorded (`None`: `--host-noise off`).
    pub host_noise: Option<crate::host_noise::Snapshot>,
}

/// How the run ended, in words.
fn outcome_text(run: &Run, outcome: &Outcome, ran: f64, grace: Duration) -> String {
    let life = run.life.borrow();
    let why = life.shutdown().map(|s| format!(" ({})", s.reason)).unwrap_or_default();
    match outcome {
        Outcome::GuestExit(0) => format!("guest shut down cleanly after {ran:.3} s{why}"),
        Outcome::GuestExit(s) => format!("guest exited with status {s} after {ran:.3} s{why}"),
        Outcome::GuestPanic(_) => format!("run ended by a guest panic after {ran:.3} s"),
        Outcome::TripleFault { cpu } => {
            format!("run ended by a triple fault on cpu {cpu} after {ran:.3} s")
        }
        Outcome::VcpuFault { cpu, .. } => {
            format!("run ended: vcpu{cpu} could not run, after {ran:.3} s")
        }
        Outcome::TextWrite { cpu, addr } => {
            format!("run ended by a write to guest text at {addr:#x} on cpu {cpu} after {ran:.3} s")
        }
        Outcome::ShutdownTimeout => {
            format!("the guest did not shut down within {:.1} s of being asked{why}; stopped it", grace.as_secs_f64())
        }
        Outcome::Forced => format!("stopped the guest on a second signal{why}"),
        Outcome::NeverStarted => format!("the guest was never started (--paused, no `cont`){why}"),
    }
}

/// Prints how the run ended and the latency reports, writes the output
/// files; returns the run's exit code.
pub fn report(run: &Run, inputs: EndInputs<'_>) -> ExitCode {
    let EndInputs { config, switching, watchdog, irq_load, host_cpu, host_noise } = inputs;
    let ran = run.started.elapsed().as_secs_f64();
    crate::ratelimit::flush(true);
    let outcome = run.life.borrow().outcome().cloned().unwrap_or(Outcome::Forced);
    let ready_at = run.life.borrow().ready_at();
    let grace = config.shutdown_timeout;
    run.say(&outcome_text(run, &outcome, ran, grace));
    if ready_at.is_none() && run.life.borrow().started() {
        run.say(&format!(
            "the guest never reported ready ({} of {} CPUs online)",
            run.guest.borrow().online_mask.count_ones(),
            run.cpu_count
        ));
    }
    if let Some(reg) = memory::read_abi::<LockRegistry>(&run.mem, abi::LOCK_REGISTRY_ADDR)
        && reg.magic == abi::ABI_MAGIC
    {
        run.say(&format!(
            "switchable locks ({} mode): {} acquisitions ({} contended), {} PI boosts; at exit {} held, {} waiting",
            Profile::from_u32(reg.mode).map_or("unknown", Profile::name),
            reg.acquisitions,
            reg.contended,
            reg.pi_boosts,
            reg.held,
            reg.waiters
        ));
    }
    if let Some(line) = run.console.dropped_line() {
        run.say(&line);
    }
    let shim = crate::vstate::shim_stats::ShimEntries::read(&run.mem, run.cpu_count);
    run.say(&shim.to_string());
    if let Some(h) = &host_cpu {
        run.say(&h.line());
    }
    let mut code = outcome.exit_code();
    run.harvest();
    let telemetry = run.telemetry.borrow();
    let measurement = Measurement::from_reader(&telemetry);
    if let Some(sent) = &irq_load
        && let Some(w) = telemetry.workload()
    {
        run.say(&report::irq_load_line(sent, w));
    }
    if let Some(s) = &host_noise {
        let steal = measurement.epochs.iter().map(|e| e.all.figures.steal_ns).fold(0, u64::saturating_add);
        run.say(&report::host_noise::end_line(s, steal));
    }
    if measurement.measured() {
        run.console.report(&report::summary::render(&measurement, host_noise.as_ref()));
    } else if config.workload.enabled != 0 && ready_at.is_some() {
        run.say("no latency samples: the guest never started its measurement threads");
    }
    if measurement.forgotten > 0 {
        run.say(&format!(
            "latency: the table lists the newest {} epochs; {} earlier ones count in its \"all <mode>\" rows \
             (every epoch of each mode) and the --json report's modes[]",
            measurement.epochs.len(),
            measurement.forgotten
        ));
    }
    for line in switching.end_lines() {
        run.say(&line);
    }
    let verdict = measurement.load_verdict();
    if verdict == LoadVerdict::Violated {
        run.say("the load's consistency check FAILED: a switchable lock did not protect its data");
    }
    code = report::exit_code_with_load_check(code, verdict);
    let misbehaviour = crate::misbehaviour::totals();
    if let Some(line) = crate::misbehaviour::summary(&misbehaviour) {
        run.say(&line);
        code = code.worst(ExitCode::GuestMisbehaved);
    }
    // A stall the guest flagged after the last status tick counts too.
    for line in watchdog.check(&run.mem) {
        run.say(&line);
    }
    let guest = run.guest.borrow();
    let result = report::RunResult::judge(
        &measurement,
        config.workload.enabled != 0 && ready_at.is_some(),
        watchdog.stalls(),
        guest.stop.as_ref(),
    );
    run.say(&result.line());
    code = code.worst(result.exit_code());
    let info = RunInfo {
        settings: config.report_settings(),
        tsc_khz: run.tsc_khz,
        host_ps_per_iter: guest.host_ps_per_iter,
        guest: guest.info.clone(),
        ready_ms: ready_at.map(|d| d.as_secs_f64() * 1e3),
        shim,
        elapsed_s: ran,
        outcome: outcome_text(run, &outcome, ran, grace),
        exit_code: code,
        switches: switching.coordinator().history().clone(),
        retained_epochs: telemetry.retain(),
        result,
        stop: guest.stop.clone(),
        irq_load,
        host_cpu,
        misbehaviour: misbehaviour.iter().map(|&(k, n)| (k.to_string(), n)).collect(),
        host_noise,
    };
    let written = report::write_outputs(&measurement, &info);
    for line in &written.notes {
        run.say(line);
    }
    for e in written.errors {
        run.say(&e.to_string());
        code = code.worst(ExitCode::VmmError);
    }
    run.say(&format!("exit code {} ({code:?})", code.code()));
    code
}
