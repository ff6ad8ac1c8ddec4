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
use switcher::abi::{self, ABI_MAGIC, LockRegistry, LockTable};
use vm_memory::{Bytes, GuestAddress};

use crate::devices::hypercall::{self, Hypercall};
use crate::telemetry::StopInfo;
use crate::vstate::memory::{GuestMemory, create};

/// Guest memory of the tests (the ABI pages and room for lock words).
const MEM: u64 = 1 << 20;
/// The ABI pages filled at random: the panic record to the task names.
const ABI_LO: u64 = abi::PANIC_RECORD_ADDR;
const ABI_HI: u64 = abi::TASK_NAMES_ADDR + 0x1000;

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

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

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
