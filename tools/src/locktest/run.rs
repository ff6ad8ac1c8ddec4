//! Driving the tester over QMP: one scenario file step by step, and the
//! cleanup that returns the tester to a clean start between files.
//!
//! A command is posted with `x-locktest-command` and runs asynchronously
//! in its thread, as in rt-tester; a `T:` reads `x-locktest-state` once,
//! a `W:` reads it every [`POLL`] until the test holds or the wait
//! timeout passes. Every read is checked for mutual exclusion. Under the
//! mainline lock what cannot apply is skipped (priorities) or stops the
//! file as not applicable (deadlock detection; a thread whose CPU a
//! spinlock holder or spinner keeps with preemption off).

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use switcher::locktest::{Opcode, THREADS};
use switcher::profile::{LockMode, Profile};

use rtswitch::api::child::{ChildVm, ChildVmError, READY_LIMIT, ready_session};
use rtswitch::api::client::{ClientError, Session};

use super::check::{self, CheckError, InMainline, State, SwitchOutcome};
use super::parse::{Action, Scenario, Step, Test};

/// How often a `W:` (and the cleanup) reads the state.
pub const POLL: Duration = Duration::from_millis(2);
/// Bound on the cleanup between files (a `wakedelay` may hold a thread 5 s);
/// [`Settings::cleanup_limit`].
pub const CLEANUP_LIMIT: Duration = Duration::from_secs(10);
/// Bound on one QMP reply (a switch answers within its timeout, 1 s).
const REPLY_LIMIT: Duration = Duration::from_secs(10);

/// Why the VM could not be driven.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot create a scratch directory under {dir}: {source}")]
    Scratch { dir: String, source: std::io::Error },
    #[error("cannot boot the VM: {0}")]
    Boot(#[from] ChildVmError),
    #[error(
        "the VM exited with status {code} before it was ready; run `rtswitch run {args}` by hand to see why \
         (a VMM without the lock tester refuses --guest-arg locktest)"
    )]
    Exited { code: i32, args: String },
    #[error("the VM stopped answering: {0}")]
    Qmp(#[from] ClientError),
    #[error("{command} was refused: {desc}")]
    Refused { command: &'static str, desc: String },
    #[error(transparent)]
    State(#[from] CheckError),
    #[error("the tester did not come back to idle and unlocked within {limit:?}: {left}")]
    Unclean { limit: Duration, left: String },
}

/// A VM that answers QMP requests (the real child, or a test's fake).
pub trait Vm {
    /// Sends `request`; the reply object (`return` or `error`).
    fn execute(&mut self, request: Value) -> Result<Value, RunError>;
    /// Ends the VM politely (dropping it kills it).
    fn quit(&mut self) {}
}

/// What the runner was asked for.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    pub profile: Profile,
    pub vcpus: u32,
    pub wait_timeout: Duration,
    pub verbose: bool,
    /// Bound on [`cleanup`]: [`CLEANUP_LIMIT`] (shorter in tests).
    pub cleanup_limit: Duration,
}

/// The real VM: `rtswitch run ... --guest-arg locktest` in a child.
pub struct ChildTester {
    session: Session,
    vm: ChildVm,
    // Holds the socket's directory until the VM is gone (dropped after `vm`).
    _scratch: tempfile::TempDir,
}

impl ChildTester {
    /// `rtswitch run`'s arguments besides what [`ChildVm`] adds.
    pub fn vm_args(s: &Settings) -> Vec<String> {
        let vcpus = s.vcpus.to_string();
        ["--vcpus", &vcpus, "--profile", s.profile.name(), "--load", "none", "--guest-arg", "locktest"]
            .into_iter()
            .chain(["--switch-timeout", "1s"])
            .map(String::from)
            .collect()
    }

    /// Boots the VM and waits until it is ready and in tester mode.
    pub fn boot(s: &Settings) -> Result<Self, RunError> {
        let scratch = tempfile::Builder::new()
            .prefix("rtswitch-locktest-")
            .tempdir()
            .map_err(|source| RunError::Scratch { dir: std::env::temp_dir().display().to_string(), source })?;
        let sock = scratch.path().join("api.sock");
        let args = Self::vm_args(s);
        let mut vm = ChildVm::start(&sock, &args)?;
        let session = Self::ready(&mut vm, &sock, &args)?;
        let mut t = ChildTester { session, vm, _scratch: scratch };
        read_state(&mut t)?;
        Ok(t)
    }

    /// [`ChildVm::wait_ready`], but a VM that exits early (a refused
    /// argument) says so at once instead of after the whole limit.
    fn ready(vm: &mut ChildVm, sock: &Path, args: &[String]) -> Result<Session, RunError> {
        let start = Instant::now();
        while start.elapsed() < READY_LIMIT {
            if let Some(s) = ready_session(sock, REPLY_LIMIT) {
                return Ok(s);
            }
            if let Some(code) = vm.wait_exit(Duration::from_millis(50)) {
                return Err(RunError::Exited { code, args: args.join(" ") });
            }
        }
        Err(ChildVmError::NotReady(READY_LIMIT).into())
    }
}

impl Vm for ChildTester {
    fn execute(&mut self, request: Value) -> Result<Value, RunError> {
        Ok(self.session.execute(request, &mut |_| {})?)
    }

    fn quit(&mut self) {
        if self.session.execute(json!({"execute": "quit"}), &mut |_| {}).is_ok() {
            let _ = self.vm.wait_exit(Duration::from_secs(15));
        }
    }
}

/// Reads and checks the tester's state.
pub fn read_state(vm: &mut dyn Vm) -> Result<State, RunError> {
    let r = vm.execute(json!({"execute": "x-locktest-state"}))?;
    if let Some(desc) = r["error"]["desc"].as_str() {
        return Err(RunError::Refused { command: "x-locktest-state", desc: desc.to_string() });
    }
    Ok(State::from_return(&r["return"])?)
}

/// Posts a command; `Ok(Err(desc))` when the VMM refused it.
fn post(vm: &mut dyn Vm, thread: usize, opcode: Opcode, data: i32) -> Result<Result<(), String>, RunError> {
    let r = vm.execute(json!({
        "execute": "x-locktest-command",
        "arguments": {"thread": thread, "opcode": opcode.name(), "data": data},
    }))?;
    Ok(match r["error"]["desc"].as_str() {
        Some(desc) => Err(desc.to_string()),
        None if r.get("return").is_some() => Ok(()),
        None => Err(format!("an answer without return or error: {r}")),
    })
}

fn post_or_fail(vm: &mut dyn Vm, thread: usize, opcode: Opcode) -> Result<(), RunError> {
    post(vm, thread, opcode, 0)?.map_err(|desc| RunError::Refused {
        command: "x-locktest-command",
        desc: format!("{} to {thread}: {desc}", opcode.name()),
    })
}

/// A step that did not hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub line: usize,
    pub text: String,
    pub expected: String,
    pub seen: String,
    /// How long a `W:` waited.
    pub waited: Option<Duration>,
    /// The thread's whole state, compactly, when a thread was concerned.
    pub thread: Option<String>,
    /// The VM stopped answering: the next file needs a new one.
    pub broken: bool,
}

/// How a file ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every step held; `skipped` priority tests did not apply under mainline.
    Pass {
        steps: usize,
        skipped: usize,
    },
    Fail(Box<Failure>),
    /// Under mainline, the file stopped applying at `line`, for `reason`.
    NotApplicable {
        line: usize,
        reason: String,
        skipped: usize,
    },
    /// Ctrl-C before `line`.
    Interrupted {
        line: usize,
    },
}

/// What a file's steps leave for the later ones.
#[derive(Default)]
struct FileState {
    /// The last `C: switch`'s outcome.
    last_switch: Option<SwitchOutcome>,
    /// The last command given to each thread (signals aside).
    posted: [Option<Opcode>; THREADS],
}

/// Why a step ended the file.
enum Stop {
    Fail(Box<Failure>),
    NotApplicable(String),
    Interrupted,
}

/// What a step did, for `--verbose`.
enum Done {
    Ran,
    Skipped,
    Waited(Duration),
    Switched(SwitchOutcome),
}

fn failure(step: &Step, expected: String, seen: String) -> Failure {
    Failure { line: step.line, text: step.text.clone(), expected, seen, waited: None, thread: None, broken: false }
}

fn fail(step: &Step, expected: String, seen: String) -> Stop {
    Stop::Fail(Box::new(failure(step, expected, seen)))
}

fn broken(step: &Step, e: RunError) -> Stop {
    let broken = !matches!(e, RunError::Refused { .. });
    Stop::Fail(Box::new(Failure { broken, ..failure(step, "the VM to answer".into(), e.to_string()) }))
}

/// Reads the state for `step`, each busy thread's "O" the command it
/// runs ([`check::as_running`]), and checks mutual exclusion on it.
fn state_for(vm: &mut dyn Vm, step: &Step, fs: &FileState) -> Result<State, Stop> {
    let mut st = read_state(vm).map_err(|e| broken(step, e))?;
    for t in &mut st.threads {
        *t = check::as_running(t, fs.posted[t.thread]);
    }
    if let Some(v) = check::exclusion_violation(&st) {
        return Err(fail(step, "mutual exclusion: at most one holder per lock".into(), v.to_string()));
    }
    Ok(st)
}

fn interrupted() -> bool {
    rtswitch::signals::interrupted()
}

/// Runs one file's steps on a clean tester; `out` gets the steps as
/// they run with `verbose`.
pub fn run_file(vm: &mut dyn Vm, sc: &Scenario, s: &Settings, out: &mut dyn Write) -> Outcome {
    let mut fs = FileState::default();
    let mut skipped = 0;
    for step in &sc.steps {
        if interrupted() {
            return Outcome::Interrupted { line: step.line };
        }
        if s.verbose {
            let _ = write!(out, "  {}:{}: {}", sc.file, step.line, step.text);
            let _ = out.flush();
        }
        let done = run_step(vm, step, s, &mut fs);
        if s.verbose {
            let note = match &done {
                Ok(Done::Ran) => String::new(),
                Ok(Done::Skipped) => "  (skipped: not applicable in mainline)".into(),
                Ok(Done::Waited(d)) => format!("  (held after {} ms)", d.as_millis()),
                Ok(Done::Switched(SwitchOutcome::Done { to })) => format!("  (done: the profile is {to})"),
                Ok(Done::Switched(SwitchOutcome::Refused { reason })) => format!("  (refused: {reason})"),
                Err(_) => "  <- stops here".into(),
            };
            let _ = writeln!(out, "{note}");
        }
        match done {
            Ok(Done::Skipped) => skipped += 1,
            Ok(_) => {}
            Err(Stop::Fail(f)) => return Outcome::Fail(f),
            Err(Stop::NotApplicable(reason)) => return Outcome::NotApplicable { line: step.line, reason, skipped },
            Err(Stop::Interrupted) => return Outcome::Interrupted { line: step.line },
        }
    }
    Outcome::Pass { steps: sc.steps.len(), skipped }
}

fn run_step(vm: &mut dyn Vm, step: &Step, s: &Settings, fs: &mut FileState) -> Result<Done, Stop> {
    match step.action {
        Action::Command { thread, opcode, data } => {
            let mut st = state_for(vm, step, fs)?;
            if st.locks == LockMode::Mainline
                && let Some(reason) = check::command_in_mainline(opcode, data)
            {
                return Err(Stop::NotApplicable(reason));
            }
            // One command at a time: the thread's previous one ends first
            // (a sched or unlock at once; a lock may block, and then the
            // VMM's refusal says so).
            let start = Instant::now();
            while opcode != Opcode::Signal && st.threads[thread].busy && start.elapsed() < s.wait_timeout {
                if interrupted() {
                    return Err(Stop::Interrupted);
                }
                std::thread::sleep(POLL);
                st = state_for(vm, step, fs)?;
            }
            let start = Instant::now();
            while st.locks == LockMode::Mainline
                && let Some(taken) = check::cpu_taken(&st, thread)
            {
                if taken.settled || start.elapsed() >= s.wait_timeout {
                    let (holder, cpu) = (taken.holder, taken.cpu);
                    return Err(Stop::NotApplicable(format!(
                        "thread {holder} holds CPU {cpu} with preemption off (mainline lock), so thread {thread} \
                         cannot run"
                    )));
                }
                std::thread::sleep(POLL);
                st = state_for(vm, step, fs)?;
            }
            match post(vm, thread, opcode, data).map_err(|e| broken(step, e))? {
                Ok(()) => {
                    if opcode != Opcode::Signal {
                        fs.posted[thread] = Some(opcode);
                    }
                    Ok(Done::Ran)
                }
                Err(desc) => Err(Stop::Fail(Box::new(Failure {
                    thread: st.threads.get(thread).map(ToString::to_string),
                    ..failure(step, "the VMM to take the command".into(), format!("refused: {desc}"))
                }))),
            }
        }
        Action::Switch(profile) => {
            let r = vm
                .execute(json!({"execute": "set-mode", "arguments": {"mode": profile.name()}}))
                .map_err(|e| broken(step, e))?;
            let outcome = match r["error"]["desc"].as_str() {
                Some(reason) => SwitchOutcome::Refused { reason: reason.to_string() },
                None => SwitchOutcome::Done { to: profile.name().to_string() },
            };
            fs.last_switch = Some(outcome.clone());
            Ok(Done::Switched(outcome))
        }
        Action::Check { wait, thread, test } => check_step(vm, step, s, wait, thread, &test, fs),
    }
}

fn check_step(
    vm: &mut dyn Vm,
    step: &Step,
    s: &Settings,
    wait: bool,
    thread: usize,
    test: &Test,
    fs: &FileState,
) -> Result<Done, Stop> {
    let mut st = state_for(vm, step, fs)?;
    if st.locks == LockMode::Mainline {
        match check::in_mainline(test) {
            InMainline::Applies => {}
            InMainline::Skip => return Ok(Done::Skipped),
            InMainline::Stop(reason) => return Err(Stop::NotApplicable(reason)),
        }
    }
    let start = Instant::now();
    loop {
        let t = &st.threads[thread];
        match check::evaluate(test, t, fs.last_switch.as_ref()) {
            Ok(()) if wait => return Ok(Done::Waited(start.elapsed())),
            Ok(()) => return Ok(Done::Ran),
            Err(m) if !wait || start.elapsed() >= s.wait_timeout => {
                return Err(Stop::Fail(Box::new(Failure {
                    waited: wait.then(|| start.elapsed()),
                    thread: Some(t.to_string()),
                    ..failure(step, m.expected, m.seen)
                })));
            }
            Err(_) => {}
        }
        if interrupted() {
            return Err(Stop::Interrupted);
        }
        std::thread::sleep(POLL);
        st = state_for(vm, step, fs)?;
    }
}

/// Returns the tester to a clean start: signals every busy thread,
/// resets each thread once it is idle (which unlocks what it holds and
/// makes it SCHED_OTHER), then `resetevent`, and the boot profile back
/// if a file switched away; bounded by [`Settings::cleanup_limit`].
pub fn cleanup(vm: &mut dyn Vm, s: &Settings) -> Result<(), RunError> {
    let limit = s.cleanup_limit;
    let deadline = Instant::now() + limit;
    let unclean = |st: &State| RunError::Unclean { limit, left: check::unclean(st).join("; ") };
    let mut signalled = [false; THREADS];
    let mut reset = [false; THREADS];
    loop {
        let st = read_state(vm)?;
        if reset.iter().all(|r| *r) && check::unclean(&st).is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(unclean(&st));
        }
        for t in &st.threads {
            let i = t.thread;
            if t.busy && !signalled[i] {
                post_or_fail(vm, i, Opcode::Signal)?;
                signalled[i] = true;
            } else if !t.busy && !reset[i] {
                post_or_fail(vm, i, Opcode::Reset)?;
                reset[i] = true;
            }
        }
        std::thread::sleep(POLL);
    }
    post_or_fail(vm, 0, Opcode::ResetEvent)?;
    loop {
        let st = read_state(vm)?;
        if check::unclean(&st).is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(unclean(&st));
        }
        std::thread::sleep(POLL);
    }
    let m = vm.execute(json!({"execute": "query-mode"}))?;
    if m["return"]["mode"].as_str() != Some(s.profile.name()) {
        let r = vm.execute(json!({"execute": "set-mode", "arguments": {"mode": s.profile.name()}}))?;
        if let Some(desc) = r["error"]["desc"].as_str() {
            return Err(RunError::Refused { command: "set-mode", desc: desc.to_string() });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::locktest::fake::Fake;
    use crate::locktest::parse::parse;

    fn settings(profile: Profile, vcpus: u32) -> Settings {
        Settings {
            profile,
            vcpus,
            wait_timeout: Duration::from_millis(40),
            verbose: true,
            cleanup_limit: Duration::from_millis(30),
        }
    }

    fn run(fake: &mut Fake, text: &str) -> (Outcome, String) {
        let sc = parse("s.tst", text).unwrap_or_else(|e| panic!("{e:?}"));
        let mut out = Vec::new();
        let s = settings(fake.profile, fake.vcpus);
        let o = run_file(fake, &sc, &s, &mut out);
        (o, String::from_utf8(out).unwrap())
    }

    fn failure(o: Outcome) -> Failure {
        match o {
            Outcome::Fail(f) => *f,
            other => panic!("not a failure: {other:?}"),
        }
    }

    /// Priority inheritance over one lock (the example of docs/locktest.md).
    pub(crate) const PI: &str = "\
C: resetevent: 0: 0
W: opcodeeq: 0: 0
C: schedother: 0: 0
C: schedfifo: 1: 80
C: locknowait: 0: 0
W: locked: 0: 0
C: locknowait: 1: 0
W: blocked: 1: 0
T: prioeq: 0: 80
T: nprioeq: 0: -21
C: unlock: 0: 0
W: unlocked: 0: 0
W: locked: 1: 0
T: prioeq: 0: -21
C: unlock: 1: 0
W: unlocked: 1: 0
";

    #[test]
    fn priority_inheritance_passes_under_rt() {
        let mut f = Fake::new(Profile::RT, 2);
        let (o, out) = run(&mut f, PI);
        assert_eq!(o, Outcome::Pass { steps: 16, skipped: 0 }, "{out}");
        assert!(out.contains("  s.tst:8: W: blocked: 1: 0  (held after "), "{out}");
        assert_eq!(f.log.iter().filter(|l| l.starts_with("cmd ")).count(), 7, "{:?}", f.log);
    }

    #[test]
    fn mainline_skips_the_priority_tests_and_counts_them() {
        let mut f = Fake::new(Profile::MAINLINE, 2);
        let (o, out) = run(&mut f, PI);
        assert_eq!(o, Outcome::Pass { steps: 16, skipped: 3 }, "{out}");
        assert!(out.contains("s.tst:9: T: prioeq: 0: 80  (skipped: not applicable in mainline)"), "{out}");
    }

    #[test]
    fn a_test_that_does_not_hold_fails_at_its_line() {
        let mut f = Fake::new(Profile::RT, 2);
        let text = PI.replace("T: prioeq: 0: 80", "T: prioeq: 0: 81");
        let x = failure(run(&mut f, &text).0);
        assert_eq!((x.line, x.text.as_str()), (9, "T: prioeq: 0: 81"));
        assert_eq!((x.expected.as_str(), x.seen.as_str(), x.waited), ("P == 81", "P = 80", None));
        assert_eq!(
            x.thread.as_deref(),
            Some("thread 0 (cpu 0, idle): O=0 E=3 P=80 N=-21 M=[4 0 0 0 0 0 0 0] blocked on -")
        );
        assert!(!x.broken);
        // A T: reads once and does not wait.
        let mut f = Fake::new(Profile::RT, 2);
        let t0 = Instant::now();
        let x = failure(run(&mut f, "T: locked: 0: 0\n").0);
        assert_eq!((x.line, f.reads, x.waited), (1, 1, None));
        assert!(t0.elapsed() < Duration::from_millis(40), "a T: waited");
    }

    #[test]
    fn a_wait_that_never_holds_fails_after_the_timeout() {
        let mut f = Fake::new(Profile::RT, 2);
        let x = failure(run(&mut f, "C: lock: 0: 0\nW: locked: 0: 0\nC: lock: 1: 0\nW: locked: 1: 0\n").0);
        assert_eq!((x.line, x.expected.as_str(), x.seen.as_str()), (4, "M[0] == 4 (locked)", "M[0] = 2 (blocked)"));
        assert!(x.waited.is_some_and(|w| w >= Duration::from_millis(40)), "{x:?}");
        assert!(x.thread.unwrap().starts_with("thread 1 (cpu 1, busy): O=3"));
    }

    #[test]
    fn deadlock_detection_is_rt_only() {
        let text = "\
C: locknowait: 0: 0
W: locked: 0: 0
C: locknowait: 1: 1
W: locked: 1: 1
C: lockintnowait: 0: 1
W: blocked: 0: 1
C: lockintnowait: 1: 0
W: opcodeeq: 1: -35
C: signal: 0: 0
W: opcodeeq: 0: -4
";
        let mut f = Fake::new(Profile::RT, 2);
        let (o, out) = run(&mut f, text);
        assert_eq!(o, Outcome::Pass { steps: 10, skipped: 0 }, "{out}");
        let mut f = Fake::new(Profile::MAINLINE, 2);
        match run(&mut f, text).0 {
            Outcome::NotApplicable { line: 8, reason, skipped: 0 } => assert!(reason.contains("rt lock's"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_mainline_holder_keeps_its_cpu_from_the_other_threads() {
        let text = "C: lock: 0: 0\nW: locked: 0: 0\nC: lock: 2: 0\n";
        let mut f = Fake::new(Profile::MAINLINE, 2);
        match run(&mut f, text).0 {
            Outcome::NotApplicable { line: 3, reason, .. } => {
                assert_eq!(reason, "thread 0 holds CPU 0 with preemption off (mainline lock), so thread 2 cannot run")
            }
            other => panic!("{other:?}"),
        }
        // Another CPU, or rt: it runs.
        let mut f = Fake::new(Profile::MAINLINE, 2);
        assert!(matches!(
            run(&mut f, "C: lock: 0: 0\nW: locked: 0: 0\nC: lock: 1: 0\nW: blocked: 1: 0\n").0,
            Outcome::Pass { .. }
        ));
        let mut f = Fake::new(Profile::RT, 2);
        assert!(matches!(run(&mut f, text).0, Outcome::Pass { .. }));
    }

    #[test]
    fn slow_commands_are_waited_for_where_the_state_is_between_steps() {
        // Every scenario above, with commands that take effect a read later.
        let mut f = Fake::new(Profile::RT, 2);
        f.lag = 1;
        assert_eq!(run(&mut f, PI).0, Outcome::Pass { steps: 16, skipped: 0 });
        // Mainline: a lock posted to thread 0 takes CPU 0 even before it runs.
        let mut f = Fake::new(Profile::MAINLINE, 2);
        f.lag = 3;
        match run(&mut f, "C: lock: 0: 0\nC: lock: 2: 0\n").0 {
            Outcome::NotApplicable { line: 2, .. } => {}
            other => panic!("{other:?}"),
        }
        // An unlock being run gives the CPU back: not "not applicable".
        let mut f = Fake::new(Profile::MAINLINE, 2);
        let text = "C: lock: 0: 0\nW: locked: 0: 0\nC: unlock: 0: 0\nC: lock: 2: 0\nW: locked: 2: 0\n";
        f.lag = 3;
        let (o, out) = run(&mut f, text);
        assert_eq!(o, Outcome::Pass { steps: 5, skipped: 0 }, "{out}");
    }

    #[test]
    fn a_command_waits_for_the_threads_last_one_to_end() {
        let text = "C: schedfifo: 0: 10\nC: locknowait: 0: 0\nW: locked: 0: 0\nT: prioeq: 0: 10\n";
        let mut f = Fake::new(Profile::RT, 2);
        f.lag = 3;
        let (o, out) = run(&mut f, text);
        assert_eq!(o, Outcome::Pass { steps: 4, skipped: 0 }, "{out}");
        // A signal does not wait: it is what a blocked thread takes.
        let mut f = Fake::new(Profile::RT, 2);
        let text =
            "C: lock: 0: 0\nW: locked: 0: 0\nC: lockint: 1: 0\nW: blocked: 1: 0\nC: signal: 1: 0\nW: opcodeeq: 1: -4\n";
        let t0 = Instant::now();
        assert_eq!(run(&mut f, text).0, Outcome::Pass { steps: 6, skipped: 0 });
        assert!(t0.elapsed() < Duration::from_millis(40), "the signal waited");
    }

    #[test]
    fn a_command_not_yet_picked_up_shows_its_number() {
        // The Linux idiom: a command, then wait for its result 0. The guest
        // writes O when it picks the command up: until then O is the last
        // result (0), and the wait must not take it for this command's.
        let text = "C: schedfifo: 0: 10\nW: opcodeeq: 0: 0\nT: nprioeq: 0: 10\nT: opcodeeq: 0: 0\n";
        let mut f = Fake::new(Profile::RT, 2);
        f.lag = 3;
        let (o, out) = run(&mut f, text);
        assert_eq!(o, Outcome::Pass { steps: 4, skipped: 0 }, "{out}");
        let mut f = Fake::new(Profile::RT, 2);
        f.lag = 3;
        let x = failure(run(&mut f, "C: schedfifo: 0: 10\nT: opcodeeq: 0: 0\n").0);
        assert_eq!((x.expected.as_str(), x.seen.as_str()), ("O == 0", "O = 2"));
    }

    #[test]
    fn two_holders_of_one_lock_fail_the_file() {
        let mut f = Fake::new(Profile::RT, 2);
        f.grant_held_locks = true;
        let x =
            failure(run(&mut f, "C: lock: 0: 3\nW: locked: 0: 3\nC: lock: 1: 3\nW: locked: 1: 3\nT: locked: 0: 3\n").0);
        assert_eq!(x.line, 4, "the read of line 4 saw it: {x:?}");
        assert_eq!(x.seen, "lock 3 held (M = 4) by threads 0 and 1 at once");
    }

    #[test]
    fn a_refused_command_fails_with_the_vmms_reason() {
        let mut f = Fake::new(Profile::RT, 2);
        let x = failure(run(&mut f, "C: lock: 0: 0\nW: locked: 0: 0\nC: lock: 1: 0\nC: schedfifo: 1: 10\n").0);
        assert_eq!(x.line, 4);
        assert!(x.seen.starts_with("refused: thread 1 is still running its last command"), "{}", x.seen);
        assert!(x.thread.unwrap().starts_with("thread 1 (cpu 1, busy)"));
    }

    #[test]
    fn switches_are_recorded_and_tested() {
        let text = "\
C: lock: 2: 0
C: lock: 2: 1
W: locked: 2: 1
C: switch: 0: mainline
T: switchrefused: 0: 0
W: switchrefused: 0: 1
C: unlock: 2: 0
C: unlock: 2: 1
W: unlocked: 2: 1
C: switch: 0: mainline
T: switchok: 0: 0
";
        let mut f = Fake::new(Profile::RT, 2);
        let (o, out) = run(&mut f, text);
        assert_eq!(o, Outcome::Pass { steps: 11, skipped: 0 }, "{out}");
        assert!(out.contains("(refused: switch to mainline failed: while freezing: task 'locktest.2'"), "{out}");
        assert!(out.contains("(done: the profile is mainline)"), "{out}");
        let mut f = Fake::new(Profile::RT, 2);
        let x = failure(run(&mut f, "T: switchok: 0: 0\n").0);
        assert!(x.seen.contains("no `C: switch`"), "{x:?}");
    }

    #[test]
    fn a_vm_that_stops_answering_breaks_the_file() {
        let mut f = Fake::new(Profile::RT, 2);
        f.dead_after = Some(1);
        let x = failure(run(&mut f, "C: lock: 0: 0\nW: locked: 0: 0\n").0);
        assert!(x.broken && x.seen.starts_with("the VM stopped answering"), "{x:?}");
    }

    #[test]
    fn cleanup_unlocks_resets_and_restores_the_profile() {
        let text = "\
C: schedfifo: 0: 50
C: lock: 0: 0
C: lockint: 1: 0
C: lock: 3: 0
W: blocked: 3: 0
C: switch: 0: locks=rt,preempt=none
";
        let mut f = Fake::new(Profile::RT, 2);
        assert!(matches!(run(&mut f, text).0, Outcome::Pass { .. }));
        cleanup(&mut f, &settings(Profile::RT, 2)).unwrap();
        let st = read_state(&mut f).unwrap();
        assert!(check::unclean(&st).is_empty(), "{st:?}");
        assert!(st.threads.iter().all(|t| t.prio == -21 && t.normal_prio == -21));
        assert_eq!(f.profile, Profile::RT);
        assert_eq!(f.counter, 0, "resetevent");
        let signals = f.log.iter().filter(|l| l.contains(" signal ")).count();
        assert_eq!(signals, 2, "threads 1 and 3 were busy: {:?}", f.log);
        // A tester that does not reset is reported, with what is left.
        let mut f = Fake::new(Profile::RT, 2);
        run(&mut f, "C: lock: 0: 5\nW: locked: 0: 5\n");
        f.ignore_reset = true;
        let t0 = Instant::now();
        let e = cleanup(&mut f, &settings(Profile::RT, 2)).unwrap_err().to_string();
        assert!(t0.elapsed() >= Duration::from_millis(30));
        assert!(
            e.contains("within 30ms") && e.contains("thread 0 (cpu 0, idle)") && e.contains("M=[0 0 0 0 0 4 0 0]"),
            "{e}"
        );
    }

    #[test]
    fn the_child_vm_gets_the_tester_arguments() {
        let s = Settings {
            profile: Profile::MAINLINE,
            vcpus: 3,
            wait_timeout: Duration::from_secs(5),
            verbose: false,
            cleanup_limit: CLEANUP_LIMIT,
        };
        assert_eq!(
            ChildTester::vm_args(&s).join(" "),
            "--vcpus 3 --profile mainline --load none --guest-arg locktest --switch-timeout 1s"
        );
    }
}
