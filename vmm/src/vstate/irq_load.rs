//! `--irq-load RATE[,WORK_US]`: a device interrupt on every vCPU, RATE
//! times a second, delivered the way a real device's MSI is: through an
//! irqfd. Each vCPU gets one GSI routed as an MSI to its LAPIC on
//! `vector::DEVICE` and one EventFd registered for it (`KVM_IRQFD`); the
//! control loop's timer writes every EventFd once per period, and KVM
//! injects the interrupt without the VMM touching the vCPU.
//!
//! Edge-triggered MSIs coalesce: a write while the previous interrupt is
//! still pending in the LAPIC's IRR raises one interrupt, not two, as on
//! real hardware. A timer period the control loop missed (its thread was
//! descheduled) is counted in [`IrqLoadCounts::late_periods`], not made up.

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use kvm_bindings::{KVM_IRQ_ROUTING_MSI, KvmIrqRouting, kvm_irq_routing_entry};
use kvm_ioctls::VmFd;
use switcher::abi::vector;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::timerfd::TimerFd;

/// The first GSI the device uses (above the IOAPIC's 24 pins).
const FIRST_GSI: u32 = 24;

#[derive(Debug, thiserror::Error)]
pub enum IrqLoadError {
    #[error("--irq-load: cannot route the device interrupt as an MSI (KVM_SET_GSI_ROUTING): {0}")]
    Routing(kvm_ioctls::Error),
    #[error("--irq-load: cannot register the irqfd of vcpu{cpu} (KVM_IRQFD): {e}")]
    Irqfd { cpu: u32, e: kvm_ioctls::Error },
    #[error("--irq-load: cannot create {0}: {1}")]
    Fd(&'static str, std::io::Error),
}

/// What the injector did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IrqLoadCounts {
    /// Timer periods acted on (one interrupt per vCPU each).
    pub periods: u64,
    /// Periods that passed while the control loop did not run (no
    /// interrupt was raised for them).
    pub late_periods: u64,
    /// Writes that failed (the interrupt of that period on that vCPU).
    pub failed: u64,
}

/// The device: its irqfds and its timer.
pub struct IrqInjector {
    fds: Vec<EventFd>,
    timer: TimerFd,
    counts: IrqLoadCounts,
}

impl IrqInjector {
    /// Routes one MSI per vCPU, registers its irqfd, arms the timer.
    pub fn new(vm: &VmFd, cpus: u32, rate_hz: u32) -> Result<Self, IrqLoadError> {
        let mut routing = KvmIrqRouting::new(cpus as usize)
            .map_err(|e| IrqLoadError::Fd("the routing table", std::io::Error::other(format!("{e:?}"))))?;
        for (cpu, entry) in routing.as_mut_slice().iter_mut().enumerate() {
            let mut e =
                kvm_irq_routing_entry { gsi: FIRST_GSI + cpu as u32, type_: KVM_IRQ_ROUTING_MSI, ..Default::default() };
            // Fixed delivery, physical destination = the vCPU's APIC id.
            e.u.msi.address_lo = 0xfee0_0000 | ((cpu as u32 & 0xff) << 12);
            e.u.msi.address_hi = 0;
            e.u.msi.data = u32::from(vector::DEVICE);
            *entry = e;
        }
        vm.set_gsi_routing(&routing).map_err(IrqLoadError::Routing)?;
        let mut fds = Vec::with_capacity(cpus as usize);
        for cpu in 0..cpus {
            let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| IrqLoadError::Fd("an eventfd", e))?;
            vm.register_irqfd(&fd, FIRST_GSI + cpu).map_err(|e| IrqLoadError::Irqfd { cpu, e })?;
            fds.push(fd);
        }
        let mut timer = TimerFd::new().map_err(|e| IrqLoadError::Fd("a timerfd", e.into()))?;
        let period = Duration::from_nanos(1_000_000_000 / u64::from(rate_hz.max(1)));
        timer.reset(period, Some(period)).map_err(|e| IrqLoadError::Fd("the timer", e.into()))?;
        Ok(Self { fds, timer, counts: IrqLoadCounts::default() })
    }

    /// The timer's fd (the control loop watches it).
    pub fn timer_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }

    /// The timer fired: one interrupt on every vCPU.
    pub fn on_timer(&mut self) {
        let expirations = self.timer.wait().unwrap_or(1).max(1);
        self.counts.periods += 1;
        self.counts.late_periods += expirations - 1;
        for fd in &self.fds {
            if fd.write(1).is_err() {
                self.counts.failed += 1;
            }
        }
    }

    pub fn counts(&self) -> IrqLoadCounts {
        self.counts
    }
}
