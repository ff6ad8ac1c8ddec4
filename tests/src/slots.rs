//! The suite's limit on vCPUs running at once: a VM-booting test takes a
//! slot per vCPU (at most all of them) before it starts the VMM and gives
//! them back when the VMM has exited, so that the suite's own parallelism
//! (the tests of one binary run on parallel threads, binaries may run as
//! parallel processes under other runners) never puts more runnable vCPUs
//! on the host than it has CPUs, whatever `--test-threads` is.
//!
//! The slots are lock files, `<target>/rtswitch-vm-slots/slot-N`, one per
//! host CPU, held with `flock` (released by the kernel if the process
//! dies): shared by every test thread and process of the build. A take is
//! all or nothing (retried with a short pause), so two takers never hold
//! part of what each needs. A test that already holds slots on its thread
//! (one that runs a second VM beside its first) takes no more: it would
//! wait for itself.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

thread_local! {
    /// Slots the current thread holds (nested takes take none).
    static HELD: Cell<usize> = const { Cell::new(0) };
}

/// Slots taken; given back when dropped.
pub struct VmSlots {
    files: Vec<File>,
}

impl Drop for VmSlots {
    fn drop(&mut self) {
        // Closing the files releases their locks.
        let n = self.files.len();
        self.files.clear();
        HELD.with(|h| h.set(h.get().saturating_sub(n)));
    }
}

/// The host's CPUs: the number of slots.
pub fn capacity() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn dir() -> PathBuf {
    // current_exe: <target>/<profile>/deps/<test>-<hash>
    let exe = std::env::current_exe().expect("the test knows its own path");
    let target = exe.ancestors().nth(3).map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    target.join("rtswitch-vm-slots")
}

/// Takes slots for a VM of `vcpus` vCPUs (all of them when it has more),
/// waiting until they are free.
pub fn take(vcpus: usize) -> VmSlots {
    let cap = capacity();
    let need = if HELD.with(|h| h.get()) > 0 { 0 } else { vcpus.clamp(1, cap) };
    if need == 0 {
        return VmSlots { files: Vec::new() };
    }
    let dir = dir();
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let open = |i: usize| {
        let p = dir.join(format!("slot-{i}"));
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .unwrap_or_else(|e| panic!("cannot open the VM slot {}: {e}", p.display()))
    };
    loop {
        let mut got = Vec::with_capacity(need);
        for i in 0..cap {
            let f = open(i);
            // SAFETY: flock(2) on a descriptor this function owns.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                got.push(f);
                if got.len() == need {
                    HELD.with(|h| h.set(h.get() + need));
                    return VmSlots { files: got };
                }
            }
        }
        // Not all free: give back what was taken (dropping closes, which
        // unlocks) and try again shortly.
        drop(got);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The vCPUs an `rtswitch` command line boots: `run`'s `--vcpus` (default
/// 2), every host CPU for the tools that run VMs (`bench`, `stress`,
/// which overcommit on purpose in places), none for the others (`ctl`,
/// `--help`).
pub fn vcpus_of(args: &[&str]) -> usize {
    match args.first().copied() {
        Some("run" | "locktest") => {
            let given = args
                .iter()
                .position(|&a| a == "--vcpus")
                .and_then(|i| args.get(i + 1))
                .copied()
                .or_else(|| args.iter().find_map(|a| a.strip_prefix("--vcpus=")));
            given.and_then(|v| v.parse().ok()).unwrap_or(2)
        }
        Some("bench" | "stress") => capacity(),
        _ => 0,
    }
}

/// Takes the slots the command line `args` needs (none for one that boots
/// no VM).
pub fn take_for(args: &[&str]) -> Option<VmSlots> {
    match vcpus_of(args) {
        0 => None,
        n => Some(take(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines_say_their_vcpus() {
        assert_eq!(vcpus_of(&["run", "--vcpus", "1", "--duration", "2"]), 1);
        assert_eq!(vcpus_of(&["run", "--duration", "2"]), 2);
        assert_eq!(vcpus_of(&["run", "--vcpus=4"]), 4);
        assert_eq!(vcpus_of(&["ctl", "status"]), 0);
        assert_eq!(vcpus_of(&["locktest", "a.tst", "--profile", "rt"]), 2);
        assert_eq!(vcpus_of(&["locktest", "--vcpus", "1", "a.tst"]), 1);
        assert_eq!(vcpus_of(&["stress", "--duration", "2s"]), capacity());
    }

    #[test]
    fn a_take_waits_for_the_slots_and_a_nested_take_takes_none() {
        let all = take(capacity());
        let nested = take(1);
        assert!(nested.files.is_empty(), "a thread holding slots takes no more");
        drop(nested);
        let (tx, rx) = std::sync::mpsc::channel();
        let t = std::thread::spawn(move || {
            let s = take(1);
            tx.send(()).unwrap();
            drop(s);
        });
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "no slot is free while all are held");
        drop(all);
        rx.recv_timeout(Duration::from_secs(30)).expect("the slot was taken once given back");
        t.join().unwrap();
    }
}
