//! `rtswitch` command-line entry point (the command line is `rtswitch_tools::app`).

use std::time::Instant;

fn main() -> std::process::ExitCode {
    // Boot time is measured from here: process start, as near as we get.
    let started = Instant::now();
    rtswitch::logging::init();
    rtswitch_tools::app::main(started)
}
