//! Bad input from the command line and bad kernel files: a clear error that
//! names what was wrong, the documented exit code, never a VMM panic.

use std::time::Duration;

use rtswitch_tests::{ExitCode, RunResult, Scratch, require_kvm, run_rtswitch};

const LIMIT: Duration = Duration::from_secs(30);

fn assert_no_vmm_panic(r: &RunResult) {
    r.assert_not_contains("panicked at").assert_not_contains("RUST_BACKTRACE");
}

#[test]
fn bad_cli_arguments_are_refused() {
    for (args, needle) in [
        (&["run", "--vcpus", "0"][..], "--vcpus"),
        (&["run", "--vcpus", "1000"], "--vcpus"),
        (&["run", "--memory", "0"], "--memory"),
        (&["run", "--memory", "100000"], "--memory"),
        (&["run", "--duration=-1"], "--duration"),
        (&["run", "--duration", "soon"], "unknown unit 'soon'"),
        (&["run", "--serial", "tty0"], "stdout, none or file:PATH"),
        (&["run", "--guest-arg", "two words"], "one non-empty word"),
        (&["run", "--no-such-flag"], "--no-such-flag"),
        (&["frobnicate"], "frobnicate"),
    ] {
        let r = run_rtswitch(args, LIMIT);
        r.assert_code(ExitCode::BadArguments).assert_contains(needle);
        assert_no_vmm_panic(&r);
    }
}

#[test]
fn help_is_not_an_error() {
    let r = run_rtswitch(&["run", "--help"], LIMIT);
    r.assert_code(ExitCode::Ok).assert_contains("--vcpus").assert_contains("--kernel");
}

fn run_kernel(path: &std::path::Path, extra: &[&str]) -> RunResult {
    let p = path.to_str().expect("utf-8 temp path");
    let mut args = vec!["run", "--kernel", p, "--duration", "0.3"];
    args.extend_from_slice(extra);
    run_rtswitch(&args, LIMIT)
}

#[test]
fn non_elf_kernel_is_refused() {
    require_kvm();
    let dir = Scratch::new("non-elf");
    let k = dir.file("kernel.txt", b"this is not a kernel\n");
    let r = run_kernel(&k, &[]);
    r.assert_code(ExitCode::InvalidKernel).assert_contains("not an ELF file");
    assert_no_vmm_panic(&r);
}

#[test]
fn missing_kernel_file_is_refused() {
    require_kvm();
    let r = run_rtswitch(&["run", "--kernel", "/nonexistent/rtswitch-kernel"], LIMIT);
    r.assert_code(ExitCode::InvalidKernel).assert_contains("cannot read kernel file /nonexistent/rtswitch-kernel");
}

#[test]
fn thirty_two_bit_elf_is_refused() {
    require_kvm();
    let dir = Scratch::new("elf32");
    let mut image = rtswitch::DEFAULT_KERNEL.to_vec();
    image[4] = 1; // EI_CLASS = ELFCLASS32
    let k = dir.file("kernel32.elf", &image);
    let r = run_kernel(&k, &[]);
    r.assert_code(ExitCode::InvalidKernel).assert_contains("32-bit ELF");
    assert_no_vmm_panic(&r);
}

/// A minimal x86-64 ELF executable with one PT_LOAD segment at `paddr`.
fn tiny_elf(paddr: u64, memsz: u64) -> Vec<u8> {
    let mut e = vec![0u8; 64 + 56 + 16];
    e[..4].copy_from_slice(b"\x7fELF");
    e[4] = 2; // ELFCLASS64
    e[5] = 1; // little-endian
    e[6] = 1; // EV_CURRENT
    e[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    e[20..24].copy_from_slice(&1u32.to_le_bytes());
    e[24..32].copy_from_slice(&paddr.to_le_bytes()); // entry
    e[32..40].copy_from_slice(&64u64.to_le_bytes()); // phoff
    e[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    e[54..56].copy_from_slice(&56u16.to_le_bytes()); // phentsize
    e[56..58].copy_from_slice(&1u16.to_le_bytes()); // phnum
    let ph = 64;
    e[ph..ph + 4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes()); // R X
    e[ph + 8..ph + 16].copy_from_slice(&120u64.to_le_bytes()); // offset
    e[ph + 16..ph + 24].copy_from_slice(&paddr.to_le_bytes()); // vaddr
    e[ph + 24..ph + 32].copy_from_slice(&paddr.to_le_bytes()); // paddr
    e[ph + 32..ph + 40].copy_from_slice(&16u64.to_le_bytes()); // filesz
    e[ph + 40..ph + 48].copy_from_slice(&memsz.to_le_bytes()); // memsz
    e[120..122].copy_from_slice(&[0xeb, 0xfe]); // jmp .
    e
}

#[test]
fn elf_that_does_not_fit_memory_is_refused() {
    require_kvm();
    let dir = Scratch::new("too-big");
    let k = dir.file("high.elf", &tiny_elf(0x4000_0000, 0x1000));
    let r = run_kernel(&k, &["--memory", "128"]);
    r.assert_code(ExitCode::InvalidKernel).assert_contains("does not fit guest memory");
    assert_no_vmm_panic(&r);
    // A segment whose BSS reaches past the end of memory.
    let low = dir.file("low.elf", &tiny_elf(0x10_0000, 64 << 20));
    let r = run_kernel(&low, &["--memory", "16"]);
    r.assert_code(ExitCode::InvalidKernel).assert_contains("does not fit guest memory");
}

#[test]
fn elf_without_the_abi_note_is_refused() {
    require_kvm();
    let dir = Scratch::new("no-note");
    let k = dir.file("plain.elf", &tiny_elf(0x10_0000, 0x1000));
    let r = run_kernel(&k, &[]);
    r.assert_code(ExitCode::InvalidKernel).assert_contains("lacks the rtswitch ABI note");
    assert_no_vmm_panic(&r);
}

#[test]
fn truncated_elf_is_refused() {
    require_kvm();
    let dir = Scratch::new("truncated");
    let image = &rtswitch::DEFAULT_KERNEL[..200];
    let k = dir.file("cut.elf", image);
    let r = run_kernel(&k, &[]);
    r.assert_code(ExitCode::InvalidKernel).assert_contains("kernel");
    assert_no_vmm_panic(&r);
}
