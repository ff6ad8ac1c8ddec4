//! A long run stays bounded (docs/qmp.md, "Bounded replies and
//! paging"): thousands of switches, driven by `set-mode` one after the
//! other, with every query asked along the way. Every reply is parsed and
//! stays under the documented bounds (defaults well under 64 KiB), the
//! totals count every switch exactly although the oldest records are
//! forgotten, and pages return exactly the switches asked for.

use rtswitch_tests::qmp::RawQmp;
use rtswitch_tests::vm::BackgroundVmm;
use serde_json::{Value, json};

/// Switches driven (more than the history keeps).
const SWITCHES: u64 = 2000;
/// docs/qmp.md: switch records kept, the largest reply, the default bound.
const HISTORY_CAPACITY: u64 = 1024;
const MAX_REPLY_BYTES: usize = 256 * 1024;
const DEFAULT_REPLY_BOUND: usize = 64 * 1024;
/// Switches between two rounds of queries.
const QUERY_EVERY: u64 = 100;
/// Bound on the whole run (on this project's host it takes about 75 s).
const LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

struct Client {
    raw: RawQmp,
    next_id: u64,
    /// Largest reply seen per query.
    largest: std::collections::BTreeMap<String, usize>,
}

impl Client {
    /// Runs `cmd`, checks the reply's size against `bound`; its `return`.
    fn run(&mut self, cmd: Value, bound: usize) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut req = cmd.clone();
        req["id"] = json!(id);
        self.raw.send(req.to_string().as_bytes());
        let r = self.raw.reply();
        assert_eq!(r["id"], id, "{cmd} -> {r}");
        let len = self.raw.last_len;
        assert!(len <= bound, "{cmd}: a reply of {len} bytes, over {bound}");
        let e = self.largest.entry(cmd.to_string()).or_default();
        *e = (*e).max(len);
        assert!(r.get("return").is_some(), "{cmd} -> {r}");
        self.raw.events.clear();
        r["return"].clone()
    }

    fn seqs(&mut self, args: Value) -> (Vec<u64>, Value) {
        let r = self.run(json!({"execute": "query-switches", "arguments": args}), MAX_REPLY_BYTES);
        let seqs =
            r["switches"].as_array().expect("switches").iter().map(|s| s["seq"].as_u64().expect("seq")).collect();
        (seqs, r["omitted"].clone())
    }

    /// Every query, each reply bounded: the defaults by 64 KiB.
    fn queries(&mut self) {
        for cmd in ["query-status", "query-mode", "query-version", "query-commands", "query-switches", "query-latency"]
        {
            self.run(json!({"execute": cmd}), DEFAULT_REPLY_BOUND);
        }
        for args in [json!({"last": 256}), json!({"since": 0, "limit": 256})] {
            self.run(json!({"execute": "query-switches", "arguments": args}), MAX_REPLY_BYTES);
        }
        for args in [json!({"cpus": true}), json!({"last": 64, "cpus": true}), json!({"since": 0, "limit": 64})] {
            self.run(json!({"execute": "query-latency", "arguments": args}), MAX_REPLY_BYTES);
        }
    }
}

#[test]
fn thousands_of_switches_keep_every_reply_bounded_and_the_totals_exact() {
    let vmm = BackgroundVmm::start(
        "longrun",
        // A slow host makes switches slow, never failed.
        &["--vcpus", "1", "--load", "none", "--switch-timeout", "20s"],
    );
    let mut c = Client { raw: RawQmp::negotiated(&vmm.sock), next_id: 0, largest: Default::default() };
    c.queries();
    let first_latency = c.largest["{\"execute\":\"query-latency\"}"];
    let started = std::time::Instant::now();
    let (mut mode, mut failed) = ("mainline", 0u64);
    for seq in 1..=SWITCHES {
        let target = if mode == "rt" { "mainline" } else { "rt" };
        c.next_id += 1;
        let id = c.next_id;
        c.raw.send(json!({"execute": "set-mode", "arguments": {"mode": target}, "id": id}).to_string().as_bytes());
        let r = c.raw.reply();
        assert_eq!(r["id"], id, "{r}");
        if r["return"]["seq"] == seq {
            mode = target;
        } else {
            // A failed switch is recorded too (nothing changed).
            assert!(r["error"]["desc"].as_str().is_some_and(|d| d.contains("nothing was patched")), "#{seq}: {r}");
            failed += 1;
        }
        c.raw.events.clear();
        assert!(started.elapsed() < LIMIT, "{seq} of {SWITCHES} switches after {LIMIT:?}:\n{}", vmm.output());
        if seq % QUERY_EVERY == 0 {
            c.queries();
        }
    }
    let elapsed = started.elapsed();

    // Exact totals, bounded retention.
    let status = c.run(json!({"execute": "query-status"}), DEFAULT_REPLY_BOUND);
    assert_eq!(status["switches"], SWITCHES, "{status}");
    let sw = c.run(json!({"execute": "query-switches"}), DEFAULT_REPLY_BOUND);
    let t = &sw["totals"];
    assert_eq!(t["recorded"], SWITCHES, "{t}");
    assert_eq!((t["completed"].as_u64(), t["failed"].as_u64()), (Some(SWITCHES - failed), Some(failed)), "{t}");
    let forgotten = SWITCHES - HISTORY_CAPACITY;
    assert_eq!((t["retained"].as_u64(), t["forgotten"].as_u64()), (Some(HISTORY_CAPACITY), Some(forgotten)), "{t}");
    assert_eq!(t["total_us"]["count"], SWITCHES - failed, "{t}");
    let fast = t["fast"].as_u64().expect("the fast path's count");

    // Pages: exactly the switches asked for, the rest counted.
    let (seqs, omitted) = c.seqs(json!({"last": 5}));
    assert_eq!(seqs, (SWITCHES - 4..=SWITCHES).collect::<Vec<_>>());
    assert_eq!(omitted, json!({"before": SWITCHES - 5, "after": 0, "unavailable": 0}));
    let (seqs, omitted) = c.seqs(json!({"since": 1500, "limit": 7}));
    assert_eq!(seqs, (1500..1507).collect::<Vec<_>>());
    assert_eq!(omitted, json!({"before": 1499, "after": SWITCHES - 1506, "unavailable": 0}));
    let (seqs, omitted) = c.seqs(json!({"since": 500, "limit": 10}));
    assert_eq!(seqs, (forgotten + 1..=forgotten + 10).collect::<Vec<_>>(), "the oldest kept, from 500 on");
    assert_eq!(omitted["unavailable"], forgotten - 499, "{omitted}");
    let (seqs, omitted) = c.seqs(json!({"since": SWITCHES + 1}));
    assert_eq!((seqs, omitted["before"].as_u64()), (vec![], Some(SWITCHES)));
    // Paging through everything kept: every retained seq once, in order.
    let (mut all, mut since) = (Vec::<u64>::new(), 0);
    for _ in 0..HISTORY_CAPACITY {
        let (seqs, omitted) = c.seqs(json!({"since": since, "limit": 256}));
        all.extend(&seqs);
        match seqs.last() {
            Some(&last) if omitted["after"].as_u64() > Some(0) => since = last + 1,
            _ => break,
        }
    }
    assert_eq!(all, (forgotten + 1..=SWITCHES).collect::<Vec<_>>());

    // Latency: every epoch counted (the boot epoch, a switching epoch per
    // cooperative switch, and a mode epoch after it unless the next
    // request came during the switching epoch's guard; switches in one
    // blackout that come faster than the guest opens epochs share them),
    // a bounded number listed.
    let lat = c.run(json!({"execute": "query-latency"}), DEFAULT_REPLY_BOUND);
    let last_latency = c.raw.last_len;
    let seen = lat["totals"]["seen"].as_u64().expect("seen");
    assert!(
        (SWITCHES - fast + 1..=2 * SWITCHES + 1).contains(&seen),
        "{seen} epochs for {SWITCHES} switches ({fast} in one blackout)"
    );
    let retained = lat["totals"]["retained"].as_u64().expect("retained");
    assert!(retained <= 64 && retained + lat["totals"]["forgotten"].as_u64().unwrap_or(0) == seen, "{}", lat["totals"]);
    assert_eq!(lat["epochs"].as_array().map(Vec::len), Some(8), "the default page");
    assert_eq!(lat["omitted"]["before"], seen - 8, "{}", lat["omitted"]);
    let modes: u64 =
        lat["modes"].as_array().expect("modes").iter().map(|m| m["epoch_count"].as_u64().unwrap_or(0)).sum();
    assert!((1..=SWITCHES + 1).contains(&modes), "{modes} mode epochs for {SWITCHES} switches");
    assert!(seen - modes <= SWITCHES, "{} switching epochs for {SWITCHES} switches", seen - modes);

    c.raw.send(br#"{"execute":"quit"}"#);
    let (code, out, report) = vmm.quit_after_request();
    assert_eq!(code, 0, "{out}");
    let report = report.unwrap_or_else(|| panic!("no JSON report\n{out}"));
    assert_eq!(report.switch_totals.recorded, SWITCHES, "{:?}", report.switch_totals);
    assert_eq!(report.switches.len() as u64, HISTORY_CAPACITY);
    assert!(report.epochs.len() <= 64);
    eprintln!(
        "{SWITCHES} switches ({failed} failed) in {:.1} s; largest replies (bytes): {:?}; default query-latency {} \
         bytes at the start, {} at the end",
        elapsed.as_secs_f64(),
        c.largest,
        first_latency,
        last_latency
    );
}
