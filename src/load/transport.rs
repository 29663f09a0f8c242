//! Sending one request and reading its answer as it arrives. Plain `http://` targets get
//! HTTP/1.1 connections of their own (`wire`: one socket per in-flight request, kept alive
//! and reused), so the generator costs about what `wrk` costs and the numbers are the
//! server's; `https://` targets go through reqwest.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};

use super::sample::{ErrorClass, Reading, Success};
use super::wire::{Conn, WireError};
use crate::error::RunError;

/// LiteLLM's own account of the time it added to a request.
pub(super) const OVERHEAD_HEADER: &str = "x-litellm-overhead-duration-ms";

/// Where requests go: the chat completions URL, its key and how to reach it.
pub struct Transport {
    pub url: String,
    key: Option<HeaderValue>,
    kind: Kind,
    timeout: Duration,
}

enum Kind {
    Plain {
        addr: SocketAddr,
        host: String,
        path: String,
        idle: Mutex<Vec<Conn>>,
    },
    Tls(reqwest::Client),
}

/// `http://host:port`, `…/v1` or the full `…/v1/chat/completions`: the completions URL.
pub fn completions_url(base: &str) -> String {
    let b = base.trim_end_matches('/');
    if b.ends_with("/chat/completions") {
        b.to_owned()
    } else if b.ends_with("/v1") {
        format!("{b}/chat/completions")
    } else {
        format!("{b}/v1/chat/completions")
    }
}

impl Transport {
    pub async fn new(base: &str, key: Option<&str>, timeout: Duration) -> Result<Self, RunError> {
        let url = completions_url(base);
        let parsed = url::Url::parse(&url).map_err(|e| RunError::usage(format!("--url {base:?}: {e}")))?;
        let key = key
            .map(|k| HeaderValue::from_str(&format!("Bearer {k}")))
            .transpose()
            .map_err(|_| RunError::usage("the API key holds characters a header cannot carry"))?
            .map(|mut v| {
                v.set_sensitive(true);
                v
            });
        let kind = match parsed.scheme() {
            "http" => {
                let host = parsed
                    .host_str()
                    .ok_or_else(|| RunError::usage(format!("--url {base:?}: no host")))?;
                let port = parsed.port_or_known_default().unwrap_or(80);
                let addr = tokio::net::lookup_host((host, port))
                    .await
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| RunError::stack(format!("{url}: cannot resolve {host}")))?;
                let authority = match parsed.port() {
                    Some(p) => format!("{host}:{p}"),
                    None => host.to_owned(),
                };
                let path = match parsed.query() {
                    Some(q) => format!("{}?{q}", parsed.path()),
                    None => parsed.path().to_owned(),
                };
                if authority.bytes().any(|b| b.is_ascii_control() || b == b' ') || path.contains(' ') {
                    return Err(RunError::usage(format!("--url {base:?}: bad host or path")));
                }
                Kind::Plain {
                    addr,
                    host: authority,
                    path,
                    idle: Mutex::new(Vec::new()),
                }
            }
            "https" => Kind::Tls(
                reqwest::Client::builder()
                    .pool_max_idle_per_host(4096)
                    .build()
                    .map_err(|e| RunError::stack(format!("cannot make an HTTPS client: {e}")))?,
            ),
            other => {
                return Err(RunError::usage(format!(
                    "--url {base:?}: scheme {other}: is not http or https"
                )));
            }
        };
        Ok(Self {
            url,
            key,
            kind,
            timeout,
        })
    }

    /// Sends `body` and reads the whole answer, all of it bounded by the timeout. Latency
    /// counts from `intended`, which for an open loop may be before now.
    pub async fn exchange(&self, body: &Bytes, intended: Instant, stream: bool) -> Result<Success, ErrorClass> {
        self.exchange_reading(body, intended, stream)
            .await
            .and_then(|(r, at)| r.finish(at))
    }

    /// The answer as read, for a preflight that wants to quote it.
    pub async fn exchange_reading(
        &self,
        body: &Bytes,
        intended: Instant,
        stream: bool,
    ) -> Result<(Reading, Instant), ErrorClass> {
        let deadline = Instant::now() + self.timeout;
        match tokio::time::timeout_at(deadline.into(), self.send(body, intended, stream)).await {
            Ok(r) => r,
            Err(_) => Err(ErrorClass::Timeout),
        }
    }

    async fn send(&self, body: &Bytes, intended: Instant, stream: bool) -> Result<(Reading, Instant), ErrorClass> {
        match &self.kind {
            Kind::Plain { addr, host, path, idle } => {
                let auth = self.key.as_ref().and_then(|k| k.to_str().ok());
                let (mut conn, head) = match take_idle(idle) {
                    Some(mut conn) => match conn.request(path, host, auth, body).await {
                        Ok(head) => (conn, head),
                        // A kept-alive socket the server closed meanwhile: one fresh try.
                        Err(WireError::BeforeAnswer) => fresh(*addr, path, host, auth, body).await?,
                        Err(e) => return Err(class(e)),
                    },
                    None => fresh(*addr, path, host, auth, body).await?,
                };
                let mut reading = Reading::new(intended, head.status, stream, head.claimed_overhead_ms);
                conn.body(|data| reading.feed_bytes(data, Instant::now()))
                    .await
                    .map_err(class)?;
                let at = Instant::now();
                if conn.reusable()
                    && let Ok(mut v) = idle.lock()
                {
                    v.push(conn);
                }
                Ok((reading, at))
            }
            Kind::Tls(client) => {
                let mut req = client
                    .post(&self.url)
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone());
                if let Some(k) = &self.key {
                    req = req.header(AUTHORIZATION, k.clone());
                }
                let mut resp = req.send().await.map_err(|e| {
                    if e.is_timeout() {
                        ErrorClass::Timeout
                    } else {
                        ErrorClass::Connect
                    }
                })?;
                let mut reading = Reading::new(intended, resp.status().as_u16(), stream, claimed(resp.headers()));
                while let Some(chunk) = resp.chunk().await.map_err(|_| ErrorClass::Incomplete)? {
                    reading.feed_bytes(chunk, Instant::now());
                }
                Ok((reading, Instant::now()))
            }
        }
    }
}

fn claimed(h: &hyper::HeaderMap) -> Option<f64> {
    h.get(OVERHEAD_HEADER)?.to_str().ok()?.trim().parse().ok()
}

fn take_idle(idle: &Mutex<Vec<Conn>>) -> Option<Conn> {
    idle.lock().ok()?.pop()
}

/// A request on a new connection.
async fn fresh(
    addr: SocketAddr,
    path: &str,
    host: &str,
    auth: Option<&str>,
    body: &[u8],
) -> Result<(Conn, super::wire::Head), ErrorClass> {
    let mut conn = Conn::connect(addr).await.map_err(|_| ErrorClass::Connect)?;
    let head = conn.request(path, host, auth, body).await.map_err(class)?;
    Ok((conn, head))
}

fn class(e: WireError) -> ErrorClass {
    match e {
        WireError::BeforeAnswer => ErrorClass::Connect,
        WireError::Incomplete => ErrorClass::Incomplete,
        WireError::Malformed => ErrorClass::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_become_the_completions_url() {
        for (base, want) in [
            ("http://h:4000", "http://h:4000/v1/chat/completions"),
            ("http://h:4000/", "http://h:4000/v1/chat/completions"),
            ("http://h:4000/v1", "http://h:4000/v1/chat/completions"),
            ("http://h/d/x/v1/chat/completions", "http://h/d/x/v1/chat/completions"),
        ] {
            assert_eq!(completions_url(base), want);
        }
    }
}
