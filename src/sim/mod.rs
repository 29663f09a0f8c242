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
#[derive(Debug, Clone, Default)]
pub struct JournalEntry {
    pub seq: u64,
    pub deployment: String,
    pub user: Option<String>,
    pub outcome: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}
#[derive(Debug, Clone, Default)]
pub struct JournalQuery {
    pub deployment: Option<String>,
    pub tag: Option<String>,
}
#[derive(Debug, Clone)]
pub enum Fault {
    Error {
        status: u16,
        retry_after: Option<u64>,
        message: Option<String>,
    },
    Hang,
    Reset,
    Malformed,
    ContextLength,
}
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    pub fault: Option<Fault>,
}
#[derive(Debug, Clone)]
pub enum When {
    Always,
}
#[derive(Debug, Clone)]
pub struct Rule {
    pub tag: Option<String>,
    pub when: When,
    pub behaviour: Behaviour,
}
pub struct AdminClient;
impl AdminClient {
    pub fn new(_u: &str) -> Self {
        Self
    }
    pub async fn journal(&self, _q: &JournalQuery) -> anyhow::Result<Vec<JournalEntry>> {
        Ok(vec![])
    }
    pub async fn journal_text(&self, _tag: &str) -> anyhow::Result<String> {
        Ok(String::new())
    }
    pub async fn add_rule(&self, _d: &str, _r: &Rule) -> anyhow::Result<u64> {
        Ok(0)
    }
    pub async fn delete_rule(&self, _d: &str, _id: u64) -> anyhow::Result<()> {
        Ok(())
    }
}
