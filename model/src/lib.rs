//! rtswitch's model checks: the guest kernel's protocol cores
//! (`guest/src/logic/`), compiled for the host, with their unit tests, and
//! run by [`explore`] under every schedule of small configurations on a
//! model kernel ([`kernel`]) whose atomics are scheduling points.

pub mod atomics;
pub mod explore;
pub mod kernel;
pub mod softmask;

/// The guest kernel's pure logic and protocol cores (`guest/src/logic/`),
/// compiled unchanged: the files are `core`-only and use no `crate::`
/// paths. (A `#[path]` to a `mod.rs` resolves that file's own `mod`
/// declarations in its directory.)
#[path = "../../guest/src/logic/mod.rs"]
pub mod logic;
