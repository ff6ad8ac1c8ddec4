//! The control loop is fair (docs/qmp.md, "Fairness"): a client
//! that sends requests and never reads its replies is dropped once its
//! queue of unread output passes the bound, with a log line, while another
//! client is answered all along; and a client that pipelines a burst is
//! answered in full and in order without starving the others.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use rtswitch_tests::qmp::RawQmp;
use rtswitch_tests::vm::{BackgroundVmm, exec};
use serde_json::json;

/// Requests the greedy client sends (each reply a few KiB: far more than
/// the outbox bound in all).
const GREEDY_REQUESTS: usize = 4000;

#[test]
fn a_client_that_stops_reading_is_dropped_and_the_others_are_served() {
    let vmm = BackgroundVmm::start("slowclient", &["--vcpus", "1", "--load", "none"]);
    let mut good = vmm.session();
    let mut greedy = RawQmp::negotiated(&vmm.sock);
    greedy.w.set_write_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let writer = std::thread::spawn(move || {
        // Never reads. Writes stop when the VMM hangs up (or the socket
        // stays full for the write timeout: then the VMM stopped reading
        // it, which the test below catches through the log line).
        let mut sent = 0;
        for i in 0..GREEDY_REQUESTS {
            let req = json!({"execute": "query-latency", "arguments": {"cpus": true, "last": 64}, "id": i});
            if greedy.w.write_all(req.to_string().as_bytes()).is_err() {
                break;
            }
            sent += 1;
        }
        (sent, greedy)
    });
    // Meanwhile the other client is answered, every time.
    let start = Instant::now();
    let mut answered = 0;
    while !vmm.output().contains("dropping client") {
        assert!(start.elapsed() < Duration::from_secs(120), "the greedy client was never dropped:\n{}", vmm.output());
        let r = exec(&mut good, json!({"execute": "query-status"}));
        assert_eq!(r["return"]["running"], true, "{r}");
        answered += 1;
        std::thread::sleep(Duration::from_millis(10));
    }
    let (sent, mut greedy) = writer.join().expect("the writer thread");
    assert!(sent < GREEDY_REQUESTS, "the VMM took all {sent} requests without dropping the client");
    // The dropped client's socket is closed: what had been sent, then end
    // of file (the last reply may be cut short).
    let mut rest = Vec::new();
    greedy.w.read_to_end(&mut rest).expect("read to the end of the dropped client's socket");
    let out = vmm.output();
    let line = out.lines().find(|l| l.contains("dropping client")).unwrap_or_default();
    assert!(line.contains("stopped reading") && line.contains("limit"), "{line}");
    // The well-behaved client goes on.
    let r = exec(&mut good, json!({"execute": "query-switches"}));
    assert!(r["return"]["switches"].is_array(), "{r}");
    eprintln!("greedy client sent {sent} requests before it was dropped; the other was answered {answered} times");
    drop(good);
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_pipelined_burst_is_answered_in_order_while_others_are_served() {
    const BURST: usize = 2000;
    let vmm = BackgroundVmm::start("burst", &["--vcpus", "1", "--load", "none"]);
    let mut burst = RawQmp::negotiated(&vmm.sock);
    let mut other = vmm.session();
    let mut bytes = Vec::new();
    for i in 0..BURST {
        bytes.extend(json!({"execute": "query-mode", "id": i}).to_string().into_bytes());
    }
    let mut writer = burst.w.try_clone().expect("clone");
    let sender = std::thread::spawn(move || writer.write_all(&bytes).is_ok());
    // While the burst is taken in turns, the other client's requests are
    // answered (each within the reply timeout).
    for _ in 0..20 {
        assert_eq!(exec(&mut other, json!({"execute": "query-status"}))["return"]["running"], true);
    }
    for i in 0..BURST {
        let r = burst.reply();
        assert_eq!(r["id"], i, "out of order: {r}");
        assert!(r["return"]["mode"].is_string(), "{r}");
    }
    assert!(sender.join().expect("sender"), "the burst could not be written");
    drop((burst, other));
    let (code, out, _) = vmm.quit();
    assert_eq!(code, 0, "{out}");
}
