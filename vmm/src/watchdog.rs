//! The VMM's side of the lockup watchdog: once a second it reads every
//! CPU's heartbeat (`switcher::abi::CpuHeartbeat`, written by the guest's
//! per-CPU watchdog threads) and reports a CPU whose beats have not moved
//! for `--watchdog` (default 10 s), with what the guest recorded it running. One
//! report per stall; a CPU that beats again is reported as recovered.
//!
//! A stall is told apart from a stuck guest when the host explains it:
//! the guest records, with each stall it flags, the most host steal time
//! any vCPU had in the stall's window (that CPU's, or the one whose lock
//! it spins on), and this side adds the host's own stalls, which steal
//! time does not show where the host is itself a VM: how late its 1 Hz
//! ticks came ([`Watchdog::note_tick`]). When those cover at least half
//! the window, the report says the host starved the guest.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use switcher::abi::{CpuHeartbeat, HEARTBEAT_ADDR};
use vm_memory::{ByteValued, Bytes, GuestAddress};

use crate::vstate::memory::GuestMemory;

#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct Beat(CpuHeartbeat);

// SAFETY: CpuHeartbeat is repr(C), integers and a byte array, no padding
// (size asserted in switcher::abi): every bit pattern is valid.
unsafe impl ByteValued for Beat {}

struct CpuWatch {
    beats: u64,
    changed: Instant,
    reported: bool,
    /// Stalls the guest's own watchdog flagged (`CpuHeartbeat::stalls`).
    guest_stalls: u32,
}

pub struct Watchdog {
    limit: Duration,
    cpus: Vec<CpuWatch>,
    /// Stalls reported so far (a run with one is "not ok").
    stalls: Vec<String>,
    /// The last tick, and the recent host stalls: (when seen, how long),
    /// at most [`HOST_STALLS_KEPT`].
    last_tick: Option<Instant>,
    host_stalls: VecDeque<(Instant, Duration)>,
}

/// Host stalls kept (a few windows' worth at one tick a second).
const HOST_STALLS_KEPT: usize = 16;
/// A tick later than this is a host stall (the control thread's own
/// scheduling jitter is far below).
const HOST_STALL_MIN: Duration = Duration::from_millis(50);

/// Why a CPU's watchdog thread could not run, as far as the host tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StallCause {
    pub window_us: u64,
    /// The most steal time one vCPU had in the window, and which.
    pub steal_us: u64,
    pub steal_cpu: u32,
    /// How long the host stalled this VM meanwhile (late ticks).
    pub host_stall_us: u64,
}

impl StallCause {
    /// The host took at least half the window.
    pub fn host_starved(&self) -> bool {
        self.window_us > 0 && (self.steal_us + self.host_stall_us) * 2 >= self.window_us
    }

    /// The clause a stall report ends with.
    pub fn describe(&self) -> String {
        let verdict = if self.host_starved() {
            "host starvation, not a stuck guest"
        } else {
            "not the host: the guest kept the CPU"
        };
        format!(
            ", while of those {:.1} s the host took {:.1} s from vCPU {} (steal time) and stalled the whole VM {:.1} s: \
             {verdict}",
            self.window_us as f64 / 1e6,
            self.steal_us as f64 / 1e6,
            self.steal_cpu,
            self.host_stall_us as f64 / 1e6
        )
    }
}

impl Watchdog {
    /// Watches `cpus` CPUs; `limit` zero turns it off.
    pub fn new(cpus: u32, limit: Duration) -> Self {
        let now = Instant::now();
        Self {
            limit,
            cpus: (0..cpus).map(|_| CpuWatch { beats: 0, changed: now, reported: false, guest_stalls: 0 }).collect(),
            stalls: Vec::new(),
            last_tick: None,
            host_stalls: VecDeque::new(),
        }
    }

    /// The status timer fired at `now` (every `period`): a tick late by
    /// more than [`HOST_STALL_MIN`] is a host stall of that length.
    pub fn note_tick(&mut self, now: Instant, period: Duration) {
        if let Some(prev) = self.last_tick.replace(now) {
            let late = now.saturating_duration_since(prev).saturating_sub(period);
            if late > HOST_STALL_MIN {
                if self.host_stalls.len() == HOST_STALLS_KEPT {
                    self.host_stalls.pop_front();
                }
                self.host_stalls.push_back((now, late));
            }
        }
    }
}

/// Host stalls seen in the `window` before `now` (and the tick after it).
fn host_stall_within(host_stalls: &VecDeque<(Instant, Duration)>, now: Instant, window: Duration) -> Duration {
    let since = now.checked_sub(window + Duration::from_secs(2)).unwrap_or(now);
    host_stalls.iter().filter(|(at, _)| *at >= since).map(|(_, d)| *d).sum()
}

impl Watchdog {
    /// Every stall reported so far, one line each.
    pub fn stalls(&self) -> &[String] {
        &self.stalls
    }

    /// Reads the heartbeats; returns the lines to print.
    pub fn check(&mut self, mem: &GuestMemory) -> Vec<String> {
        let mut out = Vec::new();
        if self.limit.is_zero() {
            return out;
        }
        let now = Instant::now();
        for (cpu, w) in self.cpus.iter_mut().enumerate() {
            let addr = HEARTBEAT_ADDR + (cpu * std::mem::size_of::<CpuHeartbeat>()) as u64;
            let Ok(Beat(hb)) = mem.read_obj::<Beat>(GuestAddress(addr)) else { continue };
            // The guest's watchdog saw the stall first (after
            // STALL_REPORT_MS; it printed it): it counts for the result.
            if hb.stalls != w.guest_stalls && self.stalls.len() < 64 {
                w.guest_stalls = hb.stalls;
                let window_us = u64::from(hb.stall_window_us);
                let cause = StallCause {
                    window_us,
                    steal_us: u64::from(hb.stall_steal_us).min(window_us),
                    steal_cpu: hb.stall_steal_cpu,
                    host_stall_us: host_stall_within(&self.host_stalls, now, Duration::from_micros(window_us))
                        .as_micros() as u64,
                };
                self.stalls.push(format!(
                    "watchdog: cpu {cpu} stalled: its watchdog thread could not run for {} ms (the guest saw task '{}', \
                     preempt count {}, {} switchable lock(s) held){}",
                    switcher::abi::STALL_REPORT_MS,
                    crate::guest_text::name(&hb.task_name),
                    hb.preempt_count,
                    hb.locks_held,
                    cause.describe()
                ));
            }
            if hb.beats != w.beats {
                if w.reported {
                    out.push(format!("watchdog: cpu {cpu} makes progress again"));
                }
                *w = CpuWatch { beats: hb.beats, changed: now, reported: false, guest_stalls: w.guest_stalls };
                continue;
            }
            // Not started yet (0 beats) is not a stall.
            if hb.beats == 0 || w.reported || now.duration_since(w.changed) < self.limit {
                continue;
            }
            w.reported = true;
            let what = if hb.stalled != 0 {
                format!(
                    "it runs task '{}' (preempt count {}, {} switchable lock(s) held)",
                    crate::guest_text::name(&hb.task_name),
                    hb.preempt_count,
                    hb.locks_held
                )
            } else {
                "it took no timer interrupt either (interrupts off?)".to_string()
            };
            let line = format!(
                "watchdog: cpu {cpu} made no progress for {:.1} s (its watchdog thread did not run): {what}",
                now.duration_since(w.changed).as_secs_f64()
            );
            if self.stalls.len() < 64 {
                self.stalls.push(line.clone());
            }
            out.push(line);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stall_the_host_took_half_of_is_host_starvation() {
        let cause =
            |steal_us, host_stall_us| StallCause { window_us: 2_000_000, steal_us, steal_cpu: 1, host_stall_us };
        assert!(cause(1_800_000, 0).host_starved());
        assert!(cause(600_000, 500_000).host_starved(), "steal and host stalls add up");
        assert!(!cause(100_000, 0).host_starved());
        assert!(cause(1_800_000, 0).describe().ends_with("host starvation, not a stuck guest"));
        assert!(cause(0, 0).describe().ends_with("not the host: the guest kept the CPU"));
    }

    #[test]
    fn late_ticks_are_host_stalls() {
        let mut w = Watchdog::new(1, Duration::from_secs(5));
        let t0 = Instant::now();
        let period = Duration::from_secs(1);
        w.note_tick(t0, period);
        w.note_tick(t0 + Duration::from_millis(1010), period);
        w.note_tick(t0 + Duration::from_millis(3010), period);
        assert_eq!(
            host_stall_within(&w.host_stalls, t0 + Duration::from_millis(3010), Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        for k in 0..100 {
            w.note_tick(t0 + Duration::from_secs(10 + 2 * k), period);
        }
        assert_eq!(w.host_stalls.len(), HOST_STALLS_KEPT, "bounded");
    }

    fn write(mem: &GuestMemory, cpu: usize, hb: CpuHeartbeat) {
        let addr = HEARTBEAT_ADDR + (cpu * std::mem::size_of::<CpuHeartbeat>()) as u64;
        mem.write_obj(Beat(hb), GuestAddress(addr)).unwrap();
    }

    #[test]
    fn reports_a_stall_once_and_the_recovery() {
        let mem = crate::vstate::memory::create(16 << 20).unwrap();
        let mut w = Watchdog::new(2, Duration::from_millis(30));
        write(&mem, 0, CpuHeartbeat { beats: 5, ..Default::default() });
        write(&mem, 1, CpuHeartbeat { beats: 7, ..Default::default() });
        assert!(w.check(&mem).is_empty());
        std::thread::sleep(Duration::from_millis(50));
        let mut name = [0u8; 16];
        name[..5].copy_from_slice(b"stall");
        write(&mem, 1, CpuHeartbeat { beats: 7, stalled: 1, preempt_count: 1, task_name: name, ..Default::default() });
        write(&mem, 0, CpuHeartbeat { beats: 6, ..Default::default() });
        let lines = w.check(&mem);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("cpu 1") && lines[0].contains("'stall'") && lines[0].contains("preempt count 1"));
        assert!(w.check(&mem).is_empty(), "reported once");
        write(&mem, 1, CpuHeartbeat { beats: 8, ..Default::default() });
        assert_eq!(w.check(&mem), vec!["watchdog: cpu 1 makes progress again".to_string()]);
    }

    #[test]
    fn off_and_not_started_are_quiet() {
        let mem = crate::vstate::memory::create(16 << 20).unwrap();
        let mut off = Watchdog::new(1, Duration::ZERO);
        assert!(off.check(&mem).is_empty());
        let mut w = Watchdog::new(1, Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(5));
        assert!(w.check(&mem).is_empty(), "0 beats: the guest has not started its watchdog");
    }
}
