//! `rtswitch ctl`: runs one command against a VMM's control socket and
//! prints the reply, human-readable by default (`--json`: the raw reply).
//! The exit code is non-zero when the reply is an error.

use serde_json::{Value, json};

use super::client::{self, ClientError, Session};
use crate::cli::{CtlArgs, CtlCommand, Mode};
use crate::exit_code::ExitCode;

/// Runs `rtswitch ctl ...`.
pub fn run(args: &CtlArgs) -> ExitCode {
    match try_run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rtswitch ctl: error: {e}");
            ExitCode::VmmError
        }
    }
}

fn request(cmd: &CtlCommand) -> Result<Value, ClientError> {
    Ok(match cmd {
        CtlCommand::Mode { mode } => {
            let m = match mode {
                Mode::Mainline => "mainline",
                Mode::Rt => "rt",
            };
            json!({"execute": "set-mode", "arguments": {"mode": m}})
        }
        CtlCommand::Status => json!({"execute": "query-status"}),
        CtlCommand::Latency => json!({"execute": "query-latency"}),
        CtlCommand::ResetLatency => json!({"execute": "reset-latency"}),
        CtlCommand::Switches => json!({"execute": "query-switches"}),
        CtlCommand::Quit => json!({"execute": "quit"}),
        CtlCommand::Raw { json } => client::parse_raw(json)?,
    })
}

fn try_run(args: &CtlArgs) -> Result<ExitCode, ClientError> {
    let req = request(&args.command)?;
    let mut session = Session::connect(&args.api_sock, args.timeout)?;
    let reply = session.execute(req, &mut |_| {})?;
    if args.json {
        println!("{reply}");
    }
    if let Some(err) = reply.get("error") {
        if !args.json {
            let class = err.get("class").and_then(Value::as_str).unwrap_or("Error");
            let desc = err.get("desc").and_then(Value::as_str).unwrap_or("(no description)");
            eprintln!("rtswitch ctl: {class}: {desc}");
        }
        return Ok(ExitCode::GuestFailure);
    }
    if !args.json {
        let ret = reply.get("return").cloned().unwrap_or(Value::Null);
        println!("{}", human(&args.command, &ret));
    }
    Ok(ExitCode::Ok)
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
            format!(
                "switched to {} (switch #{}): total {:.3} ms, freeze {:.3} ms, blackout {:.3} ms, {} lock call sites patched",
                s(ret, "mode"),
                ret.get("seq").and_then(Value::as_u64).unwrap_or(0),
                f(ret, "total_us") / 1e3,
                f(ret, "freeze_us") / 1e3,
                f(ret, "blackout_us") / 1e3,
                ret.get("sites_patched").and_then(Value::as_u64).unwrap_or(0)
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
        CtlCommand::Switches => {
            let list = ret.get("switches").and_then(Value::as_array).cloned().unwrap_or_default();
            let mut out = format!(
                "{:>4} {:>8} -> {:<8} {:>6} {:>10} {:>12} {:>10}  reason",
                "seq", "from", "to", "ok", "freeze ms", "blackout ms", "total ms"
            );
            for r in &list {
                out.push_str(&format!(
                    "\n{:>4} {:>8} -> {:<8} {:>6} {:>10.3} {:>12.3} {:>10.3}  {}",
                    r.get("seq").and_then(Value::as_u64).unwrap_or(0),
                    s(r, "from"),
                    s(r, "to"),
                    if r.get("ok").and_then(Value::as_bool) == Some(true) { "ok" } else { "FAILED" },
                    f(r, "freeze_us") / 1e3,
                    f(r, "blackout_us") / 1e3,
                    f(r, "total_us") / 1e3,
                    s(r, "reason").replace('?', "")
                ));
            }
            if list.is_empty() {
                out.push_str("\n(no switches yet)");
            }
            out
        }
        CtlCommand::Latency => latency_table(ret),
        CtlCommand::ResetLatency => "latency statistics reset".into(),
        CtlCommand::Quit => "the VMM is shutting the guest down".into(),
        CtlCommand::Raw { .. } => serde_json::to_string_pretty(ret).unwrap_or_default(),
    }
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
    let mut out = format!(
        "{:>5} {:<10} {:>4} {:>9} {:>7}  {:>9} {:>9} {:>9}  {:>9} {:>9} {:>9}",
        "epoch", "mode", "cpu", "samples", "missed", "irq p50", "irq p99", "irq max", "thr p50", "thr p99", "thr max"
    );
    let epochs = ret.get("epochs").and_then(Value::as_array).cloned().unwrap_or_default();
    for e in &epochs {
        let rows = e.get("cpus").and_then(Value::as_array).cloned().unwrap_or_default();
        for r in rows.iter().chain(e.get("all")) {
            let cpu = r.get("cpu").and_then(Value::as_u64).map_or("all".to_string(), |c| c.to_string());
            let us = |h: &str, k: &str| latency_cell(r.get(h).and_then(|x| x.get(k)));
            out.push_str(&format!(
                "\n{:>5} {:<10} {:>4} {:>9} {:>7}  {:>9} {:>9} {:>9}  {:>9} {:>9} {:>9}",
                e.get("index").and_then(Value::as_u64).unwrap_or(0),
                s(e, "label"),
                cpu,
                r.get("samples").and_then(Value::as_u64).unwrap_or(0),
                r.get("missed").and_then(Value::as_u64).unwrap_or(0),
                us("irq", "p50"),
                us("irq", "p99"),
                us("irq", "max_us"),
                us("thread", "p50"),
                us("thread", "p99"),
                us("thread", "max_us"),
            ));
        }
    }
    if epochs.is_empty() {
        out.push_str("\n(no latency samples yet)");
    }
    out.push_str("\n(all figures in µs)");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_mode_reply() {
        let r = json!({"mode":"rt","changed":true,"seq":3,"total_us":12500,"freeze_us":10000,"blackout_us":400,"sites_patched":37});
        let t = human(&CtlCommand::Mode { mode: Mode::Rt }, &r);
        assert!(t.contains("switched to rt") && t.contains("12.500 ms") && t.contains("37 lock call sites"), "{t}");
        let t = human(&CtlCommand::Mode { mode: Mode::Rt }, &json!({"mode":"rt","changed":false}));
        assert!(t.contains("already in rt"), "{t}");
    }

    #[test]
    fn human_tables_tolerate_missing_fields() {
        assert!(human(&CtlCommand::Switches, &json!({})).contains("no switches"));
        assert!(human(&CtlCommand::Latency, &json!({})).contains("no latency samples"));
        let t = human(
            &CtlCommand::Latency,
            &json!({"epochs":[{"index":0,"label":"mainline","cpus":[{"cpu":0,"samples":5,"thread":{"p99":{"us":7,"at_least":false},"p50":{"us":10000,"at_least":true}}}]}]}),
        );
        assert!(t.contains("mainline") && t.contains(" 7") && t.contains(">=10000"), "{t}");
    }
}
