//! A target and whether a figure met it, as far as its bounds tell: the
//! verdicts the suite prints as `met` / `NOT MET` (docs/benchmarks.md),
//! and one judged target over a family's slices.

use serde::Serialize;

use super::median::Paired;
use super::ratio::{Bound, Ratio};

/// Whether a target was met, as far as the figures tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    NotMet,
    /// The figures do not decide it (a run failed, or a bound points the wrong way).
    Unknown,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::NotMet => "NOT MET",
            Verdict::Unknown => "unknown",
        }
    }
}

/// Target "ratio >= target".
pub fn at_least(r: Option<Ratio>, target: f64) -> Verdict {
    match r {
        None => Verdict::Unknown,
        Some(Ratio { value, bound: Bound::Exact }) => {
            if value >= target {
                Verdict::Met
            } else {
                Verdict::NotMet
            }
        }
        Some(Ratio { value, bound: Bound::AtLeast }) if value >= target => Verdict::Met,
        Some(Ratio { value, bound: Bound::AtMost }) if value < target => Verdict::NotMet,
        Some(_) => Verdict::Unknown,
    }
}

/// Target "ratio <= target".
pub fn at_most(r: Option<Ratio>, target: f64) -> Verdict {
    match r {
        None => Verdict::Unknown,
        Some(Ratio { value, bound: Bound::Exact }) => {
            if value <= target {
                Verdict::Met
            } else {
                Verdict::NotMet
            }
        }
        Some(Ratio { value, bound: Bound::AtMost }) if value <= target => Verdict::Met,
        Some(Ratio { value, bound: Bound::AtLeast }) if value > target => Verdict::NotMet,
        Some(_) => Verdict::Unknown,
    }
}

/// A target as printed: `10`, `0.67`.
pub fn target_text(t: f64) -> String {
    let s = format!("{t:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// One judged target.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub what: String,
    /// The judged value: the median of `paired`, or its spread.
    pub value: Option<Ratio>,
    /// The per-slice ratios it comes from; with `over_repeats`, each
    /// repeat's value instead.
    pub paired: Paired,
    /// Judged over `--repeat` (each repeat's value is its own median over
    /// its slices), not over one run's slices.
    pub over_repeats: bool,
    /// `>=` or `<=`.
    pub target_op: &'static str,
    pub target: f64,
    pub verdict: Verdict,
    /// Why there is no figure, where that is known (no cyclictest).
    pub note: Option<String>,
}

impl Target {
    pub fn of(what: &str, value: Option<Ratio>, paired: Paired, op: &'static str, target: f64) -> Self {
        let verdict = if op == ">=" { at_least(value, target) } else { at_most(value, target) };
        Self { what: what.to_string(), value, paired, over_repeats: false, target_op: op, target, verdict, note: None }
    }
}
