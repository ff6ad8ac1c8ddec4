//! Medians and spreads over the latency family's slices: a figure's
//! median (nearest rank) with its min and max, and a ratio taken per slice
//! pair (the two runs of one slice, made back to back) summed up as its
//! median and its spread (max / min over the slices).
//!
//! A figure may be only a bound (a percentile in the histogram's
//! overflow, a ratio whose side overflowed); the median says so when such
//! a value could move it (an "at least" value at or below the median rank,
//! an "at most" one at or above it), and is unknown when both could.

use serde::Serialize;

use super::ratio::{Bound, Ratio};
use rtswitch::stats::{Percentile, nearest_rank};

/// The 0-based index of the nearest-rank median of `n` sorted values.
fn median_index(n: usize) -> usize {
    nearest_rank(n as u64, 500_000) as usize - 1
}

/// A percentile figure over the slices: median, min and max.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PctSpread {
    pub median: Percentile,
    pub min: Percentile,
    pub max: Percentile,
    /// How many slices gave the figure.
    pub n: usize,
}

/// Median (nearest rank), min and max of percentiles; an "at least"
/// value at or below the median rank makes the median "at least" too.
pub fn pct_spread(v: &[Percentile]) -> Option<PctSpread> {
    let mut s = v.to_vec();
    // An overflowed value sorts above an exact one of the same µs.
    s.sort_by_key(|p| (p.us(), p.at_least()));
    let m = median_index(s.len());
    let (min, max) = (*s.first()?, *s.last()?);
    let median = if s[..=m].iter().any(|p| p.at_least()) { Percentile::AtLeast(s[m].us()) } else { s[m] };
    Some(PctSpread { median, min, max, n: s.len() })
}

/// A plain figure (µs, ns, a share) over the slices: median, min and max.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct NumSpread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

/// Median (nearest rank), min and max.
pub fn num_spread(v: &[f64]) -> Option<NumSpread> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let (min, max) = (*s.first()?, *s.last()?);
    Some(NumSpread { median: s[median_index(s.len())], min, max, n: s.len() })
}

/// The median of ratios, with how far it is known (see the module's
/// comment); `None` when empty or when bounds on both sides could move it.
pub fn median_ratio(v: &[Ratio]) -> Option<Ratio> {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.value.total_cmp(&b.value));
    let m = median_index(s.len());
    let mid = *s.get(m)?;
    let low_at_least = s[..=m].iter().any(|r| r.bound == Bound::AtLeast);
    let high_at_most = s[m..].iter().any(|r| r.bound == Bound::AtMost);
    let bound = match (low_at_least, high_at_most) {
        (false, false) => Bound::Exact,
        (true, false) => Bound::AtLeast,
        (false, true) => Bound::AtMost,
        (true, true) => return None,
    };
    Some(Ratio { value: mid.value, bound })
}

/// A ratio taken per slice pair, and what the slices say together.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Paired {
    /// Per slice, in slice order (`null`: a side had no usable figure).
    pub per_slice: Vec<Option<Ratio>>,
    /// Over the slices that gave one.
    pub median: Option<Ratio>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// max / min over the slices: 1x when every slice agrees. Known only
    /// from two slices up, every ratio exact and above zero.
    pub spread: Option<f64>,
}

impl Paired {
    /// Sums up per-slice ratios.
    pub fn of(per_slice: Vec<Option<Ratio>>) -> Self {
        let known: Vec<Ratio> = per_slice.iter().flatten().copied().collect();
        let values: Vec<f64> = known.iter().map(|r| r.value).collect();
        let s = num_spread(&values);
        let exact = known.iter().all(|r| r.bound == Bound::Exact);
        let spread = match s {
            Some(s) if s.n >= 2 && exact && s.min > 0.0 => Some(s.max / s.min),
            _ => None,
        };
        Self { median: median_ratio(&known), min: s.map(|s| s.min), max: s.map(|s| s.max), spread, per_slice }
    }

    /// Slices that gave a ratio.
    pub fn known(&self) -> usize {
        self.per_slice.iter().flatten().count()
    }

    /// `1.23x (n of m slices, 1.05..1.40, spread 1.33x)`.
    pub fn describe(&self) -> String {
        let median = self.median.map_or_else(|| "unknown".to_string(), |r| r.to_string());
        let range = match (self.min, self.max) {
            (Some(a), Some(b)) => format!(", {a:.2}..{b:.2}"),
            _ => String::new(),
        };
        let spread = self.spread.map_or_else(String::new, |s| format!(", spread {s:.2}x"));
        format!("{median} (median of {} of {} slices{range}{spread})", self.known(), self.per_slice.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtswitch::stats::Percentile::{AtLeast, Us};

    fn r(value: f64, bound: Bound) -> Ratio {
        Ratio { value, bound }
    }

    #[test]
    fn the_median_is_nearest_rank_with_min_and_max() {
        let s = pct_spread(&[Us(900), Us(300), Us(500), Us(700)]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (Us(500), Us(300), Us(900), 4));
        let s = pct_spread(&[Us(9), Us(1), Us(5)]).unwrap();
        assert_eq!(s.median, Us(5));
        assert_eq!(pct_spread(&[]), None);
        let n = num_spread(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((n.median, n.min, n.max), (2.0, 1.0, 3.0));
        assert_eq!(num_spread(&[]), None);
    }

    #[test]
    fn an_overflowed_value_below_the_median_makes_it_a_lower_bound() {
        // Above the median: it stays above, the median is exact.
        assert_eq!(pct_spread(&[Us(100), Us(200), AtLeast(100_000)]).unwrap().median, Us(200));
        // Two of three overflowed: the median itself is one.
        let s = pct_spread(&[Us(100), AtLeast(100_000), AtLeast(100_000)]).unwrap();
        assert_eq!((s.median, s.max), (AtLeast(100_000), AtLeast(100_000)));
        // A ratio's lower bound below the median could move it up.
        let m = median_ratio(&[r(2.0, Bound::AtLeast), r(5.0, Bound::Exact), r(6.0, Bound::Exact)]).unwrap();
        assert_eq!(m, r(5.0, Bound::AtLeast));
        // An upper bound above the median could move it down.
        let m = median_ratio(&[r(2.0, Bound::Exact), r(5.0, Bound::Exact), r(9.0, Bound::AtMost)]).unwrap();
        assert_eq!(m, r(5.0, Bound::AtMost));
        // Harmless bounds: a lower bound above, an upper bound below.
        let m = median_ratio(&[r(1.0, Bound::AtMost), r(5.0, Bound::Exact), r(9.0, Bound::AtLeast)]).unwrap();
        assert_eq!(m, r(5.0, Bound::Exact));
        // Both could move it: unknown.
        assert_eq!(median_ratio(&[r(1.0, Bound::AtLeast), r(5.0, Bound::AtMost)]), None);
        assert_eq!(median_ratio(&[]), None);
    }

    #[test]
    fn a_paired_ratio_has_its_median_range_and_spread() {
        let p =
            Paired::of(vec![Some(r(4.0, Bound::Exact)), None, Some(r(6.0, Bound::Exact)), Some(r(5.0, Bound::Exact))]);
        assert_eq!(p.median, Some(r(5.0, Bound::Exact)));
        assert_eq!((p.min, p.max, p.spread), (Some(4.0), Some(6.0), Some(1.5)));
        assert_eq!(p.known(), 3);
        assert_eq!(p.describe(), "5.00x (median of 3 of 4 slices, 4.00..6.00, spread 1.50x)");
        // One slice, or a bound among them: no spread.
        assert_eq!(Paired::of(vec![Some(r(4.0, Bound::Exact))]).spread, None);
        assert_eq!(Paired::of(vec![Some(r(4.0, Bound::Exact)), Some(r(8.0, Bound::AtLeast))]).spread, None);
        let none = Paired::of(vec![None, None]);
        assert_eq!((none.median, none.spread), (None, None));
        assert_eq!(none.describe(), "unknown (median of 0 of 2 slices)");
    }
}
