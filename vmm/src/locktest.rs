//! The lock tester, VMM side (`x-locktest-command`, `x-locktest-state`):
//! posts commands and signals to the guest's lock-tester threads through
//! their page (`switcher::locktest`, where the protocol is) and reads
//! their state back, with what the threads do not publish themselves
//! (blocked or not, effective and normal priority) read from their tasks
//! (`switcher::abi::task_word`).
//!
//! Everything read from the page is the guest's word and checked: the
//! magic and the counts, every task address against the task directory's
//! own, every lock state digit against the values the ABI defines.

use serde_json::{Value, json};
use switcher::abi::task_word;
use switcher::locktest::{self, LOCKS, LOCKTEST_ADDR, Opcode, Page, THREADS, mutex, offset};
use vm_memory::{Bytes, GuestAddress};

use crate::vstate::memory::{self, GuestMemory};

/// Why a lock-tester request cannot be served.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LocktestError {
    #[error("the guest is not in lock-tester mode: boot it with --guest-arg locktest (or use `rtswitch locktest`)")]
    NotEnabled,
    #[error("the guest's lock-tester page is inconsistent ({0}); restart the VM")]
    BadPage(String),
    #[error("thread {0} does not exist: the lock tester has threads 0..{max}", max = THREADS - 1)]
    NoThread(u64),
    #[error(
        "thread {thread} is still running its last command ({opcode}); only signal may be sent to it now (wait \
         until its opcode field shows a result)"
    )]
    Busy { thread: usize, opcode: String },
    #[error("cannot write the lock-tester page: {0}")]
    Write(String),
}

fn read_page(mem: &GuestMemory) -> Result<Page, LocktestError> {
    let page = memory::read_abi::<Page>(mem, LOCKTEST_ADDR).ok_or(LocktestError::NotEnabled)?;
    if page.magic != locktest::MAGIC {
        return Err(LocktestError::NotEnabled);
    }
    if page.threads as usize != THREADS || page.locks as usize != LOCKS {
        return Err(LocktestError::BadPage(format!(
            "{} threads and {} locks, not {THREADS} and {LOCKS}",
            page.threads, page.locks
        )));
    }
    Ok(page)
}

fn slot_addr(thread: usize, field: u64) -> GuestAddress {
    GuestAddress(LOCKTEST_ADDR + offset::SLOTS + thread as u64 * offset::SLOT_SIZE + field)
}

fn thread_index(thread: u64) -> Result<usize, LocktestError> {
    usize::try_from(thread).ok().filter(|&t| t < THREADS).ok_or(LocktestError::NoThread(thread))
}

/// Posts `op` with `data` (already checked: `Opcode::check_data`) to
/// `thread`; a signal is posted to a busy thread too. The caller then
/// interrupts the guest (HOST_REQUEST) so that the threads look.
pub fn post(mem: &GuestMemory, thread: u64, op: Opcode, data: i32) -> Result<(), LocktestError> {
    let page = read_page(mem)?;
    let t = thread_index(thread)?;
    let slot = &page.slots[t];
    let write = |at: GuestAddress, r: Result<(), vm_memory::GuestMemoryError>| {
        r.map_err(|e| LocktestError::Write(format!("{e} at {:#x}", at.0)))
    };
    if op == Opcode::Signal {
        let at = slot_addr(t, offset::SIGNAL_SEQ);
        return write(at, mem.write_obj(slot.signal_seq.wrapping_add(1), at));
    }
    if slot.done_seq != slot.cmd_seq {
        return Err(LocktestError::Busy { thread: t, opcode: opcode_text(slot.opcode) });
    }
    let (op_at, data_at, seq_at) =
        (slot_addr(t, offset::OPCODE), slot_addr(t, offset::DATA), slot_addr(t, offset::CMD_SEQ));
    write(op_at, mem.write_obj(op as u32, op_at))?;
    write(data_at, mem.write_obj(data, data_at))?;
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    write(seq_at, mem.write_obj(slot.cmd_seq.wrapping_add(1), seq_at))
}

fn opcode_text(opcode: u32) -> String {
    Opcode::from_u32(opcode).map_or_else(|| format!("opcode {opcode}"), |o| o.name().to_string())
}

/// What the VMM reads of a tester thread's task.
struct TaskView {
    prio: u8,
    base_prio: u8,
    blocked_on: u64,
    in_slowpath: bool,
}

/// Every task address the task directory names (read once per state).
fn known_tasks(mem: &GuestMemory) -> Vec<u64> {
    memory::task_directory(mem).into_iter().map(|t| t.addr).filter(|&a| a != 0).collect()
}

/// Reads the task at `addr`, which must be one the task directory names
/// (`known`: a guest that wrote any other address into the page is not
/// believed).
fn read_task(mem: &GuestMemory, known: &[u64], addr: u64) -> Result<TaskView, LocktestError> {
    if !known.contains(&addr) {
        return Err(LocktestError::BadPage(format!("task address {addr:#x} is not in the task directory")));
    }
    let u8_at = |off: u64| mem.read_obj::<u8>(GuestAddress(addr.wrapping_add(off)));
    let bad = |e: vm_memory::GuestMemoryError| LocktestError::BadPage(format!("task at {addr:#x}: {e}"));
    Ok(TaskView {
        prio: u8_at(task_word::PRIO).map_err(bad)?,
        base_prio: u8_at(task_word::BASE_PRIO).map_err(bad)?,
        blocked_on: mem.read_obj::<u64>(GuestAddress(addr.wrapping_add(task_word::BLOCKED_ON))).map_err(bad)?,
        in_slowpath: u8_at(task_word::IN_SLOWPATH).map_err(bad)? != 0,
    })
}

/// Every thread's state, as rt-tester's fields (`O`, `E`, `P`, `N`, `M`)
/// and in words; `locks` is the lock dimension of the mode in force.
pub fn state(mem: &GuestMemory, locks: &str) -> Result<Value, LocktestError> {
    let page = read_page(mem)?;
    let known = known_tasks(mem);
    let mut threads = Vec::with_capacity(THREADS);
    for (i, slot) in page.slots.iter().enumerate() {
        let task = read_task(mem, &known, slot.task_addr)?;
        let blocked_on = page.lock_addr.iter().position(|&a| a == task.blocked_on && a != 0);
        let mut m = [0u8; LOCKS];
        for (l, (out, &digit)) in m.iter_mut().zip(&slot.mutex).enumerate() {
            *out = match digit {
                mutex::UNLOCKED | mutex::LOCKED => digit,
                // In the lock operation: queued (rt), or spinning in the
                // slow path (mainline), is "blocked".
                mutex::LOCKING if blocked_on == Some(l) || (task.in_slowpath && blocked_on.is_none()) => mutex::BLOCKED,
                mutex::LOCKING => mutex::LOCKING,
                other => {
                    return Err(LocktestError::BadPage(format!("thread {i} lock {l} state {other}")));
                }
            };
        }
        let busy = slot.done_seq != slot.cmd_seq;
        threads.push(json!({
            "thread": i,
            "cpu": slot.cpu,
            "busy": busy,
            // While a command is posted and not finished, O is its number
            // (the guest writes the same when it picks it up): never the
            // previous command's result.
            "opcode": if busy { i64::from(slot.opcode) } else { slot.result },
            "event": slot.event,
            "prio": locktest::linux_prio(task.prio),
            "normal_prio": locktest::linux_prio(task.base_prio),
            "mutex": m,
            "blocked_on": blocked_on,
        }));
    }
    Ok(json!({"locks": locks, "threads": threads}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vstate::memory::Abi;
    use switcher::abi::{self, TaskName};
    use switcher::locktest::Slot;

    const TASK: u64 = 0x20_0000;

    fn setup() -> std::sync::Arc<GuestMemory> {
        let mem = memory::create(8 << 20).unwrap();
        let mut page = Page {
            magic: locktest::MAGIC,
            threads: 8,
            locks: 8,
            lock_addr: [0; LOCKS],
            slots: [Slot::default(); THREADS],
        };
        for (i, a) in page.lock_addr.iter_mut().enumerate() {
            *a = 0x30_0000 + 64 * i as u64;
        }
        for (i, s) in page.slots.iter_mut().enumerate() {
            s.task_addr = TASK + 256 * i as u64;
            s.cpu = i as u32 % 2;
            let name = TaskName { addr: s.task_addr, name: [b'x'; abi::ABI_NAME_LEN] };
            mem.write_obj(Abi(name), GuestAddress(abi::TASK_NAMES_ADDR + 32 * i as u64)).unwrap();
            mem.write_obj(1u8, GuestAddress(s.task_addr + task_word::PRIO)).unwrap();
            mem.write_obj(1u8, GuestAddress(s.task_addr + task_word::BASE_PRIO)).unwrap();
        }
        mem.write_obj(Abi(page), GuestAddress(LOCKTEST_ADDR)).unwrap();
        mem
    }

    fn page(mem: &GuestMemory) -> Page {
        memory::read_abi::<Page>(mem, LOCKTEST_ADDR).unwrap()
    }

    #[test]
    fn without_the_page_the_tester_is_not_enabled() {
        let mem = memory::create(8 << 20).unwrap();
        assert_eq!(state(&mem, "rt").unwrap_err(), LocktestError::NotEnabled);
        assert_eq!(post(&mem, 0, Opcode::Lock, 0).unwrap_err(), LocktestError::NotEnabled);
    }

    #[test]
    fn a_command_is_posted_once_and_a_busy_thread_refuses_the_next() {
        let mem = setup();
        post(&mem, 3, Opcode::SchedFifo, 80).unwrap();
        let s = page(&mem).slots[3];
        assert_eq!((s.cmd_seq, s.opcode, s.data), (1, Opcode::SchedFifo as u32, 80));
        // Posted, not yet picked up: O is the command's number, not the
        // last result (0).
        assert_eq!(state(&mem, "rt").unwrap()["threads"][3]["opcode"], Opcode::SchedFifo as i64);
        let e = post(&mem, 3, Opcode::Lock, 0).unwrap_err();
        assert!(e.to_string().contains("still running its last command (schedfifo)"), "{e}");
        // A signal goes through while busy.
        post(&mem, 3, Opcode::Signal, 0).unwrap();
        assert_eq!(page(&mem).slots[3].signal_seq, 1);
        assert_eq!(post(&mem, 8, Opcode::Lock, 0).unwrap_err(), LocktestError::NoThread(8));
    }

    #[test]
    fn state_reads_priorities_and_blocked_from_the_task() {
        let mem = setup();
        let t = TASK + 256 * 2;
        mem.write_obj(81u8, GuestAddress(t + task_word::PRIO)).unwrap();
        mem.write_obj(0x30_0000u64 + 64, GuestAddress(t + task_word::BLOCKED_ON)).unwrap();
        let at = LOCKTEST_ADDR + offset::SLOTS + 2 * offset::SLOT_SIZE + std::mem::offset_of!(Slot, mutex) as u64;
        mem.write_obj([0u8, mutex::LOCKING, 0, mutex::LOCKED, 0, 0, 0, 0], GuestAddress(at)).unwrap();
        let v = state(&mem, "rt").unwrap();
        let t2 = &v["threads"][2];
        assert_eq!(t2["prio"], 80);
        assert_eq!(t2["normal_prio"], -21);
        assert_eq!(t2["mutex"], json!([0, 2, 0, 4, 0, 0, 0, 0]));
        assert_eq!(t2["blocked_on"], 1);
        assert_eq!(v["threads"][0]["blocked_on"], Value::Null);
    }

    #[test]
    fn a_task_address_outside_the_directory_or_a_bad_digit_is_refused() {
        let mem = setup();
        let at = LOCKTEST_ADDR + offset::SLOTS + std::mem::offset_of!(Slot, task_addr) as u64;
        mem.write_obj(0x7777_0000u64, GuestAddress(at)).unwrap();
        assert!(matches!(state(&mem, "rt"), Err(LocktestError::BadPage(_))));
        let mem = setup();
        let at = LOCKTEST_ADDR + offset::SLOTS + std::mem::offset_of!(Slot, mutex) as u64;
        mem.write_obj(9u8, GuestAddress(at)).unwrap();
        let e = state(&mem, "rt").unwrap_err();
        assert!(e.to_string().contains("thread 0 lock 0 state 9"), "{e}");
    }
}
