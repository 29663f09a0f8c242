//! [`RouterClient`]: requests to the router under test — chat (plain and streamed), models,
//! raw GETs — each kept whole as a [`Reply`] so a case can assert on any part of it.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::header::HeaderMap;
use serde_json::Value;

use super::headers::RouterHeaders;
use super::sse;

/// One request/response exchange, kept whole so a case can assert on any part of it.
#[derive(Debug, Clone)]
pub struct Reply {
    pub url: String,
    pub status: u16,
    pub headers: HeaderMap,
    /// The body parsed as JSON, or `Value::Null` if it was not JSON (see `text`).
    pub json: Value,
    pub text: String,
    pub latency: Duration,
}

impl Reply {
    pub fn router(&self) -> RouterHeaders {
        RouterHeaders::from(&self.headers)
    }

    /// The body as JSON, or an error naming the URL and quoting what came instead.
    pub fn json_or_err(&self) -> anyhow::Result<&Value> {
        if self.json.is_null() {
            anyhow::bail!(
                "{} answered {} with a body that is not JSON: {:?}",
                self.url,
                self.status,
                excerpt(&self.text)
            );
        }
        Ok(&self.json)
    }

    /// Fails unless the status is `want`, quoting the body.
    pub fn expect_status(&self, want: u16) -> anyhow::Result<&Self> {
        if self.status != want {
            anyhow::bail!(
                "{} answered {} (expected {want}): {}",
                self.url,
                self.status,
                excerpt(&self.text)
            );
        }
        Ok(self)
    }
}

/// A streamed reply: the SSE events as they came.
#[derive(Debug, Clone)]
pub struct StreamReply {
    pub url: String,
    pub status: u16,
    pub headers: HeaderMap,
    /// Parsed `data:` payloads before `[DONE]`.
    pub chunks: Vec<Value>,
    /// Whether the `[DONE]` terminator arrived.
    pub done: bool,
    pub ttft: Option<Duration>,
    pub latency: Duration,
    /// The body if the status was not 200 (an error is not streamed).
    pub error_text: String,
    /// How the body broke off, when read by [`RouterClient::chat_stream_to_end`] (which keeps
    /// what came before instead of failing): the connection failed, or an event was not JSON.
    pub broken: Option<String>,
    /// Whether that break was this client giving up (its timeout), not the router.
    pub client_timed_out: bool,
}

impl StreamReply {
    /// The concatenated `delta.content` of every chunk.
    pub fn content(&self) -> String {
        self.chunks
            .iter()
            .filter_map(|c| c.pointer("/choices/0/delta/content").and_then(Value::as_str))
            .collect()
    }
    /// Fails unless the stream was answered 200, quoting the error body.
    pub fn expect_ok(&self) -> anyhow::Result<&Self> {
        anyhow::ensure!(
            self.status == 200,
            "{} answered {}: {}",
            self.url,
            self.status,
            excerpt(&self.error_text)
        );
        Ok(self)
    }
    /// The `usage` object of the final usage chunk, if any.
    pub fn usage(&self) -> Option<&Value> {
        self.chunks
            .iter()
            .rev()
            .find_map(|c| c.get("usage").filter(|u| !u.is_null()))
    }
    /// The events that report an error instead of a chunk (`data: {"error": {...}}`, as
    /// OpenAI and LiteLLM send a failure once the 200 and its headers are gone).
    pub fn error_events(&self) -> Vec<&Value> {
        self.chunks.iter().filter(|c| c.get("error").is_some()).collect()
    }
    /// The last `finish_reason` any chunk named.
    pub fn finish_reason(&self) -> Option<&str> {
        self.chunks
            .iter()
            .flat_map(|c| c.get("choices").and_then(Value::as_array).into_iter().flatten())
            .filter_map(|ch| ch.get("finish_reason").and_then(Value::as_str))
            .next_back()
    }
    /// Whether an OpenAI client takes this for a whole answer: 200, no error event, nothing
    /// broken, `data: [DONE]` at the end, and a `finish_reason` (the SDKs raise on an error
    /// event and on a body that ends early, and treat `[DONE]` after a finish as success).
    pub fn looks_complete(&self) -> bool {
        self.status == 200
            && self.error_events().is_empty()
            && self.broken.is_none()
            && self.done
            && self.finish_reason().is_some()
    }
    /// How the stream ended, in words, for failure messages.
    pub fn ending(&self) -> String {
        let mut s = if self.status != 200 {
            format!("status {}: {}", self.status, excerpt(&self.error_text))
        } else {
            format!("{} events", self.chunks.len())
        };
        if let Some(e) = self.error_events().first() {
            s.push_str(&format!(", an error event {}", excerpt(&e.to_string())));
        }
        if let Some(b) = &self.broken {
            s.push_str(&format!(", broken off ({b})"));
        }
        if self.status == 200 {
            s.push_str(if self.done { ", then [DONE]" } else { ", no [DONE]" });
            s.push_str(&match self.finish_reason() {
                Some(f) => format!(", finish_reason {f:?}"),
                None => ", no finish_reason".to_owned(),
            });
            s.push_str(&format!(", content {:?}", excerpt(&self.content())));
        }
        if self.looks_complete() {
            s.push_str(" (looks complete)");
        }
        s
    }
}

/// A client for one router base URL, with its key (if any).
#[derive(Clone)]
pub struct RouterClient {
    pub base: String,
    key: Option<String>,
    http: reqwest::Client,
}

/// Bound on any single router call unless a case asks for another.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

impl RouterClient {
    pub fn new(base: &str, key: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(DEFAULT_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("reqwest client");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            key,
            http,
        }
    }

    /// The same router with another key (or none), to test authentication.
    pub fn with_key(&self, key: Option<String>) -> Self {
        Self { key, ..self.clone() }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(k) => rb.bearer_auth(k),
            None => rb,
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Reply> {
        send(
            self.request(reqwest::Method::GET, path),
            &format!("{}{path}", self.base),
        )
        .await
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Reply> {
        self.post_with(path, body, DEFAULT_TIMEOUT).await
    }

    pub async fn post_with(&self, path: &str, body: &Value, timeout: Duration) -> anyhow::Result<Reply> {
        let rb = self.request(reqwest::Method::POST, path).json(body).timeout(timeout);
        send(rb, &format!("{}{path}", self.base)).await
    }

    /// A POST whose failure keeps reqwest's own error, for a caller that sorts failures by
    /// kind (refused, timed out, cut) rather than reporting them.
    pub async fn post_raw(&self, path: &str, body: &Value, timeout: Duration) -> reqwest::Result<reqwest::Response> {
        self.request(reqwest::Method::POST, path)
            .json(body)
            .timeout(timeout)
            .send()
            .await
    }

    pub async fn chat(&self, body: &Value) -> anyhow::Result<Reply> {
        self.post("/v1/chat/completions", body).await
    }

    /// Streams a chat completion (`body.stream` is set to true), reading every SSE event.
    pub async fn chat_stream(&self, body: &Value) -> anyhow::Result<StreamReply> {
        let mut body = body.clone();
        body["stream"] = Value::Bool(true);
        let url = format!("{}/v1/chat/completions", self.base);
        let rb = self.request(reqwest::Method::POST, "/v1/chat/completions").json(&body);
        read_stream(rb, &url, false).await
    }

    /// Streams a chat completion to its end however it ends, within `timeout`: a broken
    /// connection or an event that is not JSON is kept in [`StreamReply::broken`], with the
    /// events before it, rather than returned as an error — for cases about how streams break.
    pub async fn chat_stream_to_end(&self, body: &Value, timeout: Duration) -> anyhow::Result<StreamReply> {
        let mut body = body.clone();
        body["stream"] = Value::Bool(true);
        let url = format!("{}/v1/chat/completions", self.base);
        let rb = self
            .request(reqwest::Method::POST, "/v1/chat/completions")
            .json(&body)
            .timeout(timeout);
        read_stream(rb, &url, true).await
    }
}

/// Sends a request; a transport failure names the URL.
async fn start(rb: reqwest::RequestBuilder, url: &str) -> anyhow::Result<reqwest::Response> {
    rb.send()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: request failed: {}", error_chain(&e)))
}

async fn send(rb: reqwest::RequestBuilder, url: &str) -> anyhow::Result<Reply> {
    let start_at = Instant::now();
    let resp = start(rb, url).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp
        .text()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: reading the body failed: {}", error_chain(&e)))?;
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    Ok(Reply {
        url: url.to_owned(),
        status,
        headers,
        json,
        text,
        latency: start_at.elapsed(),
    })
}

/// An error with its sources, on one line ("error sending request: connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        let t = inner.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        src = inner.source();
    }
    crate::redact::redact(&s)
}

/// At most 300 characters of a body, redacted, for error messages.
pub fn excerpt(text: &str) -> String {
    let t: String = text.chars().take(300).collect();
    let more = if text.chars().count() > 300 { "…" } else { "" };
    format!("{}{more}", crate::redact::redact(&t))
}

/// Reads a streamed reply event by event (`data: [DONE]` ends it). `keep_broken`: a break
/// is recorded in the reply instead of failing the read.
async fn read_stream(rb: reqwest::RequestBuilder, url: &str, keep_broken: bool) -> anyhow::Result<StreamReply> {
    let started = Instant::now();
    let resp = start(rb, url).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut reply = StreamReply {
        url: url.to_owned(),
        status,
        headers,
        chunks: Vec::new(),
        done: false,
        ttft: None,
        latency: started.elapsed(),
        error_text: String::new(),
        broken: None,
        client_timed_out: false,
    };
    if status != 200 {
        reply.error_text = resp.text().await.unwrap_or_default();
        reply.latency = started.elapsed();
        return Ok(reply);
    }
    let mut parser = sse::Parser::default();
    let mut body = resp.bytes_stream();
    'read: while let Some(part) = body.next().await {
        let bytes = match part {
            Ok(b) => b,
            Err(e) if keep_broken => {
                reply.client_timed_out = e.is_timeout();
                reply.broken = Some(error_chain(&e));
                break;
            }
            Err(e) => anyhow::bail!(
                "{url}: stream broke after {} chunks: {}",
                reply.chunks.len(),
                error_chain(&e)
            ),
        };
        for data in parser.feed(&bytes) {
            if data.trim() == "[DONE]" {
                reply.done = true;
                continue;
            }
            let v: Value = match serde_json::from_str(&data) {
                Ok(v) => v,
                Err(e) if keep_broken => {
                    reply.broken = Some(format!("an event is not JSON ({e}): {}", excerpt(&data)));
                    break 'read;
                }
                Err(e) => anyhow::bail!("{url}: stream event is not JSON ({e}): {}", excerpt(&data)),
            };
            if reply.ttft.is_none() {
                reply.ttft = Some(started.elapsed());
            }
            reply.chunks.push(v);
        }
    }
    reply.latency = started.elapsed();
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::sim::{DeploymentSpec, Fault, Rule, SimConfig};

    fn reply(chunks: Vec<Value>, done: bool) -> StreamReply {
        StreamReply {
            url: "u".into(),
            status: 200,
            headers: HeaderMap::new(),
            chunks,
            done,
            ttft: None,
            latency: Duration::ZERO,
            error_text: String::new(),
            broken: None,
            client_timed_out: false,
        }
    }

    #[test]
    fn a_stream_looks_complete_only_with_done_a_finish_and_no_error() {
        let word = json!({"choices": [{"index": 0, "delta": {"content": "hi"}}]});
        let finish = json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
        let error = json!({"error": {"message": "upstream broke", "code": "500"}});
        let whole = reply(vec![word.clone(), finish.clone()], true);
        assert!(whole.looks_complete());
        assert_eq!(whole.finish_reason(), Some("stop"));
        // An error event before [DONE] is a failure, whatever follows it.
        let told = reply(vec![word.clone(), error, finish.clone()], true);
        assert!(!told.looks_complete());
        assert_eq!(told.error_events().len(), 1);
        assert!(told.ending().contains("an error event"), "{}", told.ending());
        // [DONE] without a finish_reason, and a finish without [DONE], are not whole either.
        assert!(!reply(vec![word.clone()], true).looks_complete());
        assert!(!reply(vec![word, finish], false).looks_complete());
    }

    #[tokio::test]
    async fn a_cut_stream_is_kept_to_its_break_by_chat_stream_to_end() {
        let sim = crate::sim::start(
            SimConfig {
                seed: 7,
                deployments: vec![DeploymentSpec::named("a")],
                ..SimConfig::default()
            },
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let tag: crate::tag::Tag = "gtcut".parse().unwrap();
        crate::sim::AdminClient::new(&sim.url())
            .add_rule("a", &Rule::tagged(&tag, Fault::CutStream { after_chunks: 3 }))
            .await
            .unwrap();
        let client = RouterClient::new(&format!("{}/d/a", sim.url()), None);
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hello there"}]});
        let whole = client.chat_stream_to_end(&body, Duration::from_secs(5)).await.unwrap();
        assert!(whole.looks_complete(), "{}", whole.ending());
        tag.stamp(&mut body);
        let cut = client.chat_stream_to_end(&body, Duration::from_secs(5)).await.unwrap();
        assert_eq!((cut.chunks.len(), cut.done), (3, false), "{}", cut.ending());
        assert!(cut.broken.is_some() && !cut.client_timed_out, "{}", cut.ending());
        assert!(!cut.looks_complete());
        // The strict reader still fails on a break, as its callers expect.
        let err = client.chat_stream(&body).await.unwrap_err().to_string();
        assert!(err.contains("stream broke after 3 chunks"), "{err}");
    }
    /// Emoji (ZWJ, skin tone, flag, keycap), CJK, Arabic and combining marks, served one byte
    /// per network write with `\r\n` line ends: every code point is split across writes, and
    /// the client must reassemble the text exactly.
    #[tokio::test]
    async fn a_stream_delivered_one_byte_per_chunk_reassembles_exactly() {
        use axum::body::{Body, Bytes};
        let pieces = [
            "路由",
            "器は",
            " 👩🏽\u{200d}💻",
            " 🇯🇵",
            " 1\u{fe0f}\u{20e3}",
            " مرحبا",
            " e\u{301}te\u{301}",
            "。",
        ];
        let mut wire = String::new();
        for p in pieces {
            let chunk = json!({"choices": [{"index": 0, "delta": {"content": p}}]});
            wire.push_str(&format!("data: {chunk}\r\n\r\n"));
        }
        wire.push_str(
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\r\n\r\ndata: [DONE]\r\n\r\n",
        );
        let bytes: Vec<u8> = wire.into_bytes();
        let writes = bytes.len();
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(move || {
                let bytes = bytes.clone();
                async move {
                    // Pending between bytes, so the server flushes each one on its own.
                    let one_by_one = futures_util::stream::unfold(bytes.into_iter(), |mut rest| async move {
                        let b = rest.next()?;
                        tokio::task::yield_now().await;
                        Some((Ok::<_, std::io::Error>(Bytes::from(vec![b])), rest))
                    });
                    ([("content-type", "text/event-stream")], Body::from_stream(one_by_one))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = RouterClient::new(&format!("http://{addr}"), None);
        let s = client
            .chat_stream(&json!({"model": "m", "messages": []}))
            .await
            .unwrap();
        server.abort();
        assert!(s.looks_complete(), "{}", s.ending());
        assert_eq!(
            s.content(),
            pieces.concat(),
            "reassembled from {writes} one-byte writes"
        );
        assert!(!s.content().contains('\u{fffd}'));
    }
}
