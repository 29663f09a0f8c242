//! Anthropic's Messages wire format (`POST /v1/messages`): parsing into the common
//! [`Request`], the reply, the SSE event sequence and Anthropic-shaped errors.
//!
//! Prompt caching is deterministic: the blocks up to and including the last one carrying
//! `cache_control` (system blocks first, then the messages') are a cacheable prefix, keyed by
//! their content and the model. The deployment's [`super::state::PromptCache`] decides whether
//! this request created it or read it; `input_tokens` is what the prefix does not cover.

use serde_json::{Map, Value, json};

use super::model::Fault;
use super::openai::Refusal;
use super::request::{CachePrefix, CacheUse, Kind, Reply, Request, fnv, type_name};
use super::text::Charset;
use super::tokenizer::{Tokenizer, TokenizerMap};

/// Anthropic's error body.
pub fn error_body(kind: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": kind, "message": message}})
}

/// Anthropic's error type for an HTTP status (docs.anthropic.com, "Errors").
pub fn error_kind(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

pub fn refusal(status: u16, message: &str) -> Refusal {
    Refusal {
        status,
        body: error_body(error_kind(status), message),
    }
}

fn invalid(message: String) -> Refusal {
    refusal(400, &message)
}

/// One system prompt or message, as blocks (a string content is one text block).
struct Turn {
    role: String,
    blocks: Vec<Value>,
}

/// A block's text: a text block's `text`, a tool result's `content` (string or blocks).
fn block_text(b: &Value) -> String {
    if let Some(t) = b.get("text").and_then(Value::as_str) {
        return t.to_owned();
    }
    match b.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts.iter().map(block_text).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    }
}

fn blocks(v: &Value, field: &str) -> Result<Vec<Value>, Refusal> {
    match v {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(a) => {
            for (i, b) in a.iter().enumerate() {
                if !b.get("type").is_some_and(Value::is_string) {
                    return Err(invalid(format!("{field}.{i}.type: Field required")));
                }
            }
            Ok(a.clone())
        }
        other => Err(invalid(format!(
            "{field}: Input should be a valid string or a list of content blocks, not {}",
            type_name(other)
        ))),
    }
}

fn turns(obj: &Map<String, Value>) -> Result<Vec<Turn>, Refusal> {
    let mut out = Vec::new();
    match obj.get("system") {
        None | Some(Value::Null) => {}
        Some(v) => out.push(Turn {
            role: "system".into(),
            blocks: blocks(v, "system")?,
        }),
    }
    let msgs = match obj.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => return Err(invalid("messages: at least one message is required".into())),
        Some(other) => {
            return Err(invalid(format!(
                "messages: Input should be a list, not {}",
                type_name(other)
            )));
        }
        None => return Err(invalid("messages: Field required".into())),
    };
    for (i, m) in msgs.iter().enumerate() {
        let role = match m.get("role").and_then(Value::as_str) {
            Some(r @ ("user" | "assistant")) => r.to_owned(),
            _ => {
                return Err(invalid(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                )));
            }
        };
        let content = m
            .get("content")
            .ok_or_else(|| invalid(format!("messages.{i}.content: Field required")))?;
        out.push(Turn {
            role,
            blocks: blocks(content, &format!("messages.{i}.content"))?,
        });
    }
    Ok(out)
}

/// The prefix up to the last block carrying `cache_control`, if any does; its tokens are its
/// turns' by the chat rule (without the reply priming).
fn cache_prefix(model: &str, tokenizer: Tokenizer, turns: &[Turn]) -> Option<CachePrefix> {
    let marked = |b: &Value| b.get("cache_control").is_some_and(|c| !c.is_null());
    let (t_end, b_end) = turns
        .iter()
        .enumerate()
        .rev()
        .find_map(|(t, turn)| turn.blocks.iter().rposition(marked).map(|b| (t, b)))?;
    let mut tokens = 0;
    let mut canon = Vec::new();
    for (t, turn) in turns.iter().enumerate().take(t_end + 1) {
        let upto = if t == t_end { b_end + 1 } else { turn.blocks.len() };
        let blocks: Vec<Value> = turn.blocks[..upto]
            .iter()
            .map(|b| {
                // The marker is not content: the same blocks are the same prefix wherever the
                // marker sits.
                let mut b = b.clone();
                if let Some(o) = b.as_object_mut() {
                    o.remove("cache_control");
                }
                b
            })
            .collect();
        let texts: Vec<String> = blocks.iter().map(block_text).collect();
        let parts: Vec<&str> = texts.iter().map(String::as_str).collect();
        tokens += tokenizer.message_tokens(&turn.role, None, &parts);
        canon.push(json!([turn.role, blocks]));
    }
    let canon = serde_json::to_vec(&canon).unwrap_or_default();
    Some(CachePrefix {
        key: fnv(&[model.as_bytes(), &canon]),
        tokens,
    })
}

/// Parses a Messages request, counting by the tokenizer of the model's family.
pub fn parse(body: &[u8]) -> Result<Request, Refusal> {
    parse_with(body, &TokenizerMap::new())
}

/// `sim_charset`, as in the OpenAI dialect, refused with Anthropic's wording.
fn charset(obj: &Map<String, Value>) -> Result<Option<Charset>, Refusal> {
    let bad = || {
        invalid(format!(
            "sim_charset: Input should be one of {} (the simulator's reply charsets)",
            Charset::NAMES
        ))
    };
    match obj.get("sim_charset") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s.parse().map(Some).map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

/// Parses a Messages request, counting by the tokenizer `tokenizers` names for its model, else
/// its family's. Every turn (the system prompt is one) counts by the chat rule, as OpenAI's.
pub fn parse_with(body: &[u8], tokenizers: &TokenizerMap) -> Result<Request, Refusal> {
    let v: Value = serde_json::from_slice(body).map_err(|e| invalid(format!("request body is not valid JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(invalid(format!(
            "request body must be a JSON object, not {}",
            type_name(&v)
        )));
    };
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(invalid("model: Input should be a non-empty string".into())),
        None => return Err(invalid("model: Field required".into())),
    };
    // Anthropic requires max_tokens, unlike OpenAI.
    let max_tokens = match obj.get("max_tokens") {
        None | Some(Value::Null) => return Err(invalid("max_tokens: Field required".into())),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 => n,
            _ => return Err(invalid("max_tokens: Input should be a positive integer".into())),
        },
    };
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("stream: Input should be a valid boolean".into())),
    };
    let metadata = obj.get("metadata").filter(|m| !m.is_null()).cloned();
    let user = match metadata.as_ref().map(|m| m.get("user_id")) {
        None | Some(None | Some(Value::Null)) => None,
        Some(Some(Value::String(u))) => Some(u.clone()),
        Some(Some(_)) => return Err(invalid("metadata.user_id: Input should be a valid string".into())),
    };
    let charset = charset(&obj)?;
    let tokenizer = Tokenizer::resolve(tokenizers, &model);
    let turns = turns(&obj)?;
    let mut prompt_tokens = tokenizer.reply_priming();
    let mut texts = Vec::with_capacity(turns.len());
    for t in &turns {
        let blocks: Vec<String> = t.blocks.iter().map(block_text).collect();
        let parts: Vec<&str> = blocks.iter().map(String::as_str).collect();
        prompt_tokens += tokenizer.message_tokens(&t.role, None, &parts);
        texts.push(parts.join(" "));
    }
    Ok(Request {
        kind: Kind::Chat,
        prompt_tokens,
        text: texts.join("\n"),
        cache_prefix: cache_prefix(&model, tokenizer, &turns),
        model,
        max_tokens: Some(max_tokens),
        stream,
        include_usage: true,
        user,
        metadata,
        embedding: None,
        // `sim_usage` is OpenAI-only: an Anthropic request's is ignored, as before.
        usage_details: None,
        omit_usage: false,
        charset,
        tokenizer,
    })
}

fn id(r: &Reply) -> String {
    format!("msg_{:016x}", r.hash)
}

fn stop_reason(r: &Reply) -> &'static str {
    if r.truncated { "max_tokens" } else { "end_turn" }
}

/// Anthropic's usage: `input_tokens` excludes the cached prefix, reported apart as read or
/// created.
fn usage(req: &Request, cache: CacheUse, output: u64) -> Value {
    json!({
        "input_tokens": req.prompt_tokens.saturating_sub(cache.read + cache.creation),
        "cache_creation_input_tokens": cache.creation,
        "cache_read_input_tokens": cache.read,
        "output_tokens": output,
    })
}

/// The whole (non-streamed) reply.
pub fn body(req: &Request, r: &Reply, cache: CacheUse, with_usage: bool) -> Vec<u8> {
    let mut body = json!({
        "id": id(r),
        "type": "message",
        "role": "assistant",
        "model": req.model,
        "content": [{"type": "text", "text": r.text()}],
        "stop_reason": stop_reason(r),
        "stop_sequence": null,
    });
    if with_usage {
        body["usage"] = usage(req, cache, r.tokens());
    }
    serde_json::to_vec(&body).expect("a message serializes")
}

/// The stream's events, in order, each framed `event: X\ndata: {...}\n\n`. Anthropic ends a
/// stream with `message_stop`, not a terminator line.
pub fn stream_frames(req: &Request, r: &Reply, cache: CacheUse, with_usage: bool) -> Vec<String> {
    let frame = |v: Value| format!("event: {}\ndata: {v}\n\n", v["type"].as_str().unwrap_or("error"));
    let mut message = json!({
        "id": id(r), "type": "message", "role": "assistant", "model": req.model,
        "content": [], "stop_reason": null, "stop_sequence": null,
    });
    let mut delta = json!({"type": "message_delta", "delta": {"stop_reason": stop_reason(r), "stop_sequence": null}});
    if with_usage {
        // Anthropic's message_start counts one output token as a placeholder; the real count
        // comes in message_delta.
        message["usage"] = usage(req, cache, 1);
        delta["usage"] = json!({"output_tokens": r.tokens()});
    }
    let pieces = r.pieces();
    let mut out = Vec::with_capacity(pieces.len() + 6);
    out.push(frame(json!({"type": "message_start", "message": message})));
    out.push(frame(
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ));
    out.push(frame(json!({"type": "ping"})));
    for piece in pieces {
        out.push(frame(
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    out.push(frame(json!({"type": "content_block_stop", "index": 0})));
    out.push(frame(delta));
    out.push(frame(json!({"type": "message_stop"})));
    out
}

/// The error a fault answers with, worded so LiteLLM's Anthropic exception mapping
/// recognises it (`prompt is too long` → ContextWindowExceededError, `content filtering
/// policy` → ContentPolicyViolationError, `overloaded_error` → InternalServerError).
pub fn fault_error(fault: &Fault, prompt_tokens: u64) -> Option<(u16, Value, Option<u64>)> {
    Some(match fault {
        Fault::Error {
            status,
            retry_after,
            message,
        } => {
            let default = match status {
                401 => "invalid x-api-key (simulated)",
                403 => "Your API key does not have permission to use the specified resource (simulated).",
                404 => "The requested resource could not be found (simulated).",
                429 => {
                    "Number of requests has exceeded your rate limit (simulated). Please retry after the time in retry-after."
                }
                503 => "Service unavailable (simulated)",
                529 => "Overloaded (simulated)",
                s if *s >= 500 => "Internal server error (simulated)",
                _ => "Invalid request (simulated).",
            };
            // A router takes Retry-After as the cooldown of the deployment (before its own
            // cooldown_time): it is sent only when the fault says so.
            let retry = *retry_after;
            let body = error_body(error_kind(*status), message.as_deref().unwrap_or(default));
            (*status, body, retry)
        }
        Fault::ContextLength => (
            400,
            error_body(
                "invalid_request_error",
                &format!(
                    "prompt is too long: {} tokens > 200000 maximum",
                    prompt_tokens.max(200_001)
                ),
            ),
            None,
        ),
        Fault::ContentPolicy => (
            400,
            error_body(
                "invalid_request_error",
                "Output blocked by content filtering policy (simulated)",
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
    fn system_and_blocks_count_by_the_word_rule_and_mark_the_prefix() {
        let req = parse(
            br#"{"model":"c","max_tokens":9,"metadata":{"user_id":"u1"},
                "system":[{"type":"text","text":"be very brief","cache_control":{"type":"ephemeral"}}],
                "messages":[{"role":"user","content":[{"type":"text","text":"long shared context here"},
                                                      {"type":"text","text":"the question","cache_control":{"type":"ephemeral"}},
                                                      {"type":"text","text":"tail"}]}]}"#,
        )
        .unwrap();
        // system: 3 words + 1; message: 4 + 2 + 1 words + 1.
        assert_eq!(req.prompt_tokens, 4 + 8);
        assert_eq!(req.user.as_deref(), Some("u1"));
        let p = req.cache_prefix.unwrap();
        // Everything but "tail".
        assert_eq!(p.tokens, 4 + 7);
        let plain =
            parse(br#"{"model":"c","max_tokens":9,"system":"be brief","messages":[{"role":"user","content":"hi"}]}"#)
                .unwrap();
        assert_eq!(plain.prompt_tokens, 3 + 2);
        assert!(plain.cache_prefix.is_none());
        // Moving the marker inside the same content changes the prefix, and the key with it.
        let moved = parse(
            br#"{"model":"c","max_tokens":9,
                "system":[{"type":"text","text":"be very brief","cache_control":{"type":"ephemeral"}}],
                "messages":[{"role":"user","content":"long shared context here"}]}"#,
        )
        .unwrap();
        assert_eq!(moved.cache_prefix.unwrap().tokens, 4);
        assert_ne!(moved.cache_prefix.unwrap().key, p.key);
    }

    #[test]
    fn bpe_counts_every_turn_by_the_chat_rule_and_the_prefix_too() {
        let map: TokenizerMap = [("c".to_owned(), Tokenizer::O200kBase)].into();
        let body = br#"{"model":"c","max_tokens":9,
            "system":[{"type":"text","text":"be brief","cache_control":{"type":"ephemeral"}}],
            "messages":[{"role":"user","content":[{"type":"text","text":"hello world"}]}],
            "sim_charset":"rtl"}"#;
        let req = parse_with(body, &map).unwrap();
        assert_eq!((req.tokenizer, req.charset), (Tokenizer::O200kBase, Some(Charset::Rtl)));
        // system: 3 + "system" 1 + "be brief" 2; user: 3 + 1 + 2; priming 3.
        assert_eq!(req.prompt_tokens, 6 + 6 + 3);
        assert_eq!(req.cache_prefix.unwrap().tokens, 6);
        let words = parse(body).unwrap();
        assert_eq!((words.prompt_tokens, words.cache_prefix.unwrap().tokens), (3 + 3, 3));
        for bad in [r#""klingon""#, "7"] {
            let text = String::from_utf8_lossy(body).replace(r#""rtl""#, bad);
            let r = parse(text.as_bytes()).unwrap_err();
            assert_eq!(
                (r.status, r.body["error"]["type"].as_str()),
                (400, Some("invalid_request_error"))
            );
            let msg = r.body["error"]["message"].as_str().unwrap();
            assert!(
                msg.starts_with("sim_charset:") && msg.contains("ascii, cjk, emoji, rtl, combining"),
                "{msg}"
            );
        }
    }

    #[test]
    fn bad_messages_requests_are_named_anthropic_style() {
        for (body, want) in [
            (&b"{nope"[..], "not valid JSON"),
            (
                br#"{"max_tokens":1,"messages":[{"role":"user","content":"x"}]}"#,
                "model: Field required",
            ),
            (
                br#"{"model":"c","messages":[{"role":"user","content":"x"}]}"#,
                "max_tokens: Field required",
            ),
            (br#"{"model":"c","max_tokens":1}"#, "messages: Field required"),
            (
                br#"{"model":"c","max_tokens":1,"messages":[{"role":"system","content":"x"}]}"#,
                "messages.0.role",
            ),
            (
                br#"{"model":"c","max_tokens":1,"messages":[{"role":"user","content":[{"text":"x"}]}]}"#,
                "messages.0.content.0.type",
            ),
            (
                br#"{"model":"c","max_tokens":1,"system":5,"messages":[{"role":"user","content":"x"}]}"#,
                "system",
            ),
        ] {
            let r = parse(body).unwrap_err();
            assert_eq!(r.status, 400);
            assert_eq!(r.body["type"], "error");
            assert_eq!(r.body["error"]["type"], "invalid_request_error");
            let msg = r.body["error"]["message"].as_str().unwrap();
            assert!(msg.contains(want), "{want}: {msg}");
        }
    }
}
