//! rtswitch guest kernel: entry point and boot sequence.
//!
//! Every vCPU starts at `_start` at the same time, in long mode at CPL0,
//! with interrupts off, `rdi` = boot info and `rsi` = CPU index (see
//! `switcher::abi`). Each picks its boot stack, runs the short CPL0
//! prologue (`arch::prologue`: GDT/TSS, GS base, early IDT gates) and
//! drops to CPL3, where the whole kernel runs from then on
//! (`kernel_main`): it brings up its CPU (`arch::init_cpu`: IDTs, LAPIC),
//! and then:
//!
//! - CPU 0 prints the banner, builds and loads the kernel's page tables
//!   (`mm::paging`; the load is a shim call), starts its scheduler (its
//!   boot context becomes its idle task), releases the others (`smp`),
//!   comes online, calibrates its speed (at CPL3, where the kernel runs)
//!   and the APIC timer, waits for every CPU, publishes the GuestStatus
//!   page, makes the ready hypercall (having resolved the workload and
//!   initialised the telemetry region: `workload::init`), starts the
//!   control thread (which acts on the VMM's shutdown request), acts on the
//!   guest arguments, starts the latency workload if enabled, and idles;
//! - CPUs n > 0 wait for release, load the page tables, start their
//!   scheduler, come online and idle.
//!
//! A CPU starts its scheduler before it reports online, so once CPU 0 sees
//! every CPU online it may spawn threads on any of them. Idle halts in the
//! ring-0 shim (`sched::idle_loop`), never a spin, unless the mode says
//! `idle=poll`.
#![no_std]
#![no_main]

// The layers, lowest first: a file imports only its own layer and those
// below it (docs/ARCHITECTURE.md, "Guest layering"; checked by
// model/tests/guest_layers.rs). This file is the top.
mod arch;
mod boot;
mod diag;
mod hv;
mod irq;
#[allow(dead_code)] // Shared with the host crate model/: some of its API only the host uses.
mod logic;
mod mm;
mod sched;
mod switch;
mod sync;
mod workload;

use arch::{cpu, idt};
use boot::cmdline::{Args, ReadyAction};
use boot::smp;
use core::sync::atomic::{AtomicBool, Ordering};
use diag::{costs, faults, selftest};
use hv::{boot_info, calibrate, console, hypercall, shutdown, status};
use logic::idle::IdlePolicy;
use switch::{control, modeswitch};
use switcher::abi::{self, BootInfo};

/// Boot stack size per CPU.
const BOOT_STACK_SIZE: usize = 32 * 1024;

/// An address outside the identity map (PML4 slot 255 is never mapped).
const UNMAPPED_ADDRESS: u64 = 0x7fff_0000_0000;

#[repr(C, align(4096))]
struct BootStacks([[u8; BOOT_STACK_SIZE]; abi::MAX_CPUS]);

/// Used only by `_start` (as stacks). In the linker script's stack range.
#[unsafe(no_mangle)]
#[unsafe(link_section = ".bss.stacks.boot")]
static mut BOOT_STACKS: BootStacks = BootStacks([[0; BOOT_STACK_SIZE]; abi::MAX_CPUS]);

// Entry: rdi = boot info, rsi = CPU index, rsp = 0. Pick this CPU's boot
// stack (top of BOOT_STACKS[cpu]) and call into Rust; a CPU index the
// stacks do not cover halts here.
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
    "call {prologue}",
    "3:",
    "cli",
    "hlt",
    "jmp 3b",
    max_cpus = const abi::MAX_CPUS,
    stack_size = const BOOT_STACK_SIZE,
    prologue = sym kernel_prologue,
);

/// CPL0: the prologue, then `kernel_main` at CPL3.
extern "C" fn kernel_prologue(boot_info: u64, cpu: u64) -> ! {
    arch::prologue(cpu as usize, boot_info, kernel_main, console::print_panic)
}

/// Whether PV EOI is on (CPU 0's bring-up; for the boot line).
static PV_EOI: AtomicBool = AtomicBool::new(false);

/// CPL3, every CPU, right after the prologue.
extern "C" fn kernel_main(boot_info: u64, cpu: u64) -> ! {
    let cpu = cpu as u32;
    arch::irqflags::set_hooks(irq::dispatch::handle, sched::irq_exit_work);
    let pv_eoi = arch::init_cpu(cpu as usize);
    if cpu == 0 {
        PV_EOI.store(pv_eoi, Ordering::Relaxed);
    }
    let boot_info = boot_info as *const BootInfo;
    if let Err(e) = boot_info::init(boot_info) {
        panic!("bad boot info at {boot_info:p}: {e}");
    }
    let cpu_count = boot_info::cpu_count();
    assert!(cpu < cpu_count, "started as cpu {cpu} of {cpu_count}");
    if cpu == 0 {
        boot_cpu(cpu_count)
    } else {
        smp::wait_for_release();
        mm::paging::load();
        sched::init_cpu(cpu);
        smp::online(cpu);
        sched::idle_loop()
    }
}

/// CPU 0's boot sequence, up to the ready hypercall and beyond.
fn boot_cpu(cpu_count: u32) -> ! {
    let mode = boot_info::initial_mode();
    let tsc_khz = boot_info::tsc_khz();
    println!(
        "rtswitch guest kernel v{}: {} CPUs, {} MiB, TSC {} kHz, mode {}",
        status::KERNEL_VERSION,
        cpu_count,
        boot_info::memory_bytes() >> 20,
        tsc_khz,
        mode.name()
    );
    let cmdline = boot_info::cmdline();
    let (args, flags, faults) = parse_args(&cmdline);
    // Before any switchable lock is taken (the secondaries are still held).
    sync::registry::get().init(mode);
    sync::lock_table::init();
    if flags.no_pi {
        selftest::disable_pi();
    }
    // The idle policy is the mode's `idle` dimension (switchable at run
    // time); this names the boot mode's.
    println!(
        "idle={}: {}",
        mode.idle.name(),
        match sched::idle_policy() {
            IdlePolicy::Halt if !boot_info::dedicated_cpus() && mode.idle == switcher::profile::IdleMode::Haltpoll => {
                "idle CPUs halt in the shim (the vCPUs outnumber the host's CPUs: no polling)"
            }
            IdlePolicy::Halt => "idle CPUs halt in the shim",
            IdlePolicy::HaltPoll => "idle CPUs poll adaptively and halt with the timer programmed early",
            IdlePolicy::Poll => "idle CPUs poll at CPL3 (each vCPU keeps a host core busy)",
        }
    );
    mm::paging::build(boot_info::memory_bytes(), &sched::stack_guard_pages());
    mm::paging::load();
    sched::init_cpu(0);
    smp::online(0);
    smp::release_secondaries();

    let timer = arch::apic::calibrate_timer();
    let calibration = calibrate::measure(tsc_khz);
    let (timer_measured_khz, timer_khz) = timer.finish(tsc_khz, boot_info::apic_timer_khz());
    println!(
        "apic: xAPIC through MMIO, one-shot timer at {} kHz (measured {} kHz{}), EOI {}",
        timer_khz,
        timer_measured_khz,
        if timer_khz == timer_measured_khz { "" } else { ", the VMM's nominal rate used" },
        if PV_EOI.load(Ordering::Relaxed) { "paravirtual (KVM PV EOI)" } else { "through MMIO" }
    );
    sync::rt::calibrate_spin(calibration.ps_per_iter);
    if arch::steal::enabled() {
        println!(
            "steal time: on (KVM marks a preempted vCPU; rtmutex spinners stop on an owner whose vCPU is not running)"
        );
    } else {
        println!("steal time: not offered by the hypervisor (rtmutex spinners cannot see a preempted vCPU)");
    }
    if flags.no_spin {
        println!("adaptive spinning DISABLED (guest argument no-spin): contended rtmutexes sleep at once");
        sync::rt::disable_spinning();
    }
    cpu::halt_until(|| smp::all_online(cpu_count) || shutdown::requested());
    if !smp::all_online(cpu_count) {
        // The VMM gave up on the boot (e.g. a signal) before every CPU came up.
        control::shutdown();
    }
    status::publish(smp::online_mask(), &calibration, mode);
    let ps = calibration.ps_per_iter;
    println!("calibration: {}.{} ns per iteration ({} iterations)", ps / 1000, ps % 1000 / 100, calibration.iterations);
    workload::init();
    // The switch mailbox is published before the VMM hears "ready": a
    // request that follows at once finds it, and waits for the control
    // thread (which sees it pending when it starts).
    modeswitch::init(mode);
    hypercall::ready();

    if flags.platform_costs {
        cpu::enable_interrupts();
        costs::run();
    }
    faults::arm(&faults);
    control::start();
    sched::watchdog::start(cpu_count);
    run_ready_action(args);
    faults::start(&faults);
    workload::start();
    sched::idle_loop()
}

/// Parses the guest arguments and reports the words it ignores.
/// Returns the action to take once ready, the kernel flags given, and
/// the fault injections asked for.
fn parse_args(cmdline: &[u8]) -> (ReadyAction, Flags, faults::Faults) {
    let end = cmdline.iter().position(|&b| b == 0).unwrap_or(cmdline.len());
    let Ok(text) = core::str::from_utf8(&cmdline[..end]) else {
        println!("ignoring guest arguments: not UTF-8");
        return (ReadyAction::Idle, Flags::default(), faults::Faults::default());
    };
    let args = Args::parse(text);
    let flags = Flags { no_pi: args.no_pi, no_spin: args.no_spin, platform_costs: args.platform_costs };
    let (action, faults) = (args.action, args.faults);
    for word in args.unknown() {
        println!("ignoring unknown guest argument '{word}'");
    }
    (action, flags, faults)
}

/// Guest arguments that modify the kernel rather than pick an action.
#[derive(Clone, Copy, Default)]
struct Flags {
    no_pi: bool,
    no_spin: bool,
    platform_costs: bool,
}

/// What the guest arguments ask for once the guest is ready.
fn run_ready_action(action: ReadyAction) {
    match action {
        ReadyAction::Idle => {}
        ReadyAction::Panic => panic!("panic requested by guest argument"),
        ReadyAction::PageFault => {
            println!("guest argument fault=pf: reading unmapped address {UNMAPPED_ADDRESS:#x}");
            // SAFETY: deliberately faults: the address is outside the
            // identity map, and the #PF handler reports and never returns.
            let _ = unsafe { core::ptr::read_volatile(UNMAPPED_ADDRESS as *const u64) };
        }
        ReadyAction::InvalidOpcode => {
            println!("guest argument fault=ud: executing ud2");
            // SAFETY: deliberately raises #UD, whose handler never returns.
            unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
        }
        ReadyAction::TripleFault => {
            println!("guest argument triple-fault: every IDT gate cleared, then ud2");
            idt::clear_all();
            // SAFETY: with no gate present, #UD -> #NP -> #DF -> triple
            // fault: the VMM sees a shutdown exit, which this argument is
            // there to test. Not `int3`: where ring 0 is emulated, a
            // software interrupt through a bad IDT is an emulation failure
            // (KVM_EXIT_INTERNAL_ERROR), not a triple fault.
            unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
        }
        ReadyAction::SchedDemo => {
            sched::spawn("sched-demo", 80, 0, sched::selftest::demo, 0);
        }
        ReadyAction::SelfTest => selftest::start(),
        ReadyAction::LockTest => workload::locktest::start(),
        ReadyAction::Deadlock => selftest::deadlock_demo(),
        ReadyAction::Exit(status) => {
            println!("guest argument exit={status}: exiting");
            hypercall::exit(status);
        }
    }
}
