//! The bus: guest-physical address ranges (MMIO) or I/O ports mapped to
//! devices, after the `vm-device` `Bus` of Firecracker and Cloud
//! Hypervisor. Devices register a range once, before the vCPUs start; a
//! vCPU thread hands each access that exits to userspace to the bus, which
//! finds the device by address and calls it with the offset into its range.
//! So the vCPU loop (`vcpu`) names no device, and the devices (`devices/`)
//! depend on `vstate`, never the other way.
//!
//! ```text
//!   KVM_EXIT_MMIO addr --> Bus::write(cpu, addr, data)
//!                           |  range holding addr?  no --> None (the vCPU logs "no device there")
//!                           v  yes
//!                          device.write(cpu, addr - base, data) --> Done<E> | AccessError
//! ```
//!
//! `E` is what devices tell the control thread (the runner's choice); a
//! device's answer says whether its vCPU goes on ([`Done`]). A device is
//! called on the vCPU's own thread, by every vCPU at once: it must be
//! `Sync` and must not block.

use std::collections::BTreeMap;
use std::sync::Arc;

/// What a device made of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done<E> {
    /// Handled on the vCPU's thread; the guest goes on.
    Handled,
    /// Tell the control thread; the guest goes on.
    Notify(E),
    /// Tell the control thread; this vCPU's thread then ends (the guest
    /// stopped this CPU for good: an exit or a panic).
    NotifyAndStop(E),
}

/// Why a device refused an access; the vCPU logs it and the guest goes on.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// A read of a device that only takes writes.
    #[error("write-only")]
    WriteOnly,
    /// The device's own reason.
    #[error(transparent)]
    Device(Box<dyn std::error::Error + Send + Sync>),
}

/// A device on the bus.
pub trait BusDevice<E>: Send + Sync {
    /// The device's name in logs, e.g. `hypercall doorbell`.
    fn name(&self) -> &'static str;
    /// A guest read of `data.len()` bytes at `offset` into the device's
    /// range; fills `data`. On an error `data` reads as all ones.
    fn read(&self, cpu: u32, offset: u64, data: &mut [u8]) -> Result<(), AccessError>;
    /// A guest write of `data` at `offset` into the device's range.
    fn write(&self, cpu: u32, offset: u64, data: &[u8]) -> Result<Done<E>, AccessError>;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("device {name} at {base:#x} has an empty range or one past the end of the address space; give it a length")]
    BadRange { name: &'static str, base: u64 },
    #[error(
        "device {name} at {base:#x}..{end:#x} overlaps {other} at {other_base:#x}..{other_end:#x}; give each device \
         its own range"
    )]
    Overlap { name: &'static str, base: u64, end: u64, other: &'static str, other_base: u64, other_end: u64 },
}

struct Entry<E> {
    /// One past the range's last address.
    end: u64,
    device: Arc<dyn BusDevice<E>>,
}

/// Devices by the start of their range; ranges never overlap.
pub struct Bus<E> {
    devices: BTreeMap<u64, Entry<E>>,
}

impl<E> Default for Bus<E> {
    fn default() -> Self {
        Self { devices: BTreeMap::new() }
    }
}

impl<E> Bus<E> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `device` at `base..base + len`.
    pub fn insert(&mut self, base: u64, len: u64, device: Arc<dyn BusDevice<E>>) -> Result<(), BusError> {
        let name = device.name();
        let end = match base.checked_add(len) {
            Some(end) if len > 0 => end,
            _ => return Err(BusError::BadRange { name, base }),
        };
        let before = self.devices.range(..end).next_back();
        if let Some((&other_base, other)) = before.filter(|(_, e)| e.end > base) {
            let (other, other_end) = (other.device.name(), other.end);
            return Err(BusError::Overlap { name, base, end, other, other_base, other_end });
        }
        self.devices.insert(base, Entry { end, device });
        Ok(())
    }

    /// The device whose range holds `addr`, and the offset into it.
    pub fn find(&self, addr: u64) -> Option<(&dyn BusDevice<E>, u64)> {
        let (base, entry) = self.devices.range(..=addr).next_back()?;
        (addr < entry.end).then(|| (entry.device.as_ref(), addr - base))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records its accesses; reads return the offset's low byte.
    struct Probe(&'static str, Mutex<Vec<(u32, u64)>>);

    impl BusDevice<u64> for Probe {
        fn name(&self) -> &'static str {
            self.0
        }
        fn read(&self, _: u32, offset: u64, data: &mut [u8]) -> Result<(), AccessError> {
            data.fill(offset as u8);
            Ok(())
        }
        fn write(&self, cpu: u32, offset: u64, _: &[u8]) -> Result<Done<u64>, AccessError> {
            self.1.lock().unwrap().push((cpu, offset));
            Ok(Done::Notify(offset))
        }
    }

    fn probe(name: &'static str) -> Arc<Probe> {
        Arc::new(Probe(name, Mutex::new(Vec::new())))
    }

    #[test]
    fn accesses_reach_the_device_at_their_offset() {
        let (a, b) = (probe("a"), probe("b"));
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x100, a.clone()).unwrap();
        bus.insert(0x1100, 0x10, b.clone()).unwrap();
        let (dev, off) = bus.find(0x1004).unwrap();
        assert_eq!((dev.name(), off), ("a", 4));
        assert_eq!(dev.write(1, off, &[0]).unwrap(), Done::Notify(4));
        let (dev, off) = bus.find(0x110f).unwrap();
        let mut data = [0; 2];
        dev.read(0, off, &mut data).unwrap();
        assert_eq!((dev.name(), data), ("b", [0xf, 0xf]));
        assert!(bus.find(0xfff).is_none() && bus.find(0x1110).is_none());
        assert_eq!(*a.1.lock().unwrap(), [(1, 4)]);
        assert!(b.1.lock().unwrap().is_empty());
    }

    #[test]
    fn overlapping_and_empty_ranges_are_refused() {
        let mut bus = Bus::new();
        bus.insert(0x1000, 0x100, probe("a")).unwrap();
        for (base, len) in [(0x1000, 1), (0xfff, 2), (0x10ff, 0x10), (0x800, 0x1000)] {
            let e = bus.insert(base, len, probe("b")).unwrap_err();
            assert!(matches!(e, BusError::Overlap { other: "a", .. }), "{base:#x}+{len:#x}: {e}");
        }
        assert_eq!(bus.insert(0x2000, 0, probe("c")), Err(BusError::BadRange { name: "c", base: 0x2000 }));
        assert!(matches!(bus.insert(u64::MAX, 2, probe("d")), Err(BusError::BadRange { .. })));
        bus.insert(0x1100, 1, probe("e")).unwrap();
        bus.insert(0xf00, 0x100, probe("f")).unwrap();
    }
}
