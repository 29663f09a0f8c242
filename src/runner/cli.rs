//! Command-line dispatch. Anything that is not a subcommand is libtest arguments for
//! `gauntlet test`, so `gauntlet --list`, `gauntlet smoke::` and a bare `gauntlet` run the
//! suites exactly as a libtest binary would.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "gauntlet",
    version,
    about = "Runs an LLM gateway stack through its paces: smoke, fallbacks, cost ledgers, caching.",
    after_help = "With no subcommand, or with libtest arguments (--list, FILTER, --exact, --ignored, \
                  --test-threads N, ...), gauntlet runs the suites: see `gauntlet test --help`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the suites (the default); takes libtest's arguments.
    #[command(disable_help_flag = true)]
    Test {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the provider simulator.
    Sim(crate::sim::SimArgs),
    /// Start the stack and keep it running (Ctrl-C stops it); --detach runs it in the background.
    Up(super::up::UpArgs),
    /// Stop a stack started with `gauntlet up --detach`.
    Down {
        /// The stack's state file (default: target/gauntlet/stack.json, or $GAUNTLET_STACK).
        #[arg(long, env = "GAUNTLET_STACK")]
        state: Option<PathBuf>,
    },
    /// Mirror your own LiteLLM config: same models, chains, timeouts, retries and prices,
    /// every deployment pointed at the simulator. Writes gauntlet.toml, router.yaml, prices.toml.
    Mirror {
        /// Your LiteLLM config.yaml.
        config: PathBuf,
        /// Where to write the mirrored stack.
        #[arg(long, default_value = "target/gauntlet/mirror")]
        out: PathBuf,
    },
    /// Install the pinned LiteLLM into the cache now (otherwise done on first use).
    Provision,
    /// Benchmarks (print numbers; never assert times).
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

const SUBCOMMANDS: &[&str] = &[
    "test",
    "sim",
    "up",
    "down",
    "provision",
    "bench",
    "help",
    "-h",
    "--help",
    "-V",
    "--version",
];

pub fn main(args: Vec<String>) -> ExitCode {
    let first = args.get(1).map(String::as_str).unwrap_or("");
    if !SUBCOMMANDS.contains(&first) {
        return super::run_tests(args);
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { crate::error::exit::USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Test { args: rest } => {
            let mut argv = vec![args[0].clone()];
            argv.extend(rest);
            return super::run_tests(argv);
        }
        Command::Up(a) => super::up::up(a),
        Command::Down { state } => super::up::down(state),
        Command::Mirror { config, out } => mirror(&config, &out),
        Command::Provision => crate::stack::litellm::resolve()
            .map(|bin| println!("{}", bin.display()))
            .map_err(Into::into),
        Command::Sim(a) => block_on(crate::sim::serve_cli(a)),
        Command::Bench { what: Bench::Sim(a) } => block_on(crate::sim::bench_cli(a)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gauntlet: error: {}", crate::redact::redact(&format!("{e:#}")));
            crate::error::exit_code_of(&e)
        }
    }
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(f)
}

fn mirror(config: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| crate::error::RunError::usage(format!("cannot read {}: {e}", config.display())))?;
    let m = crate::stack::mirror::mirror(&config.display().to_string(), &text)?;
    crate::stack::mirror::write(&m, out)?;
    println!("gauntlet: mirrored {} into {}", config.display(), out.display());
    if !m.unpriced.is_empty() {
        println!(
            "  no price for {}: fill them in {}",
            m.unpriced.join(", "),
            out.join("prices.toml").display()
        );
    }
    println!(
        "  run it: GAUNTLET_MANIFEST={} gauntlet",
        out.join("gauntlet.toml").display()
    );
    Ok(())
}
