//! The model's atomics: what the protocol cores' `logic::atomic` traits
//! run on in a model check. Every access is a shuttle scheduling point
//! (another model thread may run before it), and may first take an
//! interrupt ([`set_interrupt_hook`]).
//!
//! Memory model: sequentially consistent by default (shuttle's). With
//! [`Tso`] on, stores to the locations made with [`MAtomic::buffered`]
//! follow x86's total store order instead, the one reordering x86 allows
//! (stores elsewhere stay sequentially consistent: a subset of x86's
//! behaviours, so what fails here fails on x86, and the search stays
//! small): a thread's plain stores to them (`store` with any ordering but
//! `SeqCst`, which Rust compiles to `xchg`) wait in its own FIFO store
//! buffer, where its own loads see them first (forwarding)
//! and other threads do not see them yet. The buffer drains, oldest
//! first, at a point the search chooses among that thread's later
//! accesses, and entirely at every locked instruction (`swap`,
//! `compare_exchange`, `fetch_*`), at a `SeqCst` store or [`fence`], and
//! when the thread blocks. So a store followed by a load of another
//! location may be seen in the other order by another CPU (the
//! store-buffering litmus test), exactly as on x86, unless a full barrier
//! lies between them.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use crate::explore::{access, choose};
use crate::logic::atomic::{Atomic, AtomicInt};

/// A value an atomic can hold, as the 64-bit word the model keeps.
pub trait Word: Copy {
    fn to_word(self) -> u64;
    fn from_word(w: u64) -> Self;
}

macro_rules! word_int {
    ($($t:ty),*) => {$(
        impl Word for $t {
            fn to_word(self) -> u64 {
                self as u64
            }
            fn from_word(w: u64) -> Self {
                w as $t
            }
        }
    )*};
}
word_int!(u8, u16, u32, u64, usize);

impl Word for bool {
    fn to_word(self) -> u64 {
        u64::from(self)
    }
    fn from_word(w: u64) -> Self {
        w != 0
    }
}

/// One memory location: its value in a plain cell (model threads are
/// coroutines on one OS thread: nothing runs between two scheduling
/// points but the running thread), and a shuttle atomic beside it whose
/// accesses are the scheduling points.
pub struct Cell64 {
    memory: std::sync::atomic::AtomicU64,
    point: shuttle::sync::atomic::AtomicBool,
}

impl Cell64 {
    fn new(v: u64) -> Self {
        Self { memory: std::sync::atomic::AtomicU64::new(v), point: shuttle::sync::atomic::AtomicBool::new(false) }
    }

    /// One scheduling point (another model thread may run first).
    fn point(&self) {
        access(|| self.point.load(Ordering::SeqCst));
    }
}

/// A model atomic holding a `T`: every access is one scheduling point.
pub struct MAtomic<T> {
    cell: Cell64,
    /// Its stores go through the store buffer under [`Tso`].
    buffered: bool,
    _t: std::marker::PhantomData<T>,
}

std::thread_local! {
    /// The memory model of the exploration running on this OS thread.
    static TSO: Cell<bool> = const { Cell::new(false) };
    /// Called before every access (the soft-mask model delivers
    /// interrupts there).
    static INTERRUPT_HOOK: Cell<Option<fn()>> = const { Cell::new(None) };
}

shuttle::thread_local! {
    /// This model thread's store buffer: (cell address, value), oldest
    /// first.
    static STORE_BUFFER: RefCell<VecDeque<(usize, u64)>> = RefCell::new(VecDeque::new());
}

/// Total store order on, for the explorations that run while the guard
/// lives on this OS thread.
pub struct Tso(());

impl Tso {
    pub fn on() -> Self {
        TSO.with(|t| t.set(true));
        Tso(())
    }
}

impl Drop for Tso {
    fn drop(&mut self) {
        TSO.with(|t| t.set(false));
    }
}

fn tso() -> bool {
    TSO.with(|t| t.get())
}

/// Sets the function called before every model atomic access (None: none).
pub fn set_interrupt_hook(hook: Option<fn()>) {
    INTERRUPT_HOOK.with(|h| h.set(hook));
}

fn before_access() {
    if let Some(hook) = INTERRUPT_HOOK.with(|h| h.get()) {
        hook();
    }
}

/// The cell a buffered store goes to.
fn cell_of(addr: usize) -> &'static Cell64 {
    // SAFETY: buffers only hold addresses of the cells of live `MAtomic`s:
    // a model's atomics live in its world, which outlives its threads, and
    // every thread drains its buffer before it ends (`drain_all` in
    // `crate::kernel`'s thread wrapper).
    unsafe { &*(addr as *const Cell64) }
}

/// Writes this thread's buffered stores to memory, oldest first, now.
fn drain_now() {
    while let Some((addr, v)) = STORE_BUFFER.with(|b| b.borrow_mut().pop_front()) {
        cell_of(addr).memory.store(v, Ordering::SeqCst);
    }
}

/// Drains this thread's store buffer entirely (before it blocks or ends):
/// other threads may run first, then every buffered store lands.
pub fn drain_all() {
    if !tso() {
        return;
    }
    let Some(first) = STORE_BUFFER.with(|b| b.borrow().front().map(|&(a, _)| a)) else { return };
    cell_of(first).point();
    drain_now();
}

/// Lets the search drain some of this thread's oldest buffered stores now.
fn maybe_drain() {
    if !tso() {
        return;
    }
    while STORE_BUFFER.with(|b| !b.borrow().is_empty()) && choose(2) == 1 {
        if let Some((addr, v)) = STORE_BUFFER.with(|b| b.borrow_mut().pop_front()) {
            cell_of(addr).memory.store(v, Ordering::SeqCst);
        }
    }
}

/// A full barrier (`mfence`): drains the store buffer.
pub fn fence() {
    before_access();
    drain_all();
}

impl<T: Word> MAtomic<T> {
    pub fn new(value: T) -> Self {
        Self { cell: Cell64::new(value.to_word()), buffered: false, _t: std::marker::PhantomData }
    }

    /// A location whose plain stores go through the store buffer when
    /// [`Tso`] is on.
    pub fn buffered(value: T) -> Self {
        Self { buffered: true, ..Self::new(value) }
    }

    fn addr(&self) -> usize {
        std::ptr::from_ref(&self.cell) as usize
    }

    /// The value in memory, seen by no particular thread, without a
    /// scheduling point (for checks made where the model is stopped).
    pub fn peek(&self) -> T {
        T::from_word(self.cell.memory.load(Ordering::SeqCst))
    }

    /// A locked read-modify-write: one atomic step that first drains the
    /// store buffer.
    fn rmw(&self, f: impl FnOnce(u64) -> u64) -> u64 {
        before_access();
        self.cell.point();
        if tso() {
            drain_now();
        }
        let old = self.cell.memory.load(Ordering::SeqCst);
        self.cell.memory.store(f(old), Ordering::SeqCst);
        old
    }
}

impl<T: Word> Atomic<T> for MAtomic<T> {
    fn load(&self, _order: Ordering) -> T {
        before_access();
        maybe_drain();
        self.cell.point();
        let addr = self.addr();
        let buffered = STORE_BUFFER.with(|b| b.borrow().iter().rev().find(|(a, _)| *a == addr).map(|&(_, v)| v));
        T::from_word(buffered.unwrap_or_else(|| self.cell.memory.load(Ordering::SeqCst)))
    }

    fn store(&self, value: T, order: Ordering) {
        before_access();
        if tso() && self.buffered && order != Ordering::SeqCst {
            // Into the buffer: nobody else can see it yet, so no
            // scheduling point; draining it is one.
            maybe_drain();
            STORE_BUFFER.with(|b| b.borrow_mut().push_back((self.addr(), value.to_word())));
        } else {
            // `xchg`: locked, it drains the buffer first.
            self.rmw(|_| value.to_word());
        }
    }

    fn swap(&self, value: T, _order: Ordering) -> T {
        T::from_word(self.rmw(|_| value.to_word()))
    }

    fn compare_exchange(&self, current: T, new: T, _s: Ordering, _f: Ordering) -> Result<T, T> {
        let (c, n) = (current.to_word(), new.to_word());
        let old = self.rmw(|v| if v == c { n } else { v });
        if old == c { Ok(T::from_word(old)) } else { Err(T::from_word(old)) }
    }
}

macro_rules! int_rmw {
    ($($t:ty),*) => {$(
        impl AtomicInt<$t> for MAtomic<$t> {
            fn fetch_add(&self, value: $t, _o: Ordering) -> $t {
                <$t>::from_word(self.rmw(|v| (v as $t).wrapping_add(value).to_word()))
            }
            fn fetch_sub(&self, value: $t, _o: Ordering) -> $t {
                <$t>::from_word(self.rmw(|v| (v as $t).wrapping_sub(value).to_word()))
            }
            fn fetch_or(&self, value: $t, _o: Ordering) -> $t {
                <$t>::from_word(self.rmw(|v| ((v as $t) | value).to_word()))
            }
            fn fetch_and(&self, value: $t, _o: Ordering) -> $t {
                <$t>::from_word(self.rmw(|v| ((v as $t) & value).to_word()))
            }
        }
    )*};
}
int_rmw!(u8, u16, u32, u64, usize);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explore::{Bounds, expect_failure, explore};
    use std::sync::Arc;

    /// The store-buffering litmus test: each thread stores its flag, then
    /// loads the other's. Under SC at least one sees the other's store.
    fn store_buffering(with_fence: bool) {
        let x = Arc::new(MAtomic::buffered(0u32));
        let y = Arc::new(MAtomic::buffered(0u32));
        let run = |mine: Arc<MAtomic<u32>>, theirs: Arc<MAtomic<u32>>| {
            shuttle::thread::spawn(move || {
                mine.store(1, Ordering::Release);
                if with_fence {
                    fence();
                }
                let seen = theirs.load(Ordering::Acquire);
                drain_all();
                seen
            })
        };
        let a = run(x.clone(), y.clone());
        let b = run(y, x);
        let (ra, rb) = (a.join().expect("no panic"), b.join().expect("no panic"));
        assert!(ra == 1 || rb == 1, "store buffering: both threads missed the other's store");
    }

    #[test]
    fn sc_never_shows_store_buffering() {
        explore(Bounds::default(), || store_buffering(false));
    }

    #[test]
    fn tso_shows_store_buffering_unless_fenced() {
        let _tso = Tso::on();
        let msg = expect_failure(Bounds::default(), || store_buffering(false));
        assert!(msg.contains("both threads missed"), "{msg}");
        explore(Bounds::default(), || store_buffering(true));
    }
}
