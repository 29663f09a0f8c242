//! What one request came to: a [`Sample`] with its timings, or the [`ErrorClass`] it failed
//! with. A stream that carried an error event, ended early or said nothing parseable is an
//! error, never a short success: errors and successes are counted apart, always.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::client::sse::Parser;

/// Why a request failed, coarse enough to count and fine enough to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ErrorClass {
    /// No connection: refused, reset before an answer, DNS.
    Connect,
    /// No complete answer within `--timeout`.
    Timeout,
    /// An HTTP status other than 2xx.
    Status(u16),
    /// A stream carried an `error` object.
    StreamError,
    /// A stream ended without `[DONE]` or a finish reason.
    Incomplete,
    /// A 2xx answer that is not an OpenAI chat completion (or chunk).
    Malformed,
}

impl ErrorClass {
    /// The key in reports: `connect`, `timeout`, `http_429`, `stream_error`, `incomplete`,
    /// `malformed`.
    pub fn key(self) -> String {
        match self {
            Self::Connect => "connect".into(),
            Self::Timeout => "timeout".into(),
            Self::Status(s) => format!("http_{s}"),
            Self::StreamError => "stream_error".into(),
            Self::Incomplete => "incomplete".into(),
            Self::Malformed => "malformed".into(),
        }
    }
}

/// A successful request's timings, all from its intended send time except the gaps.
#[derive(Debug, Clone, Default)]
pub struct Success {
    pub e2el: Duration,
    /// To the first chunk carrying content (streams only).
    pub ttft: Option<Duration>,
    /// Gaps between content chunks (streams only).
    pub itl: Vec<Duration>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// What the router said it added (`x-litellm-overhead-duration-ms`), if it said.
    pub claimed_overhead_ms: Option<f64>,
}

impl Success {
    /// Time per output token after the first (vLLM's TPOT): `None` for one-token replies.
    pub fn tpot(&self) -> Option<Duration> {
        let ttft = self.ttft?;
        (self.output_tokens > 1).then(|| (self.e2el.saturating_sub(ttft)) / (self.output_tokens - 1) as u32)
    }
}

/// One request, as measured.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Its intended send time, from the point's start (timelines are drawn on it).
    pub intended: Duration,
    /// How late the generator sent it (open loop): its own lateness, reported apart so a
    /// generator that cannot keep the schedule is seen, not blamed on the server.
    pub lag: Duration,
    pub outcome: Result<Success, ErrorClass>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
}

#[derive(Deserialize)]
struct Plain {
    choices: Option<Vec<serde::de::IgnoredAny>>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(default, borrow)]
    choices: Vec<ChunkChoice<'a>>,
    usage: Option<Usage>,
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a> {
    #[serde(default, borrow)]
    delta: Option<Delta<'a>>,
    #[serde(default, borrow)]
    finish_reason: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(default, borrow)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    reasoning_content: Option<std::borrow::Cow<'a, str>>,
}

/// Reads one answer as its bytes arrive, timing the content events of a stream.
pub struct Reading {
    intended: Instant,
    status: u16,
    stream: bool,
    body: Vec<u8>,
    /// A plain body's only chunk so far, kept as received.
    whole: Option<bytes::Bytes>,
    sse: Parser,
    first: Option<Instant>,
    last: Option<Instant>,
    itl: Vec<Duration>,
    chunks: u64,
    usage: Option<Usage>,
    done: bool,
    finished: bool,
    failed: Option<ErrorClass>,
    claimed_overhead_ms: Option<f64>,
}

impl Reading {
    pub fn new(intended: Instant, status: u16, stream: bool, claimed_overhead_ms: Option<f64>) -> Self {
        Self {
            intended,
            status,
            stream: stream && (200..300).contains(&status),
            body: Vec::new(),
            whole: None,
            sse: Parser::default(),
            first: None,
            last: None,
            itl: Vec::new(),
            chunks: 0,
            usage: None,
            done: false,
            finished: false,
            failed: None,
            claimed_overhead_ms,
        }
    }

    /// Feeds a chunk the transport owns: a plain body that arrives in one piece (the usual
    /// case) is kept without a copy.
    pub fn feed_bytes(&mut self, bytes: bytes::Bytes, now: Instant) {
        if !self.stream && self.body.is_empty() && self.whole.is_none() {
            self.whole = Some(bytes);
            return;
        }
        if let Some(w) = self.whole.take() {
            self.body.extend_from_slice(&w);
        }
        self.feed(&bytes, now);
    }

    pub fn feed(&mut self, bytes: &[u8], now: Instant) {
        if !self.stream {
            // Error bodies are read (to keep the connection) but not kept past a few KB.
            if (200..300).contains(&self.status) || self.body.len() < 4096 {
                self.body.extend_from_slice(bytes);
            }
            return;
        }
        for data in self.sse.feed(bytes) {
            self.event(&data, now);
        }
    }

    fn event(&mut self, data: &str, now: Instant) {
        if self.failed.is_some() {
            return;
        }
        if data.trim() == "[DONE]" {
            self.done = true;
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Chunk>(data) else {
            self.failed = Some(ErrorClass::Malformed);
            return;
        };
        if chunk.error.is_some() {
            self.failed = Some(ErrorClass::StreamError);
            return;
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        for c in &chunk.choices {
            self.finished |= c.finish_reason.is_some();
            let content = c.delta.as_ref().is_some_and(|d| {
                d.content.as_deref().is_some_and(|s| !s.is_empty())
                    || d.reasoning_content.as_deref().is_some_and(|s| !s.is_empty())
            });
            if content {
                self.chunks += 1;
                if let Some(last) = self.last {
                    self.itl.push(now - last);
                }
                self.first.get_or_insert(now);
                self.last = Some(now);
            }
        }
    }

    pub fn finish(self, now: Instant) -> Result<Success, ErrorClass> {
        if !(200..300).contains(&self.status) {
            return Err(ErrorClass::Status(self.status));
        }
        if let Some(f) = self.failed {
            return Err(f);
        }
        let e2el = now - self.intended;
        if self.stream {
            if !(self.done || self.finished) {
                return Err(ErrorClass::Incomplete);
            }
            let first = self.first.ok_or(ErrorClass::Incomplete)?;
            let (input, output) = match &self.usage {
                Some(u) => (u.prompt_tokens, u.completion_tokens),
                None => (0, self.chunks),
            };
            return Ok(Success {
                e2el,
                ttft: Some(first - self.intended),
                itl: self.itl,
                input_tokens: input,
                output_tokens: output,
                claimed_overhead_ms: self.claimed_overhead_ms,
            });
        }
        let body: &[u8] = match &self.whole {
            Some(w) => w,
            None => &self.body,
        };
        let plain: Plain = serde_json::from_slice(body).map_err(|_| ErrorClass::Malformed)?;
        if plain.choices.is_none_or(|c| c.is_empty()) {
            return Err(ErrorClass::Malformed);
        }
        let (input, output) = plain.usage.map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
        Ok(Success {
            e2el,
            ttft: None,
            itl: Vec::new(),
            input_tokens: input,
            output_tokens: output,
            claimed_overhead_ms: self.claimed_overhead_ms,
        })
    }

    /// The start of an answer that was not a success, for the error a preflight reports.
    pub fn excerpt(&self) -> String {
        let body: &[u8] = self.whole.as_deref().unwrap_or(&self.body);
        crate::client::router::excerpt(&String::from_utf8_lossy(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(status: u16, stream: bool, parts: &[&str]) -> Result<Success, ErrorClass> {
        let t0 = Instant::now();
        let mut r = Reading::new(t0, status, stream, None);
        for (i, p) in parts.iter().enumerate() {
            r.feed(p.as_bytes(), t0 + Duration::from_millis(10 * (i as u64 + 1)));
        }
        r.finish(t0 + Duration::from_millis(100))
    }

    const TOKEN: &str = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n";

    #[test]
    fn a_stream_is_timed_per_content_chunk() {
        let ok = read(
            200,
            true,
            &[
                TOKEN,
                TOKEN,
                TOKEN,
                "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":3}}\n\ndata: [DONE]\n\n",
            ],
        )
        .unwrap();
        assert_eq!(ok.ttft, Some(Duration::from_millis(10)));
        assert_eq!(ok.itl, vec![Duration::from_millis(10); 2]);
        assert_eq!((ok.input_tokens, ok.output_tokens), (5, 3));
        assert_eq!(ok.tpot(), Some(Duration::from_millis(45)));
    }

    #[test]
    fn errors_in_or_around_a_stream_are_errors_not_short_successes() {
        let err = "data: {\"error\":{\"message\":\"upstream died\"}}\n\n";
        assert_eq!(read(200, true, &[TOKEN, err]).unwrap_err(), ErrorClass::StreamError);
        assert_eq!(read(200, true, &[TOKEN]).unwrap_err(), ErrorClass::Incomplete);
        assert_eq!(
            read(200, true, &["data: <html>\n\n"]).unwrap_err(),
            ErrorClass::Malformed
        );
        assert_eq!(read(429, true, &["{}"]).unwrap_err(), ErrorClass::Status(429));
        assert_eq!(
            read(200, false, &["<html>ok</html>"]).unwrap_err(),
            ErrorClass::Malformed
        );
        assert_eq!(
            read(200, false, &["{\"choices\": []}"]).unwrap_err(),
            ErrorClass::Malformed
        );
        let ok = read(
            200,
            false,
            &["{\"choices\":[{}],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":7}}"],
        );
        assert_eq!(ok.unwrap().output_tokens, 7);
    }
}
