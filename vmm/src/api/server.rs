//! The control socket: a Unix stream socket speaking QMP (`protocol`),
//! served from the VMM's control thread (the event-manager loop in
//! `runner`), never blocking it.
//!
//! - The socket is created with mode 0600. An existing path is refused,
//!   unless it is a stale socket (nobody accepts on it), which is replaced.
//!   The path is removed when the server is dropped.
//! - Every client is non-blocking. Input is split into lines of at most
//!   `MAX_LINE_BYTES`; a longer line gets an error reply and is skipped up
//!   to its newline. Output that cannot be written at once is buffered (up
//!   to [`MAX_OUTPUT_BYTES`], past which the client is dropped as too
//!   slow) and flushed when the socket becomes writable.
//! - Negotiation (`qmp_capabilities`) is handled here; the caller only sees
//!   commands from negotiated clients.
//!
//! Clients are named by a [`ClientId`] that is never reused (file
//! descriptors are), so a reply for a client that left goes nowhere.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::protocol::{self, Command, MAX_LINE_BYTES, Request};

/// Output buffered for one client before it is dropped as too slow.
pub const MAX_OUTPUT_BYTES: usize = 4 << 20;
/// Clients served at once; more are refused with an error line.
pub const MAX_CLIENTS: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("--api-sock {0} already exists and is not a socket; remove it or choose another path")]
    NotASocket(String),
    #[error("--api-sock {0} is in use by a running process (a client could connect); choose another path")]
    InUse(String),
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
    input: Vec<u8>,
    /// Skipping an oversized line up to its newline.
    discarding: bool,
    output: Vec<u8>,
    negotiated: bool,
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
    clients: BTreeMap<RawFd, Client>,
    next_id: u64,
}

impl ApiServer {
    /// Creates the socket at `path` (mode 0600), non-blocking.
    pub fn bind(path: &Path) -> Result<Self, ApiError> {
        let shown = path.display().to_string();
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => return Err(ApiError::NotASocket(shown)),
            Ok(_) => match UnixStream::connect(path) {
                Ok(_) => return Err(ApiError::InUse(shown)),
                Err(_) => std::fs::remove_file(path).map_err(|e| ApiError::RemoveStale(shown.clone(), e))?,
            },
            Err(_) => {}
        }
        // Bind with a umask that leaves the socket 0600 from its first
        // moment (no window with wider permissions), then restore it. The
        // VMM binds before it starts any other thread.
        // SAFETY: umask only swaps the process file-mode mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let listener = bound.map_err(|e| ApiError::Bind(shown.clone(), e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| ApiError::Setup(shown.clone(), e))?;
        listener.set_nonblocking(true).map_err(|e| ApiError::Setup(shown, e))?;
        Ok(Self { listener, path: path.to_path_buf(), clients: BTreeMap::new(), next_id: 1 })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn listener_fd(&self) -> RawFd {
        self.listener.as_raw_fd()
    }

    /// Whether `fd` is one of this server's client sockets.
    pub fn is_client(&self, fd: RawFd) -> bool {
        self.clients.contains_key(&fd)
    }

    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Accepts every pending connection, greets it, and returns the new
    /// client fds to watch.
    pub fn accept(&mut self) -> Vec<RawFd> {
        let mut fds = Vec::new();
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if self.clients.len() >= MAX_CLIENTS {
                        let err = protocol::QmpError::generic(format!("too many clients (at most {MAX_CLIENTS})"));
                        let _ = stream.write_all(protocol::reply_err(&err, None).as_bytes());
                        continue;
                    }
                    if let Err(e) = stream.set_nonblocking(true) {
                        log::warn!("control socket: dropping a client: {e}");
                        continue;
                    }
                    let fd = stream.as_raw_fd();
                    let id = ClientId(self.next_id);
                    self.next_id += 1;
                    log::debug!("control socket: client {} connected", id.0);
                    let mut c = Client {
                        id,
                        stream,
                        input: Vec::new(),
                        discarding: false,
                        output: Vec::new(),
                        negotiated: false,
                    };
                    c.output.extend_from_slice(protocol::greeting().as_bytes());
                    let _ = flush(&mut c);
                    self.clients.insert(fd, c);
                    fds.push(fd);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("control socket: accept failed: {e}");
                    break;
                }
            }
        }
        fds
    }

    /// Reads what client `fd` sent, answers negotiation and malformed
    /// input itself, and returns its commands.
    pub fn read(&mut self, fd: RawFd) -> ReadOutcome {
        let mut out = ReadOutcome::default();
        let Some(c) = self.clients.get_mut(&fd) else {
            out.closed = true;
            return out;
        };
        let mut buf = [0u8; 4096];
        let mut eof = false;
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    absorb(c, &buf[..n], &mut out.requests);
                    if c.output.len() > MAX_OUTPUT_BYTES {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        let flushed = flush(c);
        if eof || flushed.is_err() || c.output.len() > MAX_OUTPUT_BYTES {
            // The caller stops watching the fd, then drops the client (in
            // that order: epoll needs the fd still open to forget it).
            out.closed = true;
            return out;
        }
        out.wants_write = !c.output.is_empty();
        out
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
        c.output.extend_from_slice(text.as_bytes());
        if flush(c).is_err() || c.output.len() > MAX_OUTPUT_BYTES {
            return SendOutcome::Closed(fd);
        }
        SendOutcome::Open { fd, wants_write: !c.output.is_empty() }
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
        if let Err(e) = std::fs::remove_file(&self.path) {
            log::warn!("cannot remove the control socket {}: {e}", self.path.display());
        }
    }
}

/// Splits `data` into lines; answers negotiation and bad lines directly.
fn absorb(c: &mut Client, data: &[u8], requests: &mut Vec<(ClientId, Request)>) {
    for &b in data {
        if b == b'\n' {
            if c.discarding {
                c.discarding = false;
            } else {
                let line = std::mem::take(&mut c.input);
                handle_line(c, &line, requests);
            }
            continue;
        }
        if c.discarding {
            continue;
        }
        if c.input.len() >= MAX_LINE_BYTES {
            c.input.clear();
            c.discarding = true;
            let err = protocol::QmpError::generic(format!("request line longer than {MAX_LINE_BYTES} bytes"));
            c.output.extend_from_slice(protocol::reply_err(&err, None).as_bytes());
            continue;
        }
        c.input.push(b);
    }
}

fn handle_line(c: &mut Client, line: &[u8], requests: &mut Vec<(ClientId, Request)>) {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    match protocol::parse_request(line) {
        Err(r) => c.output.extend_from_slice(protocol::reply_err(&r.error, r.id.as_ref()).as_bytes()),
        Ok(req) => match (&req.command, c.negotiated) {
            (Command::QmpCapabilities, false) => {
                c.negotiated = true;
                c.output.extend_from_slice(protocol::reply_ok(serde_json::json!({}), req.id.as_ref()).as_bytes());
            }
            (Command::QmpCapabilities, true) => c
                .output
                .extend_from_slice(protocol::reply_err(&protocol::already_negotiated(), req.id.as_ref()).as_bytes()),
            (_, false) => {
                c.output.extend_from_slice(protocol::reply_err(&protocol::not_negotiated(), req.id.as_ref()).as_bytes())
            }
            (_, true) => requests.push((c.id, req)),
        },
    }
}

/// Writes as much pending output as the socket takes.
fn flush(c: &mut Client) -> io::Result<()> {
    while !c.output.is_empty() {
        match c.stream.write(&c.output) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => {
                c.output.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
        assert_eq!(server.accept().len(), 1);
        let mut reader = BufReader::new(client.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains("\"QMP\""));

        client.write_all(b"{\"execute\":\"query-status\",\"id\":1}\n").unwrap();
        assert!(pump(&mut server).is_empty());
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains("Expecting capabilities negotiation"), "{line}");

        client.write_all(b"{\"execute\":\"qmp_capabilities\"}\n{\"execute\":\"query-status\",\"id\":2}\n").unwrap();
        let reqs = pump(&mut server);
        assert_eq!(reqs.len(), 1);
        assert_eq!(reqs[0].1.command, Command::QueryStatus);
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line.trim_end(), r#"{"return":{}}"#);

        let big = vec![b'x'; MAX_LINE_BYTES + 10];
        client.write_all(&big).unwrap();
        client.write_all(b"\n{\"execute\":\"quit\"}\n").unwrap();
        let mut reqs = Vec::new();
        for _ in 0..50 {
            reqs.extend(pump(&mut server));
            if !reqs.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(reqs.len(), 1, "the line after an oversized one is still served");
        line.clear();
        reader.read_line(&mut line).unwrap();
        assert!(line.contains("longer than"), "{line}");

        drop(client);
        drop(reader);
        let fd = *server.clients.keys().next().unwrap();
        assert!(server.read(fd).closed);
        server.drop_client(fd);
        assert_eq!(server.client_count(), 0);
    }
}
