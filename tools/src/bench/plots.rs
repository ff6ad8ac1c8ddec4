//! SVG plots of the benchmark suite: latency histograms per lock mode,
//! the switch-time distribution as empirical CDFs, and the switch cost
//! against the vCPU count.
//!
//! Drawn like `--plot` (`crate::plot`): plotters' SVG backend
//! only, so text stays SVG `<text>` (no font rendering, no system fonts).
//! Histograms are drawn in the round bins of
//! [`bin_width`](crate::plot::histpanel::bin_width) on a log count axis;
//! durations spanning microseconds to seconds are drawn on log10 axes.
//! Input with nothing to draw still gives a valid SVG that says "no data".

use std::fmt::{Display, Write};

use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::plot::histpanel::{self, Area, no_data};

/// A plot that could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// plotters failed while drawing.
    #[error("cannot draw the {plot} plot: {why}")]
    Draw {
        /// Which plot: "latency", "switch" or "scale".
        plot: &'static str,
        /// plotters' error.
        why: String,
    },
}

/// One latency histogram: 1 µs buckets as (bucket start µs, count),
/// ascending, only non-empty ones; `overflow` samples were beyond
/// `range_us` (they cannot be placed on the x axis: the legend counts them).
#[derive(Debug, Clone)]
pub struct HistSeries {
    /// Legend text (the suite puts p50/p99 in it).
    pub label: String,
    /// (bucket start µs, samples), ascending, non-empty buckets only.
    pub buckets: Vec<(u64, u64)>,
    /// Samples beyond `range_us`.
    pub overflow: u64,
    /// The histogram's range in µs.
    pub range_us: u64,
}

/// A panel of [`latency_svg`]: its title and its series.
#[derive(Debug, Clone)]
pub struct HistPanel {
    /// The panel's caption.
    pub title: String,
    /// One histogram per load.
    pub series: Vec<HistSeries>,
}

/// A distribution of durations in µs (unsorted; may be empty: drawn as
/// nothing, the legend says "no data").
#[derive(Debug, Clone)]
pub struct Distribution {
    /// Legend text.
    pub label: String,
    /// The durations, µs, in any order.
    pub values_us: Vec<u64>,
}

/// Switch cost at one vCPU count (`None`: not measured, e.g. that VM
/// failed; the point is skipped).
#[derive(Debug, Clone)]
pub struct ScalePoint {
    /// The VM's vCPU count.
    pub vcpus: u32,
    /// Median blackout, µs.
    pub blackout_p50_us: Option<u64>,
    /// 99th percentile blackout, µs.
    pub blackout_p99_us: Option<u64>,
    /// Median total switch time, µs.
    pub total_p50_us: Option<u64>,
    /// 99th percentile total switch time, µs.
    pub total_p99_us: Option<u64>,
    /// Median platform floor (pause + resume of every vCPU, no patch), µs.
    pub floor_p50_us: Option<u64>,
}

type Drawn = Result<(), String>;

const WIDTH: u32 = 1100;
const TITLE_HEIGHT: u32 = 50;
const PANEL_HEIGHT: u32 = 420;
const CHART_SIZE: (u32, u32) = (WIDTH, 650);
/// By series index.
const COLORS: [RGBColor; 7] = crate::plot::OKABE_ITO;

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

fn why(e: impl Display) -> String {
    e.to_string()
}

/// The SVG text of a `size` canvas titled `title`, its body drawn by `body`.
fn render(
    plot: &'static str,
    size: (u32, u32),
    title: &str,
    body: impl FnOnce(&Area<'_>) -> Drawn,
) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(why)
            .and_then(|()| root.titled(title, ("sans-serif", 22)).map_err(why))
            .and_then(|area| body(&area))
            .and_then(|()| root.present().map_err(why));
        drawn.map_err(|why| PlotError::Draw { plot, why })?;
    }
    Ok(svg)
}

/// Latency histograms: one panel per lock mode (the suite passes
/// "mainline" and "rt"), each with one series per load. Counts on a log y
/// axis, the same in every panel; x in µs from 0 to the largest p99.9 of
/// any series (a max set by a few host stalls would squeeze the body,
/// where the modes differ, into the leftmost bins), the same in every
/// panel so that they compare, drawn in the round bins of
/// [`bin_width`](crate::plot::histpanel::bin_width) when wide. A legend
/// entry per series counts what is not drawn: the samples past the axis
/// (above the p99.9 clip) and those beyond the histogram's range.
///
/// # Errors
/// [`PlotError::Draw`] if plotters fails (it does not for any input the tests know of).
pub fn latency_svg(title: &str, panels: &[HistPanel]) -> Result<String, PlotError> {
    let rows = panels.len().max(1);
    let height = PANEL_HEIGHT.saturating_mul(u32::try_from(rows).unwrap_or(u32::MAX)).saturating_add(TITLE_HEIGHT);
    render("latency", (WIDTH, height), title, |area| {
        if panels.is_empty() {
            return no_data(area);
        }
        // One x axis and one count axis for all panels, so that they
        // compare: up to the largest p99.9 (the tails beyond are counted).
        let clip = panels.iter().flat_map(|p| &p.series).filter_map(p99_9).max();
        let scale = histpanel::Scale::up_to(clip.unwrap_or(0));
        let lines: Vec<Vec<histpanel::Line>> = panels
            .iter()
            .map(|p| {
                let line = |(i, s): (usize, &HistSeries)| histpanel::Line {
                    label: hist_legend(s, scale.end_us),
                    color: color(i).to_rgba(),
                    bins: bins(&s.buckets, scale.width, scale.end_us),
                };
                p.series.iter().enumerate().map(line).collect()
            })
            .collect();
        let scale = scale.fit(lines.iter().flatten().flat_map(|l| &l.bins).map(|&(_, n)| n));
        area.split_evenly((rows, 1))
            .iter()
            .zip(panels.iter().zip(&lines))
            .try_for_each(|(a, (p, lines))| histpanel::draw(a, &p.title, 18, scale, lines))
    })
}

/// `(bin start µs, samples)` for every bin of `width` µs below `end_us`;
/// none when the histogram is empty.
fn bins(buckets: &[(u64, u64)], width: u64, end_us: u64) -> Vec<(u64, u64)> {
    if buckets.iter().all(|b| b.1 == 0) {
        return Vec::new();
    }
    let mut out: Vec<(u64, u64)> = (0..end_us / width).map(|i| (i * width, 0)).collect();
    for &(us, n) in buckets {
        if let Some(bin) = usize::try_from(us / width).ok().and_then(|i| out.get_mut(i)) {
            bin.1 = bin.1.saturating_add(n);
        }
    }
    out
}

/// The bucket (µs) holding a series' p99.9 sample, nearest rank over the
/// samples in buckets and in the overflow; `None` without samples or when
/// it lies in the overflow (then the last bucket present bounds the axis).
fn p99_9(s: &HistSeries) -> Option<u64> {
    let in_buckets: u64 = s.buckets.iter().map(|b| b.1).sum();
    let total = in_buckets + s.overflow;
    if in_buckets == 0 {
        return None;
    }
    let rank = (total * 999).div_ceil(1000).max(1);
    let mut seen = 0;
    for &(us, n) in &s.buckets {
        seen += n;
        if seen >= rank {
            return Some(us);
        }
    }
    s.buckets.iter().filter(|b| b.1 > 0).map(|b| b.0).max()
}

/// A series' legend: its label, and what is not drawn: the samples past
/// the x axis (`end_us`) and those beyond the histogram's range.
fn hist_legend(s: &HistSeries, end_us: u64) -> String {
    let mut text = s.label.clone();
    if s.buckets.iter().all(|b| b.1 == 0) {
        text.push_str(" (no data)");
    }
    let past: u64 = s.buckets.iter().filter(|b| b.0 >= end_us).map(|b| b.1).sum();
    if past > 0 {
        let _ = write!(text, "; {past} above {end_us} µs (past the p99.9 axis)");
    }
    if s.overflow > 0 {
        let _ = write!(text, "; {} beyond {} µs (the histogram's range)", s.overflow, s.range_us);
    }
    text
}

/// The powers of ten around `lo..=hi` (both at least 1), at least a decade apart.
fn decades(lo: u64, hi: u64) -> (f64, f64) {
    let mut start = 1u64;
    while let Some(next) = start.checked_mul(10).filter(|&n| n <= lo.max(1)) {
        start = next;
    }
    let mut end = start.saturating_mul(10);
    while end < hi && end != u64::MAX {
        end = end.saturating_mul(10);
    }
    (start as f64, end as f64)
}

/// `us` as "250 µs", "1.5 ms", "2 s".
fn fmt_us(us: f64) -> String {
    let us = if (us - us.round()).abs() < 1e-6 * us.abs().max(1.0) { us.round() } else { us };
    let (v, unit) = if us >= 1e6 {
        (us / 1e6, "s")
    } else if us >= 1e3 {
        (us / 1e3, "ms")
    } else {
        (us, "µs")
    };
    let text = format!("{v:.2}");
    format!("{} {unit}", text.trim_end_matches('0').trim_end_matches('.'))
}

/// The empirical CDF of `sorted` as a step line ending at `x_end`.
fn ecdf(sorted: &[u64], x_end: f64) -> Vec<(f64, f64)> {
    let n = sorted.len() as f64;
    let mut points = Vec::new();
    let mut i = 0;
    while let Some(&v) = sorted.get(i) {
        let j = i + sorted[i..].partition_point(|&x| x == v);
        points.push((v as f64, i as f64 / n));
        points.push((v as f64, j as f64 / n));
        i = j;
    }
    if let Some(&(_, y)) = points.last() {
        points.push((x_end, y));
    }
    points
}

/// Switch-time distribution: the empirical CDF of each series (y: the
/// fraction of switches at or below x) on a log10 x axis in µs, 0 drawn
/// at 1 µs. The suite passes freeze, blackout, total (under load) and
/// the platform floor blackout. The legend gives each series' sample
/// count; p50 and p99 are marked by horizontal lines.
///
/// # Errors
/// [`PlotError::Draw`] if plotters fails (it does not for any input the tests know of).
pub fn switch_svg(title: &str, series: &[Distribution]) -> Result<String, PlotError> {
    render("switch", CHART_SIZE, title, |whole| {
        // The legend below the chart, not on it: in any corner it would
        // cover some series' tail.
        let (area, below) = whole.split_vertically(whole.dim_in_pixel().1.saturating_sub(LEGEND_STRIP));
        let area = &area;
        let sorted: Vec<Vec<u64>> = series
            .iter()
            .map(|d| {
                let mut v: Vec<u64> = d.values_us.iter().map(|&us| us.max(1)).collect();
                v.sort_unstable();
                v
            })
            .collect();
        let lo = sorted.iter().filter_map(|v| v.first()).min();
        let hi = sorted.iter().filter_map(|v| v.last()).max();
        let (x_lo, x_hi) = match (lo, hi) {
            (Some(&lo), Some(&hi)) => decades(lo, hi),
            _ => (1.0, 1e6),
        };
        let mut chart = ChartBuilder::on(area)
            .margin(16)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((x_lo..x_hi).log_scale(), 0f64..1.02)
            .map_err(why)?;
        let x_fmt = |v: &f64| fmt_us(*v);
        let y_fmt = |v: &f64| format!("{v:.1}");
        chart
            .configure_mesh()
            .x_desc("duration (log scale)")
            .y_desc("fraction of switches at or below")
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .draw()
            .map_err(why)?;
        let grey = RGBColor(150, 150, 150);
        for (name, y) in [("p50", 0.5), ("p99", 0.99)] {
            chart.draw_series(LineSeries::new([(x_lo, y), (x_hi, y)], grey.stroke_width(1))).map_err(why)?;
            let style =
                TextStyle::from(("sans-serif", 13).into_font()).color(&grey).pos(Pos::new(HPos::Left, VPos::Top));
            chart.draw_series(std::iter::once(Text::new(name, (x_lo * 1.1, y - 0.01), style))).map_err(why)?;
        }
        for (i, values) in sorted.iter().enumerate() {
            let style = color(i).stroke_width(2);
            chart.draw_series(LineSeries::new(ecdf(values, x_hi), style)).map_err(why)?;
        }
        if sorted.iter().all(Vec::is_empty) {
            no_data(&chart.plotting_area().strip_coord_spec())?;
        }
        let entries: Vec<(String, RGBColor, Mark)> = series
            .iter()
            .zip(&sorted)
            .enumerate()
            .map(|(i, (d, values))| {
                let label = match values.len() {
                    0 => format!("{} (no data)", d.label),
                    n => format!("{} (n = {n})", d.label),
                };
                (label, color(i), Mark::Line)
            })
            .collect();
        legend_strip(&below, &entries)
    })
}

/// Height of the legend strip under a chart.
const LEGEND_STRIP: u32 = 60;

/// How a legend entry is drawn.
#[derive(Clone, Copy)]
enum Mark {
    Line,
    Dashed,
    Bar,
}

/// A legend in its own strip, outside the chart (in no corner of a chart
/// can it be sure to cover no data): a mark and its label per entry, two
/// to a row.
fn legend_strip(area: &Area<'_>, entries: &[(String, RGBColor, Mark)]) -> Drawn {
    let (w, _) = area.dim_in_pixel();
    let col = (w as i32 - 100) / 2;
    for (i, (label, c, mark)) in entries.iter().enumerate() {
        let (x, y) = (70 + col * (i as i32 % 2), 12 + 22 * (i as i32 / 2));
        match mark {
            Mark::Line => area.draw(&PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(2))),
            Mark::Dashed => area.draw(&DashedPathElement::new(vec![(x, y), (x + 24, y)], 6, 4, c.stroke_width(2))),
            Mark::Bar => area.draw(&Rectangle::new([(x + 4, y - 6), (x + 20, y + 6)], c.filled())),
        }
        .map_err(why)?;
        let style =
            TextStyle::from(("sans-serif", 14).into_font()).color(&BLACK).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(label.clone(), (x + 32, y), style)).map_err(why)?;
    }
    Ok(())
}

/// A series of [`scale_svg`]: name, value, colour, p99 (dashed, triangles) or p50.
type Metric = (&'static str, fn(&ScalePoint) -> Option<u64>, RGBColor, bool);

const METRICS: [Metric; 5] = [
    ("blackout p50", |p| p.blackout_p50_us, RGBColor(0, 114, 178), false),
    ("blackout p99", |p| p.blackout_p99_us, RGBColor(0, 114, 178), true),
    ("total p50", |p| p.total_p50_us, RGBColor(213, 94, 0), false),
    ("total p99", |p| p.total_p99_us, RGBColor(213, 94, 0), true),
    ("platform floor p50 (pause+resume)", |p| p.floor_p50_us, RGBColor(120, 120, 120), false),
];

/// Blackout and total switch time against the vCPU count: x = vCPUs on
/// a log2 axis covering the points given, y in µs on a log10 axis; five
/// line series with point markers (blackout p50 and p99 in blue, total
/// p50 and p99 in orange, p99 dashed with triangles; the platform floor's
/// p50 in grey) and a legend. A
/// value that was not measured is skipped (its line is broken there);
/// the vCPU counts with no value at all are named under the title. With
/// `host_cpus`, a vertical line past that count marks where the vCPUs
/// overcommit the host's CPUs, and says why the figures jump there.
///
/// # Errors
/// [`PlotError::Draw`] if plotters fails (it does not for any input the tests know of).
pub fn scale_svg(title: &str, points: &[ScalePoint], host_cpus: Option<u32>) -> Result<String, PlotError> {
    render("scale", CHART_SIZE, title, |whole| {
        let (area, below) = whole.split_vertically(whole.dim_in_pixel().1.saturating_sub(LEGEND_STRIP));
        let area = &area;
        let mut points = points.to_vec();
        points.sort_by_key(|p| p.vcpus);
        let x = |p: &ScalePoint| f64::from(p.vcpus.max(1));
        let values: Vec<u64> =
            points.iter().flat_map(|p| METRICS.map(|m| (m.1)(p))).flatten().map(|v| v.max(1)).collect();
        let (y_lo, y_hi) = match (values.iter().min(), values.iter().max()) {
            (Some(&lo), Some(&hi)) => decades(lo, hi),
            _ => (1.0, 1e6),
        };
        let (x_lo, x_hi) = match (points.first(), points.last()) {
            (Some(first), Some(last)) => (x(first) / 1.3, x(last) * 1.3),
            _ => (1.0 / 1.3, 8.0 * 1.3),
        };
        let missing: Vec<String> =
            points.iter().filter(|p| METRICS.iter().all(|m| (m.1)(p).is_none())).map(|p| p.vcpus.to_string()).collect();
        let mut builder = ChartBuilder::on(area);
        if !missing.is_empty() {
            builder.caption(format!("not measured at {} vCPUs", missing.join(", ")), ("sans-serif", 16));
        }
        let mut chart = builder
            .margin(16)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((x_lo..x_hi).log_scale().base(2.0), (y_lo..y_hi).log_scale())
            .map_err(why)?;
        // Integral labels only, one per vCPU count of a power-of-two grid.
        let x_fmt = |v: &f64| if (v - v.round()).abs() < 1e-9 { format!("{v:.0}") } else { String::new() };
        let y_fmt = |v: &f64| fmt_us(*v);
        chart
            .configure_mesh()
            .x_labels(points.len().max(4))
            .x_desc("vCPUs (log2 scale)")
            .y_desc("switch time (log scale)")
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .draw()
            .map_err(why)?;
        for &(_, value, color, p99) in &METRICS {
            let line = color.stroke_width(2);
            let at = |p: &ScalePoint| value(p).map(|v| (x(p), v.max(1) as f64));
            // The line, broken where a value is missing.
            for segment in points.split(|p| value(p).is_none()) {
                let xy = segment.iter().filter_map(at);
                if p99 {
                    chart.draw_series(DashedLineSeries::new(xy, 8, 5, line)).map_err(why)?;
                } else {
                    chart.draw_series(LineSeries::new(xy, line)).map_err(why)?;
                }
            }
            let xy: Vec<(f64, f64)> = points.iter().filter_map(at).collect();
            let dot = color.filled();
            // p99: triangles and a dashed line; p50: circles and a solid line.
            if p99 {
                chart.draw_series(xy.iter().map(|&at| TriangleMarker::new(at, 6, dot))).map_err(why)?;
            } else {
                chart.draw_series(xy.iter().map(|&at| Circle::new(at, 4, dot))).map_err(why)?;
            }
        }
        if let Some(n) = host_cpus.filter(|&n| points.iter().any(|p| p.vcpus > n)) {
            // Between n and the next count (log2 axis: 1.3 n sits before 2 n).
            let at = f64::from(n) * 1.3;
            let grey = RGBColor(110, 110, 110);
            chart
                .draw_series(DashedLineSeries::new([(at, y_lo), (at, y_hi)], 6, 4, grey.stroke_width(1)))
                .map_err(why)?;
            let style =
                TextStyle::from(("sans-serif", 14).into_font()).color(&grey).pos(Pos::new(HPos::Left, VPos::Top));
            let note = format!("right of here: more vCPUs than the {n} host CPUs (overcommitted):");
            let why_jump = "a switch waits for vCPUs the host is not running";
            chart
                .draw_series(std::iter::once(Text::new(note, (at * 1.03, y_hi / 1.15), style.clone())))
                .map_err(why)?;
            chart.draw_series(std::iter::once(Text::new(why_jump, (at * 1.03, y_hi / 1.6), style))).map_err(why)?;
        }
        if values.is_empty() {
            no_data(&chart.plotting_area().strip_coord_spec())?;
        }
        let entries: Vec<(String, RGBColor, Mark)> = METRICS
            .iter()
            .map(|&(name, _, c, p99)| {
                let label = if values.is_empty() { format!("{name} (no data)") } else { name.to_string() };
                (label, c, if p99 { Mark::Dashed } else { Mark::Line })
            })
            .collect();
        legend_strip(&below, &entries)
    })
}

/// One profile of the ablation plot: thread latency p50, p99 and max in
/// µs (`None`: not measured; a p99 in the overflow is drawn at the range
/// and its label says so).
#[derive(Debug, Clone)]
pub struct AblationBar {
    /// The profile's short label (the x axis).
    pub label: String,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub p99_at_least: bool,
    pub max_us: Option<u64>,
}

/// Which dimension buys how much: per profile, thread latency p50, p99
/// and max as grouped bars on a log µs axis, profiles left to right as
/// the table lists them.
///
/// # Errors
/// [`PlotError::Draw`] if plotters fails (it does not for any input the tests know of).
pub fn ablation_svg(title: &str, bars: &[AblationBar]) -> Result<String, PlotError> {
    type Metric = (&'static str, fn(&AblationBar) -> Option<u64>);
    const METRICS: [Metric; 3] = [("p50", |b| b.p50_us), ("p99", |b| b.p99_us), ("max", |b| b.max_us)];
    render("ablation", CHART_SIZE, title, |whole| {
        let (area, below) = whole.split_vertically(whole.dim_in_pixel().1.saturating_sub(LEGEND_STRIP));
        let area = &area;
        let values: Vec<u64> =
            bars.iter().flat_map(|b| METRICS.map(|m| (m.1)(b))).flatten().map(|v| v.max(1)).collect();
        let (y_lo, y_hi) = match (values.iter().min(), values.iter().max()) {
            (Some(&lo), Some(&hi)) => decades(lo, hi),
            _ => (1.0, 1e6),
        };
        let n = bars.len().max(1);
        let mut chart = ChartBuilder::on(area)
            .margin(16)
            .x_label_area_size(60)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..n as f64, (y_lo..y_hi).log_scale())
            .map_err(why)?;
        let labels: Vec<String> = bars.iter().map(|b| b.label.clone()).collect();
        // A label at the middle of each profile's group, none elsewhere.
        let x_fmt = move |v: &f64| {
            let i = v.floor();
            if (v - i - 0.5).abs() < 1e-6 { labels.get(i as usize).cloned().unwrap_or_default() } else { String::new() }
        };
        let y_fmt = |v: &f64| fmt_us(*v);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(2 * n + 1)
            .x_label_formatter(&x_fmt)
            .x_desc("dimensions switched to their rt variant (the others stay mainline's)")
            .y_desc("thread latency (log scale)")
            .y_label_formatter(&y_fmt)
            .draw()
            .map_err(why)?;
        for (k, &(_, value)) in METRICS.iter().enumerate() {
            let c = color(k);
            let rects = bars.iter().enumerate().filter_map(move |(i, b)| {
                let v = value(b)?.max(1) as f64;
                let x0 = i as f64 + 0.12 + 0.26 * k as f64;
                Some(Rectangle::new([(x0, y_lo), (x0 + 0.22, v.min(y_hi))], c.filled()))
            });
            chart.draw_series(rects).map_err(why)?;
        }
        // The figure above each bar.
        let style = ("sans-serif", 13).into_text_style(area).pos(Pos::new(HPos::Center, VPos::Bottom));
        for (i, b) in bars.iter().enumerate() {
            for (k, &(name, value)) in METRICS.iter().enumerate() {
                if let Some(v) = value(b) {
                    let at_least = name == "p99" && b.p99_at_least;
                    let text = format!("{}{}", if at_least { ">=" } else { "" }, fmt_us(v as f64));
                    let x = i as f64 + 0.23 + 0.26 * k as f64;
                    chart
                        .draw_series(std::iter::once(Text::new(text, (x, (v.max(1) as f64).min(y_hi)), style.clone())))
                        .map_err(why)?;
                }
            }
        }
        if values.is_empty() {
            no_data(&chart.plotting_area().strip_coord_spec())?;
        }
        let entries: Vec<(String, RGBColor, Mark)> =
            METRICS.iter().enumerate().map(|(k, &(name, _))| (name.to_string(), color(k), Mark::Bar)).collect();
        legend_strip(&below, &entries)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(label: &str, buckets: &[(u64, u64)], overflow: u64) -> HistSeries {
        HistSeries { label: label.to_string(), buckets: buckets.to_vec(), overflow, range_us: 1000 }
    }

    fn is_svg(svg: &str) -> bool {
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>")
    }

    #[test]
    fn latency_has_a_panel_per_mode_and_a_line_per_load() {
        let panel = |title: &str| HistPanel {
            title: title.to_string(),
            series: vec![
                hist("none: p50 3 µs, p99 9 µs", &[(2, 10), (3, 50), (9, 1)], 0),
                hist("cpu: p50 4 µs, p99 20 µs", &[(3, 5), (4, 40), (20, 2)], 0),
                hist("locks: p50 5 µs, p99 700 µs", &[(5, 30), (700, 1)], 3),
            ],
        };
        let svg = latency_svg("bench latency", &[panel("mainline"), panel("rt")]).unwrap();
        assert!(is_svg(&svg), "{}", &svg[..80.min(svg.len())]);
        for text in ["bench latency", "mainline", "rt", "none: p50 3 µs", "cpu: p50 4 µs", "locks: p50 5 µs"] {
            assert!(svg.contains(text), "{text}");
        }
        assert!(svg.contains("3 beyond 1000 µs"));
        assert!(svg.contains("samples per 5 µs bin"), "701 µs wide: binned by 5 µs");
        assert!(svg.matches("<polyline").count() >= 6, "a line per load in each panel");
    }

    #[test]
    fn latency_axis_ends_at_the_p99_9_and_counts_what_lies_past_it() {
        // 10000 samples under 1.5 ms, 3 host stalls near 40 ms: the axis
        // stops at the body's p99.9, not at 40 ms.
        let body: Vec<(u64, u64)> = (100..1500).step_by(10).map(|us| (us, 70)).collect();
        let stalls = [(38_000, 1), (40_000, 1), (42_000, 1)];
        let series = |b: &[(u64, u64)]| HistSeries {
            label: "locks".into(),
            buckets: b.to_vec(),
            overflow: 0,
            range_us: 100_000,
        };
        let mut with = body.clone();
        with.extend(stalls);
        assert_eq!(p99_9(&series(&with)), Some(1490));
        let panel = HistPanel { title: "rt".into(), series: vec![series(&with)] };
        let svg = latency_svg("t", &[panel]).unwrap();
        assert!(svg.contains("3 above 1500 µs (past the p99.9 axis)"), "the tail is counted, not drawn");
        assert!(svg.contains("samples per 10 µs bin"), "1.5 ms wide: 10 µs bins, not 200 µs ones for 42 ms");
        assert_eq!(p99_9(&series(&[])), None);
        let over = HistSeries { overflow: 10, ..series(&[(5, 1)]) };
        assert_eq!(p99_9(&over), Some(5), "a p99.9 in the overflow: the last bucket bounds the axis");
    }

    #[test]
    fn latency_bins_sum_sparse_buckets() {
        assert_eq!(bins(&[(0, 1), (4, 2), (5, 3), (11, 4)], 5, 15), [(0, 3), (5, 3), (10, 4)]);
        assert_eq!(bins(&[(0, 1), (99, 2)], 5, 15), [(0, 1), (5, 0), (10, 0)], "beyond the axis: dropped");
        assert!(bins(&[], 1, 10).is_empty());
    }

    #[test]
    fn latency_degenerate_inputs_say_no_data() {
        let empty = HistPanel { title: "rt".to_string(), series: vec![hist("none", &[], 5)] };
        let bare = HistPanel { title: "mainline".to_string(), series: vec![] };
        for panels in [vec![], vec![bare.clone()], vec![empty.clone(), bare], vec![empty]] {
            let svg = latency_svg("t", &panels).unwrap();
            assert!(is_svg(&svg) && svg.contains("no data"), "{panels:?}");
        }
        let single = HistPanel { title: "rt".to_string(), series: vec![hist("zero", &[(0, 1)], 0)] };
        assert!(is_svg(&latency_svg("t", &[single]).unwrap()));
        let far = HistPanel { title: "rt".to_string(), series: vec![hist("far", &[(u64::MAX, u64::MAX)], 0)] };
        assert!(is_svg(&latency_svg("t", &[far]).unwrap()));
    }

    #[test]
    fn switch_draws_a_cdf_per_series() {
        let d = |label: &str, values_us: Vec<u64>| Distribution { label: label.to_string(), values_us };
        let series = [
            d("freeze", vec![30, 10, 20, 20]),
            d("blackout", vec![0, 150, 2000]),
            d("total under load", vec![120_000, 900_000, 40_000]),
            d("floor blackout", vec![]),
        ];
        let svg = switch_svg("switch time", &series).unwrap();
        assert!(is_svg(&svg));
        for text in
            ["switch time", "freeze (n = 4)", "blackout (n = 3)", "total under load", "floor blackout (no data)"]
        {
            assert!(svg.contains(text), "{text}");
        }
        assert!(svg.contains("1 µs") && svg.contains("1 s"), "axis from 1 µs (0 clamped) to 1 s");
        assert_eq!(
            ecdf(&[10, 20, 20, 30], 100.0),
            [(10.0, 0.0), (10.0, 0.25), (20.0, 0.25), (20.0, 0.75), (30.0, 0.75), (30.0, 1.0), (100.0, 1.0)]
        );
    }

    #[test]
    fn switch_degenerate_inputs_say_no_data() {
        let empty = Distribution { label: "freeze".to_string(), values_us: vec![] };
        for series in [vec![], vec![empty]] {
            let svg = switch_svg("t", &series).unwrap();
            assert!(is_svg(&svg) && svg.contains("no data"));
        }
        for values_us in [vec![0], vec![7], vec![0, 0, 0], vec![u64::MAX]] {
            let one = Distribution { label: "one".to_string(), values_us };
            assert!(is_svg(&switch_svg("t", &[one]).unwrap()));
        }
    }

    #[test]
    fn axis_helpers_round_to_decades_and_units() {
        assert_eq!(decades(1, 1), (1.0, 10.0));
        assert_eq!(decades(7, 1_000_000), (1.0, 1e6));
        assert_eq!(decades(150, 2000), (100.0, 1e4));
        assert_eq!(decades(0, 0), (1.0, 10.0));
        assert_eq!(fmt_us(1.0), "1 µs");
        assert_eq!(fmt_us(250.0), "250 µs");
        assert_eq!(fmt_us(1500.0), "1.5 ms");
        assert_eq!(fmt_us(999.999_999_9), "1 ms");
        assert_eq!(fmt_us(1e6), "1 s");
    }

    fn point(vcpus: u32, base: u64) -> ScalePoint {
        ScalePoint {
            vcpus,
            blackout_p50_us: Some(base),
            blackout_p99_us: Some(base * 3),
            total_p50_us: Some(base * 100),
            total_p99_us: Some(base * 400),
            floor_p50_us: Some(base / 2),
        }
    }

    #[test]
    fn scale_draws_four_series_against_vcpus() {
        let mut gap = point(4, 30);
        gap.total_p99_us = None;
        let failed = ScalePoint {
            vcpus: 8,
            blackout_p50_us: None,
            blackout_p99_us: None,
            total_p50_us: None,
            total_p99_us: None,
            floor_p50_us: None,
        };
        let svg = scale_svg("switch cost vs vCPUs", &[point(2, 20), point(1, 10), gap, failed], Some(2)).unwrap();
        assert!(is_svg(&svg));
        for text in ["switch cost vs vCPUs", "blackout p50", "blackout p99", "total p50", "total p99"] {
            assert!(svg.contains(text), "{text}");
        }
        assert!(svg.contains("not measured at 8 vCPUs"));
        assert!(svg.contains("more vCPUs than the 2 host CPUs (overcommitted)"), "the jump is explained");
        let svg = scale_svg("t", &[point(2, 20), point(1, 10)], Some(2)).unwrap();
        assert!(!svg.contains("overcommitted"), "no vCPU count above the host's CPUs");
        assert!(svg.contains("vCPUs (log2 scale)"));
    }

    #[test]
    fn scale_degenerate_inputs_say_no_data() {
        let none = ScalePoint {
            vcpus: 0,
            blackout_p50_us: None,
            blackout_p99_us: None,
            total_p50_us: None,
            total_p99_us: None,
            floor_p50_us: None,
        };
        for points in [vec![], vec![none]] {
            let svg = scale_svg("t", &points, None).unwrap();
            assert!(is_svg(&svg) && svg.contains("no data"));
        }
        let zero = ScalePoint { vcpus: 1, ..point(1, 0) };
        for points in [vec![point(1, 5)], vec![zero], vec![point(4, 5), point(4, 6)]] {
            assert!(is_svg(&scale_svg("t", &points, Some(1)).unwrap()));
        }
    }

    #[test]
    fn ablation_draws_three_bars_per_profile_with_labels() {
        let bar = |label: &str, p50, p99, max| AblationBar {
            label: label.to_string(),
            p50_us: Some(p50),
            p99_us: Some(p99),
            p99_at_least: false,
            max_us: Some(max),
        };
        let bars = [bar("mainline", 300, 900, 5000), bar("locks", 250, 800, 4000), bar("rt", 40, 120, 900)];
        let svg = ablation_svg("ablation", &bars).unwrap();
        assert!(is_svg(&svg));
        for text in ["ablation", "mainline", "locks", "rt", "p50", "p99", "max", "900 µs", "5 ms"] {
            assert!(svg.contains(text), "{text}");
        }
        assert!(svg.matches("<rect").count() >= 9, "three bars per profile");
        let none = AblationBar { label: "x".into(), p50_us: None, p99_us: None, p99_at_least: false, max_us: None };
        let svg = ablation_svg("t", &[none]).unwrap();
        assert!(is_svg(&svg) && svg.contains("no data"));
    }
}
