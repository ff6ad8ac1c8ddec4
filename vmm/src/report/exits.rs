//! Exits per activation: how often a measuring CPU left the guest for the
//! hypervisor, by cause (`switcher::telemetry::exit_cause`), over all of
//! its activations and on the path from the timer interrupt that served a
//! deadline to the thread it woke (docs/latency.md, "Exits"). Each exit
//! costs tens of µs where the host emulates the operation, so the second
//! figure is latency spent before the thread could run.

use serde::{Deserialize, Serialize};
use switcher::telemetry::exit_cause;

use crate::telemetry::CpuSnapshot;

/// Exit counts by cause.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitCounts {
    /// Writes of the LAPIC timer.
    pub timer: u64,
    /// EOIs written to the LAPIC (PV EOI could not skip them).
    pub eoi: u64,
    /// Writes of the interrupt command register (IPIs).
    pub ipi: u64,
    /// Doorbells (hypercalls, console).
    pub doorbell: u64,
    /// Entries into the ring-0 shim (idle halts, MSR accesses).
    pub shim: u64,
}

impl ExitCounts {
    fn from_causes(c: &[u64; exit_cause::COUNT]) -> Self {
        Self {
            timer: c[exit_cause::TIMER],
            eoi: c[exit_cause::EOI],
            ipi: c[exit_cause::IPI],
            doorbell: c[exit_cause::DOORBELL],
            shim: c[exit_cause::SHIM],
        }
    }

    /// Every cause together.
    pub fn total(&self) -> u64 {
        [self.timer, self.eoi, self.ipi, self.doorbell, self.shim].iter().fold(0u64, |a, &b| a.saturating_add(b))
    }

    fn named(&self) -> [(&'static str, u64); exit_cause::COUNT] {
        [
            (exit_cause::NAMES[exit_cause::TIMER], self.timer),
            (exit_cause::NAMES[exit_cause::EOI], self.eoi),
            (exit_cause::NAMES[exit_cause::IPI], self.ipi),
            (exit_cause::NAMES[exit_cause::DOORBELL], self.doorbell),
            (exit_cause::NAMES[exit_cause::SHIM], self.shim),
        ]
    }
}

/// A CPU's (or all CPUs') exits over the activations recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exits {
    /// From each recorded activation's previous one up to it.
    pub total: ExitCounts,
    /// Of those, between the entry of the timer interrupt that served the
    /// deadline and the thread running.
    pub irq_to_thread: ExitCounts,
    /// `total` over the activations (`null` without any).
    pub per_activation: Option<f64>,
    /// `irq_to_thread` over the activations (`null` without any).
    pub irq_to_thread_per_activation: Option<f64>,
}

impl Exits {
    pub fn of(f: &CpuSnapshot) -> Self {
        let total = ExitCounts::from_causes(&f.exits);
        let irq_to_thread = ExitCounts::from_causes(&f.path_exits);
        let per = |n: u64| (f.samples > 0).then(|| n as f64 / f.samples as f64);
        Self {
            per_activation: per(total.total()),
            irq_to_thread_per_activation: per(irq_to_thread.total()),
            total,
            irq_to_thread,
        }
    }
}

/// `2.01 (timer 1.00, ipi 1.01)`: the causes that occurred, per activation.
fn per_activation(c: &ExitCounts, samples: u64) -> String {
    let per = |n: u64| n as f64 / samples as f64;
    let causes: Vec<String> =
        c.named().iter().filter(|(_, n)| *n > 0).map(|(name, n)| format!("{name} {:.2}", per(*n))).collect();
    if causes.is_empty() { "0".to_string() } else { format!("{:.2} ({})", per(c.total()), causes.join(", ")) }
}

/// The summary's line for one epoch's all-CPU figures (`None` without
/// activations).
pub fn summary_line(epoch: u64, f: &CpuSnapshot) -> Option<String> {
    if f.samples == 0 {
        return None;
    }
    let e = Exits::of(f);
    Some(format!(
        "epoch {epoch} exits per activation: {}; between the timer IRQ and the thread: {}",
        per_activation(&e.total, f.samples),
        per_activation(&e.irq_to_thread, f.samples)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(samples: u64, exits: [u64; exit_cause::COUNT], path: [u64; exit_cause::COUNT]) -> CpuSnapshot {
        let mut s = CpuSnapshot::empty(10, 1);
        s.samples = samples;
        s.exits = exits;
        s.path_exits = path;
        s
    }

    #[test]
    fn per_activation_figures_name_the_causes_that_occurred() {
        let s = snap(4, [4, 0, 2, 0, 1], [3, 0, 0, 0, 0]);
        let e = Exits::of(&s);
        assert_eq!(e.total.total(), 7);
        assert_eq!(e.per_activation, Some(1.75));
        assert_eq!(e.irq_to_thread_per_activation, Some(0.75));
        assert_eq!(
            summary_line(3, &s).unwrap(),
            "epoch 3 exits per activation: 1.75 (timer 1.00, ipi 0.50, shim 0.25); between the timer IRQ and the \
             thread: 0.75 (timer 0.75)"
        );
    }

    #[test]
    fn no_activation_no_figure() {
        let s = snap(0, [5, 0, 0, 0, 0], [0; exit_cause::COUNT]);
        assert_eq!(Exits::of(&s).per_activation, None);
        assert_eq!(summary_line(0, &s), None);
        let quiet = snap(2, [0; exit_cause::COUNT], [0; exit_cause::COUNT]);
        assert!(summary_line(0, &quiet).unwrap().ends_with("between the timer IRQ and the thread: 0"));
    }
}
