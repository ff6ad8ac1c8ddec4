//! Model checks of the idle CPU's polling flag (`logic::idle`): a waker
//! sets a polling CPU's need_resched and skips the reschedule IPI when the
//! CPU polls; the CPU, when it stops polling to halt, must then see the
//! wake. A wake-up lost here leaves a runnable task behind a halted CPU
//! until its next interrupt. Run under total store order with the flags
//! in store buffers, as on x86.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rtswitch_model::atomics::{MAtomic, Tso, drain_all};
use rtswitch_model::explore::{Bounds, expect_failure, explore};
use rtswitch_model::logic::atomic::Atomic;
use rtswitch_model::logic::idle::{Kick, kick, poll_while};

/// One idle CPU that polls a few rounds and then halts unless woken; one
/// waker. At the end, the CPU either saw the wake, or it halted and the
/// waker sent the IPI that ends the halt.
fn program(
    waker: fn(&MAtomic<bool>, &MAtomic<bool>) -> bool,
    idle: fn(&MAtomic<bool>, &MAtomic<bool>) -> bool,
) -> impl Fn() + Send + Sync + 'static {
    move || {
        let need_resched = Arc::new(MAtomic::buffered(false));
        let polling = Arc::new(MAtomic::buffered(false));
        let (nr, pf) = (need_resched.clone(), polling.clone());
        let w = shuttle::thread::spawn(move || {
            let ipi = waker(&nr, &pf);
            drain_all();
            ipi
        });
        let (nr, pf) = (need_resched.clone(), polling.clone());
        let i = shuttle::thread::spawn(move || {
            let woken = idle(&pf, &nr);
            drain_all();
            woken
        });
        let ipi = w.join().expect("waker");
        let woken = i.join().expect("idle CPU");
        assert!(woken || ipi, "lost wake-up: the CPU halted without seeing need_resched, and no IPI was sent");
    }
}

fn waker(nr: &MAtomic<bool>, polling: &MAtomic<bool>) -> bool {
    kick(nr, polling) == Kick::Ipi
}

fn idle(polling: &MAtomic<bool>, nr: &MAtomic<bool>) -> bool {
    let mut rounds = 0;
    poll_while(polling, nr, || {
        rounds += 1;
        rounds < 3
    })
}

#[test]
fn a_wake_is_never_lost_between_polling_and_halting() {
    let _tso = Tso::on();
    let explored = explore(Bounds::default(), program(waker, idle));
    assert!(explored.complete, "{explored}");
    println!("polling flag: {explored}");
}

/// The same with the orderings the flag must not have (plain stores,
/// which stay in the store buffer past the other side's load): the check
/// finds the lost wake-up.
#[test]
fn the_check_fails_with_release_acquire_flags() {
    fn weak_waker(nr: &MAtomic<bool>, polling: &MAtomic<bool>) -> bool {
        let was = nr.load(Ordering::Acquire);
        nr.store(true, Ordering::Release);
        !was && !polling.load(Ordering::Acquire)
    }
    fn weak_idle(polling: &MAtomic<bool>, nr: &MAtomic<bool>) -> bool {
        polling.store(true, Ordering::Release);
        let mut rounds = 0;
        while !nr.load(Ordering::Acquire) && rounds < 3 {
            rounds += 1;
        }
        polling.store(false, Ordering::Release);
        nr.load(Ordering::Acquire)
    }
    let _tso = Tso::on();
    let msg = expect_failure(Bounds::default(), program(weak_waker, weak_idle));
    assert!(msg.contains("lost wake-up"), "{msg}");
}
