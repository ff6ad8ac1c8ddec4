//! Log lines (`log`, through `env_logger`) in the style of everything else
//! the VMM prints: `rtswitch: warning: ...`, `rtswitch: error: ...`, and
//! for `RUST_LOG=info|debug|trace` `rtswitch: info: ...` or
//! `rtswitch: debug: [module] ...`. The default filter is `warn`.

use std::io::Write;

/// One log line (without its newline).
pub fn line(level: log::Level, target: &str, message: &std::fmt::Arguments<'_>) -> String {
    let name = match level {
        log::Level::Error => "error",
        log::Level::Warn => "warning",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    };
    if level <= log::Level::Info {
        format!("rtswitch: {name}: {message}")
    } else {
        format!("rtswitch: {name}: [{target}] {message}")
    }
}

/// Writes `line` and a newline to stderr, ignoring errors: a closed
/// stderr (`rtswitch run ... 2>&1 | head -2`) must not end the run, as
/// `eprintln!`'s panic would, before it has written its reports.
pub fn stderr_line(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(line.as_bytes()).and_then(|()| err.write_all(b"\n"));
}

/// Installs the logger: stderr, `RUST_LOG` (default `warn`), [`line`]'s style.
pub fn init() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format(|buf, record| writeln!(buf, "{}", line(record.level(), record.target(), record.args())))
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_read_like_the_vmms_other_lines() {
        let l = |level, msg: &str| line(level, "rtswitch::runner::switching", &format_args!("{msg}"));
        assert_eq!(l(log::Level::Warn, "kicking vcpu1 failed"), "rtswitch: warning: kicking vcpu1 failed");
        assert_eq!(l(log::Level::Error, "x"), "rtswitch: error: x");
        assert_eq!(l(log::Level::Info, "kernel loaded"), "rtswitch: info: kernel loaded");
        assert_eq!(l(log::Level::Debug, "d"), "rtswitch: debug: [rtswitch::runner::switching] d");
    }
}
