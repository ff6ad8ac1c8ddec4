//! `platform-costs` guest argument: times, once the guest is ready, the
//! primitives the deprivileged kernel is built on, on CPU 0 (busy, at
//! CPL3), and prints the spread of each (TSC-timed, 200 samples; 1000 for
//! the interrupt deliveries, whose p99 the benchmark judges against):
//!
//! ```text
//! cost xapic timer write: p50 24846 ns, p90 30126 ns, p99 67806 ns, min 23303 ns
//! ```
//!
//! They are what every latency figure is made of on the host at hand: an
//! xAPIC MMIO access, a trip through the ring-0 shim, a CPUID, a doorbell
//! exit to the VMM, an IPI and a timer interrupt delivered at CPL3, and the
//! wake-up of a CPU halted in the shim (an idle CPU's floor). The
//! benchmark suite runs it to put the host's costs beside its figures.
//!
//! The delivery times need a mark from the handlers: the test vectors'
//! handler and the timer interrupt store their entry TSC
//! (`sched::handler_mark`) while a measurement runs.

use crate::arch::{apic, cpu, shim};
use crate::println;
use crate::sched::handler_mark;

const SAMPLES: usize = 200;
/// Samples of each interrupt delivery (8 KiB on the boot stack, 32 KiB):
/// its p99 is the 10th largest, not the 2nd.
const DELIVERY_SAMPLES: usize = 1000;

fn report<const N: usize>(name: &str, samples: &mut [u64; N]) {
    samples.sort_unstable();
    let khz = crate::hv::boot_info::tsc_khz().max(1);
    let ns = |t: u64| t.saturating_mul(1_000_000) / khz;
    println!(
        "cost {name}: p50 {} ns, p90 {} ns, p99 {} ns, min {} ns",
        ns(samples[N / 2]),
        ns(samples[N * 9 / 10]),
        ns(samples[N * 99 / 100]),
        ns(samples[0])
    );
}

/// Times `f` (the TSC reads around it included: see the `rdtsc` line).
fn time(name: &str, mut f: impl FnMut()) {
    let mut s = [0u64; SAMPLES];
    for x in s.iter_mut() {
        let t = cpu::rdtsc_ordered();
        f();
        *x = cpu::rdtsc_ordered() - t;
    }
    report(name, &mut s);
}

/// Times from `start()` (which returns the reference TSC) to the entry of
/// the handler it causes, this CPU spinning unmasked at CPL3 meanwhile.
fn delivery(name: &str, mut start: impl FnMut() -> u64) {
    let mut s = [0u64; DELIVERY_SAMPLES];
    for x in s.iter_mut() {
        handler_mark::arm();
        let reference = start();
        while handler_mark::entry_tsc() == 0 {
            core::hint::spin_loop();
        }
        handler_mark::disarm();
        *x = handler_mark::entry_tsc().saturating_sub(reference);
    }
    report(name, &mut s);
}

/// Runs every measurement (CPU 0, unmasked, before the workload starts).
pub fn run() {
    time("rdtsc", || {});
    time("xapic timer write", || apic::set_tsc_deadline(cpu::rdtsc_ordered() + 1_000_000_000));
    apic::set_tsc_deadline(0);
    time("xapic eoi write (nothing in service)", apic::eoi);
    time("ring-0 shim round trip (rdmsr)", || {
        let _ = shim::rdmsr(crate::arch::msr::IA32_APIC_BASE);
    });
    time("cpuid", cpu::serialize);
    let empty = switcher::abi::doorbell::console_value(crate::arch::percpu::this() as *const _ as u64, 0);
    time("doorbell exit to the VMM (empty console write)", || {
        crate::hv::hypercall::raw_access(switcher::abi::doorbell::CONSOLE, 8, empty, true);
    });
    delivery("self IPI -> handler at CPL3 (busy CPU)", || {
        let t = cpu::rdtsc_ordered();
        apic::send_self_ipi(crate::diag::selftest_ring3::TEST_VECTORS[0]);
        t
    });
    let period = crate::sched::us_to_tsc(200);
    delivery("timer deadline -> handler at CPL3 (busy CPU)", || {
        let deadline = cpu::rdtsc_ordered() + period;
        apic::set_tsc_deadline(deadline);
        deadline
    });
    delivery("timer deadline -> handler at CPL3 (CPU halted in the shim, idle wake-up)", || {
        let deadline = cpu::rdtsc_ordered() + period;
        apic::set_tsc_deadline(deadline);
        // Halt until the timer's handler has run (another interrupt may
        // wake the halt first: halt again).
        while handler_mark::entry_tsc() == 0 {
            cpu::disable_interrupts();
            if handler_mark::entry_tsc() == 0 {
                cpu::idle_halt();
            }
            cpu::enable_interrupts();
        }
        deadline
    });
}
