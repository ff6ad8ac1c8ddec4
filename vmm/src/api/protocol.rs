//! The control protocol: QMP (QEMU Machine Protocol) messages, so that
//! existing QMP clients work unchanged. Framing (where one JSON text ends
//! in the byte stream) is `framing`; this is what a text means.
//!
//! ```text
//! server: {"QMP": {"version": {...}, "capabilities": []}}        greeting
//! client: {"execute": "qmp_capabilities"}                        negotiation (required first)
//! server: {"return": {}}
//! client: {"execute": "set-mode", "arguments": {"mode": "rt"}, "id": 7}
//! server: {"return": {...}, "id": 7}                             or {"error": {"class", "desc"}, "id": 7}
//! server: {"event": "MODE_SWITCHED", "data": {...}, "timestamp": {"seconds": s, "microseconds": us}}
//! ```
//!
//! A request is read in two steps, as QEMU does: the envelope
//! ([`parse_envelope`]: a JSON object with a string `execute`, optional
//! object `arguments` and any `id`), then, once the client has negotiated,
//! the command and its arguments ([`parse_command`]). Before negotiation
//! every command but `qmp_capabilities` gets QEMU's `CommandNotFound`
//! "Expecting capabilities negotiation", whatever its arguments.
//! Everything here is pure: parsing yields a request or the error reply to
//! send; nothing can fail the caller. Error classes and texts follow
//! QEMU's where QEMU has the same case. Replies are single lines ending in
//! CRLF, as QEMU writes them.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value, json};
use switcher::locktest::Opcode;
use switcher::profile::Profile;

/// Longest reply the server sends (paging keeps every reply below it).
pub const MAX_REPLY_BYTES: usize = 256 * 1024;

/// QMP error classes used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    GenericError,
    CommandNotFound,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::GenericError => "GenericError",
            ErrorClass::CommandNotFound => "CommandNotFound",
        }
    }
}

/// An error reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QmpError {
    pub class: ErrorClass,
    pub desc: String,
}

impl QmpError {
    pub fn generic(desc: impl Into<String>) -> Self {
        Self { class: ErrorClass::GenericError, desc: desc.into() }
    }

    fn not_found(desc: impl Into<String>) -> Self {
        Self { class: ErrorClass::CommandNotFound, desc: desc.into() }
    }
}

/// Which part of a long list a query returns (the lists' owners below
/// the API take it too).
pub use crate::page::Page;

/// The page sizes of one paged query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageLimits {
    /// Entries returned when no paging argument is given (`last`).
    pub default: u64,
    /// Largest `last` or `limit` accepted.
    pub max: u64,
}

/// `query-switches`: switch records.
pub const SWITCH_PAGE: PageLimits = PageLimits { default: 32, max: 256 };
/// `query-latency`: epochs.
pub const EPOCH_PAGE: PageLimits = PageLimits { default: 8, max: 64 };

/// The commands, with their arguments checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    QmpCapabilities,
    QueryVersion,
    QueryCommands,
    QueryStatus,
    QueryMode,
    SetMode {
        mode: Profile,
    },
    /// Epochs of the page (all-CPU rows; per-CPU rows too with `cpus`),
    /// and the exact totals.
    QueryLatency {
        page: Page,
        cpus: bool,
    },
    ResetLatency,
    /// Switch records of the page, and the exact totals.
    QuerySwitches {
        page: Page,
    },
    Quit,
    /// Starts the guest of a `--paused` run (QEMU's `cont` after `-S`).
    Cont,
    /// Holds every vCPU out of guest mode and releases it, patching
    /// nothing: the platform floor of a switch's blackout (benchmarks).
    XPauseResume,
    /// Cancels the switch in progress if it has not reached its verdict.
    XCancelSwitch,
    /// Posts a command to a lock-tester thread (`locktest`).
    XLocktestCommand {
        thread: u64,
        opcode: Opcode,
        data: i32,
    },
    /// Every lock-tester thread's state.
    XLocktestState,
    /// With every vCPU held, every switched-out task's stack walked.
    XQueryStacks,
}

/// Every command name, as `query-commands` lists them.
pub const COMMANDS: &[&str] = &[
    "qmp_capabilities",
    "query-version",
    "query-commands",
    "query-status",
    "query-mode",
    "set-mode",
    "query-latency",
    "reset-latency",
    "query-switches",
    "quit",
    "cont",
    "x-pause-resume",
    "x-cancel-switch",
    "x-locktest-command",
    "x-locktest-state",
    "x-query-stacks",
];

/// The outer layer of a request: what to run, with what, and the `id`.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    pub name: String,
    pub args: Map<String, Value>,
    pub id: Option<Value>,
}

/// A parsed request: the command and the `id` to echo.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    pub command: Command,
    pub id: Option<Value>,
}

/// A request that cannot be executed: the reply to send (with the `id`,
/// when one could be read).
#[derive(Clone, Debug, PartialEq)]
pub struct Rejected {
    pub error: QmpError,
    pub id: Option<Value>,
}

/// A JSON value read strictly: a key twice in one object is an error (as
/// in QEMU: `{"execute":"query-status","execute":"quit"}` must not run
/// either command).
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::new();
        while let Some(Strict(e)) = seq.next_element()? {
            v.push(e);
        }
        Ok(Value::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut obj = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if obj.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key '{key}'")));
            }
            let Strict(v) = map.next_value()?;
            obj.insert(key, v);
        }
        Ok(Value::Object(obj))
    }
}

/// Parses one JSON text (as `framing` cut it out) into its envelope.
pub fn parse_envelope(text: &[u8]) -> Result<Envelope, Rejected> {
    let reject = |error: QmpError, id: Option<Value>| Rejected { error, id };
    let text = std::str::from_utf8(text)
        .map_err(|e| reject(QmpError::generic(format!("JSON parse error, invalid UTF-8: {e}")), None))?;
    if text.trim_start().starts_with('\'') {
        return Err(reject(
            QmpError::generic("JSON parse error, single-quoted strings (a QEMU extension) are not accepted; use '\"'"),
            None,
        ));
    }
    let value = serde_json::from_str::<Strict>(text).map_err(|e| {
        let hint =
            if text.contains('\'') { " (single-quoted strings, a QEMU extension, are not accepted)" } else { "" };
        reject(QmpError::generic(format!("JSON parse error, {e}{hint}")), None)
    })?;
    let Value::Object(mut obj) = value.0 else {
        return Err(reject(QmpError::generic("QMP input must be a JSON object"), None));
    };
    let id = obj.remove("id");
    let Some(execute) = obj.remove("execute") else {
        return Err(reject(QmpError::generic("QMP input lacks member 'execute'"), id));
    };
    let Value::String(name) = execute else {
        return Err(reject(QmpError::generic("QMP input member 'execute' must be a string"), id));
    };
    let args = match obj.remove("arguments") {
        None => Map::new(),
        Some(Value::Object(a)) => a,
        Some(_) => return Err(reject(QmpError::generic("QMP input member 'arguments' must be an object"), id)),
    };
    if let Some(extra) = obj.keys().next() {
        return Err(reject(QmpError::generic(format!("QMP input member '{extra}' is unexpected")), id));
    }
    Ok(Envelope { name, args, id })
}

/// Parses one JSON text into a request (envelope and command).
pub fn parse_request(text: &[u8]) -> Result<Request, Rejected> {
    let env = parse_envelope(text)?;
    match parse_command(&env.name, env.args) {
        Ok(command) => Ok(Request { command, id: env.id }),
        Err(error) => Err(Rejected { error, id: env.id }),
    }
}

/// An integer argument in `range`, if given.
fn int_arg(
    args: &mut Map<String, Value>,
    name: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, QmpError> {
    let Some(v) = args.remove(name) else { return Ok(None) };
    let out_of_range =
        || QmpError::generic(format!("Parameter '{name}' must be between {} and {}", range.start(), range.end()));
    match v {
        Value::Number(n) if n.is_u64() => n.as_u64().filter(|x| range.contains(x)).map(Some).ok_or_else(out_of_range),
        Value::Number(n) if n.is_i64() => Err(out_of_range()),
        _ => Err(QmpError::generic(format!("Invalid parameter type for '{name}', expected: integer"))),
    }
}

/// `last`, or `since` with an optional `limit`; `limits.default` newest
/// entries when none is given.
fn page_args(args: &mut Map<String, Value>, limits: PageLimits) -> Result<Page, QmpError> {
    let last = int_arg(args, "last", 1..=limits.max)?;
    let since = int_arg(args, "since", 0..=u64::MAX)?;
    let limit = int_arg(args, "limit", 1..=limits.max)?;
    match (last, since, limit) {
        (Some(_), Some(_), _) => Err(QmpError::generic("Parameters 'last' and 'since' cannot be used together")),
        (_, None, Some(_)) => Err(QmpError::generic("Parameter 'limit' needs 'since'")),
        (Some(n), None, None) => Ok(Page::Last(n)),
        (None, Some(since), limit) => Ok(Page::Since { since, limit: limit.unwrap_or(limits.default) }),
        (None, None, None) => Ok(Page::Last(limits.default)),
    }
}

/// `x-locktest-command`'s arguments: `thread`, `opcode` (an rt-tester
/// command name or number) and `data` (default 0), each checked.
fn locktest_command(args: &mut Map<String, Value>) -> Result<Command, QmpError> {
    let thread = int_arg(args, "thread", 0..=(switcher::locktest::THREADS as u64 - 1))?
        .ok_or_else(|| QmpError::generic("Parameter 'thread' is missing"))?;
    let text = match args.remove("opcode") {
        None => return Err(QmpError::generic("Parameter 'opcode' is missing")),
        Some(Value::String(s)) => s,
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err(QmpError::generic("Invalid parameter type for 'opcode', expected: string")),
    };
    let opcode = Opcode::parse(&text)
        .map_err(|why| QmpError::generic(format!("Parameter 'opcode' ('{}'): {why}", bounded(&text))))?;
    let data = int_arg(args, "data", 0..=u64::from(u32::MAX))?.unwrap_or(0);
    let data = opcode.check_data(data as i64).map_err(|why| QmpError::generic(format!("Parameter 'data': {why}")))?;
    Ok(Command::XLocktestCommand { thread, opcode, data })
}

/// Checks a command's arguments (the envelope already read).
pub fn parse_command(name: &str, mut args: Map<String, Value>) -> Result<Command, QmpError> {
    let command = match name {
        "qmp_capabilities" => {
            // QEMU accepts an optional "enable" list of capabilities; none
            // are offered here, so any requested one is an error.
            if let Some(enable) = args.remove("enable") {
                match enable {
                    Value::Array(a) if a.is_empty() => {}
                    Value::Array(a) => {
                        let first = a.first().map(|v| v.to_string()).unwrap_or_default();
                        return Err(QmpError::generic(format!("Capability {first} not available")));
                    }
                    _ => return Err(QmpError::generic("Invalid parameter type for 'enable', expected: array")),
                }
            }
            Command::QmpCapabilities
        }
        "query-version" => Command::QueryVersion,
        "query-commands" => Command::QueryCommands,
        "query-status" => Command::QueryStatus,
        "query-mode" => Command::QueryMode,
        "set-mode" => {
            let mode = match args.remove("mode") {
                None => return Err(QmpError::generic("Parameter 'mode' is missing")),
                Some(Value::String(s)) => match Profile::parse(&s) {
                    Ok(p) => p,
                    Err((why, item)) => {
                        return Err(QmpError::generic(format!(
                            "Parameter 'mode' does not accept value '{}' (expected 'mainline', 'rt' or \
                             'locks=mainline|rt,preempt=none|voluntary|full,irq=hard|threaded'; '{}': {why})",
                            bounded(&s),
                            bounded(item)
                        )));
                    }
                },
                Some(_) => return Err(QmpError::generic("Invalid parameter type for 'mode', expected: string")),
            };
            Command::SetMode { mode }
        }
        "query-latency" => {
            let page = page_args(&mut args, EPOCH_PAGE)?;
            let cpus = match args.remove("cpus") {
                None => false,
                Some(Value::Bool(b)) => b,
                Some(_) => return Err(QmpError::generic("Invalid parameter type for 'cpus', expected: boolean")),
            };
            Command::QueryLatency { page, cpus }
        }
        "reset-latency" => Command::ResetLatency,
        "query-switches" => Command::QuerySwitches { page: page_args(&mut args, SWITCH_PAGE)? },
        "quit" => Command::Quit,
        "cont" => Command::Cont,
        "x-pause-resume" => Command::XPauseResume,
        "x-cancel-switch" => Command::XCancelSwitch,
        "x-locktest-command" => locktest_command(&mut args)?,
        "x-locktest-state" => Command::XLocktestState,
        "x-query-stacks" => Command::XQueryStacks,
        other => return Err(QmpError::not_found(format!("The command {other} has not been found"))),
    };
    if let Some(extra) = args.keys().next() {
        return Err(QmpError::generic(format!("Parameter '{extra}' is unexpected")));
    }
    Ok(command)
}

/// Why the VM shut down, as QEMU's `SHUTDOWN` event says it
/// (`ShutdownCause` in QEMU's qapi/run-state.json; `host-duration` is
/// rtswitch's own).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownCause {
    /// The `quit` command.
    HostQmpQuit,
    /// SIGINT or SIGTERM.
    HostSignal,
    /// `--duration` passed.
    HostDuration,
    /// The VMM could not go on (a vCPU could not run).
    HostError,
    /// The guest shut down (or exited) by itself.
    GuestShutdown,
    /// The guest panicked.
    GuestPanic,
    /// The guest triple-faulted (QEMU resets then, or with -no-reboot
    /// stops with this cause).
    GuestReset,
}

impl ShutdownCause {
    /// Every cause, for documentation and tests.
    pub const ALL: [ShutdownCause; 7] = [
        ShutdownCause::HostQmpQuit,
        ShutdownCause::HostSignal,
        ShutdownCause::HostDuration,
        ShutdownCause::HostError,
        ShutdownCause::GuestShutdown,
        ShutdownCause::GuestPanic,
        ShutdownCause::GuestReset,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownCause::HostQmpQuit => "host-qmp-quit",
            ShutdownCause::HostSignal => "host-signal",
            ShutdownCause::HostDuration => "host-duration",
            ShutdownCause::HostError => "host-error",
            ShutdownCause::GuestShutdown => "guest-shutdown",
            ShutdownCause::GuestPanic => "guest-panic",
            ShutdownCause::GuestReset => "guest-reset",
        }
    }

    /// Whether the guest asked for it (QEMU's `guest` field).
    pub fn by_guest(self) -> bool {
        matches!(self, ShutdownCause::GuestShutdown | ShutdownCause::GuestPanic | ShutdownCause::GuestReset)
    }

    /// The `SHUTDOWN` event's data.
    pub fn event_data(self) -> Value {
        json!({"guest": self.by_guest(), "reason": self.as_str()})
    }
}

/// The error for any command but `qmp_capabilities` before negotiation.
pub fn not_negotiated() -> QmpError {
    QmpError::not_found("Expecting capabilities negotiation with 'qmp_capabilities'")
}

/// The error for `qmp_capabilities` after negotiation.
pub fn already_negotiated() -> QmpError {
    QmpError::not_found("Capabilities negotiation is already complete, command ignored")
}

/// The greeting sent when a client connects.
pub fn greeting() -> String {
    let v = json!({
        "QMP": {
            "version": {
                "qemu": version_triple(),
                "package": format!("rtswitch {}", env!("CARGO_PKG_VERSION")),
            },
            "capabilities": [],
        }
    });
    line(&v)
}

/// `{"major", "minor", "micro"}` of this build.
pub fn version_triple() -> Value {
    let mut parts = env!("CARGO_PKG_VERSION").split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    json!({
        "major": parts.next().unwrap_or(0),
        "minor": parts.next().unwrap_or(0),
        "micro": parts.next().unwrap_or(0),
    })
}

/// A success reply.
pub fn reply_ok(value: Value, id: Option<&Value>) -> String {
    let mut obj = Map::new();
    obj.insert("return".into(), value);
    if let Some(id) = id {
        obj.insert("id".into(), id.clone());
    }
    line(&Value::Object(obj))
}

/// An error reply.
pub fn reply_err(error: &QmpError, id: Option<&Value>) -> String {
    let mut obj = Map::new();
    obj.insert("error".into(), json!({ "class": error.class.as_str(), "desc": error.desc }));
    if let Some(id) = id {
        obj.insert("id".into(), id.clone());
    }
    line(&Value::Object(obj))
}

/// An event, stamped with the wall-clock time.
pub fn event(name: &str, data: Value, now: std::time::SystemTime) -> String {
    let since = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    line(&json!({
        "event": name,
        "data": data,
        "timestamp": { "seconds": since.as_secs(), "microseconds": since.subsec_micros() },
    }))
}

fn line(v: &Value) -> String {
    let mut s = v.to_string();
    s.push_str("\r\n");
    s
}

/// A client's string as an error message quotes it: at most 64
/// characters (the request itself is bounded, but a reply quoting it need
/// not repeat all of it).
fn bounded(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}

/// The kernel's patchable call sites by dimension, as `set-mode` and
/// `query-mode` reply them (`"sites_by_dimension": {"locks": 83,
/// "preempt": 133, "irq": 1}`) and every message says them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SiteCounts {
    pub locks: u64,
    pub preempt: u64,
    pub irq: u64,
}

impl SiteCounts {
    pub fn of(table: &switcher::patch::SiteTable) -> Self {
        use switcher::profile::Dimension;
        let n = |d| table.count_in(d) as u64;
        Self { locks: n(Dimension::Locks), preempt: n(Dimension::Preempt), irq: n(Dimension::Irq) }
    }

    /// From a reply's `sites_by_dimension` (absent: `None`).
    pub fn from_reply(ret: &Value) -> Option<Self> {
        serde::Deserialize::deserialize(ret.get("sites_by_dimension")?).ok()
    }

    pub fn total(&self) -> u64 {
        self.locks + self.preempt + self.irq
    }

    /// `83 lock, 133 preemption, 1 interrupt dispatch`.
    pub fn by_dimension(&self) -> String {
        format!("{} lock, {} preemption, {} interrupt dispatch", self.locks, self.preempt, self.irq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Request, Rejected> {
        parse_request(s.as_bytes())
    }

    #[test]
    fn parses_commands_with_ids() {
        let r = parse(r#"{"execute":"set-mode","arguments":{"mode":"rt"},"id":"abc"}"#).unwrap();
        assert_eq!(r.command, Command::SetMode { mode: Profile::RT });
        assert_eq!(r.id, Some(json!("abc")));
        let r = parse(r#"{"execute":"query-status"}"#).unwrap();
        assert_eq!((r.command, r.id), (Command::QueryStatus, None));
        assert_eq!(
            parse(r#"{"execute":"qmp_capabilities","arguments":{"enable":[]}}"#).unwrap().command,
            Command::QmpCapabilities
        );
        for name in COMMANDS {
            let args = match *name {
                "set-mode" => r#","arguments":{"mode":"mainline"}"#,
                "x-locktest-command" => r#","arguments":{"thread":1,"opcode":"lock","data":3}"#,
                _ => "",
            };
            assert!(parse(&format!(r#"{{"execute":"{name}"{args}}}"#)).is_ok(), "{name}");
        }
    }

    #[test]
    fn locktest_commands_are_checked_before_anything_is_posted() {
        let cmd = |args: &str| parse(&format!(r#"{{"execute":"x-locktest-command","arguments":{args}}}"#));
        assert_eq!(
            cmd(r#"{"thread":7,"opcode":"schedfifo","data":80}"#).unwrap().command,
            Command::XLocktestCommand { thread: 7, opcode: Opcode::SchedFifo, data: 80 }
        );
        assert_eq!(
            cmd(r#"{"thread":0,"opcode":11}"#).unwrap().command,
            Command::XLocktestCommand { thread: 0, opcode: Opcode::Signal, data: 0 }
        );
        let e = |args: &str| cmd(args).unwrap_err().error.desc;
        assert_eq!(e(r#"{"opcode":"lock"}"#), "Parameter 'thread' is missing");
        assert_eq!(e(r#"{"thread":8,"opcode":"lock"}"#), "Parameter 'thread' must be between 0 and 7");
        assert!(e(r#"{"thread":0,"opcode":"lockcont"}"#).contains("pending-owner"));
        assert!(e(r#"{"thread":0,"opcode":"lock","data":8}"#).contains("lock number must be 0..7"));
        assert!(e(r#"{"thread":0,"opcode":"schedfifo","data":99}"#).contains("1..98"));
        assert_eq!(e(r#"{"thread":0,"opcode":"lock","data":-1}"#), "Parameter 'data' must be between 0 and 4294967295");
        assert_eq!(e(r#"{"thread":0,"opcode":[1]}"#), "Invalid parameter type for 'opcode', expected: string");
        assert_eq!(e(r#"{"thread":0,"opcode":"lock","x":1}"#), "Parameter 'x' is unexpected");
    }

    #[test]
    fn malformed_input_gets_qemu_style_errors() {
        let e = |s: &str| parse(s).unwrap_err().error;
        assert!(e("{not json").desc.starts_with("JSON parse error"));
        assert_eq!(e("[1,2]").desc, "QMP input must be a JSON object");
        assert_eq!(e(r#"{"id":1}"#).desc, "QMP input lacks member 'execute'");
        assert_eq!(e(r#"{"execute":5}"#).desc, "QMP input member 'execute' must be a string");
        assert_eq!(e(r#"{"execute":"quit","arguments":[]}"#).desc, "QMP input member 'arguments' must be an object");
        assert_eq!(e(r#"{"execute":"quit","bogus":1}"#).desc, "QMP input member 'bogus' is unexpected");
        let nf = e(r#"{"execute":"frobnicate"}"#);
        assert_eq!(
            (nf.class, nf.desc.as_str()),
            (ErrorClass::CommandNotFound, "The command frobnicate has not been found")
        );
        assert_eq!(e(r#"{"execute":"set-mode"}"#).desc, "Parameter 'mode' is missing");
        assert_eq!(
            e(r#"{"execute":"set-mode","arguments":{"mode":1}}"#).desc,
            "Invalid parameter type for 'mode', expected: string"
        );
        assert!(e(r#"{"execute":"set-mode","arguments":{"mode":"fast"}}"#).desc.contains("'fast'"));
        assert_eq!(e(r#"{"execute":"quit","arguments":{"now":true}}"#).desc, "Parameter 'now' is unexpected");
        assert!(e(r#"{"execute":"qmp_capabilities","arguments":{"enable":["oob"]}}"#).desc.contains("not available"));
        assert!(parse_request(b"\xff\xfe").unwrap_err().error.desc.contains("UTF-8"));
        assert!(e("'x'").desc.contains("single-quoted"));
        assert!(e("{'execute':'quit'}").desc.contains("single-quoted"));
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let e = |s: &str| parse(s).unwrap_err().error.desc;
        assert!(e(r#"{"execute":"query-status","execute":"quit"}"#).contains("duplicate key 'execute'"));
        assert!(e(r#"{"execute":"quit","id":{"a":1,"a":2}}"#).contains("duplicate key 'a'"));
        assert!(parse(r#"{"execute":"quit","id":[{"a":1},{"a":2}]}"#).is_ok());
    }

    #[test]
    fn the_envelope_is_read_before_the_command() {
        // Before negotiation the server only looks at the envelope: a
        // command with bad arguments is still a valid envelope.
        let env = parse_envelope(br#"{"execute":"set-mode","arguments":{"mode":7},"id":3}"#).unwrap();
        assert_eq!((env.name.as_str(), env.id), ("set-mode", Some(json!(3))));
        assert!(parse_command(&env.name, env.args).is_err());
    }

    #[test]
    fn paging_arguments() {
        let cmd = |s: &str| parse(s).map(|r| r.command).map_err(|r| r.error.desc);
        let sw = |p| Ok(Command::QuerySwitches { page: p });
        assert_eq!(cmd(r#"{"execute":"query-switches"}"#), sw(Page::Last(SWITCH_PAGE.default)));
        assert_eq!(cmd(r#"{"execute":"query-switches","arguments":{"last":5}}"#), sw(Page::Last(5)));
        assert_eq!(
            cmd(r#"{"execute":"query-switches","arguments":{"since":0,"limit":256}}"#),
            sw(Page::Since { since: 0, limit: 256 })
        );
        assert_eq!(
            cmd(r#"{"execute":"query-switches","arguments":{"since":9}}"#),
            sw(Page::Since { since: 9, limit: SWITCH_PAGE.default })
        );
        assert_eq!(
            cmd(r#"{"execute":"query-latency","arguments":{"last":2,"cpus":true}}"#),
            Ok(Command::QueryLatency { page: Page::Last(2), cpus: true })
        );
        assert_eq!(
            cmd(r#"{"execute":"query-latency"}"#),
            Ok(Command::QueryLatency { page: Page::Last(EPOCH_PAGE.default), cpus: false })
        );
        for (args, why) in [
            (r#"{"last":0}"#, "between 1 and 256"),
            (r#"{"last":257}"#, "between 1 and 256"),
            (r#"{"last":-1}"#, "between 1 and 256"),
            (r#"{"last":1.5}"#, "expected: integer"),
            (r#"{"last":"3"}"#, "expected: integer"),
            (r#"{"since":1,"limit":0}"#, "between 1 and 256"),
            (r#"{"last":1,"since":1}"#, "cannot be used together"),
            (r#"{"limit":5}"#, "needs 'since'"),
            (r#"{"cpus":true}"#, "'cpus' is unexpected"),
        ] {
            let got = cmd(&format!(r#"{{"execute":"query-switches","arguments":{args}}}"#));
            assert!(got.as_ref().is_err_and(|d| d.contains(why)), "{args}: {got:?}");
        }
        let got = cmd(r#"{"execute":"query-latency","arguments":{"limit":65,"since":0}}"#);
        assert!(got.is_err_and(|d| d.contains("between 1 and 64")));
        let got = cmd(r#"{"execute":"query-latency","arguments":{"cpus":1}}"#);
        assert!(got.is_err_and(|d| d.contains("expected: boolean")));
    }

    #[test]
    fn errors_echo_the_id_when_readable() {
        let r = parse(r#"{"execute":"nope","id":42}"#).unwrap_err();
        assert_eq!(r.id, Some(json!(42)));
        assert!(reply_err(&r.error, r.id.as_ref()).contains(r#""id":42"#));
    }

    #[test]
    fn float_ids_are_echoed_as_the_same_number() {
        // Found by the hostile-input test: without correctly rounded float
        // parsing, this id came back as 6.599152259630962e+279.
        for text in ["6.59915225963096e+279", "-7.624773414498155e-265", "0.1", "1e308"] {
            let sent: Value = serde_json::from_str(text).unwrap();
            let r = parse(&format!(r#"{{"execute":"nope","id":[{text}]}}"#)).unwrap_err();
            let reply: Value = serde_json::from_str(&reply_err(&r.error, r.id.as_ref())).unwrap();
            assert_eq!(reply["id"], json!([sent]), "{text}");
        }
    }

    #[test]
    fn replies_and_events_are_single_json_lines() {
        let g = greeting();
        let v: Value = serde_json::from_str(g.trim_end()).unwrap();
        assert!(v["QMP"]["version"]["qemu"]["major"].is_u64());
        assert_eq!(v["QMP"]["capabilities"], json!([]));
        assert!(g.ends_with("\r\n") && !g.trim_end().contains('\n'));
        let ok: Value = serde_json::from_str(&reply_ok(json!({"a":1}), Some(&json!("x")))).unwrap();
        assert_eq!(ok, json!({"return":{"a":1},"id":"x"}));
        let ev: Value =
            serde_json::from_str(&event("MODE_SWITCHED", json!({"mode":"rt"}), std::time::UNIX_EPOCH)).unwrap();
        assert_eq!(ev["timestamp"], json!({"seconds":0,"microseconds":0}));
        assert_eq!(ev["event"], "MODE_SWITCHED");
    }
}
