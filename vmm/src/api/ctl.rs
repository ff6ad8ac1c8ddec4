//! `rtswitch ctl`: runs one command against a VMM's control socket and
//! prints the reply, human-readable by default (`--json`: the raw reply).
//! Its exit codes are its own ([`CtlExit`], docs/usage.md, "Exit codes"), not
//! `rtswitch run`'s.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::client::{self, ClientError, Session};
use super::protocol::SiteCounts;
use crate::cli::{CtlArgs, CtlCommand, PageArgs};
use crate::report::summary::{Figure, columns, ratio_line};

/// How `rtswitch ctl` ended, as its exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum CtlExit {
    /// The command succeeded (a `return` reply).
    Ok = 0,
    /// The VMM answered with an error: the command was refused or failed
    /// (e.g. a switch that could not complete; nothing changed).
    ErrorReply = 1,
    /// The command line was invalid (also: a `raw` argument that is not a
    /// JSON object).
    BadArguments = 2,
    /// Nothing to talk to: the socket cannot be connected to.
    NoConnection = 3,
    /// The VMM hung up before replying, or sent something that is not QMP.
    Protocol = 4,
    /// No reply within `--timeout`.
    Timeout = 5,
}

impl CtlExit {
    /// Every code, for documentation and tests.
    pub const ALL: [CtlExit; 6] = [
        CtlExit::Ok,
        CtlExit::ErrorReply,
        CtlExit::BadArguments,
        CtlExit::NoConnection,
        CtlExit::Protocol,
        CtlExit::Timeout,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    /// The code for a failure to get a reply.
    pub fn of(e: &ClientError) -> Self {
        match e {
            ClientError::Connect(..) => CtlExit::NoConnection,
            ClientError::Io(_) | ClientError::Closed | ClientError::BadReply(_) => CtlExit::Protocol,
            ClientError::Timeout(_) => CtlExit::Timeout,
            ClientError::BadRaw(..) => CtlExit::BadArguments,
        }
    }
}

impl From<CtlExit> for std::process::ExitCode {
    fn from(c: CtlExit) -> Self {
        std::process::ExitCode::from(c.code())
    }
}

/// Runs `rtswitch ctl ...`.
pub fn run(args: &CtlArgs) -> CtlExit {
    match try_run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rtswitch ctl: error: {e}");
            CtlExit::of(&e)
        }
    }
}

/// `query-switches`/`query-latency` paging arguments from the options.
fn page(p: &PageArgs) -> Map<String, Value> {
    let mut args = Map::new();
    for (name, v) in [("last", p.last), ("since", p.since), ("limit", p.limit)] {
        if let Some(v) = v {
            args.insert(name.into(), json!(v));
        }
    }
    args
}

fn request(cmd: &CtlCommand) -> Result<Value, ClientError> {
    Ok(match cmd {
        CtlCommand::Mode { mode } => {
            json!({"execute": "set-mode", "arguments": {"mode": mode.name()}})
        }
        CtlCommand::Status => json!({"execute": "query-status"}),
        CtlCommand::Latency { page: p } => {
            let mut args = page(p);
            args.insert("cpus".into(), json!(true));
            json!({"execute": "query-latency", "arguments": args})
        }
        CtlCommand::ResetLatency => json!({"execute": "reset-latency"}),
        CtlCommand::Switches { page: p } => json!({"execute": "query-switches", "arguments": page(p)}),
        CtlCommand::Quit => json!({"execute": "quit"}),
        CtlCommand::Cont => json!({"execute": "cont"}),
        CtlCommand::Raw { request } => client::parse_raw(request)?,
    })
}

fn try_run(args: &CtlArgs) -> Result<CtlExit, ClientError> {
    let Some(sock) = args.api_sock.as_deref() else {
        eprintln!("rtswitch ctl: error: --api-sock PATH is required (the socket of `rtswitch run --api-sock PATH`)");
        return Ok(CtlExit::BadArguments);
    };
    let req = request(&args.command)?;
    let mut session = Session::connect(sock, args.timeout)?;
    let reply = if matches!(args.command, CtlCommand::Mode { .. }) {
        let mut cancel = CancelOnInterrupt::install(sock);
        session.execute_polled(req, &mut |_| {}, &mut || cancel.poll())?
    } else {
        session.execute(req, &mut |_| {})?
    };
    if args.json {
        println!("{reply}");
    }
    if let Some(err) = reply.get("error") {
        if !args.json {
            let class = err.get("class").and_then(Value::as_str).unwrap_or("Error");
            let desc = err.get("desc").and_then(Value::as_str).unwrap_or("(no description)");
            // The VMM's text may quote the guest: one inert line (`guest_text`).
            let (class, desc) = (crate::guest_text::escape_str(class), crate::guest_text::escape_str(desc));
            eprintln!("rtswitch ctl: {class}: {desc}");
        }
        return Ok(CtlExit::ErrorReply);
    }
    if !args.json {
        let ret = reply.get("return").cloned().unwrap_or(Value::Null);
        println!("{}", shown(&human(&args.command, &ret)));
    }
    Ok(CtlExit::Ok)
}

/// `text` for the terminal: every line escaped (names in a reply come
/// from the guest, `guest_text`), the line breaks kept.
fn shown(text: &str) -> String {
    text.lines().map(crate::guest_text::escape_str).collect::<Vec<_>>().join("\n")
}

/// SIGINT/SIGTERM seen by `ctl mode` (the handler only counts).
static INTERRUPTS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_interrupt(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if INTERRUPTS.fetch_add(1, Ordering::Relaxed) >= 1 {
        // SAFETY: _exit(2) is async-signal-safe; a second Ctrl-C stops
        // ctl at once, as the help says (the switch goes on in the VMM).
        unsafe { libc::_exit(130) };
    }
}

/// Ctrl-C while `ctl mode` waits: cancel the switch (`x-cancel-switch` on
/// a second connection), then keep waiting for its reply.
struct CancelOnInterrupt<'a> {
    sock: &'a Path,
    sent: bool,
}

impl<'a> CancelOnInterrupt<'a> {
    fn install(sock: &'a Path) -> Self {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            if let Err(e) = vmm_sys_util::signal::register_signal_handler(sig, on_interrupt) {
                log::warn!("cannot catch signal {sig}: {e}; Ctrl-C will not cancel the switch");
            }
        }
        Self { sock, sent: false }
    }

    fn poll(&mut self) {
        if self.sent || INTERRUPTS.load(Ordering::Relaxed) == 0 {
            return;
        }
        self.sent = true;
        let r = Session::connect(self.sock, CANCEL_TIMEOUT)
            .and_then(|mut s| s.execute(json!({"execute": "x-cancel-switch"}), &mut |_| {}));
        match r {
            Ok(reply) => {
                let ret = &reply["return"];
                if ret["cancelled"].as_bool() == Some(true) {
                    eprintln!(
                        "rtswitch ctl: interrupted: switch #{} cancelled, waiting for the guest to thaw in the old \
                         mode (Ctrl-C again: stop waiting)",
                        ret["seq"]
                    );
                } else {
                    let why = ret["reason"].as_str().or(reply["error"]["desc"].as_str()).unwrap_or("?");
                    let why = crate::guest_text::escape_str(why);
                    eprintln!(
                        "rtswitch ctl: interrupted, but the switch cannot be cancelled: {why}; waiting for it to end \
                         (Ctrl-C again: stop waiting)"
                    );
                }
            }
            Err(e) => eprintln!("rtswitch ctl: interrupted, but cannot ask to cancel the switch: {e}"),
        }
    }
}

/// How long the cancel request may take.
const CANCEL_TIMEOUT: Duration = Duration::from_secs(5);

/// "N earlier ..., M later ... not shown" from a reply's `omitted`.
fn omitted_line(ret: &Value, what: &str) -> Option<String> {
    let o = &ret["omitted"];
    let n = |k: &str| o[k].as_u64().unwrap_or(0);
    let mut parts = Vec::new();
    if n("before") > 0 {
        parts.push(format!("{} earlier", n("before")));
    }
    if n("after") > 0 {
        parts.push(format!("{} later", n("after")));
    }
    if parts.is_empty() {
        return None;
    }
    let mut line = format!("({} {what} not shown; page with --last N or --since N --limit M", parts.join(", "));
    if n("unavailable") > 0 {
        line.push_str(&format!("; {} asked for are no longer kept", n("unavailable")));
    }
    line.push(')');
    Some(line)
}

fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(0.0)
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("?")
}

/// A reply for people.
pub fn human(cmd: &CtlCommand, ret: &Value) -> String {
    match cmd {
        CtlCommand::Mode { .. } => {
            if ret.get("changed").and_then(Value::as_bool) == Some(false) {
                return format!("already in {} mode; nothing to do", s(ret, "mode"));
            }
            let patched = ret.get("sites_patched").and_then(Value::as_u64).unwrap_or(0);
            let by = SiteCounts::from_reply(ret).map(|c| format!(" ({})", c.by_dimension())).unwrap_or_default();
            format!(
                "switched to {} (switch #{}): total {:.3} ms, freeze {:.3} ms, blackout {:.3} ms, {patched} call sites patched{by}",
                s(ret, "mode"),
                ret.get("seq").and_then(Value::as_u64).unwrap_or(0),
                f(ret, "total_us") / 1e3,
                f(ret, "freeze_us") / 1e3,
                f(ret, "blackout_us") / 1e3,
            )
        }
        CtlCommand::Status => format!(
            "{}; mode {}{}; {} vCPUs; up {:.1} s; {} switches",
            s(ret, "status"),
            s(ret, "mode"),
            ret.get("switching").and_then(Value::as_str).map(|t| format!(" (switching to {t})")).unwrap_or_default(),
            ret.get("vcpus").and_then(Value::as_u64).unwrap_or(0),
            f(ret, "uptime_s"),
            ret.get("switches").and_then(Value::as_u64).unwrap_or(0)
        ),
        CtlCommand::Switches { .. } => {
            let list = ret.get("switches").and_then(Value::as_array).cloned().unwrap_or_default();
            let mut out = switches_table(&list);
            if list.is_empty() {
                out.push_str("\n(no switches listed)");
            }
            let t = &ret["totals"];
            if let Some(n) = t["recorded"].as_u64() {
                out.push_str(&format!(
                    "\n{n} switches in all: {} completed, {} failed",
                    t["completed"].as_u64().unwrap_or(0),
                    t["failed"].as_u64().unwrap_or(0)
                ));
                if let Some(total) = t["total_us"].as_object() {
                    let ms = |k: &str| total.get(k).and_then(Value::as_f64).unwrap_or(0.0) / 1e3;
                    out.push_str(&format!(
                        "; total min / p50 / p99 / max {:.3} / {:.3} / {:.3} / {:.3} ms",
                        ms("min_us"),
                        ms("p50_us"),
                        ms("p99_us"),
                        ms("max_us")
                    ));
                }
            }
            if let Some(line) = omitted_line(ret, "switches") {
                out.push('\n');
                out.push_str(&line);
            }
            out
        }
        CtlCommand::Latency { .. } => latency_table(ret),
        CtlCommand::ResetLatency => "latency statistics reset".into(),
        CtlCommand::Quit => "the VMM is shutting the guest down".into(),
        CtlCommand::Cont => "the guest runs".into(),
        CtlCommand::Raw { .. } => serde_json::to_string_pretty(ret).unwrap_or_default(),
    }
}

/// `ctl switches`' table: columns as wide as their contents (profile
/// names are long), `-` for the timings of a failed switch (it has none:
/// the VMM records 0), the reason last.
fn switches_table(list: &[Value]) -> String {
    let head = ["seq", "from", "->", "to", "ok", "freeze ms", "blackout ms", "total ms", "reason"];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|h| h.to_string()).collect()];
    for r in list {
        let ok = r.get("ok").and_then(Value::as_bool) == Some(true);
        let ms = |k: &str| if ok { format!("{:.3}", f(r, k) / 1e3) } else { "-".to_string() };
        let reason = r.get("reason").and_then(Value::as_str).filter(|x| !x.is_empty()).unwrap_or("-");
        rows.push(vec![
            r.get("seq").and_then(Value::as_u64).map_or_else(|| "-".to_string(), |n| n.to_string()),
            s(r, "from").to_string(),
            "->".into(),
            s(r, "to").to_string(),
            if ok { "ok" } else { "FAILED" }.into(),
            ms("freeze_us"),
            ms("blackout_us"),
            ms("total_us"),
            reason.to_string(),
        ]);
    }
    columns(&rows, &[1, 3, 4, 8]).join("\n")
}

/// A latency figure: a number of µs, or a percentile `{"us", "at_least"}`
/// (`>=N` when it lies in the histogram's overflow).
fn latency_cell(v: Option<&Value>) -> String {
    match v {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Object(o)) => {
            let us = o.get("us").and_then(Value::as_u64).map_or("?".into(), |u| u.to_string());
            if o.get("at_least").and_then(Value::as_bool) == Some(true) { format!(">={us}") } else { us }
        }
        _ => "-".into(),
    }
}

fn latency_table(ret: &Value) -> String {
    let head =
        ["epoch", "mode", "cpu", "samples", "missed", "|", "irq p50", "p99", "max", "|", "thread p50", "p99", "max"];
    let mut rows: Vec<Vec<String>> = vec![head.iter().map(|h| h.to_string()).collect()];
    let row = |epoch: String, label: &str, r: &Value| -> Vec<String> {
        let us = |h: &str, k: &str| latency_cell(r.get(h).and_then(|x| x.get(k)));
        vec![
            epoch,
            label.to_string(),
            r.get("cpu").and_then(Value::as_u64).map_or("all".to_string(), |c| c.to_string()),
            r.get("samples").and_then(Value::as_u64).unwrap_or(0).to_string(),
            r.get("missed").and_then(Value::as_u64).unwrap_or(0).to_string(),
            "|".into(),
            us("irq", "p50"),
            us("irq", "p99"),
            us("irq", "max_us"),
            "|".into(),
            us("thread", "p50"),
            us("thread", "p99"),
            us("thread", "max_us"),
        ]
    };
    let epochs = ret.get("epochs").and_then(Value::as_array).cloned().unwrap_or_default();
    for e in &epochs {
        let index = e.get("index").and_then(Value::as_u64).unwrap_or(0).to_string();
        let cpus = e.get("cpus").and_then(Value::as_array).cloned().unwrap_or_default();
        for r in cpus.iter().chain(e.get("all")) {
            rows.push(row(index.clone(), s(e, "label"), r));
        }
    }
    let modes = ret.get("modes").and_then(Value::as_array).cloned().unwrap_or_default();
    for m in &modes {
        let mut r = row("all".into(), s(m, "mode"), m);
        r.push(format!("({} epochs)", m.get("epoch_count").and_then(Value::as_u64).unwrap_or(0)));
        rows.push(r);
    }
    let mut out = columns(&rows, &[1, 13]).join("\n");
    if epochs.is_empty() {
        out.push_str("\n(no latency samples yet)");
    }
    let thread = |mode: &str| -> Option<[Figure; 3]> {
        let t = &modes.iter().find(|m| s(m, "mode") == mode)?["thread"];
        let pct = |k: &str| {
            let p = &t[k];
            Some((p["us"].as_f64()?, p["at_least"].as_bool() == Some(true)))
        };
        Some([pct("p50"), pct("p99"), t["max_ns"].as_f64().map(|n| (n / 1000.0, false))])
    };
    if let (Some(rt), Some(ml)) = (thread("rt"), thread("mainline"))
        && let Some(line) = ratio_line(rt, ml)
    {
        out.push_str(&format!("\n  {line}"));
    }
    if let Some(line) = omitted_line(ret, "epochs") {
        out.push('\n');
        out.push_str(&line);
    }
    out.push_str(
        "\n(all figures in µs; \"sw:<mode>\": a switching epoch, from that mode; \"all <mode>\": every epoch of that \
         mode merged)",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_mode_reply() {
        let r = json!({"mode":"rt","changed":true,"seq":3,"total_us":12500,"freeze_us":10000,"blackout_us":400,"sites_patched":37,
            "sites_by_dimension":{"locks":20,"preempt":16,"irq":1}});
        let t = human(&CtlCommand::Mode { mode: switcher::profile::Profile::RT }, &r);
        assert!(t.contains("switched to rt") && t.contains("12.500 ms"), "{t}");
        assert!(t.ends_with("37 call sites patched (20 lock, 16 preemption, 1 interrupt dispatch)"), "{t}");
        let t =
            human(&CtlCommand::Mode { mode: switcher::profile::Profile::RT }, &json!({"mode":"rt","changed":false}));
        assert!(t.contains("already in rt"), "{t}");
    }

    #[test]
    fn human_tables_tolerate_missing_fields() {
        let switches = CtlCommand::Switches { page: PageArgs::default() };
        let latency = CtlCommand::Latency { page: PageArgs::default() };
        assert!(human(&switches, &json!({})).contains("no switches"));
        assert!(human(&latency, &json!({})).contains("no latency samples"));
        let t = human(
            &latency,
            &json!({"epochs":[{"index":0,"label":"mainline","cpus":[{"cpu":0,"samples":5,"thread":{"p99":{"us":7,"at_least":false},"p50":{"us":10000,"at_least":true}}}]}]}),
        );
        assert!(t.contains("mainline") && t.contains(" 7") && t.contains(">=10000"), "{t}");
    }

    #[test]
    fn the_switches_table_stays_aligned_with_profile_names_and_shows_no_timings_for_a_failed_switch() {
        let switches = CtlCommand::Switches { page: PageArgs::default() };
        let long = "locks=rt,preempt=full,irq=threaded";
        let r = json!({"switches": [
            {"seq": 1, "from": "mainline", "to": "rt", "ok": true, "freeze_us": 1500, "blackout_us": 120, "total_us": 3000, "reason": ""},
            {"seq": 2, "from": "rt", "to": long, "ok": true, "freeze_us": 900, "blackout_us": 99, "total_us": 12345, "reason": ""},
            {"seq": 3, "from": long, "to": "mainline", "ok": false, "freeze_us": 0, "blackout_us": 0, "total_us": 0,
             "reason": "task 'lock-hog' on cpu 1 did not reach a safe point"}]});
        let t = human(&switches, &r);
        println!("{t}");
        let lines: Vec<&str> = t.lines().collect();
        for col in ["->", "freeze ms"] {
            let at = lines[0].find(col).expect(col);
            assert!(lines[1..4].iter().all(|l| l.len() > at), "{t}");
        }
        // Every row's columns line up: the "->" and the ok cell start where the heading's do.
        let arrow = lines[0].find("->").unwrap();
        assert!(lines[1..4].iter().all(|l| &l[arrow..arrow + 2] == "->"), "{t}");
        let ok_at = lines[0].find(" ok").unwrap() + 1;
        assert!(lines[1..3].iter().all(|l| &l[ok_at..ok_at + 2] == "ok"), "{t}");
        assert_eq!(&lines[3][ok_at..ok_at + 6], "FAILED", "{t}");
        let failed: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(&failed[5..8], ["-", "-", "-"], "a failed switch has no timings: {t}");
        assert!(lines[3].ends_with("did not reach a safe point"), "{t}");
        assert!(!t.contains("0.000"), "{t}");
    }

    #[test]
    fn pages_say_what_they_leave_out() {
        let switches = CtlCommand::Switches { page: PageArgs::default() };
        let r = json!({"switches": [{"seq": 40, "from": "rt", "to": "mainline", "ok": true}],
            "totals": {"recorded": 41, "completed": 40, "failed": 1, "total_us": {"min_us": 1000, "p50_us": 2000,
            "p99_us": 3000, "max_us": 4000}}, "omitted": {"before": 39, "after": 1, "unavailable": 0}});
        let t = human(&switches, &r);
        assert!(t.contains("41 switches in all: 40 completed, 1 failed"), "{t}");
        assert!(t.contains("39 earlier, 1 later switches not shown"), "{t}");
        assert!(t.contains("2.000 / 3.000 / 4.000 ms"), "{t}");
        let latency = CtlCommand::Latency { page: PageArgs::default() };
        let r = json!({"epochs": [], "modes": [{"mode": "rt", "samples": 9, "epoch_count": 3,
            "thread": {"p99": {"us": 5, "at_least": false}}}], "omitted": {"before": 2, "after": 0}});
        let t = human(&latency, &r);
        assert!(t.contains("all rt") && t.contains("(3 epochs)") && t.contains("2 earlier epochs"), "{t}");
    }

    #[test]
    fn latency_table_stays_aligned_and_gives_the_ratio() {
        let latency = CtlCommand::Latency { page: PageArgs::default() };
        let p = |us: u64| json!({"us": us, "at_least": false});
        let row = |cpu: Value, n: u64, p50: u64, max: u64| {
            json!({"cpu": cpu, "samples": n, "missed": 0, "irq": {"p50": p(1), "p99": p(2), "max_us": 3},
                "thread": {"p50": p(p50), "p99": p(p50 * 2), "max_us": max, "max_ns": max * 1000}})
        };
        let r = json!({
            "epochs": [
                {"index": 0, "label": "mainline", "cpus": [row(json!(0), 900, 200, 1000)], "all": row(Value::Null, 900, 200, 1000)},
                {"index": 1, "label": "sw:mainline", "cpus": [row(json!(0), 3, 150, 300)], "all": row(Value::Null, 3, 150, 300)},
                {"index": 2, "label": "rt", "cpus": [row(json!(0), 12345, 100, 4000)], "all": row(Value::Null, 12345, 100, 4000)}],
            "modes": [
                {"mode": "mainline", "epoch_count": 1, "samples": 900, "thread": {"p50": p(200), "p99": p(400), "max_us": 1000, "max_ns": 1_000_000}},
                {"mode": "rt", "epoch_count": 1, "samples": 12345, "thread": {"p50": p(100), "p99": {"us": 10000, "at_least": true}, "max_us": 4000, "max_ns": 4_000_000}}]});
        let t = human(&latency, &r);
        println!("{t}");
        let lines: Vec<&str> = t.lines().take(9).collect();
        let bar = lines[0].find('|').expect("a group bar");
        assert!(lines.iter().all(|l| l.find('|') == Some(bar)), "every row's first '|' in one column:\n{t}");
        assert!(lines.iter().all(|l| l.len() <= lines[0].len() + 12), "{t}");
        assert!(t.contains("sw:mainline"), "{t}");
        assert!(
            t.contains(
                "rt gain = mainline / rt thread latency (every epoch of each mode merged; above 1x rt is lower): p50 \
                 2.00x, p99 <=0.04x, max 0.25x"
            ),
            "{t}"
        );
    }

    #[test]
    fn exit_codes_are_distinct_and_zero_only_for_ok() {
        let mut seen = std::collections::HashSet::new();
        for c in CtlExit::ALL {
            assert!(seen.insert(c.code()), "{c:?} reuses a code");
            assert_eq!(c.code() == 0, c == CtlExit::Ok);
        }
        let timeout = ClientError::Timeout(std::time::Duration::from_secs(1));
        assert_eq!(CtlExit::of(&timeout), CtlExit::Timeout);
        assert_eq!(CtlExit::of(&ClientError::Closed), CtlExit::Protocol);
        let refused = std::io::Error::from(std::io::ErrorKind::NotFound);
        assert_eq!(CtlExit::of(&ClientError::Connect("/x".into(), refused)), CtlExit::NoConnection);
        assert_eq!(CtlExit::of(&client::parse_raw("[1]").unwrap_err()), CtlExit::BadArguments);
    }

    #[test]
    fn a_guest_name_in_a_reply_reaches_the_terminal_escaped() {
        let switches = CtlCommand::Switches { page: PageArgs::default() };
        let r = json!({"switches": [
            {"seq": 1, "from": "mainline", "to": "rt", "ok": false, "freeze_us": 0, "blackout_us": 0, "total_us": 0,
             "reason": "task 'x\u{1b}[2K\rrtswitch: fake' on cpu 1 did not reach a safe point"}]});
        let t = shown(&human(&switches, &r));
        assert!(!t.contains('\x1b') && !t.contains('\r'), "{t:?}");
        assert!(t.contains("\\x1b[2K\\rrtswitch: fake"), "{t}");
    }
}
