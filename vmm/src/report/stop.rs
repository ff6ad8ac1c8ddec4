//! `--stop-above`: the cause of the sample that crossed the threshold, as
//! printed when the run stops (cyclictest `-b` and rtla timerlat `-a`
//! answer the same question with a kernel trace).
//!
//! ```text
//! stop-above: cpu 1 thread latency 5210 us > 3000 us (IRQ 5130 us; steal 12 us)
//!   interrupted task 'load' (preempt count 1, 1 switchable lock(s) held: load.2)
//!   the timer interrupt arrived unmasked
//!   last scheduler events on cpu 1 (us before the deadline; + after):
//!     -812.4  switch to 'load' (prio 10)
//!     ...
//! ```

use std::fmt::Write;

use crate::vstate::telemetry::StopInfo;

/// The lines printed for a stop report; `locks` are the names of the
/// switchable locks the interrupted task held when the VMM looked.
pub fn render(info: &StopInfo, threshold_us: u32, tsc_khz: u32, locks: &[String]) -> String {
    let us = |ns: u64| ns as f64 / 1000.0;
    let mut out = String::new();
    let irq = info.irq_ns.map_or("no timer IRQ served the deadline".to_string(), |n| format!("IRQ {:.1} us", us(n)));
    let _ = writeln!(
        out,
        "stop-above: cpu {} thread latency {:.1} us > {threshold_us} us ({irq}; host steal time in the period {:.1} us)",
        info.cpu,
        us(info.thread_ns),
        us(info.steal_ns)
    );
    let task = if info.task.is_empty() { "no task".to_string() } else { format!("task '{}'", info.task) };
    let held = if locks.is_empty() { String::new() } else { format!(": {}", locks.join(", ")) };
    let _ = writeln!(
        out,
        "  interrupted {task} (preempt count {}, {} switchable lock(s) held{held})",
        info.preempt_count, info.locks_held
    );
    if info.irq_masked {
        let _ = writeln!(
            out,
            "  the timer interrupt arrived while interrupts were masked and ran at the unmask, {:.1} us after the \
             deadline",
            us(info.masked_ns)
        );
    } else {
        let _ = writeln!(out, "  the timer interrupt arrived with interrupts unmasked");
    }
    if info.trace.is_empty() {
        let _ = writeln!(out, "  no scheduler events recorded on cpu {}", info.cpu);
    } else {
        let _ = writeln!(out, "  last scheduler events on cpu {} (us relative to the deadline):", info.cpu);
        let khz = f64::from(tsc_khz.max(1));
        for (tsc, what) in &info.trace {
            let rel = (*tsc as f64 - info.deadline_tsc as f64) * 1000.0 / khz;
            let _ = writeln!(out, "    {rel:+10.1}  {what}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_cause_and_the_trace_relative_to_the_deadline() {
        let info = StopInfo {
            cpu: 1,
            thread_ns: 5_210_000,
            irq_ns: Some(5_130_000),
            steal_ns: 12_000,
            locks_held: 1,
            preempt_count: 1,
            irq_masked: true,
            masked_ns: 5_130_000,
            deadline_tsc: 1_000_000,
            task: "load".into(),
            task_addr: 0x1000,
            trace: vec![(999_000, "switch to 'load' (prio 10)".into()), (1_005_000, "irq vector 0x30".into())],
        };
        let text = render(&info, 3000, 1_000_000, &["load.2".into()]);
        assert!(text.contains("cpu 1 thread latency 5210.0 us > 3000 us"), "{text}");
        assert!(text.contains("task 'load' (preempt count 1, 1 switchable lock(s) held: load.2)"), "{text}");
        assert!(text.contains("masked"), "{text}");
        assert!(text.contains("  -1.0  switch to 'load'"), "{text}");
        assert!(text.contains("  +5.0  irq vector 0x30"), "{text}");
    }
}
