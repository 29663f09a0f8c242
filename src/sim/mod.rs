//! Provider simulator: a deterministic, fault-injecting upstream speaking OpenAI/vLLM, Azure
//! OpenAI and Anthropic Messages. Several named deployments share one listener
//! (`/d/{deployment}/...`); each has a default behaviour and scripted rules, changed at run
//! time through the admin API; every call lands in a journal the tests read. See docs/sim.md.

pub mod admin;
pub mod anthropic;
pub mod bench;
pub mod dialect;
pub mod embeddings;
pub mod metrics;
pub mod model;
pub mod openai;
pub mod request;
pub mod server;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tower::ServiceExt;

pub use admin::AdminClient;
pub use bench::{BenchArgs, bench_cli};
pub use model::{Behaviour, Fault, JournalEntry, JournalQuery, Rule, When};

/// Replies are this many words unless a deployment says otherwise.
pub const DEFAULT_REPLY_TOKENS: u64 = 16;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Seeds every pseudo-random choice (jitter, `rate` rules, reply words).
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub deployments: Vec<DeploymentSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    pub name: String,
    /// Model ids `/v1/models` lists (default: the deployment's name). Any model is served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    #[serde(default)]
    pub behaviour: Behaviour,
    /// Words in a reply when `max_tokens` does not cut it shorter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_tokens: Option<u64>,
}

impl DeploymentSpec {
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }
    pub fn served_models(&self) -> Vec<String> {
        if self.models.is_empty() {
            vec![self.name.clone()]
        } else {
            self.models.clone()
        }
    }
    pub fn reply_tokens(&self) -> u64 {
        self.reply_tokens.unwrap_or(DEFAULT_REPLY_TOKENS).max(1)
    }
}

impl SimConfig {
    /// Healthy deployments with these names.
    pub fn for_deployments(names: &[String]) -> Self {
        Self {
            seed: 0,
            deployments: names.iter().map(|n| DeploymentSpec::named(n)).collect(),
        }
    }

    /// YAML or JSON (JSON is YAML).
    pub fn parse(origin: &str, text: &str) -> anyhow::Result<Self> {
        let c: Self = serde_yaml::from_str(text)
            .map_err(|e| crate::error::RunError::usage(format!("{origin}: invalid simulator config: {e}")))?;
        for d in &c.deployments {
            if let Some(f) = &d.behaviour.fault {
                f.validate()
                    .map_err(|e| crate::error::RunError::usage(format!("{origin}: deployment {}: {e}", d.name)))?;
            }
        }
        Ok(c)
    }
}

/// A running simulator.
pub struct SimHandle {
    addr: SocketAddr,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    /// Stops accepting and drops every open connection (hanging requests included).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(());
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), self.task).await;
    }
}

pub async fn start(config: SimConfig, listen: SocketAddr) -> anyhow::Result<SimHandle> {
    let state = Arc::new(state::State::new(config.seed, config.deployments));
    let app = server::router(state);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("simulator cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = &mut rx => break,
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let flag = server::ResetFlag::default();
                    let (app, req_flag) = (app.clone(), flag.clone());
                    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                        req.extensions_mut().insert(req_flag.clone());
                        app.clone().oneshot(req)
                    });
                    conns.spawn(async move {
                        let io = hyper_util::rt::TokioIo::new(server::ResettableStream::new(stream, flag));
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        conns.abort_all();
    });
    Ok(SimHandle {
        addr,
        shutdown: tx,
        task,
    })
}

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
