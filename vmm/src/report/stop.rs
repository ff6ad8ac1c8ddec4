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
//!     +5130.0  irq vector 0x30 (timer)
//!     ...
//!   verdict: the host: the timer interrupt came 5130.0 us late with ...
//! ```
//!
//! The verdict says, like rtla timerlat's auto-analysis, which part of the
//! sample explains most of it: host steal time (the vCPU runnable, the host
//! running something else), a host stall (the timer interrupt itself late
//! while the guest had interrupts unmasked), interrupts masked in the
//! guest, or the guest's scheduling after the interrupt (the interrupted
//! task kept the CPU).

use std::fmt::Write;

use crate::telemetry::StopInfo;

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
    let held = match (locks.len(), info.locks_held as usize) {
        (_, 0) => String::new(),
        (n, held) if n >= held => format!(": {}", locks.join(", ")),
        (0, _) => ": released before the VMM read the lock table, so not named (the stop report has the count \
                   only)"
            .to_string(),
        (_, _) => format!(
            ": {} still held when the VMM read the lock table, the others released before (not named)",
            locks.join(", ")
        ),
    };
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
            let _ = writeln!(out, "    {rel:+10.1}  {}", name_vector(what));
        }
    }
    let _ = writeln!(out, "  verdict: {}", verdict(info));
    out
}

/// The guest's interrupt vectors by name (`switcher::abi::vector`).
fn vector_name(v: u8) -> Option<&'static str> {
    use switcher::abi::vector;
    Some(match v {
        vector::TIMER => "timer",
        vector::DEVICE => "device interrupt, --irq-load",
        vector::HOST_REQUEST => "host request: switch or shutdown",
        vector::WAKEUP_IPI => "wake-up IPI",
        vector::RESCHED_IPI => "reschedule IPI",
        vector::SERIALIZE_IPI => "serialize IPI",
        vector::SPURIOUS => "spurious",
        _ => return None,
    })
}

/// A trace event with its vector named: `irq vector 0x30` -> `irq vector
/// 0x30 (timer)`.
fn name_vector(what: &str) -> String {
    let Some(at) = what.find("vector 0x") else { return what.to_string() };
    let hex = &what[at + "vector 0x".len()..];
    let end = hex.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(hex.len());
    match u8::from_str_radix(&hex[..end], 16).ok().and_then(vector_name) {
        Some(name) => {
            let split = at + "vector 0x".len() + end;
            format!("{} ({name}){}", &what[..split], &what[split..])
        }
        None => what.to_string(),
    }
}

/// What explains most of the sample (more than half of it), in words.
pub fn verdict(info: &StopInfo) -> String {
    let us = |ns: u64| ns as f64 / 1000.0;
    let t = info.thread_ns.max(1);
    let most = |part: u64| part.saturating_mul(2) >= t;
    if most(info.steal_ns) {
        return format!(
            "host steal time explains most of this sample ({:.1} of {:.1} us): the vCPU was runnable but the host \
             ran something else; not a latency of the guest kernel",
            us(info.steal_ns),
            us(info.thread_ns)
        );
    }
    match info.irq_ns {
        Some(_) if info.irq_masked && most(info.masked_ns) => format!(
            "the guest: the timer interrupt waited {:.1} us of the {:.1} us for interrupts to be unmasked (task '{}' \
             ran with interrupts masked)",
            us(info.masked_ns),
            us(info.thread_ns),
            info.task
        ),
        Some(irq) if !info.irq_masked && most(irq) => format!(
            "a host stall explains most of this sample: the timer interrupt came {:.1} us after the deadline while \
             the guest had interrupts unmasked, and only {:.1} us of it was counted as steal: the host delivered it \
             late (its timer path, an exit to the hypervisor, or a descheduling KVM did not count as steal)",
            us(irq),
            us(info.steal_ns)
        ),
        Some(irq) => {
            let held = match (info.preempt_count, info.locks_held) {
                (0, 0) => String::new(),
                (p, 0) => format!(" with preemption off (preempt count {p})"),
                (p, l) => format!(" with preemption off (preempt count {p}) and {l} switchable lock(s) held"),
            };
            format!(
                "the guest: the thread ran {:.1} us after its timer interrupt (of {:.1} us): the interrupted task '{}' \
                 kept the CPU{held}",
                us(info.thread_ns.saturating_sub(irq)),
                us(info.thread_ns),
                info.task
            )
        }
        None => format!(
            "no timer interrupt served the deadline: the thread ran {:.1} us late without one (woken by another \
             event, see the trace); host steal {:.1} us",
            us(info.thread_ns),
            us(info.steal_ns)
        ),
    }
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
        assert!(text.contains("  +5.0  irq vector 0x30 (timer)"), "{text}");
        assert!(text.contains("verdict: the guest: the timer interrupt waited 5130.0 us"), "{text}");
        // The lock was released before the VMM looked: said, not left blank.
        let text = render(&info, 3000, 1_000_000, &[]);
        assert!(text.contains("1 switchable lock(s) held: released before the VMM read the lock table"), "{text}");
    }

    fn sample(thread_us: u64, irq_us: Option<u64>, steal_us: u64, masked_us: Option<u64>) -> StopInfo {
        StopInfo {
            cpu: 0,
            thread_ns: thread_us * 1000,
            irq_ns: irq_us.map(|u| u * 1000),
            steal_ns: steal_us * 1000,
            locks_held: 1,
            preempt_count: 1,
            irq_masked: masked_us.is_some(),
            masked_ns: masked_us.unwrap_or(0) * 1000,
            deadline_tsc: 0,
            task: "load".into(),
            task_addr: 0,
            trace: vec![],
        }
    }

    #[test]
    fn the_verdict_names_what_explains_most_of_the_sample() {
        // The issue's sample: 1631.7 of 1635.3 us stolen.
        let mut s = sample(1635, Some(1600), 1631, None);
        s.thread_ns = 1_635_300;
        s.steal_ns = 1_631_700;
        assert!(verdict(&s).starts_with("host steal time explains most of this sample (1631.7 of 1635.3 us)"));
        assert!(verdict(&sample(3000, Some(2900), 100, None)).starts_with("a host stall explains most"));
        assert!(verdict(&sample(3000, Some(2900), 0, Some(2800))).contains("waited 2800.0 us"));
        let v = verdict(&sample(3000, Some(50), 0, None));
        assert!(v.contains("ran 2950.0 us after its timer interrupt") && v.contains("preemption off"), "{v}");
        assert!(verdict(&sample(3000, None, 0, None)).starts_with("no timer interrupt served the deadline"));
    }

    #[test]
    fn vectors_are_named() {
        assert_eq!(name_vector("irq vector 0x30"), "irq vector 0x30 (timer)");
        assert_eq!(
            name_vector("irq vector 0xf1, deferred by the soft mask"),
            "irq vector 0xf1 (reschedule IPI), deferred by the soft mask"
        );
        assert_eq!(name_vector("irq vector 0x99"), "irq vector 0x99");
        assert_eq!(name_vector("wake 'measure' (prio 99)"), "wake 'measure' (prio 99)");
    }
}
