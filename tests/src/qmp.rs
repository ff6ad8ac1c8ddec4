//! A raw QMP connection for the protocol tests: bytes out exactly as the
//! test writes them, messages in as the server sends them (one JSON
//! object per CRLF-terminated line, docs/qmp.md).
//! Every read has a timeout; a closed connection fails the test.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::vm::REPLY_TIMEOUT;

pub struct RawQmp {
    pub w: UnixStream,
    r: BufReader<UnixStream>,
    /// Events read while waiting for replies, oldest first.
    pub events: Vec<Value>,
    /// Bytes of the last message read (its line, CRLF included).
    pub last_len: usize,
}

impl RawQmp {
    /// Connects and reads the greeting; does not negotiate.
    pub fn greeted(sock: &Path) -> (Self, Value) {
        let w = UnixStream::connect(sock).unwrap_or_else(|e| panic!("connect to {}: {e}", sock.display()));
        w.set_read_timeout(Some(REPLY_TIMEOUT)).expect("timeout");
        let r = BufReader::new(w.try_clone().expect("clone"));
        let mut c = Self { w, r, events: Vec::new(), last_len: 0 };
        let greeting = c.message();
        assert!(greeting.get("QMP").is_some(), "no greeting: {greeting}");
        (c, greeting)
    }

    /// Connects and negotiates.
    pub fn negotiated(sock: &Path) -> Self {
        let (mut c, _) = Self::greeted(sock);
        c.send(br#"{"execute":"qmp_capabilities"}"#);
        assert_eq!(c.reply(), json!({"return": {}}));
        c
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).expect("the VMM stopped reading");
    }

    /// The next message, whatever it is.
    pub fn message(&mut self) -> Value {
        self.try_message().unwrap_or_else(|| panic!("the VMM closed the connection"))
    }

    /// The next message; `None` when the connection is closed.
    pub fn try_message(&mut self) -> Option<Value> {
        let mut line = Vec::new();
        let n = self.r.read_until(b'\n', &mut line).expect("read a message (none within the timeout?)");
        if n == 0 {
            return None;
        }
        self.last_len = n;
        assert!(line.ends_with(b"\r\n"), "a message not ended by CRLF: {:?}", String::from_utf8_lossy(&line));
        Some(serde_json::from_slice(&line).unwrap_or_else(|e| {
            panic!("the VMM sent a line that is not JSON ({e}): {:?}", String::from_utf8_lossy(&line))
        }))
    }

    /// The next message that is not an event (events are kept).
    pub fn reply(&mut self) -> Value {
        loop {
            let v = self.message();
            if v.get("event").is_none() {
                return v;
            }
            self.events.push(v);
        }
    }

    /// Waits (at most `limit`) for event `name`, already read or coming.
    pub fn event(&mut self, name: &str, limit: Duration) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["event"] == name) {
            return self.events.remove(i);
        }
        let start = Instant::now();
        loop {
            assert!(start.elapsed() < limit, "no {name} event within {limit:?}; saw {:?}", self.events);
            let v = self.message();
            if v["event"] == name {
                return v;
            }
            if v.get("event").is_some() {
                self.events.push(v);
            }
        }
    }
}
