//! The stop-machine gate: how the control thread holds every vCPU outside
//! guest mode (for the runtime switch) and releases them.
//!
//! ```text
//!   control thread                          vCPU thread N
//!   close(capture): closed = true
//!   kick every vCPU (signal) ------------>  KVM_RUN returns (EINTR, or at
//!                                           once via immediate_exit)
//!                                           loop top: gate closed ->
//!                                             held[N] = what it stopped at
//!                                             (RIP; with Capture::Full its
//!                                             registers, CPL, pending events),
//!                                             held_mask |= 1<<N, notify
//!   wait_all_held(deadline) <-------------    wait while closed
//!   ... read, patch guest memory ...
//!   set_resume(N, ..) (optional)
//!   open(): closed = false, notify ------>    held_mask &= !(1<<N); CPUID
//!                                           (see `serialize`); takes its
//!                                           resume, if any (sets its regs);
//!                                           KVM_RUN
//! ```
//!
//! A kick can never be lost: the flag is set before the signal, the vCPU
//! checks the flag before every KVM_RUN, and a signal that lands between
//! that check and KVM_RUN sets `immediate_exit`, so KVM_RUN returns at once.
//! A vCPU asked to stop while held leaves the gate and ends its thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a held vCPU reads of itself as it parks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Capture {
    /// Its RIP only.
    #[default]
    Rip,
    /// Its registers, privilege level and pending events (a switch in one
    /// blackout, `x-query-stacks`).
    Full,
}

/// Where a held vCPU stopped, as it published it when it parked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeldVcpu {
    pub rip: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rflags: u64,
    pub cs: u16,
    pub ss: u16,
    /// Everything beyond `rip` was read ([`Capture::Full`]) and is the
    /// vCPU's consistent state (no emulated MMIO or port access left to
    /// complete).
    pub full: bool,
    /// KVM has an event to deliver at the next entry (an injected or
    /// pending exception, interrupt or NMI): the vCPU runs its handler
    /// before anything else.
    pub event_pending: bool,
}

impl HeldVcpu {
    /// The privilege level it stopped at.
    pub fn cpl(&self) -> u16 {
        self.cs & 3
    }
}

/// Where a held vCPU resumes instead of where it stopped: its rip and
/// rsp (the rest of its registers as they are), and whether it resumes
/// in an interrupt shadow (no maskable interrupt before the first
/// instruction there has run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resume {
    pub rip: u64,
    pub rsp: u64,
    pub shadow: bool,
}

struct GateState {
    closed: bool,
    capture: Capture,
    /// vCPUs parked at the gate, one bit each.
    held_mask: u64,
    /// vCPU threads that have ended (they count as held: they run no guest code).
    gone_mask: u64,
    /// Where each held vCPU stopped.
    held: [HeldVcpu; 64],
    /// Where each vCPU resumes when the gate opens (taken as it leaves).
    resume: [Option<Resume>; 64],
}

impl Default for GateState {
    fn default() -> Self {
        Self {
            closed: false,
            capture: Capture::Rip,
            held_mask: 0,
            gone_mask: 0,
            held: [HeldVcpu::default(); 64],
            resume: [None; 64],
        }
    }
}

/// Shared by the control thread and every vCPU thread.
#[derive(Default)]
pub struct HoldGate {
    /// Fast-path copy of `closed` for the vCPU loop.
    closed_hint: AtomicBool,
    state: Mutex<GateState>,
    cv: Condvar,
}

impl HoldGate {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the gate; the caller then kicks every vCPU.
    pub fn close(&self) {
        self.close_with(Capture::Rip);
    }

    /// Closes the gate; each vCPU reads `capture` of itself as it parks.
    pub fn close_with(&self, capture: Capture) {
        let mut st = self.lock();
        st.closed = true;
        st.capture = capture;
        st.resume = [None; 64];
        drop(st);
        self.closed_hint.store(true, Ordering::Release);
    }

    /// Waits until every vCPU in `all_mask` is held (or gone), at most
    /// until `deadline`. On timeout returns the mask of vCPUs not held.
    pub fn wait_all_held(&self, all_mask: u64, deadline: Instant) -> Result<(), u64> {
        let mut st = self.lock();
        loop {
            let missing = all_mask & !(st.held_mask | st.gone_mask);
            if missing == 0 {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(missing);
            }
            st = self.cv.wait_timeout(st, deadline - now).map(|(g, _)| g).unwrap_or_else(|p| p.into_inner().0);
        }
    }

    /// Opens the gate: every held vCPU re-enters the guest.
    pub fn open(&self) {
        let mut st = self.lock();
        st.closed = false;
        self.closed_hint.store(false, Ordering::Release);
        drop(st);
        self.cv.notify_all();
    }

    /// The RIP each vCPU of `mask` stopped at, while they are held.
    pub fn held_rips(&self, mask: u64) -> Vec<(u32, u64)> {
        self.held(mask).into_iter().map(|(c, h)| (c, h.rip)).collect()
    }

    /// Where each vCPU of `mask` stopped, while they are held.
    pub fn held(&self, mask: u64) -> Vec<(u32, HeldVcpu)> {
        let st = self.lock();
        (0..64).filter(|&c| mask & st.held_mask & (1 << c) != 0).map(|c| (c, st.held[c as usize])).collect()
    }

    /// While `cpu` is held: where it resumes when the gate opens (once).
    pub fn set_resume(&self, cpu: u32, resume: Resume) {
        if let Some(slot) = self.lock().resume.get_mut(cpu as usize) {
            *slot = Some(resume);
        }
    }

    /// vCPU side: parks `cpu` while the gate is closed (unless `stop` is
    /// set), recording where it stopped (`capture`, asked only when it
    /// parks, with what the gate wants read). Returns quickly when the
    /// gate is open; otherwise, once released, where to resume if the
    /// control thread said so.
    pub fn pass(&self, cpu: u32, stop: &AtomicBool, capture: impl FnOnce(Capture) -> HeldVcpu) -> Option<Resume> {
        if !self.closed_hint.load(Ordering::Acquire) {
            return None;
        }
        let want = self.lock().capture;
        let held = capture(want);
        let bit = 1u64 << cpu;
        let mut st = self.lock();
        if !st.closed {
            return None;
        }
        st.held[cpu as usize % 64] = held;
        st.held_mask |= bit;
        self.cv.notify_all();
        while st.closed && !stop.load(Ordering::Acquire) {
            st = self
                .cv
                .wait_timeout(st, Duration::from_millis(50))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        st.held_mask &= !bit;
        let resume = st.resume[cpu as usize % 64].take();
        drop(st);
        serialize();
        resume
    }

    /// vCPU side: the thread has ended.
    pub fn gone(&self, cpu: u32) {
        self.lock().gone_mask |= 1u64 << cpu;
        self.cv.notify_all();
    }
}

/// A serializing instruction on this thread's core. A vCPU leaving the
/// gate may be about to run guest text the control thread rewrote while it
/// was held: the Intel SDM's cross-modifying-code rule asks the processor
/// that runs modified code to serialize after the write and before it
/// fetches that code, and this thread's core is the one its guest code
/// runs on next (through KVM_RUN, on this thread). The guest's own
/// serialize IPI, acknowledged before its tasks thaw, comes later; tasks
/// exempt from the freezer may run patched sites before it.
fn serialize() {
    // CPUID is serializing (Intel SDM vol. 3, "Serializing Instructions").
    #[cfg(target_arch = "x86_64")]
    let _ = core::arch::x86_64::__cpuid(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn holds_and_releases_threads() {
        let gate = Arc::new(HoldGate::new());
        let stop = Arc::new(AtomicBool::new(false));
        gate.close();
        let mut threads = Vec::new();
        for cpu in 0..3u32 {
            let (g, s) = (gate.clone(), stop.clone());
            threads.push(std::thread::spawn(move || {
                g.pass(cpu, &s, |_| HeldVcpu { rip: 0x1000 + u64::from(cpu), ..HeldVcpu::default() })
            }));
        }
        assert_eq!(gate.wait_all_held(0b111, Instant::now() + Duration::from_secs(5)), Ok(()));
        assert!(threads.iter().all(|t| !t.is_finished()), "held threads stay held");
        assert_eq!(gate.held_rips(0b101), vec![(0, 0x1000), (2, 0x1002)], "where each held vCPU stopped");
        let resume = Resume { rip: 0x2000, rsp: 0x3000, shadow: true };
        gate.set_resume(1, resume);
        gate.open();
        let resumed: Vec<Option<Resume>> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(resumed, vec![None, Some(resume), None], "only vCPU 1 was told where to resume");
    }

    #[test]
    fn reports_the_vcpus_that_did_not_stop() {
        let gate = HoldGate::new();
        gate.close();
        gate.gone(1);
        assert_eq!(gate.wait_all_held(0b11, Instant::now() + Duration::from_millis(20)), Err(0b01));
    }

    #[test]
    fn an_open_gate_does_not_block() {
        let gate = HoldGate::new();
        assert_eq!(gate.pass(0, &AtomicBool::new(false), |_| HeldVcpu::default()), None);
    }
}
