//! Guest arguments (`BootInfo::cmdline`, words separated by spaces): what
//! the kernel does once it is ready. The tests use them to reach the
//! failure paths on purpose.
//!
//! | word           | after HC_READY, CPU 0 ...                          |
//! |----------------|----------------------------------------------------|
//! | `panic`        | panics ("panic requested by guest argument")       |
//! | `fault=pf`     | reads an unmapped address (page fault report)      |
//! | `fault=ud`     | executes `ud2` (invalid opcode report)             |
//! | `triple-fault` | clears every IDT gate and hits `ud2` (triple fault) |
//! | `exit=N`       | exits with status N                                |
//! | `sched-demo`   | runs the scheduler demo                            |
//! | `selftest`     | runs the self-test suite, exits with its verdict   |
//! | `deadlock`     | rt mode: two tasks deadlock on two locks (panic)   |
//! | `no-pi`        | flag: rtmutexes without priority inheritance       |
//! | `no-spin`      | flag: rtmutexes without adaptive spinning (benchmark) |
//! | `platform-costs` | flag: time the platform's primitives at boot and print them (`costs`) |
//! | `idle=poll`    | flag: idle CPUs poll at CPL3 instead of halting (costs a host core each) |
//! | `hold-lock=MS` | a task holds a switchable lock MS ms (fault test)  |
//! | `irq-off-spin=MS`, `corrupt-mailbox`, `corrupt-telemetry`, `bad-hypercalls`, `bad-panic-record`, `panic-in-switch`, `text-write` | fault injection (`faults`) |
//! | `sched-demo`   | runs the scheduler demo (`sched::selftest::demo`)  |
//!
//! When several are given, the last one wins. Unknown words are reported
//! and ignored.

use crate::faults::Faults;

/// What CPU 0 does after the ready hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyAction {
    /// Idle until the VMM asks for a shutdown.
    Idle,
    Panic,
    PageFault,
    InvalidOpcode,
    TripleFault,
    Exit(u32),
    /// Spawn the scheduler demo thread, then idle.
    SchedDemo,
    /// Run the self-test suite and exit with its verdict.
    SelfTest,
    /// Two tasks take two rt locks in opposite orders (expects a panic).
    Deadlock,
}

/// Flags that modify the kernel rather than pick an action.
pub const FLAG_NO_PI: &str = "no-pi";
/// Flag: rtmutex waiters sleep at once instead of spinning while the owner runs.
pub const FLAG_NO_SPIN: &str = "no-spin";
/// Flag: idle CPUs poll instead of halting in the ring-0 shim.
pub const FLAG_IDLE_POLL: &str = "idle=poll";
/// Flag: time the platform's primitives once ready (`costs`).
pub const FLAG_PLATFORM_COSTS: &str = "platform-costs";

/// The parsed command line.
pub struct Args<'a> {
    pub action: ReadyAction,
    /// `no-pi`: rtmutexes without priority inheritance (test honesty check).
    pub no_pi: bool,
    /// `no-spin`: rtmutexes without adaptive spinning (lock-throughput benchmark).
    pub no_spin: bool,
    /// `idle=poll`: idle CPUs poll for work instead of halting.
    pub idle_poll: bool,
    /// `platform-costs`: time the platform's primitives once ready.
    pub platform_costs: bool,
    /// Fault injections (`hold-lock=MS`, `irq-off-spin=MS`, ...: `faults`).
    pub faults: Faults,
    words: core::str::SplitAsciiWhitespace<'a>,
}

impl<'a> Args<'a> {
    /// Parses `cmdline`; [`Args::unknown`] yields the words not understood.
    pub fn parse(cmdline: &'a str) -> Self {
        let action = cmdline.split_ascii_whitespace().filter_map(parse_word).next_back().unwrap_or(ReadyAction::Idle);
        let no_pi = cmdline.split_ascii_whitespace().any(|w| w == FLAG_NO_PI);
        let no_spin = cmdline.split_ascii_whitespace().any(|w| w == FLAG_NO_SPIN);
        let idle_poll = cmdline.split_ascii_whitespace().any(|w| w == FLAG_IDLE_POLL);
        let platform_costs = cmdline.split_ascii_whitespace().any(|w| w == FLAG_PLATFORM_COSTS);
        let mut faults = Faults::default();
        for w in cmdline.split_ascii_whitespace() {
            faults.parse_word(w);
        }
        Self { action, no_pi, no_spin, idle_poll, platform_costs, faults, words: cmdline.split_ascii_whitespace() }
    }

    /// The words that are not guest arguments.
    pub fn unknown(self) -> impl Iterator<Item = &'a str> {
        self.words.filter(|w| {
            parse_word(w).is_none()
                && ![FLAG_NO_PI, FLAG_NO_SPIN, FLAG_IDLE_POLL, FLAG_PLATFORM_COSTS].contains(w)
                && !Faults::default().parse_word(w)
        })
    }
}

fn parse_word(word: &str) -> Option<ReadyAction> {
    match word {
        "panic" => Some(ReadyAction::Panic),
        "fault=pf" => Some(ReadyAction::PageFault),
        "fault=ud" => Some(ReadyAction::InvalidOpcode),
        "triple-fault" => Some(ReadyAction::TripleFault),
        "sched-demo" => Some(ReadyAction::SchedDemo),
        switcher::abi::GUEST_ARG_SELFTEST => Some(ReadyAction::SelfTest),
        "deadlock" => Some(ReadyAction::Deadlock),
        _ => word.strip_prefix("exit=").and_then(|n| n.parse().ok()).map(ReadyAction::Exit),
    }
}
