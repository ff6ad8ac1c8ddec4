//! The guest kernel's pure logic (`guest/src/logic/`), compiled for the host
//! so that its unit tests run under a plain `cargo test`. The files are
//! `core`-only and use no `crate::` paths, so they compile unchanged here and
//! in the guest. (A `#[path]` to a `mod.rs` resolves that file's own `mod`
//! declarations in its directory, `guest/src/logic/`.)

#[path = "../../guest/src/logic/mod.rs"]
pub mod logic;
