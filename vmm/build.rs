//! Builds the guest kernel (`../guest`, target `x86_64-unknown-none`) with
//! the same cargo that builds the VMM, into its own target directory, and
//! hands its path to the VMM as `RTSWITCH_GUEST_ELF` so that `main.rs` can
//! embed it as the default kernel.

use std::path::PathBuf;
use std::process::Command;

const GUEST_TARGET: &str = "x86_64-unknown-none";

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("vmm/ has a parent").to_path_buf();
    let guest_dir = root.join("guest");
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target_dir = out_dir.join("guest-target");

    for watched in [
        "guest/src",
        "guest/Cargo.toml",
        "guest/Cargo.lock",
        "guest/linker.ld",
        "guest/build.rs",
        "switcher/src",
        "switcher/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }

    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The linker script comes from guest/build.rs.
    let rustflags = ["-Crelocation-model=static", "-Cforce-frame-pointers=yes"].join("\x1f");

    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guest_dir)
        .args(["build", "--release", "--target", GUEST_TARGET, "--manifest-path"])
        .arg(guest_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    // The outer cargo's settings are for the host build, not the guest's:
    // clippy's wrapper, host rustflags, the outer target dir and profile.
    for var in [
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_MAKEFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_PKG_NAME",
        "CARGO_ENCODED_RUSTFLAGS_HOST",
        "RUSTC",
        "TARGET",
        "HOST",
        "PROFILE",
        "OPT_LEVEL",
        "DEBUG",
        "OUT_DIR",
    ] {
        cmd.env_remove(var);
    }
    for (key, _) in std::env::vars_os() {
        if let Some(k) = key.to_str()
            && (k.starts_with("CARGO_CFG_") || k.starts_with("CARGO_FEATURE_") || k.starts_with("DEP_"))
        {
            cmd.env_remove(k);
        }
    }

    let status = cmd.status().unwrap_or_else(|e| panic!("could not run cargo to build the guest kernel: {e}"));
    if !status.success() {
        panic!(
            "building the guest kernel failed ({status}); the compiler's messages are above. \
             The target comes from rust-toolchain.toml: `rustup target add {GUEST_TARGET}` if rustup did not install it."
        );
    }
    let elf = target_dir.join(GUEST_TARGET).join("release").join("rtswitch-guest");
    if !elf.is_file() {
        panic!("the guest build succeeded but {} is missing", elf.display());
    }
    println!("cargo:rustc-env=RTSWITCH_GUEST_ELF={}", elf.display());
}
