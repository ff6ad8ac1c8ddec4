//! `--plot FILE.svg`: thread latency (top) and IRQ latency (bottom)
//! histograms, all CPUs merged, counts on a log scale, x in µs. One series
//! per mode, merged over that mode's `Mode` epochs (legend: mode, epochs,
//! samples, p99, max), and one for all switching epochs merged when they
//! hold samples; with `--plot-per-epoch`, one series per listed epoch
//! instead (legend: epoch, mode, samples, p99, max). Colours are by mode
//! in both ([`mode_color`]: mainline blue, rt orange, other profiles their
//! own; a switching epoch a paler shade of the mode it switched from), so
//! that a mode's epochs read as one family.
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

use switcher::profile::Profile;
use switcher::telemetry::EpochKind;

use super::histpanel::{self, Area, Line, Scale};
use rtswitch::report::summary::mode_label;
use rtswitch::report::{CpuRow, GroupRows, Measurement, ReportError, RunInfo};
use rtswitch::stats::Histogram;

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
                let c = mode_color(e.info.mode, e.info.kind == EpochKind::Switching);
                (
                    (legend(&name, &e.all.figures.thread), &e.all.figures.thread, c),
                    (legend(&name, &e.all.figures.irq), &e.all.figures.irq, c),
                )
            })
            .unzip()
    } else {
        per_mode(m)
            .iter()
            .map(|(name, row, c)| {
                (
                    (legend(name, &row.figures.thread), &row.figures.thread, *c),
                    (legend(name, &row.figures.irq), &row.figures.irq, *c),
                )
            })
            .unzip()
    };
    panel(&panels[0], "thread latency (timer deadline to measurement thread running), all CPUs", &thread)?;
    panel(&panels[1], "IRQ latency (deadline to the handler entry of its own timer interrupt), all CPUs", &irq)?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

/// A series' legend text, histogram and colour.
type Series<'a> = (String, &'a Histogram, RGBAColor);

/// Mainline, rt, then the other profiles in turn.
const MODE_COLORS: [RGBColor; 7] = super::OKABE_ITO;

/// A mode's colour, the same for all its epochs; a switching epoch (from
/// that mode) in a paler shade.
pub fn mode_color(mode: Profile, switching: bool) -> RGBAColor {
    let i = if mode == Profile::MAINLINE {
        0
    } else if mode == Profile::RT {
        1
    } else {
        // The ten other profiles share the remaining colours.
        2 + Profile::all().position(|p| p == mode).unwrap_or(0) % (MODE_COLORS.len() - 2)
    };
    let c = MODE_COLORS[i];
    if switching { c.mix(0.45) } else { c.to_rgba() }
}

/// The default series: each mode over its mode epochs, then every
/// switching epoch merged (when any holds a sample).
fn per_mode(m: &Measurement) -> Vec<(String, &CpuRow, RGBAColor)> {
    let mut series: Vec<(String, &CpuRow, RGBAColor)> = m
        .groups
        .iter()
        .filter(|g| g.kind == EpochKind::Mode)
        .map(|g| (format!("{} ({})", g.mode.name(), epochs(g.epochs)), &g.all, mode_color(g.mode, false)))
        .collect();
    let switching: Vec<&GroupRows> = m.groups.iter().filter(|g| g.kind == EpochKind::Switching).collect();
    for g in switching.iter().filter(|g| g.all.figures.samples > 0 || g.all.figures.thread.count() > 0) {
        let name = format!("switching from {} ({})", g.mode.name(), epochs(g.epochs));
        series.push((name, &g.all, mode_color(g.mode, true)));
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

/// Where a series' x axis may end: its p99.9 bucket (µs), or its last
/// non-empty bucket when the p99.9 is in the overflow.
fn axis_end(h: &Histogram) -> Option<u64> {
    let last = h.non_empty().last().map(|(us, _)| us);
    match h.stats().p99_9 {
        Some(rtswitch::stats::Percentile::Us(us)) => Some(us),
        _ => last,
    }
}

/// One panel, its x axis up to the largest p99.9 of its series (a few
/// host stalls would otherwise squeeze the body into the leftmost bins;
/// the legend counts what lies past it), a line per series in its mode's
/// colour.
fn panel(area: &Area<'_>, caption: &str, series: &[Series]) -> Result<(), String> {
    let last = series.iter().filter_map(|(_, h, _)| axis_end(h)).max().unwrap_or(0);
    let scale = Scale::up_to(last);
    let lines: Vec<Line> = series
        .iter()
        .map(|(label, h, color)| {
            let past: u64 = h.non_empty().filter(|&(us, _)| us >= scale.end_us).map(|(_, n)| n).sum();
            let mut label = label.clone();
            if past > 0 {
                label.push_str(&format!("; {past} above {} us (past the p99.9 axis)", scale.end_us));
            }
            Line { label, color: *color, bins: bins(h, scale.width, scale.end_us) }
        })
        .collect();
    let scale = scale.fit(lines.iter().flat_map(|l| &l.bins).map(|&(_, n)| n));
    histpanel::draw(area, caption, 16, scale, &lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtswitch::report::RunSettings;
    use rtswitch::report::json::tests::{info, measurement, settings};
    use rtswitch::report::outputs::OutputFiles;

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
    fn colours_are_by_mode_the_same_for_every_epoch_of_a_mode() {
        let (ml, rt) = (mode_color(Profile::MAINLINE, false), mode_color(Profile::RT, false));
        assert_ne!(ml, rt);
        let other = Profile::parse("preempt=full").map_err(|e| e.0).unwrap();
        assert!(![ml, rt].contains(&mode_color(other, false)));
        let sw = mode_color(Profile::RT, true);
        assert_eq!((sw.0, sw.1, sw.2), (rt.0, rt.1, rt.2), "a switching epoch: its mode's hue, paler");
        assert!(sw.3 < rt.3);
        // In the per-epoch plot, both of a mode's epochs are drawn in its colour.
        let outputs = OutputFiles { plot: Some("x.svg".into()), plot_per_epoch: true, ..Default::default() };
        let svg = render(&measurement(), &info(RunSettings { outputs, ..settings() })).unwrap();
        let blue = "#0072B2";
        assert!(svg.contains(blue) && svg.contains("#D55E00"), "mainline blue, rt orange");
    }

    #[test]
    fn the_x_axis_ends_at_the_p99_9_not_at_a_few_stalls() {
        let mut h = Histogram::new(100_000);
        for i in 0..10_000u64 {
            h.record_ns((100 + i % 100) * 1000);
        }
        for us in [38_000, 42_000] {
            h.record_ns(us * 1000);
        }
        assert_eq!(axis_end(&h), Some(199));
        let mut tail = Histogram::new(100);
        tail.record_ns(5_000);
        tail.record_ns(500_000);
        assert_eq!(axis_end(&tail), Some(5), "a p99.9 in the overflow: the last bucket");
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
