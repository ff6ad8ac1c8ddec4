//! The cargo-fuzz targets (`vmm/fuzz`, a crate outside the workspace that
//! `cargo +nightly fuzz` builds) must keep compiling as the VMM changes:
//! this test type-checks them with the toolchain running the tests
//! (`cargo check`: libfuzzer-sys builds on stable; only running them
//! needs nightly and its sanitizers), in their own target directory. No
//! libFuzzer is compiled or linked for a check (`CUSTOM_LIBFUZZER_PATH`).
//!
//! Time: about a minute on this project's host the first time (the VMM's
//! dependencies in check mode), seconds after; bounded at ten minutes.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rtswitch::child::Launched;

#[test]
fn the_cargo_fuzz_targets_compile() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let done = Launched::spawn(
        Command::new(cargo)
            .args(["check", "--bins", "--manifest-path"])
            .arg(root.join("vmm/fuzz/Cargo.toml"))
            .arg("--target-dir")
            .arg(root.join("target/fuzz-check"))
            .env("CUSTOM_LIBFUZZER_PATH", "/nonexistent/libfuzzer.a")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    )
    .expect("run cargo")
    .finish(Duration::from_secs(600));
    assert_eq!(done.code(), Some(0), "the fuzz targets do not compile:\n{}\n{}", done.stdout, done.stderr);
}
