//! Links the guest kernel with `linker.ld` (load address, sections the VMM
//! reads) and relinks it whenever the script changes, which cargo would
//! not notice on its own.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=linker.ld");
    println!("cargo:rustc-link-arg-bins=-T{dir}/linker.ld");
    println!("cargo:rustc-link-arg-bins=--no-pie");
}
