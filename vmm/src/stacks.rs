//! The guest's task stacks as the VMM sees them, with every vCPU held:
//! every task's frame chain (`switcher::stackwalk`), a switched-out one
//! from its saved context, a running one from its vCPU's registers,
//! each bounded by the task's own stack and reliable only if it ends at
//! the task's base through known frames. `x-query-stacks` replies with
//! them; the switch in one blackout (`switch::fast`) proves from them
//! that no task is inside the code it patches.
//!
//! Which task a held vCPU runs: the one whose stack holds the stack
//! pointer of its CPL3 context (for a vCPU in the ring-0 shim, the one
//! the CPU saved on entry). It must be the task the directory marks on
//! its CPU; any mismatch (a vCPU mid context switch, on an interrupt
//! stack, or whose registers could not be read) is unreliable, and
//! named.

use serde_json::{Value, json};
use switcher::abi::{self, task_word};
use switcher::stackwalk::{GuestCode, Regs, Walk, Why};
use vm_memory::{Bytes, GuestAddress};

use crate::vstate::hold::HeldVcpu;
use crate::vstate::memory::{self, GuestMemory, GuestView};

/// Frames named per task in a reply (the walk checks them all).
const NAMED_FRAMES: usize = 8;
/// The deepest chain a task may have.
pub const MAX_DEPTH: usize = 64;
/// Tasks a reply lists (the directory's slots).
const LISTED: usize = abi::TASK_NAME_SLOTS;

/// One task's walk.
#[derive(Debug)]
pub struct TaskWalk {
    pub slot: usize,
    pub name: String,
    /// The held vCPU it runs on.
    pub cpu: Option<u32>,
    /// Marked on its CPU by the guest (with no `cpu`: a context switch
    /// in progress, or a directory that misreports it).
    pub on_cpu: bool,
    pub walk: Walk,
}

impl TaskWalk {
    fn unwalked(slot: usize, name: String, cpu: Option<u32>, on_cpu: bool, why: Why) -> Self {
        Self { slot, name, cpu, on_cpu, walk: Walk { frames: Vec::new(), interrupts: 0, verdict: Err(why) } }
    }
}

/// A held vCPU's place: the task slot its stack pointer lies in, and the
/// CPL3 context to walk it from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Task {
        slot: usize,
        regs: Regs,
    },
    /// Its registers cannot be walked from (the reason).
    Unknown(UnknownWhy),
}

/// Why a held vCPU's task is not known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnknownWhy {
    /// Its registers were not read (an access it could not complete).
    NotRead,
    /// In ring 0, and not where the walker knows the shim.
    Ring0(u64),
    /// Its stack pointer lies in no task's stack.
    NoTaskStack(u64),
}

impl std::fmt::Display for UnknownWhy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotRead => write!(f, "its registers could not be read"),
            Self::Ring0(rip) => write!(f, "it is in ring 0 at {rip:#x}, outside the shim's halt path"),
            Self::NoTaskStack(sp) => write!(f, "its stack pointer {sp:#x} is in no task's stack"),
        }
    }
}

/// Where held vCPU `cpu` runs.
pub fn place(mem: &GuestMemory, code: &GuestCode, cpu: u32, h: &HeldVcpu) -> Place {
    if !h.full {
        return Place::Unknown(UnknownWhy::NotRead);
    }
    let regs = Regs { rip: h.rip, rsp: h.rsp, rbp: h.rbp };
    let regs = match h.cpl() {
        3 => regs,
        _ => match code.shim_caller(&GuestView::new(mem), u64::from(cpu), regs) {
            Ok(r) => r,
            Err(_) => return Place::Unknown(UnknownWhy::Ring0(h.rip)),
        },
    };
    let slot = code
        .task_stacks
        .index_of(regs.rsp)
        .or_else(|| code.boot_stacks.index_of(regs.rsp).map(|c| c + task_word::SPAWNED_SLOTS as u64));
    match slot {
        Some(s) => Place::Task { slot: s as usize, regs },
        None => Place::Unknown(UnknownWhy::NoTaskStack(regs.rsp)),
    }
}

/// Every task's walk (spawned tasks and the CPUs' idle tasks), and the
/// held vCPUs whose task is not known. Call with every vCPU held, from
/// `held` (their full capture).
pub fn walk_tasks(
    mem: &GuestMemory,
    code: &GuestCode,
    held: &[(u32, HeldVcpu)],
) -> (Vec<TaskWalk>, Vec<(u32, UnknownWhy)>) {
    let m = GuestView::new(mem);
    let places: Vec<(u32, Place)> = held.iter().map(|&(c, h)| (c, place(mem, code, c, &h))).collect();
    let unknown: Vec<(u32, UnknownWhy)> = places
        .iter()
        .filter_map(|&(c, p)| match p {
            Place::Unknown(why) => Some((c, why)),
            Place::Task { .. } => None,
        })
        .collect();
    let mut out = Vec::new();
    let directory = memory::task_directory(mem);
    for (slot, entry) in directory.iter().enumerate() {
        if entry.addr == 0 {
            continue;
        }
        let t = entry.addr;
        let state = mem.read_obj::<u32>(GuestAddress(t + task_word::STATE)).map(|w| w & 0xff).unwrap_or(0);
        let on_cpu = mem.read_obj::<u8>(GuestAddress(t + task_word::ON_CPU)).unwrap_or(1) != 0;
        let vcpu = places.iter().find_map(|&(c, p)| match p {
            Place::Task { slot: s, regs } if s == slot => Some((c, regs)),
            _ => None,
        });
        let live = state == task_word::RUNNABLE || state == task_word::BLOCKED;
        if !live && !on_cpu && vcpu.is_none() {
            continue;
        }
        let name = crate::guest_text::name(&entry.name);
        let Some((stack, end)) = code.task_stack(slot) else {
            out.push(TaskWalk::unwalked(slot, name, None, on_cpu, Why::StackPointerOutside(0)));
            continue;
        };
        let tw = match (on_cpu, vcpu) {
            (true, Some((c, regs))) => {
                let walk = code.walk_running(&m, regs, stack, end, MAX_DEPTH);
                TaskWalk { slot, name, cpu: Some(c), on_cpu, walk }
            }
            // On a CPU by its flag, but no held vCPU is on its stack: a
            // context switch in progress (or a task the directory
            // misreports).
            (true, None) => TaskWalk::unwalked(slot, name, None, true, Why::NoVcpuOnItsStack),
            // A vCPU on the stack of a task marked off its CPU.
            (false, Some((c, regs))) => TaskWalk::unwalked(slot, name, Some(c), false, Why::VcpuOnItsStack(regs.rsp)),
            (false, None) => {
                let Ok(rsp) = mem.read_obj::<u64>(GuestAddress(t + task_word::SAVED_RSP)) else {
                    out.push(TaskWalk::unwalked(slot, name, None, false, Why::Unreadable(t + task_word::SAVED_RSP)));
                    continue;
                };
                let walk = code.walk_switched_out(&m, rsp, stack, end, MAX_DEPTH);
                TaskWalk { slot, name, cpu: None, on_cpu: false, walk }
            }
        };
        out.push(tw);
    }
    (out, unknown)
}

/// A function name as a reply shows it: without Rust's hash suffix,
/// bounded.
pub fn short(name: &str) -> String {
    let name = name.strip_suffix('E').and_then(|n| n.rsplit_once("17h").map(|(a, _)| a)).unwrap_or(name);
    name.chars().take(80).collect()
}

/// A code address as a reply names it: its function, or the address.
pub fn name_of(code: &GuestCode, pc: u64) -> String {
    code.funcs.find(pc).map_or_else(|| format!("{pc:#x}"), short)
}

/// Every task's walk, as JSON (bounded: at most [`LISTED`] tasks,
/// [`NAMED_FRAMES`] names each). Call with every vCPU held.
pub fn walk_all(mem: &GuestMemory, code: &GuestCode, held: &[(u32, HeldVcpu)]) -> Value {
    let (walks, unknown) = walk_tasks(mem, code, held);
    let (mut reliable, mut unreliable, mut running) = (0u32, 0u32, 0u32);
    let mut tasks = Vec::new();
    for w in walks.iter().take(LISTED) {
        let frames: Vec<String> =
            w.walk.frames.iter().take(NAMED_FRAMES).map(|f| name_of(code, f.code_addr())).collect();
        match &w.walk.verdict {
            Ok(()) => reliable += 1,
            Err(_) => unreliable += 1,
        }
        running += u32::from(w.on_cpu);
        tasks.push(json!({
            "task": w.name,
            "slot": w.slot,
            "running": w.on_cpu,
            "cpu": w.cpu,
            "reliable": w.walk.verdict.is_ok(),
            "why": w.walk.verdict.as_ref().err().map(ToString::to_string),
            "depth": w.walk.frames.len(),
            "interrupts": w.walk.interrupts,
            "frames": frames,
        }));
    }
    let vcpus: Vec<Value> = unknown.iter().map(|(c, why)| json!({"cpu": c, "why": why.to_string()})).collect();
    json!({
        "reliable": reliable,
        "unreliable": unreliable,
        "running": running,
        "tasks": tasks,
        "vcpus_without_task": vcpus,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a walk of the embedded kernel needs from its symbols: the
    /// stacks (each task's, each CPU's boot and ring-0 stack), the
    /// trampoline every chain ends in, the context switch every
    /// switched-out task returns into, the interrupt entry and its two
    /// handler calls, the shim's gate, and the serializing stub.
    #[test]
    fn the_embedded_kernel_names_what_a_stack_walk_needs() {
        let code = GuestCode::from_elf(crate::DEFAULT_KERNEL).expect("the embedded kernel has its symbols");
        assert!(code.stacks.end > code.stacks.start);
        assert_eq!(code.funcs.find(code.base.start), Some("sched_task_trampoline"));
        let switch = code.funcs.range_of("sched_context_switch").expect("the context switch");
        assert!(!code.entry.is_empty() && code.entry.iter().all(|r| !r.contains(&switch.start)));
        assert!(code.entry.iter().any(|r| code.funcs.find(r.start) == Some("irq3_entry")));
        assert_eq!(code.irq_returns.len(), 2);
        for s in [&code.task_stacks, &code.boot_stacks, &code.ring0_stacks] {
            let first = s.get(0).unwrap();
            assert!(code.stacks.start <= first.start && s.get(s.count - 1).unwrap().end <= code.stacks.end, "{s:?}");
        }
        assert_eq!(code.task_stacks.size, 16 * 1024);
        assert!(code.shim_halt.start < code.shim_halt.end && code.shim_halt.end - code.shim_halt.start < 256);
        assert_eq!(code.funcs.find(code.serialize_iret), Some("switch_serialize_iret"));
        // The kernel's Rust keeps frame records; its assembly does not.
        let schedule = code.funcs.range_of("sched_context_switch").unwrap();
        assert!(!code.funcs.keeps_frame(schedule.start));
    }

    #[test]
    fn names_lose_their_hash_and_stay_bounded() {
        assert_eq!(
            short("_ZN14rtswitch_guest5sched9scheduler8schedule17h0123456789abcdefE"),
            "_ZN14rtswitch_guest5sched9scheduler8schedule"
        );
        assert_eq!(short("sched_task_trampoline"), "sched_task_trampoline");
        assert_eq!(short(&"x".repeat(200)).len(), 80);
    }
}
