//! Volatile access to the lock tester's page (`switcher::locktest::Page`
//! at `LOCKTEST_ADDR`; the protocol is drawn there): the VMM writes each
//! thread's command and signal counters, the tester threads their
//! results, events and lock states. Every access is one aligned volatile
//! load or store of a field (the VMM reads and writes the page at any
//! time); the guest writes only its own fields.

use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{Ordering, fence};

use switcher::locktest::{LOCKS, LOCKTEST_ADDR, MAGIC, Page, Slot, THREADS};

fn page() -> *mut Page {
    LOCKTEST_ADDR as *mut Page
}

fn slot(thread: usize) -> *mut Slot {
    assert!(thread < THREADS, "lock tester thread {thread} out of range");
    // SAFETY: LOCKTEST_ADDR is a page of guest memory reserved by the ABI
    // for this structure (identity mapped read-write); `thread` is in
    // range, so the field address is inside it.
    unsafe { addr_of_mut!((*page()).slots[thread]) }
}

/// Publishes the page: each lock's address, each thread's task and CPU;
/// the magic last.
pub fn publish(lock_addr: &[u64; LOCKS], tasks: &[(u64, u32); THREADS]) {
    // SAFETY: as in `slot`; the guest owns these fields, written once
    // here before the magic that makes the VMM read them.
    unsafe {
        addr_of_mut!((*page()).threads).write_volatile(THREADS as u32);
        addr_of_mut!((*page()).locks).write_volatile(LOCKS as u32);
        addr_of_mut!((*page()).lock_addr).write_volatile(*lock_addr);
        for (i, &(task, cpu)) in tasks.iter().enumerate() {
            addr_of_mut!((*slot(i)).task_addr).write_volatile(task);
            addr_of_mut!((*slot(i)).cpu).write_volatile(cpu);
        }
        fence(Ordering::Release);
        addr_of_mut!((*page()).magic).write_volatile(MAGIC);
    }
}

/// A thread's current command: `(cmd_seq, opcode, data)`. The sequence
/// number is read first: the VMM writes the opcode and data before it.
pub fn command(thread: usize) -> (u64, u32, i32) {
    let s = slot(thread);
    // SAFETY: as in `slot`: aligned fields of the ABI page.
    unsafe {
        let seq = addr_of!((*s).cmd_seq).read_volatile();
        fence(Ordering::Acquire);
        (seq, addr_of!((*s).opcode).read_volatile(), addr_of!((*s).data).read_volatile())
    }
}

/// The thread's signal counter (the VMM adds one per signal).
pub fn signal_seq(thread: usize) -> u64 {
    // SAFETY: as in `slot`.
    unsafe { addr_of!((*slot(thread)).signal_seq).read_volatile() }
}

/// rt-tester's "O" field: the running command's opcode, or the last result.
pub fn set_result(thread: usize, result: i64) {
    // SAFETY: as in `slot`; a guest-owned field of this thread.
    unsafe { addr_of_mut!((*slot(thread)).result).write_volatile(result) }
}

/// rt-tester's "E" field.
pub fn set_event(thread: usize, event: u64) {
    // SAFETY: as in `set_result`.
    unsafe { addr_of_mut!((*slot(thread)).event).write_volatile(event) }
}

/// rt-tester's "M" digit of `lock` (`switcher::locktest::mutex`).
pub fn set_mutex(thread: usize, lock: usize, state: u8) {
    assert!(lock < LOCKS, "lock tester lock {lock} out of range");
    // SAFETY: as in `set_result`; `lock` is in range.
    unsafe { addr_of_mut!((*slot(thread)).mutex[lock]).write_volatile(state) }
}

/// The command `seq` finished: its result first, then the sequence number
/// the VMM compares with its own.
pub fn set_done(thread: usize, seq: u64, result: i64) {
    set_result(thread, result);
    fence(Ordering::Release);
    // SAFETY: as in `set_result`.
    unsafe { addr_of_mut!((*slot(thread)).done_seq).write_volatile(seq) }
}
