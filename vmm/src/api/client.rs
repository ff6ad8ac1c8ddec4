//! `rtswitch ctl`: a QMP client for the control socket. It connects,
//! negotiates, sends one command with an `id`, waits for the reply with
//! that `id` (printing events that arrive meanwhile only with `--events`),
//! and prints the reply for people, or raw with `--json`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {0}: {1} (is `rtswitch run --api-sock {0}` running?)")]
    Connect(String, std::io::Error),
    #[error("control socket I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the VMM closed the connection before replying")]
    Closed,
    #[error("no reply within {0:?}; raise --timeout")]
    Timeout(Duration),
    #[error("the VMM sent something that is not QMP JSON: {0}")]
    BadReply(String),
    #[error("'{0}' is not a JSON object: {1}")]
    BadRaw(String, String),
}

/// One QMP session.
pub struct Session {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    next_id: u64,
    timeout: Duration,
    /// Bytes of a reply line read so far (a read may stop mid-line at a
    /// [`POLL`] slice).
    pending: Vec<u8>,
}

/// How often a waiting [`Session::execute_polled`] calls its `tick`.
const POLL: Duration = Duration::from_millis(50);

impl Session {
    /// Connects, reads the greeting and negotiates capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let stream = UnixStream::connect(path).map_err(|e| ClientError::Connect(path.display().to_string(), e))?;
        stream.set_read_timeout(Some(POLL.min(timeout)))?;
        let reader = BufReader::new(stream.try_clone()?);
        let mut s = Self { writer: stream, reader, next_id: 1, timeout, pending: Vec::new() };
        let greeting = s.read_message(&mut || {})?;
        if greeting.get("QMP").is_none() {
            return Err(ClientError::BadReply(greeting.to_string()));
        }
        let reply = s.execute(json!({"execute": "qmp_capabilities"}), &mut |_| {})?;
        if reply.get("error").is_some() {
            return Err(ClientError::BadReply(reply.to_string()));
        }
        Ok(s)
    }

    /// Sends `request` (an object; an `id` is added) and returns the reply
    /// with that id. Events received meanwhile go to `on_event`.
    pub fn execute(&mut self, request: Value, on_event: &mut dyn FnMut(&Value)) -> Result<Value, ClientError> {
        self.execute_polled(request, on_event, &mut || {})
    }

    /// [`Self::execute`], calling `tick` every [`POLL`] while it waits
    /// (`ctl mode` checks for Ctrl-C there).
    pub fn execute_polled(
        &mut self,
        mut request: Value,
        on_event: &mut dyn FnMut(&Value),
        tick: &mut dyn FnMut(),
    ) -> Result<Value, ClientError> {
        let id = format!("ctl-{}", self.next_id);
        self.next_id += 1;
        if let Some(obj) = request.as_object_mut() {
            obj.insert("id".into(), Value::String(id.clone()));
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes())?;
        loop {
            let msg = self.read_message(tick)?;
            if msg.get("event").is_some() {
                on_event(&msg);
                continue;
            }
            if msg.get("id").and_then(Value::as_str) == Some(id.as_str()) {
                return Ok(msg);
            }
            // A reply without our id (e.g. to a line the server could not
            // parse at all) is still the answer to what we sent.
            if msg.get("id").is_none() && (msg.get("error").is_some() || msg.get("return").is_some()) {
                return Ok(msg);
            }
        }
    }

    /// The next message, waiting at most the session's timeout.
    fn read_message(&mut self, tick: &mut dyn FnMut()) -> Result<Value, ClientError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.reader.read_until(b'\n', &mut self.pending) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(_) if self.pending.ends_with(b"\n") => {
                    let line = std::mem::take(&mut self.pending);
                    let text = String::from_utf8_lossy(&line);
                    let text = text.trim_end();
                    return serde_json::from_str(text).map_err(|_| ClientError::BadReply(text.into()));
                }
                // End of stream in the middle of a line.
                Ok(_) => return Err(ClientError::Closed),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    if Instant::now() >= deadline {
                        return Err(ClientError::Timeout(self.timeout));
                    }
                    tick();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => tick(),
                Err(e) => return Err(ClientError::Io(e)),
            }
        }
    }
}

/// Every switch record a VMM still keeps, and its exact totals.
#[derive(Clone, Debug, Default)]
pub struct SwitchList {
    /// Oldest first.
    pub records: Vec<Value>,
    /// `query-switches`' `totals` of the last page read.
    pub totals: Value,
}

/// Pages of `query-switches` read for one [`Session::switch_list`] at most.
const MAX_PAGES: usize = 64;

impl Session {
    /// Reads every retained switch record, page by page (`since`,
    /// `limit`), until a page leaves nothing out after it.
    pub fn switch_list(&mut self) -> Result<SwitchList, ClientError> {
        let mut list = SwitchList::default();
        let mut since = 0u64;
        for _ in 0..MAX_PAGES {
            let args = json!({"since": since, "limit": crate::api::protocol::SWITCH_PAGE.max});
            let r = self.execute(json!({"execute": "query-switches", "arguments": args}), &mut |_| {})?;
            let ret = r.get("return").ok_or_else(|| ClientError::BadReply(r.to_string()))?;
            let page = ret["switches"].as_array().ok_or_else(|| ClientError::BadReply(r.to_string()))?;
            list.records.extend(page.iter().cloned());
            list.totals = ret["totals"].clone();
            match page.last().and_then(|last| last["seq"].as_u64()) {
                Some(seq) if ret["omitted"]["after"].as_u64().unwrap_or(0) > 0 => since = seq + 1,
                _ => break,
            }
        }
        Ok(list)
    }
}

/// Parses a `raw` argument into a request object.
pub fn parse_raw(text: &str) -> Result<Value, ClientError> {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => {
            Err(ClientError::BadRaw(text.into(), "expected an object like {\"execute\": \"query-status\"}".into()))
        }
        Err(e) => Err(ClientError::BadRaw(text.into(), e.to_string())),
    }
}
