//! Durations as the command line writes them: a number with a unit
//! (`2s`, `500ms`, `1.5s`), or a bare number in an option's own unit.
//! Shared by `rtswitch run`'s options (`cli`), the runner's messages and
//! the benchmark suite, which sit above it.

use std::time::Duration;

/// Parses a duration option: a number with a unit (`us`/`µs`, `ms`, `s`,
/// `m`, `h`, `d`; fractions allowed: `1.5s`), or a bare number in the
/// option's own unit `bare` (the unit the option had before units were
/// accepted, so old command lines keep their meaning). The result must lie
/// in `min..=max` (`min` zero: zero allowed).
pub fn parse_duration_in(s: &str, bare: Unit, min: Duration, max: Duration) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = match unit.trim() {
        "" => bare,
        "us" | "µs" => Unit::Micros,
        "ms" => Unit::Millis,
        "s" => Unit::Secs,
        "m" | "min" => Unit::Secs60,
        "h" => Unit::Hours,
        "d" => Unit::Days,
        u => return Err(format!("'{s}': unknown unit '{u}'; use us, ms, s, m, h or d (e.g. 2s, 500ms)")),
    };
    let n: f64 = num.parse().map_err(|_| format!("'{s}' is not a duration; write e.g. 2s, 500ms, 1.5s"))?;
    let secs = n * unit.secs();
    // A minimum below a microsecond is "more than zero" (`show` would
    // print it as 0s, which reads as if zero were allowed).
    let range = || {
        if !min.is_zero() && min < Duration::from_micros(1) {
            format!("more than 0, at most {}", show(max))
        } else {
            format!("{} to {}", show(min), show(max))
        }
    };
    if !secs.is_finite() || secs > max.as_secs_f64() {
        return Err(format!("'{s}' is out of range: {}", range()));
    }
    let d = Duration::from_secs_f64(secs);
    if d < min || (min.is_zero() && secs < 0.0) || (!min.is_zero() && d.is_zero()) {
        return Err(format!("'{s}' is out of range: {}", range()));
    }
    Ok(d)
}

/// A whole number of microseconds in `min..=max`: a bare number is µs
/// (cyclictest's unit), or a duration with its unit (`1ms`, `2.5ms`), for
/// the options whose value is µs (`--interval-us`, `--cs-us`, ...).
pub fn parse_us_in(s: &str, min: u32, max: u32) -> Result<u32, String> {
    let to = |us: u32| Duration::from_micros(u64::from(us));
    let d = parse_duration_in(s, Unit::Micros, to(min), to(max))?;
    // Rounded to the nearest ns first: `2.5ms` is 0.0025 s, which a binary
    // float holds only approximately.
    let us = d.as_secs_f64() * 1e6;
    if (us - us.round()).abs() > 1e-3 {
        return Err(format!("'{s}' is not a whole number of microseconds"));
    }
    // In range (checked above), so it fits.
    Ok(us.round() as u32)
}

/// A value parser for a µs option in `min..=max` (see [`parse_us_in`]).
pub fn us_in(min: u32, max: u32) -> impl Fn(&str) -> Result<u32, String> + Clone + Send + Sync + 'static {
    move |s| parse_us_in(s, min, max)
}

/// The unit of a duration option's bare number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Micros,
    Millis,
    Secs,
    Secs60,
    Hours,
    Days,
}

impl Unit {
    fn secs(self) -> f64 {
        match self {
            Unit::Micros => 1e-6,
            Unit::Millis => 1e-3,
            Unit::Secs => 1.0,
            Unit::Secs60 => 60.0,
            Unit::Hours => 3600.0,
            Unit::Days => 86400.0,
        }
    }
}

/// A duration the way the options take it (`2s`, `10ms`, `1.5s`).
pub fn show(d: Duration) -> String {
    let us = d.as_micros();
    if us > 0 && us.is_multiple_of(86_400_000_000) {
        format!("{}d", us / 86_400_000_000)
    } else if us > 0 && us.is_multiple_of(3_600_000_000) {
        format!("{}h", us / 3_600_000_000)
    } else if us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us.is_multiple_of(1000) {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_units_and_show_in_the_largest_whole_one() {
        let max = Duration::from_secs(60);
        assert_eq!(parse_duration_in("1.5s", Unit::Millis, Duration::ZERO, max), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration_in("250", Unit::Millis, Duration::ZERO, max), Ok(Duration::from_millis(250)));
        assert!(
            parse_duration_in("2 fortnights", Unit::Secs, Duration::ZERO, max).unwrap_err().contains("unknown unit")
        );
        assert!(parse_duration_in("61s", Unit::Secs, Duration::ZERO, max).unwrap_err().contains("0s to 60s"));
        assert_eq!(show(Duration::from_millis(2500)), "2500ms");
        assert_eq!(show(Duration::from_secs(86_400)), "1d");
        assert_eq!(show(Duration::from_secs(7200)), "2h");
        assert_eq!(show(Duration::from_secs(600)), "600s");
        assert_eq!(show(Duration::from_micros(1500)), "1500us");
    }

    #[test]
    fn a_nonzero_minimum_reads_as_more_than_zero() {
        let e = parse_duration_in("0", Unit::Secs, Duration::from_nanos(1), Duration::from_secs(60)).unwrap_err();
        assert_eq!(e, "'0' is out of range: more than 0, at most 60s");
        let e = parse_duration_in("0", Unit::Secs, Duration::from_nanos(1), Duration::from_secs(365 * 86_400));
        assert_eq!(e.unwrap_err(), "'0' is out of range: more than 0, at most 365d");
        let e = parse_duration_in("0ms", Unit::Secs, Duration::from_millis(10), Duration::from_secs(60)).unwrap_err();
        assert!(e.ends_with("10ms to 60s"), "{e}");
    }

    #[test]
    fn microsecond_options_take_bare_us_or_a_unit() {
        assert_eq!(parse_us_in("1000", 100, 1_000_000), Ok(1000));
        assert_eq!(parse_us_in("1ms", 100, 1_000_000), Ok(1000));
        assert_eq!(parse_us_in("2.5ms", 100, 1_000_000), Ok(2500));
        assert_eq!(parse_us_in("1s", 100, 1_000_000), Ok(1_000_000));
        assert!(parse_us_in("1.5us", 1, 1000).unwrap_err().contains("whole number of microseconds"));
        assert!(parse_us_in("50", 100, 1000).unwrap_err().contains("100us to 1ms"));
        assert!(parse_us_in("2s", 100, 1_000_000).unwrap_err().contains("out of range"));
    }
}
