//! The guest's task stacks as the VMM sees them (`x-query-stacks`): with
//! every vCPU held, each switched-out task's frame chain is walked from
//! its saved context (`switcher::stackwalk`), reliable only if it ends at
//! the task trampoline through known functions. The first piece of the
//! one-blackout switch (docs/ARCHITECTURE.md): a task whose walk is
//! reliable and touches no switched code needs no freezer.
//!
//! Tasks on a CPU are reported as running: their registers are the held
//! vCPUs', which this does not read yet.

use serde_json::{Value, json};
use switcher::abi::{self, TaskName, task_word};
use switcher::stackwalk::{GuestCode, StackMem};
use vm_memory::{Bytes, GuestAddress};

use crate::vstate::memory::{self, GuestMemory};

/// Frames named per task in a reply (the walk checks them all).
const NAMED_FRAMES: usize = 8;
/// The deepest chain a task may have.
const MAX_DEPTH: usize = 64;

struct Mem<'a>(&'a GuestMemory);

impl StackMem for Mem<'_> {
    fn read_u64(&self, addr: u64) -> Option<u64> {
        self.0.read_obj::<u64>(GuestAddress(addr)).ok()
    }
}

/// A function name as a reply shows it: without Rust's hash suffix,
/// bounded.
fn short(name: &str) -> String {
    let name = name.strip_suffix('E').and_then(|n| n.rsplit_once("17h").map(|(a, _)| a)).unwrap_or(name);
    name.chars().take(80).collect()
}

/// Every spawned task's walk, as JSON (bounded: at most 128 tasks,
/// [`NAMED_FRAMES`] names each). Call with every vCPU held.
pub fn walk_all(mem: &GuestMemory, code: &GuestCode) -> Value {
    let m = Mem(mem);
    let mut tasks = Vec::new();
    let (mut reliable, mut unreliable, mut running) = (0u32, 0u32, 0u32);
    for slot in 0..task_word::SPAWNED_SLOTS {
        let at = abi::TASK_NAMES_ADDR + (slot * std::mem::size_of::<TaskName>()) as u64;
        let Some(entry) = memory::read_abi::<TaskName>(mem, at).filter(|e| e.addr != 0) else { continue };
        let t = entry.addr;
        let state = mem.read_obj::<u32>(GuestAddress(t + task_word::STATE)).map(|w| w & 0xff).unwrap_or(0);
        if state != task_word::RUNNABLE && state != task_word::BLOCKED {
            continue;
        }
        let name = crate::guest_text::name(&entry.name);
        let on_cpu = mem.read_obj::<u8>(GuestAddress(t + task_word::ON_CPU)).unwrap_or(1) != 0;
        if on_cpu {
            running += 1;
            tasks.push(json!({"task": name, "slot": slot, "running": true}));
            continue;
        }
        let Ok(rsp) = mem.read_obj::<u64>(GuestAddress(t + task_word::SAVED_RSP)) else { continue };
        let w = code.walk_switched_out(&m, rsp, MAX_DEPTH);
        let frames: Vec<String> = w
            .pcs
            .iter()
            .take(NAMED_FRAMES)
            .map(|&pc| code.funcs.find(pc).map_or_else(|| format!("{pc:#x}"), short))
            .collect();
        match &w.verdict {
            Ok(()) => reliable += 1,
            Err(_) => unreliable += 1,
        }
        tasks.push(json!({
            "task": name,
            "slot": slot,
            "running": false,
            "reliable": w.verdict.is_ok(),
            "why": w.verdict.as_ref().err().map(ToString::to_string),
            "depth": w.pcs.len(),
            "frames": frames,
        }));
    }
    json!({"reliable": reliable, "unreliable": unreliable, "running": running, "tasks": tasks})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a walk of the embedded kernel needs from its symbols: the
    /// stack region, the trampoline every chain ends in, the context
    /// switch every switched-out task returns into, and the interrupt
    /// entry whose frames are not walked yet.
    #[test]
    fn the_embedded_kernel_names_what_a_stack_walk_needs() {
        let code = GuestCode::from_elf(crate::DEFAULT_KERNEL).expect("the embedded kernel has its symbols");
        assert!(code.stacks.end > code.stacks.start);
        assert_eq!(code.funcs.find(code.base.start), Some("sched_task_trampoline"));
        let switch = code.funcs.range_of("sched_context_switch").expect("the context switch");
        assert!(!code.entry.is_empty() && code.entry.iter().all(|r| !r.contains(&switch.start)));
        assert!(code.entry.iter().any(|r| code.funcs.find(r.start) == Some("irq3_entry")));
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
