//! A ratio of two latency figures, with how far it is known: a
//! percentile beyond the histogram's range is only a lower bound, and so
//! is the ratio it enters (`rtswitch bench`, docs/benchmarks.md).

use rtswitch::stats::Percentile;
use serde::Serialize;

/// How far a ratio is known.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bound {
    Exact,
    /// The ratio is at least `value` (its numerator overflowed, or its denominator is below 1 µs).
    AtLeast,
    /// The ratio is at most `value` (its denominator overflowed).
    AtMost,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Ratio {
    pub value: f64,
    pub bound: Bound,
}

impl std::fmt::Display for Ratio {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefix = match self.bound {
            Bound::Exact => "",
            Bound::AtLeast => ">=",
            Bound::AtMost => "<=",
        };
        write!(f, "{prefix}{:.2}x", self.value)
    }
}

/// `num / den` of two percentiles, with how far it is known; `None` when
/// it is not (both overflowed, or both below 1 µs).
pub fn pct_ratio(num: Percentile, den: Percentile) -> Option<Ratio> {
    let (n, d) = (num.us() as f64, den.us());
    match (num.at_least(), den.at_least()) {
        (true, true) => None,
        (true, false) if d == 0 => Some(Ratio { value: n, bound: Bound::AtLeast }),
        (true, false) => Some(Ratio { value: n / d as f64, bound: Bound::AtLeast }),
        (false, true) => Some(Ratio { value: n / d.max(1) as f64, bound: Bound::AtMost }),
        (false, false) if d == 0 && num.us() == 0 => None,
        // A p99 in the [0, 1) µs bucket: the ratio is at least num / 1.
        (false, false) if d == 0 => Some(Ratio { value: n, bound: Bound::AtLeast }),
        (false, false) => Some(Ratio { value: n / d as f64, bound: Bound::Exact }),
    }
}
