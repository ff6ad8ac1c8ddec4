//! x86-64 specifics behind a small interface.
pub mod port;
