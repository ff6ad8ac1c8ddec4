//! The explorer: every schedule of a small concurrent program, up to a
//! preemption bound, depth first, on top of shuttle's controlled threads.
//!
//! Shuttle runs the program's threads as coroutines and asks a
//! [`Scheduler`] which one runs at every *yield point* (an atomic access,
//! a mutex, `park`, `spawn`, a yield). This scheduler enumerates those
//! choices exhaustively, as CHESS does (Musuvathi and Qadeer, "Iterative
//! context bounding for systematic testing of multithreaded programs"):
//!
//! - switching away from a thread that could go on is a *preemption*; at
//!   most [`Bounds::preemptions`] per schedule. Switching when the running
//!   thread blocks, ends or yields is free, so every schedule with few
//!   preemptions is explored, however many blocking hand-overs it has
//!   (most concurrency bugs need one or two preemptions);
//! - a thread that yields (a spin loop, `yield_now()`) is not chosen
//!   again, nor is any other thread that yielded, while a thread that did
//!   not can run: running a spinner before anything changed would only
//!   repeat the check it just made. Any step that is not a yield clears
//!   the yielders (something may have changed for them); if only
//!   yielders can run, they take turns (and, if none ever stops, the
//!   execution fails at the step bound: a livelock);
//! - the program may also ask for a *data choice* ([`choose`]): a value in
//!   `0..n` that the search enumerates like a thread choice (where an
//!   interrupt arrives, for example);
//! - the search is depth first over the recorded choice points: each
//!   execution replays the previous one's choices up to the deepest point
//!   with an alternative left, takes the next alternative there, and goes
//!   on with first choices. The program must be deterministic given its
//!   choices (shuttle's own primitives are).
//!
//! What it does not model: weak memory (shuttle's atomics are sequentially
//! consistent; the models add x86's store buffer where it matters,
//! `crate::tso`), and time (a timeout never fires by itself).

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;

use shuttle::scheduler::{Schedule, Scheduler, Task, TaskId};
use shuttle::{Config, FailurePersistence, MaxSteps, Runner};

/// How far one exploration goes.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Preemptions per schedule.
    pub preemptions: usize,
    /// Stop after this many executions (the report then says the search was
    /// not complete).
    pub max_executions: usize,
    /// Yield points in one execution before it counts as a livelock (a
    /// failure: some thread spins forever on a condition nobody will make
    /// true).
    pub max_steps: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self { preemptions: 2, max_executions: 2_000_000, max_steps: 20_000 }
    }
}

/// What an exploration covered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Explored {
    /// Executions (distinct schedules) run.
    pub executions: usize,
    /// Every schedule within the preemption bound was run.
    pub complete: bool,
}

impl std::fmt::Display for Explored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} schedules", self.executions)?;
        if !self.complete {
            f.write_str(" (stopped at the execution bound: not exhaustive)")?;
        }
        Ok(())
    }
}

/// One choice point of an execution.
struct Level {
    /// The alternatives, in the order they are tried.
    options: Vec<Alt>,
    /// The one taken in the current execution.
    taken: usize,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Alt {
    Task(TaskId),
    Data(usize),
}

/// The search state, shared between the scheduler (which shuttle owns) and
/// [`choose`] (called by the program).
struct Search {
    levels: Vec<Level>,
    depth: usize,
    preemptions: usize,
    bound: usize,
    executions: usize,
    max_executions: usize,
    exhausted: bool,
    /// Threads that yielded since the last step that was not a yield.
    yielders: Vec<TaskId>,
}

impl Search {
    /// Takes the next alternative at this depth: the recorded one when
    /// replaying, else the first of `options` (a new level).
    fn take(&mut self, options: Vec<Alt>) -> Alt {
        let alt = if let Some(level) = self.levels.get(self.depth) {
            assert_eq!(
                level.options, options,
                "the program is not deterministic: a replayed choice point offers other alternatives"
            );
            level.options[level.taken]
        } else {
            let first = options[0];
            self.levels.push(Level { options, taken: 0 });
            first
        };
        self.depth += 1;
        alt
    }

    /// Moves to the next schedule; false when none is left.
    fn advance(&mut self) -> bool {
        while let Some(level) = self.levels.last_mut() {
            if level.taken + 1 < level.options.len() {
                level.taken += 1;
                return true;
            }
            self.levels.pop();
        }
        false
    }
}

/// Where the running model thread is in an access ([`access`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Point {
    /// Not inside one: every scheduling point is a choice.
    Free,
    /// Before the access: a choice.
    Before,
    /// After it: not a choice (the next access has its own).
    After,
}

thread_local! {
    static POINT: std::cell::Cell<Point> = const { std::cell::Cell::new(Point::Free) };
    /// The search of the exploration running on this OS thread (shuttle
    /// runs every model thread as a coroutine on the caller's thread).
    static SEARCH: RefCell<Option<Rc<RefCell<Search>>>> = const { RefCell::new(None) };
}

struct BoundedDfs(Rc<RefCell<Search>>);

impl Scheduler for BoundedDfs {
    fn new_execution(&mut self) -> Option<Schedule> {
        let mut s = self.0.borrow_mut();
        if s.executions > 0 && !s.advance() {
            s.exhausted = true;
            return None;
        }
        if s.executions >= s.max_executions {
            return None;
        }
        s.executions += 1;
        s.depth = 0;
        s.preemptions = 0;
        s.yielders.clear();
        Some(Schedule::new(0))
    }

    fn next_task(&mut self, runnable: &[&Task], current: Option<TaskId>, yielding: bool) -> Option<TaskId> {
        let mut s = self.0.borrow_mut();
        let ids: Vec<TaskId> = runnable.iter().map(|t| t.id()).collect();
        let cur = current.filter(|c| ids.contains(c));
        // Shuttle's atomics switch before and after each access; only the
        // first is a choice (nothing shared happens before the next one).
        match POINT.with(|p| p.get()) {
            Point::Before => POINT.with(|p| p.set(Point::After)),
            Point::After => {
                POINT.with(|p| p.set(Point::Free));
                if let Some(c) = cur
                    && !yielding
                {
                    return Some(c);
                }
            }
            Point::Free => {}
        }
        match (current, yielding) {
            (Some(c), true) => {
                if !s.yielders.contains(&c) {
                    s.yielders.push(c);
                }
            }
            (Some(_), false) => s.yielders.clear(),
            (None, _) => {}
        }
        // Threads not spinning first; spinners (but the one yielding now)
        // only when nothing else can run; itself only when alone.
        let fresh: Vec<Alt> =
            ids.iter().copied().filter(|id| Some(*id) != cur && !s.yielders.contains(id)).map(Alt::Task).collect();
        let others: Vec<Alt> = ids.iter().copied().filter(|id| Some(*id) != cur).map(Alt::Task).collect();
        let options: Vec<Alt> = match cur {
            // Going on is free; switching is a preemption.
            Some(c) if !yielding => {
                let mut v = vec![Alt::Task(c)];
                if s.preemptions < s.bound {
                    v.extend(if fresh.is_empty() { others } else { fresh });
                }
                v
            }
            // A yield: a free switch.
            Some(c) => match (fresh.is_empty(), others.is_empty()) {
                (false, _) => fresh,
                (true, false) => others,
                (true, true) => vec![Alt::Task(c)],
            },
            // The running thread blocked or ended: a free choice.
            None => {
                if fresh.is_empty() {
                    ids.iter().copied().map(Alt::Task).collect()
                } else {
                    fresh
                }
            }
        };
        let Alt::Task(next) = s.take(options) else { unreachable!("thread choice points hold threads") };
        if cur.is_some_and(|c| c != next) && !yielding {
            s.preemptions += 1;
        }
        Some(next)
    }

    fn next_u64(&mut self) -> u64 {
        panic!("the models take their data choices through explore::choose, not shuttle::rand")
    }
}

/// Runs `op`, one access to a shuttle atomic, as one scheduling point:
/// another thread may run before it, not again after it.
pub fn access<R>(op: impl FnOnce() -> R) -> R {
    POINT.with(|p| p.set(Point::Before));
    let r = op();
    POINT.with(|p| p.set(Point::Free));
    r
}

/// A data choice: a value in `0..n`, every one of which the search tries
/// (in order). Only inside [`explore`].
pub fn choose(n: usize) -> usize {
    assert!(n > 0, "a choice needs at least one alternative");
    if n == 1 {
        return 0;
    }
    SEARCH.with(|s| {
        let s = s.borrow();
        let search = s.as_ref().expect("explore::choose outside an exploration");
        match search.borrow_mut().take((0..n).map(Alt::Data).collect()) {
            Alt::Data(i) => i,
            Alt::Task(_) => unreachable!("data choice points hold data"),
        }
    })
}

/// Runs `program` under every schedule within `bounds`; panics (with the
/// program's own panic message, after shuttle printed the failing
/// schedule) when one execution fails.
pub fn explore<F>(bounds: Bounds, program: F) -> Explored
where
    F: Fn() + Send + Sync + 'static,
{
    run(bounds, FailurePersistence::Print, program)
}

fn run<F>(bounds: Bounds, persistence: FailurePersistence, program: F) -> Explored
where
    F: Fn() + Send + Sync + 'static,
{
    let search = Rc::new(RefCell::new(Search {
        levels: Vec::new(),
        depth: 0,
        preemptions: 0,
        bound: bounds.preemptions,
        executions: 0,
        max_executions: bounds.max_executions,
        exhausted: false,
        yielders: Vec::new(),
    }));
    SEARCH.with(|s| *s.borrow_mut() = Some(search.clone()));
    let mut config = Config::new();
    config.max_steps = MaxSteps::FailAfter(bounds.max_steps);
    config.silence_warnings = true;
    config.failure_persistence = persistence;
    let result = catch_unwind(AssertUnwindSafe(|| Runner::new(BoundedDfs(search.clone()), config).run(program)));
    SEARCH.with(|s| *s.borrow_mut() = None);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    let s = search.borrow();
    Explored { executions: s.executions, complete: s.exhausted }
}

/// Runs `program` under `iterations` random PCT schedules (shuttle's
/// probabilistic concurrency testing, Burckhardt et al.: each finds a bug
/// of depth `depth` with a known probability), for configurations whose
/// bounded search is too large: a sample beside the exhaustive search, not
/// instead of it. The program must take no data choices. Panics like
/// [`explore`] on a failure; returns the executions run.
pub fn sample_pct<F>(depth: usize, iterations: usize, max_steps: usize, program: F) -> usize
where
    F: Fn() + Send + Sync + 'static,
{
    let mut config = Config::new();
    config.max_steps = MaxSteps::FailAfter(max_steps);
    config.silence_warnings = true;
    Runner::new(shuttle::scheduler::PctScheduler::new(depth, iterations), config).run(program)
}

/// Runs [`explore`] expecting a failure (without printing the failing
/// schedule); returns its panic message. Panics if every schedule passed:
/// a check that cannot fail is no check.
pub fn expect_failure<F>(bounds: Bounds, program: F) -> String
where
    F: Fn() + Send + Sync + 'static,
{
    match catch_unwind(AssertUnwindSafe(|| run(bounds, FailurePersistence::None, program))) {
        Ok(explored) => panic!("expected the model check to fail, but all {explored} passed"),
        Err(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "(a panic without a message)".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shuttle::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// The classic lost update: two read-modify-writes that are not atomic.
    fn racy_increments() {
        let n = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let n = n.clone();
                shuttle::thread::spawn(move || {
                    let v = n.load(Ordering::SeqCst);
                    n.store(v + 1, Ordering::SeqCst);
                })
            })
            .collect();
        for h in handles {
            h.join().expect("no panic");
        }
        assert_eq!(n.load(Ordering::SeqCst), 2, "lost update");
    }

    #[test]
    fn a_preemption_finds_the_lost_update_and_none_does_not() {
        let none = explore(Bounds { preemptions: 0, ..Bounds::default() }, racy_increments);
        assert!(none.complete && none.executions > 1, "{none}");
        let msg = expect_failure(Bounds { preemptions: 1, ..Bounds::default() }, racy_increments);
        assert!(msg.contains("lost update"), "{msg}");
    }

    #[test]
    fn data_choices_are_enumerated() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let explored = explore(Bounds::default(), move || {
            let a = choose(3);
            let b = choose(2);
            s.lock().expect("not poisoned").push((a, b));
        });
        assert!(explored.complete);
        let mut seen = seen.lock().expect("not poisoned").clone();
        seen.sort();
        assert_eq!(seen, vec![(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1)]);
    }
}
