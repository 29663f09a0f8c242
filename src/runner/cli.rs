//! Command-line dispatch (placeholder until the runner lands).
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "gauntlet")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the provider simulator.
    Sim(crate::sim::SimArgs),
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Simulator throughput next to a bare constant-body handler.
    Sim(crate::sim::BenchArgs),
}

pub fn main(args: Vec<String>) -> ExitCode {
    let cli = Cli::parse_from(args);
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let result = rt.block_on(async {
        match cli.command {
            Command::Sim(a) => crate::sim::serve_cli(a).await,
            Command::Bench { what: Bench::Sim(a) } => crate::sim::bench_cli(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
