//! A distribution of µs figures (switch timings) in bounded memory, however
//! many are added: count, sum, min and max exact; percentiles from a
//! log-linear histogram whose buckets are at most 1/64 (1.6 %) of their
//! value wide (1 µs below 128 µs, where they are exact).
//!
//! ```text
//!  value v < 128          bucket v                        (exact)
//!  2^e <= v < 2^(e+1)     bucket 128 + (e-7)*64 + m        m = the 6 bits after v's top bit
//! ```

use serde::{Deserialize, Serialize};

use super::Spread;

/// Values below this have a bucket each.
const EXACT: u64 = 128;
/// Sub-buckets per power of two above `EXACT`.
const SUB_BITS: u32 = 6;
const BUCKETS: usize = EXACT as usize + (64 - 7) * (1 << SUB_BITS);

/// min / mean / max and percentiles of the figures added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Distribution {
    buckets: Vec<u64>,
    count: u64,
    sum: u128,
    min: u64,
    max: u64,
}

/// A distribution as the reports show it (µs).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub min_us: u64,
    /// Percentiles: the lower edge of the bucket holding that rank (never
    /// below `min_us`), at most 1.6 % under the true figure.
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
}

fn index(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let m = (v >> (e - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    EXACT as usize + (e as usize - 7) * (1 << SUB_BITS) + m as usize
}

fn lower_edge(i: usize) -> u64 {
    if i < EXACT as usize {
        return i as u64;
    }
    let j = i - EXACT as usize;
    let e = (j >> SUB_BITS) as u32 + 7;
    let m = (j & ((1 << SUB_BITS) - 1)) as u64;
    ((1 << SUB_BITS) + m) << (e - SUB_BITS)
}

impl Default for Distribution {
    fn default() -> Self {
        Self::new()
    }
}

impl Distribution {
    pub fn new() -> Self {
        Self { buckets: vec![0; BUCKETS], count: 0, sum: 0, min: u64::MAX, max: 0 }
    }

    pub fn add(&mut self, us: u64) {
        self.buckets[index(us)] += 1;
        self.count += 1;
        self.sum += u128::from(us);
        self.min = self.min.min(us);
        self.max = self.max.max(us);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The figure of rank `per_mille` (nearest rank), as a bucket's lower
    /// edge clamped to `[min, max]`.
    pub fn percentile(&self, per_mille: u64) -> u64 {
        let rank = crate::stats::nearest_rank(self.count, per_mille * 1000);
        match crate::stats::bucket_of_rank(self.buckets.iter().copied(), rank) {
            Some(i) => lower_edge(i).clamp(self.min, self.max),
            None => self.max,
        }
    }

    /// `None` while empty.
    pub fn summary(&self) -> Option<Summary> {
        (self.count > 0).then(|| Summary {
            count: self.count,
            min_us: self.min,
            p50_us: self.percentile(500),
            p99_us: self.percentile(990),
            max_us: self.max,
            mean_us: self.sum as f64 / self.count as f64,
        })
    }

    /// min / p50 / p99 / max, as the run's summary prints them.
    pub fn spread(&self) -> Option<Spread> {
        self.summary().map(|s| Spread { min_us: s.min_us, p50_us: s.p50_us, p99_us: s.p99_us, max_us: s.max_us })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_tile_the_range_and_stay_narrow() {
        let mut v = 0u64;
        let mut prev = None;
        while v < u64::MAX / 3 {
            let i = index(v);
            assert!(lower_edge(i) <= v, "{v} lies above its bucket's lower edge");
            assert!(lower_edge(i + 1) > v, "{v} lies below the next bucket");
            if v >= EXACT {
                assert!((lower_edge(i + 1) - lower_edge(i)) * 64 <= lower_edge(i), "bucket of {v} too wide");
            }
            if let Some(p) = prev {
                assert!(i >= p);
            }
            prev = Some(i);
            v += v / 16 + 1;
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn exact_below_128_and_within_a_bucket_above() {
        let mut d = Distribution::new();
        assert_eq!(d.summary(), None);
        for v in 1..=100 {
            d.add(v);
        }
        let s = d.summary().unwrap();
        assert_eq!((s.count, s.min_us, s.p50_us, s.p99_us, s.max_us), (100, 1, 50, 99, 100));
        assert_eq!(s.mean_us, 50.5);
        let mut d = Distribution::new();
        // 1000 figures 10 ms .. 20 ms: the percentiles agree with the
        // exact ones to within one bucket.
        let figures: Vec<u64> = (0..1000).map(|i| 10_000 + i * 10).collect();
        for &f in &figures {
            d.add(f);
        }
        let s = d.summary().unwrap();
        let exact = Spread::of(&mut figures.clone()).unwrap();
        assert_eq!((s.min_us, s.max_us), (exact.min_us, exact.max_us));
        for (got, want) in [(s.p50_us, exact.p50_us), (s.p99_us, exact.p99_us)] {
            assert!(got <= want && (want - got) * 64 <= want, "{got} vs {want}");
        }
    }
}
