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

/// Guest memory as the patcher sees it: it reads and writes guest text by
/// physical address (the guest's own page tables map text read-only; the
/// VMM writes only while no vCPU runs guest code).
pub struct Text<'a>(pub &'a GuestMemory);

impl GuestText for Text<'_> {
    fn read_text(&self, addr: u64, buf: &mut [u8]) -> bool {
        self.0.read_slice(buf, GuestAddress(addr)).is_ok()
    }

    fn write_text(&self, addr: u64, bytes: &[u8]) -> bool {
        self.0.write_slice(bytes, GuestAddress(addr)).is_ok()
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

/// Allocates `bytes` of guest memory at guest-physical 0.
pub fn create(bytes: u64) -> Result<Arc<GuestMemory>, MemoryError> {
    let size = usize::try_from(bytes).map_err(|e| MemoryError::Allocate(bytes >> 20, e.to_string()))?;
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)])
        .map(Arc::new)
        .map_err(|e| MemoryError::Allocate(bytes >> 20, e.to_string()))
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
