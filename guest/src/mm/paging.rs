//! The kernel's own page tables, replacing the VMM's boot identity map.
//!
//! Identity mapped (virtual = guest-physical), one hierarchy shared by all
//! CPUs: CPU 0 builds it ([`build`], at CPL3) before it releases the
//! others; every CPU then loads it ([`load`]: the ring-0 shim's
//! SET_PAGE_TABLES sets EFER.NXE, CR0.WP, CR3).
//!
//! Every mapping is user-accessible (U at every level): the kernel runs at
//! CPL3, so "kernel memory" is user memory to the MMU. What protects text
//! and rodata is the read-only bit, which binds CPL3 always.
//!
//! ```text
//! 0x0000_0000  null page                not present (null derefs fault)
//! 0x0000_1000  ABI pages, boot tables   RW NX   (4 KiB pages)
//! __text_start .. __text_end            R  X    (4 KiB)
//! __rodata_start .. __rodata_end        R  NX   (4 KiB; .switch_sites, notes)
//! __data_start .. __kernel_end          RW NX   (4 KiB; .data, .bss) but the
//!                                        task-stack guard pages: not present
//! .. next 2 MiB boundary                RW NX   (4 KiB)
//! .. memory_bytes                       RW NX   (2 MiB pages; 4 KiB for a tail)
//! LAPIC_ADDR, DOORBELL_ADDR             RW NX uncached (4 KiB each)
//! everything else                       not present
//! ```
//!
//! Table memory is static (.bss): one PML4, one PDPT, up to 4 page
//! directories (4 GiB) and [`KERNEL_PTS`] page tables for the 2 MiB
//! regions the kernel image touches, plus one for an unaligned tail and
//! one for the MMIO pages.
//! The hierarchy is written once, before any CPU loads it, and never
//! changed; CR4.PGE is off, so there are no global entries to flush.
//! The hypervisor may still write text (patch sites): guest permissions
//! do not apply to it.

use crate::arch::{cpu, shim};
use crate::sched::GuardPages;
use switcher::abi::pte::{CACHE_DISABLE, HUGE, NO_EXECUTE, PRESENT, USER, WRITABLE, WRITE_THROUGH};
use switcher::abi::{DOORBELL_ADDR, LAPIC_ADDR, MMIO_2M_PAGE};

const PAGE: u64 = 4096;
const LARGE: u64 = 2 << 20;
const GIB: u64 = 1 << 30;
const ENTRIES: usize = 512;

const RW_NX: u64 = PRESENT | WRITABLE | USER | NO_EXECUTE;
const RO_NX: u64 = PRESENT | USER | NO_EXECUTE;
const RO_X: u64 = PRESENT | USER;
const MMIO: u64 = RW_NX | WRITE_THROUGH | CACHE_DISABLE;
/// A table entry pointing at a lower table.
const TABLE: u64 = PRESENT | WRITABLE | USER;

/// Page directories: memory up to 4 GiB.
const MAX_PDS: usize = 4;
/// Page tables for the 2 MiB regions the kernel image spans (16 MiB).
const KERNEL_PTS: usize = 8;

#[repr(C, align(4096))]
struct Table([u64; ENTRIES]);

const EMPTY: Table = Table([0; ENTRIES]);

/// The tables. Written only by CPU 0 in [`build`], before any CPU loads
/// them (then read by the MMU only).
struct Tables {
    pml4: Table,
    pdpt: Table,
    pds: [Table; MAX_PDS],
    pts: [Table; KERNEL_PTS + 1],
    mmio: Table,
}

static mut TABLES: Tables =
    Tables { pml4: EMPTY, pdpt: EMPTY, pds: [EMPTY; MAX_PDS], pts: [EMPTY; KERNEL_PTS + 1], mmio: EMPTY };

unsafe extern "C" {
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_start: u8;
    static __rodata_end: u8;
    static __data_start: u8;
    static __kernel_end: u8;
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

/// Builds the hierarchy for `memory_bytes` of guest memory. CPU 0, once,
/// before the other CPUs are released. Panics if memory exceeds 4 GiB or
/// the kernel spans more than 16 MiB.
pub fn build(memory_bytes: u64, guards: &GuardPages) {
    assert!(cpu::has_nx(), "this CPU has no NX bit: the kernel maps data no-execute");
    let text = (&raw const __text_start) as u64..(&raw const __text_end) as u64;
    let rodata = (&raw const __rodata_start) as u64..(&raw const __rodata_end) as u64;
    let data = (&raw const __data_start) as u64..(&raw const __kernel_end) as u64;
    assert!(
        memory_bytes <= switcher::abi::MEMORY_LIMIT,
        "{} MiB of memory: guest memory must end below the MMIO hole at {:#x}",
        memory_bytes >> 20,
        switcher::abi::MEMORY_LIMIT
    );
    assert!(data.end <= memory_bytes, "the kernel ends past guest memory");
    // 4 KiB pages from 0 up to the 2 MiB boundary after the kernel.
    let small_end = align_up(data.end, LARGE).min(memory_bytes);
    let kernel_pts = small_end.div_ceil(LARGE) as usize;
    assert!(kernel_pts <= KERNEL_PTS, "the kernel image spans more than {} MiB", KERNEL_PTS * 2);

    // SAFETY: CPU 0 alone runs this, once, before any CPU uses the tables
    // (the others are still waiting for release); only raw-pointer access.
    let tables = &raw mut TABLES;
    // SAFETY: as above.
    let t = unsafe { &mut *tables };
    // Page tables: [0, small_end), range by range.
    let pt_entry = |t: &mut Tables, page: u64| -> *mut u64 {
        let index = (page / PAGE) as usize;
        &raw mut t.pts[index / ENTRIES].0[index % ENTRIES]
    };
    let fill = |t: &mut Tables, range: core::ops::Range<u64>, flags: u64| {
        let mut page = range.start & !(PAGE - 1);
        while page < range.end {
            // SAFETY: `page` < small_end, inside the kernel tables.
            unsafe { *pt_entry(t, page) = page | flags };
            page += PAGE;
        }
    };
    fill(t, PAGE..small_end, RW_NX);
    fill(t, text, RO_X);
    fill(t, rodata, RO_NX);
    for i in 0..guards.count {
        // SAFETY: guard pages lie in .bss, below small_end.
        unsafe { *pt_entry(t, guards.base + i * guards.stride) = 0 };
    }
    // Page directories: PTs for the kernel regions, then 2 MiB pages, and
    // a PT for a tail shorter than 2 MiB.
    let tail_pt = &raw mut t.pts[KERNEL_PTS];
    for region in 0..memory_bytes.div_ceil(LARGE) {
        let base = region * LARGE;
        let (pd, slot) = ((region / ENTRIES as u64) as usize, (region % ENTRIES as u64) as usize);
        t.pds[pd].0[slot] = if (region as usize) < kernel_pts {
            (&raw const t.pts[region as usize]) as u64 | TABLE
        } else if base + LARGE <= memory_bytes {
            base | HUGE | RW_NX
        } else {
            // SAFETY: the tail table is ours (see above) and distinct from
            // the kernel tables borrowed in this loop.
            let tail = unsafe { &mut *tail_pt };
            for (j, e) in tail.0.iter_mut().enumerate() {
                let page = base + j as u64 * PAGE;
                *e = if page < memory_bytes { page | RW_NX } else { 0 };
            }
            tail_pt as u64 | TABLE
        };
    }
    // The LAPIC and the doorbell: one table for their 2 MiB region.
    for page in [LAPIC_ADDR, DOORBELL_ADDR] {
        t.mmio.0[((page - MMIO_2M_PAGE) / PAGE) as usize] = page | MMIO;
    }
    let mmio_region = MMIO_2M_PAGE / LARGE;
    let mmio_pd = (mmio_region / ENTRIES as u64) as usize;
    t.pds[mmio_pd].0[(mmio_region % ENTRIES as u64) as usize] = (&raw const t.mmio) as u64 | TABLE;
    for pd in 0..memory_bytes.div_ceil(GIB) as usize {
        t.pdpt.0[pd] = (&raw const t.pds[pd]) as u64 | TABLE;
    }
    t.pdpt.0[mmio_pd] = (&raw const t.pds[mmio_pd]) as u64 | TABLE;
    t.pml4.0[0] = (&raw const t.pdpt) as u64 | TABLE;
}

/// A page of the MMIO region's table that maps nothing (the LAPIC and the
/// doorbell are its only pages): the `text-write` fault injection maps a
/// text page writable there.
pub const ALIAS_VA: u64 = MMIO_2M_PAGE + 0x10_1000;

/// Maps the page at guest-physical `pa` writable at [`ALIAS_VA`] and
/// returns that address: a second, writable view of a page the kernel maps
/// read-only (fault injection only: a write through it must be stopped by
/// the hypervisor, not by these tables). The entry was never present, so
/// no stale TLB entry can hide it.
pub fn alias_writable(pa: u64) -> u64 {
    let index = ((ALIAS_VA - MMIO_2M_PAGE) / PAGE) as usize;
    // SAFETY: one entry of the MMIO table, which maps nothing else there;
    // the tables are kernel memory (writable at CPL3), and the MMU reads
    // the entry only when the alias is first used, after this store.
    unsafe { (&raw mut TABLES.mmio.0[index]).write_volatile((pa & !(PAGE - 1)) | RW_NX) };
    ALIAS_VA
}

/// Loads the tables on this CPU (a shim call). After [`build`] (CPU 0
/// before release): the tables map everything a CPU uses (text, rodata,
/// data, bss, stacks, the ABI pages, the LAPIC, the doorbell) at its
/// address.
pub fn load() {
    // SAFETY: only the address is taken (no reference to the static).
    let root = unsafe { &raw const TABLES.pml4 } as u64;
    assert!(shim::set_page_tables(root), "the ring-0 shim refused the kernel's page tables at {root:#x}");
}
