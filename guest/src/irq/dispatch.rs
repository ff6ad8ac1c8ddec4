//! Interrupt handlers of the kernel (vectors 32..=255), called by the arch
//! layer (`arch::irqflags`, a hook set at boot) masked: when the interrupt
//! arrives on an unmasked CPU, or when the CPU unmasks after it was
//! deferred. They are short: note, count, wake, EOI. Around them, the
//! hard-IRQ depth is raised (`sched::in_irq`); after a batch of them the
//! arch layer runs `sched::irq_exit_work`, where a pending reschedule is
//! acted on if the interrupted code is preemptible: that is where a task
//! woken by the timer or an IPI preempts the one running.
//!
//! | vector        | source                         | action                    |
//! |---------------|--------------------------------|---------------------------|
//! | TIMER         | this CPU's one-shot timer      | wake expired sleepers (EOI maybe owed to the re-arm) |
//! | RESCHED_IPI   | a waker on another CPU (or self) | none: the exit path schedules |
//! | WAKEUP_IPI    | boot handshake                 | count                     |
//! | HOST_REQUEST  | the VMM (MSI)                  | note shutdown, wake control and the switch |
//! | SERIALIZE_IPI | the switch thread, after a patch | serialize, acknowledge  |
//! | DEVICE        | the VMM's `--irq-load` (irqfd) | the handler's work, or wake its thread (`workload::irqdev`) |
//! | 0x50, 0x90, 0xe0 | self-tests (self-IPIs)      | log the order they ran in |
//! | SPURIOUS      | the APIC                       | count, no EOI             |
//! | anything else | nobody                         | count, not fatal          |
//!
//! Host requests: the VMM writes `BootInfo::host_request`, then sends
//! `vector::HOST_REQUEST` to CPU 0. The handler notes a shutdown request
//! (`shutdown`) and wakes the control thread (`control`), which prints and
//! exits (not work for an interrupt handler).

use crate::arch::{apic, percpu};
use crate::diag::selftest_ring3;
use crate::hv::{boot_info, shutdown};
use crate::sched;
use crate::switch::{control, modeswitch};
use core::sync::atomic::Ordering;
use switcher::abi::{host_request, vector};

/// Handles one interrupt vector (not an exception, not NMI). Masked.
pub fn handle(vector: u8) {
    sched::trace::irq(percpu::cpu_id(), vector, crate::arch::irqflags::replaying());
    sched::irq_enter();
    dispatch(vector);
    sched::irq_exit();
}

fn dispatch(vector: u8) {
    let this = percpu::this();
    let counters = &this.irq;
    match vector {
        vector::TIMER => {
            if !sched::on_timer_interrupt() {
                // Owed with the timer's re-arm (`logic::clockevent`).
                return;
            }
        }
        vector::RESCHED_IPI => {
            this.resched_ipi.fetch_add(1, Ordering::Relaxed);
        }
        vector::SPURIOUS => {
            // Not in service: no EOI.
            counters.spurious.fetch_add(1, Ordering::Relaxed);
            return;
        }
        vector::WAKEUP_IPI => {
            counters.wakeup_ipi.fetch_add(1, Ordering::Relaxed);
        }
        vector::SERIALIZE_IPI => modeswitch::on_serialize_ipi(),
        vector::DEVICE => crate::workload::irqdev::on_interrupt(),
        v if selftest_ring3::is_test_vector(v) => selftest_ring3::on_test_vector(v),
        vector::HOST_REQUEST => {
            counters.host_request.fetch_add(1, Ordering::Relaxed);
            // A switch request, a switch verdict, or a shutdown.
            modeswitch::on_host_request();
            control::on_host_request();
            crate::workload::locktest::on_host_request();
            if boot_info::host_request() == host_request::SHUTDOWN {
                shutdown::note_requested();
                // Before the scheduler runs, CPU 0 waits in halt_until:
                // wake it if the request landed elsewhere.
                let cpu0 = percpu::of(0);
                if this.cpu_id() != 0 && cpu0.apic_enabled() {
                    apic::send_ipi(cpu0.apic_id(), vector::WAKEUP_IPI);
                }
            }
        }
        other => {
            counters.unexpected.fetch_add(1, Ordering::Relaxed);
            counters.last_unexpected_vector.store(u32::from(other), Ordering::Relaxed);
        }
    }
    apic::eoi();
}
