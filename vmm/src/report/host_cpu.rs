//! What the run cost the host: the CPU time each vCPU thread and the
//! control thread used, beside the time the guest ran. An idle vCPU that
//! halts costs next to nothing; one that polls (`idle=poll`, the
//! haltpoll window) costs up to a host core; the figure says which, per
//! idle policy, in the summary and the JSON report's `host_cpu`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The host CPU time of a run's threads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostCpu {
    /// Seconds the guest ran (from the vCPUs' start, or `cont`, to the end).
    pub ran_s: f64,
    /// The control thread's CPU seconds (the whole run, setup included).
    pub control_s: f64,
    /// Each vCPU thread's CPU seconds, user and system (null: its thread
    /// did not end, so it could not say).
    pub vcpus_s: Vec<Option<f64>>,
}

impl HostCpu {
    pub fn new(ran: Duration, control: Duration, vcpus: &[Option<Duration>]) -> Self {
        Self {
            ran_s: ran.as_secs_f64(),
            control_s: control.as_secs_f64(),
            vcpus_s: vcpus.iter().map(|t| t.map(|d| d.as_secs_f64())).collect(),
        }
    }

    /// One vCPU's share of a host core over the run, in percent.
    pub fn share(&self, seconds: f64) -> f64 {
        if self.ran_s > 0.0 { 100.0 * seconds / self.ran_s } else { 0.0 }
    }

    /// The summary line: `host CPU: vcpu0 0.412 s (10%), ...; control thread 0.051 s`.
    pub fn line(&self) -> String {
        let vcpus: Vec<String> = self
            .vcpus_s
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Some(s) => format!("vcpu{i} {s:.3} s ({:.0}%)", self.share(*s)),
                None => format!("vcpu{i} unknown (its thread did not end)"),
            })
            .collect();
        format!(
            "host CPU over the {:.3} s the guest ran: {}; control thread {:.3} s",
            self.ran_s,
            vcpus.join(", "),
            self.control_s
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_are_of_the_time_the_guest_ran() {
        let h = HostCpu::new(Duration::from_secs(4), Duration::from_millis(50), &[Some(Duration::from_secs(1)), None]);
        assert_eq!(h.share(1.0), 25.0);
        assert_eq!(
            h.line(),
            "host CPU over the 4.000 s the guest ran: vcpu0 1.000 s (25%), vcpu1 unknown (its thread did not end); \
             control thread 0.050 s"
        );
        assert_eq!(HostCpu::new(Duration::ZERO, Duration::ZERO, &[]).share(1.0), 0.0);
    }
}
