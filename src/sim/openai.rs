//! OpenAI wire format (also Azure OpenAI's, which is OpenAI's on other paths): parsing chat
//! and legacy completion requests into the common [`Request`], rendering replies, streams and
//! error bodies. The counting rule lives in [`super::request`] and [`super::tokenizer`].

use serde_json::{Value, json};

use super::model::Fault;
use super::request::{Kind, Reply, Request, SimUsage, type_name};
use super::text::Charset;
use super::tokenizer::{Tokenizer, TokenizerMap};

/// A request the simulator refuses: status and OpenAI-shaped body.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub body: Value,
}

pub fn error_body(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

pub fn invalid(message: String, param: Option<&str>) -> Refusal {
    Refusal {
        status: 400,
        body: error_body(&message, "invalid_request_error", param, None),
    }
}

/// The text parts of a message's `content`: a string, or a list of `{"type":"text","text":…}`
/// parts (counted one by one, as LiteLLM counts them; the prompt text joins them with a space).
fn content_parts(content: &Value) -> Result<Vec<&str>, String> {
    match content {
        Value::String(s) => Ok(vec![s.as_str()]),
        Value::Null => Ok(Vec::new()),
        Value::Array(parts) => Ok(parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect()),
        other => Err(format!(
            "content must be a string or a list of parts, not {}",
            type_name(other)
        )),
    }
}

/// The body as a JSON object, or the refusal OpenAI gives for anything else.
pub fn object(body: &[u8]) -> Result<serde_json::Map<String, Value>, Refusal> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| invalid(format!("request body is not valid JSON: {e}"), None))?;
    match v {
        Value::Object(o) => Ok(o),
        other => Err(invalid(
            format!("request body must be a JSON object, not {}", type_name(&other)),
            None,
        )),
    }
}

/// The model a request is for: `path_model` when the URL names it (Azure's deployment, which
/// Azure serves whatever the body says), else the body's required `model`.
pub fn model(obj: &serde_json::Map<String, Value>, path_model: Option<&str>) -> Result<String, Refusal> {
    if let Some(m) = path_model {
        return Ok(m.to_owned());
    }
    match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => Ok(m.clone()),
        Some(_) => Err(invalid("model must be a non-empty string".into(), Some("model"))),
        None => Err(invalid("you must provide a model parameter".into(), Some("model"))),
    }
}

/// `user`, which OpenAI refuses when it is not a string.
pub fn user(obj: &serde_json::Map<String, Value>) -> Result<Option<String>, Refusal> {
    match obj.get("user") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(u)) => Ok(Some(u.clone())),
        Some(_) => Err(invalid("user must be a string".into(), Some("user"))),
    }
}

/// Parses a request body; `chat` selects chat completions or legacy completions. Tokens are
/// counted by the tokenizer of the model's family ([`Tokenizer::for_model`]).
pub fn parse(body: &[u8], chat: bool) -> Result<Request, Refusal> {
    parse_for(body, chat, None, &TokenizerMap::new())
}

/// [`parse`], with the model taken from the URL when it names one (see [`model`]), and the
/// tokenizer from `tokenizers` when it names the model ([`Tokenizer::resolve`]). The suites
/// can count a body's prompt exactly as the simulator does with
/// `parse_for(&body, true, None, &map)?.prompt_tokens`.
pub fn parse_for(
    body: &[u8],
    chat: bool,
    path_model: Option<&str>,
    tokenizers: &TokenizerMap,
) -> Result<Request, Refusal> {
    let obj = object(body)?;
    let model = model(&obj, path_model)?;
    let tokenizer = Tokenizer::resolve(tokenizers, &model);
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
            let Some(role) = m.get("role").and_then(Value::as_str) else {
                return Err(invalid(
                    format!("messages[{i}].role must be a string"),
                    Some("messages"),
                ));
            };
            let parts = content_parts(m.get("content").unwrap_or(&Value::Null))
                .map_err(|e| invalid(format!("messages[{i}].{e}"), Some("messages")))?;
            let name = m.get("name").and_then(Value::as_str);
            tokens += tokenizer.message_tokens(role, name, &parts);
            texts.push(parts.join(" "));
        }
        (texts.join("\n"), tokens + tokenizer.reply_priming())
    } else {
        let prompts: Vec<&str> = match obj.get("prompt") {
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => a.iter().filter_map(Value::as_str).collect(),
            Some(other) => {
                return Err(invalid(
                    format!("prompt must be a string or a list of strings, not {}", type_name(other)),
                    Some("prompt"),
                ));
            }
            None => return Err(invalid("missing required parameter: prompt".into(), Some("prompt"))),
        };
        let n = prompts.iter().map(|p| tokenizer.count(p)).sum::<u64>().max(1);
        (prompts.join("\n"), n)
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
    let user = user(&obj)?;
    let sim_usage = sim_usage(&obj)?;
    Ok(Request {
        kind: if chat { Kind::Chat } else { Kind::Legacy },
        model,
        text,
        prompt_tokens,
        max_tokens,
        stream,
        include_usage,
        user,
        metadata: obj.get("metadata").cloned(),
        cache_prefix: None,
        embedding: None,
        usage_details: sim_usage.map(|u| u.details()),
        omit_usage: sim_usage.is_some_and(|u| u.omit),
        charset: charset(&obj)?,
        tokenizer,
    })
}

/// `sim_usage`: the usage details the request asks to be reported, or none at all (see
/// [`SimUsage`]). Not an OpenAI parameter: LiteLLM passes parameters it does not know on to
/// OpenAI-compatible upstreams, so a client sets it per request and a router per deployment
/// (`litellm_params.extra_body`).
pub fn sim_usage(obj: &serde_json::Map<String, Value>) -> Result<Option<SimUsage>, Refusal> {
    match obj.get("sim_usage") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| {
            invalid(
                format!(
                    "sim_usage must be {{\"cached_tokens\": n, \"reasoning_tokens\": n, \"omit\": true|false}}: {e}"
                ),
                Some("sim_usage"),
            )
        }),
    }
}

/// `sim_charset`: the charset to reply in (see [`Charset`]), instead of the deployment's. Not
/// an OpenAI parameter either; passed on by LiteLLM like `sim_usage`.
pub fn charset(obj: &serde_json::Map<String, Value>) -> Result<Option<Charset>, Refusal> {
    let bad = |got: String| {
        invalid(
            format!("sim_charset must be one of {}, not {got}", Charset::NAMES),
            Some("sim_charset"),
        )
    };
    match obj.get("sim_charset") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| bad(format!("{s:?}"))),
        Some(other) => Err(bad(type_name(other).to_owned())),
    }
}

pub fn usage(prompt: u64, completion: u64) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// A reply's usage as OpenAI words it: with `prompt_tokens_details` and
/// `completion_tokens_details` when the request asked for usage details.
fn reply_usage(req: &Request, r: &Reply) -> Usage {
    let details = req.usage_details.map(|d| {
        (
            PromptDetails {
                cached_tokens: d.cached(req.prompt_tokens),
                audio_tokens: 0,
            },
            CompletionDetails {
                reasoning_tokens: r.reasoning,
                audio_tokens: 0,
                accepted_prediction_tokens: 0,
                rejected_prediction_tokens: 0,
            },
        )
    });
    Usage {
        prompt_tokens: req.prompt_tokens,
        completion_tokens: r.tokens(),
        total_tokens: req.prompt_tokens + r.tokens(),
        prompt_tokens_details: details.as_ref().map(|d| d.0),
        completion_tokens_details: details.map(|d| d.1),
    }
}

#[derive(serde::Serialize)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(serde::Serialize, Clone, Copy)]
struct PromptDetails {
    cached_tokens: u64,
    audio_tokens: u64,
}

#[derive(serde::Serialize, Clone, Copy)]
struct CompletionDetails {
    reasoning_tokens: u64,
    audio_tokens: u64,
    accepted_prediction_tokens: u64,
    rejected_prediction_tokens: u64,
}

#[derive(serde::Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(serde::Serialize)]
struct Choice<'a> {
    index: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
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
    choices: [Choice<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

/// A whole (non-streamed) reply body, serialized. Typed rather than built as a `Value`:
/// this is the simulator's hot path.
pub fn completion_body(req: &Request, r: &Reply, created: u64, with_usage: bool) -> Vec<u8> {
    let (message, text) = if req.chat() {
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
        object: if req.chat() {
            "chat.completion"
        } else {
            "text_completion"
        },
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
        usage: with_usage.then(|| reply_usage(req, r)),
    };
    serde_json::to_vec(&body).expect("a completion serializes")
}

/// The stream's data events, in order, without `[DONE]`.
pub fn stream_events(req: &Request, r: &Reply, created: u64, with_usage: bool) -> Vec<Value> {
    let object = if req.chat() {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let chunk = |choice: Value| json!({"id": r.id, "object": object, "created": created, "model": req.model, "system_fingerprint": "fp_gauntlet_sim", "choices": [choice]});
    let pieces = r.pieces();
    let mut out = Vec::with_capacity(pieces.len() + 3);
    if req.chat() {
        out.push(chunk(
            json!({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}),
        ));
    }
    for piece in pieces {
        out.push(if req.chat() {
            chunk(json!({"index": 0, "delta": {"content": piece}, "logprobs": null, "finish_reason": null}))
        } else {
            chunk(json!({"index": 0, "text": piece, "logprobs": null, "finish_reason": null}))
        });
    }
    out.push(if req.chat() {
        chunk(json!({"index": 0, "delta": {}, "logprobs": null, "finish_reason": r.finish_reason()}))
    } else {
        chunk(json!({"index": 0, "text": "", "logprobs": null, "finish_reason": r.finish_reason()}))
    });
    if with_usage && req.include_usage {
        out.push(json!({"id": r.id, "object": object, "created": created, "model": req.model, "choices": [], "usage": reply_usage(req, r)}));
    }
    out
}

/// The error body and headers a fault answers with, for the faults that are HTTP errors.
pub fn fault_error(fault: &Fault, prompt_tokens: u64) -> Option<(u16, Value, Option<u64>)> {
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
            // A router takes Retry-After as the cooldown of the deployment (before its own
            // cooldown_time): it is sent only when the fault says so.
            let retry = *retry_after;
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

/// Azure's errors are OpenAI's except content filtering, which Azure words and structures its
/// own way (`content_filter` with a `ResponsibleAIPolicyViolation` inner error): routers that
/// special-case Azure look for exactly that.
pub fn azure_fault_error(fault: &Fault, prompt_tokens: u64) -> Option<(u16, Value, Option<u64>)> {
    if !matches!(fault, Fault::ContentPolicy) {
        return fault_error(fault, prompt_tokens);
    }
    let filtered = json!({"filtered": true, "severity": "high"});
    let clean = json!({"filtered": false, "severity": "safe"});
    Some((
        400,
        json!({"error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. (simulated)",
            "type": null,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {"hate": clean, "self_harm": clean, "sexual": clean, "violence": filtered},
            },
        }}),
        None,
    ))
}

/// What Azure answers a deployment call without `api-version`: a 404 like the real service,
/// with a message that says what is missing (the real one only says "Resource not found").
pub fn azure_missing_api_version() -> Refusal {
    Refusal {
        status: 404,
        body: json!({"error": {
            "code": "404",
            "message": "Resource not found (simulated): Azure OpenAI needs the api-version query parameter, e.g. ?api-version=2024-10-21",
        }}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::request::reply;

    #[test]
    fn counts_and_replies_deterministically() {
        let req = parse(br#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello there world"}],"max_tokens":4}"#, true).unwrap();
        assert_eq!(req.prompt_tokens, 2 + 1 + 3 + 1);
        let a = reply(7, "d", &req, 16);
        let b = reply(7, "d", &req, 16);
        assert_eq!(a.text(), b.text());
        assert_eq!(a.tokens(), 4);
        assert_eq!(a.finish_reason(), "length");
        assert_ne!(reply(8, "d", &req, 16).text(), a.text(), "the seed must matter");
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
    fn usage_details_follow_the_counting_rule() {
        let body = |extra: &str| {
            format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"one two three"}}],"max_tokens":3,"stream_options":{{"include_usage":true}}{extra}}}"#
            )
        };
        let plain = parse(body("").as_bytes(), true).unwrap();
        let v: Value = serde_json::from_slice(&completion_body(&plain, &reply(1, "d", &plain, 16), 1, true)).unwrap();
        assert!(v["usage"].get("prompt_tokens_details").is_none(), "{v}");
        let req = parse(
            body(r#","sim_usage":{"cached_tokens":3,"reasoning_tokens":5}"#).as_bytes(),
            true,
        )
        .unwrap();
        let r = reply(1, "d", &req, 16);
        // Reasoning tokens come on top of the words max_tokens allows.
        assert_eq!((r.pieces().len(), r.tokens()), (3, 8));
        let v: Value = serde_json::from_slice(&completion_body(&req, &r, 1, true)).unwrap();
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 4, "completion_tokens": 8, "total_tokens": 12,
                   "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
                   "completion_tokens_details": {"reasoning_tokens": 5, "audio_tokens": 0,
                       "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}})
        );
        let ev = stream_events(&req, &r, 1, true);
        assert_eq!(ev.last().unwrap()["usage"], v["usage"]);
        // At most the whole prompt is cached.
        let all = parse(body(r#","sim_usage":{"cached_tokens":100}"#).as_bytes(), true).unwrap();
        let v: Value = serde_json::from_slice(&completion_body(&all, &reply(1, "d", &all, 16), 1, true)).unwrap();
        assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 4);
        assert_eq!(v["usage"]["completion_tokens_details"]["reasoning_tokens"], 0);
        for bad in [
            r#","sim_usage":{"cached":1}"#,
            r#","sim_usage":{"cached_tokens":-1}"#,
            r#","sim_usage":3"#,
        ] {
            let e = parse(body(bad).as_bytes(), true).unwrap_err();
            assert_eq!(
                (e.status, e.body["error"]["param"].as_str()),
                (400, Some("sim_usage")),
                "{bad}"
            );
        }
    }

    #[test]
    fn bpe_prompts_count_by_the_chat_rule() {
        let map: TokenizerMap = [("m".to_owned(), Tokenizer::O200kBase)].into();
        let text = r#"{"model":"m","messages":[{"role":"system","content":"be brief"},
            {"role":"user","name":"alice","content":"東京は日本の首都です"},
            {"role":"user","content":[{"type":"text","text":"hello world"},{"type":"image_url","image_url":{"url":"x"}}]}]}"#;
        let body = text.as_bytes();
        let req = parse_for(body, true, None, &map).unwrap();
        assert_eq!(req.tokenizer, Tokenizer::O200kBase);
        // (3 + 1 + 2) + (3 + 1 + 7 + 1 + 1) + (3 + 1 + 2) + 3, as LiteLLM's token_counter
        // counts it for gpt-4o (see tokenizer.rs).
        assert_eq!(req.prompt_tokens, 6 + 13 + 6 + 3);
        // The word rule: words + 1 per message, the name not counted.
        let words = parse(body, true).unwrap();
        assert_eq!((words.tokenizer, words.prompt_tokens), (Tokenizer::Words, 3 + 11 + 3));
        // A model tiktoken knows is counted by its family.
        let gpt4 = text.replace(r#""model":"m""#, r#""model":"gpt-4""#);
        assert_eq!(parse(gpt4.as_bytes(), true).unwrap().tokenizer, Tokenizer::Cl100kBase);
        // Legacy: each prompt counted, at least 1.
        let legacy = parse_for(
            br#"{"model":"m","prompt":["hello world","hello world"]}"#,
            false,
            None,
            &map,
        )
        .unwrap();
        assert_eq!(legacy.prompt_tokens, 4);
        let empty = parse_for(br#"{"model":"m","prompt":""}"#, false, None, &map).unwrap();
        assert_eq!(empty.prompt_tokens, 1);
    }

    #[test]
    fn sim_charset_and_sim_usage_omit_are_read_and_checked() {
        let body = |extra: &str| format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}]{extra}}}"#);
        assert_eq!(parse(body("").as_bytes(), true).unwrap().charset, None);
        for cs in Charset::ALL {
            let req = parse(body(&format!(r#","sim_charset":"{cs}""#)).as_bytes(), true).unwrap();
            assert_eq!(req.charset, Some(cs));
        }
        for bad in [
            r#","sim_charset":"klingon""#,
            r#","sim_charset":3"#,
            r#","sim_charset":"CJK""#,
        ] {
            let e = parse(body(bad).as_bytes(), true).unwrap_err();
            assert_eq!(
                (e.status, e.body["error"]["param"].as_str()),
                (400, Some("sim_charset")),
                "{bad}"
            );
            assert_eq!(e.body["error"]["type"], "invalid_request_error");
            let msg = e.body["error"]["message"].as_str().unwrap();
            assert!(msg.contains("ascii, cjk, emoji, rtl, combining"), "{msg}");
        }
        let omit = parse(body(r#","sim_usage":{"omit":true}"#).as_bytes(), true).unwrap();
        assert!(omit.omit_usage);
        let kept = parse(
            body(r#","sim_usage":{"omit":false,"reasoning_tokens":2}"#).as_bytes(),
            true,
        )
        .unwrap();
        assert!(!kept.omit_usage && kept.usage_details.unwrap().reasoning_tokens == 2);
        let e = parse(body(r#","sim_usage":{"omit":"yes"}"#).as_bytes(), true).unwrap_err();
        assert_eq!(e.body["error"]["param"], "sim_usage");
        assert_eq!(
            serde_json::to_value(SimUsage::OMIT).unwrap(),
            json!({"cached_tokens": 0, "reasoning_tokens": 0, "omit": true})
        );
        assert_eq!(
            serde_json::to_value(SimUsage::default()).unwrap(),
            json!({"cached_tokens": 0, "reasoning_tokens": 0})
        );
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
                        Just("system".to_owned()),
                        Just("input".to_owned()),
                        Just("type".to_owned()),
                        Just("text".to_owned()),
                        Just("cache_control".to_owned()),
                        Just("metadata".to_owned()),
                        Just("user_id".to_owned()),
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
        fn other_dialects_never_panic_on_json(v in value()) {
            let body = v.to_string();
            for r in [
                crate::sim::anthropic::parse(body.as_bytes()),
                crate::sim::embeddings::parse(body.as_bytes(), None, &Default::default()),
            ] {
                if let Err(r) = r {
                    prop_assert!((400..500).contains(&r.status));
                }
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
