//! The control socket's file: what this VMM created, and removing it at
//! the end only while it is still that file.
//!
//! - An existing path is replaced only when it is a socket nobody accepts
//!   on (`connect` fails with `ECONNREFUSED`); any other answer (it
//!   accepts, `EACCES`, ...) means it may be someone's, and is refused.
//! - After `bind`, the file's directory is held open and the socket's
//!   device and inode are recorded. At the end (or a forced exit, from a
//!   signal handler: [`remove_from_signal`]) the name is removed through
//!   that directory fd, and only if it still names that device and inode:
//!   a path another VMM has taken over since is left alone.
//! - The name appears only once the socket listens ([`bind_listening`]):
//!   `bind` creates the file and `listen` follows, and a client that finds
//!   the file between the two is refused (`ECONNREFUSED`, which also reads
//!   as stale to the check above). So the socket is bound and made to
//!   listen under a temporary name in the same directory, then linked to
//!   its name (`link` fails if something took the name meanwhile) and the
//!   temporary name removed.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// What `connect` to an existing socket said: whether nobody serves it.
pub fn is_stale(connect_error: &io::Error) -> bool {
    connect_error.raw_os_error() == Some(libc::ECONNREFUSED)
}

/// Longest socket path `bind` takes (`sun_path` less its NUL).
const SUN_PATH_MAX: usize = 107;

/// Binds a listening socket at `path` that no client can find before it
/// listens (module doc). `path` must be free (the caller removed a stale
/// socket); if something takes it meanwhile this fails with
/// `AlreadyExists`. A path so long that no temporary name beside it fits
/// `sun_path` is bound in place (the window stays open, for that path only).
pub fn bind_listening(path: &Path) -> io::Result<UnixListener> {
    bind_listening_with(path, || {})
}

/// [`bind_listening`], running `in_window` between `bind` and `listen`
/// (the tests look at the path from there).
fn bind_listening_with(path: &Path, in_window: impl FnOnce()) -> io::Result<UnixListener> {
    let temp = temporary_name(path);
    let at = temp.as_deref().unwrap_or(path);
    if temp.is_some() {
        // A leftover of an earlier run of this pid (pids are reused).
        let _ = std::fs::remove_file(at);
    }
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is ours alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (addr, len) = sockaddr_un(at)?;
    // SAFETY: bind(2) with our fd and a sockaddr_un of `len` bytes.
    if unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    in_window();
    // SAFETY: listen(2) on our bound fd.
    if unsafe { libc::listen(fd.as_raw_fd(), 128) } != 0 {
        let e = io::Error::last_os_error();
        let _ = std::fs::remove_file(at);
        return Err(e);
    }
    if let Some(temp) = &temp {
        let linked = std::fs::hard_link(temp, path);
        let _ = std::fs::remove_file(temp);
        linked?;
    }
    Ok(UnixListener::from(fd))
}

/// The `sockaddr_un` of `path` and its length.
fn sockaddr_un(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: an all-zero sockaddr_un is valid (an empty path).
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() > SUN_PATH_MAX || bytes.contains(&0) {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the socket path is too long or holds a NUL byte"));
    }
    for (d, &b) in addr.sun_path.iter_mut().zip(bytes) {
        *d = b as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    Ok((addr, len as libc::socklen_t))
}

/// `.NAME.PID.tmp` beside `path`, or a shorter `.rtsPID` when that does not
/// fit `sun_path`; `None` when neither does.
fn temporary_name(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy();
    let pid = std::process::id();
    [format!(".{name}.{pid}.tmp"), format!(".rts{pid}")]
        .into_iter()
        .map(|n| path.with_file_name(n))
        .find(|p| p.as_os_str().len() <= SUN_PATH_MAX)
}

/// The socket this VMM bound.
pub struct SocketFile {
    dir: OwnedFd,
    name: CString,
    dev: u64,
    ino: u64,
}

/// For [`remove_from_signal`]: the one socket file of this process.
static SIGNAL_DIR: AtomicI32 = AtomicI32::new(-1);
static SIGNAL_DEV: AtomicU64 = AtomicU64::new(0);
static SIGNAL_INO: AtomicU64 = AtomicU64::new(0);
static SIGNAL_NAME: OnceLock<CString> = OnceLock::new();

/// Device and inode of `name` in `dir`, not following a symlink.
fn identity(dir: RawFd, name: &CString) -> Option<(u64, u64)> {
    // SAFETY: a zeroed stat is a valid out-buffer for fstatat(2).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstatat(2) with our directory fd, a NUL-terminated name and
    // a local buffer; async-signal-safe.
    let rc = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    (rc == 0).then_some((st.st_dev, st.st_ino))
}

/// Removes `name` from `dir` if it is (dev, ino); whether it did.
fn remove_if_ours(dir: RawFd, name: &CString, dev: u64, ino: u64) -> bool {
    if identity(dir, name) != Some((dev, ino)) {
        return false;
    }
    // SAFETY: unlinkat(2) with our directory fd and a NUL-terminated name
    // (the raw system call the sandbox allows); async-signal-safe.
    unsafe { libc::syscall(libc::SYS_unlinkat, dir, name.as_ptr(), 0) == 0 }
}

impl SocketFile {
    /// Records the socket just bound at `path`.
    pub fn record(path: &Path) -> io::Result<Self> {
        let name = path.file_name().ok_or_else(|| io::Error::other("the socket path has no file name"))?;
        let name = CString::new(name.as_bytes()).map_err(|_| io::Error::other("a NUL byte in the socket path"))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let dir_c =
            CString::new(dir.as_os_str().as_bytes()).map_err(|_| io::Error::other("a NUL byte in the socket path"))?;
        // SAFETY: open(2) with a NUL-terminated path; the fd is owned below.
        let fd = unsafe { libc::open(dir_c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by open(2) and is ours alone.
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        let (dev, ino) = identity(dir.as_raw_fd(), &name).ok_or_else(io::Error::last_os_error)?;
        if SIGNAL_NAME.set(name.clone()).is_ok() {
            SIGNAL_DIR.store(dir.as_raw_fd(), Ordering::Relaxed);
            SIGNAL_DEV.store(dev, Ordering::Relaxed);
            SIGNAL_INO.store(ino, Ordering::Relaxed);
        }
        Ok(Self { dir, name, dev, ino })
    }

    /// The directory fd the socket is removed through (the sandbox allows
    /// removing through it).
    pub fn dir_fd(&self) -> RawFd {
        self.dir.as_raw_fd()
    }

    /// Removes the socket if the path still names it; whether it did.
    pub fn remove(&self) -> bool {
        SIGNAL_DIR.store(-1, Ordering::Relaxed);
        remove_if_ours(self.dir.as_raw_fd(), &self.name, self.dev, self.ino)
    }
}

/// From a signal handler (the forced exit): removes the process's socket
/// file as [`SocketFile::remove`] does; only async-signal-safe calls.
pub fn remove_from_signal() {
    let dir = SIGNAL_DIR.load(Ordering::Relaxed);
    if let (true, Some(name)) = (dir >= 0, SIGNAL_NAME.get()) {
        remove_if_ours(dir, name, SIGNAL_DEV.load(Ordering::Relaxed), SIGNAL_INO.load(Ordering::Relaxed));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A client that connects as soon as the file exists is never refused:
    /// between `bind` and `listen` (a window a busy host can stretch to
    /// milliseconds: the test suite's clients met it) the name is not
    /// there yet.
    #[test]
    fn the_socket_is_never_found_before_it_listens() {
        let dir = tempfile::Builder::new().prefix("rtswitch-sockfile-").tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let mut seen = None;
        let listener = bind_listening_with(&path, || seen = Some(UnixStream::connect(&path).map(drop))).unwrap();
        let seen = seen.expect("the window ran");
        assert_eq!(
            seen.as_ref().map_err(io::Error::raw_os_error),
            Err(Some(libc::ENOENT)),
            "a client between bind and listen found the name (ECONNREFUSED is 111): {seen:?}"
        );
        UnixStream::connect(&path).expect("listening once the name is there");
        drop(listener);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no temporary name left behind");
    }

    #[test]
    fn a_name_taken_meanwhile_is_not_replaced() {
        let dir = tempfile::Builder::new().prefix("rtswitch-sockfile-").tempdir().unwrap();
        let path = dir.path().join("api.sock");
        std::fs::write(&path, b"someone's").unwrap();
        let e = bind_listening(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&path).unwrap(), b"someone's");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary name left behind");
        let long = dir.path().join("x".repeat(SUN_PATH_MAX - dir.path().as_os_str().len() - 1));
        assert!(temporary_name(&long).is_none_or(|t| t.as_os_str().len() <= SUN_PATH_MAX));
    }

    #[test]
    fn only_refused_connections_are_stale() {
        assert!(is_stale(&io::Error::from_raw_os_error(libc::ECONNREFUSED)));
        for e in [libc::EACCES, libc::EPERM, libc::EAGAIN, libc::ENOENT, libc::ETIMEDOUT] {
            assert!(!is_stale(&io::Error::from_raw_os_error(e)), "errno {e}");
        }
    }

    #[test]
    fn a_socket_taken_over_by_another_is_left_alone() {
        let dir = tempfile::Builder::new().prefix("rtswitch-sockfile-").tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let ours = UnixListener::bind(&path).unwrap();
        let file = SocketFile::record(&path).unwrap();
        // Another process removes it and binds its own at the same path.
        std::fs::remove_file(&path).unwrap();
        let theirs = UnixListener::bind(&path).unwrap();
        assert!(!file.remove(), "not ours any more");
        assert!(path.exists());
        drop((ours, theirs));
        std::fs::remove_file(&path).unwrap();
        let _again = UnixListener::bind(&path).unwrap();
        let file = SocketFile::record(&path).unwrap();
        assert!(file.remove() && !path.exists());
    }
}
