//! Guest arguments (`BootInfo::cmdline`, words separated by spaces): what
//! the kernel does once it is ready. The tests use them to reach the
//! failure paths on purpose.
//!
//! The words, what value each takes and what each does, are
//! `switcher::cmdline::KEYS`: the one list the VMM checks `--guest-arg`
//! against before boot, and the one docs/usage.md ("Guest arguments") is
//! generated from. Here they become what CPU 0 does after HC_READY
//! ([`ReadyAction`]) and the flags and fault injections the kernel reads.
//!
//! When several actions are given, the last one wins. A word that list
//! refuses, or a listed key this kernel does not act on, is reported and
//! ignored.

use switcher::cmdline::{self as keys, Word};

use crate::diag::faults::Faults;

/// What CPU 0 does after the ready hypercall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyAction {
    /// Start the lock tester's threads (`workload::locktest`).
    LockTest,
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

/// The parsed command line.
pub struct Args<'a> {
    pub action: ReadyAction,
    /// `no-pi`: rtmutexes without priority inheritance (test honesty check).
    pub no_pi: bool,
    /// `no-spin`: rtmutexes without adaptive spinning (lock-throughput benchmark).
    pub no_spin: bool,
    /// `platform-costs`: time the platform's primitives once ready.
    pub platform_costs: bool,
    /// Fault injections (`hold-lock=MS`, `irq-off-spin=MS`, ...: `faults`).
    pub faults: Faults,
    words: core::str::SplitAsciiWhitespace<'a>,
}

impl<'a> Args<'a> {
    /// Parses `cmdline`; [`Args::unknown`] yields the words not understood.
    pub fn parse(cmdline: &'a str) -> Self {
        let mut args = Self {
            action: ReadyAction::Idle,
            no_pi: false,
            no_spin: false,
            platform_costs: false,
            faults: Faults::default(),
            words: cmdline.split_ascii_whitespace(),
        };
        for w in cmdline.split_ascii_whitespace() {
            if let Ok(word) = keys::parse(w) {
                args.take(w, &word);
            }
        }
        args
    }

    /// Acts on one word the shared list accepted; false if this kernel
    /// does nothing with its key.
    fn take(&mut self, text: &str, word: &Word<'_>) -> bool {
        if let Some(action) = action(word) {
            self.action = action;
            return true;
        }
        match word.key.name {
            keys::NO_PI => self.no_pi = true,
            keys::NO_SPIN => self.no_spin = true,
            keys::PLATFORM_COSTS => self.platform_costs = true,
            _ => return self.faults.parse_word(text),
        }
        true
    }

    /// The words that are not guest arguments (refused by the shared
    /// list, or listed but not acted on by this kernel).
    pub fn unknown(self) -> impl Iterator<Item = &'a str> {
        self.words.filter(|w| match keys::parse(w) {
            Err(_) => true,
            Ok(word) => !Args::parse("").take(w, &word),
        })
    }
}

/// The ready action a word asks for, if it asks for one.
fn action(word: &Word<'_>) -> Option<ReadyAction> {
    Some(match (word.key.name, word.value) {
        (keys::PANIC, _) => ReadyAction::Panic,
        (keys::FAULT, Some("pf")) => ReadyAction::PageFault,
        (keys::FAULT, Some("ud")) => ReadyAction::InvalidOpcode,
        (keys::TRIPLE_FAULT, _) => ReadyAction::TripleFault,
        (keys::SCHED_DEMO, _) => ReadyAction::SchedDemo,
        (keys::SELFTEST, _) => ReadyAction::SelfTest,
        (keys::LOCKTEST, _) => ReadyAction::LockTest,
        (keys::DEADLOCK, _) => ReadyAction::Deadlock,
        (keys::EXIT, _) => ReadyAction::Exit(word.number()?),
        _ => return None,
    })
}
