//! Model checks of the rt lock (`logic::rtmutex`): every schedule, up to
//! the preemption bound, of a few tasks taking two locks, with the lock's
//! invariants checked at every PI lock acquisition (mutual exclusion, no
//! lost wake-up, PI boost and deboost) and every lock free, every
//! priority back to base at the end. Shuttle reports a schedule in which
//! every task sleeps as a deadlock.

use std::sync::Arc;

use rtswitch_model::explore::{Bounds, Explored, expect_failure, explore};
use rtswitch_model::kernel::{Config, Gate, TaskSpec, World};

const L: usize = 0;
const M: usize = 1;

fn report(name: &str, explored: Explored) {
    println!("{name}: {explored}");
}

/// The review's finding 1: U holds L; B holds M and waits for L; A waits
/// for L. U unlocks L: the lock is ownerless and A (the top waiter) is
/// woken. Before A runs, X blocks on M and boosts B above A: B is now the
/// top waiter of an ownerless lock. Someone must wake B.
fn requeue_on_an_ownerless_lock() {
    let w = World::new(
        &[TaskSpec::new("U", 20), TaskSpec::new("B", 5), TaskSpec::new("A", 15), TaskSpec::new("X", 50)],
        &["L", "M"],
        Config::default(),
    );
    let u_has_l = Arc::new(Gate::new());
    let b_has_m = Arc::new(Gate::new());
    let release_u = Arc::new(Gate::new());
    let mut threads = Vec::new();
    {
        let (u_has_l, release_u) = (u_has_l.clone(), release_u.clone());
        threads.push(w.spawn(0, move |w| {
            w.site_lock(L);
            u_has_l.open();
            release_u.wait();
            w.site_unlock(L);
        }));
    }
    {
        let (u_has_l, b_has_m) = (u_has_l.clone(), b_has_m.clone());
        threads.push(w.spawn(1, move |w| {
            u_has_l.wait();
            w.site_lock(M);
            b_has_m.open();
            w.site_lock(L);
            w.site_unlock(L);
            w.site_unlock(M);
        }));
    }
    threads.push(w.spawn(2, move |w| {
        w.task(1).queued.wait();
        w.site_lock(L);
        w.site_unlock(L);
    }));
    {
        let release_u = release_u.clone();
        threads.push(w.spawn(3, move |w| {
            release_u.wait();
            w.site_lock(M);
            w.site_unlock(M);
        }));
    }
    // U lets go of L once A and B are both queued on it; X comes then.
    w.task(1).queued.wait();
    w.task(2).queued.wait();
    release_u.open();
    for t in threads {
        t.join().expect("a model task panicked");
    }
    w.check_idle();
}

#[test]
fn a_waiter_boosted_to_the_top_of_an_ownerless_lock_is_woken() {
    let explored = explore(Bounds { preemptions: 0, ..Bounds::default() }, requeue_on_an_ownerless_lock);
    assert!(explored.complete, "{explored}");
    report("requeue on an ownerless lock", explored);
}

/// Tasks of three priorities take two locks, one of them nested in the
/// other: contention, PI chains through the nested lock, hand-overs, and
/// a newcomer that may outrank a woken waiter (a steal).
fn nested_locks(w: &Arc<World>) {
    let t0 = w.spawn(0, |w| {
        w.site_lock(L);
        w.site_lock(M);
        w.site_unlock(M);
        w.site_unlock(L);
    });
    let t1 = w.spawn(1, |w| {
        w.site_lock(M);
        w.site_unlock(M);
    });
    let t2 = w.spawn(2, |w| {
        w.site_lock(L);
        w.site_unlock(L);
    });
    for t in [t0, t1, t2] {
        t.join().expect("a model task panicked");
    }
    w.check_idle();
}

fn three_tasks(config: Config) -> Arc<World> {
    World::new(&[TaskSpec::new("low", 10), TaskSpec::new("mid", 20), TaskSpec::new("high", 30)], &["L", "M"], config)
}

#[test]
fn three_tasks_two_nested_locks_keep_every_invariant() {
    let explored =
        explore(Bounds { preemptions: 2, ..Bounds::default() }, || nested_locks(&three_tasks(Config::default())));
    assert!(explored.complete, "{explored}");
    report("three tasks, two nested locks", explored);
}

#[test]
fn without_pi_the_model_sees_an_owner_below_its_waiter() {
    let msg = expect_failure(Bounds { preemptions: 2, ..Bounds::default() }, || {
        nested_locks(&three_tasks(Config { pi: false, ..Config::default() }))
    });
    assert!(msg.contains("PI:"), "{msg}");
}

/// Three tasks take one lock, once each: `a` holds it until `b`, whose
/// fast path failed, is in the slow path; `c` comes then, by the fast
/// path (a compare-exchange, without the PI lock), and holds the lock
/// across a yield. `a` can release between `b`'s failed fast path and its
/// `try_take` (under the PI lock), which then finds the lock free with
/// nobody queued: `c`'s fast path can take it in the same moment. The
/// guest's `no-spin` self-test (CI, stop 34) panicked there: "rt unlock
/// of 'selftest.pair' by 'pair-worker': owner word 0x0 is not ours", the
/// second of two owners releasing. Run with spinning off (the `no-spin`
/// guest argument) and on. Seen failing with `try_take` taking a free
/// lock by a load and a store: "mutual exclusion: 'b' took lock 'L'
/// while another task held it".
fn one_lock_three_takers(config: Config) {
    let w = World::new(&[TaskSpec::new("a", 10), TaskSpec::new("b", 10), TaskSpec::new("c", 20)], &["L"], config);
    let a_has_l = Arc::new(Gate::new());
    let b_is_slow = Arc::new(Gate::new());
    let a = {
        let (a_has_l, b_is_slow) = (a_has_l.clone(), b_is_slow.clone());
        w.spawn(0, move |w| {
            w.site_lock(L);
            a_has_l.open();
            while !w.task(1).in_slow_path() {
                shuttle::thread::yield_now();
            }
            b_is_slow.open();
            w.site_unlock(L);
        })
    };
    let b = w.spawn(1, move |w| {
        a_has_l.wait();
        w.site_lock(L);
        w.site_unlock(L);
    });
    let c = w.spawn(2, move |w| {
        b_is_slow.wait();
        w.site_lock(L);
        shuttle::thread::yield_now();
        w.site_unlock(L);
    });
    for t in [a, b, c] {
        t.join().expect("a model task panicked");
    }
    w.check_idle();
}

/// Every schedule of [`one_lock_three_takers`] within 2 preemptions, with
/// `spin_budget` adaptive-spin iterations.
fn three_takers_explored(spin_budget: u32, name: &str) {
    let explored = explore(Bounds { preemptions: 2, ..Bounds::default() }, move || {
        one_lock_three_takers(Config { spin_budget, ..Config::default() })
    });
    assert!(explored.complete, "{explored}");
    report(name, explored);
}

#[test]
fn three_tasks_on_one_lock_keep_mutual_exclusion_without_spinning() {
    three_takers_explored(0, "three tasks on one lock, no spinning");
}

#[test]
fn three_tasks_on_one_lock_keep_mutual_exclusion_with_spinning() {
    three_takers_explored(1, "three tasks on one lock, spinning");
}

/// A signal ends an interruptible wait (the lock tester's `lockint` +
/// `signal`, `rtmutex::lock_slow`): U (20) holds L; A (30, interruptible)
/// and B (15) wait for it; U unlocks while S signals A, in every order.
/// If A leaves the wait, U's boost from A is undone at once (invariant E,
/// checked at every PI lock acquisition) and B still gets the lock (a
/// lost wake-up leaves every task asleep: a deadlock to shuttle). A woken
/// top waiter of an ownerless lock takes it before it looks for a signal,
/// so a signal never leaves a lock without a taker. Seen failing with the
/// deboost of `dequeue_waiter` removed: "PI: task 'U' runs at priority 30,
/// its base and its waiters say 20".
fn signal_to_the_top_waiter() {
    let w = World::new(
        &[TaskSpec::new("U", 20), TaskSpec::new("A", 30), TaskSpec::new("B", 15), TaskSpec::new("S", 40)],
        &["L"],
        Config::default(),
    );
    let u_has_l = Arc::new(Gate::new());
    let both_queued = Arc::new(Gate::new());
    let mut threads = Vec::new();
    {
        let (u_has_l, both_queued) = (u_has_l.clone(), both_queued.clone());
        threads.push(w.spawn(0, move |w| {
            w.site_lock(L);
            u_has_l.open();
            both_queued.wait();
            w.site_unlock(L);
        }));
    }
    for t in [1, 2] {
        let u_has_l = u_has_l.clone();
        threads.push(w.spawn(t, move |w| {
            u_has_l.wait();
            if t == 1 {
                if w.site_lock_interruptible(L).is_some() {
                    w.site_unlock(L);
                }
            } else {
                w.site_lock(L);
                w.site_unlock(L);
            }
        }));
    }
    {
        let both_queued = both_queued.clone();
        threads.push(w.spawn(3, move |w| {
            both_queued.wait();
            w.signal(1);
        }));
    }
    w.task(1).queued.wait();
    w.task(2).queued.wait();
    both_queued.open();
    for t in threads {
        t.join().expect("a model task panicked");
    }
    w.check_idle();
}

#[test]
fn a_signalled_top_waiter_leaves_and_the_next_one_is_woken() {
    let explored = explore(Bounds { preemptions: 0, ..Bounds::default() }, signal_to_the_top_waiter);
    assert!(explored.complete, "{explored}");
    report("signal to the top waiter", explored);
}

/// Deadlock detection as the lock tester asks for it (`lock_wait::
/// DETECT_DEADLOCK`, `rtmutex::enqueue_waiter`): T0 (10) holds L and waits
/// for M; T1 (20) holds M and waits for N; T2 (90) holds N and asks for
/// L, closing the cycle. The chain walk boosts T0 and T1 to 90 on its way
/// round; the deadlock is returned to T2, which is dequeued, and every
/// such boost is undone (invariant E at every later PI lock acquisition);
/// then T2 lets N go and the chain unwinds, every task getting its lock.
/// Seen failing with the undo (`dequeue_waiter`) left out: "lock 'L' is
/// not free at the end".
fn deadlock_of_three_is_returned_and_undone() {
    const N: usize = 2;
    let w = World::new(
        &[TaskSpec::new("T0", 10), TaskSpec::new("T1", 20), TaskSpec::new("T2", 90)],
        &["L", "M", "N"],
        Config::default(),
    );
    let all_hold = Arc::new(Gate::new());
    let (t0_has, t1_has, t2_has) = (Arc::new(Gate::new()), Arc::new(Gate::new()), Arc::new(Gate::new()));
    let mut threads = Vec::new();
    for (t, own, want) in [(0, L, M), (1, M, N)] {
        let (all_hold, mine) = (all_hold.clone(), if t == 0 { t0_has.clone() } else { t1_has.clone() });
        threads.push(w.spawn(t, move |w| {
            w.site_lock(own);
            mine.open();
            all_hold.wait();
            w.site_lock(want);
            w.site_unlock(want);
            w.site_unlock(own);
        }));
    }
    {
        let (all_hold, t2_has) = (all_hold.clone(), t2_has.clone());
        threads.push(w.spawn(2, move |w| {
            w.site_lock(N);
            t2_has.open();
            all_hold.wait();
            w.task(0).queued.wait();
            w.task(1).queued.wait();
            assert_eq!(w.site_lock_detecting(L), None, "T2 -> L -> T0 -> M -> T1 -> N -> T2 is a cycle");
            w.site_unlock(N);
        }));
    }
    t0_has.wait();
    t1_has.wait();
    t2_has.wait();
    all_hold.open();
    for t in threads {
        t.join().expect("a model task panicked");
    }
    w.check_idle();
}

#[test]
fn a_deadlock_asked_for_is_returned_and_its_boosts_undone() {
    let explored = explore(Bounds { preemptions: 0, ..Bounds::default() }, deadlock_of_three_is_returned_and_undone);
    assert!(explored.complete, "{explored}");
    report("deadlock of three, returned", explored);
}
