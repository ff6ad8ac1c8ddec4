//! Fuzzes the control protocol's input path: any bytes, framed as the
//! server frames them (`framing`), must yield requests or error replies
//! that are each one valid JSON line — never a panic, and never a pending
//! text beyond the documented bound.
//!
//! Run (nightly, not in CI): `cd vmm && cargo +nightly fuzz run qmp_request`.
//! The stable test suite compile-checks it (tests/tests/fuzz_targets.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtswitch::api::framing::{Frame, Framer};
use rtswitch::api::protocol::{QmpError, parse_request, reply_err, reply_ok};

fuzz_target!(|data: &[u8]| {
    let mut framer = Framer::new();
    let mut frames = Vec::new();
    framer.push_all(data, &mut frames);
    for frame in frames {
        let reply = match frame {
            Frame::Error(e) => reply_err(&QmpError::generic(e.to_string()), None),
            Frame::Text(text) => match parse_request(&text) {
                Ok(req) => reply_ok(serde_json::json!({}), req.id.as_ref()),
                Err(rejected) => reply_err(&rejected.error, rejected.id.as_ref()),
            },
        };
        assert!(reply.ends_with("\r\n") && !reply.trim_end().contains('\n'), "a reply is one line");
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(reply.trim_end());
        assert!(parsed.is_ok(), "a reply is valid JSON: {reply}");
    }
});
