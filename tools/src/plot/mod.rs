//! SVG plots, drawn with plotters' SVG backend: the run's `--plot` file
//! ([`run`]) and the latency-histogram panel ([`histpanel`]) that it and
//! the benchmark suite's plots draw with.
//!
//! Above the core: the report (`rtswitch::report`) never imports this; the
//! command line's dispatch (`crate::app`) hands [`run::render`] to the run
//! as its [`Plotter`](rtswitch::report::Plotter).

pub mod histpanel;
pub mod run;

use plotters::style::RGBColor;

/// The Okabe-Ito colours (distinguishable with colour blindness), the one
/// palette of every plot: the run's modes (mainline, rt, then the other
/// profiles in turn) and the benchmark's series.
pub const OKABE_ITO: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];
