//! `rtswitch bench --repeat N`: the suite's measurements N times over, and
//! each headline figure with its spread (min / median / max over the
//! repeats). The table and plots show the last repeat in full; the JSON
//! keeps every repeat's headline figures and failures.

use serde::Serialize;

use super::table::{cells, grid};
use super::{Suite, switching::PhaseSpreads};
use rtswitch::switch::Spread;

/// One headline figure of one repeat.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Headline {
    pub name: String,
    pub unit: &'static str,
    /// `None`: the part did not run or gave no figure.
    pub value: Option<f64>,
    /// The value is only a lower bound (a percentile beyond the histogram).
    pub at_least: bool,
}

/// One repeat's figures and what failed in it.
#[derive(Clone, Debug, Serialize)]
pub struct Repeat {
    /// 1..=N.
    pub index: u32,
    pub headlines: Vec<Headline>,
    pub failures: Vec<String>,
}

/// One headline figure over every repeat.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HeadlineSpread {
    pub name: String,
    pub unit: &'static str,
    /// Per repeat, in order (`null`: no figure in that repeat).
    pub values: Vec<Option<f64>>,
    /// Over the repeats that gave a figure; the median is nearest-rank.
    pub min: Option<f64>,
    pub median: Option<f64>,
    pub max: Option<f64>,
    /// Some value was only a lower bound.
    pub at_least: bool,
}

fn push(v: &mut Vec<Headline>, name: impl Into<String>, unit: &'static str, value: Option<f64>) {
    v.push(Headline { name: name.into(), unit, value, at_least: false });
}

/// The suite's headline figures: what its table judges or compares.
pub fn headlines(s: &Suite) -> Vec<Headline> {
    let mut v = Vec::new();
    if let Some(b) = &s.boot {
        push(&mut v, "boot p50", "ms", b.p50_ms);
    }
    if let Some(l) = &s.latency {
        for c in &l.runs {
            let p99 = c.summary.figures().and_then(|f| f.thread_p99);
            v.push(Headline {
                name: format!("latency {}: thread p99 (median over slices)", c.summary.name()),
                unit: "us",
                value: p99.map(|p| p.us() as f64),
                at_least: p99.is_some_and(|p| p.at_least()),
            });
        }
        // The gain's spread has a figure over the repeats only.
        for t in l.targets.iter().filter(|t| t.what != super::targets::GAIN_SPREAD) {
            v.push(Headline {
                name: t.what.clone(),
                unit: "x",
                value: t.value.map(|r| r.value),
                at_least: t.value.is_some_and(|r| !matches!(r.bound, super::ratio::Bound::Exact)),
            });
        }
    }
    if let Some(t) = &s.throughput {
        for r in &t.runs {
            push(&mut v, format!("lock throughput {}", r.name), "ops/s", r.ops_per_s);
        }
        push(&mut v, "lock throughput rt gain (rt / mainline ops/s)", "x", t.rt_gain);
    }
    let spread =
        |v: &mut Vec<Headline>, name: &str, p: Option<&PhaseSpreads>, f: fn(&PhaseSpreads) -> Option<Spread>| {
            let s = p.and_then(f);
            push(v, format!("{name} p50"), "ms", s.map(|s| s.p50_us as f64 / 1e3));
            push(v, format!("{name} max"), "ms", s.map(|s| s.max_us as f64 / 1e3));
        };
    if let Some(sw) = &s.switch {
        let load = sw.under_load.spreads.as_ref();
        spread(&mut v, "switch under load: blackout", load, |x| x.blackout);
        spread(&mut v, "switch under load: total", load, |x| x.total);
        spread(&mut v, "switch idle: set-mode round trip", sw.idle.spreads.as_ref(), |x| x.client_rtt);
    }
    for p in s.scale.iter().flatten() {
        let x = p.spreads.as_ref().and_then(|x| x.total);
        push(&mut v, format!("scale {} vCPUs: total p50", p.config.vcpus), "ms", x.map(|s| s.p50_us as f64 / 1e3));
    }
    // What the switch targets are judged on over the repeats.
    for t in &s.switch_targets {
        push(&mut v, t.what.clone(), "x", t.value.map(|r| r.value));
    }
    v
}

/// One headline's value in each repeat, in order (`None`: no figure).
/// A figure that was only a bound counts as none.
pub fn values(repeats: &[Repeat], name: &str) -> Vec<Option<f64>> {
    repeats.iter().map(|r| r.headlines.iter().find(|h| h.name == name && !h.at_least).and_then(|h| h.value)).collect()
}

/// Every headline over the repeats, in the first repeat's order.
pub fn spreads(repeats: &[Repeat]) -> Vec<HeadlineSpread> {
    let Some(first) = repeats.first() else { return Vec::new() };
    first
        .headlines
        .iter()
        .map(|h| {
            let of: Vec<Option<&Headline>> =
                repeats.iter().map(|r| r.headlines.iter().find(|x| x.name == h.name)).collect();
            let values: Vec<Option<f64>> = of.iter().map(|x| x.and_then(|x| x.value)).collect();
            let known: Vec<f64> = values.iter().flatten().copied().collect();
            let s = super::min_p50_max(&known);
            HeadlineSpread {
                name: h.name.clone(),
                unit: h.unit,
                min: s.map(|s| s.0),
                median: s.map(|s| s.1),
                max: s.map(|s| s.2),
                at_least: of.iter().flatten().any(|x| x.at_least),
                values,
            }
        })
        .collect()
}

fn num(v: Option<f64>, unit: &str) -> String {
    match v {
        None => "-".to_string(),
        Some(v) if unit == "x" => format!("{v:.2}"),
        Some(v) if unit == "ms" => format!("{v:.3}"),
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.1}"),
    }
}

/// The spread section of the table.
pub fn render(spreads: &[HeadlineSpread], n: usize) -> String {
    let mut rows = vec![cells(&["", "unit", "min", "median", "max", "|", "each repeat"])];
    for s in spreads {
        let each: Vec<String> = s.values.iter().map(|v| num(*v, s.unit)).collect();
        rows.push(vec![
            format!("  {}{}", s.name, if s.at_least { " (>=: beyond the histogram)" } else { "" }),
            s.unit.to_string(),
            num(s.min, s.unit),
            num(s.median, s.unit),
            num(s.max, s.unit),
            "|".to_string(),
            each.join(" "),
        ]);
    }
    format!(
        "\nspread over {n} repeats (min / median / max of each headline figure; the sections above show the last \
         repeat):\n{}",
        grid(&rows, &[0, 1, 6])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_take_min_median_max_over_the_repeats_that_gave_a_figure() {
        let h = |v: Option<f64>| Headline { name: "boot p50".into(), unit: "ms", value: v, at_least: false };
        let reps: Vec<Repeat> = [Some(12.0), None, Some(10.0), Some(30.0)]
            .into_iter()
            .zip(1..)
            .map(|(v, index)| Repeat { index, headlines: vec![h(v)], failures: vec![] })
            .collect();
        let s = spreads(&reps);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].min, s[0].median, s[0].max), (Some(10.0), Some(12.0), Some(30.0)));
        assert_eq!(s[0].values, vec![Some(12.0), None, Some(10.0), Some(30.0)]);
        let text = render(&s, 4);
        assert!(text.contains("spread over 4 repeats") && text.contains("12.000 - 10.000 30.000"), "{text}");
        assert!(spreads(&[]).is_empty());
    }
}
