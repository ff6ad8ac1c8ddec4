//! Scenario files, Linux rt-tester's line format, turned into steps
//! (pure: text in, steps or errors out; docs/locktest.md, "The format").
//!
//! ```text
//! X: opcode: thread: argument      # spaces and tabs around the fields are free
//! ```
//!
//! `X` is `C` (a command to a tester thread), `T` (a test, now) or `W`
//! (wait until the test holds). Commands are the lock tester's
//! ([`Opcode`], by name or number) and rtswitch's `switch`; tests are
//! rt-tester's on the thread's state and rtswitch's `switchok` and
//! `switchrefused` on the last switch. What does not apply to this kernel
//! (the pending-owner `lockcont`/`blockedwake`, the big kernel lock) is
//! refused with the reason, as is any malformed line: a scenario either
//! parses whole or is not run.

use std::fmt;

use switcher::locktest::{LOCKS, Opcode, THREADS};
use switcher::profile::Profile;

/// A place in a scenario file: `file:line:column` (1-based; the column
/// is the first character of the field at fault).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct At {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// Why a scenario line was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error(
        "{at}: {found} field(s) where a step has 4: write `X: opcode: thread: argument` (X is C, T or W), \
         or start a comment with #"
    )]
    Fields { at: At, found: usize },
    #[error("{at}: '{kind}' is not a step kind: write C (a command), T (a test, now) or W (wait until the test holds)")]
    Kind { at: At, kind: String },
    #[error("{at}: '{name}' is neither a command nor a test; commands (C:): {commands}; tests (T:, W:): {tests}")]
    Unknown { at: At, name: String, commands: String, tests: String },
    #[error("{at}: '{name}' is refused: {why}")]
    Refused { at: At, name: String, why: &'static str },
    #[error(
        "{at}: '{name}' is a test: write it as `T: {name}: ...` (test now) or `W: {name}: ...` (wait until it holds)"
    )]
    TestAsCommand { at: At, name: String },
    #[error("{at}: '{name}' is a command: write it as `C: {name}: ...`; tests are {tests}")]
    CommandAsTest { at: At, name: String, tests: String },
    #[error("{at}: thread '{text}' is not a tester thread: write a number 0..{max}", max = THREADS - 1)]
    Thread { at: At, text: String },
    #[error("{at}: argument '{text}' is not a whole number{hint}")]
    Number { at: At, text: String, hint: &'static str },
    #[error("{at}: lock '{text}' is not a tester lock: write a number 0..{max}", max = LOCKS - 1)]
    Lock { at: At, text: String },
    #[error("{at}: {name} {data}: {why}")]
    Data { at: At, name: &'static str, data: i64, why: &'static str },
    #[error("{at}: profile '{text}': {why}")]
    Profile { at: At, text: String, why: String },
    #[error("{file}: no steps (only comments and blank lines): there is nothing to run")]
    Empty { file: String },
}

/// How a test compares its field with the argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Lt,
    Gt,
}

impl Cmp {
    pub fn holds(self, seen: i64, arg: i64) -> bool {
        match self {
            Cmp::Eq => seen == arg,
            Cmp::Lt => seen < arg,
            Cmp::Gt => seen > arg,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Eq => "==",
            Cmp::Lt => "<",
            Cmp::Gt => ">",
        }
    }
}

/// A test on one thread's state or on the last switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Test {
    /// "P", the effective priority (`prioeq`, `priolt`, `priogt`).
    Prio(Cmp, i64),
    /// "N", the base priority (`nprioeq`, `npriolt`, `npriogt`).
    NormalPrio(Cmp, i64),
    /// "M" of `lock` equals `want` (`unlocked` 0, `trylock` 1, `blocked` 2, `locked` 4).
    Mutex { lock: usize, want: u8 },
    /// "O", the running opcode or the last result (`opcodeeq`, `opcodelt`, `opcodegt`).
    Opcode(Cmp, i64),
    /// "E", the event counter at the thread's last transition (`eventeq`, `eventlt`, `eventgt`).
    Event(Cmp, i64),
    /// The file's last `C: switch` succeeded.
    SwitchOk,
    /// The file's last `C: switch` was refused, and its reason names tester lock `'lt.L'`.
    SwitchRefused(usize),
}

/// What a step does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `C:` a lock-tester command to `thread`.
    Command { thread: usize, opcode: Opcode, data: i32 },
    /// `C: switch: _: PROFILE`: a runtime switch through `set-mode`.
    Switch(Profile),
    /// `T:` (`wait` false) or `W:` (`wait` true). `thread` is 0 for the switch tests.
    Check { wait: bool, thread: usize, test: Test },
}

/// One step: where it is, its line as written (trimmed), what it does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    pub text: String,
    pub action: Action,
}

/// A parsed scenario file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scenario {
    pub file: String,
    pub steps: Vec<Step>,
}

/// The tests by name, with rt-tester's fields.
const TESTS: [&str; 18] = [
    "prioeq",
    "priolt",
    "priogt",
    "nprioeq",
    "npriolt",
    "npriogt",
    "locked",
    "blocked",
    "unlocked",
    "trylock",
    "opcodeeq",
    "opcodelt",
    "opcodegt",
    "eventeq",
    "eventlt",
    "eventgt",
    "switchok",
    "switchrefused",
];

/// rt-tester's tests that do not apply here, and why.
fn refused_test(name: &str) -> Option<&'static str> {
    match name {
        "blockedwake" => Some(
            "it waited for a woken waiter of the old pending-owner rtmutex, paused in its wake-up loop until \
             `lockcont`; here a woken waiter takes the lock itself at once, so that state does not exist \
             (`C: wakedelay` holds a woken waiter back; `locked` and `blocked` show who won)",
        ),
        "lockedbkl" | "blockedbkl" | "unlockedbkl" => Some("the big kernel lock does not exist in this kernel"),
        _ => None,
    }
}

/// The name of rt-tester's command numbers that are gone here (so that
/// `C: 7: ...` gets lockcont's reason, not "no such number").
fn retired_number(s: &str) -> Option<&'static str> {
    match s.parse::<u32>().ok()? {
        7 => Some("lockcont"),
        9 => Some("lockbkl"),
        10 => Some("unlockbkl"),
        _ => None,
    }
}

fn command_list() -> String {
    let mut names: Vec<&str> = Opcode::ALL.iter().map(|o| o.name()).collect();
    names.push("switch");
    names.join(", ")
}

fn test_list() -> String {
    TESTS.join(", ")
}

/// A field of a line: its text (trimmed) and its 1-based column.
#[derive(Clone, Copy)]
struct Field<'a> {
    text: &'a str,
    column: usize,
}

/// Splits `line` (comment already cut) at `:`, each field trimmed, with
/// the column where its text starts.
fn fields(line: &str) -> Vec<Field<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    for piece in line.split(':') {
        let lead = piece.len() - piece.trim_start().len();
        let column = line[..start + lead].chars().count() + 1;
        out.push(Field { text: piece.trim(), column });
        start += piece.len() + 1;
    }
    out
}

/// Parses a whole file; every refused line is reported, not only the first.
pub fn parse(file: &str, text: &str) -> Result<Scenario, Vec<ParseError>> {
    let mut steps = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match parse_line(file, i + 1, line) {
            Ok(Some(step)) => steps.push(step),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() && steps.is_empty() {
        errors.push(ParseError::Empty { file: file.to_string() });
    }
    if errors.is_empty() { Ok(Scenario { file: file.to_string(), steps }) } else { Err(errors) }
}

/// Parses line `line` (1-based) of `file`: `None` for a blank or comment line.
pub fn parse_line(file: &str, line: usize, raw: &str) -> Result<Option<Step>, ParseError> {
    let code = raw.find('#').map_or(raw, |i| &raw[..i]);
    if code.trim().is_empty() {
        return Ok(None);
    }
    let at = |f: Field<'_>| At { file: file.to_string(), line, column: f.column };
    let parts = fields(code);
    let &[kind, name_f, thread_f, arg_f] = parts.as_slice() else {
        let first = parts.first().map_or(1, |f| f.column);
        return Err(ParseError::Fields { at: At { file: file.to_string(), line, column: first }, found: parts.len() });
    };
    let name = name_f.text.to_ascii_lowercase();
    let action = match kind.text.to_ascii_lowercase().as_str() {
        "c" => command(&name, name_f, thread_f, arg_f, &at)?,
        k @ ("t" | "w") => check(k == "w", &name, name_f, thread_f, arg_f, &at)?,
        _ => return Err(ParseError::Kind { at: at(kind), kind: kind.text.to_string() }),
    };
    Ok(Some(Step { line, text: code.trim().to_string(), action }))
}

fn thread(f: Field<'_>, at: &dyn Fn(Field<'_>) -> At) -> Result<usize, ParseError> {
    f.text
        .parse::<usize>()
        .ok()
        .filter(|&t| t < THREADS)
        .ok_or_else(|| ParseError::Thread { at: at(f), text: f.text.to_string() })
}

fn lock(f: Field<'_>, at: &dyn Fn(Field<'_>) -> At) -> Result<usize, ParseError> {
    f.text
        .parse::<usize>()
        .ok()
        .filter(|&l| l < LOCKS)
        .ok_or_else(|| ParseError::Lock { at: at(f), text: f.text.to_string() })
}

fn number(f: Field<'_>, at: &dyn Fn(Field<'_>) -> At, hint: &'static str) -> Result<i64, ParseError> {
    f.text.parse::<i64>().map_err(|_| ParseError::Number { at: at(f), text: f.text.to_string(), hint })
}

/// `opcode`'s refusal, or the list of what exists.
fn opcode_error(name: &str, why: &'static str, at: At) -> ParseError {
    let known_refusal = |w: &str| w != "unknown command" && w != "no such rt-tester command number";
    if let Some(retired) = retired_number(name)
        && let Err(w) = Opcode::parse(retired)
    {
        return ParseError::Refused { at, name: format!("{name} ({retired})"), why: w };
    }
    if known_refusal(why) {
        return ParseError::Refused { at, name: name.to_string(), why };
    }
    ParseError::Unknown { at, name: name.to_string(), commands: command_list(), tests: test_list() }
}

fn command(
    name: &str,
    name_f: Field<'_>,
    thread_f: Field<'_>,
    arg_f: Field<'_>,
    at: &dyn Fn(Field<'_>) -> At,
) -> Result<Action, ParseError> {
    if name == "switch" {
        // The thread field is not used: a switch is the whole VM's.
        let profile = Profile::parse(arg_f.text).map_err(|(e, item)| ParseError::Profile {
            at: at(arg_f),
            text: arg_f.text.to_string(),
            why: format!("'{item}': {e}"),
        })?;
        return Ok(Action::Switch(profile));
    }
    if let Some(why) = refused_test(name) {
        return Err(ParseError::Refused { at: at(name_f), name: name.to_string(), why });
    }
    if TESTS.contains(&name) {
        return Err(ParseError::TestAsCommand { at: at(name_f), name: name.to_string() });
    }
    let opcode = Opcode::parse(name).map_err(|why| opcode_error(name, why, at(name_f)))?;
    let thread = thread(thread_f, at)?;
    let data = number(arg_f, at, "")?;
    let data =
        opcode.check_data(data).map_err(|why| ParseError::Data { at: at(arg_f), name: opcode.name(), data, why })?;
    Ok(Action::Command { thread, opcode, data })
}

fn check(
    wait: bool,
    name: &str,
    name_f: Field<'_>,
    thread_f: Field<'_>,
    arg_f: Field<'_>,
    at: &dyn Fn(Field<'_>) -> At,
) -> Result<Action, ParseError> {
    if let Some(why) = refused_test(name) {
        return Err(ParseError::Refused { at: at(name_f), name: name.to_string(), why });
    }
    let cmp = |suffix: &str| match suffix {
        "eq" => Some(Cmp::Eq),
        "lt" => Some(Cmp::Lt),
        "gt" => Some(Cmp::Gt),
        _ => None,
    };
    let split = |prefix: &str| name.strip_prefix(prefix).and_then(cmp);
    // The switch tests are the VM's, not a thread's: their thread field is not used.
    let (thread, test) = match name {
        "switchok" => (0, Test::SwitchOk),
        "switchrefused" => (0, Test::SwitchRefused(lock(arg_f, at)?)),
        "locked" | "blocked" | "unlocked" | "trylock" => {
            let want = match name {
                "unlocked" => 0,
                "trylock" => 1,
                "blocked" => 2,
                _ => 4,
            };
            (thread(thread_f, at)?, Test::Mutex { lock: lock(arg_f, at)?, want })
        }
        _ => {
            let test = if let Some(c) = split("nprio") {
                Test::NormalPrio(
                    c,
                    number(arg_f, at, " (a priority as rt-tester shows it: -21 SCHED_OTHER, n FIFO n)")?,
                )
            } else if let Some(c) = split("prio") {
                Test::Prio(c, number(arg_f, at, " (a priority as rt-tester shows it: -21 SCHED_OTHER, n FIFO n)")?)
            } else if let Some(c) = split("event") {
                Test::Event(c, number(arg_f, at, "")?)
            } else if let Some(c) = split("opcode") {
                Test::Opcode(c, opcode_arg(arg_f, at)?)
            } else if name == "switch" || Opcode::parse(name).is_ok() {
                return Err(ParseError::CommandAsTest { at: at(name_f), name: name.to_string(), tests: test_list() });
            } else {
                let why = Opcode::parse(name).err().unwrap_or("unknown command");
                return Err(opcode_error(name, why, at(name_f)));
            };
            (thread(thread_f, at)?, test)
        }
    };
    Ok(Action::Check { wait, thread, test })
}

/// An opcode test's argument: a number (a result such as -35, or an
/// opcode number), or a command name meaning its number.
fn opcode_arg(f: Field<'_>, at: &dyn Fn(Field<'_>) -> At) -> Result<i64, ParseError> {
    if let Ok(n) = f.text.parse::<i64>() {
        return Ok(n);
    }
    let name = f.text.to_ascii_lowercase();
    match Opcode::parse(&name) {
        Ok(o) => Ok(i64::from(o as u32)),
        Err("unknown command") => Err(ParseError::Number {
            at: at(f),
            text: f.text.to_string(),
            hint: " nor a command name (a result such as 0 or -35, or a command such as lock)",
        }),
        Err(why) => Err(ParseError::Refused { at: at(f), name, why }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(line: &str) -> Result<Option<Step>, ParseError> {
        parse_line("s.tst", 7, line)
    }

    fn action(line: &str) -> Action {
        step(line).unwrap_or_else(|e| panic!("{line}: {e}")).expect("a step").action
    }

    fn error(line: &str) -> String {
        match step(line) {
            Err(e) => e.to_string(),
            Ok(s) => panic!("{line} parsed as {s:?}"),
        }
    }

    #[test]
    fn commands_parse_with_free_spacing_by_name_or_number() {
        let lock = Action::Command { thread: 1, opcode: Opcode::Lock, data: 2 };
        assert_eq!(action("C: lock: 1: 2"), lock);
        assert_eq!(action("C:lock:1:2"), lock);
        assert_eq!(action("\t c :\t\tLOCK :  1:\t2   "), lock);
        assert_eq!(action("C: 3: 1: 2"), lock);
        assert_eq!(action("c: lock: 1: 2 # trailing comment"), lock);
        assert_eq!(action("C: schedfifo: 0: 80"), Action::Command { thread: 0, opcode: Opcode::SchedFifo, data: 80 });
        assert_eq!(action("C: resetevent: 0: 0"), Action::Command { thread: 0, opcode: Opcode::ResetEvent, data: 0 });
        assert_eq!(action("C: wakedelay: 3: 100"), Action::Command { thread: 3, opcode: Opcode::WakeDelay, data: 100 });
        // rt-tester's signal argument was ignored: so it is here.
        assert_eq!(action("C: signal: 4: 1"), Action::Command { thread: 4, opcode: Opcode::Signal, data: 0 });
        let s = step("  C: unlock:\t0: 0   # done").unwrap().unwrap();
        assert_eq!((s.line, s.text.as_str()), (7, "C: unlock:\t0: 0"));
    }

    #[test]
    fn blank_and_comment_lines_are_no_steps() {
        for line in ["", "   \t", "# C: lock: 0: 0", "   # comment", "#"] {
            assert_eq!(step(line), Ok(None), "{line:?}");
        }
    }

    #[test]
    fn tests_parse_with_their_fields() {
        let w = |thread, test| Action::Check { wait: true, thread, test };
        let t = |thread, test| Action::Check { wait: false, thread, test };
        assert_eq!(action("W: locked: 0: 1"), w(0, Test::Mutex { lock: 1, want: 4 }));
        assert_eq!(action("T: blocked: 2: 0"), t(2, Test::Mutex { lock: 0, want: 2 }));
        assert_eq!(action("T: unlocked: 2: 7"), t(2, Test::Mutex { lock: 7, want: 0 }));
        assert_eq!(action("T: trylock: 2: 3"), t(2, Test::Mutex { lock: 3, want: 1 }));
        assert_eq!(action("T: prioeq: 0: 80"), t(0, Test::Prio(Cmp::Eq, 80)));
        assert_eq!(action("T: priolt: 0: -21"), t(0, Test::Prio(Cmp::Lt, -21)));
        assert_eq!(action("T: priogt: 0: 1"), t(0, Test::Prio(Cmp::Gt, 1)));
        assert_eq!(action("T: nprioeq: 1: -21"), t(1, Test::NormalPrio(Cmp::Eq, -21)));
        assert_eq!(action("T: npriolt: 1: 5"), t(1, Test::NormalPrio(Cmp::Lt, 5)));
        assert_eq!(action("T: npriogt: 1: 5"), t(1, Test::NormalPrio(Cmp::Gt, 5)));
        assert_eq!(action("W: eventeq: 3: 0"), w(3, Test::Event(Cmp::Eq, 0)));
        assert_eq!(action("W: eventlt: 3: 9"), w(3, Test::Event(Cmp::Lt, 9)));
        assert_eq!(action("W: eventgt: 3: 9"), w(3, Test::Event(Cmp::Gt, 9)));
        assert_eq!(action("T: switchok: 5: 0"), t(0, Test::SwitchOk));
        assert_eq!(action("W: switchrefused: 0: 6"), w(0, Test::SwitchRefused(6)));
    }

    #[test]
    fn opcode_tests_take_a_number_or_a_command_name() {
        let t = |c, n| Action::Check { wait: false, thread: 1, test: Test::Opcode(c, n) };
        assert_eq!(action("T: opcodeeq: 1: 0"), t(Cmp::Eq, 0));
        assert_eq!(action("T: opcodeeq: 1: -35"), t(Cmp::Eq, -35));
        assert_eq!(action("T: opcodeeq: 1: lock"), t(Cmp::Eq, 3));
        assert_eq!(action("T: opcodelt: 1: LockInt"), t(Cmp::Lt, 5));
        assert_eq!(action("T: opcodegt: 1: wakedelay"), t(Cmp::Gt, 200));
        let e = error("T: opcodeeq: 1: lockcont");
        assert!(e.contains("s.tst:7:17") && e.contains("pending-owner"), "{e}");
        let e = error("T: opcodeeq: 1: frob");
        assert!(e.contains("'frob' is not a whole number nor a command name"), "{e}");
    }

    #[test]
    fn switch_takes_a_profile_and_ignores_its_thread() {
        assert_eq!(action("C: switch: 0: rt"), Action::Switch(Profile::RT));
        assert_eq!(action("C: switch: 9: mainline"), Action::Switch(Profile::MAINLINE));
        let p = Profile::parse("locks=rt,preempt=none").unwrap();
        assert_eq!(action("C: switch: 0: locks=rt,preempt=none"), Action::Switch(p));
        let e = error("C: switch: 0: fast");
        assert!(e.starts_with("s.tst:7:15: profile 'fast':") && e.contains("not a profile"), "{e}");
    }

    #[test]
    fn each_refusal_says_why() {
        let e = error("C: lockcont: 1: 0");
        assert!(e.contains("'lockcont' is refused") && e.contains("pending-owner") && e.contains("wakedelay"), "{e}");
        let e = error("C: 7: 1: 0");
        assert!(e.contains("'7 (lockcont)' is refused") && e.contains("pending-owner"), "{e}");
        for l in ["C: lockbkl: 1: 0", "C: unlockbkl: 1: 0", "C: 9: 1: 0", "C: 10: 1: 0"] {
            assert!(error(l).contains("big kernel lock does not exist"), "{l}: {}", error(l));
        }
        let e = error("W: blockedwake: 1: 0");
        assert!(e.contains("'blockedwake' is refused") && e.contains("pending-owner"), "{e}");
        for l in ["T: lockedbkl: 1: 0", "W: blockedbkl: 0: 0", "T: unlockedbkl: 0: 0"] {
            assert!(error(l).contains("big kernel lock does not exist"), "{l}: {}", error(l));
        }
        // A refused command in a test's place gets the command's reason.
        assert!(error("T: lockcont: 1: 0").contains("pending-owner"));
        let e = error("C: schedfifo: 0: 99");
        assert!(e.starts_with("s.tst:7:18: schedfifo 99:") && e.contains("1..98"), "{e}");
        assert!(error("C: schedother: 0: 5").contains("nice 0 only"));
        assert!(error("C: wakedelay: 0: 6000").contains("0..5000 ms"));
        assert!(error("C: lock: 0: 8").contains("lock 8: the lock number must be 0..7"));
    }

    #[test]
    fn malformed_lines_name_the_place_and_the_fix() {
        let e = error("C: lock: 0");
        assert!(e.starts_with("s.tst:7:1: 3 field(s) where a step has 4"), "{e}");
        assert!(error("C: lock: 0: 0: 1").contains("5 field(s)"));
        assert!(error("lock 0 0").contains("1 field(s)"));
        let e = error("X: lock: 0: 0");
        assert!(e.starts_with("s.tst:7:1: 'X' is not a step kind"), "{e}");
        let e = error("C: frob: 0: 0");
        assert!(e.starts_with("s.tst:7:4: 'frob' is neither") && e.contains("wakedelay, switch"), "{e}");
        assert!(e.contains("switchrefused") && !e.contains("blockedwake"), "{e}");
        let e = error("C: 42: 0: 0");
        assert!(e.contains("'42' is neither"), "{e}");
        let e = error("C: lock: 8: 0");
        assert!(e.starts_with("s.tst:7:10: thread '8' is not a tester thread: write a number 0..7"), "{e}");
        assert!(error("C: lock: -1: 0").contains("thread '-1'"));
        assert!(error("W: locked: x: 0").contains("thread 'x'"));
        let e = error("C: lock: 0: zero");
        assert!(e.starts_with("s.tst:7:13: argument 'zero' is not a whole number"), "{e}");
        assert!(error("C: lock: 0: ").contains("argument '' is not a whole number"));
        let e = error("W: locked: 0: 8");
        assert!(e.contains("lock '8' is not a tester lock"), "{e}");
        assert!(error("T: prioeq: 0: high").contains("-21 SCHED_OTHER"));
        assert!(error("T: switchrefused: 0: 9").contains("lock '9'"));
        let e = error("T: lock: 0: 0");
        assert!(e.contains("'lock' is a command: write it as `C: lock: ...`"), "{e}");
        assert!(error("W: switch: 0: rt").contains("'switch' is a command"));
        let e = error("C: locked: 0: 0");
        assert!(e.contains("'locked' is a test: write it as `T: locked: ...`"), "{e}");
        assert!(error("C: switchok: 0: 0").contains("is a test"));
        assert!(error("T: prioge: 0: 1").contains("'prioge' is neither"));
    }

    #[test]
    fn a_file_reports_every_bad_line_and_needs_a_step() {
        let text = "# header\nC: lock: 0: 0\nC: lock: 9: 0\n\nW: locked: 0: 0\nT: blockedwake: 0: 0\n";
        let errs = parse("f.tst", text).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].to_string().starts_with("f.tst:3:10:"), "{}", errs[0]);
        assert!(errs[1].to_string().starts_with("f.tst:6:4:"), "{}", errs[1]);
        let ok = parse("f.tst", "C: lock: 0: 0\r\n# x\r\nW: locked: 0: 0\r\n").unwrap();
        assert_eq!(ok.steps.iter().map(|s| s.line).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(ok.steps[1].text, "W: locked: 0: 0");
        let e = parse("e.tst", "# nothing\n\n").unwrap_err();
        assert_eq!(e, [ParseError::Empty { file: "e.tst".into() }]);
        assert!(e[0].to_string().contains("no steps"));
    }

    #[test]
    fn comparisons() {
        assert!(Cmp::Eq.holds(3, 3) && !Cmp::Eq.holds(3, 4));
        assert!(Cmp::Lt.holds(-35, 0) && !Cmp::Lt.holds(0, 0));
        assert!(Cmp::Gt.holds(1, 0) && !Cmp::Gt.holds(0, 0));
    }
}
