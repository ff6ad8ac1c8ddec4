//! What the guest did against the platform's protocol, counted per kind:
//! a doorbell rung with a value it may not carry or when it means nothing
//! (`STOP_ABOVE` without `--stop-above`, `READY` twice, another CPU's
//! `CPU_ONLINE`), faster than the VMM takes them (notifications dropped),
//! an access where the platform has no device, a telemetry header that
//! contradicts what the VMM placed. The VMM refuses each and goes on
//! (`docs/threat-model.md`); this table is how the run's end says that
//! the guest misbehaved, in words, in the JSON report's
//! `outcome.guest_misbehaviour` and in exit code 13
//! ([`ExitCode::GuestMisbehaved`](crate::exit_code::ExitCode)).
//!
//! Only what an honest guest never does is counted here: races the
//! protocol allows (a switch notification that arrives after its switch
//! timed out, say) are warnings, not misbehaviour.
//!
//! A kind is a `&'static str` naming the refusal (one per call site, so the
//! table is as small as the number of call sites, however long the run);
//! the counts saturate. The table is process-wide, behind a mutex: vCPU
//! threads note refusals too.

use std::collections::BTreeMap;
use std::sync::Mutex;

static COUNTS: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

/// Counts one refusal of `kind`.
pub fn note(kind: &'static str) {
    let mut counts = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
    let n = counts.entry(kind).or_insert(0);
    *n = n.saturating_add(1);
}

/// Every kind seen so far and its count, by kind.
pub fn totals() -> Vec<(&'static str, u64)> {
    let counts = COUNTS.lock().unwrap_or_else(|p| p.into_inner());
    counts.iter().map(|(&k, &n)| (k, n)).collect()
}

/// The end-of-run line: `None` when the guest kept to the protocol.
pub fn summary(totals: &[(&'static str, u64)]) -> Option<String> {
    if totals.is_empty() {
        return None;
    }
    let all = totals.iter().fold(0u64, |a, (_, n)| a.saturating_add(*n));
    let kinds: Vec<String> = totals.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    Some(format!(
        "the guest broke the platform's protocol {all} time(s), each refused ({}); exit code 13 says so",
        kinds.join(", ")
    ))
}

/// A refusal of something only a misbehaving guest does: counted here,
/// and said as a rate-limited warning (`warn_limited!`), with the kind as
/// the rate limit's key.
#[macro_export]
macro_rules! guest_misbehaved {
    ($kind:expr, $($arg:tt)+) => {{
        $crate::misbehaviour::note($kind);
        $crate::warn_limited!($kind, $($arg)+);
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_kind_and_says_them() {
        // Kinds of this test only: the table is process-wide.
        for _ in 0..3 {
            note("test kind a");
        }
        note("test kind b");
        let mine: Vec<_> = totals().into_iter().filter(|(k, _)| k.starts_with("test kind")).collect();
        assert_eq!(mine, vec![("test kind a", 3), ("test kind b", 1)]);
        let line = summary(&mine).expect("a line");
        assert!(line.contains("4 time(s)") && line.contains("test kind a: 3, test kind b: 1"), "{line}");
        assert_eq!(summary(&[]), None);
    }
}
