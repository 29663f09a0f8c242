//! Server-sent events as OpenAI streams them: `data: <json>` events, ended by `data: [DONE]`.

use std::time::Instant;

use futures_util::StreamExt;
use serde_json::Value;

use super::{StreamReply, error_chain};

/// Splits SSE text into the payloads of its `data:` fields (one per event).
#[derive(Default)]
pub struct Parser {
    buf: String,
}

impl Parser {
    /// Feeds bytes; returns the data payloads of the events completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.push_str(&String::from_utf8_lossy(bytes));
        let mut out = Vec::new();
        loop {
            let norm = self.buf.replace("\r\n", "\n");
            let Some(end) = norm.find("\n\n") else {
                self.buf = norm;
                break;
            };
            let event = &norm[..end];
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if !data.is_empty() {
                out.push(data.join("\n"));
            }
            self.buf = norm[end + 2..].to_owned();
        }
        out
    }
}

pub async fn read(rb: reqwest::RequestBuilder, url: &str) -> anyhow::Result<StreamReply> {
    let start = Instant::now();
    let resp = super::router::start(rb, url).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let mut reply = StreamReply {
        url: url.to_owned(),
        status,
        headers,
        chunks: Vec::new(),
        done: false,
        ttft: None,
        latency: start.elapsed(),
        error_text: String::new(),
    };
    if status != 200 {
        reply.error_text = resp.text().await.unwrap_or_default();
        reply.latency = start.elapsed();
        return Ok(reply);
    }
    let mut parser = Parser::default();
    let mut body = resp.bytes_stream();
    while let Some(part) = body.next().await {
        let bytes = part.map_err(|e| {
            anyhow::anyhow!(
                "{url}: stream broke after {} chunks: {}",
                reply.chunks.len(),
                error_chain(&e)
            )
        })?;
        for data in parser.feed(&bytes) {
            if data.trim() == "[DONE]" {
                reply.done = true;
                continue;
            }
            let v: Value = serde_json::from_str(&data)
                .map_err(|e| anyhow::anyhow!("{url}: stream event is not JSON ({e}): {}", super::excerpt(&data)))?;
            if reply.ttft.is_none() {
                reply.ttft = Some(start.elapsed());
            }
            reply.chunks.push(v);
        }
    }
    reply.latency = start.elapsed();
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_events_across_reads() {
        let mut p = Parser::default();
        assert!(p.feed(b"data: {\"a\"").is_empty());
        assert_eq!(p.feed(b":1}\n\ndata: [DONE]\r\n\r\n"), vec!["{\"a\":1}", "[DONE]"]);
        assert_eq!(p.feed(b": comment\n\n"), Vec::<String>::new());
    }
}
