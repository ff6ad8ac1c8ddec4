//! Model checks of the soft interrupt mask (`logic::softmask` and the
//! entry's assembly, modelled in `rtswitch_model::softmask`): a CPU runs a
//! short program with masked sections while interrupts are raised at every
//! possible point of it (the search tries each), on a stock KVM LAPIC.

use rtswitch_model::explore::{Bounds, Explored, explore};
use rtswitch_model::softmask::Cpu;

const TIMER: u8 = 0x30;
const DEVICE: u8 = 0x38;
const RESCHED: u8 = 0xf1;
const SPURIOUS: u8 = 0xff;

fn report(name: &str, explored: Explored) {
    println!("{name}: {explored}");
}

/// A task's code: some work, a masked section, more work.
fn program(raises: &'static [u8]) -> impl Fn() + Send + Sync + 'static {
    move || {
        let cpu = Cpu::new(raises);
        cpu.step_public();
        cpu.disable();
        cpu.step_public();
        cpu.step_public();
        cpu.enable();
        cpu.step_public();
        cpu.finish();
    }
}

/// The review's finding 4: two reschedule IPIs during the timer's handler
/// (handlers run masked). The first is recorded, the timer handler's EOI
/// retires its in-service bit (the highest), the second merges into the
/// pending bit. Each accepted delivery must still get its EOI, or the
/// timer's class stays in service for good.
#[test]
fn two_ipis_during_a_timer_handler_leave_nothing_in_service() {
    let explored = explore(Bounds::default(), program(&[TIMER, RESCHED, RESCHED]));
    assert!(explored.complete, "{explored}");
    report("timer, then two IPIs", explored);
}

/// The review's finding 5: an interrupt that lands in another one's stub,
/// before that one set the mask, must not run its exit work (which may
/// switch tasks) while the other is accepted but recorded nowhere.
#[test]
fn an_interrupt_in_another_ones_entry_window_waits_for_it() {
    let explored = explore(Bounds::default(), program(&[TIMER, RESCHED]));
    assert!(explored.complete, "{explored}");
    report("timer, then an IPI", explored);
}

/// Four deliveries of three classes and a spurious one, anywhere.
#[test]
fn any_four_deliveries_keep_the_accounting() {
    let explored = explore(Bounds::default(), program(&[DEVICE, TIMER, RESCHED, SPURIOUS]));
    assert!(explored.complete, "{explored}");
    report("device, timer, IPI, spurious", explored);
}
