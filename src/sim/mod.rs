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

// --- temporary stand-ins until the sim branch lands ---
#[derive(Debug, Clone, Default)]
pub struct SimConfig;
impl SimConfig {
    pub fn for_deployments(_d: &[String]) -> Self {
        Self
    }
}
pub struct SimHandle(std::net::SocketAddr);
impl SimHandle {
    pub fn url(&self) -> String {
        format!("http://{}", self.0)
    }
    pub async fn shutdown(self) {}
}
pub async fn start(_c: SimConfig, a: SocketAddr) -> anyhow::Result<SimHandle> {
    Ok(SimHandle(a))
}
pub struct JournalEntry {
    pub user: Option<String>,
}
pub struct AdminClient;
impl AdminClient {
    pub fn new(_u: &str) -> Self {
        Self
    }
    pub async fn journal(&self, _tag: Option<&str>) -> anyhow::Result<Vec<JournalEntry>> {
        Ok(vec![])
    }
}
