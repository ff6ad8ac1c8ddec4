//! Fuzzes the guest ELF loader's parse (`loader::parse`): any bytes given
//! as `--kernel` must be refused with an error or accepted with an entry
//! inside guest memory, never a panic.
//!
//! Run (nightly, not in CI): `cd vmm && cargo +nightly fuzz run elf_loader`.
//! The stable test suite compile-checks it (tests/tests/fuzz_targets.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;

const MEMORY: u64 = 128 << 20;

fuzz_target!(|data: &[u8]| {
    if let Ok(kernel) = rtswitch::loader::parse(data, MEMORY) {
        assert!(kernel.info.entry < MEMORY && kernel.info.end <= MEMORY, "{:?}", kernel.info);
    }
});
