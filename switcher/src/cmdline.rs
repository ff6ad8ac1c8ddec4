//! The guest kernel's arguments (`rtswitch run --guest-arg WORD`, carried in
//! `BootInfo::cmdline`, words separated by spaces): the one list of keys
//! that both sides use. The VMM refuses a word this list does not accept
//! before it boots anything; the guest parses with it, so the two cannot
//! drift apart. A word is `key` or `key=value`; what each key does is the
//! guest's (`guest/src/boot/cmdline.rs`, `guest/src/diag/faults.rs`).

/// What a key takes after `=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Takes {
    /// Nothing: the word is the key alone.
    Nothing,
    /// A decimal `u32` (`exit=3`, `hold-lock=4000`); `unit` names it for
    /// the help ("MS", "US", "N").
    Number { unit: &'static str },
    /// One of these words (`fault=pf`).
    OneOf(&'static [&'static str]),
}

/// One guest argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub name: &'static str,
    pub takes: Takes,
    /// One line for people.
    pub help: &'static str,
}

const fn flag(name: &'static str, help: &'static str) -> Key {
    Key { name, takes: Takes::Nothing, help }
}

const fn number(name: &'static str, unit: &'static str, help: &'static str) -> Key {
    Key { name, takes: Takes::Number { unit }, help }
}

pub const PANIC: &str = "panic";
pub const FAULT: &str = "fault";
pub const TRIPLE_FAULT: &str = "triple-fault";
pub const EXIT: &str = "exit";
pub const SCHED_DEMO: &str = "sched-demo";
pub const SELFTEST: &str = crate::abi::GUEST_ARG_SELFTEST;
pub const DEADLOCK: &str = "deadlock";
pub const NO_PI: &str = "no-pi";
pub const NO_SPIN: &str = "no-spin";
pub const PLATFORM_COSTS: &str = "platform-costs";
pub const LOCKTEST: &str = "locktest";

/// Every key the guest kernel understands, in the order `--help` and the
/// VMM's error list them.
pub const KEYS: &[Key] = &[
    flag(PANIC, "panic once ready"),
    Key { name: FAULT, takes: Takes::OneOf(&["pf", "ud"]), help: "page fault / invalid opcode once ready" },
    flag(TRIPLE_FAULT, "triple-fault once ready"),
    number(EXIT, "N", "exit with status N once ready"),
    flag(SCHED_DEMO, "run the scheduler demo"),
    flag(SELFTEST, "run the self-test suite (what --selftest passes)"),
    flag(DEADLOCK, "rt mode: two tasks deadlock on two locks (the chain walk must panic)"),
    flag(NO_PI, "rtmutexes without priority inheritance"),
    flag(NO_SPIN, "rtmutexes without adaptive spinning"),
    flag(PLATFORM_COSTS, "time the platform's primitives once ready"),
    flag(LOCKTEST, "start the lock tester's threads once ready (`rtswitch locktest`)"),
    number("hold-lock", "MS", "fault: a task holds a switchable lock MS ms"),
    number("irq-off-spin", "MS", "fault: a task spins MS ms with interrupts off"),
    flag("after-request", "fault: hold-lock and irq-off-spin last until a switch request, then MS ms"),
    number("stall", "MS", "fault: a task spins MS ms with preemption off"),
    flag("park-in-lock", "fault: a task stops inside the lock implementation until a switch request"),
    flag("park-in-preempt", "fault: a task stops inside the preemption point until a switch request"),
    flag("park-in-unlock", "fault: a task stops inside the unlock implementation until a switch request"),
    flag("park-in-try-lock", "fault: a task stops inside the try_lock implementation until a switch request"),
    flag("park-in-irq", "fault: a device interrupt's handler stops inside its dispatch until a switch request"),
    flag(
        "park-in-preempt-full",
        "fault: a task is preempted at full preempt_enable; the winner spins until a switch request",
    ),
    flag(
        "park-in-irq-exit-full",
        "fault: a task is preempted at full interrupt return; the winner spins until a switch request",
    ),
    flag("bad-frame", "fault: a task runs with a corrupted frame pointer until a switch request"),
    number("lock-queue", "N", "fault: N tasks queue on one lock"),
    number("handoff-delay", "US", "fault: a woken rtmutex waiter waits US us before taking the lock"),
    number("serialize-stall", "US", "fault: the switch stalls US us after the verdict, before serializing"),
    flag("corrupt-mailbox", "fault: scribble over the switch mailbox"),
    flag("corrupt-telemetry", "fault: scribble over the telemetry header"),
    flag("bad-hypercalls", "fault: malformed hypercalls"),
    flag("bad-panic-record", "fault: a panic record outside guest memory"),
    flag("panic-in-switch", "fault: the switch thread panics mid-switch"),
    flag("text-write", "fault: the guest writes its own text"),
    flag("stack-lock", "fault: a task takes a switchable lock on its stack (must be refused)"),
    number("thaw-spin", "US", "fault: a thawed task spins US us, still marked frozen, before it leaves the freezer"),
];

/// One parsed word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Word<'a> {
    pub key: &'static Key,
    /// The text after `=`, checked against [`Key::takes`].
    pub value: Option<&'a str>,
}

impl Word<'_> {
    /// The value of a [`Takes::Number`] key.
    pub fn number(&self) -> Option<u32> {
        self.value.and_then(|v| v.parse().ok())
    }
}

/// Why a word is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WordError<'a> {
    /// No such key.
    Unknown(&'a str),
    /// The key takes no value, but `=...` was given.
    UnexpectedValue(&'static Key),
    /// The key needs `=value`.
    MissingValue(&'static Key),
    /// The value is not what the key takes.
    BadValue(&'static Key, &'a str),
}

/// Looks up a key by name.
pub fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// Parses one word against [`KEYS`].
pub fn parse(word: &str) -> Result<Word<'_>, WordError<'_>> {
    let (name, value) = match word.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (word, None),
    };
    let key = key(name).ok_or(WordError::Unknown(name))?;
    match (key.takes, value) {
        (Takes::Nothing, None) => Ok(Word { key, value }),
        (Takes::Nothing, Some(_)) => Err(WordError::UnexpectedValue(key)),
        (_, None) => Err(WordError::MissingValue(key)),
        (Takes::Number { .. }, Some(v)) if v.parse::<u32>().is_ok() => Ok(Word { key, value }),
        (Takes::OneOf(ok), Some(v)) if ok.contains(&v) => Ok(Word { key, value }),
        (_, Some(v)) => Err(WordError::BadValue(key, v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_and_words_parse() {
        for (i, k) in KEYS.iter().enumerate() {
            assert!(KEYS[i + 1..].iter().all(|o| o.name != k.name), "{} listed twice", k.name);
            assert!(!k.name.contains('=') && !k.name.contains(' '), "{}", k.name);
        }
        assert_eq!(parse("panic").map(|w| w.key.name), Ok(PANIC));
        assert_eq!(parse("exit=3").map(|w| w.number()), Ok(Some(3)));
        assert_eq!(parse("fault=ud").map(|w| w.value), Ok(Some("ud")));
        // The idle policy is a profile dimension, not a guest argument.
        assert_eq!(parse("idle=poll"), Err(WordError::Unknown("idle")));
        assert_eq!(parse("hold-lock=4000").map(|w| w.number()), Ok(Some(4000)));
        assert_eq!(parse("bogus"), Err(WordError::Unknown("bogus")));
        assert_eq!(parse("bogus=1"), Err(WordError::Unknown("bogus")));
        assert!(matches!(parse("panic=1"), Err(WordError::UnexpectedValue(_))));
        assert!(matches!(parse("exit"), Err(WordError::MissingValue(_))));
        assert!(matches!(parse("exit=x"), Err(WordError::BadValue(_, "x"))));
        assert!(matches!(parse("fault=zz"), Err(WordError::BadValue(_, "zz"))));
    }

    /// The guest's fault parser (`guest/src/diag/faults.rs`) takes its
    /// words by literal: every one must be a key here, or the VMM refuses
    /// it.
    #[test]
    fn every_fault_word_the_guest_parses_is_a_key() {
        let src = include_str!("../../guest/src/diag/faults.rs");
        let body = &src[src.find("pub fn parse_word").expect("Faults::parse_word")..];
        let body = &body[..body.find("\n    }\n").expect("its end")];
        let mut words = Vec::new();
        for (i, _) in body.match_indices("ms(\"") {
            let rest = &body[i + 4..];
            words.push((&rest[..rest.find('=').expect("prefix=")], true));
        }
        for line in body.lines().map(str::trim).filter(|l| l.starts_with('"') && l.contains("=>")) {
            words.push((&line[1..line[1..].find('"').expect("closing quote") + 1], false));
        }
        assert!(words.len() >= 12, "the parser's words were not found: {words:?}");
        for (w, takes_number) in words {
            let k = key(w).unwrap_or_else(|| panic!("guest fault word '{w}' is not in KEYS"));
            assert_eq!(matches!(k.takes, Takes::Number { .. }), takes_number, "{w}");
        }
    }
}
