//! vCPU threads.
//!
//! One host thread per vCPU, named `vcpu<N>`, runs `KVM_RUN` in a loop and
//! handles the exits that reach userspace: MMIO goes to the device that the
//! MMIO bus (`bus`) maps at its address (the hypercall doorbell; console
//! output among its calls), a write to the guest's text ends the run, and
//! anything else is logged with its details. What the VMM must act on is
//! sent to the control thread as a [`VcpuEvent`] over a queue bounded per
//! vCPU (`events`: a device's notifications beyond its vCPU's share are
//! dropped and counted), with an EventFd to wake its epoll loop. `E` is
//! what the devices tell the control thread; this module names no device.
//! A vCPU thread blocks SIGINT, SIGTERM and SIGALRM, so they reach the
//! control thread (`signals`).
//!
//! ```text
//!   Created --start--> Running --(exit hypercall, panic, triple fault,
//!                         |        KVM error)--> Finished (thread ends)
//!                         +--kick(stop)--> Finished
//! ```
//!
//! Kick: the control thread sets the vCPU's `stop` flag, then sends the
//! kick signal to its thread. The signal handler sets `immediate_exit` in
//! the vCPU's own `kvm_run`, so a kick that lands just before `KVM_RUN`
//! makes it return at once (`EINTR`) instead of being lost; one that lands
//! during `KVM_RUN` interrupts it. Either way the loop then sees `stop`.

use std::cell::Cell;
use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::vstate::bus::{Bus, Done};
use crate::vstate::events::Producer;
use crate::vstate::hold::{Capture, HeldVcpu, HoldGate, Resume};
use kvm_bindings::{kvm_regs, kvm_run, kvm_sregs, kvm_vcpu_events};
use kvm_ioctls::{VcpuExit, VcpuFd};

/// What a vCPU thread tells the control thread; `E`: what a device said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VcpuEvent<E> {
    Device {
        cpu: u32,
        event: E,
    },
    /// `KVM_EXIT_SHUTDOWN`: the guest triple-faulted.
    TripleFault {
        cpu: u32,
    },
    /// The guest wrote to its text (a read-only memory slot).
    TextWrite {
        cpu: u32,
        addr: u64,
        len: usize,
    },
    /// KVM could not run the vCPU; `what` has the details.
    Fault {
        cpu: u32,
        what: String,
    },
    /// The thread has left its run loop.
    Finished {
        cpu: u32,
    },
}

thread_local! {
    /// This thread's `kvm_run`, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The kick signal: the first real-time signal.
pub fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn handle_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Only async-signal-safe work here: a thread-local read and one store.
    let run = KVM_RUN.with(|r| r.get());
    if !run.is_null() {
        // SAFETY: the pointer is this thread's own kvm_run mapping, set by
        // the vCPU loop before it first runs and valid while the VcpuFd
        // lives (the loop clears it before the fd is dropped).
        unsafe { std::ptr::addr_of_mut!((*run).immediate_exit).write_volatile(1) };
    }
}

/// Installs the kick handler (once, before any vCPU thread starts).
pub fn register_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), handle_kick)
}

/// The control thread's handle on a running vCPU.
pub struct VcpuHandle {
    pub cpu: u32,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// The host CPU time the thread used, in ns, written by the thread as
    /// it ends (u64::MAX before).
    cpu_ns: Arc<AtomicU64>,
}

impl VcpuHandle {
    /// Asks the vCPU to leave guest mode and end its thread.
    pub fn kick_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.kick();
    }

    /// Makes the vCPU leave guest mode and look at its flags and the gate.
    pub fn kick(&self) {
        if let Some(t) = &self.thread {
            // SAFETY: pthread_kill on a thread we own and have not joined;
            // the handler is installed before any vCPU thread starts.
            let rc = unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
            if rc != 0 && rc != libc::ESRCH {
                log::warn!("kicking vcpu{} failed: errno {rc}", self.cpu);
            }
        }
    }

    /// The host CPU time this vCPU's thread used (user and system), once
    /// the thread has ended; `None` before (or if it could not tell).
    pub fn cpu_time(&self) -> Option<Duration> {
        match self.cpu_ns.load(Ordering::Acquire) {
            u64::MAX => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Waits for the thread to end (after `kick_stop` or a final exit),
    /// until `deadline` at most; whether it ended. A thread still running
    /// then is left (it ends with the process).
    pub fn join_until(&mut self, deadline: Instant) -> bool {
        let Some(t) = self.thread.take() else { return true };
        while !t.is_finished() {
            if Instant::now() >= deadline {
                self.thread = Some(t);
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if t.join().is_err() {
            log::error!("vcpu{} thread panicked", self.cpu);
        }
        true
    }
}

/// Everything a vCPU thread needs besides its fd.
pub struct VcpuContext<E> {
    /// The devices by guest-physical address.
    pub mmio: Arc<Bus<E>>,
    /// This vCPU's end of the queue to the control thread.
    pub events: Producer<E>,
    /// The stop-machine gate (`hold`).
    pub gate: Arc<HoldGate>,
    /// The guest's text: a read-only memory slot; a write there exits.
    pub text: std::ops::Range<u64>,
    /// This thread's seccomp filter, installed before the first KVM_RUN.
    pub sandbox: Arc<crate::seccomp::Sandbox>,
}

impl<E> VcpuContext<E> {
    /// A final event: the thread's end, a fault (never dropped).
    fn send(&self, event: VcpuEvent<E>) {
        self.events.send_final(event);
    }
}

/// Blocks the signals meant for the control thread on this thread.
pub(crate) fn block_process_signals() {
    // SAFETY: sigemptyset/sigaddset fill a local sigset_t; pthread_sigmask
    // changes only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGALRM] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Starts vCPU `cpu`'s thread, named `vcpu<cpu>`.
pub fn spawn<E: Send + 'static>(cpu: u32, fd: VcpuFd, ctx: VcpuContext<E>) -> std::io::Result<VcpuHandle> {
    let stop = Arc::new(AtomicBool::new(false));
    let cpu_ns = Arc::new(AtomicU64::new(u64::MAX));
    let (thread_stop, thread_ns) = (stop.clone(), cpu_ns.clone());
    let thread = std::thread::Builder::new().name(format!("vcpu{cpu}")).spawn(move || {
        run_loop(cpu, fd, &ctx, &thread_stop);
        if let Some(t) = thread_cpu_time() {
            thread_ns.store(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX - 1), Ordering::Release);
        }
    })?;
    Ok(VcpuHandle { cpu, stop, thread: Some(thread), cpu_ns })
}

/// The host CPU time the calling thread has used (user and system).
pub fn thread_cpu_time() -> Option<Duration> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime(2) writes one timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// How one exit is to be followed up.
enum Next {
    Continue,
    Finish,
}

fn run_loop<E>(cpu: u32, mut fd: VcpuFd, ctx: &VcpuContext<E>, stop: &AtomicBool) {
    KVM_RUN.with(|r| r.set(fd.get_kvm_run() as *mut kvm_run));
    block_process_signals();
    let mut unexpected = 0u64;
    if let Err(e) = ctx.sandbox.enter(crate::seccomp::Thread::Vcpu(cpu)) {
        ctx.send(VcpuEvent::Fault { cpu, what: e.to_string() });
        stop.store(true, Ordering::Release);
    }
    // The last exit left an emulated MMIO or port access for the next
    // KVM_RUN to complete: until then the registers are not the vCPU's
    // real state (the KVM API's "completion" of userspace exits).
    let mut io_pending = false;
    // Nothing stored yet: a hold before the first KVM_RUN reads by ioctl.
    mark_sync_unstored(&mut fd);
    while !stop.load(Ordering::Acquire) {
        let resume = ctx.gate.pass(cpu, stop, |what| capture(&mut fd, what, &mut io_pending));
        if let Some(r) = resume
            && let Err(e) = apply_resume(&fd, r)
        {
            // Its code may have been patched with nothing to serialize it:
            // it must not run again.
            ctx.send(VcpuEvent::Fault { cpu, what: format!("cannot resume at the serializing stub: {e}") });
            break;
        }
        if stop.load(Ordering::Acquire) {
            break;
        }
        mark_sync_unstored(&mut fd);
        let next = match fd.run() {
            Ok(exit) => {
                io_pending = matches!(
                    exit,
                    VcpuExit::MmioRead(..) | VcpuExit::MmioWrite(..) | VcpuExit::IoIn(..) | VcpuExit::IoOut(..)
                );
                handle_exit(cpu, exit, ctx, &mut unexpected)
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                io_pending = false;
                fd.set_kvm_immediate_exit(0);
                Next::Continue
            }
            Err(e) => {
                ctx.send(VcpuEvent::Fault { cpu, what: format!("KVM_RUN failed: {e}") });
                Next::Finish
            }
        };
        if let Next::Finish = next {
            break;
        }
    }
    if let Some(rip) = fd.get_regs().ok().map(|r| r.rip) {
        log::debug!("vcpu{cpu} leaves its run loop at rip {rip:#x}");
    }
    KVM_RUN.with(|r| r.set(std::ptr::null_mut()));
    ctx.gate.gone(cpu);
    ctx.send(VcpuEvent::Finished { cpu });
}

/// A RIP no vCPU can have (non-canonical): written into kvm_run's synced
/// registers before each KVM_RUN, it says, if still there after, that
/// KVM stored nothing on that return (a return before the run, such as a
/// fatal signal while taking the vCPU's lock).
const SYNC_NOT_STORED: u64 = 0x8000_0000_0000_0000;

/// Whether KVM stores this vCPU's registers, system registers and events
/// into kvm_run on every return from KVM_RUN (`vm::create_vcpus` asks for
/// it where KVM_CAP_SYNC_REGS has all three).
fn syncs_regs(fd: &mut VcpuFd) -> bool {
    fd.get_kvm_run().kvm_valid_regs & SYNC_ALL == SYNC_ALL
}

/// The state KVM_CAP_SYNC_REGS can store into kvm_run: general and system
/// registers, pending events (all three, or the capture reads by ioctl).
pub(crate) const SYNC_ALL: u64 =
    (kvm_bindings::KVM_SYNC_X86_REGS | kvm_bindings::KVM_SYNC_X86_SREGS | kvm_bindings::KVM_SYNC_X86_EVENTS) as u64;

/// Marks the synced registers as not stored, before a KVM_RUN.
fn mark_sync_unstored(fd: &mut VcpuFd) {
    if syncs_regs(fd) {
        fd.sync_regs_mut().regs.rip = SYNC_NOT_STORED;
    }
}

/// The registers, system registers and events as KVM stored them into
/// kvm_run on the last return from KVM_RUN (no ioctl: on this project's
/// nested KVM each of KVM_GET_REGS, _SREGS and _VCPU_EVENTS costs about
/// 8 µs, so reading them was most of a held vCPU's capture), when it did.
fn synced(fd: &mut VcpuFd) -> Option<(kvm_regs, kvm_sregs, kvm_vcpu_events)> {
    if !syncs_regs(fd) {
        return None;
    }
    let s = fd.sync_regs();
    (s.regs.rip != SYNC_NOT_STORED).then_some((s.regs, s.sregs, s.events))
}

/// What a vCPU parking at the gate reads of itself (`hold::Capture`):
/// from kvm_run where KVM stored it there on its last return from
/// KVM_RUN (`synced`), else by ioctls. For a full capture it first
/// completes an MMIO or port access its last exit left (KVM_RUN with
/// `immediate_exit` completes it and returns), so that its registers are
/// its real state; one it cannot complete leaves the capture not `full`.
fn capture(fd: &mut VcpuFd, what: Capture, io_pending: &mut bool) -> HeldVcpu {
    if what == Capture::Rip {
        let rip = match synced(fd) {
            Some((regs, ..)) => Ok(regs.rip),
            None => fd.get_regs().map(|r| r.rip),
        };
        return HeldVcpu { rip: rip.unwrap_or(0), ..HeldVcpu::default() };
    }
    if *io_pending {
        let rip = synced(fd).map_or_else(|| fd.get_regs().map_or(0, |r| r.rip), |(r, ..)| r.rip);
        fd.set_kvm_immediate_exit(1);
        mark_sync_unstored(fd);
        let done = matches!(fd.run(), Err(e) if e.errno() == libc::EINTR);
        fd.set_kvm_immediate_exit(0);
        if !done {
            return HeldVcpu { rip, ..HeldVcpu::default() };
        }
        // The completed access moved it on.
        *io_pending = false;
    }
    let state = match synced(fd) {
        Some(s) => Some(s),
        None => match (fd.get_regs(), fd.get_sregs(), fd.get_vcpu_events()) {
            (Ok(r), Ok(s), Ok(e)) => Some((r, s, e)),
            _ => None,
        },
    };
    let Some((regs, sregs, events)) = state else {
        return HeldVcpu::default();
    };
    let event_pending = events.exception.injected != 0
        || events.exception.pending != 0
        || events.interrupt.injected != 0
        || events.nmi.injected != 0
        || events.nmi.pending != 0;
    HeldVcpu {
        rip: regs.rip,
        rsp: regs.rsp,
        rbp: regs.rbp,
        rflags: regs.rflags,
        cs: sregs.cs.selector,
        ss: sregs.ss.selector,
        full: true,
        event_pending,
    }
}

/// Resumes a held vCPU where the control thread said (`hold::Resume`):
/// its rip and rsp, and, if asked, an interrupt shadow (STI blocking) so
/// that the instruction there runs before any maskable interrupt.
fn apply_resume(fd: &VcpuFd, r: Resume) -> Result<(), kvm_ioctls::Error> {
    let mut regs = fd.get_regs()?;
    if r.shadow {
        let mut events = fd.get_vcpu_events()?;
        events.interrupt.shadow = kvm_bindings::KVM_X86_SHADOW_INT_STI as u8;
        events.flags |= kvm_bindings::KVM_VCPUEVENT_VALID_SHADOW;
        fd.set_vcpu_events(&events)?;
    }
    regs.rip = r.rip;
    regs.rsp = r.rsp;
    fd.set_regs(&regs)
}

fn handle_exit<E>(cpu: u32, exit: VcpuExit<'_>, ctx: &VcpuContext<E>, unexpected: &mut u64) -> Next {
    match exit {
        VcpuExit::MmioWrite(addr, data) if let Some((device, offset)) = ctx.mmio.find(addr) => {
            match device.write(cpu, offset, data) {
                Ok(Done::Handled) => Next::Continue,
                Ok(Done::Notify(event)) => {
                    ctx.events.notify(VcpuEvent::Device { cpu, event });
                    Next::Continue
                }
                Ok(Done::NotifyAndStop(event)) => {
                    ctx.send(VcpuEvent::Device { cpu, event });
                    Next::Finish
                }
                Err(e) => {
                    log_unexpected(cpu, unexpected, format_args!("bad write to the {}: {e}", device.name()));
                    Next::Continue
                }
            }
        }
        VcpuExit::MmioRead(addr, data) => {
            let refused = match ctx.mmio.find(addr) {
                Some((device, offset)) => match device.read(cpu, offset, data) {
                    Ok(()) => None,
                    Err(e) => Some(format!("of the {} ({e})", device.name())),
                },
                None => Some("(no device there)".to_string()),
            };
            if let Some(what) = refused {
                data.fill(0xff);
                log_unexpected(
                    cpu,
                    unexpected,
                    format_args!("MMIO read of {} bytes at {addr:#x} {what} returns all ones", data.len()),
                );
            }
            Next::Continue
        }
        VcpuExit::MmioWrite(addr, data) if ctx.text.contains(&addr) => {
            ctx.send(VcpuEvent::TextWrite { cpu, addr, len: data.len() });
            Next::Finish
        }
        VcpuExit::MmioWrite(addr, data) => {
            log_unexpected(
                cpu,
                unexpected,
                format_args!("MMIO write of {data:02x?} at {addr:#x} (no device there) ignored"),
            );
            Next::Continue
        }
        VcpuExit::IoOut(port, data) => {
            log_unexpected(
                cpu,
                unexpected,
                format_args!("write of {data:02x?} to I/O port {port:#x} (there are none) ignored"),
            );
            Next::Continue
        }
        VcpuExit::IoIn(port, data) => {
            data.fill(0xff);
            log_unexpected(
                cpu,
                unexpected,
                format_args!("read of {} bytes from I/O port {port:#x} (there are none) returns all ones", data.len()),
            );
            Next::Continue
        }
        VcpuExit::Hlt => {
            log_unexpected(cpu, unexpected, format_args!("HLT exit although the in-kernel LAPIC handles halts"));
            Next::Continue
        }
        VcpuExit::Shutdown => {
            ctx.send(VcpuEvent::TripleFault { cpu });
            Next::Finish
        }
        VcpuExit::FailEntry(reason, entry_cpu) => {
            ctx.send(VcpuEvent::Fault {
                cpu,
                what: format!("KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {reason:#x} on host cpu {entry_cpu}"),
            });
            Next::Finish
        }
        VcpuExit::InternalError => {
            ctx.send(VcpuEvent::Fault {
                cpu,
                what: "KVM_EXIT_INTERNAL_ERROR (e.g. an instruction KVM could not emulate)".into(),
            });
            Next::Finish
        }
        VcpuExit::SystemEvent(kind, data) => {
            ctx.send(VcpuEvent::Fault { cpu, what: format!("KVM_EXIT_SYSTEM_EVENT type {kind} data {data:x?}") });
            Next::Finish
        }
        VcpuExit::Intr => Next::Continue,
        other => {
            log_unexpected(cpu, unexpected, format_args!("unexpected exit {other:?}"));
            Next::Continue
        }
    }
}

/// Logs an unexpected exit, rate-limited (`ratelimit`), so a guest in a
/// loop cannot flood the log.
fn log_unexpected(cpu: u32, count: &mut u64, what: std::fmt::Arguments<'_>) {
    *count = count.saturating_add(1);
    crate::guest_misbehaved!("unexpected vCPU exit", "vcpu{cpu}: {what} (unexpected exit #{count})");
}
