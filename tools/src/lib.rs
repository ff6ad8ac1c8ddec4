//! The `rtswitch` executable's crate: the command line as a whole and its
//! dispatch (`app`), and the tools that sit above the VMM library and run
//! VMs through it (`bench`, `stress`, `locktest`) or draw what they measured (`plot`).
//! The VMM library (`rtswitch`) never reaches any of this: the compiler
//! holds that boundary. Inside this crate, `plot` imports neither the
//! tools nor `app`, and the tools do not import `app` (`layering`).

pub mod app;
pub mod bench;
pub mod locktest;
pub mod plot;
pub mod stress;

#[cfg(test)]
mod layering;
