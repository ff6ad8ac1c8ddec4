//! `--plot FILE.svg`: thread latency (top) and IRQ latency (bottom)
//! histograms, all CPUs merged, counts on a log scale, x in µs. One series
//! per mode, merged over that mode's `Mode` epochs (legend: mode, epochs,
//! samples, p99, max), and one for all switching epochs merged when they
//! hold samples; with `--plot-per-epoch`, one series per listed epoch
//! instead (legend: epoch, mode, samples, p99, max).
//!
//! Drawn with plotters' SVG backend only: text is emitted as SVG `<text>`
//! (no font rendering, no system fonts needed). The 1 µs buckets are
//! drawn as they are while the x range is at most
//! [`MAX_BINS`](super::histpanel::MAX_BINS) µs wide;
//! wider ranges are drawn in bins of a round width (2, 5, 10, 20, 50 ...
//! µs, named on the y axis) so that a sparse tail stays readable. A bin
//! with no sample is drawn at the bottom of the log axis. Overflowed
//! samples (beyond the histogram range) cannot be placed on the x axis;
//! the legend counts them. Each panel is drawn by `histpanel`, as the
//! benchmark suite's latency panels are.

use plotters::prelude::*;

use switcher::telemetry::EpochKind;

use super::histpanel::{self, Area, Line, Scale};
use crate::report::summary::mode_label;
use crate::report::{CpuRow, GroupRows, Measurement, ReportError, RunInfo};
use crate::stats::Histogram;

const SIZE: (u32, u32) = (1100, 900);

/// `(bin start µs, samples)` for every bin up to `end_us`.
fn bins(h: &Histogram, width: u64, end_us: u64) -> Vec<(u64, u64)> {
    let end = (end_us as usize).min(h.bucket_count());
    h.buckets()[..end].chunks(width as usize).enumerate().map(|(i, c)| (i as u64 * width, c.iter().sum())).collect()
}

/// The SVG text.
pub fn render(m: &Measurement, info: &RunInfo) -> Result<String, ReportError> {
    let path = info.settings.outputs.plot.as_ref().map_or_else(String::new, |p| p.display().to_string());
    let mut svg = String::new();
    draw(m, info, &mut svg).map_err(|why| ReportError::Plot { path, why })?;
    Ok(svg)
}

fn draw(m: &Measurement, info: &RunInfo, svg: &mut String) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let title = format!("rtswitch latency: {}", info.describe(m));
    let root = root.titled(&title, ("sans-serif", 22)).map_err(|e| err(&e))?;
    let panels = root.split_evenly((2, 1));
    let (thread, irq): (Vec<Series>, Vec<Series>) = if info.settings.outputs.plot_per_epoch {
        m.epochs
            .iter()
            .map(|e| {
                let name = format!("epoch {} {}", e.info.index, mode_label(e));
                (
                    (legend(&name, &e.all.figures.thread), &e.all.figures.thread),
                    (legend(&name, &e.all.figures.irq), &e.all.figures.irq),
                )
            })
            .unzip()
    } else {
        per_mode(m)
            .iter()
            .map(|(name, row)| {
                (
                    (legend(name, &row.figures.thread), &row.figures.thread),
                    (legend(name, &row.figures.irq), &row.figures.irq),
                )
            })
            .unzip()
    };
    panel(&panels[0], "thread latency (timer deadline to measurement thread running), all CPUs", &thread)?;
    panel(&panels[1], "IRQ latency (timer deadline to interrupt handler entry), all CPUs", &irq)?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A series' histogram and its legend text.
type Series<'a> = (String, &'a Histogram);

/// The default series: each mode over its mode epochs, then every
/// switching epoch merged (when any holds a sample).
fn per_mode(m: &Measurement) -> Vec<(String, &CpuRow)> {
    let mut series: Vec<(String, &CpuRow)> = m
        .groups
        .iter()
        .filter(|g| g.kind == EpochKind::Mode)
        .map(|g| (format!("{} ({})", g.mode.name(), epochs(g.epochs)), &g.all))
        .collect();
    let switching: Vec<&GroupRows> = m.groups.iter().filter(|g| g.kind == EpochKind::Switching).collect();
    for g in switching.iter().filter(|g| g.all.figures.samples > 0 || g.all.figures.thread.count() > 0) {
        series.push((format!("switching from {} ({})", g.mode.name(), epochs(g.epochs)), &g.all));
    }
    series
}

fn epochs(n: u64) -> String {
    format!("{n} epoch{}", if n == 1 { "" } else { "s" })
}

fn legend(name: &str, h: &Histogram) -> String {
    let s = h.stats();
    let pct = s.p99.map_or_else(|| "-".to_string(), |p| p.to_string());
    let max = s.max_us.map_or_else(|| "-".to_string(), |v| v.to_string());
    let mut text = format!("{name}: {} samples, p99 {pct} us, max {max} us", s.count);
    if s.overflow > 0 {
        text.push_str(&format!(", {} beyond {} us", s.overflow, h.bucket_count()));
    }
    text
}

/// One panel, its x axis up to just past the highest non-empty bucket of
/// any series, a line per series in the colours of [`Palette99`].
fn panel(area: &Area<'_>, caption: &str, series: &[Series]) -> Result<(), String> {
    let last = series.iter().filter_map(|(_, h)| h.non_empty().last().map(|(us, _)| us)).max().unwrap_or(0);
    let scale = Scale::up_to(last);
    let lines: Vec<Line> = series
        .iter()
        .enumerate()
        .map(|(i, (label, h))| Line {
            label: label.clone(),
            color: Palette99::pick(i).to_rgba(),
            bins: bins(h, scale.width, scale.end_us),
        })
        .collect();
    let scale = scale.fit(lines.iter().flat_map(|l| &l.bins).map(|&(_, n)| n));
    histpanel::draw(area, caption, 16, scale, &lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::RunSettings;
    use crate::report::json::tests::{info, measurement, settings};
    use crate::report::outputs::OutputFiles;

    #[test]
    fn plot_is_a_non_empty_svg_with_a_series_per_mode() {
        let outputs = OutputFiles { plot: Some("x.svg".into()), ..Default::default() };
        let svg = render(&measurement(), &info(RunSettings { outputs, ..settings() })).unwrap();
        assert!(svg.contains("mainline (1 epoch): 4 samples"), "{svg}");
        assert!(svg.contains("rt (1 epoch): 3 samples"));
        assert!(!svg.contains("epoch 0 "));
        assert!(svg.matches("<polyline").count() >= 4, "a line per mode in each panel");
    }

    #[test]
    fn plot_per_epoch_draws_a_series_per_epoch() {
        let outputs = OutputFiles { plot: Some("x.svg".into()), plot_per_epoch: true, ..Default::default() };
        let svg = render(&measurement(), &info(RunSettings { outputs, ..settings() })).unwrap();
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
    fn wide_ranges_are_summed_into_their_bins() {
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
        let m = Measurement {
            cpu_count: 1,
            bucket_count: 100,
            bucket_us: 1,
            workload: None,
            epochs: vec![],
            groups: vec![],
            forgotten: 0,
        };
        assert!(render(&m, &info(settings())).unwrap().contains("</svg>"));
    }
}
