//! The boot family of `rtswitch bench`: process start to guest ready
//! (every vCPU online and the guest's ready hypercall, as `rtswitch run`
//! measures it: `guest.ready_ms` of its JSON report), over N boots of the
//! real binary with no workload.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::child::run_to_json;

/// One boot.
#[derive(Clone, Debug, Serialize)]
pub struct Boot {
    pub ready_ms: Option<f64>,
    pub exit_code: Option<i32>,
    pub error: Option<String>,
}

/// How long each booted VM runs before it is asked to shut down.
const RUN_SECS: &str = "0.3";
const LIMIT: Duration = Duration::from_secs(60);

/// Boots once on `vcpus` vCPUs.
pub fn boot_once(exe: &Path, vcpus: u32, json: &Path) -> Boot {
    let args: Vec<String> =
        ["run", "--no-workload", "--quiet", "--serial", "none", "--duration", RUN_SECS, "--vcpus", &vcpus.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    let r = run_to_json(exe, &args, json, LIMIT);
    let ready_ms = r.report.as_ref().ok().and_then(|v| v.guest.as_ref()?.ready_ms);
    let error = match (&r.report, r.exit_code, ready_ms) {
        (Err(e), _, _) => Some(e.clone()),
        (_, Some(0), Some(_)) => None,
        (_, code, None) => Some(format!("no guest ready time in the report (exit status {code:?})")),
        (_, code, Some(_)) => Some(format!("exit status {code:?}")),
    };
    Boot { ready_ms: if error.is_none() { ready_ms } else { None }, exit_code: r.exit_code, error }
}
