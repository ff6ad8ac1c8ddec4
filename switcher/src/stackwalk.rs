//! Reliable stack walks of the guest from the VMM: the frame-pointer
//! chain of one task's stack, judged reliable only if it ends at the
//! task's known base through known frames. Anything else (an unknown
//! return address, a frame outside the task's own stack or below the
//! previous one, a function that keeps no frame record, a chain longer
//! than any real one, an unreadable word) is unreliable, and unreliable
//! means "not proven" (Linux's `arch_stack_walk_reliable()` contract).
//!
//! The guest is built with frame pointers (`-Cforce-frame-pointers=yes`,
//! `vmm/build.rs`): every function's frame is `[rbp] = caller's rbp`,
//! `[rbp + 8] = return address`. A spawned task's stack ends at the frame
//! of `lifecycle::task_start`, which `sched_task_trampoline` calls with
//! rbp = 0: its walk is complete when it reads a saved rbp of 0 from a
//! frame whose return address lies in the trampoline. A CPU's idle task
//! (its boot context) ends at `kernel_main`, entered from ring 0 with
//! rbp = 0 and a return address of 0 ([`ChainEnd::BootEntry`]).
//!
//! Where a walk starts:
//! - a switched-out task, from its saved context ([`switched_out_start`]):
//!   `sched_context_switch` pushed rbp, rbx, r12..r15 below its return
//!   address, so the saved rsp points at r15;
//! - a running task, from its vCPU's registers ([`Regs`]), caught at any
//!   instruction: see "Interrupted contexts".
//!
//! # Interrupted contexts
//!
//! A vCPU held by the VMM, and a task an interrupt came to, stopped at an
//! arbitrary instruction. The chain from its rbp is complete except in a
//! function's prologue or epilogue (and in code LLVM's shrink-wrapping
//! runs before the prologue or after the epilogue), where rbp is still
//! (or again) the caller's frame and the caller's return address lies at
//! `[rsp]` or `[rsp + 8]`, not in the chain. Those two words are reported
//! as [`FrameKind::MaybeReturn`] when they are code addresses: the
//! switch's checks treat them as frames (a stale word can only refuse a
//! switch, never allow one). A function that keeps no frame record at all
//! (assembly, or precompiled code without frame pointers: one whose first
//! bytes hold no `push rbp; mov rbp, rsp`) can hide its caller's frame
//! anywhere: a walk through one is unreliable. The exceptions are the
//! assembly whose frames the walker knows:
//! - the interrupt entry (`arch/entry.rs`): `irq3_dispatch` and the exit
//!   window's replay call a Rust handler with rsp at the `TrapFrame` (15
//!   saved registers, vector, error code, the CPU's rip, cs, rflags, rsp,
//!   ss), so a frame returning to `irq3_exit` or `irq3_replay_ret` lies 16
//!   bytes below a trap frame, and the walk goes on from the interrupted
//!   context it saved (which must be CPL3 and on the same stack, above the
//!   trap frame). A rip anywhere else in the entry is unreliable;
//! - `shim_enter`, the leaf that enters the ring-0 shim: no stack use,
//!   the return address at `[rsp]`;
//! - the trampoline before it calls (`base` start): a new task's
//!   first instructions.
//!
//! A vCPU held inside the ring-0 shim runs on its CPU's ring-0 stack; the
//! caller turns the CPL3 context the CPU saved there into [`Regs`]
//! (`vmm/src/switch/fast.rs`).

use std::ops::Range;

/// Guest memory as the walker reads it.
pub trait StackMem {
    /// The little-endian u64 at guest address `addr`, if readable.
    fn read_u64(&self, addr: u64) -> Option<u64>;
}

/// The longest a symbol without a size is taken to be.
pub const SIZELESS_MAX: u64 = 4096;
/// How far into a function its frame-pointer prologue may lie (after
/// shrink-wrapped early exits).
pub const PROLOGUE_SEARCH: usize = 64;
/// `push rbp; mov rbp, rsp`.
const FP_PROLOGUE: [u8; 4] = [0x55, 0x48, 0x89, 0xe5];

/// One function (or assembly label) of the guest kernel.
#[derive(Clone, Debug)]
struct Func {
    range: Range<u64>,
    name: String,
    /// Keeps a frame record (`push rbp; mov rbp, rsp`): a sized function
    /// whose first [`PROLOGUE_SEARCH`] bytes hold the prologue.
    frame: bool,
}

/// The guest kernel's functions, by address (from its ELF symbol table).
#[derive(Clone, Debug, Default)]
pub struct FuncTable {
    /// Sorted by start, not overlapping.
    funcs: Vec<Func>,
    /// Each function's start, in the same order: the lookup's binary
    /// search touches these 8 bytes a function, not a whole [`Func`]
    /// (the fast switch walks every stack in its blackout, with cold
    /// caches).
    starts: Vec<u64>,
}

impl FuncTable {
    /// From `(start, size, name)` triples. A symbol of size 0 (the
    /// guest's assembly, which sets no `.size`) extends to the next
    /// symbol's start, at most [`SIZELESS_MAX`] bytes, as kallsyms does;
    /// one that would overlap the next is cut there; one inside a sized
    /// function is a label of that function's inline assembly and is
    /// left out. Sized functions are taken to keep frame records,
    /// sizeless ones not ([`Self::mark_frames`] looks at the bytes).
    pub fn new(mut funcs: Vec<(u64, u64, String)>) -> Self {
        funcs.sort_by_key(|(start, size, _)| (*start, std::cmp::Reverse(*size)));
        let sized: Vec<Range<u64>> =
            funcs.iter().filter(|f| f.1 > 0).map(|(s, size, _)| *s..s.saturating_add(*size)).collect();
        let funcs: Vec<(u64, u64, String)> = funcs
            .into_iter()
            .filter(|(start, size, _)| *size > 0 || !sized.iter().any(|r| r.contains(start)))
            .collect();
        // Symbols at one address: a sized function first, else the one
        // that names what starts there rather than what ended there.
        let mut deduped: Vec<(u64, u64, String)> = Vec::with_capacity(funcs.len());
        for f in funcs {
            match deduped.last_mut() {
                Some(last) if last.0 == f.0 => {
                    if last.1 == 0 && f.1 == 0 && last.2.ends_with("_end") && !f.2.ends_with("_end") {
                        *last = f;
                    }
                }
                _ => deduped.push(f),
            }
        }
        let funcs = deduped;
        let starts: Vec<u64> = funcs.iter().map(|(s, _, _)| *s).collect();
        let mut out = Vec::with_capacity(funcs.len());
        for (i, (start, size, name)) in funcs.into_iter().enumerate() {
            let next = starts[i + 1..].iter().copied().find(|&n| n > start).unwrap_or(u64::MAX);
            let end = if size == 0 { start.saturating_add(SIZELESS_MAX) } else { start.saturating_add(size) };
            let end = end.min(next);
            if end > start && out.last().is_none_or(|f: &Func| f.range.end <= start) {
                out.push(Func { range: start..end, name, frame: size > 0 });
            }
        }
        let starts = out.iter().map(|f| f.range.start).collect();
        Self { funcs: out, starts }
    }

    /// Marks which sized functions keep a frame record, from their
    /// bytes (`code(start, len)`: the text there, if the image has it).
    pub fn mark_frames(&mut self, code: impl Fn(u64, usize) -> Option<Vec<u8>>) {
        for f in self.funcs.iter_mut().filter(|f| f.frame) {
            let len = (f.range.end - f.range.start).min(PROLOGUE_SEARCH as u64) as usize;
            f.frame = code(f.range.start, len).is_some_and(|b| b.windows(4).any(|w| w == FP_PROLOGUE));
        }
    }

    /// Every symbol of a guest ELF image that lies in an executable
    /// section: its functions (`STT_FUNC`), and the labels of its
    /// assembly, which are untyped and sizeless; which ones keep frame
    /// records, from the section bytes.
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
        let mut table = Self::new(funcs);
        let texts: Vec<(u64, &[u8])> = file
            .sections()
            .filter(|s| s.kind() == SectionKind::Text)
            .filter_map(|s| Some((s.address(), s.data().ok()?)))
            .collect();
        table.mark_frames(|start, len| {
            texts.iter().find_map(|(base, data)| {
                let off = usize::try_from(start.checked_sub(*base)?).ok()?;
                data.get(off..off.checked_add(len)?).map(<[u8]>::to_vec)
            })
        });
        Ok(table)
    }

    fn func(&self, addr: u64) -> Option<&Func> {
        let i = self.starts.partition_point(|&start| start <= addr);
        let f = self.funcs.get(i.checked_sub(1)?)?;
        f.range.contains(&addr).then_some(f)
    }

    /// The function containing `addr`.
    pub fn find(&self, addr: u64) -> Option<&str> {
        self.func(addr).map(|f| f.name.as_str())
    }

    /// Whether the function containing `addr` keeps a frame record.
    pub fn keeps_frame(&self, addr: u64) -> bool {
        self.func(addr).is_some_and(|f| f.frame)
    }

    /// The address range of the function named `name`.
    pub fn range_of(&self, name: &str) -> Option<Range<u64>> {
        self.funcs.iter().find(|f| f.name == name).map(|f| f.range.clone())
    }
}

/// Equal stacks laid out one after another (a static array of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackArray {
    pub base: u64,
    /// Bytes from one stack's start to the next.
    pub stride: u64,
    /// Usable bytes at the top of each stride (below them: a guard).
    pub size: u64,
    pub count: u64,
}

impl StackArray {
    /// The `i`th stack (`start..top`), if there is one.
    pub fn get(&self, i: u64) -> Option<Range<u64>> {
        if i >= self.count {
            return None;
        }
        let top = self.base.checked_add(self.stride.checked_mul(i + 1)?)?;
        Some(top.checked_sub(self.size)?..top)
    }

    /// Which stack holds `addr`.
    pub fn index_of(&self, addr: u64) -> Option<u64> {
        let i = addr.checked_sub(self.base)? / self.stride.max(1);
        self.get(i).filter(|r| r.contains(&addr)).map(|_| i)
    }
}

/// What a walk needs of one guest kernel image: its functions, where its
/// stacks lie, the bases every chain ends in, and the assembly whose
/// frames it knows.
#[derive(Clone, Debug)]
pub struct GuestCode {
    pub funcs: FuncTable,
    /// `__stacks_start..__stacks_end` (the linker script's stack region).
    pub stacks: Range<u64>,
    /// `sched_task_trampoline`.
    pub base: Range<u64>,
    /// Every `irq3_*` label: the interrupt entry and exit.
    pub entry: Vec<Range<u64>>,
    /// Return addresses of the entry's calls into a Rust handler, with rsp
    /// at the trap frame (`irq3_exit`, `irq3_replay_ret`).
    pub irq_returns: Vec<u64>,
    /// `shim_enter` through its `ud2; ret` (`shim_call_ud2`): the
    /// frameless leaf that enters the ring-0 shim.
    pub shim_enter: Range<u64>,
    /// `irq3_stubs..irq3_stubs_end`: the per-vector stubs (`push 0`,
    /// `push vector`, `jmp irq3_entry`), and `irq3_entry`'s first two
    /// instructions (`irq3_entry`, `irq3_window_end`), before which the
    /// entry has pushed nothing of its own.
    pub irq_stubs: Range<u64>,
    pub irq_entry_head: [u64; 2],
    /// `shim_gate..shim_gate_services`: the gate and its halt path, where
    /// rbp is still the CPL3 caller's.
    pub shim_halt: Range<u64>,
    /// Spawned tasks' stacks, by task slot (`sched_task_stacks`).
    pub task_stacks: StackArray,
    /// The CPUs' boot stacks: their idle tasks' (`BOOT_STACKS`).
    pub boot_stacks: StackArray,
    /// The CPUs' ring-0 stacks (`shim_ring0_stacks`).
    pub ring0_stacks: StackArray,
    /// `switch_serialize_iret`: one `iretq`, where the VMM resumes a held
    /// vCPU to serialize it (`vmm/src/switch/fast.rs`).
    pub serialize_iret: u64,
}

/// Bytes of a trap frame the interrupt entry builds.
pub const TRAP_FRAME_BYTES: u64 = 22 * 8;
/// A spawned task's stack guard (unmapped) below its stack, inside its
/// stride of `sched_task_stacks`.
pub const TASK_STACK_GUARD: u64 = crate::abi::task_word::STACK_GUARD;

impl GuestCode {
    /// From a guest ELF image; `Err` names what it lacks.
    pub fn from_elf(image: &[u8]) -> Result<Self, String> {
        use object::{Object, ObjectSymbol};
        let funcs = FuncTable::from_elf(image).map_err(|e| format!("not an ELF image: {e}"))?;
        let aligned = crate::elf::AlignedImage::new(image);
        let file = object::File::parse(aligned.bytes()).map_err(|e| format!("not an ELF image: {e}"))?;
        let sym = |name: &str| {
            file.symbols()
                .find(|s| s.name() == Ok(name))
                .map(|s| (s.address(), s.size()))
                .ok_or(format!("no symbol {name}"))
        };
        let addr = |name: &str| sym(name).map(|s| s.0);
        let array = |name: &str, count: u64, guard: u64| -> Result<StackArray, String> {
            let (base, size) = sym(name)?;
            let stride = size / count.max(1);
            if stride <= guard || !stride.is_multiple_of(16) {
                return Err(format!("symbol {name} ({size} bytes) is no array of {count} stacks"));
            }
            Ok(StackArray { base, stride, size: stride - guard, count })
        };
        let stacks = addr("__stacks_start")?..addr("__stacks_end")?;
        let base = funcs.range_of("sched_task_trampoline").ok_or("no symbol sched_task_trampoline")?;
        let entry = funcs.funcs.iter().filter(|f| f.name.starts_with("irq3_")).map(|f| f.range.clone()).collect();
        let cpus = crate::abi::MAX_CPUS as u64;
        Ok(Self {
            stacks,
            base,
            entry,
            irq_returns: vec![addr("irq3_exit")?, addr("irq3_replay_ret")?],
            shim_enter: addr("shim_enter")?..addr("shim_call_ud2")? + 3,
            irq_stubs: addr("irq3_stubs")?..addr("irq3_stubs_end")?,
            irq_entry_head: [addr("irq3_entry")?, addr("irq3_window_end")?],
            shim_halt: addr("shim_gate")?..addr("shim_gate_services")?,
            task_stacks: array("sched_task_stacks", crate::abi::task_word::SPAWNED_SLOTS as u64, TASK_STACK_GUARD)?,
            boot_stacks: array("BOOT_STACKS", cpus, 0)?,
            ring0_stacks: array("shim_ring0_stacks", cpus, 0)?,
            serialize_iret: addr("switch_serialize_iret")?,
            funcs,
        })
    }

    /// The stack of task directory slot `slot` (spawned tasks, then the
    /// CPUs' idle tasks), and where its chain ends.
    pub fn task_stack(&self, slot: usize) -> Option<(Range<u64>, ChainEnd)> {
        let spawned = crate::abi::task_word::SPAWNED_SLOTS;
        match slot.checked_sub(spawned) {
            None => Some((self.task_stacks.get(slot as u64)?, ChainEnd::Trampoline(self.base.clone()))),
            Some(cpu) => Some((self.boot_stacks.get(cpu as u64)?, ChainEnd::BootEntry)),
        }
    }

    fn walker<'a>(&'a self, mem: &'a dyn StackMem, stack: Range<u64>, end: ChainEnd, max_depth: usize) -> Walker<'a> {
        Walker { mem, code: self, stack, end, max_depth, frames: Vec::new(), interrupts: 0 }
    }

    /// Walks a switched-out task from its saved rsp, within `stack`.
    pub fn walk_switched_out(
        &self,
        mem: &dyn StackMem,
        saved_rsp: u64,
        stack: Range<u64>,
        end: ChainEnd,
        max_depth: usize,
    ) -> Walk {
        let mut w = self.walker(mem, stack, end, max_depth);
        let verdict = w.switched_out(saved_rsp);
        w.finish(verdict)
    }

    /// Walks a running task from where its CPU stopped (CPL3 registers),
    /// within `stack`.
    pub fn walk_running(
        &self,
        mem: &dyn StackMem,
        regs: Regs,
        stack: Range<u64>,
        end: ChainEnd,
        max_depth: usize,
    ) -> Walk {
        let mut w = self.walker(mem, stack, end, max_depth);
        let verdict = w.context(regs);
        w.finish(verdict)
    }

    /// The CPL3 context of a vCPU held inside the ring-0 shim: only on its
    /// halt path (the gate's assembly, which keeps the CPL3 rbp), from the
    /// interrupt frame the CPU pushed at the top of CPU `cpu`'s ring-0
    /// stack. Anywhere else in ring 0 (a service in Rust, an exception,
    /// the halt IDT's stubs) is unreliable.
    pub fn shim_caller(&self, mem: &dyn StackMem, cpu: u64, regs: Regs) -> Result<Regs, Why> {
        if !self.shim_halt.contains(&regs.rip) {
            return Err(Why::InRing0(regs.rip));
        }
        let top = self.ring0_stacks.get(cpu).ok_or(Why::InRing0(regs.rip))?.end & !15;
        let word = |i: u64| {
            let at = top - 40 + 8 * i;
            mem.read_u64(at).ok_or(Why::Unreadable(at))
        };
        let (rip, cs, rsp) = (word(0)?, word(1)?, word(3)?);
        if cs & 3 != 3 {
            return Err(Why::InRing0(regs.rip));
        }
        Ok(Regs { rip, rsp, rbp: regs.rbp })
    }
}

/// Where a task's chain must end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainEnd {
    /// A frame saving rbp 0 whose return address lies in the trampoline.
    Trampoline(Range<u64>),
    /// A frame saving rbp 0 with return address 0 (`kernel_main`).
    BootEntry,
}

/// Registers a walk starts from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    pub rip: u64,
    pub rsp: u64,
    pub rbp: u64,
}

/// Why a walk is not reliable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// A return address (or the start rip) in no known function.
    UnknownAddress(u64),
    /// A frame pointer outside the task's stack, misaligned, or whose
    /// frame does not fit below the stack's end.
    FrameOutsideStack(u64),
    /// A stack pointer outside the task's stack.
    StackPointerOutside(u64),
    /// A frame pointer not above the previous one: the chain loops.
    NotAscending { fp: u64, previous: u64 },
    /// More frames than `max_depth`.
    TooDeep(usize),
    /// A word of a frame could not be read.
    Unreadable(u64),
    /// The chain ended (saved rbp 0) outside the task's base.
    EndedOutsideBase(u64),
    /// A return address inside the interrupt entry that is not one of its
    /// handler calls.
    InterruptFrame(u64),
    /// Code that keeps no frame record (assembly the walker does not
    /// know, or code built without frame pointers).
    NoFrameRecord(u64),
    /// An interrupted context that is not CPL3 on the task's own stack.
    BadTrapFrame(u64),
    /// A vCPU in ring 0 outside the shim's halt path.
    InRing0(u64),
    /// Marked on its CPU, but no held vCPU runs on its stack (a context
    /// switch in progress).
    NoVcpuOnItsStack,
    /// A held vCPU (its stack pointer) runs on the stack of a task not
    /// marked on its CPU.
    VcpuOnItsStack(u64),
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::UnknownAddress(a) => write!(f, "code address {a:#x} is in no known function"),
            Why::FrameOutsideStack(fp) => write!(f, "frame pointer {fp:#x} is outside the task's stack"),
            Why::StackPointerOutside(sp) => write!(f, "stack pointer {sp:#x} is outside the task's stack"),
            Why::NotAscending { fp, previous } => {
                write!(f, "frame pointer {fp:#x} is not above the previous one ({previous:#x}): the chain loops")
            }
            Why::TooDeep(n) => write!(f, "more than {n} frames"),
            Why::Unreadable(a) => write!(f, "stack word at {a:#x} cannot be read"),
            Why::EndedOutsideBase(ret) => write!(f, "the chain ends at {ret:#x}, not at the task's base"),
            Why::InterruptFrame(pc) => write!(f, "a frame in the interrupt entry at {pc:#x} the walker does not know"),
            Why::NoFrameRecord(pc) => write!(f, "code at {pc:#x} keeps no frame record"),
            Why::BadTrapFrame(at) => write!(f, "the trap frame at {at:#x} is not a CPL3 context on the task's stack"),
            Why::InRing0(rip) => write!(f, "the vCPU is in ring 0 at {rip:#x}, outside the shim's halt path"),
            Why::NoVcpuOnItsStack => write!(f, "it is marked on its CPU, but no held vCPU runs on its stack"),
            Why::VcpuOnItsStack(sp) => {
                write!(f, "a held vCPU runs on its stack (stack pointer {sp:#x}), but it is not marked on its CPU")
            }
        }
    }
}

/// How a walk found a code address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// Where execution stopped (a vCPU's, or an interrupted context's
    /// rip): the code at that address runs next.
    Rip,
    /// A return address from a frame record: its caller is inside the
    /// instruction before it.
    Return,
    /// A code address at an interrupted context's `[rsp]` or `[rsp + 8]`:
    /// the return address of a function caught in its prologue or
    /// epilogue, or a stale word. Checked like a return address, never
    /// walked.
    MaybeReturn,
}

/// One code address of a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    pub pc: u64,
    pub kind: FrameKind,
}

impl Frame {
    /// The address of the code this frame is in: the rip, or the byte
    /// before a return address (inside the call).
    pub fn code_addr(&self) -> u64 {
        match self.kind {
            FrameKind::Rip => self.pc,
            FrameKind::Return | FrameKind::MaybeReturn => self.pc.wrapping_sub(1),
        }
    }
}

/// A walk: the code addresses from the innermost out, the interrupted
/// contexts it went through, and the verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Walk {
    pub frames: Vec<Frame>,
    pub interrupts: u32,
    pub verdict: Result<(), Why>,
}

impl Walk {
    /// The frames' addresses, without the maybe-return words.
    pub fn pcs(&self) -> Vec<u64> {
        self.frames.iter().filter(|f| f.kind != FrameKind::MaybeReturn).map(|f| f.pc).collect()
    }
}

/// One walk in progress.
struct Walker<'a> {
    mem: &'a dyn StackMem,
    code: &'a GuestCode,
    stack: Range<u64>,
    end: ChainEnd,
    max_depth: usize,
    frames: Vec<Frame>,
    interrupts: u32,
}

impl Walker<'_> {
    fn finish(self, verdict: Result<(), Why>) -> Walk {
        Walk { frames: self.frames, interrupts: self.interrupts, verdict }
    }

    fn read(&self, at: u64) -> Result<u64, Why> {
        self.mem.read_u64(at).ok_or(Why::Unreadable(at))
    }

    fn push(&mut self, pc: u64, kind: FrameKind) -> Result<(), Why> {
        if self.frames.len() >= self.max_depth {
            return Err(Why::TooDeep(self.max_depth));
        }
        self.frames.push(Frame { pc, kind });
        Ok(())
    }

    /// A code address a walk goes through: known, keeping a frame record.
    fn known(&self, frame: Frame) -> Result<(), Why> {
        let at = frame.code_addr();
        if self.code.entry.iter().any(|r| r.contains(&at)) {
            return Err(Why::InterruptFrame(at));
        }
        match self.code.funcs.func(at) {
            None => Err(Why::UnknownAddress(at)),
            Some(f) if !f.frame => Err(Why::NoFrameRecord(at)),
            Some(_) => Ok(()),
        }
    }

    fn switched_out(&mut self, saved_rsp: u64) -> Result<(), Why> {
        let (ret, fp) = switched_out_start(self.mem, saved_rsp)?;
        // A task that never ran: the initial frame returns into the
        // trampoline's start with rbp 0.
        if let ChainEnd::Trampoline(base) = &self.end
            && ret == base.start
            && fp == 0
        {
            return self.push(ret, FrameKind::Rip);
        }
        let frame = Frame { pc: ret, kind: FrameKind::Return };
        self.known(frame)?;
        self.push(ret, FrameKind::Return)?;
        self.chain(fp, saved_rsp)
    }

    /// An interrupted (or held) context at CPL3 on this task's stack.
    fn context(&mut self, regs: Regs) -> Result<(), Why> {
        let Regs { rip, rsp, rbp } = regs;
        if !(rsp >= self.stack.start && rsp.checked_add(16).is_some_and(|e| e <= self.stack.end)) {
            return Err(Why::StackPointerOutside(rsp));
        }
        // Stopped where the CPU's interrupt frame lies at a known offset
        // from rsp and rbp is still the interrupted code's: in a vector's
        // stub, at the entry's first two instructions, or at the
        // serializing stub the VMM resumed it at (not run yet).
        let c = self.code;
        let frame_at = if c.irq_stubs.contains(&rip) {
            Some(match (rip - c.irq_stubs.start) % 16 {
                0 => 0,
                2 => 8,
                _ => 16,
            })
        } else if c.irq_entry_head.contains(&rip) {
            Some(16)
        } else if rip == c.serialize_iret {
            Some(0)
        } else {
            None
        };
        if let Some(off) = frame_at {
            let at = rsp + off;
            let (irip, cs, irsp) = (self.read(at)?, self.read(at + 8)?, self.read(at + 24)?);
            if cs & 3 != 3 || irsp < at + 40 {
                return Err(Why::BadTrapFrame(at));
            }
            self.interrupts += 1;
            return self.context(Regs { rip: irip, rsp: irsp, rbp });
        }
        if self.code.shim_enter.contains(&rip) {
            // The leaf into the shim: no stack use, the return at [rsp].
            self.push(rip, FrameKind::Rip)?;
            let ret = self.read(rsp)?;
            let frame = Frame { pc: ret, kind: FrameKind::Return };
            self.known(frame)?;
            self.push(ret, FrameKind::Return)?;
            return self.chain(rbp, rsp + 8);
        }
        self.known(Frame { pc: rip, kind: FrameKind::Rip })?;
        self.push(rip, FrameKind::Rip)?;
        for at in [rsp, rsp + 8] {
            let w = self.read(at)?;
            if self.code.funcs.find(w.wrapping_sub(1)).is_some() {
                self.push(w, FrameKind::MaybeReturn)?;
            }
        }
        self.chain(rbp, rsp)
    }

    /// The frame-pointer chain from `fp`; every frame at or above `floor`.
    fn chain(&mut self, mut fp: u64, floor: u64) -> Result<(), Why> {
        let mut previous: Option<u64> = None;
        loop {
            let fits = fp.is_multiple_of(8)
                && fp >= self.stack.start
                && fp >= floor
                && fp.checked_add(16).is_some_and(|e| e <= self.stack.end);
            if !fits {
                return Err(Why::FrameOutsideStack(fp));
            }
            if let Some(p) = previous
                && fp <= p
            {
                return Err(Why::NotAscending { fp, previous: p });
            }
            let next = self.read(fp)?;
            let ret = self.read(fp + 8)?;
            if next == 0 {
                self.push(ret, FrameKind::Return)?;
                let ends = match &self.end {
                    ChainEnd::Trampoline(base) => base.contains(&ret.wrapping_sub(1)),
                    ChainEnd::BootEntry => ret == 0,
                };
                return if ends { Ok(()) } else { Err(Why::EndedOutsideBase(ret)) };
            }
            if self.code.irq_returns.contains(&ret) {
                return self.interrupted(fp + 16);
            }
            self.known(Frame { pc: ret, kind: FrameKind::Return })?;
            self.push(ret, FrameKind::Return)?;
            previous = Some(fp);
            fp = next;
        }
    }

    /// The context a trap frame at `tf` saved, walked on.
    fn interrupted(&mut self, tf: u64) -> Result<(), Why> {
        let word = |i: u64| self.read(tf + 8 * i);
        let (rbp, rip, cs, rsp) = (word(8)?, word(17)?, word(18)?, word(20)?);
        if cs & 3 != 3 || rsp < tf + TRAP_FRAME_BYTES {
            return Err(Why::BadTrapFrame(tf));
        }
        self.interrupts += 1;
        self.context(Regs { rip, rsp, rbp })
    }
}

/// The `(return address, rbp)` a switched-out task resumes with, from its
/// saved rsp (`sched/switch.rs`: r15, r14, r13, r12, rbx, rbp, return
/// address).
pub fn switched_out_start(mem: &dyn StackMem, saved_rsp: u64) -> Result<(u64, u64), Why> {
    let word = |off: u64| {
        let at = saved_rsp.wrapping_add(off);
        mem.read_u64(at).ok_or(Why::Unreadable(at))
    };
    Ok((word(48)?, word(40)?))
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
    const ENTRY: Range<u64> = 0x5000..0x5100;
    /// `irq3_exit`: the return address of the entry's handler call.
    const IRQ_RET: u64 = 0x5040;

    fn funcs() -> FuncTable {
        let mut t = FuncTable::new(vec![
            (0x1000, 0x100, "sched_task_trampoline".into()),
            (0x2000, 0x200, "task_start".into()),
            (0x3000, 0x200, "tester".into()),
            (0x4000, 0x100, "schedule".into()),
            (0x5000, 0, "irq3_entry".into()),
            (0x6000, 0x100, "on_interrupt".into()),
            (0x7000, 0x100, "memcpy".into()),
            (0x8000, 0, "shim_enter".into()),
        ]);
        t.mark_frames(|start, _| Some(if start == 0x7000 { vec![0x53, 0x41, 0x56] } else { FP_PROLOGUE.to_vec() }));
        t
    }

    fn code() -> GuestCode {
        let none = StackArray { base: 0, stride: 16, size: 16, count: 0 };
        GuestCode {
            funcs: funcs(),
            stacks: 0x10_0000..0x20_0000,
            base: 0x1000..0x1100,
            entry: vec![ENTRY],
            irq_returns: vec![IRQ_RET],
            shim_enter: 0x8000..0x8010,
            irq_stubs: 0x5000..0x5020,
            irq_entry_head: [0x5020, 0x5029],
            shim_halt: 0x9000..0x9040,
            task_stacks: none.clone(),
            boot_stacks: none,
            ring0_stacks: StackArray { base: 0x30_0000, stride: 0x4000, size: 0x4000, count: 2 },
            serialize_iret: 0xa000,
        }
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

    fn tramp() -> ChainEnd {
        ChainEnd::Trampoline(0x1000..0x1100)
    }

    /// A running task's walk from `rip`, rsp `sp`, rbp `fp`.
    fn running(m: &Mem, rip: u64, sp: u64, fp: u64) -> Walk {
        code().walk_running(m, Regs { rip, rsp: sp, rbp: fp }, STACK, tramp(), 64)
    }

    #[test]
    fn a_chain_that_ends_in_the_trampoline_is_reliable() {
        let mut m = chain(&[0x10_3e00, 0x10_3f00, 0x10_3fe0], &[0x3010, 0x2010, 0x1010], 0);
        m.0.extend([(0x10_3d00, 0), (0x10_3d08, 0)]);
        let w = running(&m, 0x4020, 0x10_3d00, 0x10_3e00);
        assert_eq!(w.verdict, Ok(()));
        assert_eq!(w.pcs(), vec![0x4020, 0x3010, 0x2010, 0x1010]);
        assert_eq!(funcs().find(0x3010), Some("tester"));
    }

    #[test]
    fn anything_else_is_unreliable_and_says_why() {
        let fps = [0x10_3e00, 0x10_3f00, 0x10_3fe0];
        let sp = 0x10_3d00;
        let with_sp = |mut m: Mem| {
            m.0.extend([(sp, 0), (sp + 8, 0)]);
            m
        };
        // An unknown return address.
        let m = with_sp(chain(&fps, &[0x3010, 0x9999, 0x1010], 0));
        assert_eq!(running(&m, 0x4020, sp, fps[0]).verdict, Err(Why::UnknownAddress(0x9998)));
        // An unknown start.
        let m = with_sp(chain(&fps, &[0x3010, 0x2010, 0x1010], 0));
        assert_eq!(running(&m, 0x7777_0000, sp, fps[0]).verdict, Err(Why::UnknownAddress(0x7777_0000)));
        // A frame outside the stack, below the stack pointer, misaligned.
        assert_eq!(running(&m, 0x4020, sp, 0x20_0000).verdict, Err(Why::FrameOutsideStack(0x20_0000)));
        assert_eq!(running(&m, 0x4020, sp, 0x10_3c00).verdict, Err(Why::FrameOutsideStack(0x10_3c00)));
        assert_eq!(running(&m, 0x4020, sp, 0x10_3e04).verdict, Err(Why::FrameOutsideStack(0x10_3e04)));
        // A stack pointer outside the task's stack.
        assert_eq!(running(&m, 0x4020, 0x10_5000, fps[0]).verdict, Err(Why::StackPointerOutside(0x10_5000)));
        // A loop: the outer frame points back at the inner one.
        let mut m = with_sp(chain(&fps[..2], &[0x3010, 0x2010], fps[0]));
        m.0.insert(fps[0], fps[1]);
        assert_eq!(running(&m, 0x4020, sp, fps[0]).verdict, Err(Why::NotAscending { fp: fps[0], previous: fps[1] }));
        // Ended (rbp 0) outside the trampoline.
        let m = with_sp(chain(&fps[..2], &[0x3010, 0x2010], 0));
        assert_eq!(running(&m, 0x4020, sp, fps[0]).verdict, Err(Why::EndedOutsideBase(0x2010)));
        // An unreadable word.
        let m = with_sp(Mem(HashMap::new()));
        assert_eq!(running(&m, 0x4020, sp, fps[0]).verdict, Err(Why::Unreadable(fps[0])));
        // A return into the entry that is no handler call.
        let m = with_sp(chain(&fps, &[0x5010, 0x2010, 0x1010], 0));
        assert_eq!(running(&m, 0x4020, sp, fps[0]).verdict, Err(Why::InterruptFrame(0x500f)));
        // Stopped inside the entry's assembly.
        assert_eq!(running(&m, 0x5038, sp, fps[0]).verdict, Err(Why::InterruptFrame(0x5038)));
    }

    /// Per-task bounds: a frame in another task's stack (inside the
    /// stack region) is outside this task's.
    #[test]
    fn a_frame_in_another_tasks_stack_is_unreliable() {
        let other = 0x10_4100;
        let mut m = chain(&[0x10_3e00, other], &[0x3010, 0x1010], 0);
        m.0.extend([(0x10_3d00, 0), (0x10_3d08, 0)]);
        assert_eq!(running(&m, 0x4020, 0x10_3d00, 0x10_3e00).verdict, Err(Why::FrameOutsideStack(other)));
    }

    /// Code without a frame record (here: precompiled memcpy) can hide its
    /// caller anywhere on the stack: stopped there, or returned into.
    #[test]
    fn code_without_a_frame_record_is_unreliable() {
        let mut m = chain(&[0x10_3e00, 0x10_3fe0], &[0x3010, 0x1010], 0);
        m.0.extend([(0x10_3d00, 0), (0x10_3d08, 0)]);
        assert_eq!(running(&m, 0x7010, 0x10_3d00, 0x10_3e00).verdict, Err(Why::NoFrameRecord(0x7010)));
        let m2 = chain(&[0x10_3e00, 0x10_3fe0], &[0x7010, 0x1010], 0);
        let mut m2 = m2;
        m2.0.extend([(0x10_3d00, 0), (0x10_3d08, 0)]);
        assert_eq!(running(&m2, 0x4020, 0x10_3d00, 0x10_3e00).verdict, Err(Why::NoFrameRecord(0x700f)));
    }

    /// In a prologue or epilogue the caller's return address is at [rsp]
    /// or [rsp + 8], not in the chain: reported as a maybe-return.
    #[test]
    fn words_at_the_stack_pointer_that_are_code_addresses_are_maybe_returns() {
        let mut m = chain(&[0x10_3f00, 0x10_3fe0], &[0x2010, 0x1010], 0);
        // Stopped at schedule's first instruction, called from tester.
        m.0.extend([(0x10_3e00, 0x3050), (0x10_3e08, 0x1234)]);
        let w = running(&m, 0x4000, 0x10_3e00, 0x10_3f00);
        assert_eq!(w.verdict, Ok(()));
        assert_eq!(w.frames[1], Frame { pc: 0x3050, kind: FrameKind::MaybeReturn });
        assert_eq!(w.frames[1].code_addr(), 0x304f);
        assert_eq!(w.pcs(), vec![0x4000, 0x2010, 0x1010], "0x1234 is no code address");
    }

    /// The entry's handler call: the frame returning to `irq3_exit` lies
    /// 16 bytes below a trap frame; the walk goes on from the context it
    /// saved, into the interrupted code.
    #[test]
    fn a_walk_goes_through_an_interrupt_frame_into_the_interrupted_code() {
        let handler_fp = 0x10_3000;
        let tf = handler_fp + 16;
        let interrupted_sp = tf + TRAP_FRAME_BYTES;
        let mut m = chain(&[handler_fp], &[IRQ_RET], 0x9999);
        // The trap frame: rbp (word 8), rip, cs, rflags, rsp, ss.
        for (i, v) in [(8, 0x10_3e00), (17, 0x3020), (18, 0x33), (19, 0x202), (20, interrupted_sp), (21, 0x2b)] {
            m.0.insert(tf + 8 * i, v);
        }
        m.0.extend([(interrupted_sp, 7), (interrupted_sp + 8, 7)]);
        // The interrupted function's chain.
        let rest = chain(&[0x10_3e00, 0x10_3fe0], &[0x2010, 0x1010], 0);
        m.0.extend(rest.0);
        m.0.extend([(0x10_2f00, 0), (0x10_2f08, 0)]);
        let w = running(&m, 0x6020, 0x10_2f00, handler_fp);
        assert_eq!(w.verdict, Ok(()));
        assert_eq!(w.interrupts, 1);
        assert_eq!(w.pcs(), vec![0x6020, 0x3020, 0x2010, 0x1010]);
        assert_eq!(w.frames[1].kind, FrameKind::Rip, "the interrupted rip is where that code stopped");
        // A trap frame from ring 0, or below its own frame, is not walked.
        let mut bad = Mem(m.0.clone());
        bad.0.insert(tf + 8 * 18, 0x8);
        assert_eq!(running(&bad, 0x6020, 0x10_2f00, handler_fp).verdict, Err(Why::BadTrapFrame(tf)));
        let mut low = Mem(m.0.clone());
        low.0.insert(tf + 8 * 20, tf);
        assert_eq!(running(&low, 0x6020, 0x10_2f00, handler_fp).verdict, Err(Why::BadTrapFrame(tf)));
    }

    /// Stopped in a vector's stub (after its pushes), at the entry's
    /// first instruction, or at the serializing stub: the interrupt
    /// frame lies at a known offset above rsp, and rbp is the
    /// interrupted code's.
    #[test]
    fn a_walk_starts_through_an_entry_stubs_frame() {
        let sp = 0x10_3d00;
        for (rip, off) in [(0x5010, 0), (0x5012, 8), (0x5014, 16), (0x5020, 16), (0xa000, 0)] {
            let mut m = chain(&[0x10_3e00, 0x10_3f00], &[0x3010, 0x1010], 0);
            let frame = sp + off;
            for (i, v) in [(0, 0x4020), (1, 0x33), (2, 0x202), (3, frame + 64), (4, 0x2b)] {
                m.0.insert(frame + 8 * i, v);
            }
            m.0.extend([(frame + 64, 0), (frame + 72, 0)]);
            let w = running(&m, rip, sp, 0x10_3e00);
            assert_eq!(w.verdict, Ok(()), "at {rip:#x}");
            assert_eq!(w.pcs(), vec![0x4020, 0x3010, 0x1010], "at {rip:#x}");
            assert_eq!(w.interrupts, 1);
            // Elsewhere in the entry it is unreliable.
            assert_eq!(running(&m, 0x5030, sp, 0x10_3e00).verdict, Err(Why::InterruptFrame(0x5030)));
        }
    }

    #[test]
    fn sizeless_symbols_reach_the_next_one_and_sized_ones_do_not_overlap() {
        let t = FuncTable::new(vec![
            (0x100, 0, "asm_a".into()),
            (0x140, 0x10, "f".into()),
            (0x150, 0, "asm_b".into()),
            (0x9000, 0x20, "g".into()),
            (0x9008, 0, "label_in_g".into()),
            (0xa000, 0, "stubs_end".into()),
            (0xa000, 0, "enter".into()),
        ]);
        assert_eq!(t.range_of("enter"), Some(0xa000..0xa000 + SIZELESS_MAX), "what starts there, not what ended");
        assert_eq!(t.range_of("asm_a"), Some(0x100..0x140));
        assert_eq!(t.range_of("f"), Some(0x140..0x150));
        assert_eq!(t.range_of("asm_b"), Some(0x150..0x150 + SIZELESS_MAX));
        assert_eq!(t.find(0x8000), None);
        assert_eq!(t.find(0x9010), Some("g"), "a label inside a function is part of it");
        assert_eq!(t.range_of("label_in_g"), None);
        assert!(t.keeps_frame(0x9010) && !t.keeps_frame(0x100));
    }

    #[test]
    fn a_chain_longer_than_the_bound_is_unreliable() {
        let fps: Vec<u64> = (0..10).map(|i| 0x10_0100 + 0x100 * i).collect();
        let rets = vec![0x3010; 10];
        let mut m = chain(&fps, &rets, 0);
        m.0.extend([(0x10_0000, 0), (0x10_0008, 0)]);
        let w = code().walk_running(&m, Regs { rip: 0x4020, rsp: 0x10_0000, rbp: fps[0] }, STACK, tramp(), 5);
        assert_eq!(w.verdict, Err(Why::TooDeep(5)));
    }

    #[test]
    fn a_switched_out_task_starts_from_its_saved_context() {
        let rsp = 0x10_3e00;
        let m = Mem(HashMap::from([(rsp + 40, 0x10_3e80), (rsp + 48, 0x4042)]));
        assert_eq!(switched_out_start(&m, rsp), Ok((0x4042, 0x10_3e80)));
        assert_eq!(switched_out_start(&Mem(HashMap::new()), rsp), Err(Why::Unreadable(rsp + 48)));
        // A task that never ran: it returns into the trampoline with rbp 0.
        let new = Mem(HashMap::from([(rsp + 40, 0), (rsp + 48, 0x1000)]));
        assert_eq!(code().walk_switched_out(&new, rsp, STACK, tramp(), 64).verdict, Ok(()));
        // Anywhere else with rbp 0 is no chain.
        let odd = Mem(HashMap::from([(rsp + 40, 0), (rsp + 48, 0x4042)]));
        assert_eq!(code().walk_switched_out(&odd, rsp, STACK, tramp(), 64).verdict, Err(Why::FrameOutsideStack(0)));
    }

    /// An idle task's chain ends at `kernel_main`, entered with rbp 0 and
    /// return address 0; a task's at the trampoline.
    #[test]
    fn an_idle_tasks_chain_ends_at_the_boot_entry() {
        let mut m = chain(&[0x10_3e00, 0x10_3f00], &[0x3010, 0], 0);
        m.0.extend([(0x10_3d00, 0), (0x10_3d08, 0)]);
        let regs = Regs { rip: 0x4020, rsp: 0x10_3d00, rbp: 0x10_3e00 };
        assert_eq!(code().walk_running(&m, regs, STACK, ChainEnd::BootEntry, 64).verdict, Ok(()));
        assert_eq!(code().walk_running(&m, regs, STACK, tramp(), 64).verdict, Err(Why::EndedOutsideBase(0)));
    }

    /// The leaf into the shim keeps its return address at [rsp]; a vCPU
    /// on the shim's halt path has its CPL3 context at the top of its
    /// ring-0 stack; anywhere else in ring 0 is unreliable.
    #[test]
    fn a_vcpu_in_the_shims_halt_path_is_walked_from_its_cpl3_context() {
        let c = code();
        let top = c.ring0_stacks.get(1).unwrap().end;
        let sp = 0x10_3d00;
        let mut m = chain(&[0x10_3e00, 0x10_3f00], &[0x3010, 0x1010], 0);
        for (i, v) in [(0, 0x8008), (1, 0x33), (2, 0x202), (3, sp), (4, 0x2b)] {
            m.0.insert(top - 40 + 8 * i, v);
        }
        m.0.insert(sp, 0x4040);
        let held = Regs { rip: 0x9010, rsp: top - 48, rbp: 0x10_3e00 };
        let cpl3 = c.shim_caller(&m, 1, held).unwrap();
        assert_eq!(cpl3, Regs { rip: 0x8008, rsp: sp, rbp: 0x10_3e00 });
        let w = c.walk_running(&m, cpl3, STACK, tramp(), 64);
        assert_eq!(w.verdict, Ok(()));
        assert_eq!(w.pcs(), vec![0x8008, 0x4040, 0x3010, 0x1010]);
        assert_eq!(c.shim_caller(&m, 1, Regs { rip: 0x9100, ..held }), Err(Why::InRing0(0x9100)));
        m.0.insert(top - 32, 0x8);
        assert_eq!(c.shim_caller(&m, 1, held), Err(Why::InRing0(0x9010)));
    }

    #[test]
    fn stack_arrays_name_their_stacks() {
        let a = StackArray { base: 0x1000, stride: 0x5000, size: 0x4000, count: 2 };
        assert_eq!(a.get(0), Some(0x2000..0x6000));
        assert_eq!(a.get(1), Some(0x7000..0xb000));
        assert_eq!(a.get(2), None);
        assert_eq!(a.index_of(0x7008), Some(1));
        assert_eq!(a.index_of(0x6008), None, "a guard page is no stack");
        assert_eq!(a.index_of(0xb000), None);
    }
}
