//! Events from the vCPU threads: each thread queues a [`VcpuEvent`]
//! (`vstate::events`, bounded per vCPU) and writes the wake EventFd; this
//! subscriber takes at most [`EVENTS_PER_TURN`] of them per wake-up and,
//! when more wait, wakes itself again, so a guest that rings its doorbells
//! as fast as it can never holds the loop from its timers, signals and
//! clients. Hypercalls (CPU online, ready, exit, panic, `--stop-above`,
//! HC_SWITCH for the switch subscriber), faults, and vCPU threads that
//! finished.
//!
//! What a guest can repeat at will costs the VMM a bounded amount: the
//! warnings are rate-limited (`ratelimit`), notifications a vCPU's share
//! of the queue cannot hold are counted and said (rate-limited), and the
//! `STOP_ABOVE` doorbell is acted on only with `--stop-above`, once (one
//! telemetry read, whatever the guest rings after).

use std::os::fd::AsRawFd;

use event_manager::{EventOps, Events, MutEventSubscriber};
use switcher::abi::{self, GuestStatus};

use super::lifecycle::Outcome;
use super::shared::Shared;
use super::shutdown::{ShutdownHandle, send_shutdown_interrupt};
use super::switching::SwitchHandle;
use crate::api::protocol::ShutdownCause;
use crate::devices::hypercall::Hypercall;
use crate::guest_misbehaved;
use crate::host_speed;
use crate::report::{self, GuestInfo};
use crate::vstate::events::Consumer;
use crate::vstate::memory;
use crate::vstate::vcpu::VcpuEvent;

/// Events handled per turn of the loop; the rest wait for the next turn.
pub const EVENTS_PER_TURN: usize = 64;

/// The vCPU threads' side of the queue, as `try_run` hands it over.
pub struct VcpuChannel {
    pub events: Consumer<Hypercall>,
    /// `--stop-above` was given: the STOP_ABOVE doorbell means something.
    pub stop_above: bool,
}

pub struct VcpuEvents {
    run: Shared,
    channel: VcpuChannel,
    finished_vcpus: u32,
    switching: SwitchHandle,
    shutdown: ShutdownHandle,
    /// The STOP_ABOVE doorbell was acted on (it is, once).
    stop_rung: bool,
}

impl VcpuEvents {
    pub fn new(run: &Shared, channel: VcpuChannel, switching: SwitchHandle, shutdown: ShutdownHandle) -> Self {
        Self { run: run.clone(), channel, finished_vcpus: 0, switching, shutdown, stop_rung: false }
    }

    fn on_event(&mut self, event: VcpuEvent<Hypercall>) {
        let run = &self.run;
        match event {
            VcpuEvent::Device { event: Hypercall::Switch(_), .. } => self.switching.borrow_mut().on_guest_notify(),
            VcpuEvent::Device { cpu, event: call } => self.on_hypercall(cpu, call),
            VcpuEvent::TripleFault { cpu } => {
                run.say(&format!(
                    "rtswitch: guest triple fault on cpu {cpu} (KVM_EXIT_SHUTDOWN): the guest hit an exception it could not handle"
                ));
                run.end(Outcome::TripleFault { cpu });
            }
            VcpuEvent::TextWrite { cpu, addr, len } => {
                run.say(&format!(
                    "guest fault: cpu {cpu} wrote {len} byte(s) to its own text at {addr:#x}, which the hypervisor keeps read-only (only the VMM patches it)"
                ));
                run.end(Outcome::TextWrite { cpu, addr });
            }
            VcpuEvent::Fault { cpu, what } => {
                run.say(&format!("vcpu{cpu} cannot run: {what}"));
                run.end(Outcome::VcpuFault { cpu, what });
            }
            VcpuEvent::Finished { cpu } => {
                self.finished_vcpus += 1;
                log::debug!("vcpu{cpu} finished ({} of {})", self.finished_vcpus, run.cpu_count);
            }
        }
    }

    fn on_hypercall(&mut self, cpu: u32, call: Hypercall) {
        let run = &self.run;
        match call {
            Hypercall::CpuOnline(n) => {
                if n >= run.cpu_count || n != cpu {
                    guest_misbehaved!(
                        "vcpu reported another cpu online",
                        "vcpu{cpu} reported cpu {n} online; ignored (expected its own index below {})",
                        run.cpu_count
                    );
                    return;
                }
                run.guest.borrow_mut().online_mask |= 1 << n;
            }
            Hypercall::Ready => self.on_ready(cpu),
            Hypercall::Exit(status) => run.end(Outcome::GuestExit(status)),
            Hypercall::Panic(p) => {
                run.say(&p.to_string());
                run.end(Outcome::GuestPanic(p));
            }
            // Routed to the switch subscriber by `on_event`.
            Hypercall::Switch(_) => {}
            // Written out by the vCPU thread itself.
            Hypercall::Console(_) => {}
            Hypercall::StopAbove(n) => self.on_stop_above(n),
        }
    }

    fn on_ready(&mut self, cpu: u32) {
        let run = &self.run;
        if run.life.borrow().ready_at().is_some() {
            guest_misbehaved!("vcpu reported ready again", "vcpu{cpu} reported ready again; ignored");
            return;
        }
        let online = run.guest.borrow().online_mask.count_ones();
        let elapsed = run.started.elapsed();
        if !run.life.borrow_mut().guest_ready(elapsed) {
            return;
        }
        if online != run.cpu_count {
            log::warn!("guest reported ready with {online} of {} CPUs online", run.cpu_count);
        }
        run.say(&format!(
            "guest ready in {:.1} ms ({online}/{} CPUs online; {:.1} ms after the vCPUs started)",
            elapsed.as_secs_f64() * 1e3,
            run.cpu_count,
            run.launched.get().elapsed().as_secs_f64() * 1e3
        ));
        if run.life.borrow().shutdown().is_some() {
            // A shutdown asked for during boot: its interrupt may have come
            // before the guest could take it; send it again now.
            send_shutdown_interrupt(run);
        }
        match memory::read_abi::<GuestStatus>(&run.mem, abi::GUEST_STATUS_ADDR) {
            Some(st) if st.magic == abi::ABI_MAGIC => {
                let host = host_speed::host_ps_per_iteration();
                run.say(&host_speed::describe(st.calib_ps_per_iter, host));
                let mut guest = run.guest.borrow_mut();
                guest.host_ps_per_iter = Some(host);
                guest.info = Some(GuestInfo {
                    calib_ps_per_iter: st.calib_ps_per_iter,
                    calib_iterations: st.calib_iterations,
                    calib_tsc_ticks: st.calib_tsc_ticks,
                    kernel_version: crate::guest_text::name(&st.kernel_version),
                });
                log::info!(
                    "guest calibration: {} iterations in {} TSC ticks at {} kHz",
                    st.calib_iterations,
                    st.calib_tsc_ticks,
                    run.tsc_khz
                );
            }
            _ => log::warn!("guest reported ready without filling in its status page"),
        }
    }

    /// `--stop-above`: prints the cause of the sample that crossed the
    /// threshold (the guest's stop report) and ends the run. Acted on
    /// once, and only with `--stop-above`.
    fn on_stop_above(&mut self, cpu: u32) {
        let run = &self.run;
        if !self.channel.stop_above {
            guest_misbehaved!(
                "STOP_ABOVE without --stop-above",
                "vcpu{cpu} rang the STOP_ABOVE doorbell, but this run has no --stop-above; ignored"
            );
            return;
        }
        if std::mem::replace(&mut self.stop_rung, true) {
            guest_misbehaved!(
                "STOP_ABOVE again",
                "vcpu{cpu} rang the STOP_ABOVE doorbell again; ignored (it is acted on once)"
            );
            return;
        }
        run.harvest();
        let (threshold, info) = {
            let telemetry = run.telemetry.borrow();
            (telemetry.workload().map_or(0, |w| w.stop_above_us), telemetry.stop_report())
        };
        let Some(info) = info else {
            guest_misbehaved!(
                "STOP_ABOVE without a stop report",
                "vcpu{cpu} signalled --stop-above without a complete stop report; ignored (from now on too)"
            );
            return;
        };
        let locks = crate::switch::locks::held_by(&run.mem, info.task_addr);
        for line in report::stop::render(&info, threshold, run.tsc_khz, &locks).lines() {
            run.say(line);
        }
        let reason = format!("--stop-above {threshold} us crossed on cpu {}", info.cpu);
        run.guest.borrow_mut().stop = Some(info);
        self.shutdown.borrow_mut().request(ShutdownCause::GuestShutdown, reason);
    }
}

impl MutEventSubscriber for VcpuEvents {
    fn process(&mut self, _events: Events, _ops: &mut EventOps) {
        let _ = self.channel.events.wake().read();
        let mut handled = 0;
        while handled < EVENTS_PER_TURN {
            let Some(ev) = self.channel.events.next() else { break };
            self.on_event(ev);
            handled += 1;
        }
        if handled == EVENTS_PER_TURN {
            // More may wait: the next turn takes them, after the others.
            if let Err(e) = self.channel.events.wake().write(1) {
                log::error!("cannot re-arm the vCPU event wake-up: {e}");
            }
        }
        for cpu in 0..self.channel.events.vcpus() {
            let dropped = self.channel.events.take_dropped(cpu);
            if dropped > 0 {
                guest_misbehaved!(
                    "doorbell notifications dropped",
                    "vcpu{cpu}: {dropped} doorbell notification(s) dropped: the guest rings faster than the VMM \
                     handles them (at most {} queued per vCPU)",
                    crate::vstate::events::PER_VCPU
                );
            }
        }
        if self.finished_vcpus == self.run.cpu_count && !self.run.life.borrow().exited() {
            self.run.end(Outcome::VcpuFault { cpu: 0, what: "every vCPU stopped without the guest exiting".into() });
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        super::fds::watch_all(ops, [self.channel.events.wake().as_raw_fd()]);
    }
}
