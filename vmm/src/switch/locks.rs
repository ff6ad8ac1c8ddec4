//! The switch's last check at the lock words themselves: with every vCPU
//! held, every switchable lock the guest registered (`switcher::abi::
//! LockTable`) must be free in the current regime's layout (owner word 0,
//! no waiter list), and no task may be inside a lock's slow path (the
//! registry's count). Counters beside the locks are advisory; these words
//! are the truth. A busy lock is named, with the task its owner word points
//! at (from the guest's task directory).
//!
//! Everything here is guest input: the table's count and every address are
//! bounds-checked before a lock word is read, and a table that lies is a
//! refusal (nothing is patched), never a crash.

use std::fmt;

use switcher::abi::{self, ABI_MAGIC, LockRegistry, LockTable, lock_word};
use vm_memory::{Bytes, GuestAddress};

use crate::vstate::memory::{self, GuestMemory};

/// Why the lock words forbid the patch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockWordError {
    #[error("the guest's lock table is unreadable or not initialised")]
    NoTable,
    #[error("the guest's lock table claims {0} locks, more than its {max} entries", max = abi::LOCK_TABLE_CAPACITY)]
    TableCount(u32),
    #[error("lock table entry {index} ('{name}') points outside guest memory or is misaligned ({addr:#x})")]
    BadAddress { index: usize, name: String, addr: u64 },
    #[error("lock '{name}' is held by {owner} (owner word {word:#x})")]
    Held { name: String, owner: Owner, word: u64 },
    #[error("lock '{name}' has queued waiters (waiter list {list})")]
    Waiters { name: String, list: u16 },
    #[error("{0} task(s) are inside a switchable lock's slow path")]
    SlowPath(u64),
}

/// The task an owner word names, as far as the guest's task directory says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Task(String),
    /// No owner part: waiters queued, the top one woken to take it.
    Nobody,
    Unknown(u64),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::Task(n) => write!(f, "task '{n}'"),
            Owner::Nobody => write!(f, "no task (a woken waiter has yet to take it)"),
            Owner::Unknown(a) => write!(f, "an unknown task at {a:#x}"),
        }
    }
}

/// A lock or task name from guest memory, escaped (`guest_text`).
fn name(bytes: &[u8]) -> String {
    crate::guest_text::name(bytes)
}

/// The task whose address is `addr`, from the task directory.
fn owner_name(mem: &GuestMemory, addr: u64) -> Owner {
    if addr == 0 {
        return Owner::Nobody;
    }
    memory::task_directory(mem)
        .into_iter()
        .find(|t| t.addr == addr)
        .map_or(Owner::Unknown(addr), |t| Owner::Task(name(&t.name)))
}

/// The names of the registered locks whose owner word names the task at
/// `task_addr` (diagnostics: `--stop-above`); empty when the table is
/// unreadable. Bounds-checked like [`check`].
pub fn held_by(mem: &GuestMemory, task_addr: u64) -> Vec<String> {
    let Some(table) = memory::read_abi::<LockTable>(mem, abi::LOCK_TABLE_ADDR) else { return Vec::new() };
    if table.magic != ABI_MAGIC || task_addr == 0 {
        return Vec::new();
    }
    let count = (table.count as usize).min(abi::LOCK_TABLE_CAPACITY);
    table.entries[..count]
        .iter()
        .filter(|e| e.addr.is_multiple_of(8))
        .filter(|e| {
            mem.read_obj::<u64>(GuestAddress(e.addr.wrapping_add(lock_word::OWNER)))
                .is_ok_and(|w| w & !lock_word::HAS_WAITERS == task_addr)
        })
        .map(|e| name(&e.name))
        .collect()
}

/// Every registered lock that has an owner, with it (diagnostics: why a
/// freeze could not complete); empty when the table is unreadable.
/// Bounds-checked like [`check`].
pub fn held(mem: &GuestMemory) -> Vec<(String, Owner)> {
    let Some(table) = memory::read_abi::<LockTable>(mem, abi::LOCK_TABLE_ADDR) else { return Vec::new() };
    if table.magic != ABI_MAGIC {
        return Vec::new();
    }
    let count = (table.count as usize).min(abi::LOCK_TABLE_CAPACITY);
    table.entries[..count]
        .iter()
        .filter(|e| e.addr.is_multiple_of(8))
        .filter_map(|e| {
            let word = mem.read_obj::<u64>(GuestAddress(e.addr.wrapping_add(lock_word::OWNER))).ok()?;
            let owner = word & !lock_word::HAS_WAITERS;
            (owner != 0).then(|| (name(&e.name), owner_name(mem, owner)))
        })
        .collect()
}

/// Checks every registered lock word and the slow-path count; `Ok(n)` with
/// the number of locks checked.
pub fn check(mem: &GuestMemory) -> Result<usize, LockWordError> {
    let reg: LockRegistry = memory::read_abi(mem, abi::LOCK_REGISTRY_ADDR).ok_or(LockWordError::NoTable)?;
    if reg.slowpath != 0 {
        return Err(LockWordError::SlowPath(reg.slowpath));
    }
    let table: LockTable = memory::read_abi(mem, abi::LOCK_TABLE_ADDR).ok_or(LockWordError::NoTable)?;
    if table.magic != ABI_MAGIC {
        return Err(LockWordError::NoTable);
    }
    let count = table.count as usize;
    if count > abi::LOCK_TABLE_CAPACITY {
        return Err(LockWordError::TableCount(table.count));
    }
    for (index, e) in table.entries[..count].iter().enumerate() {
        let lock = name(&e.name);
        let bad = || LockWordError::BadAddress { index, name: lock.clone(), addr: e.addr };
        if !e.addr.is_multiple_of(8) {
            return Err(bad());
        }
        let word: u64 = mem.read_obj(GuestAddress(e.addr.wrapping_add(lock_word::OWNER))).map_err(|_| bad())?;
        let list: u16 = mem.read_obj(GuestAddress(e.addr.wrapping_add(lock_word::WAITERS))).map_err(|_| bad())?;
        if word & !lock_word::HAS_WAITERS != 0 {
            let owner = owner_name(mem, word & !lock_word::HAS_WAITERS);
            return Err(LockWordError::Held { name: lock, owner, word });
        }
        if word != 0 || list != 0 {
            if word != 0 && list == 0 {
                return Err(LockWordError::Held { name: lock, owner: Owner::Nobody, word });
            }
            return Err(LockWordError::Waiters { name: lock, list });
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::{Abi, create};
    use switcher::abi::TaskName;
    use switcher::abi::{ABI_NAME_LEN, LockEntry};

    fn entry(addr: u64, n: &str) -> LockEntry {
        let mut name = [0u8; ABI_NAME_LEN];
        name[..n.len()].copy_from_slice(n.as_bytes());
        LockEntry { addr, name }
    }

    fn setup(locks: &[(u64, &str)]) -> std::sync::Arc<GuestMemory> {
        let mem = create(16 << 20).unwrap();
        let mut reg = LockRegistry::zeroed();
        reg.magic = ABI_MAGIC;
        mem.write_obj(Abi(reg), GuestAddress(abi::LOCK_REGISTRY_ADDR)).unwrap();
        let mut t = LockTable {
            magic: ABI_MAGIC,
            count: locks.len() as u32,
            _reserved: 0,
            entries: [entry(0, ""); abi::LOCK_TABLE_CAPACITY],
        };
        for (i, (a, n)) in locks.iter().enumerate() {
            t.entries[i] = entry(*a, n);
        }
        mem.write_obj(Abi(t), GuestAddress(abi::LOCK_TABLE_ADDR)).unwrap();
        mem
    }

    #[test]
    fn free_locks_pass() {
        let mem = setup(&[(0x20_0000, "a"), (0x20_0040, "b")]);
        assert_eq!(check(&mem), Ok(2));
    }

    #[test]
    fn a_held_lock_is_named_with_its_owner() {
        let mem = setup(&[(0x20_0000, "load.1")]);
        let task = TaskName {
            addr: 0x30_0000,
            name: {
                let mut n = [0u8; ABI_NAME_LEN];
                n[..4].copy_from_slice(b"load");
                n
            },
        };
        mem.write_obj(Abi(task), GuestAddress(abi::TASK_NAMES_ADDR + 32 * 5)).unwrap();
        mem.write_obj(0x30_0000u64 | 1, GuestAddress(0x20_0000)).unwrap();
        let e = check(&mem).unwrap_err();
        assert_eq!(e.to_string(), "lock 'load.1' is held by task 'load' (owner word 0x300001)");
        mem.write_obj(0x40_0000u64, GuestAddress(0x20_0000)).unwrap();
        assert!(check(&mem).unwrap_err().to_string().contains("unknown task at 0x400000"));
        mem.write_obj(1u64, GuestAddress(0x20_0000)).unwrap();
        assert!(check(&mem).unwrap_err().to_string().contains("no task (a woken waiter"));
    }

    #[test]
    fn waiters_and_slow_paths_refuse() {
        let mem = setup(&[(0x20_0000, "x")]);
        mem.write_obj(3u16, GuestAddress(0x20_0008)).unwrap();
        assert_eq!(check(&mem), Err(LockWordError::Waiters { name: "x".into(), list: 3 }));
        let mem = setup(&[]);
        let mut reg = LockRegistry::zeroed();
        reg.magic = ABI_MAGIC;
        reg.slowpath = 1;
        mem.write_obj(Abi(reg), GuestAddress(abi::LOCK_REGISTRY_ADDR)).unwrap();
        assert_eq!(check(&mem), Err(LockWordError::SlowPath(1)));
    }

    #[test]
    fn a_lying_table_is_refused_not_trusted() {
        let mem = setup(&[(0x20_0003, "odd"), (1 << 40, "far")]);
        assert!(matches!(check(&mem), Err(LockWordError::BadAddress { index: 0, .. })));
        let mem = setup(&[(1 << 40, "far")]);
        assert!(matches!(check(&mem), Err(LockWordError::BadAddress { index: 0, .. })));
        let mut t: LockTable = memory::read_abi(&mem, abi::LOCK_TABLE_ADDR).unwrap();
        t.count = 10_000;
        mem.write_obj(Abi(t), GuestAddress(abi::LOCK_TABLE_ADDR)).unwrap();
        assert_eq!(check(&mem), Err(LockWordError::TableCount(10_000)));
    }
}
