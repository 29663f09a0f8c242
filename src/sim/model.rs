//! The simulator's plain data, shared by the server and the admin client (serde both ways):
//! behaviours, faults, scripted rules, journal entries.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How a deployment answers. Every field is optional; an empty behaviour is a prompt,
/// healthy reply.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Behaviour {
    /// Delay before a plain reply (and before the first chunk if `ttft_ms` is unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Uniform ± jitter on every delay, seeded per request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<u64>,
    /// Streams: time to the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<u64>,
    /// Streams: delay between chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub itl_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
}

impl Behaviour {
    pub fn fault(fault: Fault) -> Self {
        Self {
            fault: Some(fault),
            ..Self::default()
        }
    }
}

/// A failure to inject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Fault {
    /// An HTTP error with an OpenAI-shaped body (429 carries `Retry-After`).
    Error {
        status: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// 400 `context_length_exceeded`, worded as OpenAI words it (routers match the text).
    ContextLength,
    /// 400 `content_policy_violation`.
    ContentPolicy,
    /// Never answer; the client has to give up (capped so no task outlives a run).
    Hang,
    /// Abort the TCP connection (RST) without answering.
    Reset,
    /// 200 with a body that is not JSON.
    Malformed,
    /// Stop a stream after this many events, without `[DONE]`.
    CutStream { after_chunks: u32 },
    /// Succeed, but without `usage` (and without the usage chunk in streams).
    NoUsage,
}

impl Fault {
    /// An HTTP error with the default body for its status.
    pub fn status(status: u16) -> Self {
        Self::Error {
            status,
            retry_after: None,
            message: None,
        }
    }

    /// The journal's name for the outcome this fault produces.
    pub fn outcome(&self) -> String {
        match self {
            Self::Error { status, .. } => format!("error:{status}"),
            Self::ContextLength => "error:400".into(),
            Self::ContentPolicy => "error:400".into(),
            Self::Hang => "hang".into(),
            Self::Reset => "reset".into(),
            Self::Malformed => "malformed".into(),
            Self::CutStream { after_chunks } => format!("cut:{after_chunks}"),
            Self::NoUsage => "no_usage".into(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Error { .. } => "error",
            Self::ContextLength => "context_length",
            Self::ContentPolicy => "content_policy",
            Self::Hang => "hang",
            Self::Reset => "reset",
            Self::Malformed => "malformed",
            Self::CutStream { .. } => "cut_stream",
            Self::NoUsage => "no_usage",
        }
    }

    /// Checks values a client could get wrong (status outside 400..=599, …).
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Error { status, .. } if !(400..=599).contains(status) => {
                Err(format!("fault.status {status} is not an HTTP error status (400-599)"))
            }
            _ => Ok(()),
        }
    }
}

/// Which of a rule's matching requests it applies to (counted per rule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum When {
    /// `{"first": n}`: the first n.
    First { first: u64 },
    /// `{"from": a, "to": b}`: the a-th to the b-th (1-based, inclusive).
    Range { from: u64, to: u64 },
    /// `{"rate": p}`: a seeded fraction p of them.
    Rate { rate: f64 },
    /// `{"always": true}`: all of them.
    Always { always: bool },
}

impl When {
    pub const ALWAYS: When = When::Always { always: true };

    pub fn validate(&self) -> Result<(), String> {
        match self {
            Self::Range { from, to } if from == &0 || from > to => {
                Err(format!("when.from/to must satisfy 1 <= from <= to (got {from}..{to})"))
            }
            Self::Rate { rate } if !(0.0..=1.0).contains(rate) => Err(format!("when.rate {rate} is not in 0..1")),
            Self::Always { always: false } => Err("when.always must be true (omit the rule instead)".into()),
            _ => Ok(()),
        }
    }
}

/// A scripted behaviour on one deployment, optionally scoped to requests carrying a tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Applies only to requests whose `user` field or prompt text contains this string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default = "always")]
    pub when: When,
    pub behaviour: Behaviour,
}

fn always() -> When {
    When::ALWAYS
}

impl Rule {
    /// Every request carrying `tag` gets `fault`.
    pub fn tagged(tag: &str, fault: Fault) -> Self {
        Self {
            tag: Some(tag.to_owned()),
            when: When::ALWAYS,
            behaviour: Behaviour::fault(fault),
        }
    }
}

/// One upstream call, as the simulator saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub seq: u64,
    pub time_ms: u64,
    pub deployment: String,
    pub path: String,
    pub model: String,
    pub stream: bool,
    pub user: Option<String>,
    pub metadata: Option<Value>,
    /// The tag of the rule that decided this request, if a tagged rule did.
    pub tag_matched: Option<String>,
    pub prompt_excerpt: String,
    /// Request headers, secrets redacted.
    pub headers: Vec<(String, String)>,
    /// The whole prompt by the word rule, cached part included.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Of `prompt_tokens`, the cached prefix this call read (Anthropic prompt caching).
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    /// Of `prompt_tokens`, the cached prefix this call wrote.
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    /// `pending` while in flight, then `ok`, `error:<status>`, `hang`, `reset`, `malformed`,
    /// `cut:<n>`, `no_usage`.
    pub outcome: String,
    pub latency_ms: u64,
}

/// Journal filter for the admin API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JournalQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_seq: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes() {
        let r: Rule = serde_json::from_str(
            r#"{"tag":"t","when":{"first":2},"behaviour":{"fault":{"kind":"error","status":429,"retry_after":1}}}"#,
        )
        .unwrap();
        assert_eq!(r.when, When::First { first: 2 });
        assert_eq!(
            r.behaviour.fault,
            Some(Fault::Error {
                status: 429,
                retry_after: Some(1),
                message: None
            })
        );
        let r: Rule =
            serde_json::from_str(r#"{"behaviour":{"fault":{"kind":"cut_stream","after_chunks":3}}}"#).unwrap();
        assert_eq!(r.when, When::ALWAYS);
        let back: Rule = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        assert!(serde_json::from_str::<Rule>(r#"{"behaviour":{"fault":{"kind":"explode"}}}"#).is_err());
        assert!(When::Range { from: 5, to: 2 }.validate().is_err());
        assert!(When::Rate { rate: 1.5 }.validate().is_err());
        assert!(
            Fault::Error {
                status: 200,
                retry_after: None,
                message: None
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn journal_entries_from_before_prompt_caching_still_parse() {
        let old = r#"{"seq":1,"time_ms":2,"deployment":"d","path":"/v1/chat/completions","model":"m",
            "stream":false,"user":null,"metadata":null,"tag_matched":null,"prompt_excerpt":"hi",
            "headers":[],"prompt_tokens":2,"completion_tokens":3,"outcome":"ok","latency_ms":4}"#;
        let e: JournalEntry = serde_json::from_str(old).unwrap();
        assert_eq!((e.cache_read_input_tokens, e.cache_creation_input_tokens), (0, 0));
    }
}
