//! Priority-inheritance bookkeeping for rtmutexes: effective priorities, the
//! PI chain walk (bounded depth, deadlock detection) and deboosting, as pure
//! functions over a graph the caller owns ([`PiGraph`]).
//!
//! The model is Linux's (`kernel/locking/rtmutex.c`,
//! `Documentation/locking/rt-mutex-design.rst`), reduced to what a small
//! kernel with a few CPUs needs.
//!
//! # The graph
//!
//! - A task has a *base* priority (its own) and an *effective* priority (what
//!   the scheduler runs it at). Higher is more important.
//! - A task is blocked on at most one lock; it is then queued in that lock's
//!   waiter list ([`super::prio_list::PrioList`]), keyed by its effective
//!   priority.
//! - A lock has at most one owner. A lock's *top waiter* is the first of its
//!   waiter list.
//!
//! # Invariants
//!
//! Between operations (not in the middle of a walk) the graph satisfies:
//!
//! - **W** (waiter priority): a blocked task is queued in its lock's waiter
//!   list at exactly its effective priority.
//! - **E** (effective priority): for every task `t`,
//!   `effective(t) = max(base(t), max over locks L owned by t of
//!   prio(top waiter of L))`. Because of W, the top waiter's queued priority
//!   is its effective priority, so E is transitive: a task inherits from the
//!   whole tree of tasks blocked behind it.
//! - **A** (acyclic): following `task -> lock it is blocked on -> owner of
//!   that lock -> ...` never returns to a task already visited. [`walk_chain`]
//!   keeps A by refusing a block that would close a cycle (a deadlock).
//!
//! A per-task cache of the top waiters of its held locks (Linux's
//! `pi_waiters`: a `PrioList` of lock ids keyed by top-waiter priority) makes
//! `max over owned locks` O(1); [`PiGraph::max_top_waiter_prio_of_held`] is
//! where an implementation reads it, and [`PiGraph::requeue_waiter`] is where
//! it must keep it current (the tests' `fixture::HandOffGraph` keeps such a
//! cache; the kernel scans its few contended locks).
//!
//! # The chain walk
//!
//! An operation that changes a lock's waiter list (a task blocks, or stops
//! waiting) or a task's base priority breaks E at one task (the owner of
//! that lock, or the task itself). Fixing that task's effective priority can
//! break W (if the task is itself blocked: its place in its lock's waiter
//! list) and then E at the next owner, and so on down the chain:
//!
//! ```text
//! blocker --waits--> L1 --owner--> T1 --waits--> L2 --owner--> T2 ... --> Tn (not blocked)
//! ```
//!
//! One step, at lock `L` with owner `T`: recompute `effective(T)` from E; if
//! it changed, record it (the scheduler requeues `T` in its run queue) and,
//! if `T` is blocked on `L'`, requeue `T` in `L'`'s waiter list at the new
//! priority (W again), which may change `L'`'s top waiter; continue at
//! `L'`. The walk ends at a task that is not blocked or a lock without an
//! owner.
//!
//! - **Early stop**: when a step changes nothing, nothing further down can
//!   change, so walks that only repair priorities stop there (Linux stops
//!   when `waiter->prio == task->prio`).
//! - **Deadlock detection** ([`walk_chain`], when a task blocks): the walk
//!   always runs to the end of the chain, even past steps that change nothing
//!   (Linux's full chain walk, `RT_MUTEX_FULL_CHAINWALK`): a cycle need not
//!   change any priority (two equal-priority tasks each waiting for the
//!   other's lock). Because A held before the block, a cycle must go through
//!   the blocker: the walk reaching an owner equal to the blocker is a
//!   deadlock, reported as [`PiError::Deadlock`] with the cycle as the
//!   sequence of `(task, lock it waits for)` pairs, starting with the
//!   blocker; the owner of each pair's lock is the next pair's task, and the
//!   owner of the last pair's lock is the blocker.
//! - **Bounded depth**: a chain is at most [`MAX_PI_CHAIN_DEPTH`] locks long,
//!   counting the lock the walk starts from. A longer one is refused with
//!   [`PiError::ChainTooDeep`] (Linux: `max_lock_depth`, `-EDEADLK`). The
//!   bound also ends a walk that would go round a cycle A forbids.
//!
//! On an error the steps already taken stay applied: the caller dequeues the
//! blocker again and calls [`propagate_from_lock`], which walks the same
//! chain and undoes them. In the kernel both
//! errors are a bug and a panic that prints the [`PiError`] (which names the
//! tasks and locks).
//!
//! Unlike Linux, which walks hand over hand with per-lock `wait_lock`s and
//! per-task `pi_lock`s (and may drop them between steps), these functions
//! assume the graph does not change under them: the caller holds whatever
//! serializes PI state (in this kernel: one raw spinlock over all rtmutex
//! waiter lists, owners and task priorities, with preemption and IRQs off).
//! The walk is bounded, so is the time that lock is held.
//!
//! # The rtmutex slow path in these terms
//!
//! (`rtmutex`, the protocol core, is the code; this is its PI part.)
//!
//! Block (`lock` finds an owner, adaptive spinning gave up):
//! 1. queue the task in the lock's waiter list at its effective priority,
//!    mark it blocked on the lock;
//! 2. [`walk_chain`]`(graph, task, lock)`: boosts the owner chain; an error
//!    is a panic;
//! 3. sleep until woken as the top waiter of an ownerless lock (then take
//!    it: dequeue, unmark, [`adjust_prio`] to inherit from the waiters
//!    left), or until a freeze makes it leave (dequeue, unmark,
//!    [`propagate_from_lock`]).
//!
//! Unlock (by the owner, with waiters): leave the lock ownerless and
//! marked contended, [`deboost`]`(graph, old owner)` (back to the max of
//! its remaining held locks' top waiters, or its base), wake the top
//! waiter (*wake and take*: the woken task takes the lock itself; a
//! newcomer that outranks it may take it first).
//!
//! While a lock is ownerless with waiters, its top waiter is awake: a walk
//! that ends there after requeueing a waiter in it wakes the new top
//! waiter if the top changed ([`PiGraph::wake_top_waiter`]).

use core::fmt;

use super::prio_list::Prio;

/// The longest chain a walk follows, in locks (the first lock included).
pub const MAX_PI_CHAIN_DEPTH: usize = 16;

/// A task, as the graph names it (an index into the graph's tasks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskId(pub u16);

/// A lock, as the graph names it (an index into the graph's locks).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockId(pub u16);

impl TaskId {
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl LockId {
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "task {}", self.0)
    }
}

impl fmt::Display for LockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lock {}", self.0)
    }
}

/// A blocking chain: `(task, lock the task waits for)` pairs, where the owner
/// of each pair's lock is the next pair's task. Fixed capacity
/// ([`MAX_PI_CHAIN_DEPTH`]).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    links: [(TaskId, LockId); MAX_PI_CHAIN_DEPTH],
    len: u8,
}

impl Chain {
    pub const fn new() -> Self {
        Self { links: [(TaskId(0), LockId(0)); MAX_PI_CHAIN_DEPTH], len: 0 }
    }

    /// The pairs, from the blocking end.
    pub fn links(&self) -> &[(TaskId, LockId)] {
        &self.links[..usize::from(self.len)]
    }

    pub const fn len(&self) -> usize {
        self.len as usize
    }

    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a pair; false (and unchanged) when full.
    fn push(&mut self, link: (TaskId, LockId)) -> bool {
        match self.links.get_mut(usize::from(self.len)) {
            Some(slot) => {
                *slot = link;
                self.len += 1;
                true
            }
            None => false,
        }
    }

    /// "task a waits for lock x, held by task b, which waits for lock y,
    /// held by `last_owner`".
    fn describe(&self, f: &mut fmt::Formatter<'_>, last_owner: TaskId) -> fmt::Result {
        for (i, (task, lock)) in self.links().iter().enumerate() {
            if i == 0 {
                write!(f, "{task} waits for {lock}")?;
            } else {
                write!(f, ", held by {task}, which waits for {lock}")?;
            }
        }
        write!(f, ", held by {last_owner}")
    }
}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.links()).finish()
    }
}

/// Why a chain walk stopped short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PiError {
    /// Blocking would close a cycle. `cycle` starts with the blocker; the
    /// owner of its last lock is the blocker.
    Deadlock { cycle: Chain },
    /// The chain is longer than [`MAX_PI_CHAIN_DEPTH`] locks. `chain` holds
    /// the first [`MAX_PI_CHAIN_DEPTH`] pairs; `owner` owns the last pair's
    /// lock and is blocked on yet another lock.
    ChainTooDeep { chain: Chain, owner: TaskId },
}

impl fmt::Display for PiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PiError::Deadlock { cycle } => {
                f.write_str("rtmutex deadlock: ")?;
                match cycle.links().first() {
                    Some(&(blocker, _)) => cycle.describe(f, blocker),
                    None => f.write_str("(empty cycle)"),
                }
            }
            PiError::ChainTooDeep { chain, owner } => {
                write!(f, "rtmutex PI chain longer than {MAX_PI_CHAIN_DEPTH} locks: ")?;
                chain.describe(f, *owner)?;
                write!(f, ", which is blocked too")
            }
        }
    }
}

/// What a walk did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainWalk {
    /// Tasks whose effective priority was recomputed.
    pub steps: usize,
    /// Tasks whose effective priority changed ([`PiGraph::set_effective_prio`]
    /// calls).
    pub changed: usize,
}

/// The kernel's tasks and locks, as the PI algorithms see them. The caller
/// holds whatever keeps them stable for the duration of a call (module
/// documentation).
pub trait PiGraph {
    /// The lock's owner, `None` when the lock is free.
    fn owner_of(&self, lock: LockId) -> Option<TaskId>;
    /// The lock the task is blocked on (queued as a waiter of).
    fn blocked_on(&self, task: TaskId) -> Option<LockId>;
    /// The task's own priority.
    fn base_prio(&self, task: TaskId) -> Prio;
    /// The priority the task runs at.
    fn effective_prio(&self, task: TaskId) -> Prio;
    /// Records a new effective priority. The kernel's implementation also
    /// moves a runnable task within its run queue (and asks its CPU to
    /// reschedule when that matters); it does not touch waiter lists (the
    /// walk calls [`PiGraph::requeue_waiter`] for that).
    fn set_effective_prio(&mut self, task: TaskId, prio: Prio);
    /// The priority of the lock's top waiter, `None` without waiters.
    fn top_waiter_prio(&self, lock: LockId) -> Option<Prio>;
    /// The lock's top waiter, `None` without waiters.
    fn top_waiter(&self, lock: LockId) -> Option<TaskId>;
    /// Wakes `task`, a waiter that is now the top waiter of an ownerless
    /// lock, so that it runs and takes the lock (the kernel's wake and
    /// take: an unlock leaves the lock ownerless and wakes the top waiter
    /// of that moment; a requeue that puts another waiter on top must wake
    /// that one too, or nobody takes the lock).
    fn wake_top_waiter(&mut self, task: TaskId);
    /// Moves `task`, queued as a waiter of `lock`, to priority `prio`
    /// ([`PrioList::requeue`]: to the back of its new priority class), and
    /// updates whatever `max_top_waiter_prio_of_held` of `lock`'s owner
    /// reads (its cache of top waiters), since the top waiter may change.
    fn requeue_waiter(&mut self, lock: LockId, task: TaskId, prio: Prio);
    /// The highest top-waiter priority over the locks `task` owns, `None`
    /// when none of them has waiters. [`max_top_waiter_prio`] computes it
    /// from a list of held locks, for graphs without a cache.
    fn max_top_waiter_prio_of_held(&self, task: TaskId) -> Option<Prio>;
}

/// `max(top_waiter_prio(lock))` over `held`: an implementation of
/// [`PiGraph::max_top_waiter_prio_of_held`] for graphs that scan a task's
/// held locks instead of caching their top waiters.
pub fn max_top_waiter_prio<G: PiGraph + ?Sized>(graph: &G, held: impl IntoIterator<Item = LockId>) -> Option<Prio> {
    held.into_iter().filter_map(|lock| graph.top_waiter_prio(lock)).max()
}

/// What invariant E says `task`'s effective priority must be.
pub fn compute_effective_prio<G: PiGraph + ?Sized>(graph: &G, task: TaskId) -> Prio {
    let base = graph.base_prio(task);
    match graph.max_top_waiter_prio_of_held(task) {
        Some(inherited) if inherited > base => inherited,
        _ => base,
    }
}

/// The chain walk after `blocker` blocked on `lock`: boosts every owner down
/// the chain and detects deadlock (module documentation).
///
/// Precondition: `blocker` is queued in `lock`'s waiter list at its effective
/// priority, `blocked_on(blocker) == Some(lock)`, and the owner's top-waiter
/// cache is current; W, E and A held before that.
///
/// On `Ok` W, E and A hold. On `Err` the blocker must be dequeued again and
/// [`propagate_from_lock`]`(graph, lock)` called to restore them.
pub fn walk_chain<G: PiGraph + ?Sized>(graph: &mut G, blocker: TaskId, lock: LockId) -> Result<ChainWalk, PiError> {
    let mut chain = Chain::new();
    chain.push((blocker, lock));
    walk(graph, lock, Some(blocker), None, chain, ChainWalk::default())
}

/// Recomputes `task`'s effective priority (after its base priority changed,
/// or its set of held locks or their waiters did) and, if it changed while
/// the task is blocked, requeues it and walks on down the chain.
pub fn adjust_prio<G: PiGraph + ?Sized>(graph: &mut G, task: TaskId) -> Result<ChainWalk, PiError> {
    let new = compute_effective_prio(graph, task);
    let mut done = ChainWalk { steps: 1, changed: 0 };
    if new == graph.effective_prio(task) {
        return Ok(done);
    }
    graph.set_effective_prio(task, new);
    done.changed = 1;
    let Some(lock) = graph.blocked_on(task) else { return Ok(done) };
    let top_before = graph.top_waiter(lock);
    graph.requeue_waiter(lock, task, new);
    let mut chain = Chain::new();
    chain.push((task, lock));
    walk(graph, lock, None, Some(top_before), chain, done)
}

/// After `task` released a lock (and the lock was handed over or freed, and
/// dropped from `task`'s top-waiter cache): back to `max(base, top waiters of
/// the locks it still holds)`. The same as [`adjust_prio`]; a task that
/// unlocks runs, so nothing further is walked.
pub fn deboost<G: PiGraph + ?Sized>(graph: &mut G, task: TaskId) -> Result<ChainWalk, PiError> {
    adjust_prio(graph, task)
}

/// After a waiter left `lock`'s waiter list without taking the lock (its
/// wait timed out or was aborted, or [`walk_chain`] failed): recomputes the
/// owner and walks on down the chain while priorities change.
pub fn propagate_from_lock<G: PiGraph + ?Sized>(graph: &mut G, lock: LockId) -> Result<ChainWalk, PiError> {
    walk(graph, lock, None, None, Chain::new(), ChainWalk::default())
}

/// The walk from `lock` (module documentation). With `blocker`, it runs to
/// the end of the chain and reports a cycle through `blocker`; without, it
/// stops at the first step that changes nothing. `chain` holds the pairs
/// already walked. `top_before` is `Some(top waiter before)` when the step
/// that led to `lock` requeued a waiter in it.
fn walk<G: PiGraph + ?Sized>(
    graph: &mut G,
    mut lock: LockId,
    blocker: Option<TaskId>,
    mut top_before: Option<Option<TaskId>>,
    mut chain: Chain,
    mut done: ChainWalk,
) -> Result<ChainWalk, PiError> {
    loop {
        let Some(owner) = graph.owner_of(lock) else {
            // An ownerless lock with waiters: its top waiter of the unlock
            // was woken to take it. A requeue that put another waiter on
            // top wakes that one (Linux: rt_mutex_adjust_prio_chain), or
            // every waiter may sleep on a lock nobody takes.
            if let Some(before) = top_before
                && let Some(top) = graph.top_waiter(lock)
                && before != Some(top)
            {
                graph.wake_top_waiter(top);
            }
            return Ok(done);
        };
        if Some(owner) == blocker {
            return Err(PiError::Deadlock { cycle: chain });
        }
        let new = compute_effective_prio(graph, owner);
        let changed = new != graph.effective_prio(owner);
        done.steps += 1;
        if changed {
            graph.set_effective_prio(owner, new);
            done.changed += 1;
        }
        let Some(next) = graph.blocked_on(owner) else { return Ok(done) };
        top_before = None;
        if changed {
            top_before = Some(graph.top_waiter(next));
            graph.requeue_waiter(next, owner, new);
        } else if blocker.is_none() {
            return Ok(done);
        }
        if !chain.push((owner, next)) {
            return Err(PiError::ChainTooDeep { chain, owner });
        }
        lock = next;
    }
}

/// The tests' graph (see [`fixture::HandOffGraph`]).
#[cfg(test)]
mod fixture {
    use super::super::prio_list::PrioList;
    use super::*;

    /// How [`HandOffGraph::lock`] went.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum LockOutcome {
        /// The lock was free and is now owned by the task.
        Acquired,
        /// The task is queued as a waiter; the owner chain was boosted.
        Blocked(ChainWalk),
    }

    /// An invariant [`HandOffGraph::check_invariants`] found broken.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Violation {
        /// A task is blocked on a lock without being queued in its waiter list,
        /// or queued without being blocked on it.
        WaiterQueue { task: TaskId, lock: LockId },
        /// W: a waiter is queued at another priority than its effective one.
        WaiterPrio { task: TaskId, lock: LockId, queued: Prio, effective: Prio },
        /// E: recomputed from scratch, the effective priority differs.
        EffectivePrio { task: TaskId, effective: Prio, expected: Prio },
        /// The owner's top-waiter cache disagrees with the lock's waiter list.
        PiCache { task: TaskId, lock: LockId },
        /// A lock has waiters but no owner (hand-off never leaves one).
        WaitersWithoutOwner { lock: LockId },
        /// A: following blocked-on and owner from the task comes back to it.
        Cycle { task: TaskId },
    }

    /// A graph for the chain-walk tests, with fixed arrays: `T` tasks, `L`
    /// locks, waiter lists and per-task top-waiter caches as [`PrioList`]s.
    /// Its unlock hands the lock straight to the top waiter, which keeps the
    /// tests about the walk short; that is *not* the kernel's lock protocol
    /// (wake and take: `rtmutex`), which the model checker (`model/`) runs
    /// itself.
    #[derive(Clone)]
    pub struct HandOffGraph<const T: usize, const L: usize> {
        pub(super) base: [Prio; T],
        pub(super) effective: [Prio; T],
        pub(super) blocked_on: [Option<LockId>; T],
        pub(super) owner: [Option<TaskId>; L],
        /// Per lock: its waiters (task ids) keyed by their effective priority.
        pub(super) waiters: [PrioList<T>; L],
        /// Per task: the locks it owns that have waiters, keyed by their top
        /// waiter's priority (Linux's `pi_waiters`).
        pub(super) pi_waiters: [PrioList<L>; T],
    }

    impl<const T: usize, const L: usize> HandOffGraph<T, L> {
        /// Every task at base priority 0, every lock free.
        pub const fn new() -> Self {
            Self {
                base: [0; T],
                effective: [0; T],
                blocked_on: [None; T],
                owner: [None; L],
                waiters: [const { PrioList::new() }; L],
                pi_waiters: [const { PrioList::new() }; T],
            }
        }

        /// Tasks with these base priorities, every lock free.
        pub fn with_base_prios(prios: [Prio; T]) -> Self {
            let mut model = Self::new();
            model.base = prios;
            model.effective = prios;
            model
        }

        /// The waiters of `lock`, in hand-off order.
        pub fn waiters(&self, lock: LockId) -> &PrioList<T> {
            &self.waiters[lock.index()]
        }

        /// The locks `task` owns that have waiters, by top-waiter priority.
        pub fn pi_waiters(&self, task: TaskId) -> &PrioList<L> {
            &self.pi_waiters[task.index()]
        }

        /// `task` (running: not blocked) locks `lock`: takes it if free, else
        /// queues as a waiter and walks the chain. On an error the task is not
        /// queued and every priority is as before.
        ///
        /// Panics if `task` is blocked.
        pub fn lock(&mut self, task: TaskId, lock: LockId) -> Result<LockOutcome, PiError> {
            assert!(self.blocked_on[task.index()].is_none(), "{task} is blocked and cannot lock");
            if self.try_lock(task, lock) {
                return Ok(LockOutcome::Acquired);
            }
            let prio = self.effective[task.index()];
            self.waiters[lock.index()].insert(task.index(), prio).expect("a running task is in no waiter list");
            self.blocked_on[task.index()] = Some(lock);
            self.refresh_pi_cache(lock);
            match walk_chain(self, task, lock) {
                Ok(done) => Ok(LockOutcome::Blocked(done)),
                Err(err) => {
                    self.dequeue_waiter(task, lock);
                    propagate_from_lock(self, lock).expect("undoing a walk retraces a chain that fits");
                    Err(err)
                }
            }
        }

        /// Takes `lock` if it is free.
        pub fn try_lock(&mut self, task: TaskId, lock: LockId) -> bool {
            if self.owner[lock.index()].is_some() {
                return false;
            }
            self.owner[lock.index()] = Some(task);
            // A free lock has no waiters (hand-off), so no cache to refresh.
            true
        }

        /// `task` releases `lock`, handing it to the top waiter if there is one
        /// (returned), and deboosts.
        ///
        /// Panics if `task` does not own `lock`.
        pub fn unlock(&mut self, task: TaskId, lock: LockId) -> Result<Option<TaskId>, PiError> {
            assert_eq!(self.owner[lock.index()], Some(task), "{task} unlocks {lock}, which it does not own");
            let _ = self.pi_waiters[task.index()].remove(lock.index());
            let next = self.waiters[lock.index()].pop().map(|(id, _)| TaskId(id as u16));
            self.owner[lock.index()] = next;
            if let Some(next) = next {
                self.blocked_on[next.index()] = None;
                self.refresh_pi_cache(lock);
                adjust_prio(self, next)?;
            }
            deboost(self, task)?;
            Ok(next)
        }

        /// `task`'s wait ends without the lock (timeout, signal): it leaves the
        /// waiter list and the chain it boosted is deboosted.
        ///
        /// Panics if `task` is not blocked.
        pub fn abort_wait(&mut self, task: TaskId) -> Result<ChainWalk, PiError> {
            let lock = self.blocked_on[task.index()].unwrap_or_else(|| panic!("{task} is not blocked"));
            self.dequeue_waiter(task, lock);
            propagate_from_lock(self, lock)
        }

        /// Changes `task`'s base priority (it may be blocked) and propagates.
        pub fn set_base_prio(&mut self, task: TaskId, prio: Prio) -> Result<ChainWalk, PiError> {
            self.base[task.index()] = prio;
            adjust_prio(self, task)
        }

        /// Checks W, E, A and the consistency of waiter lists and caches,
        /// recomputing everything from scratch (not through the caches).
        pub fn check_invariants(&self) -> Result<(), Violation> {
            for t in 0..T {
                let task = TaskId(t as u16);
                // Blocked exactly where queued.
                for l in 0..L {
                    let lock = LockId(l as u16);
                    if self.waiters[l].contains(t) != (self.blocked_on[t] == Some(lock)) {
                        return Err(Violation::WaiterQueue { task, lock });
                    }
                }
                // W.
                if let Some(lock) = self.blocked_on[t] {
                    let queued = self.waiters[lock.index()].prio_of(t).unwrap_or(0);
                    if queued != self.effective[t] {
                        return Err(Violation::WaiterPrio { task, lock, queued, effective: self.effective[t] });
                    }
                }
                // E, from the waiters' effective priorities.
                let mut expected = self.base[t];
                for l in 0..L {
                    if self.owner[l] == Some(task) {
                        for (w, _) in &self.waiters[l] {
                            expected = expected.max(self.effective[w]);
                        }
                    }
                }
                if expected != self.effective[t] {
                    return Err(Violation::EffectivePrio { task, effective: self.effective[t], expected });
                }
                // A.
                let mut cur = task;
                for _ in 0..=T {
                    let Some(lock) = self.blocked_on[cur.index()] else { break };
                    let Some(owner) = self.owner[lock.index()] else { break };
                    if owner == task {
                        return Err(Violation::Cycle { task });
                    }
                    cur = owner;
                }
            }
            for l in 0..L {
                let lock = LockId(l as u16);
                let top = self.waiters[l].top_prio();
                match self.owner[l] {
                    None if top.is_some() => return Err(Violation::WaitersWithoutOwner { lock }),
                    Some(owner) if self.pi_waiters[owner.index()].prio_of(l) != top => {
                        return Err(Violation::PiCache { task: owner, lock });
                    }
                    _ => {}
                }
                // No other task caches this lock.
                for t in 0..T {
                    if self.owner[l] != Some(TaskId(t as u16)) && self.pi_waiters[t].contains(l) {
                        return Err(Violation::PiCache { task: TaskId(t as u16), lock });
                    }
                }
            }
            Ok(())
        }

        fn dequeue_waiter(&mut self, task: TaskId, lock: LockId) {
            self.waiters[lock.index()].remove(task.index()).expect("a blocked task is queued on its lock");
            self.blocked_on[task.index()] = None;
            self.refresh_pi_cache(lock);
        }

        /// Makes the owner's cache entry for `lock` match its top waiter.
        fn refresh_pi_cache(&mut self, lock: LockId) {
            let Some(owner) = self.owner[lock.index()] else { return };
            let cache = &mut self.pi_waiters[owner.index()];
            let l = lock.index();
            let result = match (self.waiters[l].top_prio(), cache.contains(l)) {
                (Some(prio), true) => cache.requeue(l, prio),
                (Some(prio), false) => cache.insert(l, prio),
                (None, true) => cache.remove(l).map(|_| ()),
                (None, false) => Ok(()),
            };
            result.expect("lock ids are below the cache's capacity");
        }
    }

    impl<const T: usize, const L: usize> Default for HandOffGraph<T, L> {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<const T: usize, const L: usize> PiGraph for HandOffGraph<T, L> {
        fn owner_of(&self, lock: LockId) -> Option<TaskId> {
            self.owner[lock.index()]
        }

        fn blocked_on(&self, task: TaskId) -> Option<LockId> {
            self.blocked_on[task.index()]
        }

        fn base_prio(&self, task: TaskId) -> Prio {
            self.base[task.index()]
        }

        fn effective_prio(&self, task: TaskId) -> Prio {
            self.effective[task.index()]
        }

        fn set_effective_prio(&mut self, task: TaskId, prio: Prio) {
            self.effective[task.index()] = prio;
        }

        fn top_waiter_prio(&self, lock: LockId) -> Option<Prio> {
            self.waiters[lock.index()].top_prio()
        }

        fn requeue_waiter(&mut self, lock: LockId, task: TaskId, prio: Prio) {
            self.waiters[lock.index()].requeue(task.index(), prio).expect("the walk requeues queued waiters only");
            self.refresh_pi_cache(lock);
        }

        fn max_top_waiter_prio_of_held(&self, task: TaskId) -> Option<Prio> {
            self.pi_waiters[task.index()].top_prio()
        }

        fn top_waiter(&self, lock: LockId) -> Option<TaskId> {
            self.waiters[lock.index()].top_id().map(|t| TaskId(t as u16))
        }

        fn wake_top_waiter(&mut self, task: TaskId) {
            panic!("{task} woken: a hand-off graph never leaves a lock ownerless with waiters");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::*;
    use super::*;

    const A: TaskId = TaskId(0);
    const B: TaskId = TaskId(1);
    const C: TaskId = TaskId(2);
    const D: TaskId = TaskId(3);
    const L0: LockId = LockId(0);
    const L1: LockId = LockId(1);
    const L2: LockId = LockId(2);

    fn check<const T: usize, const L: usize>(m: &HandOffGraph<T, L>) {
        if let Err(v) = m.check_invariants() {
            panic!("invariant broken: {v:?}");
        }
    }

    fn eff<const T: usize, const L: usize>(m: &HandOffGraph<T, L>, t: TaskId) -> Prio {
        m.effective_prio(t)
    }

    fn blocked<const T: usize, const L: usize>(m: &mut HandOffGraph<T, L>, t: TaskId, l: LockId) -> ChainWalk {
        match m.lock(t, l) {
            Ok(LockOutcome::Blocked(done)) => {
                check(m);
                done
            }
            other => panic!("{t} locking {l}: expected to block, got {other:?}"),
        }
    }

    fn acquired<const T: usize, const L: usize>(m: &mut HandOffGraph<T, L>, t: TaskId, l: LockId) {
        assert_eq!(m.lock(t, l), Ok(LockOutcome::Acquired), "{t} locking {l}");
        check(m);
    }

    fn chain_of(links: &[(TaskId, LockId)]) -> Chain {
        let mut chain = Chain::new();
        for &link in links {
            assert!(chain.push(link));
        }
        chain
    }

    /// `Display` compared with `expected` (the tests run on the host, with std).
    fn assert_display(value: &dyn fmt::Display, expected: &str) {
        assert_eq!(format!("{value}"), expected);
    }

    #[test]
    fn uncontended_lock_and_unlock_change_nothing() {
        let mut m = HandOffGraph::<2, 2>::with_base_prios([3, 7]);
        acquired(&mut m, A, L0);
        assert_eq!(m.owner_of(L0), Some(A));
        assert!(!m.try_lock(B, L0));
        assert_eq!(m.unlock(A, L0), Ok(None));
        assert_eq!(m.owner_of(L0), None);
        assert_eq!((eff(&m, A), eff(&m, B)), (3, 7));
        check(&m);
    }

    #[test]
    fn low_holder_is_boosted_by_high_waiter_and_deboosted_on_release() {
        let (low, high) = (A, B);
        let mut m = HandOffGraph::<2, 1>::with_base_prios([1, 10]);
        acquired(&mut m, low, L0);
        let done = blocked(&mut m, high, L0);
        assert_eq!(done, ChainWalk { steps: 1, changed: 1 });
        assert_eq!(eff(&m, low), 10);
        assert_eq!(m.base_prio(low), 1);
        // Release: hand-off to the waiter, the old owner back to base.
        assert_eq!(m.unlock(low, L0), Ok(Some(high)));
        check(&m);
        assert_eq!(m.owner_of(L0), Some(high));
        assert_eq!(m.blocked_on(high), None);
        assert_eq!((eff(&m, low), eff(&m, high)), (1, 10));
    }

    #[test]
    fn lower_priority_waiter_does_not_boost() {
        let mut m = HandOffGraph::<2, 1>::with_base_prios([10, 1]);
        acquired(&mut m, A, L0);
        assert_eq!(blocked(&mut m, B, L0), ChainWalk { steps: 1, changed: 0 });
        assert_eq!(eff(&m, A), 10);
    }

    #[test]
    fn hand_off_order_is_priority_then_fifo() {
        let mut m = HandOffGraph::<5, 1>::with_base_prios([1, 5, 9, 5, 9]);
        acquired(&mut m, TaskId(0), L0);
        for t in 1..5 {
            blocked(&mut m, TaskId(t), L0);
        }
        let order: [u16; 4] = [2, 4, 1, 3];
        let mut owner = TaskId(0);
        for &next in &order {
            assert_eq!(m.unlock(owner, L0), Ok(Some(TaskId(next))));
            check(&m);
            owner = TaskId(next);
        }
        assert_eq!(m.unlock(owner, L0), Ok(None));
        check(&m);
    }

    #[test]
    fn chain_boosts_the_end_and_deboosts_when_the_wait_times_out() {
        // A waits on L1 held by B; B waits on L2 held by C.
        let mut m = HandOffGraph::<3, 3>::with_base_prios([30, 20, 10]);
        acquired(&mut m, B, L1);
        acquired(&mut m, C, L2);
        blocked(&mut m, B, L2);
        assert_eq!(eff(&m, C), 20);
        let done = blocked(&mut m, A, L1);
        assert_eq!(done, ChainWalk { steps: 2, changed: 2 });
        assert_eq!((eff(&m, A), eff(&m, B), eff(&m, C)), (30, 30, 30));
        assert_eq!(m.waiters(L2).prio_of(B.index()), Some(30));
        // A's wait times out: B back to 20, C to B's 20 (not its base 10).
        assert_eq!(m.abort_wait(A), Ok(ChainWalk { steps: 2, changed: 2 }));
        check(&m);
        assert_eq!((eff(&m, A), eff(&m, B), eff(&m, C)), (30, 20, 20));
    }

    #[test]
    fn chain_unwinds_through_hand_offs() {
        let mut m = HandOffGraph::<3, 3>::with_base_prios([30, 20, 10]);
        acquired(&mut m, B, L1);
        acquired(&mut m, C, L2);
        blocked(&mut m, B, L2);
        blocked(&mut m, A, L1);
        // C releases L2 to B, which stays at A's priority; C back to base.
        assert_eq!(m.unlock(C, L2), Ok(Some(B)));
        check(&m);
        assert_eq!((eff(&m, B), eff(&m, C)), (30, 10));
        // B releases L1 to A; B back to base.
        assert_eq!(m.unlock(B, L1), Ok(Some(A)));
        check(&m);
        assert_eq!((eff(&m, A), eff(&m, B)), (30, 20));
        assert_eq!(m.unlock(B, L2), Ok(None));
        assert_eq!(m.unlock(A, L1), Ok(None));
        check(&m);
    }

    #[test]
    fn boosted_waiter_moves_up_in_its_waiter_list() {
        // L2 held by C, waiters D (25, first) then B (20); A (30) blocks on
        // L1 held by B: B is boosted to 30 and moves ahead of D.
        let mut m = HandOffGraph::<4, 3>::with_base_prios([30, 20, 10, 25]);
        acquired(&mut m, B, L1);
        acquired(&mut m, C, L2);
        blocked(&mut m, D, L2);
        blocked(&mut m, B, L2);
        assert_eq!(m.waiters(L2).top_id(), Some(D.index()));
        assert_eq!(eff(&m, C), 25);
        blocked(&mut m, A, L1);
        assert_eq!(m.waiters(L2).top(), Some((B.index(), 30)));
        assert_eq!(eff(&m, C), 30);
        // So C hands L2 to B, not to D.
        assert_eq!(m.unlock(C, L2), Ok(Some(B)));
        check(&m);
        assert_eq!(eff(&m, C), 10);
        // Once A's wait ends, B (now L2's owner with D waiting) runs at D's 25.
        m.abort_wait(A).unwrap();
        check(&m);
        assert_eq!(eff(&m, B), 25);
    }

    #[test]
    fn deboost_goes_to_the_max_of_the_remaining_top_waiters() {
        let owner = TaskId(0);
        let mut m = HandOffGraph::<4, 3>::with_base_prios([1, 10, 20, 15]);
        for l in [L0, L1, L2] {
            acquired(&mut m, owner, l);
        }
        blocked(&mut m, TaskId(1), L0);
        blocked(&mut m, TaskId(2), L1);
        blocked(&mut m, TaskId(3), L2);
        assert_eq!(eff(&m, owner), 20);
        assert_eq!(m.pi_waiters(owner).top(), Some((L1.index(), 20)));
        assert_eq!(m.unlock(owner, L1), Ok(Some(TaskId(2))));
        check(&m);
        assert_eq!(eff(&m, owner), 15);
        assert_eq!(m.unlock(owner, L2), Ok(Some(TaskId(3))));
        check(&m);
        assert_eq!(eff(&m, owner), 10);
        assert_eq!(m.unlock(owner, L0), Ok(Some(TaskId(1))));
        check(&m);
        assert_eq!(eff(&m, owner), 1);
    }

    #[test]
    fn base_prio_changes_propagate() {
        let mut m = HandOffGraph::<3, 2>::with_base_prios([5, 4, 3]);
        acquired(&mut m, B, L0);
        acquired(&mut m, C, L1);
        blocked(&mut m, B, L1);
        blocked(&mut m, A, L0);
        assert_eq!((eff(&m, B), eff(&m, C)), (5, 5));
        // The blocked top of the chain rises: the chain follows.
        m.set_base_prio(A, 40).unwrap();
        check(&m);
        assert_eq!((eff(&m, B), eff(&m, C)), (40, 40));
        // A boosted task's base drops below its boost: no change.
        assert_eq!(m.set_base_prio(C, 1), Ok(ChainWalk { steps: 1, changed: 0 }));
        assert_eq!(eff(&m, C), 40);
        // ... above it: its own priority wins.
        m.set_base_prio(C, 50).unwrap();
        assert_eq!(eff(&m, C), 50);
        m.set_base_prio(A, 2).unwrap();
        check(&m);
        assert_eq!((eff(&m, A), eff(&m, B), eff(&m, C)), (2, 4, 50));
    }

    #[test]
    fn chain_depth_is_bounded() {
        // Task k owns lock k and (k >= 1) waits on lock k-1: a chain of k
        // locks from task k. Base priority of task k is k; task 17 is 50.
        const N: usize = MAX_PI_CHAIN_DEPTH + 2;
        let mut prios = [0; N];
        for (k, p) in prios.iter_mut().enumerate() {
            *p = k as Prio;
        }
        prios[N - 1] = 50;
        let mut m = HandOffGraph::<N, N>::with_base_prios(prios);
        for k in 0..N {
            acquired(&mut m, TaskId(k as u16), LockId(k as u16));
        }
        for k in 1..N - 1 {
            let done = blocked(&mut m, TaskId(k as u16), LockId(k as u16 - 1));
            assert_eq!(done.steps, k, "a chain of {k} locks visits {k} owners");
        }
        // A chain of exactly MAX_PI_CHAIN_DEPTH locks was accepted and
        // boosted to its end.
        for k in 0..N - 1 {
            assert_eq!(eff(&m, TaskId(k as u16)), MAX_PI_CHAIN_DEPTH as Prio, "task {k}");
        }
        // One more lock is too deep.
        let last = TaskId(N as u16 - 1);
        let err = m.lock(last, LockId(N as u16 - 2)).unwrap_err();
        let mut expected = Chain::new();
        expected.push((last, LockId(N as u16 - 2)));
        for k in (2..N - 1).rev() {
            expected.push((TaskId(k as u16), LockId(k as u16 - 1)));
        }
        assert_eq!(expected.len(), MAX_PI_CHAIN_DEPTH);
        assert_eq!(err, PiError::ChainTooDeep { chain: expected, owner: TaskId(1) });
        // Refused and undone: not queued, no boost left behind.
        check(&m);
        assert_eq!(m.blocked_on(last), None);
        for k in 0..N - 1 {
            assert_eq!(eff(&m, TaskId(k as u16)), MAX_PI_CHAIN_DEPTH as Prio, "task {k}");
        }
    }

    #[test]
    fn deadlock_of_two_equal_priority_tasks() {
        // Equal priorities: the walk changes nothing, yet must find the cycle.
        let mut m = HandOffGraph::<2, 2>::with_base_prios([5, 5]);
        acquired(&mut m, A, L0);
        acquired(&mut m, B, L1);
        blocked(&mut m, A, L1);
        let err = m.lock(B, L0).unwrap_err();
        assert_eq!(err, PiError::Deadlock { cycle: chain_of(&[(B, L0), (A, L1)]) });
        assert_display(
            &err,
            "rtmutex deadlock: task 1 waits for lock 0, held by task 0, which waits for lock 1, held by task 1",
        );
        check(&m);
        assert_eq!(m.blocked_on(B), None);
    }

    #[test]
    fn deadlock_of_three_tasks_is_reported_and_undone() {
        let mut m = HandOffGraph::<3, 3>::with_base_prios([1, 2, 30]);
        acquired(&mut m, A, L0);
        acquired(&mut m, B, L1);
        acquired(&mut m, C, L2);
        blocked(&mut m, A, L1);
        blocked(&mut m, B, L2);
        assert_eq!((eff(&m, A), eff(&m, B), eff(&m, C)), (1, 2, 30));
        let err = m.lock(C, L0).unwrap_err();
        let PiError::Deadlock { cycle } = err else { panic!("expected a deadlock, got {err:?}") };
        assert_eq!(cycle.links(), &[(C, L0), (A, L1), (B, L2)]);
        assert_display(
            &err,
            "rtmutex deadlock: task 2 waits for lock 0, held by task 0, which waits for lock 1, \
             held by task 1, which waits for lock 2, held by task 2",
        );
        // The boosts the walk made on its way round (A and B to 30) are undone.
        check(&m);
        assert_eq!((eff(&m, A), eff(&m, B), eff(&m, C)), (1, 2, 30));
    }

    #[test]
    fn relocking_an_owned_lock_is_a_deadlock_of_one() {
        let mut m = HandOffGraph::<1, 1>::with_base_prios([3]);
        acquired(&mut m, A, L0);
        assert_eq!(m.lock(A, L0), Err(PiError::Deadlock { cycle: chain_of(&[(A, L0)]) }));
        check(&m);
    }

    #[test]
    fn walk_stops_at_a_free_lock() {
        // A graph where the lock a task waits on has no owner (in a kernel
        // whose unlock wakes waiters instead of handing off): nothing to boost.
        let mut m = HandOffGraph::<2, 1>::with_base_prios([9, 1]);
        m.waiters[0].insert(A.index(), 9).unwrap();
        m.blocked_on[A.index()] = Some(L0);
        assert_eq!(walk_chain(&mut m, A, L0), Ok(ChainWalk::default()));
        assert_eq!(propagate_from_lock(&mut m, L0), Ok(ChainWalk::default()));
    }

    #[test]
    fn max_top_waiter_prio_scans_held_locks() {
        let mut m = HandOffGraph::<4, 3>::with_base_prios([1, 8, 6, 7]);
        for l in [L0, L1, L2] {
            acquired(&mut m, A, l);
        }
        blocked(&mut m, B, L0);
        blocked(&mut m, D, L2);
        assert_eq!(max_top_waiter_prio(&m, [L0, L1, L2]), Some(8));
        assert_eq!(max_top_waiter_prio(&m, [L1, L2]), Some(7));
        assert_eq!(max_top_waiter_prio(&m, [L1]), None);
        assert_eq!(compute_effective_prio(&m, A), 8);
    }

    use super::super::test_rng::XorShift;

    /// Independently of the walk: would `task` blocking on `lock` close a
    /// cycle? If so, the cycle as `walk_chain` reports it.
    fn expected_cycle<const T: usize, const L: usize>(
        m: &HandOffGraph<T, L>,
        task: TaskId,
        lock: LockId,
    ) -> Option<Chain> {
        let mut chain = Chain::new();
        chain.push((task, lock));
        let mut lock = lock;
        loop {
            let owner = m.owner_of(lock)?;
            if owner == task {
                return Some(chain);
            }
            lock = m.blocked_on(owner)?;
            assert!(chain.push((owner, lock)), "chains in these models are short");
        }
    }

    /// Random operations on random small graphs; after every one, W, E, A
    /// and the caches are recomputed from scratch.
    fn random_rounds<const T: usize, const L: usize>(seed: u64, rounds: usize, ops: usize, prio_span: usize) {
        let mut rng = XorShift(seed);
        let (mut deadlocks, mut boosts, mut handoffs) = (0, 0, 0);
        for round in 0..rounds {
            let mut prios = [0; T];
            for p in prios.iter_mut() {
                *p = rng.below(prio_span) as Prio;
            }
            let mut m = HandOffGraph::<T, L>::with_base_prios(prios);
            for op in 0..ops {
                let task = TaskId(rng.below(T) as u16);
                let lock = LockId(rng.below(L) as u16);
                let before = m.clone();
                let what = if let Some(waiting_on) = m.blocked_on(task) {
                    match rng.below(3) {
                        0 => {
                            m.abort_wait(task).unwrap();
                            assert!(!m.waiters(waiting_on).contains(task.index()));
                            "abort_wait"
                        }
                        1 => {
                            m.set_base_prio(task, rng.below(prio_span) as Prio).unwrap();
                            "set_base_prio (blocked)"
                        }
                        _ => "nothing",
                    }
                } else {
                    match rng.below(10) {
                        0..=4 => {
                            let cycle = expected_cycle(&m, task, lock);
                            match m.lock(task, lock) {
                                Ok(LockOutcome::Acquired) => assert_eq!(before.owner_of(lock), None),
                                Ok(LockOutcome::Blocked(done)) => {
                                    assert_eq!(cycle, None);
                                    assert_eq!(m.blocked_on(task), Some(lock));
                                    boosts += done.changed;
                                }
                                Err(err) => {
                                    let cycle = cycle.expect("a deadlock only when there is a cycle");
                                    assert_eq!(err, PiError::Deadlock { cycle });
                                    deadlocks += 1;
                                    // Refused: the graph is exactly as before.
                                    for t in 0..T {
                                        let t = TaskId(t as u16);
                                        assert_eq!(m.effective_prio(t), before.effective_prio(t));
                                        assert_eq!(m.blocked_on(t), before.blocked_on(t));
                                    }
                                }
                            }
                            "lock"
                        }
                        5..=7 => {
                            let held = (0..L).map(|l| LockId(l as u16)).find(|&l| m.owner_of(l) == Some(task));
                            if let Some(held) = held {
                                let top = m.waiters(held).top_id();
                                let next = m.unlock(task, held).unwrap();
                                assert_eq!(next.map(TaskId::index), top, "hand-off to the top waiter");
                                handoffs += usize::from(next.is_some());
                            }
                            "unlock"
                        }
                        8 => {
                            m.set_base_prio(task, rng.below(prio_span) as Prio).unwrap();
                            "set_base_prio"
                        }
                        _ => {
                            let was_free = m.owner_of(lock).is_none();
                            assert_eq!(m.try_lock(task, lock), was_free);
                            "try_lock"
                        }
                    }
                };
                if let Err(v) = m.check_invariants() {
                    panic!("seed {seed:#x} round {round} op {op}: {what} by {task} ({lock}): {v:?}");
                }
            }
        }
        // The loops did exercise what they are for.
        assert!(deadlocks > 0 && boosts > 0 && handoffs > 0, "{deadlocks} {boosts} {handoffs}");
    }

    #[test]
    fn random_graphs_keep_the_invariants_small() {
        random_rounds::<3, 2>(0x1234_5678_9abc_def1, 300, 60, 4);
    }

    #[test]
    fn random_graphs_keep_the_invariants_medium() {
        random_rounds::<6, 5>(0x0bad_cafe_f00d_0001, 300, 120, 6);
    }

    #[test]
    fn random_graphs_keep_the_invariants_wide_priorities() {
        random_rounds::<8, 6>(0xdead_beef_0000_0042, 150, 200, 256);
    }
}
