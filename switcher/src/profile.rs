//! The kernel's mode: a profile over three switchable dimensions.
//!
//! | dimension | variants                  | what the patched sites select                       |
//! |-----------|---------------------------|-----------------------------------------------------|
//! | `locks`   | `mainline`, `rt`          | spinning locks (preemption off) or rtmutexes        |
//! | `preempt` | `none`, `voluntary`, `full` | which preemption points act on a pending reschedule |
//! | `irq`     | `hard`, `threaded`        | device handlers in hard-IRQ context or in a thread  |
//! | `idle`    | `haltpoll`, `halt`, `poll` | none: the idle loop reads it at every pass          |
//!
//! Two profiles are named: `mainline` (mainline locks, voluntary
//! preemption, hard-IRQ handlers: a distribution kernel) and `rt`
//! (rtmutexes, full preemption, threaded handlers: PREEMPT_RT); both idle
//! with `haltpoll`. Every one of the 36 combinations is a valid mode,
//! spelled `locks=rt,preempt=full,irq=hard,idle=poll`; a spelling may
//! start with a named profile and change dimensions of it (`rt,idle=poll`),
//! and a spelling without one takes `mainline`'s variant for every
//! dimension it leaves out. A profile's name leaves `idle` out when it is
//! `haltpoll`.
//!
//! The idle policy has no call sites: switching it patches nothing, and
//! every idle CPU takes the new policy at its next pass through the idle
//! loop (`guest/src/sched/idle.rs`).
//!
//! In the ABI a profile is one `u32` ([`Profile::code`]): the lock mode in
//! bits 0..4, the preemption model in bits 4..8, the interrupt mode in
//! bits 8..12, the idle policy in bits 12..16; any other bit set, or a
//! variant out of range, is invalid. `haltpoll` is idle variant 0, so a
//! code from before the idle dimension means what it meant.
//!
//! The preemption points follow PREEMPT_DYNAMIC's static calls; what
//! each model does at each point is drawn where the points are,
//! `guest/src/sched/preempt_sites.rs`.

/// The lock implementation (the `locks` dimension).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LockMode {
    Mainline = 0,
    Rt = 1,
}

impl LockMode {
    pub fn from_u32(v: u32) -> Option<Self> {
        [Self::Mainline, Self::Rt].get(v as usize).copied()
    }
    pub fn name(self) -> &'static str {
        Dimension::Locks.variants()[self as usize]
    }
}

/// The kernel preemption model.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PreemptModel {
    /// Only explicit `cond_resched` points in long loops, and blocking.
    None = 0,
    /// `none`, plus `might_resched` points before every lock acquisition.
    Voluntary = 1,
    /// Any preemptible point: `preempt_enable` and interrupt return.
    Full = 2,
}

/// Where device interrupt handlers run.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IrqMode {
    /// In hard-IRQ context, interrupts masked.
    Hard = 0,
    /// In a per-CPU handler thread at a set priority; the hard part only
    /// acknowledges and wakes it.
    Threaded = 1,
}

/// What an idle CPU does (`guest/src/logic/idle.rs` has the policies).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdleMode {
    /// Poll for an adaptive window, halt with the timer programmed early,
    /// poll the rest (Linux's `cpuidle-haltpoll`).
    Haltpoll = 0,
    /// Halt in the shim at once: the cheapest for the host, the slowest
    /// wake-up.
    Halt = 1,
    /// Poll at CPL3 for ever: a host core per vCPU.
    Poll = 2,
}

impl IdleMode {
    pub fn from_u32(v: u32) -> Option<Self> {
        [Self::Haltpoll, Self::Halt, Self::Poll].get(v as usize).copied()
    }
    pub fn name(self) -> &'static str {
        Dimension::Idle.variants()[self as usize]
    }
}

/// One switchable dimension of the kernel.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dimension {
    Locks = 0,
    Preempt = 1,
    Irq = 2,
    Idle = 3,
}

impl Dimension {
    pub const ALL: [Dimension; 4] = [Dimension::Locks, Dimension::Preempt, Dimension::Irq, Dimension::Idle];
    /// The most variants any dimension has.
    pub const MAX_VARIANTS: usize = 3;

    /// The key in a profile's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::Locks => "locks",
            Dimension::Preempt => "preempt",
            Dimension::Irq => "irq",
            Dimension::Idle => "idle",
        }
    }

    /// The names of its variants, by variant number.
    pub fn variants(self) -> &'static [&'static str] {
        match self {
            Dimension::Locks => &["mainline", "rt"],
            Dimension::Preempt => &["none", "voluntary", "full"],
            Dimension::Irq => &["hard", "threaded"],
            Dimension::Idle => &["haltpoll", "halt", "poll"],
        }
    }

    /// Whether call sites select its variant. The idle policy has none:
    /// the idle loop reads it from the mode.
    pub const fn has_sites(self) -> bool {
        !matches!(self, Dimension::Idle)
    }

    /// Bit position of its field in [`Profile::code`].
    const fn shift(self) -> u32 {
        4 * self as u32
    }
}

impl PreemptModel {
    pub fn from_u32(v: u32) -> Option<Self> {
        [Self::None, Self::Voluntary, Self::Full].get(v as usize).copied()
    }
    pub fn name(self) -> &'static str {
        Dimension::Preempt.variants()[self as usize]
    }
}

impl IrqMode {
    pub fn from_u32(v: u32) -> Option<Self> {
        [Self::Hard, Self::Threaded].get(v as usize).copied()
    }
    pub fn name(self) -> &'static str {
        Dimension::Irq.variants()[self as usize]
    }
}

/// The kernel's mode over the four dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Profile {
    pub locks: LockMode,
    pub preempt: PreemptModel,
    pub irq: IrqMode,
    pub idle: IdleMode,
}

/// The names of all 36 profiles, by [`Profile::index`]: the twelve lock,
/// preemption and interrupt combinations idling with `haltpoll`, then the
/// same twelve with `,idle=halt`, then with `,idle=poll`.
macro_rules! names {
    ($($base:literal),* $(,)?) => {
        [$($base,)* $(concat!($base, ",idle=halt"),)* $(concat!($base, ",idle=poll"),)*]
    };
}
const NAMES: [&str; 36] = names!(
    "locks=mainline,preempt=none,irq=hard",
    "locks=mainline,preempt=none,irq=threaded",
    "mainline",
    "locks=mainline,preempt=voluntary,irq=threaded",
    "locks=mainline,preempt=full,irq=hard",
    "locks=mainline,preempt=full,irq=threaded",
    "locks=rt,preempt=none,irq=hard",
    "locks=rt,preempt=none,irq=threaded",
    "locks=rt,preempt=voluntary,irq=hard",
    "locks=rt,preempt=voluntary,irq=threaded",
    "locks=rt,preempt=full,irq=hard",
    "rt",
);

/// Why a profile's spelling was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProfileParseError {
    /// An item without `=` that is not a profile name.
    UnknownName,
    /// A key that is not a dimension.
    UnknownKey,
    /// A value that is not a variant of its dimension.
    UnknownValue(Dimension),
    /// The same dimension twice.
    Repeated(Dimension),
    /// Nothing given.
    Empty,
}

impl Profile {
    /// Mainline locks, voluntary preemption, hard-IRQ handlers.
    pub const MAINLINE: Profile = Profile {
        locks: LockMode::Mainline,
        preempt: PreemptModel::Voluntary,
        irq: IrqMode::Hard,
        idle: IdleMode::Haltpoll,
    };
    /// rtmutexes, full preemption, threaded handlers.
    pub const RT: Profile =
        Profile { locks: LockMode::Rt, preempt: PreemptModel::Full, irq: IrqMode::Threaded, idle: IdleMode::Haltpoll };

    /// Every profile, in [`Profile::index`] order.
    pub fn all() -> impl DoubleEndedIterator<Item = Profile> {
        (0..NAMES.len()).filter_map(Profile::from_index)
    }

    fn from_index(i: usize) -> Option<Profile> {
        let idle = IdleMode::from_u32((i / 12) as u32)?;
        let locks = LockMode::from_u32(((i / 6) % 2) as u32)?;
        let preempt = PreemptModel::from_u32(((i / 2) % 3) as u32)?;
        let irq = IrqMode::from_u32((i % 2) as u32)?;
        Some(Profile { locks, preempt, irq, idle })
    }

    fn index(self) -> usize {
        self.idle as usize * 12 + self.locks as usize * 6 + self.preempt as usize * 2 + self.irq as usize
    }

    /// The ABI encoding.
    pub const fn code(self) -> u32 {
        (self.locks as u32) << Dimension::Locks.shift()
            | (self.preempt as u32) << Dimension::Preempt.shift()
            | (self.irq as u32) << Dimension::Irq.shift()
            | (self.idle as u32) << Dimension::Idle.shift()
    }

    /// Decodes [`Profile::code`]; `None` for any other value.
    pub fn from_u32(v: u32) -> Option<Self> {
        let field = |d: Dimension| (v >> d.shift()) & 0xf;
        if v >> 16 != 0 {
            return None;
        }
        Some(Profile {
            locks: LockMode::from_u32(field(Dimension::Locks))?,
            preempt: PreemptModel::from_u32(field(Dimension::Preempt))?,
            irq: IrqMode::from_u32(field(Dimension::Irq))?,
            idle: IdleMode::from_u32(field(Dimension::Idle))?,
        })
    }

    /// `mainline`, `rt`, or `locks=..,preempt=..,irq=..`, each followed by
    /// `,idle=..` unless the policy is `haltpoll`.
    pub fn name(self) -> &'static str {
        NAMES[self.index()]
    }

    /// The variant number of dimension `d`.
    pub fn variant(self, d: Dimension) -> usize {
        match d {
            Dimension::Locks => self.locks as usize,
            Dimension::Preempt => self.preempt as usize,
            Dimension::Irq => self.irq as usize,
            Dimension::Idle => self.idle as usize,
        }
    }

    /// This profile with dimension `d` set to variant `v`; `None` if `v`
    /// is out of range.
    pub fn with_variant(self, d: Dimension, v: usize) -> Option<Self> {
        let v = u32::try_from(v).ok()?;
        let mut p = self;
        match d {
            Dimension::Locks => p.locks = LockMode::from_u32(v)?,
            Dimension::Preempt => p.preempt = PreemptModel::from_u32(v)?,
            Dimension::Irq => p.irq = IrqMode::from_u32(v)?,
            Dimension::Idle => p.idle = IdleMode::from_u32(v)?,
        }
        Some(p)
    }

    /// The dimensions in which `self` and `other` differ.
    pub fn differs(self, other: Profile) -> impl Iterator<Item = Dimension> {
        Dimension::ALL.into_iter().filter(move |&d| self.variant(d) != other.variant(d))
    }

    /// Parses comma-separated items: optionally first a named profile
    /// (`mainline` or `rt`), then `key=value` items
    /// (`locks=rt,preempt=full,irq=threaded`, `rt,idle=poll`); a
    /// dimension left out takes the named profile's variant, or
    /// `mainline`'s. Returns the refused item with the error.
    pub fn parse(s: &str) -> Result<Profile, (ProfileParseError, &str)> {
        let s = s.trim();
        if s.is_empty() {
            return Err((ProfileParseError::Empty, s));
        }
        let mut items = s.split(',').map(str::trim).peekable();
        let mut p = match items.peek() {
            Some(&"mainline") => Profile::MAINLINE,
            Some(&"rt") => Profile::RT,
            _ => Profile::MAINLINE,
        };
        if matches!(items.peek(), Some(&"mainline" | &"rt")) {
            items.next();
        }
        let mut seen = [false; Dimension::ALL.len()];
        for item in items {
            let Some((key, value)) = item.split_once('=') else {
                return Err((ProfileParseError::UnknownName, item));
            };
            let d = Dimension::ALL
                .into_iter()
                .find(|d| d.name() == key.trim())
                .ok_or((ProfileParseError::UnknownKey, item))?;
            if core::mem::replace(&mut seen[d as usize], true) {
                return Err((ProfileParseError::Repeated(d), item));
            }
            let v = d
                .variants()
                .iter()
                .position(|&n| n == value.trim())
                .ok_or((ProfileParseError::UnknownValue(d), item))?;
            p = p.with_variant(d, v).ok_or((ProfileParseError::UnknownValue(d), item))?;
        }
        Ok(p)
    }
}

impl core::fmt::Display for Profile {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

impl core::fmt::Display for ProfileParseError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProfileParseError::UnknownName => {
                f.write_str("not a profile: use mainline, rt, or locks=..,preempt=..,irq=..,idle=.. (a named profile may come first: rt,idle=poll)")
            }
            ProfileParseError::UnknownKey => {
                f.write_str("unknown dimension: the keys are locks, preempt, irq and idle")
            }
            ProfileParseError::UnknownValue(d) => {
                write!(f, "{} is one of ", d.name())?;
                for (i, v) in d.variants().iter().enumerate() {
                    write!(f, "{}{v}", if i == 0 { "" } else { ", " })?;
                }
                Ok(())
            }
            ProfileParseError::Repeated(d) => write!(f, "{} is given twice", d.name()),
            ProfileParseError::Empty => f.write_str("empty profile"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_reject_the_rest() {
        let mut n = 0;
        for p in Profile::all() {
            assert_eq!(Profile::from_u32(p.code()), Some(p));
            assert_eq!(Profile::parse(p.name()).map_err(|e| e.0), Ok(p));
            n += 1;
        }
        assert_eq!(n, 36);
        // The codes from before the idle dimension keep their meaning.
        assert_eq!(Profile::MAINLINE.code(), 0x010);
        assert_eq!(Profile::RT.code(), 0x121);
        for bad in [3u32, 0x30, 0x200, 0x3000, 0x1_0000, 0xffff_ffff] {
            assert_eq!(Profile::from_u32(bad), None, "{bad:#x}");
        }
    }

    #[test]
    fn names_are_distinct_and_the_named_profiles_match_their_names() {
        let mut names: std::vec::Vec<&str> = Profile::all().map(Profile::name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 36);
        assert_eq!(Profile::MAINLINE.name(), "mainline");
        assert_eq!(Profile::RT.name(), "rt");
        // An independent spelling of every name.
        for p in Profile::all() {
            let base = Profile { idle: IdleMode::Haltpoll, ..p };
            let mut expect = if base == Profile::MAINLINE {
                "mainline".to_string()
            } else if base == Profile::RT {
                "rt".to_string()
            } else {
                format!("locks={},preempt={},irq={}", p.locks.name(), p.preempt.name(), p.irq.name())
            };
            if p.idle != IdleMode::Haltpoll {
                expect += &format!(",idle={}", p.idle.name());
            }
            assert_eq!(p.name(), expect);
        }
    }

    #[test]
    fn spellings_parse_with_mainline_defaults() {
        assert_eq!(Profile::parse("rt").map_err(|e| e.0), Ok(Profile::RT));
        assert_eq!(Profile::parse("locks=rt,preempt=full,irq=threaded").map_err(|e| e.0), Ok(Profile::RT));
        let p = Profile::parse(" preempt = full ").map_err(|e| e.0).unwrap();
        assert_eq!(p, Profile { preempt: PreemptModel::Full, ..Profile::MAINLINE });
        assert_eq!(Profile::parse("locks=mainline,preempt=voluntary,irq=hard").map_err(|e| e.0), Ok(Profile::MAINLINE));
        assert_eq!(Profile::parse("fast"), Err((ProfileParseError::UnknownName, "fast")));
        assert_eq!(Profile::parse("lock=rt"), Err((ProfileParseError::UnknownKey, "lock=rt")));
        assert_eq!(
            Profile::parse("preempt=rt"),
            Err((ProfileParseError::UnknownValue(Dimension::Preempt), "preempt=rt"))
        );
        assert_eq!(
            Profile::parse("irq=hard,irq=threaded"),
            Err((ProfileParseError::Repeated(Dimension::Irq), "irq=threaded"))
        );
        assert_eq!(Profile::parse(""), Err((ProfileParseError::Empty, "")));
        // A named profile first, changed by the items after it.
        assert_eq!(
            Profile::parse("rt,idle=poll").map_err(|e| e.0),
            Ok(Profile { idle: IdleMode::Poll, ..Profile::RT })
        );
        assert_eq!(
            Profile::parse("rt, locks=mainline").map_err(|e| e.0),
            Ok(Profile { locks: LockMode::Mainline, ..Profile::RT })
        );
        assert_eq!(
            Profile::parse("idle=halt").map_err(|e| e.0),
            Ok(Profile { idle: IdleMode::Halt, ..Profile::MAINLINE })
        );
        assert_eq!(Profile::parse("rt,rt"), Err((ProfileParseError::UnknownName, "rt")));
        assert_eq!(Profile::parse("idle=poll,rt"), Err((ProfileParseError::UnknownName, "rt")));
        assert_eq!(
            Profile::parse("rt,idle=poll,idle=halt"),
            Err((ProfileParseError::Repeated(Dimension::Idle), "idle=halt"))
        );
        assert_eq!(Profile::parse("rt,"), Err((ProfileParseError::UnknownName, "")));
        let msg = ProfileParseError::UnknownValue(Dimension::Preempt).to_string();
        assert_eq!(msg, "preempt is one of none, voluntary, full");
    }

    #[test]
    fn differs_names_the_dimensions() {
        let d: std::vec::Vec<Dimension> = Profile::MAINLINE.differs(Profile::RT).collect();
        assert_eq!(d, [Dimension::Locks, Dimension::Preempt, Dimension::Irq]);
        let poll = Profile { idle: IdleMode::Poll, ..Profile::RT };
        assert_eq!(Profile::RT.differs(poll).collect::<std::vec::Vec<_>>(), [Dimension::Idle]);
        let p = Profile { irq: IrqMode::Threaded, ..Profile::MAINLINE };
        assert_eq!(Profile::MAINLINE.differs(p).collect::<std::vec::Vec<_>>(), [Dimension::Irq]);
    }
}
