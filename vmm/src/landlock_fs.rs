//! The file-system half of the sandbox: a Landlock ruleset (the
//! `landlock` crate) that `rtswitch run` puts on itself before its vCPU
//! threads start (they inherit it), so that no thread can open, create,
//! read, write, rename or remove any file by name except what the run
//! needs at its end:
//!
//! - in the directory of each output file (`--json`, `--histogram`, ...,
//!   `outfile`): creating and removing a regular file, which is what
//!   renaming its temporary file over the target is to Landlock;
//! - in the control socket's directory: removing a file (the socket).
//!
//! Every access right the kernel knows is handled, so everything else is
//! denied: reading, writing, creating, executing anywhere. Files already
//! open (stdout, stderr, /dev/kvm, the temporary files) are not affected.
//! A compromised VMM can therefore rename or remove files within those
//! directories only (not in their subdirectories' parents, not elsewhere),
//! and with the seccomp filters only through the directory fds the run
//! opened (`seccomp`).
//!
//! Where the kernel has no Landlock (before Linux 5.13, or built
//! without it), or an older ABI, this is best effort: the ruleset enforces
//! what the kernel supports, the run goes on, and a debug line says how
//! much was enforced; the seccomp filters (no `openat`, renames and
//! removals only through those fds) still hold.

use std::os::fd::{BorrowedFd, RawFd};

use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, PathBeneath, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus,
};

#[derive(Debug, thiserror::Error)]
pub enum LandlockError {
    #[error("setting up the Landlock file rules failed: {0}; run with --seccomp off to go without the sandbox")]
    Ruleset(#[from] landlock::RulesetError),
}

/// How much of the ruleset the kernel enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforced {
    Fully,
    Partially,
    Not,
}

/// Restricts the calling thread (and the threads it starts from now on):
/// `output_dirs` may have a regular file created and removed in them,
/// `remove_dirs` a file removed; nothing else anywhere.
pub fn restrict(output_dirs: &[RawFd], remove_dirs: &[RawFd]) -> Result<Enforced, LandlockError> {
    let abi = ABI::V5;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))?
        .create()?;
    for &fd in output_dirs {
        // SAFETY: the fd is an open directory the caller keeps open for
        // the whole run; it is borrowed only for this call.
        let dir = unsafe { BorrowedFd::borrow_raw(fd) };
        ruleset = ruleset.add_rule(PathBeneath::new(dir, AccessFs::MakeReg | AccessFs::RemoveFile))?;
    }
    for &fd in remove_dirs {
        // SAFETY: as above.
        let dir = unsafe { BorrowedFd::borrow_raw(fd) };
        ruleset = ruleset.add_rule(PathBeneath::new(dir, AccessFs::RemoveFile))?;
    }
    let status = ruleset.restrict_self()?;
    Ok(match status.ruleset {
        RulesetStatus::FullyEnforced => Enforced::Fully,
        RulesetStatus::PartiallyEnforced => Enforced::Partially,
        RulesetStatus::NotEnforced => Enforced::Not,
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;

    use super::*;

    /// Landlock applies to the thread that restricts itself (and threads it
    /// starts later): a thread of its own keeps the test binary unconfined.
    #[test]
    fn only_the_outputs_rename_goes_through() {
        let outputs = tempfile::Builder::new().prefix("rtswitch-landlock-out-").tempdir().unwrap();
        let elsewhere = tempfile::Builder::new().prefix("rtswitch-landlock-else-").tempdir().unwrap();
        let victim = elsewhere.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let target = outputs.path().join("r.json");
        let (target2, victim2, elsewhere2) = (target.clone(), victim.clone(), elsewhere.path().to_path_buf());
        let result = std::thread::spawn(move || {
            // Opened before the rules, as the run does.
            let pending = crate::outfile::Pending::create(&target2).unwrap();
            let dir = std::fs::File::open(target2.parent().unwrap()).unwrap();
            let enforced = restrict(&[dir.as_raw_fd()], &[]).unwrap();
            let create = std::fs::write(elsewhere2.join("new"), "x");
            let overwrite = std::fs::write(&victim2, "gone");
            let read = std::fs::read_to_string(&victim2);
            let remove = std::fs::remove_file(&victim2);
            let commit = pending.commit(b"{}");
            (
                enforced,
                create.is_err(),
                overwrite.is_err(),
                read.is_err(),
                remove.is_err(),
                commit.map_err(|e| e.to_string()),
            )
        })
        .join()
        .unwrap();
        let (enforced, create, overwrite, read, remove, commit) = result.clone();
        if enforced == Enforced::Not {
            eprintln!("skipped: this kernel has no Landlock");
            return;
        }
        assert!(create && overwrite && read && remove, "a file outside the outputs was reached: {result:?}");
        assert_eq!(commit, Ok(()), "the output's rename is refused");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "{}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
    }
}
