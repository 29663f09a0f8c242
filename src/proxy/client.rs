//! [`ProxyClient`]: the control API from Rust, for the chaos suites. Every call is bounded by
//! a timeout; an error names the proxy, the call, and what answered (status and the proxy's
//! one-line reason) or that nothing did.

use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use super::state::ProxyStats;
use super::toxic::Toxic;

/// Typed client of one proxy's control API.
#[derive(Clone, Debug)]
pub struct ProxyClient {
    base: String,
    http: reqwest::Client,
}

impl ProxyClient {
    /// Each call's bound unless [`ProxyClient::with_timeout`] says otherwise.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// `base` is the proxy's address, `http://host:port` (or `host:port`).
    pub fn new(base: &str) -> Self {
        Self::with_timeout(base, Self::DEFAULT_TIMEOUT)
    }

    pub fn with_timeout(base: &str, timeout: Duration) -> Self {
        let base = base.trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_owned()
        } else {
            format!("http://{base}")
        };
        // The proxy is reached directly: an HTTP_PROXY in the environment must not divert it.
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .expect("reqwest client");
        Self { base, http }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/__gauntlet/proxy/{path}", self.base)
    }

    async fn call(&self, rb: reqwest::RequestBuilder, what: &str, want: StatusCode) -> anyhow::Result<String> {
        let r = rb.send().await.map_err(|e| {
            anyhow::anyhow!(
                "proxy {}: {what}: no answer: {}",
                self.base,
                crate::client::error_chain(&e)
            )
        })?;
        let status = r.status();
        let text = r
            .text()
            .await
            .map_err(|e| anyhow::anyhow!("proxy {}: {what}: {status}, body unreadable: {e}", self.base))?;
        if status != want {
            let reason = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| text.chars().take(200).collect());
            anyhow::bail!("proxy {}: {what}: answered {status}: {reason}", self.base);
        }
        Ok(text)
    }

    fn parse<T: DeserializeOwned>(&self, text: &str, what: &str) -> anyhow::Result<T> {
        serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("proxy {}: {what}: unexpected answer {text:?}: {e}", self.base))
    }

    /// The proxy itself answers (not its upstream).
    pub async fn health(&self) -> anyhow::Result<()> {
        self.call(self.http.get(self.url("health")), "health", StatusCode::OK)
            .await
            .map(drop)
    }

    pub async fn toxics(&self) -> anyhow::Result<Vec<Toxic>> {
        let text = self
            .call(self.http.get(self.url("toxics")), "list toxics", StatusCode::OK)
            .await?;
        self.parse(&text, "list toxics")
    }

    /// Adds `toxic`; it applies to open connections from their next chunk.
    pub async fn add(&self, toxic: &Toxic) -> anyhow::Result<()> {
        let what = format!("add toxic {:?}", toxic.name);
        self.call(
            self.http.post(self.url("toxics")).json(toxic),
            &what,
            StatusCode::CREATED,
        )
        .await
        .map(drop)
    }

    pub async fn remove(&self, name: &str) -> anyhow::Result<()> {
        let path = format!("toxics/{}", utf8_percent_encode(name, NON_ALPHANUMERIC));
        let what = format!("remove toxic {name:?}");
        self.call(self.http.delete(self.url(&path)), &what, StatusCode::NO_CONTENT)
            .await
            .map(drop)
    }

    /// Removes every toxic.
    pub async fn clear(&self) -> anyhow::Result<()> {
        self.call(
            self.http.delete(self.url("toxics")),
            "clear toxics",
            StatusCode::NO_CONTENT,
        )
        .await
        .map(drop)
    }

    pub async fn stats(&self) -> anyhow::Result<ProxyStats> {
        let text = self
            .call(self.http.get(self.url("stats")), "stats", StatusCode::OK)
            .await?;
        self.parse(&text, "stats")
    }

    /// Removes every toxic and resets (RST) every forwarded connection open now.
    pub async fn reset(&self) -> anyhow::Result<()> {
        self.call(self.http.post(self.url("reset")), "reset", StatusCode::NO_CONTENT)
            .await
            .map(drop)
    }
}
