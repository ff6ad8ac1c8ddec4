//! `rtswitch` command-line entry point.

use std::time::Instant;

use clap::Parser;
use rtswitch::cli::{Cli, Command};
use rtswitch::exit_code::ExitCode;

fn main() -> std::process::ExitCode {
    // Boot time is measured from here: process start, as near as we get.
    let started = Instant::now();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_timestamp_millis()
        .init();
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
            Ok(config) => match rtswitch::report::outputs::check(&config.output.files(), config.workload.bucket_us) {
                Ok(()) => rtswitch::runner::run(config, started),
                Err(e) => {
                    eprintln!("rtswitch: error: {e}");
                    ExitCode::BadArguments
                }
            },
            Err(e) => {
                eprintln!("rtswitch: error: {e}");
                ExitCode::BadArguments
            }
        },
        // Its own exit codes (README, "Exit codes"); 2 for bad arguments too.
        Command::Ctl(args) => return rtswitch::api::ctl::run(&args).into(),
        Command::Stress(args) => rtswitch::stress::run(&args),
        Command::Bench(args) => rtswitch::bench::run(&args),
    };
    code.into()
}
