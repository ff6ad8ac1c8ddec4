//! `--plot FILE.svg`: thread latency (top) and IRQ latency (bottom)
//! histograms, all CPUs merged, one series per epoch (legend: epoch, mode,
//! samples, p99, max), counts on a log scale, x in µs.
//!
//! Drawn with plotters' SVG backend only: text is emitted as SVG `<text>`
//! (no font rendering, no system fonts needed). The 1 µs buckets are
//! drawn as they are while the x range is at most [`MAX_BINS`] µs wide;
//! wider ranges are drawn in bins of a round width (2, 5, 10, 20, 50 ...
//! µs, named on the y axis) so that a sparse tail stays readable. A bin
//! with no sample is drawn at the bottom of the log axis. Overflowed
//! samples (beyond the histogram range) cannot be placed on the x axis;
//! the legend counts them.

use plotters::prelude::*;

use super::stats::Histogram;
use super::summary::mode_label;
use super::{Measurement, ReportError, RunInfo};

const SIZE: (u32, u32) = (1100, 900);
/// Where an empty bin is drawn on the log axis.
const ZERO_LEVEL: f64 = 0.5;
/// Most bins drawn across the x axis.
pub const MAX_BINS: u64 = 250;

/// The display bin width for an x range of `span_us`: 1 µs while that
/// gives at most [`MAX_BINS`] bins, else the smallest of 2, 5, 10, 20, 50,
/// ... µs that does.
pub fn bin_width(span_us: u64) -> u64 {
    let mut decade = 1u64;
    loop {
        for w in [decade, 2 * decade, 5 * decade] {
            if span_us.div_ceil(w) <= MAX_BINS {
                return w;
            }
        }
        decade *= 10;
    }
}

/// `(bin start µs, samples)` for every bin up to `end_us`.
fn bins(h: &Histogram, width: u64, end_us: u64) -> Vec<(u64, u64)> {
    let end = (end_us as usize).min(h.bucket_count());
    h.buckets()[..end].chunks(width as usize).enumerate().map(|(i, c)| (i as u64 * width, c.iter().sum())).collect()
}

/// The SVG text.
pub fn render(m: &Measurement, info: &RunInfo) -> Result<String, ReportError> {
    let path = info.config.output.plot.as_ref().map_or_else(String::new, |p| p.display().to_string());
    let mut svg = String::new();
    draw(m, info, &mut svg).map_err(|why| ReportError::Plot { path, why })?;
    Ok(svg)
}

type Series<'a> = (String, &'a Histogram);

fn draw(m: &Measurement, info: &RunInfo, svg: &mut String) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = format!("rtswitch latency: {}", info.describe(m));
    let root = root.titled(&title, ("sans-serif", 22)).map_err(|e| err(&e))?;
    let panels = root.split_evenly((2, 1));
    let thread: Vec<Series> = m.epochs.iter().map(|e| (legend(e, &e.all.thread), &e.all.thread)).collect();
    let irq: Vec<Series> = m.epochs.iter().map(|e| (legend(e, &e.all.irq), &e.all.irq)).collect();
    panel(&panels[0], "thread latency (timer deadline to measurement thread running), all CPUs", &thread)?;
    panel(&panels[1], "IRQ latency (timer deadline to interrupt handler entry), all CPUs", &irq)?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

fn legend(e: &super::EpochRows, h: &Histogram) -> String {
    let s = h.stats();
    let pct = s.p99.map_or_else(|| "-".to_string(), |p| p.to_string());
    let max = s.max_us.map_or_else(|| "-".to_string(), |v| v.to_string());
    let mut text = format!("epoch {} {}: {} samples, p99 {pct} us, max {max} us", e.info.index, mode_label(e), s.count);
    if s.overflow > 0 {
        text.push_str(&format!(", {} beyond {} us", s.overflow, h.bucket_count()));
    }
    text
}

fn panel(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    caption: &str,
    series: &[Series],
) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    // x: up to just past the highest non-empty bucket of any series.
    let last = series.iter().filter_map(|(_, h)| h.non_empty().last().map(|(us, _)| us)).max().unwrap_or(0);
    let width = bin_width(last + 1);
    let end_us = (last + 1).next_multiple_of(width);
    let binned: Vec<Vec<(u64, u64)>> = series.iter().map(|(_, h)| bins(h, width, end_us)).collect();
    let x_max = (end_us as f64 * 1.05).max(10.0);
    let y_max = binned.iter().flatten().map(|(_, c)| *c).max().unwrap_or(1).max(1) as f64 * 2.0;
    let y_desc = match width {
        1 => "samples per 1 µs bucket (log scale)".to_string(),
        w => format!("samples per {w} µs bin (log scale)"),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, (ZERO_LEVEL..y_max).log_scale())
        .map_err(|e| err(&e))?;
    let y_fmt = |v: &f64| if *v < 1.0 { "0".to_string() } else { format!("{v:.0}") };
    let x_fmt = |v: &f64| format!("{v:.0}");
    chart
        .configure_mesh()
        .x_desc("latency (µs)")
        .y_desc(y_desc)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .draw()
        .map_err(|e| err(&e))?;
    for (i, ((label, _), bins)) in series.iter().zip(&binned).enumerate() {
        let color = Palette99::pick(i).to_rgba();
        // A step line: each bin [start, start + width) flat at its count.
        let points = bins.iter().flat_map(|&(start, c)| {
            let y = if c == 0 { ZERO_LEVEL } else { c as f64 };
            [(start as f64, y), ((start + width) as f64, y)]
        });
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::json::tests::{config, info, measurement};
    use super::*;

    #[test]
    fn plot_is_a_non_empty_svg_with_a_series_per_epoch() {
        let config = config(&["--hist-max-us", "100", "--plot", "x.svg"]);
        let svg = render(&measurement(), &info(&config)).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("epoch 0 mainline: 4 samples"));
        assert!(svg.contains("epoch 1 rt: 3 samples"));
        assert!(svg.contains("1 beyond 100 us"));
        assert!(svg.contains("latency (µs)"));
        assert!(svg.contains("2 vCPUs, boot mode mainline"));
        assert!(svg.matches("<polyline").count() >= 4, "a line per epoch in each panel");
    }

    #[test]
    fn wide_ranges_are_binned_in_round_widths() {
        assert_eq!(bin_width(1), 1);
        assert_eq!(bin_width(250), 1);
        assert_eq!(bin_width(251), 2);
        assert_eq!(bin_width(1000), 5);
        assert_eq!(bin_width(2500), 10);
        assert_eq!(bin_width(10_000), 50);
        assert_eq!(bin_width(100_000), 500);
        let mut h = Histogram::new(100);
        for us in [0, 1, 2, 7, 99] {
            h.record_ns(us * 1000);
        }
        assert_eq!(bins(&h, 5, 100).len(), 20);
        assert_eq!(bins(&h, 5, 100)[..2], [(0, 3), (5, 1)]);
        assert_eq!(bins(&h, 5, 100)[19], (95, 1));
    }

    #[test]
    fn empty_measurement_still_draws() {
        let config = config(&[]);
        let m = Measurement { cpu_count: 1, bucket_count: 100, workload: None, epochs: vec![] };
        assert!(render(&m, &info(&config)).unwrap().contains("</svg>"));
    }
}
