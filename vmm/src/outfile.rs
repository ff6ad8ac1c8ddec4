//! Output files, written so that nobody else's file is ever touched:
//! through a temporary file created beside the target, then renamed over
//! it (docs/reports.md).
//!
//! - The temporary file is created in the target's directory (held open
//!   as a directory fd from then on) with `O_CREAT|O_EXCL|O_NOFOLLOW`: it
//!   is a new inode of ours, never a file or a symlink planted there. Its
//!   name is `.NAME.rtswitch-PID-N.tmp`.
//! - [`Pending::commit`] writes the text, `fsync`s it, and `renameat`s it
//!   over the target in the same directory (atomic: a reader sees the old
//!   file or the new one; a symlink at the target is replaced, never
//!   followed), then `fsync`s the directory.
//! - A file never committed is removed (`unlinkat` of its temporary name).
//!
//! `rtswitch run` opens every output before its sandbox goes in
//! ([`prepare`], from the pre-boot path check), because the control
//! thread may open no file after that; the end of the run commits the
//! prepared files ([`write`]) and removes the rest ([`discard_all`]).
//! After [`seal`] (the sandbox is in) a file not prepared cannot be
//! written: [`write`] says so instead of trying. The sandbox lets the
//! control thread rename and remove only through the directory fds of the
//! prepared files ([`dir_fds`]). The tools (bench, stress), which run no
//! guest, write the same way at once ([`write_atomic`]).
//!
//! A run that ends abnormally (the seccomp exit, a forced exit) can leave
//! its temporary files behind; their names say whose they are.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// A file being written: its temporary file, open, in its directory.
pub struct Pending {
    path: PathBuf,
    dir: OwnedFd,
    tmp: CString,
    name: CString,
    file: Option<File>,
}

/// Temporary names made by this process (with the pid, unique).
static SERIAL: AtomicU64 = AtomicU64::new(0);

fn cstr(s: &OsStr) -> io::Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a file name"))
}

/// The directory and file name of `path` (`.` for a bare name).
fn split(path: &Path) -> io::Result<(PathBuf, CString)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path does not end in a file name"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, cstr(name)?))
}

impl Pending {
    /// Creates the temporary file for `path` (the module comment).
    pub fn create(path: &Path) -> io::Result<Self> {
        let (dir_path, name) = split(path)?;
        let dir_c = cstr(dir_path.as_os_str())?;
        // SAFETY: open(2) with a NUL-terminated path; the fd is owned below.
        let dfd = unsafe { libc::open(dir_c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if dfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `dfd` was just returned by open(2) and is ours alone.
        let dir = unsafe { OwnedFd::from_raw_fd(dfd) };
        let base = name.to_bytes();
        for _ in 0..100 {
            let n = SERIAL.fetch_add(1, Ordering::Relaxed);
            let mut tmp = b".".to_vec();
            tmp.extend_from_slice(&base[..base.len().min(200)]);
            tmp.extend_from_slice(format!(".rtswitch-{}-{n}.tmp", std::process::id()).as_bytes());
            let tmp = CString::new(tmp).map_err(|_| io::Error::other("a NUL byte in a file name"))?;
            let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            // SAFETY: openat(2) relative to our directory fd with a
            // NUL-terminated name; the fd is owned below.
            let fd = unsafe { libc::openat(dir.as_raw_fd(), tmp.as_ptr(), flags, 0o666 as libc::c_uint) };
            if fd >= 0 {
                // SAFETY: `fd` was just returned by openat(2) and is ours alone.
                let file = unsafe { File::from_raw_fd(fd) };
                return Ok(Self { path: path.to_path_buf(), dir, tmp, name, file: Some(file) });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(e);
            }
        }
        Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary name beside it after 100 tries"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes`, syncs, and renames the file over its target.
    pub fn commit(mut self, bytes: &[u8]) -> io::Result<()> {
        let mut file = self.file.take().ok_or_else(|| io::Error::other("already committed"))?;
        let written = file.write_all(bytes).and_then(|()| file.sync_all());
        drop(file);
        if let Err(e) = written {
            self.remove_tmp();
            return Err(e);
        }
        let d = self.dir.as_raw_fd();
        // SAFETY: renameat(2) within our directory fd, with NUL-terminated
        // names (called as the raw system call the sandbox allows).
        let rc = unsafe { libc::syscall(libc::SYS_renameat, d, self.tmp.as_ptr(), d, self.name.as_ptr()) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            self.remove_tmp();
            return Err(e);
        }
        // SAFETY: fsync(2) on our directory fd: the rename is on disk.
        unsafe { libc::fsync(d) };
        Ok(())
    }

    fn remove_tmp(&self) {
        // SAFETY: unlinkat(2) of our temporary name within our directory fd
        // (the raw system call, as the sandbox allows it).
        unsafe { libc::syscall(libc::SYS_unlinkat, self.dir.as_raw_fd(), self.tmp.as_ptr(), 0) };
    }

    /// The directory fd the file is renamed and removed through.
    pub fn dir_fd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            self.remove_tmp();
        }
    }
}

/// `bytes` written to `path` through a temporary file, at once.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    Pending::create(path)?.commit(bytes)
}

/// A new, empty file at `path` for a stream written while it runs (the
/// `--serial` console): created as a temporary file and renamed over
/// `path` at once, so what was at `path` (a symlink, a file with other
/// links) is replaced, never written through.
pub fn create_fresh(path: &Path) -> io::Result<File> {
    let p = Pending::create(path)?;
    let file = p.file.as_ref().ok_or_else(|| io::Error::other("no file"))?.try_clone()?;
    p.commit(b"")?;
    Ok(file)
}

/// Files prepared before a sandbox, and whether it is in.
pub struct Registry {
    files: Mutex<Vec<Pending>>,
    sealed: AtomicBool,
}

/// The process's registry (`rtswitch run`'s outputs).
static REGISTRY: Registry = Registry::new();

impl Registry {
    pub const fn new() -> Self {
        Self { files: Mutex::new(Vec::new()), sealed: AtomicBool::new(false) }
    }

    fn files(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sealed_error() -> io::Error {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            "it was not opened before the sandbox went in (only the files named at the start are written; name \
             its profile with --switch-to, or use --histogram-mode all)",
        )
    }

    /// Opens `path`'s temporary file now, for [`Self::write`] at the end.
    pub fn prepare(&self, path: &Path) -> io::Result<()> {
        if self.sealed.load(Ordering::Acquire) {
            return Err(Self::sealed_error());
        }
        let mut list = self.files();
        if !list.iter().any(|p| p.path == path) {
            list.push(Pending::create(path)?);
        }
        Ok(())
    }

    pub fn seal(&self) {
        self.sealed.store(true, Ordering::Release);
    }

    pub fn dir_fds(&self) -> Vec<RawFd> {
        self.files().iter().map(Pending::dir_fd).collect()
    }

    /// Writes `path`: its prepared file, or (before the seal) a new one.
    pub fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let pending = {
            let mut list = self.files();
            list.iter().position(|p| p.path == path).map(|i| list.swap_remove(i))
        };
        match pending {
            Some(p) => p.commit(bytes),
            None if self.sealed.load(Ordering::Acquire) => Err(Self::sealed_error()),
            None => write_atomic(path, bytes),
        }
    }

    /// Removes the prepared files nothing was written to.
    pub fn discard_all(&self) {
        self.files().clear();
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

/// Opens `path`'s temporary file now, for [`write`] at the end.
pub fn prepare(path: &Path) -> io::Result<()> {
    REGISTRY.prepare(path)
}

/// No file is created from now on (the sandbox is in).
pub fn seal() {
    REGISTRY.seal();
}

/// The directory fds of the prepared files (the sandbox's rename and
/// remove rules).
pub fn dir_fds() -> Vec<RawFd> {
    REGISTRY.dir_fds()
}

/// Writes `path`: its prepared file, or (before [`seal`]) a new one.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    REGISTRY.write(path, bytes)
}

/// Removes the prepared files nothing was written to.
pub fn discard_all() {
    REGISTRY.discard_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> tempfile::TempDir {
        tempfile::Builder::new().prefix("rtswitch-outfile-").tempdir().unwrap()
    }

    #[test]
    fn a_commit_replaces_the_target_and_leaves_nothing_else() {
        let dir = scratch();
        let target = dir.path().join("r.json");
        std::fs::write(&target, "old").unwrap();
        let p = Pending::create(&target).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "old", "the target is untouched until the commit");
        p.commit(b"new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
        drop(Pending::create(&target).unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "a dropped file leaves nothing");
    }

    #[test]
    fn a_symlink_at_the_target_is_replaced_never_followed() {
        let dir = scratch();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let target = dir.path().join("out.txt");
        let p = Pending::create(&target).unwrap();
        // Planted during the run.
        std::os::unix::fs::symlink(&victim, &target).unwrap();
        p.commit(b"report").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert!(!std::fs::symlink_metadata(&target).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "report");
        // The console's file too: a hard link elsewhere is not written through.
        let linked = dir.path().join("console.log");
        std::fs::hard_link(&victim, &linked).unwrap();
        let mut f = create_fresh(&linked).unwrap();
        f.write_all(b"guest").unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(std::fs::read_to_string(&linked).unwrap(), "guest");
    }

    #[test]
    fn after_the_seal_only_prepared_files_are_written() {
        let dir = scratch();
        let (a, b, c) = (dir.path().join("a"), dir.path().join("b"), dir.path().join("c"));
        let r = Registry::new();
        r.prepare(&a).unwrap();
        r.prepare(&c).unwrap();
        assert_eq!(r.dir_fds().len(), 2);
        r.seal();
        r.write(&a, b"A").unwrap();
        assert_eq!(std::fs::read_to_string(&a).unwrap(), "A");
        let e = r.write(&b, b"B").unwrap_err();
        assert!(e.to_string().contains("before the sandbox"), "{e}");
        assert!(r.prepare(&b).is_err());
        r.discard_all();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only a: c's temporary file is gone");
    }
}
