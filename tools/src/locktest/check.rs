//! The tester's state as `x-locktest-state` returns it, and what a step
//! asks of it (pure: no VM here). A test's predicate on one thread, the
//! invariants checked after every read (mutual exclusion), and what the
//! mainline lock cannot show (docs/locktest.md, "Mainline").

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use switcher::locktest::{LOCKS, Opcode, THREADS, mutex};
use switcher::profile::LockMode;

use super::parse::Test;

/// Why a state reply was not understood.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(
        "x-locktest-state's reply is not the tester state this runner reads ({0}); \
         run the `rtswitch` binary whose VMM matches this runner"
    )]
    Malformed(String),
}

/// One tester thread, rt-tester's status fields by their letters.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ThreadState {
    pub thread: usize,
    pub cpu: u32,
    pub busy: bool,
    /// "O": the running command's number, or the last result (0, -errno).
    pub opcode: i64,
    /// "E".
    pub event: i64,
    /// "P", effective.
    pub prio: i64,
    /// "N", base.
    pub normal_prio: i64,
    /// "M" per lock: 0, 1, 2 or 4.
    pub mutex: [u8; LOCKS],
    pub blocked_on: Option<usize>,
}

/// The whole tester: the lock dimension in force and the eight threads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    pub locks: LockMode,
    pub threads: Vec<ThreadState>,
}

#[derive(Deserialize)]
struct Raw {
    locks: String,
    threads: Vec<ThreadState>,
}

impl State {
    /// Reads the `return` object of `x-locktest-state`, checking it is
    /// whole: eight threads in order, known "M" values, known locks.
    pub fn from_return(v: &Value) -> Result<State, CheckError> {
        let raw = Raw::deserialize(v).map_err(|e| CheckError::Malformed(e.to_string()))?;
        let locks = match raw.locks.as_str() {
            "rt" => LockMode::Rt,
            "mainline" => LockMode::Mainline,
            other => return Err(CheckError::Malformed(format!("locks '{other}' is neither rt nor mainline"))),
        };
        if raw.threads.len() != THREADS {
            return Err(CheckError::Malformed(format!("{} threads, not {THREADS}", raw.threads.len())));
        }
        for (i, t) in raw.threads.iter().enumerate() {
            if t.thread != i {
                return Err(CheckError::Malformed(format!("entry {i} is thread {}", t.thread)));
            }
            if let Some(m) = t.mutex.iter().find(|m| !matches!(**m, 0 | 1 | 2 | 4)) {
                return Err(CheckError::Malformed(format!("thread {i} has mutex state {m} (0, 1, 2 or 4)")));
            }
            if t.blocked_on.is_some_and(|l| l >= LOCKS) {
                return Err(CheckError::Malformed(format!("thread {i} is blocked on lock {:?}", t.blocked_on)));
            }
        }
        Ok(State { locks, threads: raw.threads })
    }
}

/// rt-tester's word for an "M" value.
pub fn mutex_word(m: u8) -> &'static str {
    match m {
        mutex::UNLOCKED => "unlocked",
        mutex::LOCKING => "trylock",
        mutex::BLOCKED => "blocked",
        mutex::LOCKED => "locked",
        _ => "?",
    }
}

impl fmt::Display for ThreadState {
    /// `thread 1 (cpu 1, busy): O=3 E=12 P=80 N=80 M=[4 0 0 0 0 0 0 0] blocked on -`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m: Vec<String> = self.mutex.iter().map(u8::to_string).collect();
        write!(
            f,
            "thread {} (cpu {}, {}): O={} E={} P={} N={} M=[{}] blocked on {}",
            self.thread,
            self.cpu,
            if self.busy { "busy" } else { "idle" },
            self.opcode,
            self.event,
            self.prio,
            self.normal_prio,
            m.join(" "),
            self.blocked_on.map_or("-".to_string(), |l| format!("lock {l}")),
        )
    }
}

/// Thread `t` as rt-tester's "O" means it: while a command runs, its
/// number, from the moment it was posted (`posted`, the last command the
/// runner gave the thread). Linux's tester set "O" when the command was
/// written; the guest writes it when the thread picks the command up, so
/// until then `busy` is already true and "O" still the last result, and
/// `W: opcodeeq: T: 0` right after a command would hold before it ran.
pub fn as_running(t: &ThreadState, posted: Option<Opcode>) -> ThreadState {
    let mut t = t.clone();
    if t.busy
        && let Some(op) = posted
    {
        t.opcode = i64::from(op as u32);
    }
    t
}

/// How the file's last `C: switch` ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SwitchOutcome {
    /// Done (or already in that profile).
    Done { to: String },
    /// Refused, with the VMM's reason.
    Refused { reason: String },
}

/// A test that does not hold: what it wanted and what was there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    pub expected: String,
    pub seen: String,
}

/// What a test wants, in words: `P == 80`, `M[0] == 4 (locked)`.
pub fn expected(test: &Test) -> String {
    match *test {
        Test::Prio(c, n) => format!("P {} {n}", c.symbol()),
        Test::NormalPrio(c, n) => format!("N {} {n}", c.symbol()),
        Test::Mutex { lock, want } => format!("M[{lock}] == {want} ({})", mutex_word(want)),
        Test::Opcode(c, n) => format!("O {} {n}", c.symbol()),
        Test::Event(c, n) => format!("E {} {n}", c.symbol()),
        Test::SwitchOk => "the last switch done".to_string(),
        Test::SwitchRefused(l) => format!("the last switch refused for tester lock 'lt.{l}'"),
    }
}

/// Whether `test` holds for thread `t` (the switch tests look at `last`
/// only); `Err` says what was seen instead.
pub fn evaluate(test: &Test, t: &ThreadState, last: Option<&SwitchOutcome>) -> Result<(), Mismatch> {
    let (ok, seen) = match *test {
        Test::Prio(c, n) => (c.holds(t.prio, n), format!("P = {}", t.prio)),
        Test::NormalPrio(c, n) => (c.holds(t.normal_prio, n), format!("N = {}", t.normal_prio)),
        Test::Mutex { lock, want } => {
            let m = t.mutex[lock];
            (m == want, format!("M[{lock}] = {m} ({})", mutex_word(m)))
        }
        Test::Opcode(c, n) => (c.holds(t.opcode, n), format!("O = {}", t.opcode)),
        Test::Event(c, n) => (c.holds(t.event, n), format!("E = {}", t.event)),
        Test::SwitchOk => match last {
            Some(SwitchOutcome::Done { to }) => (true, format!("done, to {to}")),
            Some(SwitchOutcome::Refused { reason }) => (false, format!("refused: {reason}")),
            None => (false, "no `C: switch` before it in this file".to_string()),
        },
        Test::SwitchRefused(l) => match last {
            Some(SwitchOutcome::Refused { reason }) => {
                (reason.contains(&format!("'lt.{l}'")), format!("refused: {reason}"))
            }
            Some(SwitchOutcome::Done { to }) => (false, format!("done, to {to}")),
            None => (false, "no `C: switch` before it in this file".to_string()),
        },
    };
    if ok { Ok(()) } else { Err(Mismatch { expected: expected(test), seen }) }
}

/// What a test means under the mainline lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InMainline {
    Applies,
    /// Skipped and counted: a spinlock does not boost (prio*, nprio*).
    Skip,
    /// The rest of the file does not apply; the reason.
    Stop(String),
}

/// Whether `test` applies while the lock dimension is mainline.
pub fn in_mainline(test: &Test) -> InMainline {
    match *test {
        Test::Prio(..) | Test::NormalPrio(..) => InMainline::Skip,
        Test::Opcode(_, n) if n == -switcher::locktest::errno::EDEADLK => {
            InMainline::Stop("deadlock detection is the rt lock's (a mainline spinlock spins; -35 never comes)".into())
        }
        _ => InMainline::Applies,
    }
}

/// Whether a command applies while the lock dimension is mainline: `None`
/// if it does, else why the rest of the file does not.
pub fn command_in_mainline(opcode: Opcode, data: i32) -> Option<String> {
    (opcode == Opcode::WakeDelay && data > 0).then(|| {
        "wakedelay holds a woken rt waiter before it takes the lock; a mainline waiter spins and takes it at \
         once, so the window the rest of the file relies on does not exist"
            .into()
    })
}

/// Two threads holding one lock at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub lock: usize,
    pub holders: Vec<usize>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h: Vec<String> = self.holders.iter().map(usize::to_string).collect();
        write!(f, "lock {} held (M = 4) by threads {} at once", self.lock, h.join(" and "))
    }
}

/// Mutual exclusion: the first lock with two holders, if any.
pub fn exclusion_violation(state: &State) -> Option<Violation> {
    (0..LOCKS).find_map(|lock| {
        let holders: Vec<usize> =
            state.threads.iter().filter(|t| t.mutex[lock] == mutex::LOCKED).map(|t| t.thread).collect();
        (holders.len() > 1).then_some(Violation { lock, holders })
    })
}

/// Under mainline locks, a thread that keeps `thread`'s CPU with
/// preemption off, so that `thread` cannot run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTaken {
    pub holder: usize,
    pub cpu: u32,
    /// False while the holder runs a command that may give the CPU back
    /// (an unlock, a reset: the state is between two steps); the runner
    /// reads again before it calls the rest of the file not applicable.
    pub settled: bool,
}

/// Whether "O" of a busy thread is a lock command's number.
fn taking_a_lock(t: &ThreadState) -> bool {
    t.busy && u32::try_from(t.opcode).ok().and_then(Opcode::from_u32).is_some_and(Opcode::is_lock)
}

/// Under mainline locks: the thread other than `thread` on its CPU that
/// is in lock code, spinning or holding (M 1, 2 or 4), or just posted a
/// lock command (it will be one of those at once), so keeps that CPU with
/// preemption off and `thread` cannot run.
pub fn cpu_taken(state: &State, thread: usize) -> Option<CpuTaken> {
    let cpu = state.threads.get(thread)?.cpu;
    state
        .threads
        .iter()
        .find(|t| {
            t.thread != thread && t.cpu == cpu && (t.mutex.iter().any(|&m| m != mutex::UNLOCKED) || taking_a_lock(t))
        })
        .map(|t| CpuTaken { holder: t.thread, cpu, settled: !t.busy || taking_a_lock(t) })
}

/// What keeps `state` from being a clean start: one phrase per thread
/// that is busy, holds or waits; empty when every thread is idle with
/// every lock unlocked.
pub fn unclean(state: &State) -> Vec<String> {
    state
        .threads
        .iter()
        .filter(|t| t.busy || t.mutex.iter().any(|&m| m != mutex::UNLOCKED) || t.blocked_on.is_some())
        .map(ToString::to_string)
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use serde_json::json;

    use super::*;
    use crate::locktest::parse::Cmp;

    /// A state reply's `return` with every thread idle at SCHED_OTHER;
    /// `edit` changes it.
    pub(crate) fn state_json(locks: &str, vcpus: u32, edit: impl FnOnce(&mut Vec<Value>)) -> Value {
        let mut threads: Vec<Value> = (0..THREADS)
            .map(|i| {
                json!({"thread": i, "cpu": i as u32 % vcpus, "busy": false, "opcode": 0, "event": 0,
                       "prio": -21, "normal_prio": -21, "mutex": [0, 0, 0, 0, 0, 0, 0, 0], "blocked_on": null})
            })
            .collect();
        edit(&mut threads);
        json!({"locks": locks, "threads": threads})
    }

    fn state(edit: impl FnOnce(&mut Vec<Value>)) -> State {
        State::from_return(&state_json("rt", 2, edit)).unwrap()
    }

    #[test]
    fn a_wakedelay_window_does_not_exist_in_mainline() {
        assert!(command_in_mainline(Opcode::WakeDelay, 500).is_some_and(|r| r.contains("spins")));
        assert_eq!(command_in_mainline(Opcode::WakeDelay, 0), None);
        assert_eq!(command_in_mainline(Opcode::Lock, 3), None);
    }

    #[test]
    fn the_state_reply_is_read_whole_or_refused() {
        let s = state(|t| {
            t[1]["busy"] = json!(true);
            t[1]["opcode"] = json!(3);
            t[1]["mutex"][0] = json!(2);
            t[1]["blocked_on"] = json!(0);
            t[0]["mutex"][0] = json!(4);
            t[0]["prio"] = json!(80);
        });
        assert_eq!(s.locks, LockMode::Rt);
        assert_eq!(s.threads[1].blocked_on, Some(0));
        assert_eq!(
            s.threads[1].to_string(),
            "thread 1 (cpu 1, busy): O=3 E=0 P=-21 N=-21 M=[2 0 0 0 0 0 0 0] blocked on lock 0"
        );
        assert_eq!(
            s.threads[0].to_string(),
            "thread 0 (cpu 0, idle): O=0 E=0 P=80 N=-21 M=[4 0 0 0 0 0 0 0] blocked on -"
        );
        let m = State::from_return(&state_json("mainline", 1, |_| {})).unwrap();
        assert_eq!((m.locks, m.threads[7].cpu), (LockMode::Mainline, 0));
        let bad = |v: Value| State::from_return(&v).unwrap_err().to_string();
        assert!(bad(state_json("fast", 2, |_| {})).contains("locks 'fast'"));
        assert!(bad(state_json("rt", 2, |t| t.truncate(7))).contains("7 threads, not 8"));
        assert!(bad(state_json("rt", 2, |t| t.swap(0, 1))).contains("entry 0 is thread 1"));
        assert!(bad(state_json("rt", 2, |t| t[2]["mutex"][1] = json!(3))).contains("mutex state 3"));
        assert!(bad(state_json("rt", 2, |t| t[2]["mutex"] = json!([0]))).contains("whose VMM matches"));
        assert!(bad(state_json("rt", 2, |t| t[2]["blocked_on"] = json!(8))).contains("lock Some(8)"));
        assert!(bad(json!({"threads": []})).contains("missing field `locks`"));
    }

    #[test]
    fn a_busy_thread_shows_the_number_of_the_command_it_runs() {
        let s = state(|t| {
            t[0]["busy"] = json!(true);
            t[0]["opcode"] = json!(-22);
            t[1]["opcode"] = json!(-22);
        });
        assert_eq!(as_running(&s.threads[0], Some(Opcode::SchedFifo)).opcode, 2);
        assert_eq!(as_running(&s.threads[0], None).opcode, -22, "nothing posted in this file: as read");
        assert_eq!(as_running(&s.threads[1], Some(Opcode::SchedFifo)).opcode, -22, "idle: its result");
        let mut want = s.threads[0].clone();
        want.opcode = 3;
        assert_eq!(as_running(&s.threads[0], Some(Opcode::Lock)), want, "only O changes");
    }

    #[test]
    fn each_test_reads_its_field() {
        let s = state(|t| {
            t[0]["prio"] = json!(80);
            t[0]["normal_prio"] = json!(-21);
            t[0]["opcode"] = json!(-35);
            t[0]["event"] = json!(7);
            t[0]["mutex"] = json!([4, 2, 1, 0, 0, 0, 0, 0]);
        });
        let t = &s.threads[0];
        let ok = |test: Test| evaluate(&test, t, None).is_ok();
        assert!(ok(Test::Prio(Cmp::Eq, 80)) && !ok(Test::Prio(Cmp::Eq, -21)));
        assert!(ok(Test::Prio(Cmp::Gt, 79)) && !ok(Test::Prio(Cmp::Gt, 80)));
        assert!(ok(Test::Prio(Cmp::Lt, 81)) && !ok(Test::Prio(Cmp::Lt, 80)));
        assert!(ok(Test::NormalPrio(Cmp::Eq, -21)) && !ok(Test::NormalPrio(Cmp::Eq, 80)));
        assert!(ok(Test::NormalPrio(Cmp::Lt, 1)) && !ok(Test::NormalPrio(Cmp::Gt, 1)));
        assert!(ok(Test::Mutex { lock: 0, want: 4 }) && !ok(Test::Mutex { lock: 0, want: 2 }));
        assert!(ok(Test::Mutex { lock: 1, want: 2 }) && ok(Test::Mutex { lock: 2, want: 1 }));
        assert!(ok(Test::Mutex { lock: 3, want: 0 }) && !ok(Test::Mutex { lock: 1, want: 0 }));
        assert!(ok(Test::Opcode(Cmp::Eq, -35)) && ok(Test::Opcode(Cmp::Lt, 0)) && !ok(Test::Opcode(Cmp::Gt, 0)));
        assert!(ok(Test::Event(Cmp::Eq, 7)) && ok(Test::Event(Cmp::Gt, 6)) && !ok(Test::Event(Cmp::Lt, 7)));
        let e = evaluate(&Test::Mutex { lock: 1, want: 4 }, t, None).unwrap_err();
        assert_eq!((e.expected.as_str(), e.seen.as_str()), ("M[1] == 4 (locked)", "M[1] = 2 (blocked)"));
        let e = evaluate(&Test::Prio(Cmp::Lt, 50), t, None).unwrap_err();
        assert_eq!((e.expected.as_str(), e.seen.as_str()), ("P < 50", "P = 80"));
        let e = evaluate(&Test::NormalPrio(Cmp::Gt, 0), t, None).unwrap_err();
        assert_eq!((e.expected.as_str(), e.seen.as_str()), ("N > 0", "N = -21"));
        let e = evaluate(&Test::Opcode(Cmp::Eq, 0), t, None).unwrap_err();
        assert_eq!((e.expected.as_str(), e.seen.as_str()), ("O == 0", "O = -35"));
        let e = evaluate(&Test::Event(Cmp::Gt, 7), t, None).unwrap_err();
        assert_eq!((e.expected.as_str(), e.seen.as_str()), ("E > 7", "E = 7"));
    }

    #[test]
    fn the_switch_tests_read_the_last_switch() {
        let s = state(|_| {});
        let t = &s.threads[0];
        let done = SwitchOutcome::Done { to: "mainline".into() };
        let refused = SwitchOutcome::Refused {
            reason: "switch to mainline failed: while freezing: task 'locktest.2' holds 2 switchable lock(s): \
                     'lt.0', 'lt.1'"
                .into(),
        };
        assert!(evaluate(&Test::SwitchOk, t, Some(&done)).is_ok());
        let e = evaluate(&Test::SwitchOk, t, Some(&refused)).unwrap_err();
        assert!(e.expected == "the last switch done" && e.seen.starts_with("refused: switch to mainline"), "{e:?}");
        assert!(evaluate(&Test::SwitchOk, t, None).unwrap_err().seen.contains("no `C: switch`"));
        assert!(evaluate(&Test::SwitchRefused(0), t, Some(&refused)).is_ok());
        assert!(evaluate(&Test::SwitchRefused(1), t, Some(&refused)).is_ok());
        let e = evaluate(&Test::SwitchRefused(2), t, Some(&refused)).unwrap_err();
        assert_eq!(e.expected, "the last switch refused for tester lock 'lt.2'");
        // 'lt.1' is not 'lt.12' nor 'alt.1': the quotes are part of the name.
        let other = SwitchOutcome::Refused { reason: "holds 'lt.12', 'alt.1'".into() };
        assert!(evaluate(&Test::SwitchRefused(1), t, Some(&other)).is_err());
        assert_eq!(evaluate(&Test::SwitchRefused(0), t, Some(&done)).unwrap_err().seen, "done, to mainline");
        assert!(evaluate(&Test::SwitchRefused(0), t, None).is_err());
    }

    #[test]
    fn mainline_skips_priorities_and_stops_at_deadlock_detection() {
        assert_eq!(in_mainline(&Test::Prio(Cmp::Eq, 80)), InMainline::Skip);
        assert_eq!(in_mainline(&Test::NormalPrio(Cmp::Lt, 1)), InMainline::Skip);
        assert!(matches!(in_mainline(&Test::Opcode(Cmp::Eq, -35)), InMainline::Stop(r) if r.contains("rt lock's")));
        assert!(matches!(in_mainline(&Test::Opcode(Cmp::Gt, -35)), InMainline::Stop(_)));
        assert_eq!(in_mainline(&Test::Opcode(Cmp::Eq, -4)), InMainline::Applies);
        assert_eq!(in_mainline(&Test::Mutex { lock: 0, want: 2 }), InMainline::Applies);
        assert_eq!(in_mainline(&Test::Event(Cmp::Eq, -35)), InMainline::Applies);
        assert_eq!(in_mainline(&Test::SwitchOk), InMainline::Applies);
    }

    #[test]
    fn mutual_exclusion_is_one_holder_per_lock() {
        assert_eq!(exclusion_violation(&state(|_| {})), None);
        let fine = state(|t| {
            t[0]["mutex"][3] = json!(4);
            t[1]["mutex"][3] = json!(2);
            t[2]["mutex"][3] = json!(1);
            t[1]["mutex"][4] = json!(4);
        });
        assert_eq!(exclusion_violation(&fine), None);
        let bad = state(|t| {
            t[2]["mutex"][5] = json!(4);
            t[6]["mutex"][5] = json!(4);
        });
        let v = exclusion_violation(&bad).unwrap();
        assert_eq!(v, Violation { lock: 5, holders: vec![2, 6] });
        assert_eq!(v.to_string(), "lock 5 held (M = 4) by threads 2 and 6 at once");
    }

    #[test]
    fn a_mainline_holder_or_spinner_takes_its_cpu() {
        // 2 vCPUs: threads 0, 2, 4, 6 on cpu 0.
        let taken = |holder, cpu, settled| Some(CpuTaken { holder, cpu, settled });
        let s = state(|t| t[2]["mutex"][1] = json!(4));
        assert_eq!(cpu_taken(&s, 0), taken(2, 0, true));
        assert_eq!(cpu_taken(&s, 4), taken(2, 0, true));
        assert_eq!(cpu_taken(&s, 2), None, "its own holding does not stop a thread");
        assert_eq!(cpu_taken(&s, 1), None, "another cpu");
        for m in [1, 2] {
            let s = state(|t| {
                t[3]["mutex"][0] = json!(m);
                t[3]["busy"] = json!(true);
                t[3]["opcode"] = json!(3);
            });
            assert_eq!(cpu_taken(&s, 5), taken(3, 1, true), "M = {m}");
        }
        assert_eq!(cpu_taken(&state(|_| {}), 0), None);
        // Posted, not yet in lock code: it will be at once.
        let s = state(|t| {
            t[2]["busy"] = json!(true);
            t[2]["opcode"] = json!(5);
        });
        assert_eq!(cpu_taken(&s, 0), taken(2, 0, true));
        // Busy with something else and holding nothing: no.
        let s = state(|t| {
            t[2]["busy"] = json!(true);
            t[2]["opcode"] = json!(2);
        });
        assert_eq!(cpu_taken(&s, 0), None);
        // Unlocking what it holds: not settled yet.
        let s = state(|t| {
            t[2]["busy"] = json!(true);
            t[2]["opcode"] = json!(8);
            t[2]["mutex"][0] = json!(4);
        });
        assert_eq!(cpu_taken(&s, 0), taken(2, 0, false));
    }

    #[test]
    fn clean_means_idle_and_unlocked() {
        assert!(unclean(&state(|_| {})).is_empty());
        let s = state(|t| {
            t[1]["busy"] = json!(true);
            t[4]["mutex"][7] = json!(4);
            t[5]["blocked_on"] = json!(2);
            t[6]["prio"] = json!(80);
        });
        let u = unclean(&s);
        assert_eq!(u.len(), 3, "{u:?}");
        assert!(
            u[0].starts_with("thread 1 (cpu 1, busy)") && u[1].starts_with("thread 4") && u[2].starts_with("thread 5")
        );
    }
}
