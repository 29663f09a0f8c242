//! Provider simulator: a deterministic, fault-injecting OpenAI/vLLM-compatible upstream.
//! (being written on the `sim` branch)

use std::net::SocketAddr;

/// `gauntlet sim` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Address to listen on; port 0 picks a free port and prints the bound address.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: SocketAddr,
}

/// `gauntlet bench sim` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {}

pub async fn serve_cli(_args: SimArgs) -> anyhow::Result<()> {
    anyhow::bail!("simulator not built yet")
}

pub async fn bench_cli(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("simulator bench not built yet")
}
