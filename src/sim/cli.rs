//! `gauntlet sim`: a standalone simulator until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::config::{DeploymentSpec, SimConfig};
use super::handle::start;

/// `gauntlet sim` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on; port 0 picks a free port (the bound address is printed).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
    /// A simulator config (YAML or JSON): seed, deployments, behaviours.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Seed for every pseudo-random choice (overrides the config's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Add a healthy deployment (repeatable). With no deployment at all, one named `default`
    /// is served, also on the unprefixed `/v1/...` routes.
    #[arg(long = "deployment")]
    pub deployments: Vec<String>,
}

pub async fn serve_cli(args: SimArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| crate::error::RunError::usage(format!("cannot read {}: {e}", p.display())))?;
            SimConfig::parse(&p.display().to_string(), &text)?
        }
        None => SimConfig::default(),
    };
    if let Some(s) = args.seed {
        config.seed = s;
    }
    config
        .deployments
        .extend(args.deployments.iter().map(|n| DeploymentSpec::named(n)));
    if config.deployments.is_empty() {
        config.deployments.push(DeploymentSpec::named("default"));
    }
    let names: Vec<String> = config.deployments.iter().map(|d| d.name.clone()).collect();
    let sim = start(config, args.listen).await?;
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(
            out,
            "gauntlet sim listening on {} (deployments: {})",
            sim.url(),
            names.join(", ")
        );
        let _ = out.flush();
    }
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = int.recv() => {},
        _ = term.recv() => {},
    }
    sim.shutdown().await;
    Ok(())
}
