//! What the control loop's subscribers share: the VM, its memory and
//! vCPUs, the console, the lifecycle, the telemetry reader, and what the
//! guest told the host during the run.
//!
//! One [`Run`] per run, behind an `Rc` ([`Shared`]): the loop is
//! single-threaded (event-manager calls one subscriber at a time on the
//! control thread), so a reference count and `RefCell`s on the few parts
//! that change are enough; `Arc<Mutex<..>>` would only add lock calls that
//! cannot contend, and would let the type travel to threads it must not
//! (the vCPU threads get only what `VcpuContext` lends them). The
//! `RefCell`s are borrowed for one statement or one short method at a time
//! and never across a call into another subscriber.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use crate::devices::console::Console;
use crate::report::GuestInfo;
use crate::telemetry::{StopInfo, TelemetryReader};
use crate::vstate::hold::HoldGate;
use crate::vstate::memory::GuestMemory;
use crate::vstate::vcpu::VcpuHandle;
use crate::vstate::vm;

use super::lifecycle::{Lifecycle, Outcome, State};

/// The run, as every subscriber sees it.
pub type Shared = Rc<Run>;

/// The machine and the run's shared state.
pub struct Run {
    pub started: Instant,
    /// When the vCPUs were let run: at their spawn, or at `cont` in a
    /// `--paused` run.
    pub launched: Cell<Instant>,
    pub console: Arc<Console>,
    pub vm: kvm_ioctls::VmFd,
    pub mem: Arc<GuestMemory>,
    pub cpu_count: u32,
    pub tsc_khz: u32,
    /// The stop-machine gate the vCPU threads pass before every KVM_RUN.
    pub gate: Arc<HoldGate>,
    vcpus: RefCell<Vec<VcpuHandle>>,
    pub life: RefCell<Lifecycle>,
    /// The latency telemetry, read once a second, per switch, and after the run.
    pub telemetry: RefCell<TelemetryReader>,
    pub guest: RefCell<GuestFacts>,
    /// The kernel's code as a stack walk needs it (`stacks`), or why not.
    pub code: Result<switcher::stackwalk::GuestCode, String>,
}

/// What the guest reported during the run (for the end report).
#[derive(Debug, Default)]
pub struct GuestFacts {
    /// CPUs that made HC_CPU_ONLINE.
    pub online_mask: u64,
    /// Its status page, read when it reported ready.
    pub info: Option<GuestInfo>,
    /// This host's speed on the guest's calibration loop.
    pub host_ps_per_iter: Option<u64>,
    /// `--stop-above`: the report of the sample that stopped the run.
    pub stop: Option<StopInfo>,
}

/// The machine [`Run::new`] takes over.
pub struct Machine {
    pub started: Instant,
    /// `--paused`: the gate is closed and the run waits for `cont`.
    pub paused: bool,
    pub console: Arc<Console>,
    pub vm: kvm_ioctls::VmFd,
    pub mem: Arc<GuestMemory>,
    pub tsc_khz: u32,
    pub gate: Arc<HoldGate>,
    pub vcpus: Vec<VcpuHandle>,
    pub telemetry: TelemetryReader,
    pub code: Result<switcher::stackwalk::GuestCode, String>,
}

impl Run {
    pub fn new(m: Machine) -> Shared {
        Rc::new(Self {
            started: m.started,
            launched: Cell::new(Instant::now()),
            console: m.console,
            vm: m.vm,
            mem: m.mem,
            cpu_count: m.vcpus.len() as u32,
            tsc_khz: m.tsc_khz,
            gate: m.gate,
            vcpus: RefCell::new(m.vcpus),
            life: RefCell::new(Lifecycle::new(m.paused)),
            telemetry: RefCell::new(m.telemetry),
            guest: RefCell::new(GuestFacts::default()),
            code: m.code,
        })
    }

    /// One VMM line for the user (stderr, between guest console lines).
    pub fn say(&self, line: &str) {
        self.console.report(&format!("rtswitch: {line}"));
    }

    pub fn state(&self) -> State {
        self.life.borrow().state()
    }

    /// `cont`: lets the held vCPUs of a `--paused` run start the guest;
    /// false (nothing changes) when the run is not in Prelaunch.
    pub fn launch(&self) -> bool {
        if !self.life.borrow_mut().start() {
            return false;
        }
        self.launched.set(Instant::now());
        self.gate.open();
        self.say("cont: the guest starts");
        true
    }

    /// Ends the run (the loop stops after this turn); the first outcome wins.
    pub fn end(&self, outcome: Outcome) {
        self.life.borrow_mut().end(outcome);
    }

    /// Reads the telemetry records the guest published since the last read.
    pub fn harvest(&self) {
        self.telemetry.borrow_mut().harvest();
    }

    /// Interrupts CPU 0 with the host-request vector.
    pub fn interrupt_guest(&self) -> Result<(), vm::VmError> {
        vm::send_msi(&self.vm, 0, switcher::abi::vector::HOST_REQUEST)
    }

    /// Kicks every vCPU out of guest mode.
    pub fn kick_all(&self) {
        for v in self.vcpus.borrow().iter() {
            v.kick();
        }
    }

    /// Kicks vCPU 0 (to take an interrupt now even if it is busy in
    /// emulated ring 0).
    pub fn kick_first(&self) {
        if let Some(v) = self.vcpus.borrow().first() {
            v.kick();
        }
    }

    /// The bit mask naming every vCPU.
    pub fn all_vcpus_mask(&self) -> u64 {
        let n = self.cpu_count;
        if n >= 64 { u64::MAX } else { (1u64 << n) - 1 }
    }

    /// The host CPU time each vCPU thread used, once it has ended.
    pub fn vcpu_cpu_times(&self) -> Vec<Option<std::time::Duration>> {
        self.vcpus.borrow().iter().map(VcpuHandle::cpu_time).collect()
    }

    /// Stops every vCPU thread and joins it, waiting at most `limit`
    /// in all: a thread that has not ended by then (stuck in the kernel,
    /// say) is named and left to end with the process, so the report
    /// still comes.
    pub fn stop_vcpus(&self, limit: std::time::Duration) {
        let mut vcpus = self.vcpus.borrow_mut();
        for v in vcpus.iter() {
            v.kick_stop();
        }
        let deadline = Instant::now() + limit;
        let mut stuck = Vec::new();
        for v in vcpus.iter_mut() {
            if !v.join_until(deadline) {
                stuck.push(format!("vcpu{}", v.cpu));
            }
        }
        if !stuck.is_empty() {
            self.say(&format!(
                "warning: {} did not stop within {:.1} s of being asked; the report goes on without them",
                stuck.join(", "),
                limit.as_secs_f64()
            ));
        }
    }
}
