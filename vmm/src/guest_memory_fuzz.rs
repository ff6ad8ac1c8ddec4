//! Property tests: everything the VMM reads from guest memory, read from
//! memory a hostile guest filled at random.
//!
//! The low ABI pages (panic record, lock registry, heartbeats, shim
//! statistics, lock table, task names) are filled with random bytes;
//! half the cases then get the magic numbers, a small lock count and lock
//! addresses that point anywhere (in memory, past its end, unaligned,
//! into the ABI pages themselves), so the readers get past their first
//! checks. For every case: the lock-word check, the task check, the lock owner lookup,
//! the watchdog, the shim statistics, the hypercall decoder (every
//! register, every width, a panic record anywhere) and the stop report's
//! rendering never panic, and every line they make is one inert line
//! (`guest_text`). The case counts keep the whole module under a few
//! seconds on this project's host.

use proptest::prelude::*;
use switcher::abi::{self, ABI_MAGIC, LockRegistry, LockTable, task_word};
use switcher::stackwalk::GuestCode;
use vm_memory::{Bytes, GuestAddress};

use crate::devices::hypercall::{self, Hypercall};
use crate::telemetry::StopInfo;
use crate::vstate::hold::HeldVcpu;
use crate::vstate::memory::{GuestMemory, create};

/// Guest memory of the tests (the ABI pages and room for lock words).
const MEM: u64 = 1 << 20;
/// The ABI pages filled at random: the panic record to the task names.
const ABI_LO: u64 = abi::PANIC_RECORD_ADDR;
const ABI_HI: u64 = abi::TASK_NAMES_ADDR + (abi::TASK_NAME_SLOTS * std::mem::size_of::<abi::TaskName>()) as u64;

/// Whether `s` is one inert line: no control, C1 or bidi character.
fn inert(s: &str) -> bool {
    !s.chars()
        .any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c) || ('\u{2066}'..='\u{2069}').contains(&c))
}

/// A guest address: in memory, near its end, past it, or anywhere.
fn address() -> impl Strategy<Value = u64> {
    prop_oneof![0..MEM, (MEM - 64)..(MEM + 64), any::<u64>(), ABI_LO..ABI_HI]
}

/// The random pages, and what the "plausible" half of the cases writes.
#[derive(Debug, Clone)]
struct Scribble {
    bytes: Vec<u8>,
    plausible: bool,
    count: u32,
    locks: Vec<(u64, u64)>,
}

fn scribble() -> impl Strategy<Value = Scribble> {
    (
        proptest::collection::vec(any::<u8>(), (ABI_HI - ABI_LO) as usize),
        any::<bool>(),
        prop_oneof![0u32..8, any::<u32>()],
        proptest::collection::vec((address(), any::<u64>()), 0..8),
    )
        .prop_map(|(bytes, plausible, count, locks)| Scribble { bytes, plausible, count, locks })
}

fn guest(s: &Scribble) -> std::sync::Arc<GuestMemory> {
    let mem = create(MEM).expect("guest memory");
    mem.write_slice(&s.bytes, GuestAddress(ABI_LO)).expect("the ABI pages");
    if s.plausible {
        let reg = abi::LOCK_REGISTRY_ADDR;
        mem.write_obj(ABI_MAGIC, GuestAddress(reg + std::mem::offset_of!(LockRegistry, magic) as u64)).unwrap();
        mem.write_obj(0u64, GuestAddress(reg + std::mem::offset_of!(LockRegistry, slowpath) as u64)).unwrap();
        let table = abi::LOCK_TABLE_ADDR;
        mem.write_obj(ABI_MAGIC, GuestAddress(table + std::mem::offset_of!(LockTable, magic) as u64)).unwrap();
        mem.write_obj(s.count, GuestAddress(table + std::mem::offset_of!(LockTable, count) as u64)).unwrap();
        let entries = table + std::mem::offset_of!(LockTable, entries) as u64;
        let entry = std::mem::size_of::<abi::LockEntry>() as u64;
        for (i, &(addr, word)) in s.locks.iter().enumerate() {
            mem.write_obj(addr, GuestAddress(entries + i as u64 * entry)).unwrap();
            // The lock word itself, where the address is in memory.
            let _ = mem.write_obj(word, GuestAddress(addr));
        }
    }
    mem
}

/// Return addresses the walker accepts (inside functions that keep a
/// frame record), found near the interrupt entry's return point.
fn frame_keeping_code(code: &GuestCode) -> Vec<u64> {
    let around = code.irq_returns.first().copied().unwrap_or(code.base.start);
    (around.saturating_sub(1 << 16)..around + (1 << 16))
        .step_by(64)
        .filter(|&a| code.funcs.find(a).is_some() && code.funcs.keeps_frame(a))
        .take(32)
        .collect()
}

/// Guest memory that also holds the embedded kernel's stacks: the ABI
/// pages from `s` (with the "plausible" half: a directory of only the
/// first `tasks` slots), each of those tasks live (state and on-CPU flag
/// from `words`) with its saved rsp inside its own stack and a frame
/// chain above it built from `words`: frame pointers that mostly ascend,
/// return addresses the walker knows or not, a chain end or not, so that
/// walks go deep before they break (or do not).
fn guest_with_stacks(s: &Scribble, code: &GuestCode, tasks: usize, words: &[u64]) -> std::sync::Arc<GuestMemory> {
    let mem = create(code.stacks.end.next_multiple_of(1 << 20)).expect("guest memory");
    mem.write_slice(&s.bytes, GuestAddress(ABI_LO)).expect("the ABI pages");
    if s.plausible {
        let dir = (abi::TASK_NAME_SLOTS * std::mem::size_of::<abi::TaskName>()) as u64;
        mem.write_slice(&vec![0u8; dir as usize], GuestAddress(abi::TASK_NAMES_ADDR)).unwrap();
    }
    let rets: Vec<u64> = frame_keeping_code(code)
        .into_iter()
        .chain([code.base.start + 1, code.serialize_iret, 0])
        .chain(code.irq_returns.iter().copied())
        .collect();
    let mut k = 0usize;
    let mut word = || {
        k += 1;
        words[k % words.len()]
    };
    for slot in 0..tasks.min(task_word::SPAWNED_SLOTS) {
        let Some((stack, _)) = code.task_stack(slot) else { continue };
        let task = TASK_STRUCTS + 0x200 * slot as u64;
        let entry = abi::TASK_NAMES_ADDR + (slot * std::mem::size_of::<abi::TaskName>()) as u64;
        mem.write_obj(task, GuestAddress(entry)).unwrap();
        let w = word();
        let state = if w & 1 == 0 { task_word::RUNNABLE } else { task_word::BLOCKED };
        mem.write_obj(state, GuestAddress(task + task_word::STATE)).unwrap();
        mem.write_obj(u8::from(w & 6 == 6), GuestAddress(task + task_word::ON_CPU)).unwrap();
        let len = stack.end - stack.start;
        let rsp = stack.start + len / 2 + (w >> 16) % (len / 4) / 8 * 8;
        mem.write_obj(rsp, GuestAddress(task + task_word::SAVED_RSP)).unwrap();
        // The switched-out context: six saved registers, then the return.
        let mut fp = rsp + 8 * 8;
        mem.write_obj(fp, GuestAddress(rsp + 5 * 8)).unwrap();
        mem.write_obj(rets[word() as usize % rets.len()], GuestAddress(rsp + 6 * 8)).unwrap();
        while fp + 16 <= stack.end {
            let w = word();
            let next = match w % 8 {
                0 => 0,
                1 => w,
                2 => fp.saturating_sub(16),
                _ => fp + 16 + (w >> 8) % 64 * 8,
            };
            mem.write_obj(next, GuestAddress(fp)).unwrap();
            mem.write_obj(rets[(w >> 16) as usize % rets.len()], GuestAddress(fp + 8)).unwrap();
            if next <= fp || next + 16 > stack.end {
                break;
            }
            fp = next;
        }
    }
    mem
}

/// Where [`guest_with_stacks`] puts its task structs: after the ABI pages,
/// below the page tables.
const TASK_STRUCTS: u64 = abi::PML4_ADDR - 0x3000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A hostile guest controls every stack the fast switch and
    /// `x-query-stacks` walk: any contents give a bounded answer (every
    /// walk within its depth, every name inert), never a panic.
    #[test]
    fn the_stack_walks_read_any_guest_memory(
        s in scribble(),
        tasks in 0usize..6,
        words in proptest::collection::vec(any::<u64>(), 1..64),
        held in proptest::collection::vec((any::<u64>(), any::<u64>(), any::<bool>()), 0..3),
    ) {
        let code = GuestCode::from_elf(crate::DEFAULT_KERNEL).expect("the embedded kernel's symbols");
        let mem = guest_with_stacks(&s, &code, tasks, &words);
        let held: Vec<(u32, HeldVcpu)> = held
            .iter()
            .enumerate()
            .map(|(cpu, &(w, v, user))| {
                let stack = code.task_stack(cpu).map_or(0..1, |(r, _)| r);
                let rsp = stack.start + w % (stack.end - stack.start).max(1) / 8 * 8;
                let h = HeldVcpu { rip: v, rsp, rbp: rsp + (w >> 32) % 256 * 8, rflags: 0x202, cs: if user { 0x33 } else { 0x8 }, ss: 0x2b, full: true, event_pending: false };
                (cpu as u32, h)
            })
            .collect();
        let (walks, _) = crate::stacks::walk_tasks(&mem, &code, &held);
        prop_assert!(walks.len() <= abi::TASK_NAME_SLOTS);
        for w in &walks {
            prop_assert!(w.walk.frames.len() <= crate::stacks::MAX_DEPTH, "{} frames", w.walk.frames.len());
            prop_assert!(inert(&w.name), "{:?}", w.name);
        }
        let reply = crate::stacks::walk_all(&mem, &code, &held).to_string();
        prop_assert!(reply.len() < 1 << 20, "{} bytes", reply.len());
    }

    #[test]
    fn the_lock_checks_read_any_guest_memory(s in scribble(), task in address()) {
        let mem = guest(&s);
        if let Err(e) = crate::switch::locks::check(&mem) {
            prop_assert!(inert(&e.to_string()), "{e}");
        }
        for name in crate::switch::locks::held_by(&mem, task) {
            prop_assert!(inert(&name), "{name:?}");
        }
        if let Err(e) = crate::switch::tasks::check(&mem) {
            prop_assert!(inert(&e.to_string()), "{e}");
        }
    }

    #[test]
    fn the_watchdog_and_the_shim_statistics_read_any_guest_memory(s in scribble(), cpus in 0u32..80) {
        let mem = guest(&s);
        let mut w = crate::watchdog::Watchdog::new(cpus.min(abi::MAX_CPUS as u32), std::time::Duration::from_nanos(1));
        for _ in 0..2 {
            for line in w.check(&mem) {
                prop_assert!(inert(&line), "{line:?}");
            }
        }
        let shim = crate::vstate::shim_stats::ShimEntries::read(&mem, cpus);
        prop_assert!(inert(&shim.to_string()));
        let _ = shim.total(0);
    }

    #[test]
    fn hypercalls_decode_from_any_write(
        s in scribble(),
        register in 0u64..0x1000,
        width in 0usize..16,
        value in prop_oneof![address(), any::<u64>()],
        cpu in any::<u32>(),
    ) {
        let mem = guest(&s);
        let mut data = value.to_le_bytes().to_vec();
        data.resize(width, 0xa5);
        match hypercall::decode(&mem, cpu, abi::DOORBELL_ADDR + register, &data) {
            Ok(Hypercall::Panic(p)) => prop_assert!(inert(&p.to_string()), "{p}"),
            Ok(Hypercall::Console(bytes)) => prop_assert!(bytes.len() <= abi::doorbell::CONSOLE_MAX),
            Ok(_) => {}
            Err(e) => prop_assert!(inert(&e.to_string()), "{e}"),
        }
        // A panic record at any address, whatever it holds.
        if let Ok(Hypercall::Panic(p)) =
            hypercall::decode(&mem, cpu, abi::DOORBELL_ADDR + abi::doorbell::PANIC, &value.to_le_bytes())
        {
            prop_assert!(inert(&p.to_string()), "{p}");
        }
    }

    #[test]
    fn any_stop_report_renders(
        cpu in any::<u32>(),
        ns in proptest::collection::vec(any::<u64>(), 6),
        irq in proptest::option::of(any::<u64>()),
        counts in (any::<u32>(), any::<u32>(), any::<bool>()),
        task in ".{0,24}",
        trace in proptest::collection::vec((any::<u64>(), ".{0,40}"), 0..16),
        threshold in any::<u32>(),
        tsc_khz in any::<u32>(),
        locks in proptest::collection::vec(".{0,24}", 0..4),
    ) {
        let info = StopInfo {
            cpu,
            thread_ns: ns[0],
            irq_ns: irq,
            steal_ns: ns[1],
            locks_held: counts.0,
            preempt_count: counts.1,
            irq_masked: counts.2,
            masked_ns: ns[2],
            deadline_tsc: ns[3],
            task,
            task_addr: ns[4],
            trace,
        };
        let text = crate::report::stop::render(&info, threshold, tsc_khz, &locks);
        prop_assert!(!text.is_empty());
        let _ = crate::report::stop::verdict(&info);
    }
}
