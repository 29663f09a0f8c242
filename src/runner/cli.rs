//! Command-line dispatch. Anything that is not a subcommand is libtest arguments for
//! `gauntlet test`, so `gauntlet --list`, `gauntlet smoke::` and a bare `gauntlet` run the
//! suites exactly as a libtest binary would. Which first arguments are subcommands is read from
//! clap's own `Cli::command()`, never from a list kept beside it.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

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
    #[command(disable_help_flag = true, override_usage = "gauntlet test [OPTIONS] [FILTER]")]
    Test {
        /// libtest's arguments (--list, FILTER, --exact, --skip, --ignored, --test-threads N, ...):
        /// see `gauntlet test --help`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the provider simulator.
    Sim(crate::sim::SimArgs),
    /// Run the fault-injecting TCP proxy (toxics set at run time on the same port) until
    /// SIGINT or SIGTERM.
    Proxy(crate::proxy::ProxyArgs),
    /// Start the stack and keep it running (Ctrl-C stops it); --detach runs it in the background.
    Up(super::up::UpArgs),
    /// Stop a stack started with `gauntlet up --detach`.
    Down {
        /// The stack's state file (default: target/gauntlet/stack.json, or $GAUNTLET_STACK).
        #[arg(long, env = "GAUNTLET_STACK")]
        state: Option<PathBuf>,
        /// Also remove every container and network an earlier gauntlet run left in Docker
        /// (runs whose process is gone; found by label).
        #[arg(long)]
        all: bool,
    },
    /// Run the ledger sink (receives the router's logging callbacks) until SIGINT or SIGTERM.
    Sink {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8001")]
        listen: std::net::SocketAddr,
    },
    /// Mirror your own LiteLLM config: same models, chains, timeouts, retries and prices,
    /// every deployment pointed at the simulator. Writes gauntlet.toml, router.yaml and MIRROR.md.
    Mirror {
        /// Your LiteLLM config.yaml.
        config: PathBuf,
        /// Where to write the mirrored stack.
        #[arg(long, default_value = "target/gauntlet/mirror")]
        out: PathBuf,
    },
    /// Install the pinned LiteLLM into the cache now (otherwise done on first use).
    Provision,
    /// Build the container images the Docker backend runs (`images build`), or list them.
    Images(crate::stack::image::ImagesArgs),
    /// Write the stack as a compose.yml (same images, health checks, start order) for
    /// bringing it up by hand with Docker Compose.
    Compose(crate::stack::compose::ComposeArgs),
    /// One readiness check (HTTP GET ready on 2xx, or redis:// PING), bounded at 5 s: exit 0
    /// when ready, 1 when not. A container health check in images with no shell or curl.
    Probe {
        /// http://host:port/path or redis://host:port.
        url: String,
    },
    /// Load the router (or any OpenAI-compatible URL): open- and closed-loop profiles, HDR
    /// latencies from the intended send time, router overhead, shards, a regression gate.
    Load(Box<crate::load::LoadCli>),
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
    /// The SSE decoder on generated streams of growing size (time per MB should stay flat).
    Sse(crate::client::bench::SseBenchArgs),
}

/// Whether `word`, the first argument, is for [`Cli`] rather than libtest: one of its
/// subcommands (by name, alias or flag form, `help` included) or one of its own flags (`-h`,
/// `--help`, `-V`, `--version`). Read from clap's `Cli::command()`, so a new subcommand is
/// dispatched without a list to keep in step.
fn is_cli_word(word: &str) -> bool {
    let mut cmd = Cli::command();
    cmd.build();
    let long = word.strip_prefix("--");
    let short = word.strip_prefix('-').filter(|s| !s.starts_with('-'));
    let is_short = |c: char| short.is_some_and(|s| s.len() == c.len_utf8() && s.starts_with(c));
    let is_long = |l: &str| long == Some(l);
    let subcommand = cmd.get_subcommands().any(|s| {
        s.get_name() == word
            || s.get_all_aliases().any(|a| a == word)
            || s.get_short_flag().is_some_and(is_short)
            || s.get_all_short_flag_aliases().any(is_short)
            || s.get_long_flag().is_some_and(is_long)
            || s.get_all_long_flag_aliases().any(is_long)
    });
    subcommand
        || cmd.get_arguments().any(|a| {
            a.get_short().is_some_and(is_short)
                || a.get_all_short_aliases().is_some_and(|v| v.into_iter().any(is_short))
                || a.get_long().is_some_and(is_long)
                || a.get_all_aliases().is_some_and(|v| v.into_iter().any(is_long))
        })
}

pub fn main(args: Vec<String>) -> ExitCode {
    let first = args.get(1).map(String::as_str).unwrap_or("");
    if !is_cli_word(first) {
        note_near_subcommand(first);
        return run_tests(args, "gauntlet");
    }
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => return print_clap_error(&e),
    };
    let result = match cli.command {
        Command::Test { args: rest } => {
            let mut argv = vec![args[0].clone()];
            argv.extend(rest);
            return run_tests(argv, "gauntlet test");
        }
        Command::Probe { url } => return probe(&url),
        Command::Compose(a) => block_on(crate::stack::compose::compose_cli(a)),
        Command::Up(a) => super::up::up(a),
        Command::Down { state, all } => super::up::down(state, all),
        Command::Sink { listen } => block_on(crate::ledger::sink::serve_cli(listen)),
        Command::Mirror { config, out } => mirror(&config, &out),
        Command::Provision => crate::stack::litellm::resolve()
            .map(|bin| println!("{}", bin.display()))
            .map_err(Into::into),
        Command::Images(a) => block_on(crate::stack::image::images_cli(a)),
        Command::Sim(a) => block_on(crate::sim::serve_cli(a)),
        Command::Proxy(a) => block_on(crate::proxy::serve_cli(a)),
        Command::Load(a) => super::load::main(*a),
        Command::Bench { what: Bench::Sim(a) } => block_on(crate::sim::bench_cli(a)),
        Command::Bench { what: Bench::Sse(a) } => crate::client::bench::bench_cli(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gauntlet: error: {}", crate::redact::redact(&format!("{e:#}")));
            crate::error::exit_code_of(&e)
        }
    }
}

/// Exit 1, never gauntlet's other codes, when not ready: Docker reserves 2 in a health check.
fn probe(url: &str) -> ExitCode {
    let ready = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(crate::stack::health::probe_url(url)));
    match ready {
        Ok(what) => {
            println!("{what}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("gauntlet probe: {why}");
            ExitCode::from(1)
        }
    }
}

fn print_clap_error(e: &clap::Error) -> ExitCode {
    let code = if e.use_stderr() { crate::error::exit::USAGE } else { 0 };
    let _ = e.print();
    ExitCode::from(code)
}

/// Runs the suites with libtest arguments `argv` (`argv[0]` the program). Their help and usage
/// errors are libtest's own arguments under gauntlet's name (`bin_name`) and the `test`
/// subcommand's description; nothing is started for them.
fn run_tests(argv: Vec<String>, bin_name: &'static str) -> ExitCode {
    let about = Cli::command()
        .find_subcommand("test")
        .and_then(|t| t.get_about().cloned())
        .unwrap_or_default();
    let libtest = <libtest_mimic::Arguments as CommandFactory>::command();
    let after = format!(
        "{}\n\nCases are named suite::case[::parameter]; `gauntlet --list` lists them and starts nothing. \
         `gauntlet` with no subcommand takes the same arguments as `gauntlet test`.",
        libtest.get_after_help().map(ToString::to_string).unwrap_or_default()
    );
    let cmd = libtest
        .name("gauntlet")
        .bin_name(bin_name)
        .about(about)
        .long_about(None)
        .after_help(after)
        .help_template("{before-help}{about-with-newline}\n{usage-heading} {usage}\n\n{all-args}{after-help}");
    match cmd.try_get_matches_from(&argv) {
        Ok(_) => super::run_tests(argv),
        Err(e) => print_clap_error(&e),
    }
}

/// A first argument that is not a subcommand is a test filter, as in libtest. When it looks
/// like a mistyped subcommand (`gauntlet mirorr ...`), say so on stderr; the run goes on.
fn note_near_subcommand(word: &str) {
    if let Some(name) = near_subcommand(word) {
        eprintln!(
            "gauntlet: note: {word:?} is not a subcommand, so it runs as a test filter; did you mean `gauntlet {name}`?"
        );
    }
}

/// The subcommand (or alias) within two edits of `word`, if one is.
fn near_subcommand(word: &str) -> Option<String> {
    if word.len() < 3 || word.starts_with('-') || word.contains(':') {
        return None;
    }
    let cmd = Cli::command();
    cmd.get_subcommands()
        .flat_map(|s| std::iter::once(s.get_name()).chain(s.get_all_aliases()))
        .find(|name| name.len() >= 3 && strsim::levenshtein(word, name) <= 2)
        .map(str::to_owned)
}

fn block_on<F: std::future::Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    tokio::runtime::Runtime::new()?.block_on(f)
}

fn mirror(config: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let m = crate::config::mirror::mirror_file(config).map_err(crate::error::RunError::from)?;
    crate::config::mirror::write(&m, out)?;
    for w in &m.warnings {
        eprintln!("gauntlet: warning: {}: {}", w.at, w.what);
    }
    println!("gauntlet: mirrored {} into {}", config.display(), out.display());
    if !m.unpriced.is_empty() {
        println!(
            "  no price for {}: their ledger cases are ignored; the lines to add are in {}",
            m.unpriced.join(", "),
            out.join("MIRROR.md").display()
        );
    }
    println!("  not under test and what changed: {}", out.join("MIRROR.md").display());
    println!(
        "  run it: GAUNTLET_MANIFEST={} gauntlet",
        out.join("gauntlet.toml").display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_subcommands_are_two_edits_away() {
        assert_eq!(near_subcommand("mirorr").as_deref(), Some("mirror"));
        assert_eq!(near_subcommand("compsoe").as_deref(), Some("compose"));
        assert_eq!(near_subcommand("smoke::chat"), None);
        assert_eq!(near_subcommand("zzzzzzzz"), None);
        assert_eq!(near_subcommand("mi"), None);
    }
}
