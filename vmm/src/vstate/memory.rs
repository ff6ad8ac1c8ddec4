//! Guest memory: one anonymous mapping from guest-physical 0, plus typed
//! access to the ABI pages that VMM and guest share.
//!
//! The ABI structures are `repr(C)` integers and byte arrays without
//! padding (sizes asserted in `switcher::abi`), so they are plain bytes.

use std::sync::Arc;

use switcher::abi::{
    BOOT_GDT_ADDR, BootInfo, GuestStatus, LockRegistry, LockTable, PanicRecord, ShimStats, SwitchMailbox, TaskName,
};
use switcher::patch::GuestText;
use switcher::stackwalk::StackMem;
use switcher::telemetry::{CpuLatencyHeader, TelemetryHeader};
use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

use crate::arch::gdt::BOOT_GDT;
use crate::arch::paging;

pub type GuestMemory = GuestMemoryMmap<()>;

/// An ABI structure as plain bytes for vm-memory.
#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub struct Abi<T>(pub T);

// SAFETY: BootInfo, GuestStatus and PanicRecord are repr(C), made of
// integers and byte arrays only, without padding (asserted by size in
// switcher::abi): every bit pattern is a valid value.
unsafe impl ByteValued for Abi<BootInfo> {}
// SAFETY: as above.
unsafe impl ByteValued for Abi<GuestStatus> {}
// SAFETY: as above.
unsafe impl ByteValued for Abi<PanicRecord> {}
// SAFETY: as above.
unsafe impl ByteValued for Abi<LockRegistry> {}
// SAFETY: as above.
unsafe impl ByteValued for Abi<SwitchMailbox> {}
// SAFETY: as above.
unsafe impl ByteValued for Abi<ShimStats> {}
// SAFETY: as above.
unsafe impl ByteValued for Abi<LockTable> {}
// SAFETY: as above.
unsafe impl ByteValued for Abi<TaskName> {}
// SAFETY: as above (sizes asserted in switcher::locktest).
unsafe impl ByteValued for Abi<switcher::locktest::Page> {}
// SAFETY: as above (telemetry structures, sizes asserted in
// switcher::telemetry).
unsafe impl ByteValued for Abi<TelemetryHeader> {}
// SAFETY: as above.
unsafe impl ByteValued for Abi<CpuLatencyHeader> {}

/// Guest memory as the patcher and the stack walker see it: the
/// patcher reads and writes guest text by physical address (the guest's
/// own page tables map text read-only; the VMM writes only while no vCPU
/// runs guest code), the walker reads stacks. Through the [`HostView`]
/// where there is one (vm-memory's `Bytes` otherwise): a switch writes
/// hundreds of 5-byte sites and walks every stack with every vCPU held.
pub struct GuestView<'a> {
    mem: &'a GuestMemory,
    view: Option<HostView<'a>>,
}

impl<'a> GuestView<'a> {
    pub fn new(mem: &'a GuestMemory) -> Self {
        Self { mem, view: HostView::of(mem) }
    }
}

impl GuestText for GuestView<'_> {
    fn read_text(&self, addr: u64, buf: &mut [u8]) -> bool {
        match &self.view {
            Some(v) => v.read(addr, buf),
            None => self.mem.read_slice(buf, GuestAddress(addr)).is_ok(),
        }
    }

    fn write_text(&self, addr: u64, bytes: &[u8]) -> bool {
        match &self.view {
            Some(v) => v.write(addr, bytes),
            None => self.mem.write_slice(bytes, GuestAddress(addr)).is_ok(),
        }
    }
}

impl StackMem for GuestView<'_> {
    fn read_u64(&self, addr: u64) -> Option<u64> {
        match &self.view {
            Some(v) => v.read_u64(addr),
            None => self.mem.read_obj::<u64>(GuestAddress(addr)).ok(),
        }
    }
}

/// The guest memory that starts at guest-physical 0, as the host
/// mapping it is: bounds-checked volatile accesses with no lookup, for
/// the switch's hold, whose every microsecond is a blackout of the whole
/// guest (vm-memory's `Bytes` finds the region and builds a slice on
/// every access: measured 30-60 ns for a 5-byte write here, against a few
/// ns this way). Volatile, as vm-memory's own accesses are: the guest may
/// change any of it (except while every vCPU is held).
#[derive(Clone, Copy)]
pub struct HostView<'a> {
    base: *mut u8,
    len: u64,
    _mem: std::marker::PhantomData<&'a GuestMemory>,
}

impl<'a> HostView<'a> {
    /// The view of the region at guest-physical 0; `None` if there is none.
    pub fn of(mem: &'a GuestMemory) -> Option<Self> {
        use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
        let region = mem.find_region(GuestAddress(0))?;
        if region.start_addr() != GuestAddress(0) {
            return None;
        }
        Some(Self { base: region.as_ptr(), len: region.len(), _mem: std::marker::PhantomData })
    }

    /// The host pointer to `[addr, addr + n)`, if the region holds it all.
    fn at(&self, addr: u64, n: usize) -> Option<*mut u8> {
        let end = addr.checked_add(n as u64)?;
        // SAFETY: addr + n <= len: the offset stays inside the mapping.
        (end <= self.len).then(|| unsafe { self.base.add(addr as usize) })
    }

    pub fn read_u64(&self, addr: u64) -> Option<u64> {
        let p = self.at(addr, 8)?;
        if addr.is_multiple_of(8) {
            // SAFETY: 8 bytes inside the mapping (`at`), aligned (the
            // mapping is page aligned), readable for as long as `'a`.
            Some(unsafe { std::ptr::read_volatile(p.cast::<u64>()) })
        } else {
            let mut b = [0u8; 8];
            self.read(addr, &mut b).then(|| u64::from_le_bytes(b))
        }
    }

    pub fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        let Some(p) = self.at(addr, buf.len()) else { return false };
        for (i, b) in buf.iter_mut().enumerate() {
            // SAFETY: inside the mapping (`at` checked the whole range).
            *b = unsafe { std::ptr::read_volatile(p.add(i)) };
        }
        true
    }

    pub fn write(&self, addr: u64, bytes: &[u8]) -> bool {
        let Some(p) = self.at(addr, bytes.len()) else { return false };
        for (i, b) in bytes.iter().enumerate() {
            // SAFETY: inside the mapping (`at` checked the whole range),
            // which is writable (guest RAM, mapped read-write).
            unsafe { std::ptr::write_volatile(p.add(i), *b) };
        }
        true
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot allocate {0} MiB of guest memory: {1}; try a smaller --memory")]
    Allocate(u64, String),
    #[error("cannot write the boot {0} into guest memory at {1:#x}: {2}")]
    Write(&'static str, u64, vm_memory::GuestMemoryError),
    #[error("cannot build page tables: {0}")]
    Paging(#[from] paging::PagingError),
}

/// Allocates `bytes` of guest memory at guest-physical 0, backed by
/// transparent huge pages where the host offers them ([`huge_pages`]).
pub fn create(bytes: u64) -> Result<Arc<GuestMemory>, MemoryError> {
    let size = usize::try_from(bytes).map_err(|e| MemoryError::Allocate(bytes >> 20, e.to_string()))?;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)])
        .map_err(|e| MemoryError::Allocate(bytes >> 20, e.to_string()))?;
    huge_pages(&mem);
    Ok(Arc::new(mem))
}

/// Asks the host for transparent huge pages under guest memory
/// (`madvise(MADV_HUGEPAGE)`: hosts whose THP mode is `madvise`, the
/// usual default, give them only on request), before anything is
/// written to it. The switch's hold reads the task stacks and writes the
/// call sites all over the kernel's text and data: with 4 KiB pages each
/// page is a TLB miss (on a nested host a two-dimensional walk), with
/// 2 MiB pages the kernel's text is one or two. The guest's own accesses
/// gain the same way where KVM maps them large. A host without THP
/// refuses (logged); the memory works the same either way.
fn huge_pages(mem: &GuestMemory) {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    for region in mem.iter() {
        let (ptr, len) = (region.as_ptr(), region.len() as usize);
        // SAFETY: madvise(2) on a mapping this process made and owns
        // (the region's), with nothing in it yet; MADV_HUGEPAGE only
        // changes how the kernel backs it, never its contents.
        let r = unsafe { libc::madvise(ptr.cast(), len, libc::MADV_HUGEPAGE) };
        if r != 0 {
            log::debug!("guest memory: no transparent huge pages ({})", std::io::Error::last_os_error());
        }
    }
}

/// Writes the boot GDT, identity page tables and boot info.
pub fn write_boot_structures(mem: &GuestMemory, boot_info: &BootInfo, memory_bytes: u64) -> Result<(), MemoryError> {
    for (i, entry) in BOOT_GDT.iter().enumerate() {
        let addr = BOOT_GDT_ADDR + 8 * i as u64;
        mem.write_obj(*entry, GuestAddress(addr)).map_err(|e| MemoryError::Write("GDT", addr, e))?;
    }
    for table in paging::identity_map(memory_bytes)? {
        for (i, entry) in table.entries.iter().enumerate() {
            let addr = table.addr + 8 * i as u64;
            mem.write_obj(*entry, GuestAddress(addr)).map_err(|e| MemoryError::Write("page tables", addr, e))?;
        }
    }
    mem.write_obj(Abi(*boot_info), GuestAddress(switcher::abi::BOOT_INFO_ADDR))
        .map_err(|e| MemoryError::Write("boot info", switcher::abi::BOOT_INFO_ADDR, e))
}

/// Reads an ABI structure the guest wrote (`None` if out of memory).
pub fn read_abi<T>(mem: &GuestMemory, addr: u64) -> Option<T>
where
    Abi<T>: ByteValued,
{
    mem.read_obj::<Abi<T>>(GuestAddress(addr)).ok().map(|a| a.0)
}

/// The task directory (`abi::TASK_NAMES_ADDR`, one [`TaskName`] per
/// slot, slot order) in one copy: a read per slot is 192 bounds-checked
/// copies, which was most of a fast switch's checks. Unreadable: no slots.
pub fn task_directory(mem: &GuestMemory) -> Vec<TaskName> {
    const ENTRY: usize = std::mem::size_of::<TaskName>();
    let mut bytes = vec![0u8; switcher::abi::TASK_NAME_SLOTS * ENTRY];
    if mem.read_slice(&mut bytes, GuestAddress(switcher::abi::TASK_NAMES_ADDR)).is_err() {
        return Vec::new();
    }
    bytes
        .chunks_exact(ENTRY)
        .map(|chunk| {
            let mut entry = Abi(TaskName { addr: 0, name: [0; switcher::abi::ABI_NAME_LEN] });
            entry.as_mut_slice().copy_from_slice(chunk);
            entry.0
        })
        .collect()
}

/// Writes one u32 field of guest memory (e.g. `BootInfo::host_request`).
pub fn write_u32(mem: &GuestMemory, addr: u64, value: u32) -> Result<(), vm_memory::GuestMemoryError> {
    mem.write_obj(value, GuestAddress(addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switcher::abi::{BOOT_INFO_ADDR, PML4_ADDR};
    use switcher::profile::Profile;

    /// The host view reads and writes what vm-memory does, at any
    /// alignment, up to the last byte of guest memory and not one past.
    #[test]
    fn the_host_view_agrees_with_vm_memory_and_stops_at_the_end() {
        let size = 2 << 20;
        let mem = create(size).unwrap();
        let v = HostView::of(&mem).unwrap();
        for addr in [0u64, 8, 0x1003, size - 8] {
            let x = 0x0102_0304_0506_0708u64 ^ addr;
            mem.write_obj(x, GuestAddress(addr)).unwrap();
            assert_eq!(v.read_u64(addr), Some(x), "at {addr:#x}");
        }
        assert!(v.write(size - 5, &[0xe8, 1, 2, 3, 4]));
        let mut b = [0u8; 5];
        mem.read_slice(&mut b, GuestAddress(size - 5)).unwrap();
        assert_eq!(b, [0xe8, 1, 2, 3, 4]);
        assert!(v.read(size - 5, &mut b) && b == [0xe8, 1, 2, 3, 4]);
        assert_eq!(v.read_u64(size - 7), None);
        assert_eq!(v.read_u64(u64::MAX - 3), None);
        assert!(!v.write(size - 4, &[0; 5]) && !v.read(size, &mut [0u8; 1]));
        let text = GuestView::new(&mem);
        assert!(text.write_text(0x2000, &[9; 5]) && !text.write_text(size - 1, &[9; 2]));
    }

    #[test]
    fn boot_structures_land_where_the_abi_says() {
        let mem = create(32 << 20).unwrap();
        let mut bi = BootInfo::new(2, 32 << 20, 1_000_000, Profile::MAINLINE);
        assert!(bi.set_cmdline("panic"));
        write_boot_structures(&mem, &bi, 32 << 20).unwrap();
        let back: BootInfo = read_abi(&mem, BOOT_INFO_ADDR).unwrap();
        assert!(back.is_valid());
        assert_eq!(back.cpu_count, 2);
        assert_eq!(back.cmdline_str(), Some("panic"));
        let gdt1: u64 = mem.read_obj(GuestAddress(BOOT_GDT_ADDR + 8)).unwrap();
        assert_eq!(gdt1, BOOT_GDT[1]);
        let pml4e: u64 = mem.read_obj(GuestAddress(PML4_ADDR)).unwrap();
        assert_eq!(pml4e & 1, 1);
    }

    #[test]
    fn the_task_directory_is_read_in_slot_order() {
        let mem = create(16 << 20).unwrap();
        let mut name = [0u8; switcher::abi::ABI_NAME_LEN];
        name[..4].copy_from_slice(b"load");
        let at = switcher::abi::TASK_NAMES_ADDR + 3 * std::mem::size_of::<TaskName>() as u64;
        mem.write_obj(Abi(TaskName { addr: 0x12_3400, name }), GuestAddress(at)).unwrap();
        let dir = task_directory(&mem);
        assert_eq!(dir.len(), switcher::abi::TASK_NAME_SLOTS);
        assert_eq!((dir[3].addr, &dir[3].name[..4]), (0x12_3400, &b"load"[..]));
        assert!(dir.iter().enumerate().all(|(i, t)| i == 3 || t.addr == 0));
    }

    #[test]
    fn reads_past_memory_are_none() {
        let mem = create(16 << 20).unwrap();
        assert!(read_abi::<PanicRecord>(&mem, (16 << 20) - 8).is_none());
    }
}
