//! SVG plots, drawn with plotters' SVG backend: the run's `--plot` file
//! ([`run`]) and the latency-histogram panel ([`histpanel`]) that it and
//! the benchmark suite's plots draw with.
//!
//! Above the core: the report (`rtswitch::report`) never imports this; the
//! command line's dispatch (`crate::app`) hands [`run::render`] to the run
//! as its [`Plotter`](rtswitch::report::Plotter).

pub mod histpanel;
pub mod run;
