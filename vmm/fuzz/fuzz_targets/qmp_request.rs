//! Fuzzes the control protocol's request parser: any bytes, split into
//! lines as the server splits them, must parse to a request or to an error
//! reply that is itself one valid JSON line — never a panic.
//!
//! Run (nightly, not in CI): `cd vmm && cargo +nightly fuzz run qmp_request`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtswitch::api::protocol::{MAX_LINE_BYTES, parse_request, reply_err, reply_ok};

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n').filter(|l| l.len() <= MAX_LINE_BYTES) {
        let reply = match parse_request(line) {
            Ok(req) => reply_ok(serde_json::json!({}), req.id.as_ref()),
            Err(rejected) => reply_err(&rejected.error, rejected.id.as_ref()),
        };
        assert!(reply.ends_with("\r\n") && !reply.trim_end().contains('\n'), "a reply is one line");
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(reply.trim_end());
        assert!(parsed.is_ok(), "a reply is valid JSON: {reply}");
    }
});
