//! The `rtswitch` command line as a whole, and where each subcommand goes:
//! the top of the crate, which only `main.rs` uses.
//!
//! Layers: the core VMM (`runner`, `vstate`, `switch`, `api`, `devices`,
//! `loader`, `report` and the options of `run` and `ctl` in `cli`) never
//! imports the tools (`bench`, `stress`, `locktest`) or the plotting code (`plot`);
//! they sit on top of it, and this module is the only one that reaches
//! them (docs/ARCHITECTURE.md, "Layers"; `layering.rs` checks it). The
//! run's `--plot` renderer is handed to the core here, as a
//! [`Plotter`].

use std::time::Instant;

use clap::{Parser, Subcommand};

use rtswitch::cli::{CtlArgs, RunArgs};
use rtswitch::exit_code::ExitCode;
use rtswitch::report::Plotter;

#[derive(Debug, Parser)]
#[command(
    name = "rtswitch",
    version,
    about = "Boot a Rust guest kernel under KVM and switch its locking between mainline and rt at runtime"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot the guest kernel and run it until it exits, --duration passes, or SIGINT/SIGTERM.
    Run(Box<RunArgs>),
    /// Talk to a running VMM over its control socket (QMP).
    Ctl(CtlArgs),
    /// Hammer the runtime switch of a VM for a while and tally what happened.
    Stress(crate::stress::StressArgs),
    /// The benchmark suite: boot, latency, lock throughput, switch cost and its scaling; table, JSON, plots.
    Bench(crate::bench::BenchArgs),
    /// Run lock scenarios (Linux rt-tester's format) on the guest's lock tester: PASS, FAIL at a line, or not applicable in mainline.
    Locktest(crate::locktest::LocktestArgs),
}

/// Parses the command line and does what it asks; `started` is the
/// process start (boot time is measured from it).
pub fn main(started: Instant) -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { ExitCode::BadArguments } else { ExitCode::Ok };
            let _ = e.print();
            return code.into();
        }
    };
    let code = match cli.command {
        Command::Run(args) => match args.into_config() {
            // Output paths are checked before the boot: a long run is not
            // wasted on a file that cannot be written.
            Ok(mut config) => {
                config.plotter = Some(Plotter(crate::plot::run::render));
                for w in config.warnings() {
                    rtswitch::logging::stderr_line(&format!("rtswitch: warning: {w}"));
                }
                match rtswitch::report::outputs::prepare(&config.outputs(), config.workload.bucket_us) {
                    Ok(()) => rtswitch::runner::run(config, started),
                    Err(e) => {
                        rtswitch::logging::stderr_line(&format!("rtswitch: error: {e}"));
                        ExitCode::BadArguments
                    }
                }
            }
            Err(e) => {
                eprintln!("rtswitch: error: {e}");
                ExitCode::BadArguments
            }
        },
        // Its own exit codes (docs/usage.md, "Exit codes"); 2 for bad arguments too.
        Command::Ctl(args) => return rtswitch::api::ctl::run(&args).into(),
        Command::Stress(args) => crate::stress::run(&args),
        Command::Bench(args) => crate::bench::run(&args),
        Command::Locktest(args) => crate::locktest::run(&args),
    };
    code.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_shows_every_default() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        let run = cmd.find_subcommand_mut("run").unwrap().render_long_help().to_string();
        for d in ["[default: 2s]", "[default: 500ms]", "[default: 10s]", "[default: 2]", "[default: 128]"] {
            assert!(run.contains(d), "{d} missing in:\n{run}");
        }
        let ctl = cmd.find_subcommand_mut("ctl").unwrap().render_long_help().to_string();
        assert!(ctl.contains("[default: 30s]") && ctl.contains("Ctrl-C"), "{ctl}");
        let ctl = cmd.find_subcommand_mut("ctl").unwrap();
        let mode = ctl.find_subcommand_mut("mode").unwrap().render_long_help().to_string();
        assert!(mode.contains("x-cancel-switch") && mode.contains("changes nothing"), "{mode}");
        let bench = Cli::try_parse_from(["rtswitch", "bench", "--duration", "1500ms"]).unwrap();
        let Command::Bench(b) = bench.command else { panic!("not bench") };
        assert_eq!(b.duration, Some(1.5));
    }
}
