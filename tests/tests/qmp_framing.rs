//! QMP framing and negotiation on a raw socket, as QEMU does them (docs/qmp.md,
//! "Framing", "Negotiation"): requests are JSON objects cut out of a byte
//! stream — split across writes, several in one write, with or without
//! whitespace between — not lines; bad input gets one error and the
//! connection stays usable; commands before `qmp_capabilities` are "not
//! found". Every expected reply is written here from those rules, by the
//! way each input is built.

use std::time::Duration;

use rtswitch_tests::qmp::RawQmp;
use rtswitch_tests::vm::BackgroundVmm;
use serde_json::{Value, json};

/// docs/qmp.md, "Limits": the longest request, and the deepest nesting.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
const MAX_NESTING: usize = 64;

fn query(cmd: &str, id: &str) -> Vec<u8> {
    json!({"execute": cmd, "id": id}).to_string().into_bytes()
}

/// Asserts `r` is an error whose text contains `needle`, without an id.
fn assert_error(r: &Value, needle: &str) {
    let desc = r["error"]["desc"].as_str().unwrap_or_else(|| panic!("not an error: {r}"));
    assert!(desc.contains(needle), "error {desc:?} does not mention {needle:?}");
    assert_eq!(r["error"]["class"], "GenericError", "{r}");
    assert!(r.get("id").is_none(), "an id on an error for unreadable input: {r}");
}

fn assert_return(r: &Value, id: &str) {
    assert!(r.get("return").is_some(), "not a return: {r}");
    assert_eq!(r["id"], id, "{r}");
}

#[test]
fn negotiation_comes_first_as_in_qemu() {
    let vmm = BackgroundVmm::start("negotiate", &["--vcpus", "1", "--load", "none"]);
    let (mut c, greeting) = RawQmp::greeted(&vmm.sock);
    assert_eq!(greeting["QMP"]["capabilities"], json!([]), "{greeting}");
    assert!(greeting["QMP"]["version"]["qemu"]["major"].is_u64(), "{greeting}");
    // Any command but qmp_capabilities, known or not, with good or bad
    // arguments: CommandNotFound, id echoed.
    for (i, msg) in [
        r#"{"execute":"query-status","id":0}"#,
        r#"{"execute":"frobnicate","id":1}"#,
        r#"{"execute":"set-mode","arguments":{"mode":7},"id":2}"#,
        r#"{"execute":"quit","id":3}"#,
    ]
    .iter()
    .enumerate()
    {
        c.send(msg.as_bytes());
        let r = c.reply();
        assert_eq!(r["error"]["class"], "CommandNotFound", "{msg} -> {r}");
        assert_eq!(r["error"]["desc"], "Expecting capabilities negotiation with 'qmp_capabilities'", "{r}");
        assert_eq!(r["id"], i, "{r}");
    }
    // Malformed input is judged as such, negotiated or not.
    c.send(b"[1]");
    assert_error(&c.reply(), "QMP input must be a JSON object");
    c.send(br#"{"execute":"qmp_capabilities","id":"caps"}"#);
    assert_eq!(c.reply(), json!({"return": {}, "id": "caps"}));
    c.send(br#"{"execute":"qmp_capabilities"}"#);
    let r = c.reply();
    assert_eq!(r["error"]["class"], "CommandNotFound", "{r}");
    assert!(r["error"]["desc"].as_str().unwrap_or("").contains("already complete"), "{r}");
    c.send(&query("query-status", "after"));
    assert_return(&c.reply(), "after");
    drop(c);
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
}

#[test]
fn requests_are_cut_from_the_stream_not_from_lines() {
    let vmm = BackgroundVmm::start("framing", &["--vcpus", "1", "--load", "none"]);
    let mut c = RawQmp::negotiated(&vmm.sock);

    // No newline at all (as python's qemu.qmp sends).
    c.send(&query("query-status", "bare"));
    assert_return(&c.reply(), "bare");

    // Split across writes at every position, the halves apart in time.
    let msg = query("query-mode", "split");
    for cut in [1, 2, msg.len() / 3, msg.len() / 2, msg.len() - 1] {
        c.send(&msg[..cut]);
        std::thread::sleep(Duration::from_millis(20));
        c.send(&msg[cut..]);
        assert_return(&c.reply(), "split");
    }
    // One byte per write.
    for b in query("query-version", "bytewise") {
        c.send(&[b]);
    }
    assert_return(&c.reply(), "bytewise");

    // Several in one write: back to back, and with whitespace between.
    let mut many = Vec::new();
    for i in 0..3 {
        many.extend(query("query-status", &format!("coalesced-{i}")));
    }
    many.extend(b" \r\n\t\n  ");
    many.extend(query("query-mode", "spaced"));
    many.extend(b"\n");
    c.send(&many);
    for i in 0..3 {
        assert_return(&c.reply(), &format!("coalesced-{i}"));
    }
    assert_return(&c.reply(), "spaced");

    // Brackets and quotes inside strings do not end a request.
    c.send(br#"{"execute":"query-status","id":"}]{[\"\\"}"#);
    assert_eq!(c.reply()["id"], "}]{[\"\\");

    // Many pipelined in one write: every one answered, in order.
    let mut burst = Vec::new();
    for i in 0..500 {
        burst.extend(query("query-version", &format!("burst-{i}")));
    }
    c.send(&burst);
    for i in 0..500 {
        assert_return(&c.reply(), &format!("burst-{i}"));
    }
    drop(c);
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
}

#[test]
fn bad_input_gets_one_error_and_the_connection_goes_on() {
    let vmm = BackgroundVmm::start("badframes", &["--vcpus", "1", "--load", "none"]);
    let mut c = RawQmp::negotiated(&vmm.sock);
    let step = |c: &mut RawQmp, input: &[u8], error: &str, id: &str| {
        let mut bytes = input.to_vec();
        bytes.extend(query("query-status", id));
        c.send(&bytes);
        assert_error(&c.reply(), error);
        assert_return(&c.reply(), id);
    };

    // Garbage, then a valid object: one error, then the answer.
    step(&mut c, b"}}}]],:", "stray '}'", "after-stray");
    step(&mut c, b"\x80\xc3 garbage", "stray byte 0x80", "after-high-bytes");
    // A bare word is a JSON text of its own (not an object).
    step(&mut c, b"hello ", "JSON parse error", "after-word");
    step(&mut c, b"12345 ", "must be a JSON object", "after-number");
    step(&mut c, br#""a string""#, "must be a JSON object", "after-string");
    // Invalid JSON inside braces; a duplicate key; invalid UTF-8.
    step(&mut c, br#"{"execute":,}"#, "JSON parse error", "after-invalid");
    step(&mut c, br#"{"execute":"quit","execute":"query-status"}"#, "duplicate key", "after-duplicate");
    step(&mut c, b"{\"execute\":\"query-status\",\"id\":\"\xc3\x28\"}", "UTF-8", "after-utf8");
    // A control byte resets the parser: alone, and inside a value.
    step(&mut c, b"\x01", "stray byte 0x01", "after-reset");
    step(&mut c, b"{\"execute\":\"query-status\",\"id\":[1,\x1b", "discarded", "after-interrupt");
    step(&mut c, b"{\"execute\":\"query-status\",\"id\":\"line\nbreak\"}", "control character 0x0a", "after-newline");

    // Over-long: one error as soon as it passes the limit, the rest of it
    // is skipped to its end, and the request after it is served.
    let mut long = br#"{"execute":"query-status","id":""#.to_vec();
    long.resize(MAX_MESSAGE_BYTES + 5000, b'x');
    long.extend(br#""}"#);
    step(&mut c, &long, "longer than 65536 bytes", "after-long");
    // Too deep: the same.
    let deep = format!("{}1{}", "[".repeat(MAX_NESTING + 1), "]".repeat(MAX_NESTING + 1));
    step(&mut c, deep.as_bytes(), "deeper than 64", "after-deep");
    // Just within both limits: a normal request.
    let mut at_limit = br#"{"execute":"query-status","id":""#.to_vec();
    at_limit.resize(MAX_MESSAGE_BYTES - 2, b'y');
    at_limit.extend(br#""}"#);
    c.send(&at_limit);
    let r = c.reply();
    assert_eq!(r["id"].as_str().map(str::len), Some(MAX_MESSAGE_BYTES - 2 - 32), "{}", &r.to_string()[..200]);
    let nested = format!(r#"{{"execute":"query-status","id":{}1{}}}"#, "[".repeat(63), "]".repeat(63));
    c.send(nested.as_bytes());
    assert!(c.reply()["return"].is_object());

    // An unfinished request stays pending (no reply) until it is finished.
    c.send(br#"{"execute":"query-status","#);
    std::thread::sleep(Duration::from_millis(200));
    c.send(br#""id":"finished-later"}"#);
    assert_return(&c.reply(), "finished-later");
    drop(c);
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("panicked"), "{out}");
}
