//! `gauntlet`: a thin CLI over the library. With no subcommand it runs the suites, so
//! `gauntlet --list`, `gauntlet smoke::` and `cargo run --release` behave like a libtest binary.

use std::process::ExitCode;

fn main() -> ExitCode {
    gauntlet::runner::cli::main(std::env::args().collect())
}
