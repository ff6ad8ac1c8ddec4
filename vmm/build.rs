//! Builds the guest kernel (`../guest`, target `x86_64-unknown-none`) with
//! the same cargo that builds the VMM, into its own target directory, and
//! hands its path to the VMM as `RTSWITCH_GUEST_ELF` so that `main.rs` can
//! embed it as the default kernel.
//!
//! The guest target is installed here if the toolchain lacks it (`rustup
//! target add`, said on stderr): rustup does not install a
//! `rust-toolchain.toml` target by itself where `RUSTUP_AUTO_INSTALL=0`,
//! and the README's commands must work on a fresh machine with rustup.

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

    ensure_guest_target();
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

/// Installs the guest target for the toolchain in use if it is missing.
fn ensure_guest_target() {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(root) = &sysroot
        && root.join("lib").join("rustlib").join(GUEST_TARGET).is_dir()
    {
        return;
    }
    let toolchain = std::env::var("RUSTUP_TOOLCHAIN").ok();
    eprintln!(
        "rtswitch build: the {GUEST_TARGET} target is not installed for this toolchain; installing it with rustup{}",
        toolchain.as_deref().map(|t| format!(" (toolchain {t})")).unwrap_or_default()
    );
    println!("cargo:warning=installing the {GUEST_TARGET} target with rustup (needed to build the guest kernel)");
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", GUEST_TARGET]);
    if let Some(t) = &toolchain {
        cmd.args(["--toolchain", t]);
    }
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!(
            "`rustup target add {GUEST_TARGET}` failed ({s}); install the target by hand \
             (rustup target add {GUEST_TARGET}) and build again"
        ),
        Err(e) => panic!(
            "the guest kernel needs the {GUEST_TARGET} target, which this toolchain lacks, and rustup could not \
             be run to install it ({e}): install rustup (https://rustup.rs) or add the target to your toolchain"
        ),
    }
}
