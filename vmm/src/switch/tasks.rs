//! The switch's checks of the guest's tasks and vCPUs, with every vCPU
//! held, beside the lock words (`locks`):
//! - no task is counted frozen unless it is asleep: each task of the task
//!   directory marked frozen is Blocked and off its CPU (its stack not in
//!   use; `switcher::abi::task_word`). Only the thaw wakes a frozen task,
//!   and it comes after the patch, so a frozen task that runs is one the
//!   census should not have counted (a thawed one, on its way back into
//!   a lock call site). A task the census counted asleep may have been
//!   woken since (a timer): it runs no lock code before a safe point,
//!   where it freezes, so it is no error to find it running;
//! - no held vCPU stopped inside switchable code: a call site's five
//!   bytes, or an implementation function (from the guest ELF's symbols:
//!   `SiteTable::switchable_code_at`). Exempt tasks run through a switch,
//!   and a vCPU stopped in an interrupt's dispatch implementation is no
//!   error: the caller lets the vCPUs run a little and holds them again
//!   ([`rips`] says which one stopped where).
//!
//! These are the VMM's own reading of the truth; the guest's census is the
//! proof (model-checked in `model/`), these catch a census that lies.
//! Everything read is guest input: bounds-checked, a directory entry that
//! points outside guest memory is an error naming the slot, never a crash.

use switcher::abi::task_word;
use switcher::patch::{SiteTable, SwitchableCode};
use vm_memory::{Bytes, GuestAddress};

use crate::vstate::memory::{self, GuestMemory};

/// Why the tasks forbid the patch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TaskCheckError {
    #[error("task directory slot {slot} ('{name}') points outside guest memory ({addr:#x})")]
    BadAddress { slot: usize, name: String, addr: u64 },
    #[error("task '{name}' is marked frozen but {how}")]
    FrozenNotAsleep { name: String, how: &'static str },
}

impl TaskCheckError {
    /// A task marked frozen that was awake at this hold (not a bad
    /// directory entry): another hold may find it asleep.
    pub fn is_awake(&self) -> bool {
        matches!(self, Self::FrozenNotAsleep { .. })
    }
}

/// Where a held vCPU stopped in switchable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InSwitchableCode {
    pub cpu: u32,
    pub rip: u64,
    pub code: SwitchableCode,
}

impl std::fmt::Display for InSwitchableCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "vCPU {} stopped at {:#x}, inside {}", self.cpu, self.rip, self.code)
    }
}

/// Checks every spawned task marked frozen is asleep; `Ok(n)` with the
/// number of frozen tasks.
pub fn check(mem: &GuestMemory) -> Result<usize, TaskCheckError> {
    let mut checked = 0;
    for (slot, entry) in memory::task_directory(mem).into_iter().enumerate().take(task_word::SPAWNED_SLOTS) {
        if entry.addr == 0 {
            continue;
        }
        let bad = || TaskCheckError::BadAddress { slot, name: crate::guest_text::name(&entry.name), addr: entry.addr };
        let mut words = [0u8; task_word::LEN];
        mem.read_slice(&mut words, GuestAddress(entry.addr)).map_err(|_| bad())?;
        let state = u32::from(words[task_word::STATE as usize]);
        let on_cpu = words[task_word::ON_CPU as usize] != 0;
        let frozen = words[task_word::FROZEN as usize] != 0;
        let exempt = words[task_word::NOFREEZE as usize] != 0;
        let live = state == task_word::RUNNABLE || state == task_word::BLOCKED;
        if !live || exempt || !frozen {
            continue;
        }
        checked += 1;
        let how = match (state == task_word::BLOCKED, on_cpu) {
            (true, false) => continue,
            (true, true) => "still on its CPU",
            (false, true) => "running",
            (false, false) => "runnable",
        };
        return Err(TaskCheckError::FrozenNotAsleep { name: crate::guest_text::name(&entry.name), how });
    }
    Ok(checked)
}

/// The held vCPUs (`(cpu, rip)`) that stopped inside switchable code.
pub fn rips(sites: &SiteTable, held: &[(u32, u64)]) -> Vec<InSwitchableCode> {
    held.iter()
        .filter_map(|&(cpu, rip)| sites.switchable_code_at(rip).map(|code| InSwitchableCode { cpu, rip, code }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::{Abi, create};
    use switcher::abi::ABI_NAME_LEN;
    use switcher::abi::{self, TaskName};

    /// A task's directory entry and first words: `flags` = (on_cpu,
    /// frozen, exempt).
    fn task(mem: &GuestMemory, slot: usize, addr: u64, n: &str, state: u32, flags: (bool, bool, bool)) {
        let (on_cpu, frozen, exempt) = flags;
        let mut name = [0u8; ABI_NAME_LEN];
        name[..n.len()].copy_from_slice(n.as_bytes());
        let at = abi::TASK_NAMES_ADDR + (slot * std::mem::size_of::<TaskName>()) as u64;
        mem.write_obj(Abi(TaskName { addr, name }), GuestAddress(at)).unwrap();
        let mut words = [0u8; task_word::LEN];
        words[task_word::STATE as usize] = state as u8;
        words[1] = 7; // the generation's low byte: ignored
        words[task_word::ON_CPU as usize] = u8::from(on_cpu);
        words[task_word::FROZEN as usize] = u8::from(frozen);
        words[task_word::NOFREEZE as usize] = u8::from(exempt);
        mem.write_slice(&words, GuestAddress(addr)).unwrap();
    }

    #[test]
    fn frozen_tasks_asleep_pass_and_others_are_not_checked() {
        let mem = create(16 << 20).unwrap();
        task(&mem, 0, 0x20_0000, "woken", task_word::RUNNABLE, (true, false, false));
        task(&mem, 1, 0x20_1000, "frozen", task_word::BLOCKED, (false, true, false));
        task(&mem, 2, 0x20_2000, "measure", task_word::RUNNABLE, (true, false, true));
        task(&mem, 3, 0x20_3000, "dead", 4, (false, true, false));
        assert_eq!(check(&mem), Ok(1));
    }

    #[test]
    fn a_task_marked_frozen_but_runnable_is_refused() {
        let mem = create(16 << 20).unwrap();
        task(&mem, 0, 0x20_0000, "T", task_word::RUNNABLE, (false, true, false));
        assert_eq!(check(&mem).unwrap_err().to_string(), "task 'T' is marked frozen but runnable");
        task(&mem, 0, 0x20_0000, "T", task_word::BLOCKED, (true, true, false));
        assert!(check(&mem).unwrap_err().to_string().contains("still on its CPU"));
    }

    #[test]
    fn a_directory_entry_outside_memory_is_an_error() {
        let mem = create(16 << 20).unwrap();
        task(&mem, 0, 0x20_0000, "ok", task_word::BLOCKED, (false, true, false));
        let at = abi::TASK_NAMES_ADDR + std::mem::size_of::<TaskName>() as u64;
        mem.write_obj(Abi(TaskName { addr: 0xffff_ffff_0000, name: [b'x'; ABI_NAME_LEN] }), GuestAddress(at)).unwrap();
        assert!(matches!(check(&mem), Err(TaskCheckError::BadAddress { slot: 1, .. })));
    }
}
