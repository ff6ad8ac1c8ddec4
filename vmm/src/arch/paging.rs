//! Identity page tables for boot: PML4 -> one PDPT -> page directories of
//! 2 MiB pages, covering guest memory and the 2 MiB MMIO page of the LAPIC
//! and the hypercall doorbell (uncached), and nothing else (an access past
//! the end of memory faults in the guest instead of reaching the VMM).
//! Every entry is user-accessible: the guest kernel drops to CPL3 within
//! its first instructions and runs there on these tables until it loads
//! its own.

use switcher::abi::pte::{CACHE_DISABLE, HUGE, PRESENT, USER, WRITABLE, WRITE_THROUGH};
use switcher::abi::{MEMORY_LIMIT, MMIO_2M_PAGE, PAGE_TABLES_END, PML4_ADDR};

/// Flags of every table entry and page.
const ENTRY: u64 = PRESENT | WRITABLE | USER;
const PAGE_4K: u64 = 0x1000;
const PAGE_2M: u64 = 0x20_0000;
const GIB: u64 = 1 << 30;

/// One 4 KiB table to write at a guest-physical address.
#[derive(Debug, PartialEq, Eq)]
pub struct PageTable {
    pub addr: u64,
    pub entries: Box<[u64; 512]>,
}

/// The page-table builder refuses memory it cannot map in its fixed area.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PagingError {
    #[error("guest memory of {0} bytes reaches into the MMIO hole at 3 GiB; use less --memory")]
    TooMuchMemory(u64),
}

/// The tables that identity-map `[0, memory_bytes)` (rounded up to 2 MiB)
/// and the MMIO page.
pub fn identity_map(memory_bytes: u64) -> Result<Vec<PageTable>, PagingError> {
    if memory_bytes > MEMORY_LIMIT {
        return Err(PagingError::TooMuchMemory(memory_bytes));
    }
    let pages_2m = memory_bytes.div_ceil(PAGE_2M);
    let mmio_dir = MMIO_2M_PAGE / GIB;
    let dirs = memory_bytes.div_ceil(GIB).max(mmio_dir + 1);
    let pdpt_addr = PML4_ADDR + PAGE_4K;
    let first_pd = pdpt_addr + PAGE_4K;
    debug_assert!(first_pd + dirs * PAGE_4K <= PAGE_TABLES_END);
    let mut pml4 = Box::new([0u64; 512]);
    pml4[0] = pdpt_addr | ENTRY;
    let mut pdpt = Box::new([0u64; 512]);
    let mut tables = Vec::with_capacity(2 + dirs as usize);
    for d in 0..dirs {
        let pd_addr = first_pd + d * PAGE_4K;
        pdpt[d as usize] = pd_addr | ENTRY;
        let mut pd = Box::new([0u64; 512]);
        for (i, e) in pd.iter_mut().enumerate() {
            let page = d * 512 + i as u64;
            if page < pages_2m {
                *e = (page * PAGE_2M) | ENTRY | HUGE;
            } else if page * PAGE_2M == MMIO_2M_PAGE {
                *e = MMIO_2M_PAGE | ENTRY | HUGE | WRITE_THROUGH | CACHE_DISABLE;
            }
        }
        tables.push(PageTable { addr: pd_addr, entries: pd });
    }
    tables.insert(0, PageTable { addr: pdpt_addr, entries: pdpt });
    tables.insert(0, PageTable { addr: PML4_ADDR, entries: pml4 });
    Ok(tables)
}

/// Walks `tables` like the MMU: the physical address `va` maps to.
#[cfg(test)]
fn translate(tables: &[PageTable], va: u64) -> Option<u64> {
    let find = |addr: u64| tables.iter().find(|t| t.addr == addr);
    let pml4 = find(PML4_ADDR)?;
    let e4 = pml4.entries[((va >> 39) & 511) as usize];
    if e4 & PRESENT == 0 {
        return None;
    }
    let e3 = find(e4 & !0xfff)?.entries[((va >> 30) & 511) as usize];
    if e3 & PRESENT == 0 {
        return None;
    }
    let e2 = find(e3 & !0xfff)?.entries[((va >> 21) & 511) as usize];
    if e2 & PRESENT == 0 || e2 & HUGE == 0 {
        return None;
    }
    Some((e2 & !(PAGE_2M - 1) & !(1 << 7)) | (va & (PAGE_2M - 1)))
}

/// Whether every level of the walk for `va` allows user access.
#[cfg(test)]
fn user_accessible(tables: &[PageTable], va: u64) -> bool {
    let find = |addr: u64| tables.iter().find(|t| t.addr == addr);
    let Some(pml4) = find(PML4_ADDR) else { return false };
    let e4 = pml4.entries[((va >> 39) & 511) as usize];
    let Some(pdpt) = find(e4 & !0xfff) else { return false };
    let e3 = pdpt.entries[((va >> 30) & 511) as usize];
    let Some(pd) = find(e3 & !0xfff) else { return false };
    let e2 = pd.entries[((va >> 21) & 511) as usize];
    [e4, e3, e2].iter().all(|e| e & USER != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_all_memory_identically_and_nothing_more() {
        let mem = 130 << 20; // not a multiple of 1 GiB, nor of 2 MiB's table
        let t = identity_map(mem).unwrap();
        for va in [0u64, 0x1000, 0x10_0000, 0x20_0000 + 5, mem - 1] {
            assert_eq!(translate(&t, va), Some(va), "va {va:#x}");
        }
        assert_eq!(translate(&t, mem.next_multiple_of(PAGE_2M)), None);
        assert_eq!(translate(&t, 0x7fff_0000_0000), None);
        assert!(user_accessible(&t, 0x10_0000), "the kernel runs at CPL3");
    }

    #[test]
    fn maps_the_lapic_and_the_doorbell_uncached() {
        let t = identity_map(128 << 20).unwrap();
        for va in [switcher::abi::LAPIC_ADDR, switcher::abi::DOORBELL_ADDR] {
            assert_eq!(translate(&t, va), Some(va));
            assert!(user_accessible(&t, va));
        }
        assert_eq!(translate(&t, MMIO_2M_PAGE - 1), None);
        assert_eq!(translate(&t, 3 * GIB), None);
    }

    #[test]
    fn multi_gib_memory_uses_several_directories() {
        let mem = 3 * GIB;
        let t = identity_map(mem).unwrap();
        assert_eq!(t.len(), 2 + 4, "three for memory, one for the MMIO page");
        assert_eq!(translate(&t, 2 * GIB + 0x1234), Some(2 * GIB + 0x1234));
        assert_eq!(translate(&t, 3 * GIB), None);
    }

    #[test]
    fn tables_stay_below_the_kernel() {
        for t in identity_map(MEMORY_LIMIT).unwrap() {
            assert!(t.addr >= PML4_ADDR && t.addr + PAGE_4K <= PAGE_TABLES_END);
        }
        assert_eq!(identity_map(MEMORY_LIMIT + 1), Err(PagingError::TooMuchMemory(MEMORY_LIMIT + 1)));
    }
}
