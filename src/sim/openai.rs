//! OpenAI wire format: parsing requests, deterministic replies and token counts, error bodies.
//!
//! Counting rule (documented in docs/sim.md): prompt tokens are the whitespace-separated words
//! of every message's text plus one per message (for a legacy completion, the prompt's words,
//! at least 1); the reply is `min(max_tokens, reply_tokens)` words drawn from a fixed
//! vocabulary by a hash of (seed, deployment, model, prompt), so completion tokens are the
//! reply's word count. The same request always gets the same reply and the same usage.

use serde_json::{Value, json};

/// A parsed chat or legacy completion request: only what the simulator uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub chat: bool,
    pub model: String,
    /// All prompt text (every message's content), for tag matching and hashing.
    pub text: String,
    pub prompt_tokens: u64,
    pub max_tokens: Option<u64>,
    pub stream: bool,
    pub include_usage: bool,
    pub user: Option<String>,
    pub metadata: Option<Value>,
}

/// A request the simulator refuses: status and OpenAI-shaped body.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub body: Value,
}

pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

fn invalid(message: String, param: Option<&str>) -> Refusal {
    Refusal {
        status: 400,
        body: error_body(&message, "invalid_request_error", param, None),
    }
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// The text of a message's `content`: a string, or a list of `{"type":"text","text":…}` parts.
fn content_text(content: &Value) -> Result<String, String> {
    match content {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        Value::Array(parts) => Ok(parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" ")),
        other => Err(format!(
            "content must be a string or a list of parts, not {}",
            type_name(other)
        )),
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// Parses a request body; `chat` selects chat completions or legacy completions.
pub fn parse(body: &[u8], chat: bool) -> Result<Request, Refusal> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("request body is not valid JSON: {e}"), None))?;
    let obj = v.as_object().ok_or_else(|| {
        invalid(
            format!("request body must be a JSON object, not {}", type_name(&v)),
            None,
        )
    })?;
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(invalid("model must be a non-empty string".into(), Some("model"))),
        None => return Err(invalid("you must provide a model parameter".into(), Some("model"))),
    };
    let (text, prompt_tokens) = if chat {
        let msgs = match obj.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => m,
            Some(Value::Array(_)) => return Err(invalid("messages must not be empty".into(), Some("messages"))),
            Some(other) => {
                return Err(invalid(
                    format!("messages must be a list, not {}", type_name(other)),
                    Some("messages"),
                ));
            }
            None => return Err(invalid("missing required parameter: messages".into(), Some("messages"))),
        };
        let mut texts = Vec::with_capacity(msgs.len());
        let mut tokens = 0;
        for (i, m) in msgs.iter().enumerate() {
            let m = m
                .as_object()
                .ok_or_else(|| invalid(format!("messages[{i}] must be an object"), Some("messages")))?;
            if !m.get("role").is_some_and(Value::is_string) {
                return Err(invalid(
                    format!("messages[{i}].role must be a string"),
                    Some("messages"),
                ));
            }
            let t = content_text(m.get("content").unwrap_or(&Value::Null))
                .map_err(|e| invalid(format!("messages[{i}].{e}"), Some("messages")))?;
            tokens += words(&t) + 1;
            texts.push(t);
        }
        (texts.join("\n"), tokens)
    } else {
        let t = match obj.get("prompt") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
                a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join("\n")
            }
            Some(other) => {
                return Err(invalid(
                    format!("prompt must be a string or a list of strings, not {}", type_name(other)),
                    Some("prompt"),
                ));
            }
            None => return Err(invalid("missing required parameter: prompt".into(), Some("prompt"))),
        };
        let n = words(&t).max(1);
        (t, n)
    };
    let max_tokens = match obj.get("max_completion_tokens").or_else(|| obj.get("max_tokens")) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => Some(n),
            _ => {
                return Err(invalid(
                    "max_tokens must be a positive integer".into(),
                    Some("max_tokens"),
                ));
            }
        },
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream must be a boolean".into(), Some("stream"))),
    };
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let user = match obj.get("user") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) => Some(u.clone()),
        Some(_) => return Err(invalid("user must be a string".into(), Some("user"))),
    };
    Ok(Request {
        chat,
        model,
        text,
        prompt_tokens,
        max_tokens,
        stream,
        include_usage,
        user,
        metadata: obj.get("metadata").cloned(),
    })
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

/// The deterministic reply: its words and whether max_tokens truncated it.
pub struct Reply {
    pub words: Vec<&'static str>,
    pub truncated: bool,
    pub id: String,
}

impl Reply {
    pub fn text(&self) -> String {
        self.words.join(" ")
    }
    pub fn tokens(&self) -> u64 {
        self.words.len() as u64
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
    let n = req.max_tokens.map_or(reply_tokens, |m| m.min(reply_tokens)).max(1);
    let mut x = h;
    let words = (0..n)
        .map(|_| {
            // xorshift: cheap, deterministic word choice from the request hash.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            VOCAB[(x % VOCAB.len() as u64) as usize]
        })
        .collect();
    let prefix = if req.chat { "chatcmpl" } else { "cmpl" };
    Reply {
        words,
        truncated: req.max_tokens.is_some_and(|m| m < reply_tokens),
        id: format!("{prefix}-{h:016x}"),
    }
}

pub fn usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

#[derive(serde::Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

#[derive(serde::Serialize)]
struct Message {
    role: &'static str,
    content: String,
}

#[derive(serde::Serialize)]
struct Choice {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Message>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(serde::Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    system_fingerprint: &'static str,
    choices: [Choice; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

/// A whole (non-streamed) reply body, serialized. Typed rather than built as a `Value`:
/// this is the simulator's hot path.
pub fn completion_body(req: &Request, r: &Reply, created: u64, with_usage: bool) -> Vec<u8> {
    let (message, text) = if req.chat {
        (
            Some(Message {
                role: "assistant",
                content: r.text(),
            }),
            None,
        )
    } else {
        (None, Some(r.text()))
    };
    let body = Completion {
        id: &r.id,
        object: if req.chat { "chat.completion" } else { "text_completion" },
        created,
        model: &req.model,
        system_fingerprint: "fp_gauntlet_sim",
        choices: [Choice {
            index: 0,
            message,
            text,
            logprobs: None,
            finish_reason: r.finish_reason(),
        }],
        usage: with_usage.then(|| Usage {
            prompt_tokens: req.prompt_tokens,
            completion_tokens: r.tokens(),
            total_tokens: req.prompt_tokens + r.tokens(),
        }),
    };
    serde_json::to_vec(&body).expect("a completion serializes")
}

/// The stream's data events, in order, without `[DONE]`.
pub fn stream_events(req: &Request, r: &Reply, created: u64, with_usage: bool) -> Vec<Value> {
    let object = if req.chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let chunk = |choice: Value| json!({"id": r.id, "object": object, "created": created, "model": req.model, "system_fingerprint": "fp_gauntlet_sim", "choices": [choice]});
    let mut out = Vec::with_capacity(r.words.len() + 3);
    if req.chat {
        out.push(chunk(
            json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
        ));
    }
    for (i, w) in r.words.iter().enumerate() {
        let piece = if i == 0 { (*w).to_owned() } else { format!(" {w}") };
        out.push(if req.chat {
            chunk(json!({"index": 0, "delta": {"content": piece}, "logprobs": null, "finish_reason": null}))
        } else {
            chunk(json!({"index": 0, "text": piece, "logprobs": null, "finish_reason": null}))
        });
    }
    out.push(if req.chat {
        chunk(json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": r.finish_reason()}))
    } else {
        chunk(json!({"index": 0, "text": "", "logprobs": null, "finish_reason": r.finish_reason()}))
    });
    if with_usage && req.include_usage {
        out.push(json!({"id": r.id, "object": object, "created": created, "model": req.model, "choices": [], "usage": usage(req.prompt_tokens, r.tokens())}));
    }
    out
}

/// The error body and headers a fault answers with, for the faults that are HTTP errors.
pub fn fault_error(fault: &super::Fault, prompt_tokens: u64) -> Option<(u16, Value, Option<u64>)> {
    use super::Fault;
    Some(match fault {
        Fault::Error {
            status,
            retry_after,
            message,
        } => {
            let (kind, code, default) = match status {
                429 => (
                    "rate_limit_error",
                    "rate_limit_exceeded",
                    "Rate limit reached (simulated). Please retry after the time in Retry-After.",
                ),
                401 => (
                    "authentication_error",
                    "invalid_api_key",
                    "Incorrect API key provided (simulated).",
                ),
                403 => ("permission_error", "forbidden", "Forbidden (simulated)."),
                404 => (
                    "invalid_request_error",
                    "model_not_found",
                    "The model does not exist (simulated).",
                ),
                400 => (
                    "invalid_request_error",
                    "invalid_request",
                    "Invalid request (simulated).",
                ),
                503 => (
                    "service_unavailable",
                    "service_unavailable",
                    "The server is overloaded or not ready yet (simulated).",
                ),
                s if *s >= 500 => (
                    "server_error",
                    "server_error",
                    "The server had an error while processing your request (simulated).",
                ),
                _ => (
                    "invalid_request_error",
                    "invalid_request",
                    "Request refused (simulated).",
                ),
            };
            let retry = if *status == 429 {
                Some(retry_after.unwrap_or(1))
            } else {
                *retry_after
            };
            (
                *status,
                error_body(message.as_deref().unwrap_or(default), kind, None, Some(code)),
                retry,
            )
        }
        Fault::ContextLength => (
            400,
            error_body(
                &format!(
                    "This model's maximum context length is 4096 tokens. However, your messages resulted in {} tokens. Please reduce the length of the messages.",
                    prompt_tokens.max(4097)
                ),
                "invalid_request_error",
                Some("messages"),
                Some("context_length_exceeded"),
            ),
            None,
        ),
        Fault::ContentPolicy => (
            400,
            error_body(
                "Your request was rejected as a result of our safety system (simulated).",
                "invalid_request_error",
                None,
                Some("content_policy_violation"),
            ),
            None,
        ),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_replies_deterministically() {
        let req = parse(br#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello there world"}],"max_tokens":4}"#, true).unwrap();
        assert_eq!(req.prompt_tokens, 2 + 1 + 3 + 1);
        let a = reply(7, "d", &req, 16);
        let b = reply(7, "d", &req, 16);
        assert_eq!(a.words, b.words);
        assert_eq!(a.tokens(), 4);
        assert_eq!(a.finish_reason(), "length");
        assert_ne!(reply(8, "d", &req, 16).words, a.words, "the seed must matter");
        let body: Value = serde_json::from_slice(&completion_body(&req, &a, 1, true)).unwrap();
        assert_eq!(body["usage"]["total_tokens"], 11);
        let ev = stream_events(&req, &a, 1, true);
        let streamed: String = ev
            .iter()
            .filter_map(|c| c.pointer("/choices/0/delta/content").and_then(Value::as_str))
            .collect();
        assert_eq!(streamed, a.text());
        assert!(ev.last().unwrap()["usage"].is_null(), "include_usage was not asked");
    }

    #[test]
    fn bad_requests_are_named() {
        for (body, want) in [
            (&b"{nope"[..], "not valid JSON"),
            (b"[1]", "must be a JSON object"),
            (br#"{"messages":[]}"#, "model parameter"),
            (br#"{"model":"m"}"#, "missing required parameter: messages"),
            (br#"{"model":"m","messages":[]}"#, "must not be empty"),
            (br#"{"model":"m","messages":[{"content":"x"}]}"#, "role"),
            (
                br#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
                "content must be",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
                "max_tokens",
            ),
            (
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
                "stream",
            ),
        ] {
            let r = parse(body, true).unwrap_err();
            assert_eq!(r.status, 400);
            let msg = r.body["error"]["message"].as_str().unwrap();
            assert!(msg.contains(want), "{want}: {msg}");
        }
        assert!(
            parse(br#"{"model":"m"}"#, false).unwrap_err().body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("prompt")
        );
    }
}

#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("model".to_owned()),
                        Just("messages".to_owned()),
                        Just("role".to_owned()),
                        Just("content".to_owned()),
                        Just("prompt".to_owned()),
                        Just("max_tokens".to_owned()),
                        Just("stream".to_owned()),
                        Just("user".to_owned()),
                        ".{0,6}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256), chat in any::<bool>()) {
            if let Err(r) = super::parse(&bytes, chat) {
                prop_assert!((400..500).contains(&r.status));
            }
        }

        #[test]
        fn parse_never_panics_on_json(v in value(), chat in any::<bool>()) {
            if let Err(r) = super::parse(v.to_string().as_bytes(), chat) {
                prop_assert!((400..500).contains(&r.status));
                prop_assert!(r.body["error"]["message"].is_string());
            }
        }

        #[test]
        fn rules_and_shorthands_never_panic(v in value(), s in ".{0,16}") {
            if let Ok(rule) = serde_json::from_value::<crate::sim::Rule>(v) {
                let _ = rule.when.validate();
                if let Some(f) = &rule.behaviour.fault {
                    let _ = f.validate();
                }
            }
            let _ = crate::sim::server::parse_shorthand(&s);
        }
    }
}
