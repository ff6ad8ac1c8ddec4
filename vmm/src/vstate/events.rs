//! The vCPU threads' queue to the control thread, bounded per vCPU.
//!
//! A guest decides how often its vCPUs exit, so it decides how fast
//! device notifications (doorbells) arrive; an unbounded queue let a
//! flooding guest grow the VMM's memory and starve the control loop. Here:
//!
//! - a **notification** (`notify`: a device's event, e.g. a doorbell) takes
//!   one of its vCPU's [`PER_VCPU`] slots until the control thread has
//!   taken it off the queue; with every slot taken it is dropped and
//!   counted (`take_dropped`), so a vCPU that rings faster than the VMM
//!   handles its rings loses the excess and never another vCPU's room;
//! - a **final** event (`send_final`: the vCPU's exit or fault, and its
//!   `Finished`) always goes through: a thread sends at most two, so they
//!   are bounded by the vCPU count.
//!
//! Every send writes the wake EventFd the control loop watches; the
//! control side takes events one at a time (`next`), so the loop can
//! bound its work per turn.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};

use vmm_sys_util::eventfd::EventFd;

use super::vcpu::VcpuEvent;

/// Notifications of one vCPU queued at most.
pub const PER_VCPU: u32 = 64;

/// One vCPU's share of the queue.
#[derive(Default)]
struct Slots {
    queued: AtomicU32,
    dropped: AtomicU64,
}

/// An event as queued: whether it holds a notification slot.
struct Queued<E> {
    event: VcpuEvent<E>,
    slot: Option<u32>,
}

/// A vCPU thread's end of the queue.
pub struct Producer<E> {
    cpu: u32,
    tx: Sender<Queued<E>>,
    wake: Arc<EventFd>,
    slots: Arc<Vec<Slots>>,
}

/// The control thread's end.
pub struct Consumer<E> {
    rx: Receiver<Queued<E>>,
    wake: Arc<EventFd>,
    slots: Arc<Vec<Slots>>,
}

/// A queue for `vcpus` vCPUs: one producer per vCPU and the consumer.
pub fn queue<E>(vcpus: u32, wake: Arc<EventFd>) -> (Vec<Producer<E>>, Consumer<E>) {
    let (tx, rx) = channel();
    let slots: Arc<Vec<Slots>> = Arc::new((0..vcpus).map(|_| Slots::default()).collect());
    let producers =
        (0..vcpus).map(|cpu| Producer { cpu, tx: tx.clone(), wake: wake.clone(), slots: slots.clone() }).collect();
    (producers, Consumer { rx, wake, slots })
}

impl<E> Producer<E> {
    fn slots(&self) -> &Slots {
        &self.slots[self.cpu as usize]
    }

    /// Queues a notification, or drops and counts it when this vCPU's
    /// slots are all taken.
    pub fn notify(&self, event: VcpuEvent<E>) {
        let s = self.slots();
        if s.queued.fetch_add(1, Ordering::AcqRel) >= PER_VCPU {
            s.queued.fetch_sub(1, Ordering::AcqRel);
            s.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.push(Queued { event, slot: Some(self.cpu) });
    }

    /// Queues a final event (an exit, a fault, `Finished`): never dropped.
    pub fn send_final(&self, event: VcpuEvent<E>) {
        self.push(Queued { event, slot: None });
    }

    fn push(&self, q: Queued<E>) {
        // The control thread outlives the vCPU threads; a failed send only
        // means it is already tearing down.
        let _ = self.tx.send(q);
        if let Err(e) = self.wake.write(1) {
            crate::warn_limited!("vcpu wake", "cannot wake the control thread: {e}");
        }
    }
}

impl<E> Consumer<E> {
    /// The next event, if any (frees its slot).
    pub fn next(&self) -> Option<VcpuEvent<E>> {
        let q = self.rx.try_recv().ok()?;
        if let Some(cpu) = q.slot {
            self.slots[cpu as usize].queued.fetch_sub(1, Ordering::AcqRel);
        }
        Some(q.event)
    }

    /// Notifications of `cpu` dropped since the last call.
    pub fn take_dropped(&self, cpu: u32) -> u64 {
        self.slots.get(cpu as usize).map_or(0, |s| s.dropped.swap(0, Ordering::Relaxed))
    }

    /// The EventFd every send writes.
    pub fn wake(&self) -> &EventFd {
        &self.wake
    }

    pub fn vcpus(&self) -> u32 {
        self.slots.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(cpu: u32, n: u32) -> VcpuEvent<u32> {
        VcpuEvent::Device { cpu, event: n }
    }

    #[test]
    fn a_flooding_vcpu_loses_its_excess_and_nothing_of_the_others() {
        let wake = Arc::new(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let (p, c) = queue::<u32>(2, wake);
        for n in 0..10_000 {
            p[0].notify(ev(0, n));
        }
        p[1].notify(ev(1, 7));
        p[0].send_final(VcpuEvent::Finished { cpu: 0 });
        let mut got = Vec::new();
        while let Some(e) = c.next() {
            got.push(e);
        }
        assert_eq!(got.len(), PER_VCPU as usize + 2, "cpu 0's slots, cpu 1's event, the final event");
        assert!(got.contains(&ev(1, 7)) && got.contains(&VcpuEvent::Finished { cpu: 0 }));
        assert_eq!(c.take_dropped(0), 10_000 - u64::from(PER_VCPU));
        assert_eq!(c.take_dropped(0), 0);
        // Taken off the queue, the slots are free again.
        p[0].notify(ev(0, 1));
        assert_eq!(c.next(), Some(ev(0, 1)));
    }
}
