//! The control protocol: QMP (QEMU Machine Protocol) framing and messages,
//! so that existing QMP clients work unchanged.
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
//! Messages are JSON objects, one per line (a line may not exceed
//! [`MAX_LINE_BYTES`]). Everything here is pure: parsing a line yields a
//! [`Request`] or the error reply to send; nothing can fail the caller.
//! Error classes and texts follow QEMU's where QEMU has the same case.

use serde_json::{Map, Value, json};
use switcher::abi::LockMode;

/// Longest request line accepted; a longer one gets an error reply and is
/// discarded up to its newline.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

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

/// The commands, with their arguments checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    QmpCapabilities,
    QueryVersion,
    QueryCommands,
    QueryStatus,
    QueryMode,
    SetMode {
        mode: LockMode,
    },
    QueryLatency,
    ResetLatency,
    QuerySwitches,
    Quit,
    /// Holds every vCPU out of guest mode and releases it, patching
    /// nothing: the platform floor of a switch's blackout (benchmarks).
    XPauseResume,
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
    "x-pause-resume",
];

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

/// Parses one request line (without its newline).
pub fn parse_request(line: &[u8]) -> Result<Request, Rejected> {
    let reject = |error: QmpError, id: Option<Value>| Rejected { error, id };
    let text = std::str::from_utf8(line)
        .map_err(|e| reject(QmpError::generic(format!("JSON parse error, invalid UTF-8: {e}")), None))?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| reject(QmpError::generic(format!("JSON parse error, {e}")), None))?;
    let Value::Object(mut obj) = value else {
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
    match parse_command(&name, args) {
        Ok(command) => Ok(Request { command, id }),
        Err(error) => Err(reject(error, id)),
    }
}

fn parse_command(name: &str, mut args: Map<String, Value>) -> Result<Command, QmpError> {
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
                Some(Value::String(s)) => match s.as_str() {
                    "mainline" => LockMode::Mainline,
                    "rt" => LockMode::Rt,
                    other => {
                        return Err(QmpError::generic(format!(
                            "Parameter 'mode' does not accept value '{other}' (expected 'mainline' or 'rt')"
                        )));
                    }
                },
                Some(_) => return Err(QmpError::generic("Invalid parameter type for 'mode', expected: string")),
            };
            Command::SetMode { mode }
        }
        "query-latency" => Command::QueryLatency,
        "reset-latency" => Command::ResetLatency,
        "query-switches" => Command::QuerySwitches,
        "quit" => Command::Quit,
        "x-pause-resume" => Command::XPauseResume,
        other => return Err(QmpError::not_found(format!("The command {other} has not been found"))),
    };
    if let Some(extra) = args.keys().next() {
        return Err(QmpError::generic(format!("Parameter '{extra}' is unexpected")));
    }
    Ok(command)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Request, Rejected> {
        parse_request(s.as_bytes())
    }

    #[test]
    fn parses_commands_with_ids() {
        let r = parse(r#"{"execute":"set-mode","arguments":{"mode":"rt"},"id":"abc"}"#).unwrap();
        assert_eq!(r.command, Command::SetMode { mode: LockMode::Rt });
        assert_eq!(r.id, Some(json!("abc")));
        let r = parse(r#"{"execute":"query-status"}"#).unwrap();
        assert_eq!((r.command, r.id), (Command::QueryStatus, None));
        assert_eq!(
            parse(r#"{"execute":"qmp_capabilities","arguments":{"enable":[]}}"#).unwrap().command,
            Command::QmpCapabilities
        );
        for name in COMMANDS {
            let args = if *name == "set-mode" { r#","arguments":{"mode":"mainline"}"# } else { "" };
            assert!(parse(&format!(r#"{{"execute":"{name}"{args}}}"#)).is_ok(), "{name}");
        }
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
