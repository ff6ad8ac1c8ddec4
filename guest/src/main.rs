//! rtswitch guest kernel: entry point and boot sequence.
#![no_std]
#![no_main]

mod arch;
mod console;
mod hypercall;
mod panic;

use switcher::abi::{self, BootInfo};

/// Boot stack size per CPU.
const BOOT_STACK_SIZE: usize = 32 * 1024;

#[repr(C, align(4096))]
struct BootStacks([[u8; BOOT_STACK_SIZE]; abi::MAX_CPUS]);

#[unsafe(no_mangle)]
static mut BOOT_STACKS: BootStacks = BootStacks([[0; BOOT_STACK_SIZE]; abi::MAX_CPUS]);

/// The ABI note the VMM checks before loading this kernel.
#[unsafe(link_section = ".note.rtswitch")]
#[used]
static ABI_NOTE: [u8; 12 + 12 + 16] = {
    let mut n = [0u8; 40];
    let namesz = (abi::NOTE_NAME.len() as u32).to_le_bytes();
    let descsz = 16u32.to_le_bytes();
    let ty = abi::NOTE_TYPE_ABI.to_le_bytes();
    let mut i = 0;
    while i < 4 {
        n[i] = namesz[i];
        n[4 + i] = descsz[i];
        n[8 + i] = ty[i];
        i += 1;
    }
    // name, padded to 4 bytes (9 -> 12)
    let mut j = 0;
    while j < abi::NOTE_NAME.len() {
        n[12 + j] = abi::NOTE_NAME[j];
        j += 1;
    }
    let magic = abi::ABI_MAGIC.to_le_bytes();
    let version = abi::ABI_VERSION.to_le_bytes();
    let mut k = 0;
    while k < 8 {
        n[24 + k] = magic[k];
        k += 1;
    }
    let mut k = 0;
    while k < 4 {
        n[32 + k] = version[k];
        k += 1;
    }
    n
};

// Entry: rdi = boot info, rsi = CPU index, rsp = 0. Pick this CPU's boot
// stack (top of BOOT_STACKS[cpu]) and call into Rust.
core::arch::global_asm!(
    ".section .text.boot, \"ax\"",
    ".global _start",
    "_start:",
    "cli",
    "cmp rsi, {max_cpus}",
    "jae 3f",
    "lea rsp, [rip + BOOT_STACKS]",
    "mov rax, rsi",
    "inc rax",
    "imul rax, rax, {stack_size}",
    "add rsp, rax",
    "xor ebp, ebp",
    "call {main}",
    "3:",
    "hlt",
    "jmp 3b",
    max_cpus = const abi::MAX_CPUS,
    stack_size = const BOOT_STACK_SIZE,
    main = sym kernel_main,
);

extern "C" fn kernel_main(boot_info: *const BootInfo, cpu: u64) -> ! {
    // SAFETY: the VMM wrote a BootInfo at this address before starting us;
    // it is only read here.
    let bi = unsafe { &*boot_info };
    if !bi.is_valid() {
        hypercall::exit(0xbad);
    }
    if cpu == 0 {
        console::init();
        println!(
            "rtswitch guest kernel v{}: {} CPUs, {} MiB, TSC {} kHz",
            env!("CARGO_PKG_VERSION"),
            bi.cpu_count,
            bi.memory_bytes >> 20,
            bi.tsc_khz
        );
    }
    println!("cpu {cpu} online");
    hypercall::cpu_online(cpu as u32);
    if cpu == 0 {
        hypercall::ready();
    }
    loop {
        // SAFETY: halting with interrupts off parks this CPU (skeleton).
        unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
    }
}
