//! One `rtswitch run` (this executable) in a child process, bounded in
//! time, whose `--json` report the benchmark reads: how the latency and
//! boot families run their VMs.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rtswitch::child::Launched;
use rtswitch::report::json::RunReport;

/// What one child run left behind.
#[derive(Debug)]
pub struct ChildRun {
    /// The exit status (`None`: killed at the time limit, or never started).
    pub exit_code: Option<i32>,
    pub elapsed_s: f64,
    /// Ctrl-C on the suite reached it: it shut down early (its report
    /// covers the time it ran).
    pub interrupted: bool,
    /// The `--json` report, or why there is none (with the run's last lines).
    pub report: Result<RunReport, String>,
}

/// Runs `exe ARGS... --json JSON`, kills it after `limit`, reads and removes the JSON file.
/// Ctrl-C on the suite is passed on to it: it shuts down cleanly and
/// writes its report, which is read as usual.
pub fn run_to_json(exe: &Path, args: &[String], json: &Path, limit: Duration) -> ChildRun {
    let _ = std::fs::remove_file(json);
    let launched = Launched::spawn_forwarding(
        Command::new(exe)
            .args(args)
            .arg("--json")
            .arg(json)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let done = match launched {
        Ok(l) => l.finish(limit),
        Err(e) => {
            return ChildRun {
                exit_code: None,
                elapsed_s: 0.0,
                interrupted: false,
                report: Err(format!("cannot start {}: {e}", exe.display())),
            };
        }
    };
    let elapsed_s = done.elapsed.as_secs_f64();
    let interrupted = done.interrupted;
    let stderr = done.stderr;
    let status = done.status;
    let tail = {
        let lines: Vec<&str> = stderr.lines().collect();
        lines[lines.len().saturating_sub(6)..].join("\n    ")
    };
    let Some(status) = status else {
        let _ = std::fs::remove_file(json);
        return ChildRun {
            exit_code: None,
            elapsed_s,
            interrupted,
            report: Err(format!("did not exit within {} s; killed. Last lines:\n    {tail}", limit.as_secs())),
        };
    };
    let report = std::fs::read_to_string(json)
        .map_err(|e| format!("no --json file ({e})"))
        .and_then(|text| RunReport::parse(&text).map_err(|e| format!("--json does not read: {e}")));
    let _ = std::fs::remove_file(json);
    let report = match (status.code(), report) {
        (Some(0), r) => r,
        (_, Ok(v)) => Ok(v),
        (code, Err(e)) => Err(format!("exit status {code:?}; {e}. Last lines:\n    {tail}")),
    };
    ChildRun { exit_code: status.code(), elapsed_s, interrupted, report }
}
