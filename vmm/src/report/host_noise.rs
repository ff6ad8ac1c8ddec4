//! The host-noise probe in the reports (`host_noise`): the `--json`
//! report's `host_noise` object, the host stall of each epoch and worst
//! sample, and the lines of the summary and the end of the run that put
//! the host's stall time beside its steal time (docs/latency.md, "Host
//! stalls"; docs/reports.md).

use serde::{Deserialize, Serialize};

use crate::host_noise::{HostStall, Snapshot};
use crate::switch::distribution::Summary;

/// The `host_noise` object of the `--json` report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostNoiseReport {
    pub period_us: u64,
    /// A wake-up at least this late is a host stall.
    pub threshold_us: u64,
    /// `fifo` (SCHED_FIFO, `priority`) where every probe got it, else `other`.
    pub policy: String,
    pub priority: i32,
    pub rt_granted: bool,
    /// The host CPUs probed, and those the VMM may run on beyond the limit.
    pub host_cpus: Vec<u32>,
    pub unprobed_cpus: u64,
    /// Guest TSC -> host TSC (`null`: not measured).
    pub tsc_map: Option<TscMapReport>,
    /// The longest total stall time of a probed host CPU over the run.
    pub stall_ns: u64,
    pub cpus: Vec<HostCpuNoise>,
}

/// `host_noise.tsc_map`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TscMapReport {
    /// Guest TSC minus host TSC, per vCPU.
    pub offsets: Vec<i64>,
    /// How far a guest time placed in host time may be off.
    pub error_ns: u64,
    /// The host TSC's rate over the run against the guest's, ppm.
    pub rate_ppm: Option<i64>,
    /// False: the rates differ (a scaled TSC) and no guest window is placed.
    pub usable: bool,
}

/// `host_noise.cpus[]`: one probe thread's totals (exact).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostCpuNoise {
    pub host_cpu: u32,
    pub pinned: bool,
    pub rt: bool,
    /// False: its seccomp filter failed and it never probed.
    pub ran: bool,
    /// The probe thread's own CPU time, and its share of the run (`null`:
    /// it did not end).
    pub cpu_s: Option<f64>,
    pub cpu_share: Option<f64>,
    pub wakeups: u64,
    pub skipped_periods: u64,
    pub stalls: u64,
    pub stall_ns: u64,
    pub worst_ns: u64,
    /// Every wake-up's lateness, µs (`null`: none).
    pub lateness: Option<Summary>,
    pub lateness_p99_9_us: Option<u64>,
    /// Stall intervals still held for window queries, and those dropped.
    pub stalls_retained: u64,
    pub stalls_forgotten: u64,
}

/// The report's `host_noise`.
pub fn build(s: &Snapshot) -> HostNoiseReport {
    let rt = s.rt_granted();
    HostNoiseReport {
        period_us: micros(s.settings.period),
        threshold_us: micros(s.settings.threshold),
        policy: if rt { "fifo" } else { "other" }.into(),
        priority: if rt { crate::host_noise::probe::PRIORITY } else { 0 },
        rt_granted: rt,
        host_cpus: s.cpus.iter().map(|c| c.host_cpu).collect(),
        unprobed_cpus: s.unprobed as u64,
        tsc_map: s.map.as_ref().map(|m| TscMapReport {
            offsets: m.offsets.clone(),
            error_ns: u64::try_from(u128::from(m.error_ticks) * 1_000_000 / u128::from(s.khz.max(1)))
                .unwrap_or(u64::MAX),
            rate_ppm: s.rate_ppm,
            usable: s.usable_map().is_some(),
        }),
        stall_ns: s.cpus.iter().map(|c| c.noise.stall_ns).max().unwrap_or(0),
        cpus: s
            .cpus
            .iter()
            .map(|c| {
                let n = &c.noise;
                HostCpuNoise {
                    host_cpu: c.host_cpu,
                    pinned: c.pinned,
                    rt: c.rt,
                    ran: c.ran,
                    cpu_s: c.cpu_ns.map(|ns| ns as f64 / 1e9),
                    cpu_share: c.cpu_ns.filter(|_| s.ran_s > 0.0).map(|ns| ns as f64 / 1e9 / s.ran_s),
                    wakeups: n.wakeups,
                    skipped_periods: n.skipped_periods,
                    stalls: n.stalls,
                    stall_ns: n.stall_ns,
                    worst_ns: n.worst_ns,
                    lateness: n.lateness_us.summary(),
                    lateness_p99_9_us: (n.lateness_us.count() > 0).then(|| n.lateness_us.percentile(999)),
                    stalls_retained: n.retained().count() as u64,
                    stalls_forgotten: n.forgotten,
                }
            })
            .collect(),
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// The host stall of a worst sample: its deadline to its thread's wake-up.
pub fn worst_stall(s: &Snapshot, cpu: Option<usize>, deadline_tsc: u64, thread_ns: u64) -> Option<HostStall> {
    s.stall_across(cpu, deadline_tsc, thread_ns)
}

fn ms(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1e6)
}

fn lower_bound(h: &HostStall) -> &'static str {
    if h.complete { "" } else { "at least " }
}

/// The worst-sample line's clause: whether the host stalled across it.
pub fn worst_clause(h: Option<HostStall>) -> String {
    match h {
        None => ", host stalls not placed (no TSC map)".into(),
        Some(h) if h.ns == 0 && h.complete => ", no host stall across it".into(),
        Some(h) => format!(
            ", host stalled {}{} us across it{}",
            lower_bound(&h),
            h.ns / 1000,
            h.host_cpu.map_or_else(String::new, |c| format!(" (host cpu {c})"))
        ),
    }
}

/// An epoch's line: its steal time beside the host's stall time.
pub fn epoch_line(index: u64, steal_ns: u64, h: Option<HostStall>) -> String {
    let stall = match h {
        None => "not placed (no TSC map)".into(),
        Some(h) => format!(
            "{}{} ms{}",
            lower_bound(&h),
            ms(h.ns),
            h.host_cpu.map_or_else(String::new, |c| format!(" (longest on host cpu {c})"))
        ),
    };
    format!("epoch {index} host: steal {} ms over its vCPUs, host stalls {stall}", ms(steal_ns))
}

/// The end-of-run line: what the probe saw, beside the vCPUs' steal time.
pub fn end_line(s: &Snapshot, steal_ns: u64) -> String {
    let r = build(s);
    let policy = if r.rt_granted {
        format!("SCHED_FIFO {}", r.priority)
    } else {
        "normal priority (SCHED_FIFO refused: its lateness includes the vCPU threads' time slices)".into()
    };
    let cpus: Vec<String> = r
        .cpus
        .iter()
        .map(|c| {
            let late = c.lateness.map_or_else(
                || "no wake-up".to_string(),
                |l| format!("lateness p50 {} p99 {} max {} us", l.p50_us, l.p99_us, l.max_us),
            );
            let cost = c.cpu_share.map_or_else(String::new, |f| format!(", probe CPU time {:.2}%", f * 100.0));
            format!(
                "cpu {}: {} stalls, {} ms (worst {} ms), {late}{cost}",
                c.host_cpu,
                c.stalls,
                ms(c.stall_ns),
                ms(c.worst_ns)
            )
        })
        .collect();
    format!(
        "host noise: probe every {} us at {policy} on {} host CPU(s), stall >= {} us: {}; host stall time {} ms \
         beside the vCPUs' steal time {} ms",
        r.period_us,
        r.cpus.len(),
        r.threshold_us,
        cpus.join("; "),
        ms(r.stall_ns),
        ms(steal_ns)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_say_stalled_or_not_and_mark_lower_bounds() {
        assert_eq!(
            worst_clause(Some(HostStall { ns: 0, host_cpu: None, complete: true })),
            ", no host stall across it"
        );
        assert_eq!(
            worst_clause(Some(HostStall { ns: 80_123_456, host_cpu: Some(1), complete: true })),
            ", host stalled 80123 us across it (host cpu 1)"
        );
        assert_eq!(
            worst_clause(Some(HostStall { ns: 0, host_cpu: None, complete: false })),
            ", host stalled at least 0 us across it"
        );
        assert_eq!(
            epoch_line(3, 1_500_000, Some(HostStall { ns: 35_210_000, host_cpu: Some(0), complete: true })),
            "epoch 3 host: steal 1.5 ms over its vCPUs, host stalls 35.2 ms (longest on host cpu 0)"
        );
    }
}
