//! One latency-histogram panel, as `--plot` ([`super::run`]) and the
//! benchmark suite's latency plot draw it: x in µs
//! from 0, counts on a log axis, one step line per series (each bin flat
//! at its count across its width) with a legend entry. A bin with no
//! sample is drawn at [`ZERO_LEVEL`], the bottom of the log axis; a panel
//! with no line to draw says "no data".

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// A drawing area of plotters' SVG backend.
pub type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

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

/// Where an empty bin is drawn on the log count axis.
pub const ZERO_LEVEL: f64 = 0.5;

/// The axes of a panel; panels that are to compare share one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    /// Display bin width, µs.
    pub width: u64,
    /// The x axis ends here, µs: a multiple of `width` (unless that overflows).
    pub end_us: u64,
    /// Top of the count axis.
    pub y_max: f64,
}

impl Scale {
    /// The x axis for buckets up to the one starting at `last_us` (the
    /// highest non-empty one; 0 when there is none), in bins of
    /// [`bin_width`]; the count axis as for counts of at most 1 until
    /// [`Scale::fit`] raises it.
    pub fn up_to(last_us: u64) -> Self {
        let span = last_us.saturating_add(1);
        let width = bin_width(span);
        Self { width, end_us: span.checked_next_multiple_of(width).unwrap_or(span), y_max: 2.0 }
    }

    /// The same x axis; the count axis up to twice the largest of `counts`.
    pub fn fit(self, counts: impl IntoIterator<Item = u64>) -> Self {
        let top = counts.into_iter().max().unwrap_or(1).max(1);
        Self { y_max: top as f64 * 2.0, ..self }
    }
}

/// One series of a panel: a step line and its legend entry.
#[derive(Clone, Debug)]
pub struct Line {
    /// Legend text.
    pub label: String,
    /// Line and legend colour.
    pub color: RGBAColor,
    /// `(bin start µs, samples)` for every bin of the scale's width,
    /// ascending; empty: nothing is drawn (the legend entry stays).
    pub bins: Vec<(u64, u64)>,
}

/// "no data" in the middle of `area`.
/// The legend of `chart`'s labelled series at `pos`: a framed box on a
/// white, slightly transparent background (every plot of the project).
pub fn legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    pos: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(pos)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())
}

pub fn no_data(area: &Area<'_>) -> Result<(), String> {
    let (w, h) = area.dim_in_pixel();
    let style = TextStyle::from(("sans-serif", 24).into_font()).color(&BLACK).pos(Pos::new(HPos::Center, VPos::Center));
    area.draw(&Text::new("no data", (w as i32 / 2, h as i32 / 2), style)).map_err(|e| e.to_string())
}

/// Draws a panel captioned `caption` (font size `caption_px`) on `area`:
/// the axes of `scale` (x up to 5 % past its end, at least to 10 µs; the y
/// axis named after the bin width), a line per entry of `lines` and, when
/// there is one, a legend in the upper right corner.
///
/// # Errors
/// plotters' error, in words.
pub fn draw(area: &Area<'_>, caption: &str, caption_px: u32, scale: Scale, lines: &[Line]) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let Scale { width, end_us, y_max } = scale;
    let x_max = (end_us as f64 * 1.05).max(10.0);
    let y_desc = match width {
        1 => "samples per 1 µs bucket (log scale)".to_string(),
        w => format!("samples per {w} µs bin (log scale)"),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", caption_px))
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
    for line in lines {
        let style = line.color.stroke_width(2);
        // A step line: each bin [start, start + width) flat at its count.
        let points = line.bins.iter().flat_map(|&(start, n)| {
            let y = if n == 0 { ZERO_LEVEL } else { n as f64 };
            [(start as f64, y), (start.saturating_add(width) as f64, y)]
        });
        chart
            .draw_series(LineSeries::new(points, style))
            .map_err(|e| err(&e))?
            .label(line.label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
    }
    if lines.iter().all(|l| l.bins.is_empty()) {
        no_data(&chart.plotting_area().strip_coord_spec())?;
    }
    if !lines.is_empty() {
        legend(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wide_ranges_are_binned_in_round_widths() {
        assert_eq!(bin_width(1), 1);
        assert_eq!(bin_width(250), 1);
        assert_eq!(bin_width(251), 2);
        assert_eq!(bin_width(1000), 5);
        assert_eq!(bin_width(2500), 10);
        assert_eq!(bin_width(10_000), 50);
        assert_eq!(bin_width(100_000), 500);
    }

    #[test]
    fn scale_bins_the_x_axis_and_fits_the_counts() {
        assert_eq!(Scale::up_to(0), Scale { width: 1, end_us: 1, y_max: 2.0 });
        assert_eq!(Scale::up_to(700), Scale { width: 5, end_us: 705, y_max: 2.0 });
        assert_eq!(Scale::up_to(u64::MAX).end_us, u64::MAX, "no multiple of the width fits: the span");
        assert_eq!(Scale::up_to(9).fit([3, 40, 0]).y_max, 80.0);
        assert_eq!(Scale::up_to(9).fit([0]).y_max, 2.0);
        assert_eq!(Scale::up_to(9).fit([]).y_max, 2.0);
    }

    #[test]
    fn a_panel_with_no_line_says_no_data() {
        let draw_one = |lines: &[Line]| {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, (600, 400)).into_drawing_area();
                draw(&root, "caption", 16, Scale::up_to(0), lines).unwrap();
                root.present().unwrap();
            }
            svg
        };
        let empty = Line { label: "empty".to_string(), color: BLACK.to_rgba(), bins: vec![] };
        for lines in [vec![], vec![empty.clone()]] {
            assert!(draw_one(&lines).contains("no data"), "{lines:?}");
        }
        let zero = Line { bins: vec![(0, 0)], ..empty };
        let svg = draw_one(&[zero]);
        assert!(!svg.contains("no data") && svg.contains("<polyline"), "an empty bin is drawn at the bottom");
    }
}
