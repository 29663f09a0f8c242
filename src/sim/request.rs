//! The dialect-neutral request model every wire format parses into, and the deterministic
//! reply the simulator gives it.
//!
//! Counting rule (documented in docs/sim.md), the same for every dialect: prompt tokens are the
//! whitespace-separated words of every message's text plus one per message (a system prompt is
//! one message); for a legacy completion or an embedding, the words of the input, at least 1.
//! The reply is `min(max_tokens, reply_tokens)` words drawn from a fixed vocabulary by a hash
//! of (seed, deployment, model, prompt), so completion tokens are the reply's word count. The
//! same request always gets the same reply and the same usage.
//!
//! An OpenAI request may ask for usage details ([`UsageDetails`]): that many of its prompt
//! tokens (at most all) are reported cached, and that many reasoning tokens are added to its
//! completion tokens.

use serde_json::Value;

/// What a request asks for, whatever the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Legacy,
    Embeddings,
}

/// A parsed request: only what the simulator uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub kind: Kind,
    pub model: String,
    /// All prompt text (every message's content), for tag matching and hashing.
    pub text: String,
    pub prompt_tokens: u64,
    pub max_tokens: Option<u64>,
    pub stream: bool,
    pub include_usage: bool,
    pub user: Option<String>,
    pub metadata: Option<Value>,
    /// The prompt-cacheable prefix the request marked, if it marked one.
    pub cache_prefix: Option<CachePrefix>,
    /// Embeddings only.
    pub embedding: Option<EmbeddingInput>,
    /// Usage details the request asked the simulator to report (OpenAI dialect), if any.
    pub usage_details: Option<UsageDetails>,
}

impl Request {
    pub fn chat(&self) -> bool {
        self.kind == Kind::Chat
    }
}

/// A prefix of the prompt marked cacheable: identified by a hash of its content (and model),
/// and worth `tokens` of the prompt's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePrefix {
    pub key: u64,
    pub tokens: u64,
}

/// How a reply's prompt tokens split over the prompt cache: `creation` tokens were written to
/// it by this request, `read` tokens were already there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUse {
    pub read: u64,
    pub creation: u64,
}

/// Token kinds a provider reports inside its usage that the word rule alone cannot produce:
/// OpenAI's `prompt_tokens_details.cached_tokens` and `completion_tokens_details.reasoning_tokens`.
/// A real provider decides them; the simulator reports what it is told, by a fixed rule, so a
/// ledger knows exactly what the upstream billed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageDetails {
    /// Prompt tokens reported as read from the provider's cache: this many, at most the prompt.
    #[serde(default)]
    pub cached_tokens: u64,
    /// Hidden reasoning tokens, added to the completion tokens (as OpenAI counts them).
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl UsageDetails {
    /// The cached part of a prompt of `prompt_tokens` tokens.
    pub fn cached(&self, prompt_tokens: u64) -> u64 {
        self.cached_tokens.min(prompt_tokens)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingInput {
    /// One text per vector asked for (a token array is its numbers, space-separated).
    pub inputs: Vec<String>,
    pub dimensions: usize,
    pub base64: bool,
}

pub fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

const VOCAB: [&str; 32] = [
    "the",
    "router",
    "answers",
    "quickly",
    "and",
    "every",
    "token",
    "counts",
    "a",
    "simulated",
    "model",
    "replies",
    "with",
    "plain",
    "words",
    "so",
    "tests",
    "can",
    "check",
    "cost",
    "latency",
    "fallback",
    "chains",
    "hold",
    "under",
    "load",
    "when",
    "providers",
    "fail",
    "on",
    "cue",
    "today",
];

/// FNV-1a: small, stable across platforms and releases (a std hasher is neither).
pub fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// xorshift64: a cheap deterministic stream from a request hash.
pub fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// A hash mapped to [0, 1).
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The deterministic reply: its words and whether max_tokens truncated it.
pub struct Reply {
    pub words: Vec<&'static str>,
    pub truncated: bool,
    pub id: String,
    /// The request hash every dialect derives its own id format from.
    pub hash: u64,
    /// Hidden reasoning tokens generated besides the words (counted in [`Reply::tokens`]).
    pub reasoning: u64,
}

impl Reply {
    pub fn text(&self) -> String {
        self.words.join(" ")
    }
    /// Completion tokens: the words, and the reasoning tokens before them.
    pub fn tokens(&self) -> u64 {
        self.words.len() as u64 + self.reasoning
    }
    pub fn finish_reason(&self) -> &'static str {
        if self.truncated { "length" } else { "stop" }
    }
}

pub fn reply(seed: u64, deployment: &str, req: &Request, reply_tokens: u64) -> Reply {
    let h = fnv(&[
        &seed.to_le_bytes(),
        deployment.as_bytes(),
        req.model.as_bytes(),
        req.text.as_bytes(),
    ]);
    // An embedding generates no tokens; its vectors are drawn by the embeddings dialect.
    let n = match req.kind {
        Kind::Embeddings => 0,
        _ => req.max_tokens.map_or(reply_tokens, |m| m.min(reply_tokens)).max(1),
    };
    let mut x = h;
    let words = (0..n)
        .map(|_| VOCAB[(xorshift(&mut x) % VOCAB.len() as u64) as usize])
        .collect();
    let prefix = match req.kind {
        Kind::Chat => "chatcmpl",
        Kind::Legacy => "cmpl",
        Kind::Embeddings => "emb",
    };
    Reply {
        words,
        truncated: req.kind != Kind::Embeddings && req.max_tokens.is_some_and(|m| m < reply_tokens),
        id: format!("{prefix}-{h:016x}"),
        hash: h,
        reasoning: req.usage_details.map_or(0, |u| u.reasoning_tokens),
    }
}
