//! The VMM's side of the lockup watchdog: once a second it reads every
//! CPU's heartbeat (`switcher::abi::CpuHeartbeat`, written by the guest's
//! per-CPU watchdog threads) and reports a CPU whose beats have not moved
//! for `--watchdog-secs`, with what the guest recorded it running. One
//! report per stall; a CPU that beats again is reported as recovered.

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
}

impl Watchdog {
    /// Watches `cpus` CPUs; `limit` zero turns it off.
    pub fn new(cpus: u32, limit: Duration) -> Self {
        let now = Instant::now();
        Self {
            limit,
            cpus: (0..cpus).map(|_| CpuWatch { beats: 0, changed: now, reported: false, guest_stalls: 0 }).collect(),
            stalls: Vec::new(),
        }
    }

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
                self.stalls.push(format!(
                    "watchdog: cpu {cpu} stalled: its watchdog thread could not run for {} ms (the guest saw task '{}', \
                     preempt count {}, {} switchable lock(s) held)",
                    switcher::abi::STALL_REPORT_MS,
                    crate::guest_text::name(&hb.task_name),
                    hb.preempt_count,
                    hb.locks_held
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
