//! `rtswitch locktest FILE...`: lock scenarios as scripts, in Linux
//! rt-tester's format (docs/locktest.md). Every file is parsed before
//! the VM boots (a bad line is exit code 2); then one VM in tester mode
//! (`--guest-arg locktest`) runs the files one after the other, each
//! from a clean tester, and each file's result is printed as it ends:
//! `PASS`, `FAIL file:line` with what was expected and seen, or `N/A`
//! from a line on when the mainline lock cannot show what the file tests.
//! Exit code 0 only if no file failed.
//!
//! `parse` reads the files, `check` holds the predicates on the tester's
//! state, `run` drives the VM over QMP; this module has the options, the
//! loop over the files and the report.

pub mod check;
#[cfg(test)]
mod fake;
pub mod parse;
pub mod run;

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use switcher::profile::Profile;

use rtswitch::exit_code::ExitCode;
use rtswitch::units::{Unit, parse_duration_in, show};

use parse::Scenario;
use run::{ChildTester, Outcome, RunError, Settings, Vm};

#[derive(Debug, Args, Clone)]
pub struct LocktestArgs {
    /// Scenario files in rt-tester's format (docs/locktest.md); all are parsed before the VM boots.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Profile the VM boots in, and is returned to before each file: mainline, rt, or locks=..,preempt=..,irq=..
    #[arg(long, value_name = "PROFILE", default_value = "rt", value_parser = rtswitch::cli::parse_profile)]
    pub profile: Profile,
    /// vCPUs of the VM, 1 to the host's CPU count; tester thread i runs on vCPU i % N.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub vcpus: u32,
    /// Longest wait of a W: step: `5000`, `2s` (a bare number is ms; 1ms to 10m).
    #[arg(long, value_name = "MS", default_value = "5000", value_parser = parse_wait_timeout)]
    pub wait_timeout: Duration,
    /// Print each step as it runs, with how long a W: waited and how a switch ended.
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

fn parse_wait_timeout(s: &str) -> Result<Duration, String> {
    parse_duration_in(s, Unit::Millis, Duration::from_millis(1), Duration::from_secs(600))
}

/// Why the runner did not start.
#[derive(Debug, thiserror::Error)]
pub enum LocktestError {
    #[error(
        "--vcpus {vcpus}: this host has {host} CPU(s), and a tester thread spinning on a mainline lock keeps a \
         vCPU busy; give --vcpus {host} or fewer"
    )]
    TooManyVcpus { vcpus: u32, host: usize },
    #[error("cannot read scenario file {file}: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{0}")]
    Parse(#[from] parse::ParseError),
}

/// Checks what clap cannot: the host's CPU count.
pub fn check_vcpus(vcpus: u32, host: usize) -> Result<(), LocktestError> {
    if vcpus as usize > host { Err(LocktestError::TooManyVcpus { vcpus, host }) } else { Ok(()) }
}

/// Reads and parses every file; every error of every file, or the scenarios.
pub fn load(files: &[PathBuf]) -> Result<Vec<Scenario>, Vec<LocktestError>> {
    let mut scenarios = Vec::new();
    let mut errors = Vec::new();
    for path in files {
        let file = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => match parse::parse(&file, &text) {
                Ok(s) => scenarios.push(s),
                Err(e) => errors.extend(e.into_iter().map(LocktestError::Parse)),
            },
            Err(source) => errors.push(LocktestError::Read { file, source }),
        }
    }
    if errors.is_empty() { Ok(scenarios) } else { Err(errors) }
}

/// Runs `rtswitch locktest`.
pub fn run(args: &LocktestArgs) -> ExitCode {
    let host = std::thread::available_parallelism().map_or(1, |n| n.get());
    if let Err(e) = check_vcpus(args.vcpus, host) {
        eprintln!("rtswitch locktest: error: {e}");
        return ExitCode::BadArguments;
    }
    let scenarios = match load(&args.files) {
        Ok(s) => s,
        Err(errors) => {
            for e in &errors {
                eprintln!("rtswitch locktest: error: {e}");
            }
            eprintln!("rtswitch locktest: {} error(s); nothing was run", errors.len());
            return ExitCode::BadArguments;
        }
    };
    if let Err(e) = rtswitch::signals::catch_interrupts() {
        eprintln!("rtswitch locktest: warning: cannot catch Ctrl-C ({e}); it will stop the run without a summary");
    }
    let s = Settings {
        profile: args.profile,
        vcpus: args.vcpus,
        wait_timeout: args.wait_timeout,
        verbose: args.verbose,
        cleanup_limit: run::CLEANUP_LIMIT,
    };
    println!(
        "rtswitch locktest: {} file(s), profile {}, {} vCPU(s), W: waits up to {} (Ctrl-C: stop after the step)",
        scenarios.len(),
        s.profile,
        s.vcpus,
        show(s.wait_timeout)
    );
    let mut boot = || ChildTester::boot(&s).map(|t| Box::new(t) as Box<dyn Vm>);
    run_all(&scenarios, &s, &mut boot, &mut std::io::stdout()).exit_code()
}

/// The tally of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub not_applicable: usize,
    pub not_run: usize,
    pub interrupted: bool,
    /// Why the VM could not be had (booted, or made clean).
    pub vm_error: Option<String>,
}

impl Summary {
    pub fn exit_code(&self) -> ExitCode {
        if self.vm_error.is_some() {
            ExitCode::VmmError
        } else if self.failed > 0 {
            ExitCode::GuestFailure
        } else if self.interrupted {
            ExitCode::Interrupted
        } else if self.passed + self.not_applicable == 0 {
            ExitCode::VmmError
        } else {
            ExitCode::Ok
        }
    }

    fn line(&self, s: &Settings) -> String {
        let mut l = format!(
            "locktest ({}, {} vCPU(s)): {} passed, {} failed, {} not applicable in mainline (not failures)",
            s.profile, s.vcpus, self.passed, self.failed, self.not_applicable
        );
        if self.not_run > 0 {
            l += &format!(", {} not run", self.not_run);
        }
        if self.interrupted {
            l += ", interrupted";
        }
        l
    }
}

/// A file's result line(s).
pub fn report(sc: &Scenario, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Pass { steps, skipped } => {
            format!("PASS {} ({steps} steps, {skipped} not applicable in mainline)", sc.file)
        }
        Outcome::Fail(f) => {
            let mut l = format!("FAIL {}:{}: {} : expected {}, seen {}", sc.file, f.line, f.text, f.expected, f.seen);
            if let Some(w) = f.waited {
                l += &format!(" (after {} ms)", w.as_millis());
            }
            if let Some(t) = &f.thread {
                l += &format!("\n     {t}");
            }
            l
        }
        Outcome::NotApplicable { line, reason, .. } => format!("N/A  {} from line {line}: {reason}", sc.file),
        Outcome::Interrupted { line } => format!("STOP {} at line {line}: interrupted", sc.file),
    }
}

/// Whether the tester is at a clean start: every thread idle, nothing
/// held or waited for, the asked profile.
fn verify(vm: &mut dyn Vm, s: &Settings) -> Result<(), String> {
    let st = run::read_state(vm).map_err(|e| e.to_string())?;
    let left = check::unclean(&st);
    if !left.is_empty() {
        return Err(left.join("; "));
    }
    let m = vm.execute(json!({"execute": "query-mode"})).map_err(|e| e.to_string())?;
    match m["return"]["mode"].as_str() {
        Some(p) if p == s.profile.name() => Ok(()),
        other => Err(format!("the profile is {}, not {}", other.unwrap_or("unknown"), s.profile)),
    }
}

/// A clean VM in `slot`: the one there if it verifies (after a cleanup
/// if need be), else a new one.
fn prepare(
    slot: &mut Option<Box<dyn Vm>>,
    s: &Settings,
    boot: &mut dyn FnMut() -> Result<Box<dyn Vm>, RunError>,
    out: &mut dyn Write,
) -> Result<(), String> {
    if let Some(vm) = slot.as_deref_mut() {
        if verify(vm, s).is_ok() {
            return Ok(());
        }
        match run::cleanup(vm, s).map_err(|e| e.to_string()).and_then(|()| verify(vm, s)) {
            Ok(()) => return Ok(()),
            Err(e) => {
                let _ = writeln!(out, "     the tester is not clean ({e}); the VM is rebooted");
                *slot = None;
            }
        }
    }
    let mut vm = boot().map_err(|e| e.to_string())?;
    verify(vm.as_mut(), s).map_err(|e| format!("a freshly booted tester is not clean: {e}"))?;
    *slot = Some(vm);
    Ok(())
}

/// Runs every scenario on one VM (booted by `boot` at first, and again
/// only when one broke or could not be cleaned), printing each file's
/// result to `out` as it ends, then the summary.
pub fn run_all(
    scenarios: &[Scenario],
    s: &Settings,
    boot: &mut dyn FnMut() -> Result<Box<dyn Vm>, RunError>,
    out: &mut dyn Write,
) -> Summary {
    let mut sum = Summary::default();
    let mut slot: Option<Box<dyn Vm>> = None;
    for (i, sc) in scenarios.iter().enumerate() {
        let left = scenarios.len() - i;
        if rtswitch::signals::interrupted() {
            sum.interrupted = true;
            sum.not_run = left;
            break;
        }
        if let Err(e) = prepare(&mut slot, s, boot, out) {
            let after = if left > 1 { format!(" and the {} file(s) after it", left - 1) } else { String::new() };
            let _ = writeln!(out, "ERROR {}{after} not run: {e}", sc.file);
            sum.vm_error = Some(e);
            sum.not_run = left;
            break;
        }
        let Some(vm) = slot.as_deref_mut() else { break };
        if s.verbose {
            let _ = writeln!(out, "{}:", sc.file);
        }
        let outcome = run::run_file(vm, sc, s, out);
        let _ = writeln!(out, "{}", report(sc, &outcome));
        let _ = out.flush();
        match &outcome {
            Outcome::Pass { .. } => sum.passed += 1,
            Outcome::Fail(_) => sum.failed += 1,
            Outcome::NotApplicable { .. } => sum.not_applicable += 1,
            Outcome::Interrupted { .. } => {
                sum.interrupted = true;
                sum.not_run = left;
            }
        }
        if matches!(&outcome, Outcome::Fail(f) if f.broken) {
            slot = None;
        } else if let Err(e) = run::cleanup(vm, s) {
            let next = if left > 1 { "rebooted for the next file" } else { "stopped" };
            let _ = writeln!(out, "     cleanup after {} failed: {e}; the VM is {next}", sc.file);
            slot = None;
        }
        if sum.interrupted {
            break;
        }
    }
    if let Some(mut vm) = slot {
        vm.quit();
    }
    let _ = writeln!(out, "{}", sum.line(s));
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locktest::fake::Fake;

    fn settings(profile: Profile) -> Settings {
        Settings {
            profile,
            vcpus: 2,
            wait_timeout: Duration::from_millis(30),
            verbose: false,
            cleanup_limit: Duration::from_millis(30),
        }
    }

    fn scenario(name: &str, text: &str) -> Scenario {
        parse::parse(name, text).unwrap()
    }

    #[test]
    fn options_have_defaults_and_bounds() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: LocktestArgs,
        }
        let a = Cli::try_parse_from(["locktest", "a.tst", "b.tst"]).unwrap().args;
        assert_eq!(a.files, [PathBuf::from("a.tst"), PathBuf::from("b.tst")]);
        assert_eq!((a.profile, a.vcpus, a.wait_timeout, a.verbose), (Profile::RT, 2, Duration::from_secs(5), false));
        let a = Cli::try_parse_from([
            "locktest",
            "--profile",
            "mainline",
            "--vcpus",
            "1",
            "--wait-timeout",
            "250",
            "-v",
            "x",
        ])
        .unwrap()
        .args;
        assert_eq!(
            (a.profile, a.vcpus, a.wait_timeout, a.verbose),
            (Profile::MAINLINE, 1, Duration::from_millis(250), true)
        );
        assert_eq!(
            Cli::try_parse_from(["locktest", "--wait-timeout", "2s", "x"]).unwrap().args.wait_timeout,
            Duration::from_secs(2)
        );
        for bad in [
            &["locktest"][..],
            &["locktest", "--vcpus", "0", "x"],
            &["locktest", "--vcpus", "65", "x"],
            &["locktest", "--wait-timeout", "0", "x"],
            &["locktest", "--wait-timeout", "11m", "x"],
            &["locktest", "--profile", "fast", "x"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
        }
        assert!(check_vcpus(2, 2).is_ok());
        let e = check_vcpus(3, 2).unwrap_err().to_string();
        assert!(e.starts_with("--vcpus 3: this host has 2 CPU(s)") && e.contains("give --vcpus 2 or fewer"), "{e}");
    }

    #[test]
    fn every_file_is_read_and_every_error_reported() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.tst");
        let bad = dir.path().join("bad.tst");
        std::fs::write(&good, "C: lock: 0: 0\nW: locked: 0: 0\n").unwrap();
        std::fs::write(&bad, "C: lockcont: 0: 0\nW: locked: 9: 0\n").unwrap();
        assert_eq!(load(std::slice::from_ref(&good)).unwrap()[0].steps.len(), 2);
        let errs = load(&[bad.clone(), good, dir.path().join("missing.tst")]).unwrap_err();
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(text.len(), 3, "{text:?}");
        assert!(text[0].contains("bad.tst:1:4: 'lockcont' is refused"), "{}", text[0]);
        assert!(text[1].contains("bad.tst:2:12: thread '9'"), "{}", text[1]);
        assert!(text[2].starts_with("cannot read scenario file") && text[2].contains("missing.tst"), "{}", text[2]);
    }

    #[test]
    fn the_report_says_pass_fail_or_not_applicable() {
        let sc = scenario("pi.tst", "C: lock: 0: 0\n");
        assert_eq!(
            report(&sc, &Outcome::Pass { steps: 16, skipped: 3 }),
            "PASS pi.tst (16 steps, 3 not applicable in mainline)"
        );
        let f = run::Failure {
            line: 9,
            text: "T: prioeq: 0: 81".into(),
            expected: "P == 81".into(),
            seen: "P = 80".into(),
            waited: Some(Duration::from_millis(5003)),
            thread: Some("thread 0 (cpu 0, idle): ...".into()),
            broken: false,
        };
        assert_eq!(
            report(&sc, &Outcome::Fail(Box::new(f))),
            "FAIL pi.tst:9: T: prioeq: 0: 81 : expected P == 81, seen P = 80 (after 5003 ms)\n     thread 0 (cpu 0, idle): ..."
        );
        let na = Outcome::NotApplicable { line: 8, reason: "why".into(), skipped: 0 };
        assert_eq!(report(&sc, &na), "N/A  pi.tst from line 8: why");
    }

    #[test]
    fn one_vm_runs_every_file_and_a_broken_one_is_replaced() {
        let pass = scenario("pass.tst", "C: lock: 0: 0\nW: locked: 0: 0\nC: switch: 0: mainline\n");
        let fail = scenario("fail.tst", "C: lock: 0: 1\nW: locked: 1: 1\n");
        let na = scenario("na.tst", "C: switch: 0: mainline\nW: opcodeeq: 0: -35\n");
        let boots = std::cell::Cell::new(0);
        let mut boot = || {
            boots.set(boots.get() + 1);
            Ok(Box::new(Fake::new(Profile::RT, 2)) as Box<dyn Vm>)
        };
        let mut out = Vec::new();
        let files = [pass.clone(), fail, na, pass.clone()];
        let sum = run_all(&files, &settings(Profile::RT), &mut boot, &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!(boots.get(), 1, "{out}");
        assert_eq!((sum.passed, sum.failed, sum.not_applicable, sum.not_run), (2, 1, 1, 0), "{out}");
        assert_eq!(sum.exit_code(), ExitCode::GuestFailure);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "PASS pass.tst (3 steps, 0 not applicable in mainline)", "{out}");
        assert!(
            lines[1].starts_with("FAIL fail.tst:2: W: locked: 1: 1 : expected M[1] == 4 (locked), seen M[1] = 0"),
            "{out}"
        );
        assert!(lines[3].starts_with("N/A  na.tst from line 2: deadlock detection is the rt lock's"), "{out}");
        assert_eq!(lines[4], lines[0], "the file after a switch to mainline starts in rt again: {out}");
        assert_eq!(
            lines[5],
            "locktest (rt, 2 vCPU(s)): 2 passed, 1 failed, 1 not applicable in mainline (not failures)"
        );

        // A VM that stops answering: that file fails, the next gets a new VM.
        boots.set(0);
        let mut first = true;
        let mut boot = || {
            boots.set(boots.get() + 1);
            let mut f = Fake::new(Profile::RT, 2);
            if std::mem::take(&mut first) {
                f.dead_after = Some(4);
            }
            Ok(Box::new(f) as Box<dyn Vm>)
        };
        let mut out = Vec::new();
        let sum = run_all(&[pass.clone(), pass.clone()], &settings(Profile::RT), &mut boot, &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!((boots.get(), sum.passed, sum.failed), (2, 1, 1), "{out}");
        assert!(out.contains("seen the VM stopped answering"), "{out}");
        assert!(!out.contains("cleanup after"), "a lost VM is not cleaned up but replaced: {out}");
    }

    #[test]
    fn a_tester_that_cannot_be_cleaned_is_rebooted_and_a_vm_that_cannot_boot_ends_the_run() {
        let holds = scenario("holds.tst", "C: lock: 0: 0\nW: locked: 0: 0\n");
        let boots = std::cell::Cell::new(0);
        let mut boot = || {
            boots.set(boots.get() + 1);
            let mut f = Fake::new(Profile::RT, 2);
            f.ignore_reset = boots.get() == 1;
            Ok(Box::new(f) as Box<dyn Vm>)
        };
        let mut out = Vec::new();
        let sum = run_all(&[holds.clone(), holds.clone()], &settings(Profile::RT), &mut boot, &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!((boots.get(), sum.passed, sum.exit_code()), (2, 2, ExitCode::Ok), "{out}");
        assert!(out.contains("cleanup after holds.tst failed: the tester did not come back"), "{out}");
        assert!(out.contains("the VM is rebooted for the next file"), "{out}");
        assert!(
            !out.contains("the tester is not clean"),
            "the VM that could not be cleaned was not tried again: {out}"
        );

        let mut boot = || Err(RunError::Refused { command: "boot", desc: "no /dev/kvm".into() });
        let mut out = Vec::new();
        let sum = run_all(&[holds.clone(), holds.clone()], &settings(Profile::RT), &mut boot, &mut out);
        let out = String::from_utf8(out).unwrap();
        assert_eq!((sum.not_run, sum.exit_code()), (2, ExitCode::VmmError), "{out}");
        let mut one = Vec::new();
        run_all(&[holds], &settings(Profile::RT), &mut boot, &mut one);
        assert!(String::from_utf8(one).unwrap().starts_with("ERROR holds.tst not run: boot was refused"));
        assert!(
            out.starts_with("ERROR holds.tst and the 1 file(s) after it not run: boot was refused: no /dev/kvm"),
            "{out}"
        );
    }

    #[test]
    fn the_project_suite_parses() {
        // Its truth is checked on the real VM (tests/tests/locktest.rs);
        // here only that every file is in the format.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/locktest");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "tst"))
            .collect();
        files.sort();
        assert!(files.len() >= 12, "{files:?}");
        let scenarios =
            load(&files).unwrap_or_else(|e| panic!("{:?}", e.iter().map(ToString::to_string).collect::<Vec<_>>()));
        assert_eq!(scenarios.len(), files.len());
    }

    #[test]
    fn exit_codes() {
        let s = |passed, failed, not_applicable| Summary { passed, failed, not_applicable, ..Summary::default() };
        assert_eq!(s(1, 0, 0).exit_code(), ExitCode::Ok);
        assert_eq!(s(0, 0, 1).exit_code(), ExitCode::Ok, "not applicable is no failure");
        assert_eq!(s(3, 1, 0).exit_code(), ExitCode::GuestFailure);
        assert_eq!(s(0, 0, 0).exit_code(), ExitCode::VmmError, "nothing ran");
        assert_eq!(Summary { interrupted: true, ..s(1, 0, 0) }.exit_code(), ExitCode::Interrupted);
        assert_eq!(Summary { interrupted: true, ..s(1, 1, 0) }.exit_code(), ExitCode::GuestFailure);
        assert_eq!(Summary { vm_error: Some("x".into()), ..s(1, 0, 0) }.exit_code(), ExitCode::VmmError);
    }
}
