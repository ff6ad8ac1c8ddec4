//! The control socket: a Unix stream socket speaking QMP (`framing`,
//! `protocol`), served from the VMM's control thread (the event-manager
//! loop in `runner`), never blocking it.
//!
//! - The socket is created with mode 0600. An existing path is refused,
//!   unless it is a stale socket (`connect` is refused: `sockfile`), which
//!   is replaced. The path is removed when the server is dropped, only if
//!   it still names the socket this server bound (device and inode).
//! - Slots are not held hostage: a client that has not negotiated within
//!   [`NEGOTIATION_DEADLINE`], or (with an idle limit) has sent nothing for
//!   that long, is closed by [`ApiServer::sweep`], which the control loop
//!   calls once a second. When `accept` fails for want of descriptors or
//!   memory (`EMFILE`, ...), [`ApiServer::accept`] says to back off: the
//!   loop stops watching the listener for [`ACCEPT_BACKOFF`] instead of
//!   spinning on it.
//! - Every client is non-blocking and has its own [`Framer`]: requests are
//!   JSON objects cut out of the byte stream, not lines.
//! - Fair: one wakeup reads at most [`READ_BUDGET`] bytes from a client
//!   and handles at most [`MESSAGES_PER_WAKEUP`] of its messages; bytes
//!   left over wait in the client's (bounded) input and are taken on the
//!   next turn of the loop (the backlog event), after the other clients,
//!   timers and vCPU events had theirs.
//! - Output that cannot be written at once waits in the client's outbox,
//!   flushed when the socket becomes writable. A client whose outbox grows
//!   past [`MAX_OUTBOX_BYTES`] has stopped reading: it is dropped, with a
//!   log line; the others are not affected.
//! - Negotiation (`qmp_capabilities`) is handled here; the caller only sees
//!   commands from negotiated clients.
//!
//! Clients are named by a [`ClientId`] that is never reused (file
//! descriptors are), so a reply for a client that left goes nowhere.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::framing::{Frame, Framer};
use super::protocol::{self, Command, QmpError, Request};
use super::sockfile::{self, SocketFile};

/// Replies and events queued for one client before it is dropped as not
/// reading (four times the largest reply).
pub const MAX_OUTBOX_BYTES: usize = 4 * protocol::MAX_REPLY_BYTES;
/// Clients served at once; more are refused with an error reply.
pub const MAX_CLIENTS: usize = 64;
/// Bytes read from one client in one wakeup.
pub const READ_BUDGET: usize = 16 * 1024;
/// Messages (requests and refused input) handled per client and wakeup.
pub const MESSAGES_PER_WAKEUP: usize = 16;
/// A client must have negotiated (`qmp_capabilities`) this long after it
/// connected, or it is closed.
pub const NEGOTIATION_DEADLINE: Duration = Duration::from_secs(5);
/// How long the listener goes unwatched after `accept` ran out of
/// descriptors or memory.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("--api-sock {0} already exists and is not a socket; remove it or choose another path")]
    NotASocket(String),
    #[error("--api-sock {0} is in use by a running process (a client could connect); choose another path")]
    InUse(String),
    #[error(
        "--api-sock {0} exists and cannot be told stale ({1}): it may be another VMM's; remove it yourself if \
         nothing serves it, or choose another path"
    )]
    Unknown(String, io::Error),
    #[error("cannot remove the stale socket {0}: {1}")]
    RemoveStale(String, io::Error),
    #[error("cannot create the control socket {0}: {1}")]
    Bind(String, io::Error),
    #[error("cannot set up the control socket {0}: {1}")]
    Setup(String, io::Error),
}

/// A connected client, by a number never reused in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

struct Client {
    id: ClientId,
    stream: UnixStream,
    framer: Framer,
    /// Bytes read but not framed yet (the wakeup's message budget ran
    /// out): at most one read budget.
    input: Vec<u8>,
    /// The peer closed its side (or reading failed): dropped once `input`
    /// is handled.
    eof: bool,
    outbox: VecDeque<u8>,
    negotiated: bool,
    connected: Instant,
    /// When it last sent a byte (or connected).
    heard: Instant,
}

impl Client {
    fn queue(&mut self, text: &str) {
        self.outbox.extend(text.as_bytes());
    }

    /// Frames pending input until the wakeup's message budget is spent;
    /// answers refused input and negotiation itself.
    fn take_messages(&mut self, budget: &mut usize, requests: &mut Vec<(ClientId, Request)>) {
        let mut input = std::mem::take(&mut self.input);
        let mut frames = Vec::new();
        let mut used = 0;
        for &b in &input {
            if *budget == 0 {
                break;
            }
            used += 1;
            self.framer.push(b, &mut frames);
            for frame in frames.drain(..) {
                *budget = budget.saturating_sub(1);
                self.handle(frame, requests);
            }
        }
        input.drain(..used);
        self.input = input;
    }

    fn handle(&mut self, frame: Frame, requests: &mut Vec<(ClientId, Request)>) {
        let text = match frame {
            Frame::Error(e) => return self.queue(&protocol::reply_err(&QmpError::generic(e.to_string()), None)),
            Frame::Text(t) => t,
        };
        let env = match protocol::parse_envelope(&text) {
            Ok(env) => env,
            Err(r) => return self.queue(&protocol::reply_err(&r.error, r.id.as_ref())),
        };
        // As QEMU: before negotiation only qmp_capabilities exists.
        if !self.negotiated && env.name != "qmp_capabilities" {
            return self.queue(&protocol::reply_err(&protocol::not_negotiated(), env.id.as_ref()));
        }
        match protocol::parse_command(&env.name, env.args) {
            Err(e) => self.queue(&protocol::reply_err(&e, env.id.as_ref())),
            Ok(Command::QmpCapabilities) if !self.negotiated => {
                self.negotiated = true;
                self.queue(&protocol::reply_ok(serde_json::json!({}), env.id.as_ref()));
            }
            Ok(Command::QmpCapabilities) => {
                self.queue(&protocol::reply_err(&protocol::already_negotiated(), env.id.as_ref()))
            }
            Ok(command) => requests.push((self.id, Request { command, id: env.id })),
        }
    }

    /// Writes as much of the outbox as the socket takes.
    fn flush(&mut self) -> io::Result<()> {
        while !self.outbox.is_empty() {
            let (chunk, _) = self.outbox.as_slices();
            match self.stream.write(chunk) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.outbox.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Flushes; whether the client is still usable (its socket works and
    /// it reads what it is sent).
    fn flush_ok(&mut self) -> bool {
        if let Err(e) = self.flush() {
            log::debug!("control socket: client {} is gone: {e}", self.id.0);
            return false;
        }
        if self.outbox.len() > MAX_OUTBOX_BYTES {
            log::warn!(
                "control socket: dropping client {}: {} bytes of replies and events wait unread (limit \
                 {MAX_OUTBOX_BYTES}); it stopped reading its socket",
                self.id.0,
                self.outbox.len()
            );
            return false;
        }
        true
    }
}

/// What reading from a client produced.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    /// Commands from the client (negotiated, not `qmp_capabilities`).
    pub requests: Vec<(ClientId, Request)>,
    /// The client is gone (EOF, error, or dropped): forget its fd.
    pub closed: bool,
    /// Output is pending: watch the fd for writability.
    pub wants_write: bool,
}

pub struct ApiServer {
    listener: UnixListener,
    path: PathBuf,
    /// The socket file as bound: removed at the end only if still ours.
    file: SocketFile,
    clients: BTreeMap<RawFd, Client>,
    next_id: u64,
    /// Signalled while a client has input left over from its last turn.
    backlog: EventFd,
}

impl ApiServer {
    /// Creates the socket at `path` (mode 0600), non-blocking.
    pub fn bind(path: &Path) -> Result<Self, ApiError> {
        let shown = path.display().to_string();
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => return Err(ApiError::NotASocket(shown)),
            Ok(_) => match UnixStream::connect(path) {
                Ok(_) => return Err(ApiError::InUse(shown)),
                Err(e) if sockfile::is_stale(&e) => {
                    std::fs::remove_file(path).map_err(|e| ApiError::RemoveStale(shown.clone(), e))?
                }
                Err(e) => return Err(ApiError::Unknown(shown, e)),
            },
            Err(_) => {}
        }
        // Bind with a umask that leaves the socket 0600 from its first
        // moment (no window with wider permissions), then restore it. The
        // VMM binds before it starts any other thread.
        // SAFETY: umask only swaps the process file-mode mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = sockfile::bind_listening(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let listener = bound.map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => ApiError::InUse(shown.clone()),
            _ => ApiError::Bind(shown.clone(), e),
        })?;
        let file = SocketFile::record(path).map_err(|e| ApiError::Setup(shown.clone(), e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| ApiError::Setup(shown.clone(), e))?;
        listener.set_nonblocking(true).map_err(|e| ApiError::Setup(shown.clone(), e))?;
        let backlog = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| ApiError::Setup(shown, e))?;
        Ok(Self { listener, path: path.to_path_buf(), file, clients: BTreeMap::new(), next_id: 1, backlog })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// The directory fd the socket file is removed through.
    pub fn socket_dir_fd(&self) -> RawFd {
        self.file.dir_fd()
    }

    /// The event that says some client has input left from its last turn.
    pub fn backlog_fd(&self) -> RawFd {
        self.backlog.as_raw_fd()
    }

    /// Whether `fd` is one of this server's client sockets.
    pub fn is_client(&self, fd: RawFd) -> bool {
        self.clients.contains_key(&fd)
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Accepts every pending connection, greets it, and returns the new
    /// client fds to watch, and whether to stop watching the listener for
    /// [`ACCEPT_BACKOFF`] (accept ran out of descriptors or memory).
    pub fn accept(&mut self) -> (Vec<RawFd>, bool) {
        let mut fds = Vec::new();
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.clients.len() >= MAX_CLIENTS {
                        let err = QmpError::generic(format!("too many clients (at most {MAX_CLIENTS})"));
                        let _ = stream.set_nonblocking(true);
                        let _ = stream.write_all(protocol::reply_err(&err, None).as_bytes());
                        continue;
                    }
                    if let Err(e) = stream.set_nonblocking(true) {
                        log::warn!("control socket: dropping a client: {e}");
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    let now = Instant::now();
                    let id = ClientId(self.next_id);
                    self.next_id += 1;
                    log::debug!("control socket: client {} connected", id.0);
                    let mut c = Client {
                        id,
                        stream,
                        framer: Framer::new(),
                        input: Vec::new(),
                        eof: false,
                        outbox: VecDeque::new(),
                        negotiated: false,
                        connected: now,
                        heard: now,
                    };
                    c.queue(&protocol::greeting());
                    let _ = c.flush();
                    self.clients.insert(fd, c);
                    fds.push(fd);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let starved =
                        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM));
                    crate::warn_limited!(
                        "control socket accept failed",
                        "control socket: accept failed: {e}{}",
                        if starved { "; not accepting for a while" } else { "" }
                    );
                    return (fds, starved);
                }
            }
        }
        (fds, false)
    }

    /// Clients to close now (at `now`): not negotiated within
    /// [`NEGOTIATION_DEADLINE`], or silent for `idle` (zero: never). Each
    /// is told why; the caller stops watching its fd, then drops it.
    pub fn sweep(&mut self, now: Instant, idle: Duration) -> Vec<RawFd> {
        let mut out = Vec::new();
        for (fd, c) in &mut self.clients {
            let why = if !c.negotiated && now.duration_since(c.connected) >= NEGOTIATION_DEADLINE {
                format!(
                    "no capabilities negotiation within {} s of connecting: closing",
                    NEGOTIATION_DEADLINE.as_secs()
                )
            } else if !idle.is_zero() && now.duration_since(c.heard) >= idle {
                format!("nothing sent for {} s (--api-idle-timeout): closing", idle.as_secs())
            } else {
                continue;
            };
            log::info!("control socket: client {}: {why}", c.id.0);
            c.queue(&protocol::reply_err(&QmpError::generic(why), None));
            let _ = c.flush();
            out.push(*fd);
        }
        out
    }

    /// Client `fd`'s turn: handles its left-over input, then reads (at
    /// most a budget), answers negotiation and refused input itself, and
    /// returns its commands.
    pub fn read(&mut self, fd: RawFd) -> ReadOutcome {
        let mut out = ReadOutcome::default();
        let Some(c) = self.clients.get_mut(&fd) else {
            out.closed = true;
            return out;
        };
        let mut budget = MESSAGES_PER_WAKEUP;
        c.take_messages(&mut budget, &mut out.requests);
        let mut buf = [0u8; 4096];
        let mut read = 0;
        while c.input.is_empty() && !c.eof && budget > 0 && read < READ_BUDGET {
            match c.stream.read(&mut buf) {
                Ok(0) => c.eof = true,
                Ok(n) => {
                    read += n;
                    c.heard = Instant::now();
                    c.input.extend_from_slice(&buf[..n]);
                    c.take_messages(&mut budget, &mut out.requests);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("control socket: reading client {} failed: {e}", c.id.0);
                    c.eof = true;
                    c.input.clear();
                }
            }
        }
        let usable = c.flush_ok();
        if !c.input.is_empty() && usable {
            // The rest waits for the loop's next turn.
            if let Err(e) = self.backlog.write(1) {
                log::error!("control socket: cannot signal left-over input: {e}");
            }
        }
        if !usable || (c.eof && c.input.is_empty()) {
            // The caller stops watching the fd, then drops the client (in
            // that order: epoll needs the fd still open to forget it).
            out.closed = true;
            return out;
        }
        out.wants_write = !c.outbox.is_empty();
        out
    }

    /// The backlog event fired: every client with left-over input gets a
    /// turn. Returns each one's fd and outcome.
    pub fn take_backlog(&mut self) -> Vec<(RawFd, ReadOutcome)> {
        let _ = self.backlog.read();
        let fds: Vec<RawFd> = self.clients.iter().filter(|(_, c)| !c.input.is_empty()).map(|(fd, _)| *fd).collect();
        fds.into_iter().map(|fd| (fd, self.read(fd))).collect()
    }

    /// Sends `text` to client `id` if it is still connected. Returns the
    /// fd whose write interest must change: (fd, wants_write), or the fd
    /// to forget when the client had to be dropped.
    pub fn send(&mut self, id: ClientId, text: &str) -> Option<SendOutcome> {
        let fd = self.clients.iter().find(|(_, c)| c.id == id).map(|(fd, _)| *fd)?;
        Some(self.send_fd(fd, text))
    }

    /// Sends `text` to every negotiated client.
    pub fn broadcast(&mut self, text: &str) -> Vec<SendOutcome> {
        let fds: Vec<RawFd> = self.clients.iter().filter(|(_, c)| c.negotiated).map(|(fd, _)| *fd).collect();
        fds.into_iter().map(|fd| self.send_fd(fd, text)).collect()
    }

    fn send_fd(&mut self, fd: RawFd, text: &str) -> SendOutcome {
        let Some(c) = self.clients.get_mut(&fd) else {
            return SendOutcome::Closed(fd);
        };
        c.queue(text);
        if !c.flush_ok() {
            return SendOutcome::Closed(fd);
        }
        SendOutcome::Open { fd, wants_write: !c.outbox.is_empty() }
    }

    /// The client's socket is writable: flush what is pending.
    pub fn writable(&mut self, fd: RawFd) -> SendOutcome {
        self.send_fd(fd, "")
    }

    /// Forgets client `fd` (closing its socket).
    pub fn drop_client(&mut self, fd: RawFd) {
        if let Some(c) = self.clients.remove(&fd) {
            log::debug!("control socket: client {} disconnected", c.id.0);
        }
    }

    /// At the end of the run: waits (at most `limit`) until every client
    /// has taken what is queued for it (the SHUTDOWN event), so that it is
    /// not lost when the sockets close.
    pub fn flush_all(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            self.clients.retain(|_, c| c.flush().is_ok());
            if self.clients.values().all(|c| c.outbox.is_empty()) || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// What a send did to a client's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    Open {
        fd: RawFd,
        wants_write: bool,
    },
    /// Unusable (write error or too much pending output): stop watching the
    /// fd, then `drop_client` it.
    Closed(RawFd),
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if !self.file.remove() {
            log::warn!(
                "the control socket {} was not removed: the path no longer names the socket this VMM created \
                 (removed or taken over by someone else)",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("rtswitch-api-{name}-{}.sock", std::process::id()))
    }

    fn pump(server: &mut ApiServer) -> Vec<(ClientId, Request)> {
        let fds: Vec<RawFd> = server.clients.keys().copied().collect();
        let mut reqs = Vec::new();
        for fd in fds {
            reqs.extend(server.read(fd).requests);
        }
        reqs
    }

    #[test]
    fn socket_is_private_and_removed() {
        let path = scratch("mode");
        let server = ApiServer::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(server);
        assert!(!path.exists());
    }

    #[test]
    fn refuses_files_and_live_sockets_replaces_stale_ones() {
        let path = scratch("refuse");
        std::fs::write(&path, b"x").unwrap();
        assert!(matches!(ApiServer::bind(&path), Err(ApiError::NotASocket(_))));
        std::fs::remove_file(&path).unwrap();
        let live = ApiServer::bind(&path).unwrap();
        assert!(matches!(ApiServer::bind(&path), Err(ApiError::InUse(_))));
        drop(live);
        // A stale socket: the path stays after its listener is gone.
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        drop(ApiServer::bind(&path).expect("a stale socket is replaced"));
        assert!(!path.exists());
    }

    #[test]
    fn greets_negotiates_and_passes_commands() {
        let path = scratch("flow");
        let mut server = ApiServer::bind(&path).unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        assert_eq!(server.accept().0.len(), 1);
        let mut reader = BufReader::new(client.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains("\"QMP\""));

        // Before negotiation every other command, even with bad
        // arguments, is "not found", as in QEMU.
        client.write_all(br#"{"execute":"set-mode","arguments":{"mode":5},"id":1}"#).unwrap();
        assert!(pump(&mut server).is_empty());
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains("Expecting capabilities negotiation") && line.contains(r#""id":1"#), "{line}");

        // No newlines, two objects in one write.
        client.write_all(br#"{"execute":"qmp_capabilities"}{"execute":"query-status","id":2}"#).unwrap();
        let reqs = pump(&mut server);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].1.command, Command::QueryStatus);
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), r#"{"return":{}}"#);

        let big = vec![b'['; crate::api::framing::MAX_MESSAGE_BYTES + 10];
        client.write_all(&big).unwrap();
        client.write_all(b"\x01{\"execute\":\"quit\"}").unwrap();
        let mut reqs = Vec::new();
        for _ in 0..100 {
            reqs.extend(pump(&mut server));
            if !reqs.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(reqs.len(), 1, "the message after an oversized one is still served");
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains("longer than") || line.contains("deeper than"), "{line}");

        drop(client);
        drop(reader);
        let fd = *server.clients.keys().next().unwrap();
        assert!(server.read(fd).closed);
        server.drop_client(fd);
        assert_eq!(server.client_count(), 0);
    }

    #[test]
    fn one_turn_handles_a_bounded_number_of_messages() {
        let path = scratch("fair");
        let mut server = ApiServer::bind(&path).unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        server.accept();
        let fd = *server.clients.keys().next().unwrap();
        let n = 3 * MESSAGES_PER_WAKEUP + 1;
        let mut burst = br#"{"execute":"qmp_capabilities"}"#.to_vec();
        for i in 0..n {
            burst.extend_from_slice(format!(r#"{{"execute":"query-mode","id":{i}}}"#).as_bytes());
        }
        client.write_all(&burst).unwrap();
        let first = server.read(fd);
        assert_eq!(first.requests.len(), MESSAGES_PER_WAKEUP - 1, "capabilities counts too");
        // The rest is taken on later turns, signalled by the backlog event.
        let mut ids = first.requests.iter().map(|(_, r)| r.id.clone()).collect::<Vec<_>>();
        for _ in 0..10 {
            let mut polled = libc::pollfd { fd: server.backlog_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd, for the duration of the call.
            let ready = unsafe { libc::poll(&mut polled, 1, 0) };
            if ready != 1 {
                break;
            }
            for (_, out) in server.take_backlog() {
                assert!(out.requests.len() <= MESSAGES_PER_WAKEUP);
                ids.extend(out.requests.into_iter().map(|(_, r)| r.id));
            }
        }
        let want: Vec<_> = (0..n).map(|i| Some(serde_json::json!(i))).collect();
        assert_eq!(ids, want, "every request, once, in order");
    }

    #[test]
    fn a_client_that_stops_reading_is_dropped_alone() {
        let path = scratch("slow");
        let mut server = ApiServer::bind(&path).unwrap();
        let slow = UnixStream::connect(&path).unwrap();
        let mut reader = BufReader::new(UnixStream::connect(&path).unwrap());
        server.accept();
        let fds: Vec<RawFd> = server.clients.keys().copied().collect();
        for c in server.clients.values_mut() {
            c.negotiated = true;
        }
        let event =
            protocol::event("MODE_SWITCHED", serde_json::json!({"pad": "x".repeat(1000)}), std::time::UNIX_EPOCH);
        let mut closed = Vec::new();
        for i in 0..(2 * MAX_OUTBOX_BYTES / event.len()) {
            for out in server.broadcast(&event) {
                if let SendOutcome::Closed(fd) = out {
                    closed.push(fd);
                    server.drop_client(fd);
                }
            }
            // The reading client keeps up.
            let mut line = String::new();
            if i == 0 {
                reader.read_line(&mut line).unwrap();
            }
            reader.read_line(&mut line).unwrap();
        }
        assert_eq!(closed, vec![fds[0]], "the client that never read is dropped, the other is not");
        assert_eq!(server.client_count(), 1);
        drop(slow);
    }

    #[test]
    fn un_negotiated_clients_are_closed_at_their_deadline() {
        let path = scratch("deadline");
        let mut server = ApiServer::bind(&path).unwrap();
        let _lazy = UnixStream::connect(&path).unwrap();
        let mut busy = UnixStream::connect(&path).unwrap();
        let (fds, starved) = server.accept();
        assert_eq!((fds.len(), starved), (2, false));
        busy.write_all(br#"{"execute":"qmp_capabilities"}"#).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        pump(&mut server);
        let now = Instant::now();
        assert!(server.sweep(now, Duration::ZERO).is_empty(), "nobody is late yet");
        let late = server.sweep(now + NEGOTIATION_DEADLINE, Duration::ZERO);
        assert_eq!(late, vec![fds[0]], "only the client that never negotiated");
        let idle = server.sweep(now + Duration::from_secs(3600), Duration::from_secs(60));
        assert_eq!(idle.len(), 2, "with an idle limit, both");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

        /// Several clients send anything, interleaved, some negotiated:
        /// the server never panics, every client reads only whole JSON
        /// lines within the reply bound, and the clients that are left
        /// are served.
        #[test]
        fn several_clients_sending_anything_get_only_json_lines(
            sends in proptest::collection::vec(
                (0usize..4, proptest::prelude::any::<bool>(), proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)),
                1..32,
            ),
        ) {
            let path = std::env::temp_dir().join(format!(
                "rtswitch-api-multi-{}-{:?}.sock",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = std::fs::remove_file(&path);
            let mut server = ApiServer::bind(&path).unwrap();
            let mut clients: Vec<UnixStream> = (0..4).map(|_| UnixStream::connect(&path).unwrap()).collect();
            server.accept();
            for c in &clients {
                c.set_nonblocking(true).unwrap();
            }
            let mut got: Vec<Vec<u8>> = vec![Vec::new(); 4];
            let drain = |clients: &mut Vec<UnixStream>, got: &mut Vec<Vec<u8>>| {
                for (c, g) in clients.iter_mut().zip(got.iter_mut()) {
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = c.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        g.extend_from_slice(&buf[..n]);
                    }
                }
            };
            for (i, negotiate, bytes) in &sends {
                let mut msg = Vec::new();
                if *negotiate {
                    msg.extend_from_slice(b"\x01{\"execute\":\"qmp_capabilities\"}{\"execute\":\"query-version\"}");
                }
                msg.extend_from_slice(bytes);
                let _ = clients[*i].write(&msg);
                for _ in 0..4 {
                    let fds: Vec<RawFd> = server.clients.keys().copied().collect();
                    for fd in fds {
                        if server.read(fd).closed {
                            server.drop_client(fd);
                        }
                    }
                    for (fd, out) in server.take_backlog() {
                        if out.closed {
                            server.drop_client(fd);
                        }
                    }
                }
                drain(&mut clients, &mut got);
            }
            proptest::prop_assert!(server.client_count() <= 4);
            for g in &got {
                let text = String::from_utf8_lossy(g);
                for line in text.split_inclusive('\n') {
                    if !line.ends_with('\n') {
                        continue; // cut by the last read
                    }
                    proptest::prop_assert!(line.len() <= protocol::MAX_REPLY_BYTES + 2);
                    let v: Result<serde_json::Value, _> = serde_json::from_str(line.trim_end());
                    proptest::prop_assert!(v.is_ok(), "not JSON: {line:?}");
                }
            }
        }
    }
}
