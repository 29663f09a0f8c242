//! The listener: every accepted connection is sniffed (`sniff`), then either served by the
//! control API or forwarded to the upstream, connected afresh for it, through two lanes
//! (`lane`), one per direction. [`start`] binds before it returns; [`ProxyHandle`] stops the
//! proxy, and every connection through it, when dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::client::ProxyClient;
use super::control;
use super::lane::{self, Conn, End};
use super::sniff::{Replay, Seen, sniff};
use super::state::{AddError, ProxyStats, Shared};
use super::toxic::{Stream, Toxic};
use crate::error::RunError;

/// How long an upstream connect may take before the client is dropped as if refused.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A running proxy. Dropping it stops the listener and drops every open connection.
pub struct ProxyHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl ProxyHandle {
    /// The bound address (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }
    /// A client of this proxy's control API.
    pub fn client(&self) -> ProxyClient {
        ProxyClient::new(&self.url())
    }
    pub fn stats(&self) -> ProxyStats {
        self.shared.stats()
    }
    /// In-process control, the same as the API's.
    pub fn add(&self, toxic: Toxic) -> Result<(), AddError> {
        self.shared.add(toxic)
    }
    pub fn remove(&self, name: &str) -> bool {
        self.shared.remove(name)
    }
    pub fn toxics(&self) -> Vec<Toxic> {
        self.shared.list()
    }
    pub fn clear(&self) {
        self.shared.clear();
    }
    /// Removes every toxic and resets every forwarded connection open now.
    pub fn reset(&self) {
        self.shared.reset();
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        // The accept task owns the connections' JoinSet: aborting it aborts them all.
        self.task.abort();
    }
}

/// A proxy on `listen` forwarding to `upstream` (`host:port`, resolved for each connection, so
/// a name that does not resolve yet is no error here), seed 0.
pub async fn start(listen: SocketAddr, upstream: &str) -> anyhow::Result<ProxyHandle> {
    start_seeded(listen, upstream, 0).await
}

/// [`start`], with the seed of the toxicity draws, jitter and slice sizes.
pub async fn start_seeded(listen: SocketAddr, upstream: &str, seed: u64) -> anyhow::Result<ProxyHandle> {
    check_upstream(upstream)?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("proxy cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(upstream.to_owned(), seed));
    let app = control::router(shared.clone());
    let task = tokio::spawn(accept(listener, shared.clone(), app));
    Ok(ProxyHandle { addr, shared, task })
}

fn check_upstream(upstream: &str) -> Result<(), RunError> {
    let bad = |why: &str| RunError::usage(format!("proxy upstream {upstream:?} {why}; expected HOST:PORT"));
    let (host, port) = upstream.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
    if host.is_empty() || host.contains('/') {
        return Err(bad("has no host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(()),
        _ => Err(bad("has no valid port")),
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>, app: Router) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    // Slices and small replies must leave when written, not when Nagle agrees.
                    let _ = stream.set_nodelay(true);
                    conns.spawn(serve(stream, shared.clone(), app.clone()));
                }
                // Out of descriptors, most likely: give open connections a moment to end.
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve(mut client: TcpStream, shared: Arc<Shared>, app: Router) {
    let Ok((seen, first)) = sniff(&mut client).await else {
        return;
    };
    if seen == Seen::Control {
        shared.counters.control.fetch_add(1, Ordering::Relaxed);
        control::serve(Replay::new(first, client), app).await;
    } else {
        forward(client, first, shared).await;
    }
}

/// Counts a forwarded connection as open while it lives.
struct Open(Arc<Shared>);

impl Open {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.counters.open.fetch_add(1, Ordering::Relaxed);
        Self(shared.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn forward(client: TcpStream, first: Bytes, shared: Arc<Shared>) {
    let number = shared.counters.accepted.fetch_add(1, Ordering::Relaxed);
    let _open = Open::new(&shared);
    // Subscribed before the connect: a reset from now on is this connection's too.
    let mut resets = shared.resets.subscribe();
    let upstream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(shared.upstream.as_str())).await {
        Ok(Ok(s)) => s,
        _ => {
            shared.counters.upstream_failures.fetch_add(1, Ordering::Relaxed);
            // A RST, as the client would have had connecting to the refusing upstream itself.
            abort(&client);
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    let conn = Conn { shared, number };
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let end = {
        let up = lane::run(&mut cr, &mut uw, first, Stream::Upstream, &conn);
        let down = lane::run(&mut ur, &mut cw, Bytes::new(), Stream::Downstream, &conn);
        tokio::pin!(up, down);
        let (mut up_done, mut down_done) = (false, false);
        loop {
            let end = tokio::select! {
                e = &mut up, if !up_done => { up_done = true; e }
                e = &mut down, if !down_done => { down_done = true; e }
                _ = resets.changed() => End::Reset,
            };
            // One direction's FIN leaves the other open (a half-close); anything else ends both.
            if end != End::Eof {
                break end;
            }
            if up_done && down_done {
                break End::Eof;
            }
        }
    };
    match end {
        End::Eof => {}
        End::Close => {
            let _ = cw.shutdown().await;
            let _ = uw.shutdown().await;
        }
        End::Reset | End::Broken => {
            abort(cr.as_ref());
            abort(ur.as_ref());
            // A write half sends a FIN when dropped, which would reach the peer before the
            // RST and read as a clean end: let the read halves' drop close the sockets.
            cw.forget();
            uw.forget();
        }
    }
}

/// Linger 0: the close that follows (the socket's drop) sends a RST, not a FIN.
fn abort(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_needs_a_host_and_a_port() {
        assert!(check_upstream("sim:8000").is_ok());
        assert!(check_upstream("[::1]:8000").is_ok());
        for bad in ["sim", ":8000", "sim:", "sim:0", "sim:99999", "http://sim:8000"] {
            assert!(check_upstream(bad).is_err(), "{bad}");
        }
    }
}
