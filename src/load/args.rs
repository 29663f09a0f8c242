//! `gauntlet load`'s command line.

use std::path::PathBuf;

use super::profile::{Profiles, Shard};
use super::report::Slo;

#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct LoadCli {
    #[command(subcommand)]
    pub command: Option<LoadCommand>,
    #[command(flatten)]
    pub run: LoadArgs,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum LoadCommand {
    /// Combine the reports of `--shard i/N` runs into one report (counts and histograms add).
    Merge {
        /// The shards' report.json files.
        #[arg(required = true, num_args = 1..)]
        reports: Vec<PathBuf>,
        /// Where to write the merged report.json, summary.txt and plots.
        #[arg(long, default_value = "target/gauntlet/load-merged")]
        out: PathBuf,
    },
    /// Compare a run with a baseline by the regression gate's rule; exit 1 on a regression.
    Compare {
        baseline: PathBuf,
        report: PathBuf,
        #[command(flatten)]
        rule: RuleArgs,
    },
}

#[derive(Debug, Clone, Copy, clap::Args)]
pub struct RuleArgs {
    /// Significance level of the one-sided Mann-Whitney test.
    #[arg(long, default_value_t = 0.001)]
    pub alpha: f64,
    /// A regression moves the median up by at least this many milliseconds...
    #[arg(long, default_value_t = 1.0)]
    pub min_effect_ms: f64,
    /// ...and by at least this percentage of the baseline's median.
    #[arg(long, default_value_t = 5.0)]
    pub min_effect_pct: f64,
}

impl RuleArgs {
    pub fn rule(self) -> Result<super::gate::Rule, String> {
        if !(self.alpha > 0.0 && self.alpha < 1.0) {
            return Err(format!("--alpha {}: between 0 and 1", self.alpha));
        }
        if !(self.min_effect_ms >= 0.0 && self.min_effect_pct >= 0.0) {
            return Err("--min-effect-ms and --min-effect-pct are 0 or more".into());
        }
        Ok(super::gate::Rule {
            alpha: self.alpha,
            min_effect_ms: self.min_effect_ms,
            min_effect_pct: self.min_effect_pct,
        })
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// An OpenAI-compatible server (http://host:port, …/v1 or the full …/chat/completions
    /// URL). Without it, gauntlet starts its own stack and loads its router.
    #[arg(long, env = "GAUNTLET_LOAD_URL")]
    pub url: Option<String>,
    /// The model to ask for (default: the embedded stack's first simulated chat group, or the
    /// first model the server's /v1/models lists).
    #[arg(long)]
    pub model: Option<String>,
    /// Bearer key for --url (the embedded stack uses its own master key).
    #[arg(long, env = "GAUNTLET_LOAD_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// synchronous | concurrent:N | constant:R | poisson:R | sweep[:POINTS[:MAX]]; N and R may
    /// be lists (constant:5,20,50), run one after another.
    #[arg(long, default_value = "constant:10")]
    pub profile: Profiles,
    /// Measured seconds per point (after the warm-up).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Measured requests per point (after the warm-up); with --duration, whichever ends first.
    #[arg(long)]
    pub requests: Option<u64>,
    /// Seconds sent before measuring starts, per point.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Stream replies (TTFT, inter-token latency, TPOT measured).
    #[arg(long)]
    pub stream: bool,
    /// Prompt length of generated prompts, in tokens (o200k_base and cl100k_base).
    #[arg(long, default_value_t = 128)]
    pub input_tokens: u32,
    /// max_tokens asked for.
    #[arg(long, default_value_t = 16)]
    pub output_tokens: u32,
    /// Seed of generated prompts and Poisson arrivals.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Prompts from a JSONL file instead: {"prompt": "..."} or {"messages": [...]} per line,
    /// with an optional "max_tokens".
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Seconds before one request counts as a timeout.
    #[arg(long, default_value_t = 60.0)]
    pub timeout: f64,
    /// Stop a point once more than this fraction of its requests failed (after 20).
    #[arg(long, default_value_t = 0.5)]
    pub max_error_rate: f64,
    /// Service-level objectives for goodput, in ms: ttft:200,tpot:50,e2el:1000.
    #[arg(long)]
    pub slo: Option<Slo>,
    /// Open loop: requests in flight at most.
    #[arg(long, default_value_t = 4096)]
    pub max_inflight: usize,
    /// Also load the simulator directly with the same profile, and report what the router
    /// adds (embedded stack; with --url give --direct-url).
    #[arg(long)]
    pub overhead: bool,
    /// The upstream --url routes to, for --overhead.
    #[arg(long)]
    pub direct_url: Option<String>,
    /// Run as generator i of N (from 0): this one offers 1/N of the load; merge the reports
    /// with `gauntlet load merge`.
    #[arg(long)]
    pub shard: Option<Shard>,
    /// Compare with this earlier report.json; exit 1 on a regression (see `load compare`).
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    #[command(flatten)]
    pub rule: RuleArgs,
    /// Where report.json, summary.txt and the plots go.
    #[arg(long, default_value = "target/gauntlet/load")]
    pub out: PathBuf,
    /// Print the JSON report on stdout (the summary goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// Threads of the load generator (the server under test shares the machine).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}
