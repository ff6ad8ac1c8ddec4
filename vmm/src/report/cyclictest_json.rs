//! `--cyclictest-json FILE`: thread latency in the shape of rt-tests 2.4's
//! `cyclictest --json=FILE`, key for key and in its layout, so that tools
//! reading cyclictest's JSON read this one (docs/reports.md):
//!
//! ```text
//! {
//!   "file_version": 1,
//!   "cmdline:": "rtswitch run ...",
//!   "rt_test_version:": "2.40-rtswitch-0.1.0",
//!   "start_time": "Thu, 03 Dec 2026 13:03:06 +0000",
//!   "end_time": "Thu, 03 Dec 2026 13:03:07 +0000",
//!   "return_code": 0,
//!   "sysinfo": { "sysname": ..., "nodename": ..., "release": ..., "version": ..., "machine": ..., "realtime": 0 },
//!   "num_threads": 2,
//!   "resolution_in_ns": 0,
//!   "thread": {
//!     "0": { "histogram": { "21": 1, ... }, "cycles": 50, "min": 21, "max": 73, "avg": 26.30, "cpu": 0, "node": 0 },
//!     ...
//!   }
//! }
//! ```
//! cyclictest's own quirks are kept: the keys `"cmdline:"` and
//! `"rt_test_version:"` end with a colon, and an empty histogram is written
//! `{      }`. No key is added (strict readers refuse unknown keys).
//!
//! What rtswitch puts in them: `cmdline:` the rtswitch command line;
//! `rt_test_version:` the rt-tests version whose format this is, then
//! rtswitch's version; `start_time` the VMM's start and `end_time` the
//! time of writing, in UTC; `return_code` the run's exit code; `sysinfo`
//! describes the measured system, the guest: `sysname` `rtswitch`,
//! `nodename` the host the VM ran on (`uname -n`, read from
//! `/proc/sys/kernel/hostname`), `release` the guest
//! kernel's version, `version` the lock mode(s) the file holds, `machine`
//! `x86_64`, `realtime` 1 for the rt mode (rtmutex locks: PREEMPT_RT's
//! regime), 0 for mainline or both modes merged. One `thread` per
//! measuring vCPU, numbered from 0 in CPU order (`cpu` the vCPU, `node` 0): `histogram` the
//! non-empty buckets keyed by their lower edge in µs (1 µs buckets unless
//! `--bucket-us`; overflows are not in it, as in cyclictest),
//! `cycles` the samples, `min`/`max` in µs truncated, `avg` in µs with two
//! decimals (exact ns sum over the samples); a thread without samples has
//! 0 for all three. `resolution_in_ns` is 0: values are µs.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::CpuRow;
use super::outputs::Selection;

/// The rt-tests release whose `--json` format this follows.
pub const RT_TESTS_FORMAT: &str = "2.40";

/// The file-level facts (everything but the per-thread figures).
#[derive(Clone, Debug)]
pub struct Header {
    pub cmdline: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub return_code: i32,
    /// The guest kernel's version, if it reported one.
    pub guest_release: Option<String>,
    pub selection: Selection,
}

/// The file's text.
pub fn render(cpus: &[CpuRow], h: &Header) -> String {
    let s = |v: &str| serde_json::Value::from(v).to_string();
    let realtime = u8::from(h.selection == Selection::Mode(switcher::profile::Profile::RT));
    let version = match h.selection {
        Selection::Mode(m) => format!("rtswitch lock mode {}", m.name()),
        Selection::All => "rtswitch lock modes mainline and rt merged".to_string(),
    };
    let mut o = String::new();
    o.push_str("{\n");
    o.push_str("  \"file_version\": 1,\n");
    let _ = writeln!(o, "  \"cmdline:\": {},", s(&h.cmdline));
    let _ = writeln!(
        o,
        "  \"rt_test_version:\": {},",
        s(&format!("{RT_TESTS_FORMAT}-rtswitch-{}", env!("CARGO_PKG_VERSION")))
    );
    let _ = writeln!(o, "  \"start_time\": {},", s(&rfc2822_utc(h.start)));
    let _ = writeln!(o, "  \"end_time\": {},", s(&rfc2822_utc(h.end)));
    let _ = writeln!(o, "  \"return_code\": {},", h.return_code);
    o.push_str("  \"sysinfo\": {\n");
    let _ = writeln!(o, "    \"sysname\": {},", s("rtswitch"));
    let _ = writeln!(o, "    \"nodename\": {},", s(&nodename()));
    let _ = writeln!(o, "    \"release\": {},", s(h.guest_release.as_deref().unwrap_or("unknown")));
    let _ = writeln!(o, "    \"version\": {},", s(&version));
    let _ = writeln!(o, "    \"machine\": {},", s("x86_64"));
    let _ = writeln!(o, "    \"realtime\": {realtime}");
    o.push_str("  },\n");
    let _ = writeln!(o, "  \"num_threads\": {},", cpus.len());
    o.push_str("  \"resolution_in_ns\": 0,\n");
    o.push_str("  \"thread\": {\n");
    for (i, c) in cpus.iter().enumerate() {
        let t = &c.figures.thread;
        let _ = writeln!(o, "    \"{i}\": {{");
        o.push_str("      \"histogram\": {");
        let buckets: Vec<String> = t.non_empty().map(|(us, n)| format!("\n        \"{us}\": {n}")).collect();
        if !buckets.is_empty() {
            o.push_str(&buckets.join(","));
            o.push('\n');
        }
        o.push_str("      },\n");
        let _ = writeln!(o, "      \"cycles\": {},", t.count());
        let _ = writeln!(o, "      \"min\": {},", t.min_ns().map_or(0, |n| n / 1000));
        let _ = writeln!(o, "      \"max\": {},", t.max_ns().map_or(0, |n| n / 1000));
        let _ = writeln!(o, "      \"avg\": {:.2},", t.avg_ns().map_or(0.0, |a| a / 1000.0));
        let _ = writeln!(o, "      \"cpu\": {},", c.cpu.unwrap_or(i));
        o.push_str("      \"node\": 0\n");
        o.push_str(if i + 1 < cpus.len() { "    },\n" } else { "    }\n" });
    }
    o.push_str("  }\n}\n");
    o
}

/// `uname -n`: the host the VM ran on, read once from procfs. `rtswitch
/// run` reads it before its sandbox goes in ([`read_host_facts`]): the
/// control thread may open no file afterwards (nor call `uname`).
fn nodename() -> String {
    NODENAME
        .get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim_end().to_string())
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "unknown".to_string())
        })
        .clone()
}

static NODENAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Reads what the file needs from the host now (before the sandbox).
pub fn read_host_facts() {
    let _ = nodename();
}

/// cyclictest's time format (`%a, %d %b %Y %H:%M:%S %z`), in UTC.
pub fn rfc2822_utc(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// (year, month 1..=12, day 1..=31) of a day count since 1970-01-01
/// (Howard Hinnant's days-to-civil algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use switcher::profile::Profile;

    use super::super::json::tests::measurement;
    use super::*;

    fn header(selection: Selection) -> Header {
        Header {
            cmdline: "rtswitch run --cyclictest-json \"x\".json".into(),
            start: UNIX_EPOCH + Duration::from_secs(1_796_302_986),
            end: UNIX_EPOCH + Duration::from_secs(1_796_302_987),
            return_code: 0,
            guest_release: Some("0.1.0".into()),
            selection,
        }
    }

    #[test]
    fn times_are_cyclictests_format() {
        assert_eq!(rfc2822_utc(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc2822_utc(UNIX_EPOCH + Duration::from_secs(1_796_302_986)), "Thu, 03 Dec 2026 13:03:06 +0000");
        assert_eq!(rfc2822_utc(UNIX_EPOCH + Duration::from_secs(951_782_400)), "Tue, 29 Feb 2000 00:00:00 +0000");
    }

    #[test]
    fn the_keys_and_layout_are_cyclictests() {
        let m = measurement();
        let text = render(&m.per_cpu_mode(Some(Profile::MAINLINE)), &header(Selection::Mode(Profile::MAINLINE)));
        println!("{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        let mut want = [
            "file_version",
            "cmdline:",
            "rt_test_version:",
            "start_time",
            "end_time",
            "return_code",
            "sysinfo",
            "num_threads",
            "resolution_in_ns",
            "thread",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(v["cmdline:"], "rtswitch run --cyclictest-json \"x\".json");
        assert_eq!(v["start_time"], "Thu, 03 Dec 2026 13:03:06 +0000");
        assert_eq!(v["sysinfo"]["realtime"], 0);
        assert_eq!(v["num_threads"], 2);
        let t0 = &v["thread"]["0"];
        assert_eq!(t0["histogram"], serde_json::json!({"10": 2}), "overflows are not in the histogram");
        assert_eq!((t0["cycles"].as_u64(), t0["min"].as_u64(), t0["max"].as_u64()), (Some(3), Some(10), Some(250)));
        assert_eq!(t0["cpu"], 0);
        assert_eq!(t0["node"], 0);
        // The layout, as cyclictest prints it.
        assert!(text.starts_with("{\n  \"file_version\": 1,\n  \"cmdline:\": "), "{text}");
        assert!(
            text.contains(
                "\n    \"0\": {\n      \"histogram\": {\n        \"10\": 2\n      },\n      \"cycles\": 3,\n"
            )
        );
        assert!(text.contains("      \"avg\": 90.50,\n"), "{text}");
        assert!(text.ends_with("      \"node\": 0\n    }\n  }\n}\n"), "{text}");
        let rt = render(&m.per_cpu_mode(Some(Profile::RT)), &header(Selection::Mode(Profile::RT)));
        let v: serde_json::Value = serde_json::from_str(&rt).unwrap();
        assert_eq!(v["sysinfo"]["realtime"], 1);
        assert_eq!(v["sysinfo"]["version"], "rtswitch lock mode rt");
    }

    #[test]
    fn no_samples_is_an_empty_histogram_as_cyclictest_writes_it() {
        let m = measurement();
        let mut cpus = m.per_cpu_mode(Some(Profile::RT));
        cpus[0] = CpuRow::empty(Some(0), (m.bucket_count, 1));
        let text = render(&cpus, &header(Selection::All));
        assert!(text.contains("\"histogram\": {      },\n      \"cycles\": 0,\n      \"min\": 0,\n      \"max\": 0,\n      \"avg\": 0.00,"), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["sysinfo"]["realtime"], 0);
    }
}
