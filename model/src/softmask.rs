//! A model CPU with the soft interrupt mask, its interrupt entry and a
//! local APIC: interrupts are raised at any point of the CPU's program
//! (the search chooses when) and delivered at the next instruction
//! boundary, nesting inside whatever runs.
//!
//! What runs is the kernel's own replay core (`logic::softmask`:
//! `record`, `take_highest`, `replay_pending`, `on_interrupt`), and the
//! entry's assembly (`guest/src/arch/entry.rs`) modelled one instruction
//! (or one memory access) per step: the stub (`push 0; push vec; jmp`),
//! the `bts` of the mask, the window and hold logic, the masked path
//! (which is `record`), dispatch, and the exit window (`irq_masked = 0`,
//! the test of `pending_any`, the `iretq`). Every step is a point where an
//! interrupt may be raised and delivered.
//!
//! The LAPIC is a stock KVM LAPIC's: a delivery moves the highest pending
//! vector from IRR to ISR when its priority class (vector >> 4) is above
//! the highest class in service (the processor priority); an EOI retires
//! the highest in-service vector; the spurious vector sets no ISR bit.
//!
//! Checked:
//! - when the exit work runs (where the kernel may switch tasks), no
//!   accepted vector is invisible: none is still in its stub, between
//!   delivery and being recorded or dispatched;
//! - at the end (all raised, the CPU unmasked and idle): nothing in
//!   service or pending, every recorded vector ran exactly once per
//!   recording, and EOIs equal accepted deliveries (the spurious vector's
//!   excepted).

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;

use crate::atomics::{self, MAtomic};
use crate::explore::choose;
use crate::logic::atomic::{Atomic, AtomicInt};
use crate::logic::softmask::{self, SPURIOUS, SoftMaskCpu};

/// A pending-vector word that counts its bits going from clear to set
/// (recordings; a merged delivery sets nothing new).
pub struct PendingWord {
    word: MAtomic<u64>,
    recorded: RefCell<[u32; 64]>,
}

impl PendingWord {
    fn new() -> Self {
        Self { word: MAtomic::new(0), recorded: RefCell::new([0; 64]) }
    }
}

impl Atomic<u64> for PendingWord {
    fn load(&self, o: Ordering) -> u64 {
        self.word.load(o)
    }
    fn store(&self, v: u64, o: Ordering) {
        self.word.store(v, o)
    }
    fn swap(&self, v: u64, o: Ordering) -> u64 {
        self.word.swap(v, o)
    }
    fn compare_exchange(&self, c: u64, n: u64, s: Ordering, f: Ordering) -> Result<u64, u64> {
        self.word.compare_exchange(c, n, s, f)
    }
}

impl AtomicInt<u64> for PendingWord {
    fn fetch_add(&self, v: u64, o: Ordering) -> u64 {
        self.word.fetch_add(v, o)
    }
    fn fetch_sub(&self, v: u64, o: Ordering) -> u64 {
        self.word.fetch_sub(v, o)
    }
    fn fetch_or(&self, v: u64, o: Ordering) -> u64 {
        let old = self.word.fetch_or(v, o);
        let mut rec = self.recorded.borrow_mut();
        for (bit, n) in rec.iter_mut().enumerate() {
            if v & !old & (1 << bit) != 0 {
                *n += 1;
            }
        }
        old
    }
    fn fetch_and(&self, v: u64, o: Ordering) -> u64 {
        self.word.fetch_and(v, o)
    }
}

/// Where an entry is, as the interrupted RIP a nested entry sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pos {
    /// In the task's (or a handler's) code.
    Code,
    /// In a stub, up to and including its `bts`, or in the hold tail:
    /// `irq3_stubs..irq3_window_end`.
    Window,
    /// Past the window: masked path, dispatch, handlers, replay.
    Entry,
    /// In the exit window (`irq3_exit..irq3_exit_end`).
    ExitWindow,
}

/// The LAPIC and the counts the checks read.
struct Lapic {
    irr: [bool; 256],
    isr: [bool; 256],
    accepted: [u32; 256],
    eois: u32,
    /// Vectors still to be raised, in order.
    to_raise: Vec<u8>,
}

impl Lapic {
    fn new(to_raise: &[u8]) -> Self {
        Self { irr: [false; 256], isr: [false; 256], accepted: [0; 256], eois: 0, to_raise: to_raise.to_vec() }
    }

    fn highest(bits: &[bool; 256]) -> Option<u8> {
        (0..256).rev().find(|&v| bits[v]).map(|v| v as u8)
    }

    /// The vector to deliver now, if one may be.
    fn deliverable(&self) -> Option<u8> {
        let v = Self::highest(&self.irr)?;
        match Self::highest(&self.isr) {
            Some(s) if v >> 4 <= s >> 4 => None,
            _ => Some(v),
        }
    }
}

/// The model CPU.
pub struct Cpu {
    masked: MAtomic<u32>,
    pending_any: MAtomic<u32>,
    pending: [PendingWord; 4],
    eoi_owed: MAtomic<u32>,
    hold: MAtomic<u32>,
    lapic: RefCell<Lapic>,
    /// The position of each live frame, innermost last (entries nest).
    stack: RefCell<Vec<(u8, Pos)>>,
    /// The position of the code an interrupt would interrupt now.
    pos: RefCell<Pos>,
    /// Per vector: entries that dispatched it, handler runs.
    dispatched: RefCell<[u32; 256]>,
    ran: RefCell<[u32; 256]>,
    /// Times the exit work ran.
    pub exit_works: Cell<usize>,
}

thread_local! {
    /// The model CPU of the exploration running on this OS thread.
    static CPU: RefCell<Option<Rc<Cpu>>> = const { RefCell::new(None) };
}

impl Cpu {
    /// A CPU, unmasked, that will have `raises` raised during its program
    /// (the search chooses where; [`Cpu::finish`] raises what is left).
    pub fn new(raises: &[u8]) -> Rc<Cpu> {
        let cpu = Rc::new(Cpu {
            masked: MAtomic::new(0),
            pending_any: MAtomic::new(0),
            pending: [PendingWord::new(), PendingWord::new(), PendingWord::new(), PendingWord::new()],
            eoi_owed: MAtomic::new(0),
            hold: MAtomic::new(0),
            lapic: RefCell::new(Lapic::new(raises)),
            stack: RefCell::new(Vec::new()),
            pos: RefCell::new(Pos::Code),
            dispatched: RefCell::new([0; 256]),
            ran: RefCell::new([0; 256]),
            exit_works: Cell::new(0),
        });
        CPU.with(|c| *c.borrow_mut() = Some(cpu.clone()));
        atomics::set_interrupt_hook(Some(interrupt_point));
        cpu
    }

    /// The end of the program: what was not raised yet is raised now (one
    /// per step, in order), everything deliverable is delivered, then the
    /// end state is checked and the model retired.
    pub fn finish(&self) {
        loop {
            let next = {
                let mut l = self.lapic.borrow_mut();
                (!l.to_raise.is_empty()).then(|| l.to_raise.remove(0))
            };
            match next {
                Some(v) => self.lapic.borrow_mut().irr[usize::from(v)] = true,
                None => break,
            }
            self.step();
        }
        self.step();
        atomics::set_interrupt_hook(None);
        CPU.with(|c| *c.borrow_mut() = None);
        self.check_end();
    }

    /// A step that touches nothing shared: an interrupt may come before it.
    fn step(&self) {
        interrupt_point();
    }

    /// One instruction of the task's program.
    pub fn step_public(&self) {
        self.step();
    }

    // --- The task's side: the mask (arch/irqflags.rs) ---

    /// `irqflags::disable`: one store.
    pub fn disable(&self) {
        self.masked.store(1, Ordering::Relaxed);
    }

    /// `irqflags::enable`: `unmask` (store 0, test pending_any), and the
    /// replay loop when something was recorded.
    pub fn enable(&self) {
        if self.unmask() {
            loop {
                self.disable();
                softmask::replay_pending(self);
                if !self.unmask() {
                    return;
                }
            }
        }
    }

    fn unmask(&self) -> bool {
        self.masked.store(0, Ordering::Relaxed);
        self.pending_any.load(Ordering::Relaxed) != 0
    }

    // --- The entry (arch/entry.rs), step by step ---

    fn entry(&self, v: u8) {
        let interrupted = *self.pos.borrow();
        self.stack.borrow_mut().push((v, Pos::Window));
        let at = |p: Pos| {
            *self.pos.borrow_mut() = p;
            if let Some(top) = self.stack.borrow_mut().last_mut() {
                top.1 = p;
            }
        };
        at(Pos::Window);
        // The stub: push 0; push vec; jmp irq3_entry.
        self.step();
        self.step();
        self.step();
        // bts gs:[irq_masked], 0 (the step's interrupt point comes first).
        let was_masked = self.masked.swap(1, Ordering::Relaxed) != 0;
        at(Pos::Entry);
        let in_window = interrupted == Pos::Window;
        let dispatch = if !was_masked {
            if in_window {
                // Record, then the hold tail (inside the window).
                softmask::record(self, v);
                at(Pos::Window);
                self.hold.store(1, Ordering::Relaxed);
                self.step(); // pop rax; add rsp, 16
                self.step(); // iretq
                false
            } else {
                true
            }
        } else if self.hold.load(Ordering::Relaxed) != 0 && !in_window {
            self.hold.store(0, Ordering::Relaxed);
            true
        } else {
            softmask::record(self, v);
            self.step(); // iretq
            false
        };
        if dispatch {
            self.dispatched.borrow_mut()[usize::from(v)] += 1;
            softmask::on_interrupt(self, v);
            // The exit window.
            loop {
                at(Pos::ExitWindow);
                self.masked.store(0, Ordering::Relaxed);
                if self.pending_any.load(Ordering::Relaxed) == 0 {
                    self.step(); // restore the registers; iretq
                    break;
                }
                self.masked.store(1, Ordering::Relaxed);
                at(Pos::Entry);
                softmask::replay_pending(self);
            }
        }
        self.stack.borrow_mut().pop();
        *self.pos.borrow_mut() = interrupted;
    }

    // --- Checks ---

    /// The end state's checks (the CPU unmasked, nothing left to raise).
    fn check_end(&self) {
        let l = self.lapic.borrow();
        assert!(l.to_raise.is_empty(), "the program ended before every interrupt was raised");
        if let Some(v) = Lapic::highest(&l.isr) {
            panic!(
                "vector {v:#x} is still in service at the end: its priority class is held back for good \
                 ({} EOIs for {} accepted deliveries)",
                l.eois,
                l.accepted.iter().enumerate().filter(|&(v, _)| v != usize::from(SPURIOUS)).map(|(_, n)| n).sum::<u32>()
            );
        }
        assert!(Lapic::highest(&l.irr).is_none(), "a vector was never delivered");
        let accepted: u32 =
            l.accepted.iter().enumerate().filter(|&(v, _)| v != usize::from(SPURIOUS)).map(|(_, n)| n).sum();
        assert_eq!(l.eois, accepted, "EOIs differ from accepted deliveries");
        for v in 0..256 {
            let word = &self.pending[v / 64];
            assert_eq!(word.word.peek() & (1 << (v % 64)), 0, "vector {v:#x} recorded and never run");
            let rec = word.recorded.borrow()[v % 64];
            let (disp, ran) = (self.dispatched.borrow()[v], self.ran.borrow()[v]);
            assert_eq!(ran, rec + disp, "vector {v:#x}: {ran} handler runs for {rec} recordings and {disp} dispatches");
        }
        assert_eq!(self.hold.peek(), 0, "the entry hold is left set");
    }
}

/// Before every step of the CPU: a raise the search chooses to make now,
/// then the delivery of whatever may be delivered (nested here).
fn interrupt_point() {
    let Some(cpu) = CPU.with(|c| c.borrow().clone()) else { return };
    let raise = {
        let l = cpu.lapic.borrow();
        !l.to_raise.is_empty()
    } && choose(2) == 1;
    if raise {
        let mut l = cpu.lapic.borrow_mut();
        let v = l.to_raise.remove(0);
        l.irr[usize::from(v)] = true;
    }
    let deliver = cpu.lapic.borrow().deliverable();
    if let Some(v) = deliver {
        {
            let mut l = cpu.lapic.borrow_mut();
            l.irr[usize::from(v)] = false;
            if v != SPURIOUS {
                l.isr[usize::from(v)] = true;
            }
            l.accepted[usize::from(v)] += 1;
        }
        cpu.entry(v);
    }
}

impl SoftMaskCpu for Cpu {
    type U32 = MAtomic<u32>;
    type U64 = PendingWord;

    fn pending(&self) -> &[PendingWord; 4] {
        &self.pending
    }

    fn pending_any(&self) -> &MAtomic<u32> {
        &self.pending_any
    }

    fn eoi_owed(&self) -> &MAtomic<u32> {
        &self.eoi_owed
    }

    /// The kernel's handlers (`guest/src/irq/dispatch.rs`): their work,
    /// then an EOI (but for the spurious vector).
    fn handler(&self, vector: u8) {
        self.ran.borrow_mut()[usize::from(vector)] += 1;
        self.step();
        if vector != SPURIOUS {
            self.eoi();
        }
    }

    /// Where the kernel may switch tasks: every accepted vector must be
    /// recorded or dispatched by now.
    fn exit_work(&self) {
        self.exit_works.set(self.exit_works.get() + 1);
        for &(v, pos) in self.stack.borrow().iter() {
            assert!(
                pos != Pos::Window,
                "vector {v:#x} was accepted but not yet recorded when the exit work ran (it may switch tasks: the \
                 vector would wait, in service, for this task to run again)"
            );
        }
        self.step();
    }

    fn eoi(&self) {
        self.step();
        let mut l = self.lapic.borrow_mut();
        l.eois += 1;
        if let Some(v) = Lapic::highest(&l.isr) {
            l.isr[usize::from(v)] = false;
        }
    }

    fn set_replaying(&self, _replaying: bool) {}
}
