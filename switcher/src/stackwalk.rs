//! Reliable stack walks of the guest from the VMM (issue 26's first
//! piece): the frame-pointer chain of one task's stack, judged reliable
//! only if it ends at the task's known base through known functions.
//! Anything else (an unknown return address, a frame outside the task's
//! stack or below the previous one, a chain longer than any real one, an
//! unreadable word) is unreliable, and unreliable means "not proven".
//!
//! The guest is built with frame pointers (`-Cforce-frame-pointers=yes`,
//! `vmm/build.rs`): every function's frame is `[rbp] = caller's rbp`,
//! `[rbp + 8] = return address`. A task's stack ends at the frame of
//! `lifecycle::task_start`, which `sched_task_trampoline` calls with rbp
//! = 0: the walk is complete when it reads a saved rbp of 0 from a frame
//! whose return address lies in the base function (the trampoline).
//!
//! A switched-out task starts from its saved context
//! ([`switched_out_start`]): `sched_context_switch` pushed rbp, rbx,
//! r12..r15 below its return address, so the saved rsp points at r15.
//!
//! Not yet walked (the task is then unreliable, never wrongly proven):
//! interrupt frames (`arch/entry.rs` pushes the CPU frame and the saved
//! registers on the interrupted task's stack; a return address inside the
//! entry code is reported as [`Why::InterruptFrame`]), and running tasks
//! (their registers need every vCPU held).

use std::ops::Range;

/// Guest memory as the walker reads it.
pub trait StackMem {
    /// The little-endian u64 at guest address `addr`, if readable.
    fn read_u64(&self, addr: u64) -> Option<u64>;
}

/// The longest a symbol without a size is taken to be.
pub const SIZELESS_MAX: u64 = 4096;

/// The guest kernel's functions, by address (from its ELF symbol table).
#[derive(Clone, Debug, Default)]
pub struct FuncTable {
    /// Sorted by start, not overlapping.
    funcs: Vec<(Range<u64>, String)>,
}

impl FuncTable {
    /// From `(start, size, name)` triples. A symbol of size 0 (the
    /// guest's assembly, which sets no `.size`) extends to the next
    /// symbol's start, at most [`SIZELESS_MAX`] bytes, as kallsyms does;
    /// one that would overlap the next is cut there.
    pub fn new(mut funcs: Vec<(u64, u64, String)>) -> Self {
        funcs.sort_by_key(|(start, _, _)| *start);
        let starts: Vec<u64> = funcs.iter().map(|(s, _, _)| *s).collect();
        let mut out = Vec::with_capacity(funcs.len());
        for (i, (start, size, name)) in funcs.into_iter().enumerate() {
            let next = starts[i + 1..].iter().copied().find(|&n| n > start).unwrap_or(u64::MAX);
            let end = if size == 0 { start.saturating_add(SIZELESS_MAX) } else { start.saturating_add(size) };
            let end = end.min(next);
            if end > start {
                out.push((start..end, name));
            }
        }
        Self { funcs: out }
    }

    /// Every symbol of a guest ELF image that lies in an executable
    /// section: its functions (`STT_FUNC`), and the labels of its
    /// assembly, which are untyped and sizeless.
    pub fn from_elf(image: &[u8]) -> Result<Self, object::Error> {
        use object::{Object, ObjectSection, ObjectSymbol, SectionKind, SymbolSection};
        let aligned = crate::elf::AlignedImage::new(image);
        let file = object::File::parse(aligned.bytes())?;
        let in_text = |s: &object::Symbol<'_, '_>| match s.section() {
            SymbolSection::Section(i) => file.section_by_index(i).is_ok_and(|sec| sec.kind() == SectionKind::Text),
            _ => false,
        };
        let funcs = file
            .symbols()
            .filter(|s| in_text(s) && !s.name().is_ok_and(str::is_empty))
            .filter_map(|s| Some((s.address(), s.size(), s.name().ok()?.to_string())))
            .collect();
        Ok(Self::new(funcs))
    }

    /// The function containing `addr`.
    pub fn find(&self, addr: u64) -> Option<&str> {
        let i = self.funcs.partition_point(|(r, _)| r.start <= addr);
        let (r, name) = self.funcs.get(i.checked_sub(1)?)?;
        r.contains(&addr).then_some(name.as_str())
    }

    /// The address range of the function named `name`.
    pub fn range_of(&self, name: &str) -> Option<Range<u64>> {
        self.funcs.iter().find(|(_, n)| n == name).map(|(r, _)| r.clone())
    }
}

/// What a walk needs of one guest kernel image: its functions, where its
/// stacks lie, the base every task's chain ends in, and the code whose
/// frames the walker does not know (the interrupt entry).
#[derive(Clone, Debug)]
pub struct GuestCode {
    pub funcs: FuncTable,
    /// `__stacks_start..__stacks_end` (the linker script's stack region).
    pub stacks: Range<u64>,
    /// `sched_task_trampoline`.
    pub base: Range<u64>,
    /// Every `irq3_*` label: the interrupt entry and exit.
    pub entry: Vec<Range<u64>>,
}

impl GuestCode {
    /// From a guest ELF image; `Err` names what it lacks.
    pub fn from_elf(image: &[u8]) -> Result<Self, String> {
        use object::{Object, ObjectSymbol};
        let funcs = FuncTable::from_elf(image).map_err(|e| format!("not an ELF image: {e}"))?;
        let aligned = crate::elf::AlignedImage::new(image);
        let file = object::File::parse(aligned.bytes()).map_err(|e| format!("not an ELF image: {e}"))?;
        let addr = |name: &str| {
            file.symbols().find(|s| s.name() == Ok(name)).map(|s| s.address()).ok_or(format!("no symbol {name}"))
        };
        let stacks = addr("__stacks_start")?..addr("__stacks_end")?;
        let base = funcs.range_of("sched_task_trampoline").ok_or("no symbol sched_task_trampoline")?;
        let entry = funcs.funcs.iter().filter(|(_, n)| n.starts_with("irq3_")).map(|(r, _)| r.clone()).collect();
        Ok(Self { funcs, stacks, base, entry })
    }

    /// Walks a switched-out task from its saved rsp, within the stacks.
    pub fn walk_switched_out(&self, mem: &dyn StackMem, saved_rsp: u64, max_depth: usize) -> Walk {
        let (rip, fp) = match switched_out_start(mem, saved_rsp) {
            Ok(x) => x,
            Err(why) => return Walk { pcs: Vec::new(), verdict: Err(why) },
        };
        // The return address into the caller of the context switch.
        let b = Bounds { stack: self.stacks.clone(), base: self.base.clone(), unknown_frames: &self.entry, max_depth };
        walk(mem, &self.funcs, &b, rip.wrapping_sub(1), fp)
    }
}

/// Why a walk is not reliable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// A return address (or the start rip) in no known function.
    UnknownAddress(u64),
    /// A frame pointer outside the task's stack, misaligned, or whose
    /// frame does not fit below the stack's end.
    FrameOutsideStack(u64),
    /// A frame pointer not above the previous one: the chain loops.
    NotAscending { fp: u64, previous: u64 },
    /// More frames than `max_depth`.
    TooDeep(usize),
    /// A word of a frame could not be read.
    Unreadable(u64),
    /// The chain ended (saved rbp 0) outside the task's base function.
    EndedOutsideBase(u64),
    /// A return address inside the interrupt entry code: a frame the
    /// walker does not know yet.
    InterruptFrame(u64),
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::UnknownAddress(a) => write!(f, "code address {a:#x} is in no known function"),
            Why::FrameOutsideStack(fp) => write!(f, "frame pointer {fp:#x} is outside the task's stack"),
            Why::NotAscending { fp, previous } => {
                write!(f, "frame pointer {fp:#x} is not above the previous one ({previous:#x}): the chain loops")
            }
            Why::TooDeep(n) => write!(f, "more than {n} frames"),
            Why::Unreadable(a) => write!(f, "stack word at {a:#x} cannot be read"),
            Why::EndedOutsideBase(ret) => write!(f, "the chain ends at {ret:#x}, not in the task trampoline"),
            Why::InterruptFrame(pc) => write!(f, "an interrupt frame (at {pc:#x}), which the walker does not know yet"),
        }
    }
}

/// A walk: the code addresses from the innermost (the start rip) out, and
/// the verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walk {
    pub pcs: Vec<u64>,
    pub verdict: Result<(), Why>,
}

/// What bounds one walk.
pub struct Bounds<'a> {
    /// The task's stack (`start..end`, end exclusive).
    pub stack: Range<u64>,
    /// The function every task's chain must end in.
    pub base: Range<u64>,
    /// Code whose frames the walker does not know (interrupt entry).
    pub unknown_frames: &'a [Range<u64>],
    pub max_depth: usize,
}

/// The `(rip, rbp)` a switched-out task resumes with, from its saved rsp
/// (`sched/switch.rs`: r15, r14, r13, r12, rbx, rbp, return address).
pub fn switched_out_start(mem: &dyn StackMem, saved_rsp: u64) -> Result<(u64, u64), Why> {
    let word = |off: u64| {
        let at = saved_rsp.wrapping_add(off);
        mem.read_u64(at).ok_or(Why::Unreadable(at))
    };
    Ok((word(48)?, word(40)?))
}

/// Walks the frame chain from `rip` (in the innermost function) and `fp`.
pub fn walk(mem: &dyn StackMem, funcs: &FuncTable, b: &Bounds<'_>, rip: u64, fp: u64) -> Walk {
    let mut pcs = vec![rip];
    let verdict = walk_into(mem, funcs, b, rip, fp, &mut pcs);
    Walk { pcs, verdict }
}

fn walk_into(
    mem: &dyn StackMem,
    funcs: &FuncTable,
    b: &Bounds<'_>,
    rip: u64,
    mut fp: u64,
    pcs: &mut Vec<u64>,
) -> Result<(), Why> {
    let known = |pc: u64| -> Result<(), Why> {
        if b.unknown_frames.iter().any(|r| r.contains(&pc)) {
            return Err(Why::InterruptFrame(pc));
        }
        funcs.find(pc).map(|_| ()).ok_or(Why::UnknownAddress(pc))
    };
    known(rip)?;
    let mut previous: Option<u64> = None;
    loop {
        if pcs.len() > b.max_depth {
            return Err(Why::TooDeep(b.max_depth));
        }
        let fits = fp.is_multiple_of(8) && fp >= b.stack.start && fp.checked_add(16).is_some_and(|e| e <= b.stack.end);
        if !fits {
            return Err(Why::FrameOutsideStack(fp));
        }
        if let Some(p) = previous
            && fp <= p
        {
            return Err(Why::NotAscending { fp, previous: p });
        }
        let next = mem.read_u64(fp).ok_or(Why::Unreadable(fp))?;
        let ret = mem.read_u64(fp + 8).ok_or(Why::Unreadable(fp + 8))?;
        // A call's return address points after the call: look it up one
        // byte back, inside the calling instruction.
        let at = ret.wrapping_sub(1);
        if next == 0 {
            pcs.push(ret);
            return if b.base.contains(&at) { Ok(()) } else { Err(Why::EndedOutsideBase(ret)) };
        }
        known(at)?;
        pcs.push(ret);
        previous = Some(fp);
        fp = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Mem(HashMap<u64, u64>);

    impl StackMem for Mem {
        fn read_u64(&self, addr: u64) -> Option<u64> {
            self.0.get(&addr).copied()
        }
    }

    const STACK: Range<u64> = 0x10_0000..0x10_4000;

    fn funcs() -> FuncTable {
        FuncTable::new(vec![
            (0x1000, 0x100, "sched_task_trampoline".into()),
            (0x2000, 0x200, "task_start".into()),
            (0x3000, 0x200, "tester".into()),
            (0x4000, 0x100, "schedule".into()),
            (0x5000, 0x100, "irq3_entry".into()),
        ])
    }

    /// A chain of frames at `fps`, innermost first, each returning into
    /// `rets[i]`, the outermost saving rbp `last_next`.
    fn chain(fps: &[u64], rets: &[u64], last_next: u64) -> Mem {
        let mut m = HashMap::new();
        for (i, (&fp, &ret)) in fps.iter().zip(rets).enumerate() {
            m.insert(fp, fps.get(i + 1).copied().unwrap_or(last_next));
            m.insert(fp + 8, ret);
        }
        Mem(m)
    }

    fn bounds(unknown: &[Range<u64>]) -> Bounds<'_> {
        Bounds { stack: STACK, base: 0x1000..0x1100, unknown_frames: unknown, max_depth: 64 }
    }

    #[test]
    fn a_chain_that_ends_in_the_trampoline_is_reliable() {
        let m = chain(&[0x10_3e00, 0x10_3f00, 0x10_3fe0], &[0x3010, 0x2010, 0x1010], 0);
        let w = walk(&m, &funcs(), &bounds(&[]), 0x4020, 0x10_3e00);
        assert_eq!(w.verdict, Ok(()));
        assert_eq!(w.pcs, vec![0x4020, 0x3010, 0x2010, 0x1010]);
        assert_eq!(funcs().find(0x3010), Some("tester"));
    }

    #[test]
    fn anything_else_is_unreliable_and_says_why() {
        let f = funcs();
        let b = bounds(&[]);
        let fps = [0x10_3e00, 0x10_3f00, 0x10_3fe0];
        // An unknown return address.
        let m = chain(&fps, &[0x3010, 0x9999, 0x1010], 0);
        assert_eq!(walk(&m, &f, &b, 0x4020, fps[0]).verdict, Err(Why::UnknownAddress(0x9998)));
        // An unknown start.
        let m = chain(&fps, &[0x3010, 0x2010, 0x1010], 0);
        assert_eq!(walk(&m, &f, &b, 0x7777, fps[0]).verdict, Err(Why::UnknownAddress(0x7777)));
        // A frame outside the stack, and a misaligned one.
        assert_eq!(walk(&m, &f, &b, 0x4020, 0x20_0000).verdict, Err(Why::FrameOutsideStack(0x20_0000)));
        assert_eq!(walk(&m, &f, &b, 0x4020, 0x10_3e04).verdict, Err(Why::FrameOutsideStack(0x10_3e04)));
        // A loop: the outer frame points back at the inner one.
        let mut m = chain(&fps[..2], &[0x3010, 0x2010], fps[0]);
        m.0.insert(fps[0], fps[1]);
        assert_eq!(walk(&m, &f, &b, 0x4020, fps[0]).verdict, Err(Why::NotAscending { fp: fps[0], previous: fps[1] }));
        // Ended (rbp 0) outside the trampoline.
        let m = chain(&fps[..2], &[0x3010, 0x2010], 0);
        assert_eq!(walk(&m, &f, &b, 0x4020, fps[0]).verdict, Err(Why::EndedOutsideBase(0x2010)));
        // An unreadable word.
        let m = Mem(HashMap::new());
        assert_eq!(walk(&m, &f, &b, 0x4020, fps[0]).verdict, Err(Why::Unreadable(fps[0])));
        // An interrupt frame is not walked (yet).
        let m = chain(&fps, &[0x5010, 0x2010, 0x1010], 0);
        let entry: Range<u64> = 0x5000..0x5100;
        let unknown = std::slice::from_ref(&entry);
        assert_eq!(walk(&m, &f, &bounds(unknown), 0x4020, fps[0]).verdict, Err(Why::InterruptFrame(0x500f)));
    }

    #[test]
    fn sizeless_symbols_reach_the_next_one_and_sized_ones_do_not_overlap() {
        let t = FuncTable::new(vec![
            (0x100, 0, "asm_a".into()),
            (0x140, 0x10, "f".into()),
            (0x150, 0, "asm_b".into()),
            (0x9000, 0x20, "g".into()),
        ]);
        assert_eq!(t.range_of("asm_a"), Some(0x100..0x140));
        assert_eq!(t.range_of("f"), Some(0x140..0x150));
        assert_eq!(t.range_of("asm_b"), Some(0x150..0x150 + SIZELESS_MAX));
        assert_eq!(t.find(0x8000), None);
        assert_eq!(t.find(0x9010), Some("g"));
    }

    #[test]
    fn a_chain_longer_than_the_bound_is_unreliable() {
        let fps: Vec<u64> = (0..10).map(|i| 0x10_0000 + 0x100 * i).collect();
        let rets = vec![0x3010; 10];
        let m = chain(&fps, &rets, 0);
        let b = Bounds { max_depth: 5, ..bounds(&[]) };
        assert_eq!(walk(&m, &funcs(), &b, 0x4020, fps[0]).verdict, Err(Why::TooDeep(5)));
    }

    #[test]
    fn a_switched_out_task_starts_from_its_saved_context() {
        let rsp = 0x10_3e00;
        let m = Mem(HashMap::from([(rsp + 40, 0x10_3e80), (rsp + 48, 0x4042)]));
        assert_eq!(switched_out_start(&m, rsp), Ok((0x4042, 0x10_3e80)));
        assert_eq!(switched_out_start(&Mem(HashMap::new()), rsp), Err(Why::Unreadable(rsp + 48)));
    }
}
