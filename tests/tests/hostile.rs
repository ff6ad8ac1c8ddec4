//! Hostile input against a live VM: generated garbage on the
//! control socket, many clients at once while the mode switches, and
//! crafted kernel ELFs.
//!
//! The socket messages are generated with proptest strategies from a fixed
//! seed (`TestRunner::deterministic`), so a failure replays exactly. Each
//! generated message carries what the reply must be, derived from how it
//! was built and from the protocol rules as docs/qmp.md states them (the
//! oracle below is written from those rules; it never calls the VMM's
//! parser): a return with the id echoed, an error with the id echoed, one
//! framing error, or — for random bytes — any number of errors and never a
//! return. Valid `quit` and `set-mode` commands are never sent (they would
//! change the VM's state).
//!
//! After each message the test sends a marker query with an id of its own
//! and reads every reply up to the marker's: what came before it is the
//! answer to the message. Where the message may leave the parser inside a
//! value, a control byte (QMP's documented reset) goes before the marker.

use std::io::Write;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use rtswitch_tests::qmp::RawQmp;
use rtswitch_tests::vm::{BackgroundVmm, exec};
use rtswitch_tests::{ExitCode, RunResult, Scratch, require_kvm, run_rtswitch};
use serde_json::{Map, Value, json};

/// Messages generated for the socket.
const MESSAGES: usize = 10_000;
/// Messages between two checks that the VM still runs and answers.
const BATCH: usize = 500;

/// docs/qmp.md, "Limits".
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
const MAX_NESTING: usize = 64;
const SWITCH_PAGE_MAX: u64 = 256;
const EPOCH_PAGE_MAX: u64 = 64;
/// docs/qmp.md, "Bad input": a control character other than tab, CR, LF resets the parser.
const RESET: u8 = 0x01;

/// Sends `msg` (then a reset byte when `reset`) and a marker query;
/// returns every reply before the marker's.
fn answers(raw: &mut RawQmp, msg: &[u8], reset: bool, n: usize) -> Vec<Value> {
    let marker = json!(format!("marker-{n}"));
    let mut bytes = msg.to_vec();
    if reset {
        bytes.push(RESET);
    }
    bytes.extend_from_slice(json!({"execute": "query-version", "id": marker}).to_string().as_bytes());
    raw.send(&bytes);
    let mut before = Vec::new();
    loop {
        let r = raw.reply();
        if r.get("id") == Some(&marker) {
            assert!(r["return"]["qemu"].is_object(), "the marker was not answered: {r}");
            return before;
        }
        assert!(before.len() < 100, "more than 100 replies to one message: {before:?}");
        before.push(r);
    }
}

/// What the reply to a message must be.
#[derive(Clone, Debug, PartialEq)]
enum Expect {
    /// One `return`, echoing this id.
    Return(Option<Value>),
    /// One error, echoing this id.
    Error(Option<Value>),
    /// Any number of errors, never a return (random bytes).
    Errors,
}

/// A message, whether a reset byte must follow it (it may leave the
/// parser inside a value), and its expected answer.
#[derive(Clone, Debug)]
struct Case {
    bytes: Vec<u8>,
    reset: bool,
    expect: Expect,
}

/// Valid commands that do not change the VM's state.
const SAFE_COMMANDS: &[&str] =
    &["query-status", "query-mode", "query-version", "query-commands", "query-switches", "query-latency"];

/// Whether paging `args` are valid by docs/qmp.md's rules ("Bounded replies and paging"): `last` (1..=max)
/// or `since` (>= 0) with an optional `limit` (1..=max, only with
/// `since`), and for `query-latency` a boolean `cpus`.
fn paging_ok(args: &Map<String, Value>, max: u64, cpus: bool) -> bool {
    let int = |k: &str, lo: u64, hi: u64| -> Result<bool, ()> {
        match args.get(k) {
            None => Ok(false),
            Some(v) => v.as_u64().filter(|n| (lo..=hi).contains(n)).map(|_| true).ok_or(()),
        }
    };
    let known = args.keys().all(|k| ["last", "since", "limit"].contains(&k.as_str()) || (cpus && k == "cpus"));
    let (Ok(last), Ok(since), Ok(limit)) = (int("last", 1, max), int("since", 0, u64::MAX), int("limit", 1, max))
    else {
        return false;
    };
    known && !(last && since) && (since || !limit) && args.get("cpus").is_none_or(Value::is_boolean)
}

/// docs/qmp.md's rules for one complete JSON value from a negotiated
/// client. `None`: a valid command that changes the VM (not sent).
fn rules(v: &Value) -> Option<Expect> {
    let Some(obj) = v.as_object() else { return Some(Expect::Error(None)) };
    let id = obj.get("id").cloned();
    let error = Some(Expect::Error(id.clone()));
    if obj.keys().any(|k| !["execute", "arguments", "id"].contains(&k.as_str())) {
        return error;
    }
    let Some(Value::String(name)) = obj.get("execute") else { return error };
    let args = match obj.get("arguments") {
        None => Map::new(),
        Some(Value::Object(a)) => a.clone(),
        Some(_) => return error,
    };
    let valid = match name.as_str() {
        "query-version" | "query-commands" | "query-status" | "query-mode" => args.is_empty(),
        "query-switches" => paging_ok(&args, SWITCH_PAGE_MAX, false),
        "query-latency" => paging_ok(&args, EPOCH_PAGE_MAX, true),
        "set-mode" => {
            let mode_ok = args.len() == 1
                && (args.get("mode") == Some(&json!("rt")) || args.get("mode") == Some(&json!("mainline")));
            if mode_ok {
                return None;
            }
            false
        }
        "quit" | "reset-latency" | "x-pause-resume" | "x-cancel-switch" => {
            if args.is_empty() {
                return None;
            }
            false
        }
        // Unknown, and qmp_capabilities once negotiated.
        _ => false,
    };
    Some(if valid { Expect::Return(id) } else { Expect::Error(id) })
}

/// Any JSON value, nested up to a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (0u64..300).prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_-]{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A command name: real ones (quit and set-mode included: their argument
/// checks are exercised; valid ones are filtered out later) and made-up ones.
fn command_name() -> impl Strategy<Value = String> {
    let mut real: Vec<&str> = SAFE_COMMANDS.to_vec();
    real.extend(["quit", "set-mode", "qmp_capabilities", "reset-latency", "x-pause-resume"]);
    prop_oneof![prop::sample::select(real).prop_map(String::from), "[a-zA-Z_-]{0,20}", ".{0,10}"]
}

/// A complete object judged by [`rules`].
fn judged(v: Value) -> Option<Case> {
    let expect = rules(&v)?;
    Some(Case { bytes: v.to_string().into_bytes(), reset: false, expect })
}

/// An object shaped like a request, with members of any type.
fn request_like() -> impl Strategy<Value = Option<Case>> {
    (
        prop_oneof![command_name().prop_map(Value::String), json_value()],
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(("[a-z]{1,8}", json_value())),
    )
        .prop_map(|(execute, args, id, extra)| {
            let mut o = Map::new();
            o.insert("execute".into(), execute);
            if let Some(a) = args {
                o.insert("arguments".into(), a);
            }
            if let Some(id) = id {
                o.insert("id".into(), id);
            }
            if let Some((k, v)) = extra {
                o.insert(k, v);
            }
            judged(Value::Object(o))
        })
}

/// Commands with arguments of the right or wrong name and type (paging
/// arguments among them).
fn wrong_arguments() -> impl Strategy<Value = Option<Case>> {
    let key = prop_oneof![
        "[a-z]{1,6}",
        prop::sample::select(vec!["last", "since", "limit", "cpus", "mode"]).prop_map(String::from)
    ];
    (command_name(), prop::collection::btree_map(key, json_value(), 0..3)).prop_map(|(name, args)| {
        let args: Map<String, Value> = args.into_iter().collect();
        judged(json!({"execute": name, "arguments": args, "id": "wrong-args"}))
    })
}

/// The same key twice in one object: a JSON parse error (no id).
fn duplicate_keys() -> impl Strategy<Value = Option<Case>> {
    (prop::sample::select(vec!["execute", "id", "arguments"]), 0u32..5).prop_map(|(key, n)| {
        let text = format!(r#"{{"execute":"query-status","id":{n},"{key}":1,"{key}":2}}"#);
        let text = if key == "execute" || key == "id" {
            text
        } else {
            format!(r#"{{"execute":"query-status","id":{n},"arguments":{{}},"arguments":{{}}}}"#)
        };
        Some(Case { bytes: text.into_bytes(), reset: false, expect: Expect::Error(None) })
    })
}

/// Arrays or objects nested `depth` deep inside a request: up to the
/// documented limit they are data; deeper, one framing error (no id).
/// Left open, one error when the reset byte interrupts it.
fn deeply_nested() -> impl Strategy<Value = Option<Case>> {
    (1usize..5000, any::<bool>(), any::<bool>()).prop_map(|(depth, arrays, closed)| {
        let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
        let mut s = String::from("{\"execute\":\"query-status\",\"id\":");
        s.push_str(&open.repeat(depth));
        s.push('1');
        if closed {
            s.push_str(&close.repeat(depth));
            s.push('}');
        }
        let id = (0..depth).fold(json!(1), |v, _| {
            if arrays { Value::Array(vec![v]) } else { Value::Object(Map::from_iter([("a".to_string(), v)])) }
        });
        let expect = if closed && depth < MAX_NESTING { Expect::Return(Some(id)) } else { Expect::Error(None) };
        Some(Case { bytes: s.into_bytes(), reset: !closed, expect })
    })
}

/// A valid request cut short: the reset byte ends it with one error (an
/// empty cut: the reset byte alone, one error too).
fn truncated() -> impl Strategy<Value = Option<Case>> {
    (prop::sample::select(SAFE_COMMANDS.to_vec()), any::<prop::sample::Index>()).prop_map(|(cmd, cut)| {
        let full = json!({"execute": cmd, "id": {"n": [1, 2, 3]}}).to_string().into_bytes();
        let bytes = full[..cut.index(full.len())].to_vec();
        Some(Case { bytes, reset: true, expect: Expect::Error(None) })
    })
}

/// Bytes of any kind: any number of errors, never a return; and a request
/// with invalid UTF-8 in a string (a parse error, no id).
fn random_bytes() -> impl Strategy<Value = Option<Case>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 1..200).prop_map(|bytes| Some(Case {
            bytes,
            reset: true,
            expect: Expect::Errors
        })),
        prop::collection::vec(128u8..=253, 1..8).prop_map(|bad| {
            let mut m = b"{\"execute\":\"query-status\",\"id\":\"".to_vec();
            m.extend(bad);
            m.extend(b"\"}");
            // Valid UTF-8 by chance: then it is a valid query.
            let expect = match std::str::from_utf8(&m) {
                Ok(text) => rules(&serde_json::from_str(text).expect("valid JSON"))?,
                Err(_) => Expect::Error(None),
            };
            Some(Case { bytes: m, reset: false, expect })
        }),
    ]
}

/// Longer than the documented limit, never closed: one error; the reset
/// byte then ends the skipped rest without another.
fn oversized() -> impl Strategy<Value = Option<Case>> {
    (1usize..2 * MAX_MESSAGE_BYTES, 0x20u8..0x7f).prop_map(|(extra, fill)| {
        let fill = if fill == b'"' || fill == b'\\' { b'x' } else { fill };
        let mut m = b"{\"execute\":\"query-status\",\"id\":\"".to_vec();
        m.resize(MAX_MESSAGE_BYTES + extra, fill);
        Some(Case { bytes: m, reset: true, expect: Expect::Error(None) })
    })
}

fn hostile_message() -> impl Strategy<Value = Option<Case>> {
    prop_oneof![
        3 => request_like(),
        3 => wrong_arguments(),
        2 => random_bytes(),
        2 => truncated(),
        1 => duplicate_keys(),
        1 => deeply_nested(),
        1 => oversized(),
    ]
}

/// Checks the replies to one case.
fn check(case: &Case, replies: &[Value]) {
    let shown = String::from_utf8_lossy(&case.bytes[..case.bytes.len().min(300)]).into_owned();
    let is_error =
        |r: &Value| r["error"]["class"].is_string() && r["error"]["desc"].as_str().is_some_and(|d| !d.is_empty());
    match &case.expect {
        Expect::Return(id) => {
            assert_eq!(replies.len(), 1, "{shown}\n-> {replies:?}");
            let r = &replies[0];
            assert!(r["return"].is_object() || r["return"].is_array(), "{shown}\n-> {r}");
            assert_eq!(r.get("id"), id.as_ref(), "the id is echoed: {shown}\n-> {r}");
        }
        Expect::Error(id) => {
            assert_eq!(replies.len(), 1, "one error: {shown}\n-> {replies:?}");
            let r = &replies[0];
            assert!(is_error(r), "{shown}\n-> {r}");
            assert_eq!(r.get("id"), id.as_ref(), "the id is echoed when readable: {shown}\n-> {r}");
        }
        Expect::Errors => {
            for r in replies {
                assert!(is_error(r), "random bytes got a non-error reply: {shown}\n-> {r}");
            }
        }
    }
}

#[test]
fn ten_thousand_hostile_messages_never_kill_the_vm() {
    let vmm = BackgroundVmm::start("hostile", &["--vcpus", "2", "--load", "none"]);
    let mut control = vmm.session();
    let mut raw = RawQmp::negotiated(&vmm.sock);
    let mut runner = TestRunner::deterministic();
    let strategy = hostile_message();
    let (mut sent, mut errors, mut returns, mut skipped, mut reconnects) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let started = Instant::now();
    while sent < MESSAGES {
        let Some(case) = strategy.new_tree(&mut runner).expect("generate").current() else {
            skipped += 1;
            continue;
        };
        let replies = answers(&mut raw, &case.bytes, case.reset, sent);
        check(&case, &replies);
        for r in &replies {
            if r.get("return").is_some() {
                returns += 1;
            } else {
                errors += 1;
            }
        }
        sent += 1;
        if sent.is_multiple_of(BATCH) {
            let st = exec(&mut control, json!({"execute": "query-status"}));
            assert_eq!(st["return"]["running"], true, "after {sent} messages: {st}");
            // A truncated message, then a disconnect; and a fresh
            // connection to go on with.
            let cut = &case.bytes[..case.bytes.len() / 2];
            let _ = raw.w.write_all(cut);
            raw = RawQmp::negotiated(&vmm.sock);
            reconnects += 1;
        }
    }
    vmm.assert_alive("after the hostile messages");
    let m = exec(&mut control, json!({"execute": "query-mode"}));
    assert_eq!(m["return"]["sites_mode"], m["return"]["mode"], "{m}");
    eprintln!(
        "{sent} hostile messages in {:.1} s: {errors} error replies, {returns} returns; {skipped} generated valid \
         quit/set-mode not sent; {reconnects} mid-message disconnects",
        started.elapsed().as_secs_f64()
    );
    drop(raw);
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("panicked"), "{out}");
}

/// Open file descriptors of process `pid`.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

#[test]
fn thirty_two_clients_query_while_the_mode_switches() {
    const CLIENTS: usize = 32;
    const QUERIES: usize = 100;
    let vmm = BackgroundVmm::start(
        "clients",
        &["--vcpus", "2", "--load", "locks", "--cs-us", "20", "--interval-us", "5000", "--switch-every", "50"],
    );
    // Settle: the first switch has completed (however slow the host), so
    // the timer is switching while the clients run; every VMM thread exists.
    // One session for the whole test (opened before the descriptors are
    // counted, so it is in both counts).
    let mut watch = vmm.session();
    let mut completed =
        || exec(&mut watch, json!({"execute": "query-status"}))["return"]["switches"].as_u64().unwrap_or(0);
    let settle = Instant::now();
    while completed() == 0 {
        assert!(
            settle.elapsed() < Duration::from_secs(60),
            "--switch-every never completed a switch:\n{}",
            vmm.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let switches_before = completed();
    let (threads_before, fds_before) = (vmm.thread_count(), fd_count(vmm.pid()));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for c in 0..CLIENTS {
            let vmm = &vmm;
            scope.spawn(move || {
                let mut raw = RawQmp::negotiated(&vmm.sock);
                for n in 0..QUERIES {
                    let cmd = ["query-status", "query-mode", "query-version", "query-switches"][n % 4];
                    let id = json!({"client": c, "n": n});
                    let line = json!({"execute": cmd, "id": id}).to_string() + "\n";
                    raw.send(line.as_bytes());
                    let r = raw.reply();
                    assert_eq!(r["id"], id, "client {c} got another's reply: {r}");
                    let ret = &r["return"];
                    match cmd {
                        "query-status" => assert_eq!(ret["running"], true, "{r}"),
                        "query-mode" => assert!(ret["mode"] == "rt" || ret["mode"] == "mainline", "{r}"),
                        "query-version" => assert!(ret["qemu"]["major"].is_u64(), "{r}"),
                        _ => assert!(ret["switches"].is_array(), "{r}"),
                    }
                    // Paced so that the queries span several switches.
                    std::thread::sleep(Duration::from_millis(5));
                }
            });
        }
    });
    let elapsed = started.elapsed();
    // Every client left: no thread or descriptor stays behind.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fd_count(vmm.pid()) > fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(vmm.thread_count(), threads_before, "VMM threads before and after the clients");
    assert_eq!(fd_count(vmm.pid()), fds_before, "VMM file descriptors before and after the clients");
    // The timer kept switching (how many completed during the clients
    // depends on the host's speed: reported, not asserted).
    let switches = completed();
    assert!(switches >= switches_before, "the switch history shrank");
    drop(watch);
    let (code, out, report) = vmm.quit();
    assert_eq!(code, 0, "{out}");
    let report = report.unwrap_or_else(|| panic!("no JSON report\n{out}"));
    rtswitch_tests::vm::check_switch_history(&report.switches, "mainline");
    eprintln!(
        "{} queries from {CLIENTS} clients in {:.1} s while {} switches ran; {threads_before} VMM threads, \
         {fds_before} fds before and after",
        CLIENTS * QUERIES,
        elapsed.as_secs_f64(),
        report.switches.len()
    );
}

// ---------------------------------------------------------------------------
// Crafted kernel ELFs: refused with a clear error and exit code 6 before
// the VM starts.

const LIMIT: Duration = Duration::from_secs(30);

fn run_kernel(image: &[u8], name: &str) -> RunResult {
    require_kvm();
    let dir = Scratch::new(name);
    let k = dir.file("kernel.elf", image);
    let r = run_rtswitch(&["run", "--kernel", k.to_str().expect("utf-8"), "--duration", "0.3"], LIMIT);
    r.assert_code(ExitCode::InvalidKernel).assert_not_contains("panicked at");
    // Before the VM starts: no guest line, no boot.
    r.assert_not_contains("rtswitch guest kernel").assert_not_contains("guest ready");
    r
}

/// File offset and size of section `name` of the default kernel.
fn section(name: &str) -> (usize, usize) {
    use object::{Object, ObjectSection};
    // object reads ELF structures in place: give it an 8-byte aligned copy.
    let mut buf = vec![0u8; rtswitch::DEFAULT_KERNEL.len() + 8];
    let skew = buf.as_ptr().align_offset(8);
    let copy = &mut buf[skew..skew + rtswitch::DEFAULT_KERNEL.len()];
    copy.copy_from_slice(rtswitch::DEFAULT_KERNEL);
    let file = object::File::parse(&*copy).expect("the default kernel parses");
    let s = file.section_by_name(name).unwrap_or_else(|| panic!("no {name} section"));
    let (off, size) = s.file_range().expect("in the file");
    (off as usize, size as usize)
}

/// Rewrites site entry `index` ({addr u64, op u32, opcode u32}) with `f`.
fn with_site(index: usize, f: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let (off, size) = section(".switch_sites");
    assert!(size >= 16 * (index + 1), ".switch_sites has {size} bytes");
    let mut image = rtswitch::DEFAULT_KERNEL.to_vec();
    f(&mut image[off + 16 * index..off + 16 * (index + 1)]);
    image
}

fn site_addr(e: &[u8]) -> u64 {
    u64::from_le_bytes(e[..8].try_into().expect("8 bytes"))
}

#[test]
fn a_switch_site_outside_text_is_refused() {
    let image = with_site(3, |e| e[..8].copy_from_slice(&0x10u64.to_le_bytes()));
    run_kernel(&image, "site-outside")
        .assert_contains("switch site #")
        .assert_contains("at 0x10 is not inside an executable segment");
    // Past the end of the address space, too.
    let image = with_site(0, |e| e[..8].copy_from_slice(&(u64::MAX - 2).to_le_bytes()));
    run_kernel(&image, "site-wrap").assert_contains("not inside an executable segment");
}

#[test]
fn a_switch_site_at_the_wrong_bytes_is_refused() {
    let mut shown = 0;
    let image = with_site(1, |e| {
        shown = site_addr(e) + 1;
        e[..8].copy_from_slice(&shown.to_le_bytes());
    });
    run_kernel(&image, "site-bytes")
        .assert_contains(&format!("switch site at {shown:#x}"))
        .assert_contains("expected")
        .assert_contains("nothing was patched");
    // An opcode that is neither call nor jmp rel32, and an unknown operation.
    let image = with_site(2, |e| e[12..16].copy_from_slice(&0x90u32.to_le_bytes()));
    run_kernel(&image, "site-opcode").assert_contains("not call rel32");
    let image = with_site(2, |e| e[8..12].copy_from_slice(&77u32.to_le_bytes()));
    run_kernel(&image, "site-op").assert_contains("unknown operation 77");
    // Two entries for the same site.
    let (off, _) = section(".switch_sites");
    let mut image = rtswitch::DEFAULT_KERNEL.to_vec();
    let first: Vec<u8> = image[off..off + 16].to_vec();
    image[off + 16..off + 32].copy_from_slice(&first);
    run_kernel(&image, "site-dup").assert_contains("overlap");
}

#[test]
fn overlapping_segments_are_refused() {
    let image = rtswitch::DEFAULT_KERNEL;
    let u64_at = |off: usize| u64::from_le_bytes(image[off..off + 8].try_into().expect("8 bytes"));
    let u16_at = |off: usize| usize::from(u16::from_le_bytes([image[off], image[off + 1]]));
    // Elf64_Ehdr: e_phoff at 0x20, e_phentsize at 0x36, e_phnum at 0x38.
    // Elf64_Phdr: p_type +0 (u32), p_vaddr +16, p_paddr +24, p_memsz +40.
    let (phoff, phentsize, phnum) = (u64_at(0x20) as usize, u16_at(0x36), u16_at(0x38));
    let loads: Vec<(usize, u64, u64)> = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .filter(|&ph| u32::from_le_bytes(image[ph..ph + 4].try_into().expect("4 bytes")) == 1 && u64_at(ph + 40) > 0)
        .map(|ph| (ph, u64_at(ph + 24), u64_at(ph + 40)))
        .collect();
    assert!(loads.len() >= 2, "the default kernel has {} loadable segments", loads.len());
    // Move the second loadable segment onto the middle of the first.
    let (ph, _, _) = loads[1];
    let (_, start0, size0) = loads[0];
    let target = start0 + size0 / 2;
    let mut out = image.to_vec();
    out[ph + 16..ph + 24].copy_from_slice(&target.to_le_bytes());
    out[ph + 24..ph + 32].copy_from_slice(&target.to_le_bytes());
    run_kernel(&out, "overlap").assert_contains("overlap");
}
