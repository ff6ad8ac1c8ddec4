//! The lock tester's ABI: the page through which the VMM drives the
//! guest's lock-tester threads step by step (guest argument `locktest`),
//! as Linux's rt-mutex tester (`kernel/rtmutex-tester.c`, driven by
//! `scripts/rt-tester/`) drove its kernel threads through sysfs.
//!
//! ```text
//! LOCKTEST_ADDR: Page
//!   magic, threads, locks           guest, once, magic last
//!   lock_addr[LOCKS]                guest: each tester lock's LockCore
//!   slots[THREADS]: Slot
//!     cmd_seq, opcode, data         VMM: opcode and data, then cmd_seq + 1
//!     signal_seq                    VMM: + 1 per signal (then HOST_REQUEST)
//!     task_addr, cpu                guest, once: the thread's task
//!     done_seq                      guest: the last cmd_seq it finished
//!     result                        guest: the rt-tester "O" field
//!     event                         guest: the rt-tester "E" field
//!     mutex[LOCKS]                  guest: 0 unlocked, 1 in lock code, 4 held
//! ```
//!
//! The VMM posts a command by writing `opcode` and `data` and then
//! bumping `cmd_seq`, and interrupts CPU 0 with `HOST_REQUEST`, whose
//! handler wakes the tester threads; a thread runs each new command once
//! (`done_seq` catches up when it finished). While a command runs,
//! `result` is its opcode number; when it finished, its result (0, or a
//! negative errno as Linux's tester wrote it). "Blocked" (rt-tester's
//! state 2) is not published by the thread (it is asleep): the VMM reads
//! it from the thread's task (`abi::task_word`), as it reads the effective
//! and normal priorities there.
//!
//! Priorities: the guest's task priorities are 1..=99, higher runs first.
//! SCHED_OTHER (one level, nice 0) is guest priority 1; SCHED_FIFO `n`
//! (1..=98) is guest priority `n + 1`. The priorities reported are
//! Linux's `99 - prio` as rt-tester's "P" and "N" fields show them: the
//! FIFO priority itself, and -21 for SCHED_OTHER at nice 0.

/// Where the page lives (guest-physical, identity mapped).
pub const LOCKTEST_ADDR: u64 = 0xa000;
/// Tester threads (rt-tester's `MAX_RT_TEST_THREADS`).
pub const THREADS: usize = 8;
/// Tester locks (rt-tester's `MAX_RT_TEST_MUTEXES`).
pub const LOCKS: usize = 8;
/// `Page::magic` once the guest published the page.
pub const MAGIC: u64 = 0x7274_6c6f_636b_7465; // "rtlockte"

/// One tester thread's slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    pub cmd_seq: u64,
    pub opcode: u32,
    pub data: i32,
    pub signal_seq: u64,
    pub task_addr: u64,
    pub cpu: u32,
    pub _pad: u32,
    pub done_seq: u64,
    pub result: i64,
    pub event: u64,
    pub mutex: [u8; LOCKS],
}

/// The whole page.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub magic: u64,
    pub threads: u32,
    pub locks: u32,
    pub lock_addr: [u64; LOCKS],
    pub slots: [Slot; THREADS],
}

const _: () = {
    assert!(core::mem::size_of::<Slot>() == 72);
    assert!(core::mem::size_of::<Page>() <= 4096);
};

/// Byte offsets inside the page, for writes of single fields.
pub mod offset {
    use super::{Page, Slot};
    pub const SLOTS: u64 = core::mem::offset_of!(Page, slots) as u64;
    pub const SLOT_SIZE: u64 = core::mem::size_of::<Slot>() as u64;
    pub const CMD_SEQ: u64 = core::mem::offset_of!(Slot, cmd_seq) as u64;
    pub const OPCODE: u64 = core::mem::offset_of!(Slot, opcode) as u64;
    pub const DATA: u64 = core::mem::offset_of!(Slot, data) as u64;
    pub const SIGNAL_SEQ: u64 = core::mem::offset_of!(Slot, signal_seq) as u64;
}

/// `Slot::mutex` values (rt-tester's "M" digits).
pub mod mutex {
    pub const UNLOCKED: u8 = 0;
    /// Inside the lock operation, not (yet) queued: rt-tester's "trylock".
    pub const LOCKING: u8 = 1;
    /// Queued for the lock (rt) or spinning for it (mainline): derived by
    /// the VMM from the task, never written by the guest.
    pub const BLOCKED: u8 = 2;
    pub const LOCKED: u8 = 4;
}

/// Errno values the results use (negated), as Linux's.
pub mod errno {
    pub const EINTR: i64 = 4;
    pub const EBUSY: i64 = 16;
    pub const EINVAL: i64 = 22;
    pub const EDEADLK: i64 = 35;
}

/// A command, numbered as rt-tester numbered them (`enum test_opcodes`);
/// [`Opcode::WakeDelay`] is rtswitch's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Opcode {
    /// `data`: nice value (only 0: the guest has one SCHED_OTHER level).
    SchedOther = 1,
    /// `data`: FIFO priority 1..=98.
    SchedFifo = 2,
    /// `data`: lock 0..=7.
    Lock = 3,
    LockNoWait = 4,
    LockInt = 5,
    LockIntNoWait = 6,
    Unlock = 8,
    /// To the blocked thread itself; the VMM delivers it (`signal_seq`).
    Signal = 11,
    ResetEvent = 98,
    Reset = 99,
    /// rtswitch's own: `data` ms that this thread, once woken as the top
    /// waiter of an ownerless lock, stays busy before it takes the lock
    /// (0..=5000; fault injection that opens the hand-off window).
    WakeDelay = 200,
}

impl Opcode {
    pub const ALL: [Opcode; 11] = [
        Opcode::SchedOther,
        Opcode::SchedFifo,
        Opcode::Lock,
        Opcode::LockNoWait,
        Opcode::LockInt,
        Opcode::LockIntNoWait,
        Opcode::Unlock,
        Opcode::Signal,
        Opcode::ResetEvent,
        Opcode::Reset,
        Opcode::WakeDelay,
    ];

    pub fn from_u32(v: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|o| *o as u32 == v)
    }

    /// The name scenarios use.
    pub fn name(self) -> &'static str {
        match self {
            Opcode::SchedOther => "schedother",
            Opcode::SchedFifo => "schedfifo",
            Opcode::Lock => "lock",
            Opcode::LockNoWait => "locknowait",
            Opcode::LockInt => "lockint",
            Opcode::LockIntNoWait => "lockintnowait",
            Opcode::Unlock => "unlock",
            Opcode::Signal => "signal",
            Opcode::ResetEvent => "resetevent",
            Opcode::Reset => "reset",
            Opcode::WakeDelay => "wakedelay",
        }
    }

    /// A scenario's opcode name or number; `Err` says why not.
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if let Ok(n) = s.parse::<u32>() {
            return Self::from_u32(n).ok_or("no such rt-tester command number");
        }
        if let Some(o) = Self::ALL.iter().copied().find(|o| o.name() == s) {
            return Ok(o);
        }
        Err(match s {
            "lockcont" => {
                "lockcont belongs to the old pending-owner rtmutex (a woken waiter paused until told to go on); \
                 here a woken waiter takes the lock itself at once, so there is nothing to continue \
                 (rtswitch's `wakedelay` opens that window instead)"
            }
            "lockbkl" | "unlockbkl" => "the big kernel lock does not exist in this kernel",
            _ => "unknown command",
        })
    }

    /// Checks `data` for this command; `Err` says what is allowed.
    pub fn check_data(self, data: i64) -> Result<i32, &'static str> {
        let ok = match self {
            Opcode::SchedOther => data == 0,
            Opcode::SchedFifo => (1..=98).contains(&data),
            Opcode::Lock | Opcode::LockNoWait | Opcode::LockInt | Opcode::LockIntNoWait | Opcode::Unlock => {
                (0..LOCKS as i64).contains(&data)
            }
            Opcode::Signal | Opcode::ResetEvent | Opcode::Reset => true,
            Opcode::WakeDelay => (0..=5000).contains(&data),
        };
        if !ok {
            return Err(match self {
                Opcode::SchedOther => {
                    "schedother takes nice 0 only: the guest has one SCHED_OTHER level, so a nice value would order nothing"
                }
                Opcode::SchedFifo => {
                    "schedfifo takes a FIFO priority 1..98 (99 is above every tester priority the guest has: its \
                     priority 99 is FIFO 98)"
                }
                Opcode::WakeDelay => "wakedelay takes 0..5000 ms",
                _ => "the lock number must be 0..7",
            });
        }
        Ok(if matches!(self, Opcode::Signal | Opcode::ResetEvent | Opcode::Reset) { 0 } else { data as i32 })
    }

    /// Whether the command takes a lock (and may block).
    pub fn is_lock(self) -> bool {
        matches!(self, Opcode::Lock | Opcode::LockNoWait | Opcode::LockInt | Opcode::LockIntNoWait)
    }

    /// Whether a signal may interrupt its wait.
    pub fn interruptible(self) -> bool {
        matches!(self, Opcode::LockInt | Opcode::LockIntNoWait)
    }
}

/// Guest priority of SCHED_OTHER.
pub const GUEST_PRIO_OTHER: u8 = 1;
/// rt-tester's "P"/"N" value of SCHED_OTHER at nice 0 (`99 - 120`).
pub const LINUX_PRIO_OTHER: i32 = -21;

/// The guest priority of SCHED_FIFO `fifo` (1..=98).
pub fn guest_prio_of_fifo(fifo: i32) -> Option<u8> {
    (1..=98).contains(&fifo).then(|| (fifo + 1) as u8)
}

/// rt-tester's "P"/"N" value of guest priority `prio`.
pub fn linux_prio(prio: u8) -> i32 {
    if prio <= GUEST_PRIO_OTHER { LINUX_PRIO_OTHER } else { i32::from(prio) - 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_round_trip_by_name_and_number() {
        for o in Opcode::ALL {
            assert_eq!(Opcode::parse(o.name()), Ok(o));
            assert_eq!(Opcode::parse(&(o as u32).to_string()), Ok(o));
        }
        assert!(Opcode::parse("lockcont").unwrap_err().contains("pending-owner"));
        assert!(Opcode::parse("lockbkl").unwrap_err().contains("big kernel lock"));
        assert_eq!(Opcode::parse("7"), Err("no such rt-tester command number"));
        assert_eq!(Opcode::parse("frobnicate"), Err("unknown command"));
    }

    #[test]
    fn data_is_checked_per_command() {
        assert_eq!(Opcode::SchedFifo.check_data(80), Ok(80));
        assert!(Opcode::SchedFifo.check_data(99).is_err());
        assert!(Opcode::SchedFifo.check_data(0).is_err());
        assert!(Opcode::SchedOther.check_data(5).is_err());
        assert_eq!(Opcode::Lock.check_data(7), Ok(7));
        assert!(Opcode::Lock.check_data(8).is_err());
        assert!(Opcode::Unlock.check_data(-1).is_err());
        assert_eq!(Opcode::Reset.check_data(12345), Ok(0));
        assert!(Opcode::WakeDelay.check_data(5001).is_err());
    }

    #[test]
    fn priorities_map_as_linux_shows_them() {
        assert_eq!(guest_prio_of_fifo(80), Some(81));
        assert_eq!(linux_prio(81), 80);
        assert_eq!(linux_prio(GUEST_PRIO_OTHER), -21);
        assert_eq!(guest_prio_of_fifo(98), Some(99));
        assert_eq!(guest_prio_of_fifo(99), None);
        for f in 1..=98 {
            assert_eq!(linux_prio(guest_prio_of_fifo(f).unwrap()), f);
        }
    }
}
