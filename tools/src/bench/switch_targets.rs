//! The switch family's targets (a switch in one blackout), each printed
//! with its measured value and `met` or `NOT MET`, never adjusted:
//!
//! - idle `set-mode` round trip p50 <= 0.5x QEMU's `stop` + `cont` p50
//!   (`qemu`: measured beside it when QEMU is installed; otherwise no
//!   figure, and the reason);
//! - idle blackout p50 <= 1.2x the platform floor (`x-pause-resume`'s
//!   blackout p50 in the same VM);
//! - under the lock load, total p99 <= the critical section + 1 ms;
//! - scale: total p50 at 8 vCPUs <= 4x that at 1 vCPU.
//!
//! With two repeats or more, each is judged on the median of the
//! repeats' ratios ([`judge_over_repeats`]), as the latency targets are:
//! one repeat's switches are a few hundred round trips on a shared host,
//! and which side of a target a single repeat lands on is host noise.

use serde::Serialize;

use super::PhaseResult;
use super::median::median_ratio;
use super::qemu::QemuFloor;
use super::ratio::{Bound, Ratio};
use super::verdict::{Verdict, at_most, target_text};

/// Target: idle round trip over QEMU's stop + cont, p50.
pub const TARGET_OVER_QEMU: f64 = 0.5;
/// Target: idle blackout over the pause + resume floor, p50.
pub const TARGET_OVER_FLOOR: f64 = 1.2;
/// Target: total p99 under the lock load over (critical section + 1 ms).
pub const TARGET_OVER_CS: f64 = 1.0;
/// The slack over the critical section, µs.
pub const CS_SLACK_US: u64 = 1000;
/// Target: total p50 at 8 vCPUs over that at 1 vCPU.
pub const TARGET_SCALE: f64 = 4.0;

/// One judged target.
#[derive(Clone, Debug, Serialize)]
pub struct SwitchTarget {
    pub what: String,
    /// The judged ratio.
    pub value: Option<Ratio>,
    /// The figures it comes from, in words (`2.31 ms / 1.60 ms`).
    pub from: String,
    pub target: f64,
    pub verdict: Verdict,
    /// Why there is no figure.
    pub note: Option<String>,
    /// Each repeat's ratio, in order (`null`: none in that repeat), when
    /// judged over the repeats; empty when judged on one.
    pub each_repeat: Vec<Option<f64>>,
}

fn judged(what: &str, num_den: Option<(u64, u64)>, target: f64, from: String, missing: &str) -> SwitchTarget {
    let value = num_den.filter(|&(_, d)| d > 0).map(|(n, d)| Ratio { value: n as f64 / d as f64, bound: Bound::Exact });
    SwitchTarget {
        what: what.to_string(),
        value,
        from,
        target,
        verdict: at_most(value, target),
        note: value.is_none().then(|| missing.to_string()),
        each_repeat: Vec::new(),
    }
}

/// With two repeats or more, judges every target on the median of its
/// repeats' ratios (`of(name)`: the named target's ratio in each repeat,
/// `None` where that repeat had none). The figures a ratio came from are
/// the last repeat's; `each_repeat` keeps every ratio. A target with
/// fewer than two ratios stays as its last repeat judged it.
pub fn judge_over_repeats(targets: &mut [SwitchTarget], of: impl Fn(&str) -> Vec<Option<f64>>) {
    for t in targets.iter_mut() {
        let values = of(&t.what);
        let ratios: Vec<Ratio> = values.iter().flatten().map(|&value| Ratio { value, bound: Bound::Exact }).collect();
        if ratios.len() < 2 {
            continue;
        }
        t.value = median_ratio(&ratios);
        t.verdict = at_most(t.value, t.target);
        t.note = None;
        t.each_repeat = values;
    }
}

fn ms(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

/// The targets from the switch phases (`under_load`, `idle`), the scale
/// phases and QEMU's reference (`None`: not measured).
pub fn judge(
    under_load: Option<&PhaseResult>,
    idle: Option<&PhaseResult>,
    scale: &[PhaseResult],
    qemu: Option<&QemuFloor>,
) -> Vec<SwitchTarget> {
    let sp = |p: Option<&PhaseResult>| p.and_then(|p| p.spreads.clone());
    let (load, quiet) = (sp(under_load), sp(idle));
    let rtt = quiet.as_ref().and_then(|s| s.client_rtt).map(|s| s.p50_us);
    let qemu_p50 = qemu.and_then(|q| q.stop_cont).map(|s| s.p50_us);
    let mut over_qemu = judged(
        "idle set-mode round trip p50 / QEMU stop+cont p50",
        rtt.zip(qemu_p50),
        TARGET_OVER_QEMU,
        format!("{} / {}", rtt.map_or("?".into(), ms), qemu_p50.map_or("?".into(), ms)),
        "no figure",
    );
    if qemu_p50.is_none() {
        over_qemu.note = Some(
            qemu.and_then(|q| q.unavailable.clone()).unwrap_or_else(|| "QEMU's reference did not run".to_string()),
        );
    }
    let blackout = quiet.as_ref().and_then(|s| s.blackout).map(|s| s.p50_us);
    let floor = quiet.as_ref().and_then(|s| s.floor_blackout).map(|s| s.p50_us);
    let over_floor = judged(
        "idle blackout p50 / platform floor (pause+resume) p50",
        blackout.zip(floor),
        TARGET_OVER_FLOOR,
        format!(
            "{} / {} µs",
            blackout.map_or("?".into(), |v| v.to_string()),
            floor.map_or("?".into(), |v| v.to_string())
        ),
        "the idle phase gave no blackout or floor",
    );
    let total_p99 = load.as_ref().and_then(|s| s.total).map(|s| s.p99_us);
    let cs = under_load.and_then(|p| p.values.as_ref()).and_then(|v| v.cs_us);
    let budget = cs.map(|c| c + CS_SLACK_US);
    let over_cs = judged(
        "lock-load total p99 / (critical section + 1 ms)",
        total_p99.zip(budget),
        TARGET_OVER_CS,
        format!("{} / {}", total_p99.map_or("?".into(), ms), budget.map_or("?".into(), ms)),
        "the lock-load phase gave no total or no critical section",
    );
    let p50_at =
        |n: u32| scale.iter().find(|p| p.config.vcpus == n).and_then(|p| p.spreads.as_ref()?.total).map(|s| s.p50_us);
    let (one, eight) = (p50_at(1), p50_at(8));
    let scaled = judged(
        "scale: total p50 at 8 vCPUs / at 1 vCPU",
        eight.zip(one),
        TARGET_SCALE,
        format!("{} / {}", eight.map_or("?".into(), ms), one.map_or("?".into(), ms)),
        "the scale family has no 1- and 8-vCPU totals (`--scale-vcpus` must include 1 and 8)",
    );
    vec![over_qemu, over_floor, over_cs, scaled]
}

/// The block the suite prints after the switch and scale tables.
pub fn render(targets: &[SwitchTarget]) -> String {
    let mut out = match targets.iter().find(|t| !t.each_repeat.is_empty()) {
        Some(t) => format!(
            "\nswitch targets (p50 and p99 over each phase's switches; judged on the median of {} repeats' ratios):\n",
            t.each_repeat.len()
        ),
        None => String::from("\nswitch targets (p50 and p99 over each phase's switches):\n"),
    };
    for t in targets {
        let value = match (&t.note, t.value) {
            (Some(why), None) => format!("no figure ({why})"),
            (_, Some(v)) if t.each_repeat.is_empty() => format!("{v} ({})", t.from),
            (_, Some(v)) => format!("{v} (last repeat: {})", t.from),
            (None, None) => "unknown".to_string(),
        };
        let each = if t.each_repeat.is_empty() {
            String::new()
        } else {
            let v: Vec<String> =
                t.each_repeat.iter().map(|r| r.map_or_else(|| "-".to_string(), |r| format!("{r:.2}x"))).collect();
            format!("   [median of {} repeats: {}]", v.len(), v.join(" "))
        };
        out.push_str(&format!(
            "  {}: {value}, target <= {}x: {}{each}\n",
            t.what,
            target_text(t.target),
            t.verdict.text()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::switching::{Phase, PhaseConfig};
    use super::*;

    fn phase(vcpus: u32, load: &'static str, f: impl FnOnce(&mut Phase)) -> PhaseResult {
        let mut p = Phase::default();
        f(&mut p);
        let config = PhaseConfig { vcpus, load, cs_us: None, count: 3, gap_ms: 1 };
        PhaseResult { config, error: None, spreads: Some(p.spreads()), values: Some(p) }
    }

    #[test]
    fn each_target_is_judged_on_its_own_figures() {
        let idle = phase(2, "none", |p| {
            p.client_rtt = vec![900, 1000, 1100];
            p.blackout = vec![150, 160, 170];
            p.floor_blackout = vec![140, 140, 140];
        });
        let load = phase(2, "locks", |p| {
            p.total = vec![1000, 1200, 3000];
            p.cs_us = Some(500);
        });
        let scale =
            [phase(1, "locks", |p| p.total = vec![1000, 1000, 1000]), phase(8, "locks", |p| p.total = vec![5000; 3])];
        let qemu =
            QemuFloor { stop_cont: rtswitch::switch::Spread::of(&mut [2000, 2000, 2000]), ..QemuFloor::default() };
        let t = judge(Some(&load), Some(&idle), &scale, Some(&qemu));
        let v: Vec<(f64, Verdict)> = t.iter().map(|t| (t.value.map_or(-1.0, |r| r.value), t.verdict)).collect();
        assert_eq!(v[0], (0.5, Verdict::Met), "1000 / 2000 µs");
        assert!((v[1].0 - 160.0 / 140.0).abs() < 1e-9 && v[1].1 == Verdict::Met, "{v:?}");
        assert_eq!(v[2], (2.0, Verdict::NotMet), "p99 3000 µs against 500 + 1000");
        assert_eq!(v[3], (5.0, Verdict::NotMet), "5 ms at 8 against 1 ms at 1");
        let text = render(&t);
        assert!(text.contains("0.50x (1.00 ms / 2.00 ms), target <= 0.5x: met"), "{text}");
        assert!(text.contains("NOT MET"), "{text}");
    }

    #[test]
    fn without_qemu_or_a_phase_there_is_no_figure_and_the_reason() {
        let qemu =
            QemuFloor { unavailable: Some("qemu-system-x86_64 is not installed".into()), ..QemuFloor::default() };
        let t = judge(None, None, &[], Some(&qemu));
        assert!(t.iter().all(|t| t.verdict == Verdict::Unknown && t.value.is_none()), "{t:?}");
        let text = render(&t);
        assert!(text.contains("no figure (qemu-system-x86_64 is not installed)"), "{text}");
        assert!(text.contains("--scale-vcpus"), "{text}");
    }

    #[test]
    fn over_repeats_each_target_is_judged_on_the_median_of_the_repeats() {
        let idle = phase(2, "none", |p| {
            p.client_rtt = vec![1100];
            p.blackout = vec![150];
            p.floor_blackout = vec![140];
        });
        let qemu = QemuFloor { stop_cont: rtswitch::switch::Spread::of(&mut [2000]), ..QemuFloor::default() };
        let mut t = judge(None, Some(&idle), &[], Some(&qemu));
        assert_eq!(t[0].verdict, Verdict::NotMet, "the last repeat alone: 0.55x");
        let rtt = t[0].what.clone();
        judge_over_repeats(&mut t, |name| match name {
            n if n == rtt => vec![Some(0.45), Some(0.70), None, Some(0.60)],
            // One ratio only: stays as the last repeat judged it.
            _ => vec![None, None, Some(1.0)],
        });
        assert_eq!((t[0].value.map(|r| r.value), t[0].verdict), (Some(0.60), Verdict::NotMet), "median of three");
        judge_over_repeats(&mut t, |name| if name == rtt { vec![Some(0.45), Some(0.70), Some(0.48)] } else { vec![] });
        assert_eq!((t[0].value.map(|r| r.value), t[0].verdict), (Some(0.48), Verdict::Met));
        assert!(t[1].each_repeat.is_empty() && t[1].verdict == Verdict::Met, "{:?}", t[1]);
        let text = render(&t);
        assert!(text.contains("judged on the median of 3 repeats"), "{text}");
        assert!(
            text.contains(
                "0.48x (last repeat: 1.10 ms / 2.00 ms), target <= 0.5x: met   [median of 3 repeats: 0.45x 0.70x 0.48x]"
            ),
            "{text}"
        );
    }
}
