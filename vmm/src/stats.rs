//! Histogram math: latency histograms with 1 µs buckets plus an overflow
//! count, their summary statistics, percentiles and merging.
//!
//! A percentile is read from the buckets, so it is exact to the bucket:
//! `Percentile::Us(n)` means the sample of that rank lies in `[n, n+1)` µs.
//! When the rank falls among the overflowed samples its value is unknown
//! beyond "at least the histogram range": `Percentile::AtLeast(range_us)`,
//! never a made-up number.
//!
//! Pure host code: no guest memory, no I/O. Shared by the telemetry reader
//! (`telemetry`), which builds histograms from guest records, and
//! the reports (`report`).

use serde::{Deserialize, Serialize};
use switcher::telemetry::HistSummary;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StatsError {
    #[error(
        "histogram counts disagree: {buckets} samples in buckets + {overflow} overflows != count {count}; the record \
         is inconsistent and was not used"
    )]
    CountMismatch { buckets: u64, overflow: u64, count: u64 },
    #[error("histogram of {count} samples has min {min_ns} ns above max {max_ns} ns; the record was not used")]
    MinAboveMax { count: u64, min_ns: u64, max_ns: u64 },
    #[error("empty histogram with a non-empty summary (sum {sum_ns} ns, max {max_ns} ns); the record was not used")]
    EmptyNotClear { sum_ns: u64, max_ns: u64 },
    #[error("cannot merge histograms of {0} and {1} buckets (different --hist-max-us)")]
    BucketMismatch(usize, usize),
}

/// One latency histogram: buckets `[i*b, (i+1)*b)` µs (`b` =
/// `bucket_us`, 1 unless `--bucket-us` set it), then an overflow count
/// for samples of `buckets.len() * b` µs or more (counted in the summary
/// fields too).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    buckets: Vec<u64>,
    bucket_us: u64,
    overflow: u64,
    count: u64,
    sum_ns: u64,
    /// `None` while empty.
    min_ns: Option<u64>,
    max_ns: u64,
}

/// A percentile read from a histogram. JSON form: `{"us": 12,
/// "at_least": false}`; `at_least: true` means the percentile is in the
/// overflow and `us` is the histogram range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "PercentileJson", from = "PercentileJson")]
pub enum Percentile {
    /// The sample of that rank lies in `[us, us + 1)` µs.
    Us(u64),
    /// The sample of that rank overflowed: it is at least this many µs
    /// (the histogram range), how much more is unknown.
    AtLeast(u64),
}

impl Percentile {
    /// The µs value (for `AtLeast`, the lower bound).
    pub fn us(self) -> u64 {
        match self {
            Percentile::Us(v) | Percentile::AtLeast(v) => v,
        }
    }

    /// In the overflow: at least `us()`.
    pub fn at_least(self) -> bool {
        matches!(self, Percentile::AtLeast(_))
    }
}

/// [`Percentile`] as the reports write it.
#[derive(Serialize, Deserialize)]
struct PercentileJson {
    us: u64,
    at_least: bool,
}

impl From<Percentile> for PercentileJson {
    fn from(p: Percentile) -> Self {
        Self { us: p.us(), at_least: p.at_least() }
    }
}

impl From<PercentileJson> for Percentile {
    fn from(p: PercentileJson) -> Self {
        if p.at_least { Percentile::AtLeast(p.us) } else { Percentile::Us(p.us) }
    }
}

impl std::fmt::Display for Percentile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Padding applies to the whole text, so tables line up.
        let s = match self {
            Percentile::Us(v) => v.to_string(),
            Percentile::AtLeast(v) => format!(">={v}"),
        };
        f.pad(&s)
    }
}

/// The figures every report shows for one histogram (µs unless `_ns`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub count: u64,
    pub overflow: u64,
    pub min_ns: Option<u64>,
    pub max_ns: Option<u64>,
    pub sum_ns: u64,
    /// Truncated to whole µs, like cyclictest.
    pub min_us: Option<u64>,
    pub avg_us: Option<f64>,
    pub p50: Option<Percentile>,
    pub p99: Option<Percentile>,
    pub p99_9: Option<Percentile>,
    pub max_us: Option<u64>,
}

/// The rank (1-based) of the `ppm`-th part per million of `count` sorted
/// samples, nearest rank: the smallest rank with at least that share of
/// the samples at or below it. The one definition of a percentile's rank
/// for every figure the project prints (histograms, switch timings,
/// spreads over repeats). `count` 0 gives rank 1 (the caller has no
/// sample to index).
pub fn nearest_rank(count: u64, ppm: u64) -> u64 {
    ((u128::from(ppm.min(1_000_000)) * u128::from(count)).div_ceil(1_000_000) as u64).clamp(1, count.max(1))
}

/// The index of the bucket that holds the sample of rank `rank` (1-based)
/// when `counts` are the buckets' counts in order; None past the last.
pub fn bucket_of_rank(counts: impl IntoIterator<Item = u64>, rank: u64) -> Option<usize> {
    let mut seen = 0u64;
    counts.into_iter().position(|c| {
        seen = seen.saturating_add(c);
        seen >= rank
    })
}

impl Histogram {
    /// An empty histogram of `bucket_count` 1 µs buckets.
    pub fn new(bucket_count: usize) -> Self {
        Self::with_bucket_us(bucket_count, 1)
    }

    /// An empty histogram of `bucket_count` buckets `bucket_us` µs wide.
    pub fn with_bucket_us(bucket_count: usize, bucket_us: u64) -> Self {
        Self {
            buckets: vec![0; bucket_count],
            bucket_us: bucket_us.max(1),
            overflow: 0,
            count: 0,
            sum_ns: 0,
            min_ns: None,
            max_ns: 0,
        }
    }

    /// The same samples in buckets of `bucket_us` µs (a record's width).
    pub fn in_buckets_of(mut self, bucket_us: u64) -> Self {
        self.bucket_us = bucket_us.max(1);
        self
    }

    /// Width of a bucket in µs.
    pub fn bucket_us(&self) -> u64 {
        self.bucket_us
    }

    /// The histogram's range in µs (samples at or above it overflow).
    pub fn range_us(&self) -> u64 {
        (self.buckets.len() as u64).saturating_mul(self.bucket_us)
    }

    /// A histogram from a guest record's summary and buckets, checked for
    /// consistency (bucket sum + overflow == count, min <= max).
    pub fn from_record(summary: &HistSummary, buckets: &[u32]) -> Result<Self, StatsError> {
        let in_buckets: u64 = buckets.iter().fold(0u64, |a, &b| a.saturating_add(u64::from(b)));
        if in_buckets.checked_add(summary.overflow) != Some(summary.count) {
            return Err(StatsError::CountMismatch {
                buckets: in_buckets,
                overflow: summary.overflow,
                count: summary.count,
            });
        }
        let min_ns = if summary.count == 0 {
            if summary.sum_ns != 0 || summary.max_ns != 0 {
                return Err(StatsError::EmptyNotClear { sum_ns: summary.sum_ns, max_ns: summary.max_ns });
            }
            None
        } else {
            if summary.min_ns > summary.max_ns {
                return Err(StatsError::MinAboveMax {
                    count: summary.count,
                    min_ns: summary.min_ns,
                    max_ns: summary.max_ns,
                });
            }
            Some(summary.min_ns)
        };
        Ok(Self {
            buckets: buckets.iter().map(|&b| u64::from(b)).collect(),
            bucket_us: 1,
            overflow: summary.overflow,
            count: summary.count,
            sum_ns: summary.sum_ns,
            min_ns,
            max_ns: summary.max_ns,
        })
    }

    /// Adds one sample (for tests and synthetic data).
    pub fn record_ns(&mut self, ns: u64) {
        let us = usize::try_from(ns / 1000 / self.bucket_us).unwrap_or(usize::MAX);
        match self.buckets.get_mut(us) {
            Some(b) => *b = b.saturating_add(1),
            None => self.overflow = self.overflow.saturating_add(1),
        }
        self.count = self.count.saturating_add(1);
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.min_ns = Some(self.min_ns.map_or(ns, |m| m.min(ns)));
        self.max_ns = self.max_ns.max(ns);
    }

    /// Records `times` samples of `ns` each, in one step (for counts that
    /// come from the guest, however large).
    pub fn record_ns_times(&mut self, ns: u64, times: u64) {
        if times == 0 {
            return;
        }
        let us = usize::try_from(ns / 1000 / self.bucket_us).unwrap_or(usize::MAX);
        match self.buckets.get_mut(us) {
            Some(b) => *b = b.saturating_add(times),
            None => self.overflow = self.overflow.saturating_add(times),
        }
        self.count = self.count.saturating_add(times);
        self.sum_ns = self.sum_ns.saturating_add(ns.saturating_mul(times));
        self.min_ns = Some(self.min_ns.map_or(ns, |m| m.min(ns)));
        self.max_ns = self.max_ns.max(ns);
    }

    /// Adds `other`'s samples to this histogram. The counts come from the
    /// guest: each sum saturates at `u64::MAX` rather than wrapping to a
    /// small, plausible number.
    pub fn merge(&mut self, other: &Histogram) -> Result<(), StatsError> {
        if self.buckets.len() != other.buckets.len() || self.bucket_us != other.bucket_us {
            return Err(StatsError::BucketMismatch(self.buckets.len(), other.buckets.len()));
        }
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a = a.saturating_add(*b);
        }
        self.overflow = self.overflow.saturating_add(other.overflow);
        self.count = self.count.saturating_add(other.count);
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self.min_ns = match (self.min_ns, other.min_ns) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max_ns = self.max_ns.max(other.max_ns);
        Ok(())
    }

    /// The histogram's range: samples of this many ns or more overflow.
    pub fn range_ns(&self) -> u64 {
        (self.buckets.len() as u64).saturating_mul(self.bucket_us).saturating_mul(1000)
    }

    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    pub fn buckets(&self) -> &[u64] {
        &self.buckets
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    pub fn sum_ns(&self) -> u64 {
        self.sum_ns
    }

    pub fn min_ns(&self) -> Option<u64> {
        self.min_ns
    }

    /// `None` while empty.
    pub fn max_ns(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max_ns)
    }

    pub fn avg_ns(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ns as f64 / self.count as f64)
    }

    /// The non-empty buckets as `(µs at the bucket's start, count)`.
    pub fn non_empty(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.buckets.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, c)| (i as u64 * self.bucket_us, *c))
    }

    /// The `p`-th percentile (0 < p <= 100, to 1 ppm), nearest rank: the
    /// smallest value with at least `ceil(p% of count)` samples at or below it.
    /// `None` for an empty histogram.
    pub fn percentile(&self, p: f64) -> Option<Percentile> {
        if self.count == 0 {
            return None;
        }
        // Integer math on parts per million: 99.9% of 1000 is rank 999,
        // where float math gives 999.0000000000001 and so rank 1000.
        let ppm = (p * 10_000.0).round().clamp(0.0, 1e6) as u64;
        let rank = nearest_rank(self.count, ppm);
        Some(match bucket_of_rank(self.buckets.iter().copied(), rank) {
            Some(us) => Percentile::Us((us as u64).saturating_mul(self.bucket_us)),
            None => Percentile::AtLeast(self.range_us()),
        })
    }

    pub fn stats(&self) -> LatencyStats {
        LatencyStats {
            count: self.count,
            overflow: self.overflow,
            min_ns: self.min_ns,
            max_ns: self.max_ns(),
            sum_ns: self.sum_ns,
            min_us: self.min_ns.map(|n| n / 1000),
            avg_us: self.avg_ns().map(|n| n / 1000.0),
            p50: self.percentile(50.0),
            p99: self.percentile(99.0),
            p99_9: self.percentile(99.9),
            max_us: self.max_ns().map(|n| n / 1000),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_of(us_samples: &[u64], buckets: usize) -> Histogram {
        let mut h = Histogram::new(buckets);
        for &us in us_samples {
            h.record_ns(us * 1000 + 300);
        }
        h
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        // 1..=1000 µs, one sample each.
        let samples: Vec<u64> = (1..=1000).collect();
        let h = hist_of(&samples, 2000);
        assert_eq!(h.percentile(50.0), Some(Percentile::Us(500)));
        assert_eq!(h.percentile(99.0), Some(Percentile::Us(990)));
        assert_eq!(h.percentile(99.9), Some(Percentile::Us(999)));
        assert_eq!(h.percentile(100.0), Some(Percentile::Us(1000)));
        assert_eq!(h.percentile(0.0001), Some(Percentile::Us(1)));
        let s = h.stats();
        assert_eq!(s.min_us, Some(1));
        assert_eq!(s.max_us, Some(1000));
        assert_eq!(s.count, 1000);
        assert!((s.avg_us.unwrap() - 500.8).abs() < 1e-9);
    }

    #[test]
    fn percentiles_of_a_skewed_distribution() {
        // 990 samples at 5 µs, 9 at 50 µs, 1 at 700 µs.
        let mut samples = vec![5; 990];
        samples.extend([50; 9]);
        samples.push(700);
        let h = hist_of(&samples, 1000);
        assert_eq!(h.percentile(50.0), Some(Percentile::Us(5)));
        assert_eq!(h.percentile(99.0), Some(Percentile::Us(5)));
        assert_eq!(h.percentile(99.1), Some(Percentile::Us(50)));
        assert_eq!(h.percentile(99.9), Some(Percentile::Us(50)));
        assert_eq!(h.percentile(100.0), Some(Percentile::Us(700)));
    }

    #[test]
    fn empty_histogram_has_no_figures() {
        let h = Histogram::new(100);
        assert_eq!(h.percentile(50.0), None);
        let s = h.stats();
        assert_eq!((s.count, s.min_us, s.max_us, s.avg_us, s.p99), (0, None, None, None, None));
        assert_eq!(h.non_empty().count(), 0);
    }

    #[test]
    fn overflowed_percentiles_are_lower_bounds() {
        let h = hist_of(&[150, 200, 5000], 100);
        assert_eq!(h.overflow(), 3);
        assert_eq!(h.percentile(50.0), Some(Percentile::AtLeast(100)));
        assert_eq!(h.percentile(99.9), Some(Percentile::AtLeast(100)));
        assert_eq!(h.stats().max_us, Some(5000), "max comes from the summary, not the buckets");
        assert_eq!(Percentile::AtLeast(100).to_string(), ">=100");
        assert_eq!(format!("{:>6}", Percentile::AtLeast(100)), " >=100");
        // Half in range, half over: p50 in range, p99 over.
        let h = hist_of(&[1, 2, 300, 400], 100);
        assert_eq!(h.percentile(50.0), Some(Percentile::Us(2)));
        assert_eq!(h.percentile(99.0), Some(Percentile::AtLeast(100)));
    }

    #[test]
    fn merge_adds_buckets_and_keeps_extremes() {
        let mut a = hist_of(&[3, 3, 4], 10);
        let b = hist_of(&[1, 20], 10);
        a.merge(&b).unwrap();
        assert_eq!(a.count(), 5);
        assert_eq!(a.overflow(), 1);
        assert_eq!(a.non_empty().collect::<Vec<_>>(), vec![(1, 1), (3, 2), (4, 1)]);
        assert_eq!(a.min_ns(), Some(1300));
        assert_eq!(a.max_ns(), Some(20300));
        let mut e = Histogram::new(10);
        e.merge(&a).unwrap();
        assert_eq!(e, a, "merging into an empty histogram copies");
        e.merge(&Histogram::new(10)).unwrap();
        assert_eq!(e, a, "merging an empty histogram changes nothing");
        assert_eq!(e.merge(&Histogram::new(11)), Err(StatsError::BucketMismatch(10, 11)));
    }

    #[test]
    fn percentile_ranks_at_the_edges() {
        // One sample: every percentile is that sample.
        let one = hist_of(&[42], 100);
        for p in [0.0, 0.0001, 50.0, 99.9, 100.0] {
            assert_eq!(one.percentile(p), Some(Percentile::Us(42)), "p{p}");
        }
        // Nearest rank on 10 samples 0..=9 µs: p10 is rank 1, p11 rank 2, p90 rank 9, p91 rank 10.
        let ten = hist_of(&(0..10).collect::<Vec<_>>(), 100);
        assert_eq!(ten.percentile(10.0), Some(Percentile::Us(0)));
        assert_eq!(ten.percentile(11.0), Some(Percentile::Us(1)));
        assert_eq!(ten.percentile(90.0), Some(Percentile::Us(8)));
        assert_eq!(ten.percentile(91.0), Some(Percentile::Us(9)));
        // Out-of-range requests clamp to the first and last rank.
        assert_eq!(ten.percentile(-5.0), Some(Percentile::Us(0)));
        assert_eq!(ten.percentile(250.0), Some(Percentile::Us(9)));
        // p99.9 of 1000 samples is rank 999, not 1000 (no float drift).
        let mut s = vec![1; 999];
        s.push(7);
        assert_eq!(hist_of(&s, 100).percentile(99.9), Some(Percentile::Us(1)));
        // Large counts do not overflow the rank computation.
        let mut big = Histogram::new(10);
        big.buckets[3] = u64::MAX / 4;
        big.count = u64::MAX / 4;
        assert_eq!(big.percentile(99.9), Some(Percentile::Us(3)));
    }

    #[test]
    fn overflow_starts_exactly_at_the_range() {
        let mut h = Histogram::new(100);
        h.record_ns(99_999); // [99, 100) µs: the last bucket
        h.record_ns(100_000); // 100 µs: the first overflow
        assert_eq!(h.buckets()[99], 1);
        assert_eq!(h.overflow(), 1);
        assert_eq!(h.count(), 2);
        assert_eq!(h.percentile(50.0), Some(Percentile::Us(99)));
        assert_eq!(h.percentile(51.0), Some(Percentile::AtLeast(100)));
        assert_eq!(h.stats().max_us, Some(100));
        // Min, max and the average count the overflowed samples, exactly.
        let h = hist_of(&[2, 1000], 10);
        assert_eq!((h.min_ns(), h.max_ns(), h.overflow()), (Some(2300), Some(1_000_300), 1));
        assert_eq!(h.avg_ns(), Some(501_300.0));
        let all_over = hist_of(&[500, 600], 10);
        assert_eq!(all_over.non_empty().count(), 0);
        assert_eq!(all_over.stats().p50, Some(Percentile::AtLeast(10)));
        assert_eq!(all_over.stats().min_us, Some(500));
    }

    #[test]
    fn merged_histograms_give_the_percentiles_of_all_samples() {
        // Two CPUs with different distributions, incl. overflows: merging
        // is the same as recording every sample into one histogram, in any order.
        let a: Vec<u64> = (0..500).map(|i| i % 37).collect();
        let mut b: Vec<u64> = (0..300).map(|i| 20 + i % 90).collect();
        b.extend([150, 400, 99]);
        let both: Vec<u64> = a.iter().chain(&b).copied().collect();
        let one = hist_of(&both, 120);
        let mut ab = hist_of(&a, 120);
        ab.merge(&hist_of(&b, 120)).unwrap();
        let mut ba = hist_of(&b, 120);
        ba.merge(&hist_of(&a, 120)).unwrap();
        assert_eq!(ab, one);
        assert_eq!(ba, one);
        for p in [1.0, 50.0, 90.0, 99.0, 99.5, 99.9, 100.0] {
            assert_eq!(ab.percentile(p), one.percentile(p), "p{p}");
        }
        assert_eq!(ab.stats(), one.stats());
        assert_eq!(ab.overflow(), 2);
        assert_eq!(ab.percentile(100.0), Some(Percentile::AtLeast(120)));
        assert_eq!(ab.stats().max_us, Some(400));
    }

    #[test]
    fn records_are_checked() {
        let mut buckets = vec![0u32; 10];
        buckets[2] = 3;
        let ok = HistSummary { count: 4, sum_ns: 20_000, min_ns: 2_000, max_ns: 11_000, overflow: 1 };
        let h = Histogram::from_record(&ok, &buckets).unwrap();
        assert_eq!(h.percentile(50.0), Some(Percentile::Us(2)));
        assert!(matches!(
            Histogram::from_record(&HistSummary { count: 5, ..ok }, &buckets),
            Err(StatsError::CountMismatch { .. })
        ));
        assert!(matches!(
            Histogram::from_record(&HistSummary { min_ns: 12_000, ..ok }, &buckets),
            Err(StatsError::MinAboveMax { .. })
        ));
        assert!(Histogram::from_record(&HistSummary::EMPTY, &[0; 10]).unwrap().stats().min_us.is_none());
        assert!(Histogram::from_record(&HistSummary { max_ns: 5, ..HistSummary::EMPTY }, &[0; 10]).is_err());
        // A count that overflows u64 with the bucket sum is refused, not wrapped.
        assert!(Histogram::from_record(&HistSummary { overflow: u64::MAX, ..ok }, &buckets).is_err());
    }

    /// A guest record whose counts are consistent and sit at the top of
    /// the range (counts near u64::MAX: merging must saturate, not wrap).
    fn near_the_top() -> Histogram {
        let summary = HistSummary { count: u64::MAX, sum_ns: 5, min_ns: 1000, max_ns: 2000, overflow: u64::MAX - 3 };
        Histogram::from_record(&summary, &[1, 1, 1, 0]).expect("consistent")
    }

    #[test]
    fn guest_counts_near_the_top_saturate_instead_of_wrapping() {
        let mut h = near_the_top();
        h.merge(&near_the_top()).unwrap();
        assert_eq!((h.count(), h.overflow()), (u64::MAX, u64::MAX), "saturated, not wrapped to a small number");
        assert_eq!(h.buckets(), &[2, 2, 2, 0]);
        h.record_ns(0);
        assert_eq!(h.count(), u64::MAX);
        // Percentiles of such a record still answer (overflowed ranks).
        assert_eq!(h.percentile(99.0), Some(Percentile::AtLeast(4)));
    }

    proptest::proptest! {
        /// The nearest rank is the smallest rank whose share of the samples
        /// reaches the asked share (counted, not computed).
        #[test]
        fn the_nearest_rank_is_the_smallest_rank_that_reaches_the_share(count in 1u64..3000, ppm in 0u64..=1_000_000) {
            let want = (1..=count).find(|r| u128::from(*r) * 1_000_000 >= u128::from(ppm) * u128::from(count)).unwrap();
            proptest::prop_assert_eq!(nearest_rank(count, ppm), want);
        }
    }

    #[test]
    fn the_rank_falls_in_the_bucket_that_reaches_it() {
        assert_eq!(bucket_of_rank([0, 2, 0, 3], 1), Some(1));
        assert_eq!(bucket_of_rank([0, 2, 0, 3], 3), Some(3));
        assert_eq!(bucket_of_rank([0, 2, 0, 3], 6), None);
    }

    proptest::proptest! {
        /// Whatever a guest record says, reading and merging it never
        /// panics, and the merged counts are the saturating sums.
        #[test]
        fn any_guest_record_reads_and_merges_without_wrapping(
            count in proptest::prelude::any::<u64>(),
            overflow in proptest::prelude::any::<u64>(),
            sum_ns in proptest::prelude::any::<u64>(),
            min_ns in proptest::prelude::any::<u64>(),
            max_ns in proptest::prelude::any::<u64>(),
            buckets in proptest::collection::vec(proptest::prelude::any::<u32>(), 0..16),
            consistent in proptest::prelude::any::<bool>(),
        ) {
            let in_buckets = buckets.iter().map(|&b| u64::from(b)).sum::<u64>();
            // Half the cases made consistent, so merging is reached.
            let count = if consistent { in_buckets.saturating_add(overflow) } else { count };
            let overflow = if consistent { count - in_buckets } else { overflow };
            let (min_ns, max_ns) = if consistent { (min_ns.min(max_ns), min_ns.max(max_ns)) } else { (min_ns, max_ns) };
            let summary = HistSummary { count, sum_ns, min_ns, max_ns, overflow };
            if let Ok(h) = Histogram::from_record(&summary, &buckets) {
                let mut m = h.clone();
                m.merge(&h).unwrap();
                proptest::prop_assert_eq!(m.count(), h.count().saturating_add(h.count()));
                proptest::prop_assert_eq!(m.overflow(), h.overflow().saturating_add(h.overflow()));
                let _ = m.stats();
            }
        }
    }
}
