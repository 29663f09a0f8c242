//! The simulator's plain data, shared by the server and the admin client (serde both ways):
//! behaviours, faults, scripted rules, journal entries and their outcomes.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::text::Charset;
use super::tokenizer::Tokenizer;
use crate::tag::Tag;

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
    /// An HTTP error with an OpenAI-shaped body, with `Retry-After` when `retry_after` is
    /// set (the `429` shorthand sets 1).
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

    /// The journal outcome of a request this fault decides.
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::Error { status, .. } => Outcome::Error(*status),
            Self::ContextLength | Self::ContentPolicy => Outcome::Error(400),
            Self::Hang => Outcome::Hang,
            Self::Reset => Outcome::Reset,
            Self::Malformed => Outcome::Malformed,
            Self::CutStream { after_chunks } => Outcome::Cut(*after_chunks),
            Self::NoUsage => Outcome::NoUsage,
        }
    }

    /// Whether a request this fault decides still gets the model's reply (all of it, or the
    /// part a cut stream sends).
    pub fn replies(&self) -> bool {
        matches!(self, Self::NoUsage | Self::CutStream { .. })
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
    /// Applies only to requests that carry this tag ([`Tag::carried_by`]: their `user` is the
    /// tag, or their prompt contains `[tag]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Tag>,
    #[serde(default = "always")]
    pub when: When,
    pub behaviour: Behaviour,
}

fn always() -> When {
    When::ALWAYS
}

impl Rule {
    /// Every request carrying `tag` gets `fault`.
    pub fn tagged(tag: &Tag, fault: Fault) -> Self {
        Self {
            tag: Some(tag.clone()),
            when: When::ALWAYS,
            behaviour: Behaviour::fault(fault),
        }
    }
}

/// How a journaled call ended. In JSON (and [`fmt::Display`]) it is the string the journal has
/// always used: `pending`, `ok`, `error:<status>`, `hang`, `reset`, `malformed`, `cut:<n>`,
/// `no_usage`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Outcome {
    /// Still in flight.
    #[default]
    Pending,
    /// Answered normally.
    Ok,
    /// Answered with this HTTP error status.
    Error(u16),
    /// Never answered (visible as soon as the hang starts).
    Hang,
    /// Connection aborted with a TCP RST.
    Reset,
    /// Answered 200 with a body that is not JSON.
    Malformed,
    /// Stream broken after this many events.
    Cut(u32),
    /// Answered without usage.
    NoUsage,
}

/// A string that is not a journal outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a journal outcome: pending, ok, error:<status>, hang, reset, malformed, cut:<n> or no_usage")]
pub struct BadOutcome(pub String);

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok)
    }

    /// A whole reply went back, with its usage or (asked by `sim_usage.omit`) without: a
    /// provider bills both.
    pub fn served(&self) -> bool {
        matches!(self, Self::Ok | Self::NoUsage)
    }

    /// An HTTP error answer (not a hang, reset, malformed body or cut stream).
    pub fn is_error(&self) -> bool {
        matches!(self, Self::Error(_))
    }

    /// The HTTP error status, for an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Error(s) => Some(*s),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pending => f.write_str("pending"),
            Self::Ok => f.write_str("ok"),
            Self::Error(status) => write!(f, "error:{status}"),
            Self::Hang => f.write_str("hang"),
            Self::Reset => f.write_str("reset"),
            Self::Malformed => f.write_str("malformed"),
            Self::Cut(n) => write!(f, "cut:{n}"),
            Self::NoUsage => f.write_str("no_usage"),
        }
    }
}

impl std::str::FromStr for Outcome {
    type Err = BadOutcome;
    fn from_str(s: &str) -> Result<Self, BadOutcome> {
        let bad = || BadOutcome(s.to_owned());
        Ok(match s {
            "pending" => Self::Pending,
            "ok" => Self::Ok,
            "hang" => Self::Hang,
            "reset" => Self::Reset,
            "malformed" => Self::Malformed,
            "no_usage" => Self::NoUsage,
            _ => {
                if let Some(status) = s.strip_prefix("error:") {
                    Self::Error(status.parse().map_err(|_| bad())?)
                } else if let Some(n) = s.strip_prefix("cut:") {
                    Self::Cut(n.parse().map_err(|_| bad())?)
                } else {
                    return Err(bad());
                }
            }
        })
    }
}

impl TryFrom<String> for Outcome {
    type Error = BadOutcome;
    fn try_from(s: String) -> Result<Self, BadOutcome> {
        s.parse()
    }
}

impl From<Outcome> for String {
    fn from(o: Outcome) -> Self {
        o.to_string()
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
    pub tag_matched: Option<Tag>,
    /// Every tag the request carried: the `[tag]` markers anywhere in its prompt
    /// ([`Tag::all_in`]), and its `user` if that is a tag. What the `tag` query matches.
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// The first 200 characters of the prompt text, for reading; not used for matching.
    pub prompt_excerpt: String,
    /// Request headers, secrets redacted.
    pub headers: Vec<(String, String)>,
    /// The whole prompt by the call's `tokenizer`, cached part included.
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Of `prompt_tokens`, the cached prefix this call read (Anthropic prompt caching).
    #[serde(default)]
    pub cache_read_input_tokens: u64,
    /// Of `prompt_tokens`, the cached prefix this call wrote.
    #[serde(default)]
    pub cache_creation_input_tokens: u64,
    /// `pending` while in flight, then how the call ended.
    pub outcome: Outcome,
    pub latency_ms: u64,
    /// What the reply was written in (`ascii` when absent, as before charsets).
    #[serde(default)]
    pub charset: Charset,
    /// How the call's tokens were counted (`words` when absent, as before tokenizers).
    #[serde(default)]
    pub tokenizer: Tokenizer,
    /// FNV-1a 64 of the reply text the simulator sent, as 16 hex digits (see
    /// [`crate::sim::request::fnv`]); empty when it sent none (an error, a hang, an embedding).
    /// A cut stream's is that of the whole reply, of which the client got a part.
    #[serde(default)]
    pub reply_fnv: String,
}

/// Journal filter for the admin API.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JournalQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    /// Entries of requests that carried this tag (see [`JournalQuery::matches`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Tag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_seq: Option<u64>,
}

impl JournalQuery {
    /// Whether `e` is one of the entries this query asks for. A tag matches the tags the
    /// request carried, or the tag of the rule that decided it — the request carried that one
    /// too, so a tag finds exactly the requests its rules apply to.
    pub fn matches(&self, e: &JournalEntry) -> bool {
        self.selects(&e.deployment, e.seq, &e.tags, e.tag_matched.as_ref())
    }

    /// [`JournalQuery::matches`], on the fields it reads (the journal keeps entries in another
    /// form, see `state::Record`).
    pub fn selects(&self, deployment: &str, seq: u64, tags: &[Tag], tag_matched: Option<&Tag>) -> bool {
        self.deployment.as_deref().is_none_or(|d| deployment == d)
            && self.since_seq.is_none_or(|s| seq > s)
            && self
                .tag
                .as_ref()
                .is_none_or(|t| tags.contains(t) || tag_matched == Some(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shapes() {
        let r: Rule = serde_json::from_str(
            r#"{"tag":"t1","when":{"first":2},"behaviour":{"fault":{"kind":"error","status":429,"retry_after":1}}}"#,
        )
        .unwrap();
        assert_eq!(r.tag, Some("t1".parse().unwrap()));
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
        // A tag is a string in JSON, checked on the way in.
        let tagged = Rule::tagged(&"gt1a2b".parse().unwrap(), Fault::Hang);
        assert_eq!(
            serde_json::to_value(&tagged).unwrap()["tag"],
            serde_json::json!("gt1a2b")
        );
        let e = serde_json::from_str::<Rule>(r#"{"tag":"a b","behaviour":{}}"#).unwrap_err();
        assert!(e.to_string().contains("\"a b\" is not a tag"), "{e}");
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
        assert_eq!((e.outcome, e.tags), (Outcome::Ok, vec![]));
        assert_eq!(
            (e.charset, e.tokenizer, e.reply_fnv.as_str()),
            (Charset::Ascii, Tokenizer::Words, "")
        );
    }

    #[test]
    fn outcomes_are_the_journal_strings_both_ways() {
        let all = [
            (Outcome::Pending, "pending"),
            (Outcome::Ok, "ok"),
            (Outcome::Error(429), "error:429"),
            (Outcome::Hang, "hang"),
            (Outcome::Reset, "reset"),
            (Outcome::Malformed, "malformed"),
            (Outcome::Cut(3), "cut:3"),
            (Outcome::NoUsage, "no_usage"),
        ];
        // Adding a variant breaks this match, a reminder to list it above.
        let listed = |o: Outcome| match o {
            Outcome::Pending | Outcome::Ok | Outcome::Error(_) | Outcome::Hang | Outcome::Reset => (),
            Outcome::Malformed | Outcome::Cut(_) | Outcome::NoUsage => (),
        };
        for (o, s) in all {
            listed(o);
            assert_eq!(o.to_string(), s);
            assert_eq!(s.parse::<Outcome>(), Ok(o));
            assert_eq!(serde_json::to_value(o).unwrap(), serde_json::json!(s));
            assert_eq!(serde_json::from_value::<Outcome>(serde_json::json!(s)).unwrap(), o);
            assert_eq!(o.is_ok(), s == "ok", "{s}");
            assert_eq!(o.is_error(), s.starts_with("error:"), "{s}");
            assert_eq!(o.status(), s.strip_prefix("error:").map(|n| n.parse().unwrap()), "{s}");
        }
        for bad in [
            "",
            "OK",
            "error",
            "error:",
            "error:abc",
            "error:70000",
            "cut:",
            "cut:-1",
            "done",
        ] {
            assert_eq!(bad.parse::<Outcome>(), Err(BadOutcome(bad.into())), "{bad:?}");
            assert!(
                serde_json::from_value::<Outcome>(serde_json::json!(bad)).is_err(),
                "{bad:?}"
            );
        }
        // A fault's outcome is the one the journal shows for it.
        assert_eq!(Fault::status(503).outcome(), Outcome::Error(503));
        assert_eq!(Fault::ContextLength.outcome(), Outcome::Error(400));
        assert_eq!(Fault::CutStream { after_chunks: 2 }.outcome(), Outcome::Cut(2));
        assert_eq!(Fault::NoUsage.outcome(), Outcome::NoUsage);
    }
}
