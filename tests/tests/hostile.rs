//! Hostile input against a live VM (issue 6): generated garbage on the
//! control socket, many clients at once while the mode switches, and
//! crafted kernel ELFs.
//!
//! The socket messages are generated with proptest strategies from a fixed
//! seed (`TestRunner::deterministic`), so a failure replays exactly. The
//! VMM's own parser (`rtswitch::api::protocol::parse_request`) is the
//! oracle for what each reply must be; valid `quit` and `set-mode`
//! commands are never sent (they would change the VM's state).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use rtswitch::api::protocol::{Command, MAX_LINE_BYTES, parse_request};
use rtswitch_tests::vm::{BackgroundVmm, REPLY_TIMEOUT, exec};
use rtswitch_tests::{ExitCode, RunResult, Scratch, require_kvm, run_rtswitch};
use serde_json::{Value, json};

/// Messages generated for the socket.
const MESSAGES: usize = 10_000;
/// Messages between two checks that the VM still runs and answers.
const BATCH: usize = 500;

/// A raw QMP connection, negotiated.
struct Raw {
    w: UnixStream,
    r: BufReader<UnixStream>,
}

impl Raw {
    fn connect(vmm: &BackgroundVmm) -> Self {
        let w = UnixStream::connect(&vmm.sock).expect("connect");
        w.set_read_timeout(Some(REPLY_TIMEOUT)).expect("timeout");
        let r = BufReader::new(w.try_clone().expect("clone"));
        let mut c = Self { w, r };
        assert!(c.reply().get("QMP").is_some(), "no greeting");
        c.w.write_all(b"{\"execute\":\"qmp_capabilities\"}\n").expect("write");
        assert_eq!(c.reply(), json!({"return": {}}));
        c
    }

    /// The next message that is not an event.
    fn reply(&mut self) -> Value {
        loop {
            let mut line = Vec::new();
            let n = self.r.read_until(b'\n', &mut line).expect("read a reply (none within the timeout?)");
            assert!(n > 0, "the VMM closed the connection");
            let v: Value = serde_json::from_slice(&line).unwrap_or_else(|e| {
                panic!("the VMM sent a line that is not JSON ({e}): {:?}", String::from_utf8_lossy(&line))
            });
            if v.get("event").is_none() {
                return v;
            }
        }
    }
}

/// Valid commands that do not change the VM's state.
const SAFE_COMMANDS: &[&str] =
    &["query-status", "query-mode", "query-version", "query-commands", "query-switches", "query-latency"];

/// Any JSON value, nested up to a few levels.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
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

/// An object shaped like a request, with members of any type.
fn request_like() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![command_name().prop_map(Value::String), json_value()],
        prop::option::of(json_value()),
        prop::option::of(json_value()),
        prop::option::of(("[a-z]{1,8}", json_value())),
    )
        .prop_map(|(execute, args, id, extra)| {
            let mut o = serde_json::Map::new();
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
            Value::Object(o).to_string().into_bytes()
        })
}

/// Valid commands with arguments of the wrong type or name.
fn wrong_arguments() -> impl Strategy<Value = Vec<u8>> {
    (command_name(), json_value(), "[a-z]{1,6}").prop_map(|(name, v, key)| {
        let args = if name == "set-mode" { json!({ "mode": v }) } else { json!({ key: v }) };
        json!({"execute": name, "arguments": args, "id": "wrong-args"}).to_string().into_bytes()
    })
}

/// Arrays or objects nested `depth` deep inside a request.
fn deeply_nested() -> impl Strategy<Value = Vec<u8>> {
    (1usize..5000, any::<bool>(), any::<bool>()).prop_map(|(depth, arrays, closed)| {
        let (open, close) = if arrays { ("[", "]") } else { ("{\"a\":", "}") };
        let mut s = String::from("{\"execute\":\"query-status\",\"id\":");
        s.push_str(&open.repeat(depth));
        s.push('1');
        if closed {
            s.push_str(&close.repeat(depth));
        }
        s.push('}');
        s.into_bytes()
    })
}

/// A valid request cut short.
fn truncated() -> impl Strategy<Value = Vec<u8>> {
    (prop::sample::select(SAFE_COMMANDS.to_vec()), any::<prop::sample::Index>()).prop_map(|(cmd, cut)| {
        let full = json!({"execute": cmd, "id": {"n": [1, 2, 3]}}).to_string().into_bytes();
        full[..cut.index(full.len())].to_vec()
    })
}

/// Bytes of any kind, including invalid UTF-8 (a newline ends a message
/// early, so it is replaced).
fn random_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 1..200),
        // Invalid UTF-8 inside an otherwise valid request.
        prop::collection::vec(128u8..=255, 1..8).prop_map(|bad| {
            let mut m = b"{\"execute\":\"query-status\",\"id\":\"".to_vec();
            m.extend(bad);
            m.extend(b"\"}");
            m
        }),
    ]
    .prop_map(|mut v| {
        for b in &mut v {
            if *b == b'\n' {
                *b = b'?';
            }
        }
        v
    })
}

/// Longer than the documented line limit.
fn oversized() -> impl Strategy<Value = Vec<u8>> {
    (1usize..2 * MAX_LINE_BYTES, any::<u8>()).prop_map(|(extra, fill)| {
        let fill = if fill == b'\n' { b'x' } else { fill };
        let mut m = b"{\"execute\":\"query-status\",\"id\":\"".to_vec();
        m.resize(MAX_LINE_BYTES + extra, fill);
        m
    })
}

fn hostile_message() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => request_like(),
        3 => wrong_arguments(),
        2 => random_bytes(),
        2 => truncated(),
        1 => deeply_nested(),
        1 => oversized(),
    ]
}

/// What the reply to `msg` must be, by the VMM's own parser: an error
/// (with the id when one is readable) or, for a valid query, a return.
/// `None`: do not send it (valid quit/set-mode, or nothing to answer).
fn expected(msg: &[u8]) -> Option<(bool, Option<Value>)> {
    let line = msg.strip_suffix(b"\r").unwrap_or(msg);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    if msg.len() > MAX_LINE_BYTES {
        return Some((false, None));
    }
    match parse_request(line) {
        Ok(req) => match req.command {
            Command::Quit | Command::SetMode { .. } => None,
            // Already negotiated: an error.
            Command::QmpCapabilities => Some((false, req.id)),
            _ => Some((true, req.id)),
        },
        Err(rejected) => Some((false, rejected.id)),
    }
}

#[test]
fn ten_thousand_hostile_messages_never_kill_the_vm() {
    let vmm = BackgroundVmm::start("hostile", &["--vcpus", "2", "--load", "none"]);
    let mut control = vmm.session();
    let mut raw = Raw::connect(&vmm);
    let mut runner = TestRunner::deterministic();
    let strategy = hostile_message();
    let (mut sent, mut errors, mut returns, mut skipped, mut reconnects) = (0usize, 0usize, 0usize, 0usize, 0usize);
    let started = Instant::now();
    while sent < MESSAGES {
        let msg = strategy.new_tree(&mut runner).expect("generate").current();
        let Some((ok, id)) = expected(&msg) else {
            skipped += 1;
            continue;
        };
        let mut line = msg.clone();
        line.push(b'\n');
        raw.w.write_all(&line).expect("the VMM stopped reading");
        let reply = raw.reply();
        let shown = String::from_utf8_lossy(&msg[..msg.len().min(300)]).into_owned();
        if ok {
            assert!(reply["return"].is_object() || reply["return"].is_array(), "{shown}\n-> {reply}");
            returns += 1;
        } else {
            let desc = reply["error"]["desc"].as_str().unwrap_or("");
            assert!(!desc.is_empty() && reply["error"]["class"].is_string(), "{shown}\n-> {reply}");
            errors += 1;
        }
        assert_eq!(reply.get("id"), id.as_ref(), "the id is echoed when readable: {shown}\n-> {reply}");
        sent += 1;
        if sent.is_multiple_of(BATCH) {
            let st = exec(&mut control, json!({"execute": "query-status"}));
            assert_eq!(st["return"]["running"], true, "after {sent} messages: {st}");
            // A truncated message with no newline, then a disconnect; and a
            // fresh connection to go on with.
            let cut = &msg[..msg.len() / 2];
            let _ = raw.w.write_all(cut);
            raw = Raw::connect(&vmm);
            reconnects += 1;
        }
    }
    vmm.assert_alive("after the hostile messages");
    let m = exec(&mut control, json!({"execute": "query-mode"}));
    assert_eq!(m["return"]["sites_mode"], m["return"]["mode"], "{m}");
    eprintln!(
        "{sent} hostile messages in {:.1} s: {errors} error replies, {returns} returns; {skipped} generated valid \
         quit/set-mode or blank lines not sent; {reconnects} mid-line disconnects",
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
                let mut raw = Raw::connect(vmm);
                for n in 0..QUERIES {
                    let cmd = ["query-status", "query-mode", "query-version", "query-switches"][n % 4];
                    let id = json!({"client": c, "n": n});
                    let line = json!({"execute": cmd, "id": id}).to_string() + "\n";
                    raw.w.write_all(line.as_bytes()).expect("write");
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
    let list = report["switches"].as_array().expect("switches");
    rtswitch_tests::vm::check_switch_history(list, "mainline");
    eprintln!(
        "{} queries from {CLIENTS} clients in {:.1} s while {} switches ran; {threads_before} VMM threads, \
         {fds_before} fds before and after",
        CLIENTS * QUERIES,
        elapsed.as_secs_f64(),
        list.len()
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
