//! Starting a simulator: bind, then an accept loop of its own (so a `reset` fault can abort a
//! connection with a RST, which axum's serve cannot), and the [`SimHandle`] that stops it.

use std::net::SocketAddr;
use std::sync::Arc;

use tower::ServiceExt;

use super::config::SimConfig;
use super::server::{self, ResetFlag, ResettableStream};
use super::state::State;

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
    // BPE encodings take a moment to load: those the config names load in the background now,
    // any other on the first request that needs it.
    super::tokenizer::warm(config.encodings());
    let mut state = State::new(config.seed, config.deployments);
    state.tokenizers = config.tokenizers;
    let state = Arc::new(state);
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
                    let flag = ResetFlag::default();
                    let app = app.clone();
                    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        app.clone().oneshot(req)
                    });
                    let io = hyper_util::rt::TokioIo::new(ResettableStream::new(stream, flag.clone()));
                    let serve = hyper::server::conn::http1::Builder::new().serve_connection(io, svc);
                    // The connection's requests find its flag in the task (see `ResetFlag`).
                    conns.spawn(flag.scope(async move {
                        let _ = serve.await;
                    }));
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
