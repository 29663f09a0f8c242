//! OpenAI wire format (also Azure OpenAI's, which is OpenAI's on other paths): parsing chat
//! and legacy completion requests into the common [`Request`], rendering replies, streams and
//! error bodies. The counting rule lives in [`super::request`] and [`super::tokenizer`].

use std::borrow::Cow;

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
    if chat && let Some(req) = fast_chat(body, path_model, tokenizers) {
        return Ok(req);
    }
    parse_value(body, chat, path_model, tokenizers)
}

/// [`parse_for`] by way of a [`Value`]: any body, and the error that names what is wrong.
fn parse_value(
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

/// A chat body of the shape nearly every request has, read straight into types, its strings
/// borrowed from the body when they have no escapes: what a call costs to parse decides how
/// fast the simulator serves. It reads the fields [`parse_value`] reads and no others, each as
/// the type that path accepts without complaint; anything else (another type, a duplicate
/// key, a value refused below) and [`fast_chat`] gives up, so [`parse_value`] decides and
/// words the error. Whenever it does not give up, it gives what [`parse_value`] gives (a
/// property test holds it to that).
#[derive(serde::Deserialize)]
struct ChatBody<'a> {
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    messages: Vec<Obj<ChatMessage<'a>>>,
    #[serde(default, deserialize_with = "present")]
    max_completion_tokens: Option<Option<u64>>,
    #[serde(default, deserialize_with = "present")]
    max_tokens: Option<Option<u64>>,
    stream: Option<bool>,
    stream_options: Option<Obj<StreamOptions>>,
    #[serde(borrow)]
    user: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "present")]
    metadata: Option<Value>,
    sim_usage: Option<Obj<SimUsage>>,
    #[serde(borrow)]
    sim_charset: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct ChatMessage<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow, default)]
    content: Content<'a>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// A message's `content`: a string, null (or absent), or a list of parts whose `text` is a
/// string or absent.
#[derive(Default)]
enum Content<'a> {
    #[default]
    Nothing,
    Text(Cow<'a, str>),
    Parts(Vec<Obj<Part<'a>>>),
}

#[derive(serde::Deserialize)]
struct Part<'a> {
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> serde::Deserialize<'de> for Content<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = Content<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, null or a list of parts")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Content<'a>, E> {
                Ok(Content::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Content<'a>, E> {
                Ok(Content::Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Content<'a>, E> {
                Ok(Content::Text(Cow::Owned(s)))
            }
            fn visit_unit<E>(self) -> Result<Content<'a>, E> {
                Ok(Content::Nothing)
            }
            fn visit_none<E>(self) -> Result<Content<'a>, E> {
                Ok(Content::Nothing)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Content<'a>, A::Error> {
                let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(1));
                while let Some(p) = seq.next_element::<Obj<Part<'a>>>()? {
                    parts.push(p);
                }
                Ok(Content::Parts(parts))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// `T` from a JSON object only: a derived struct takes an array too, by position, which
/// [`parse_value`] does not.
struct Obj<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Obj<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData)).map(Obj)
    }
}

impl<T> std::ops::Deref for Obj<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A field that is present, null included (`Some(None)`), told from one that is absent (`None`,
/// by `#[serde(default)]`).
fn present<'de, D: serde::Deserializer<'de>, T: serde::Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// [`parse_for`] of a chat body of the common shape (see [`ChatBody`]); None for any other.
fn fast_chat(body: &[u8], path_model: Option<&str>, tokenizers: &TokenizerMap) -> Option<Request> {
    let Obj(b) = serde_json::from_slice::<Obj<ChatBody>>(body).ok()?;
    let model = match path_model {
        Some(m) => m.to_owned(),
        None => b.model.filter(|m| !m.is_empty())?.into_owned(),
    };
    if b.messages.is_empty() {
        return None;
    }
    let tokenizer = Tokenizer::resolve(tokenizers, &model);
    let len = b.messages.iter().map(|m| match &m.content {
        Content::Nothing => 1,
        Content::Text(t) => t.len() + 1,
        Content::Parts(ps) => {
            ps.iter()
                .map(|p| p.text.as_ref().map_or(0, |t| t.len() + 1))
                .sum::<usize>()
                + 1
        }
    });
    let mut text = String::with_capacity(len.sum());
    let mut tokens = 0;
    for (i, m) in b.messages.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        let (role, name) = (m.role.as_ref(), m.name.as_deref());
        match &m.content {
            Content::Nothing => tokens += tokenizer.message_tokens(role, name, &[]),
            Content::Text(t) => {
                tokens += tokenizer.message_tokens(role, name, &[t.as_ref()]);
                text.push_str(t);
            }
            Content::Parts(ps) => {
                let parts: Vec<&str> = ps.iter().filter_map(|p| p.text.as_deref()).collect();
                tokens += tokenizer.message_tokens(role, name, &parts);
                for (j, p) in parts.iter().enumerate() {
                    if j > 0 {
                        text.push(' ');
                    }
                    text.push_str(p);
                }
            }
        }
    }
    let max_tokens = match b.max_completion_tokens.or(b.max_tokens) {
        None | Some(None) => None,
        Some(Some(n)) if n >= 1 => Some(n),
        Some(Some(_)) => return None,
    };
    let charset = match b.sim_charset {
        None => None,
        Some(c) => Some(c.parse().ok()?),
    };
    Some(Request {
        kind: Kind::Chat,
        model,
        text,
        prompt_tokens: tokens + tokenizer.reply_priming(),
        max_tokens,
        stream: b.stream.unwrap_or(false),
        include_usage: b.stream_options.and_then(|o| o.0.include_usage).unwrap_or(false),
        user: b.user.map(Cow::into_owned),
        metadata: b.metadata,
        cache_prefix: None,
        embedding: None,
        usage_details: b.sim_usage.as_ref().map(|u| u.details()),
        omit_usage: b.sim_usage.is_some_and(|u| u.omit),
        charset,
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

/// A whole (non-streamed) reply body, serialized: the bytes serde writes for the typed body
/// (`completion_body_by_serde`, which a test holds it to), written here piece by piece. This is the simulator's hot path,
/// and serde's derived serializer escapes every key and constant of it, one call each, for a
/// cost above the rest of the reply's; here the constants are copied as they are and only the
/// variable strings are checked for escapes.
pub fn completion_body(req: &Request, r: &Reply, created: u64, with_usage: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(320 + r.text().len() + req.model.len());
    // The id (a prefix and hex digits) and the finish reason need no escaping.
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(r.id().as_bytes());
    out.push(b'"');
    out.extend_from_slice(match req.chat() {
        true => b",\"object\":\"chat.completion\",\"created\":",
        false => b",\"object\":\"text_completion\",\"created\":",
    });
    json_u64(&mut out, created);
    out.extend_from_slice(b",\"model\":");
    json_str(&mut out, &req.model);
    out.extend_from_slice(b",\"system_fingerprint\":\"fp_gauntlet_sim\",\"choices\":[{\"index\":0,");
    if req.chat() {
        out.extend_from_slice(b"\"message\":{\"role\":\"assistant\",\"content\":");
        json_str(&mut out, r.text());
        out.push(b'}');
    } else {
        out.extend_from_slice(b"\"text\":");
        json_str(&mut out, r.text());
    }
    out.extend_from_slice(b",\"logprobs\":null,\"finish_reason\":\"");
    out.extend_from_slice(r.finish_reason().as_bytes());
    out.extend_from_slice(b"\"}]");
    if with_usage {
        out.extend_from_slice(b",\"usage\":");
        let usage = reply_usage(req, r);
        if usage.prompt_tokens_details.is_some() || usage.completion_tokens_details.is_some() {
            serde_json::to_writer(&mut out, &usage).expect("usage serializes");
        } else {
            out.extend_from_slice(b"{\"prompt_tokens\":");
            json_u64(&mut out, usage.prompt_tokens);
            out.extend_from_slice(b",\"completion_tokens\":");
            json_u64(&mut out, usage.completion_tokens);
            out.extend_from_slice(b",\"total_tokens\":");
            json_u64(&mut out, usage.total_tokens);
            out.push(b'}');
        }
    }
    out.push(b'}');
    out
}

/// `s` as a JSON string, escaped as serde_json escapes it (by serde_json when there is
/// anything to escape).
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Checked 16 bytes at a time without stopping early, which the compiler turns into a few
    // vector instructions; a byte at a time, stopping at the first, it cannot.
    let plain = s.as_bytes().chunks(16).all(|c| {
        !c.iter()
            .fold(false, |escape, &b| escape | (b < 0x20) | (b == b'"') | (b == b'\\'))
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, s).expect("a string serializes");
    }
}

fn json_u64(out: &mut Vec<u8>, n: u64) {
    serde_json::to_writer(out, &n).expect("a number serializes");
}

#[cfg(test)]
#[derive(serde::Serialize)]
struct Message<'a> {
    role: &'static str,
    content: &'a str,
}

#[cfg(test)]
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

#[cfg(test)]
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

/// [`completion_body`] by serde: what it must write, byte for byte.
#[cfg(test)]
fn completion_body_by_serde(req: &Request, r: &Reply, created: u64, with_usage: bool) -> Vec<u8> {
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
        id: &r.id(),
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
    let chunk = |choice: Value| json!({"id": r.id(), "object": object, "created": created, "model": req.model, "system_fingerprint": "fp_gauntlet_sim", "choices": [choice]});
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
        out.push(json!({"id": r.id(), "object": object, "created": created, "model": req.model, "choices": [], "usage": reply_usage(req, r)}));
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
    fn common_chat_bodies_take_the_fast_path() {
        for body in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi [t1] there"}],"max_tokens":5}"#,
            r#"{"model":"m","messages":[{"role":"system","content":"be \"brief\""},{"role":"user","name":"a","content":[{"type":"text","text":"x"},{"type":"image_url","image_url":{"url":"u"}}]}],"stream":true,"stream_options":{"include_usage":true},"user":"t1","metadata":{"k":1},"sim_usage":{"cached_tokens":1},"sim_charset":"cjk","temperature":0.2}"#,
        ] {
            let fast = fast_chat(body.as_bytes(), None, &TokenizerMap::new());
            assert!(fast.is_some(), "{body}");
            assert_eq!(
                fast.map(Ok),
                Some(parse_value(body.as_bytes(), true, None, &TokenizerMap::new()))
            );
        }
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

    /// `"key":value`: mostly one of `good` (what a client sends), sometimes one of `bad`
    /// (another type, a refused value), sometimes nothing (the field absent).
    fn field(key: &'static str, good: &[&'static str], bad: &[&'static str]) -> BoxedStrategy<Option<String>> {
        let pick =
            |vs: &[&'static str]| prop::sample::select(vs.to_vec()).prop_map(move |v| Some(format!("\"{key}\":{v}")));
        let mut options = vec![(4, pick(good).boxed()), (3, Just(None).boxed())];
        if !bad.is_empty() {
            options.push((1, pick(bad).boxed()));
        }
        prop::strategy::Union::new_weighted(options).boxed()
    }

    /// Chat bodies near the common shape: every field the parse reads, as the types it takes
    /// and as others, arrays where objects belong, escapes, duplicate keys, unknown keys.
    fn chat_body() -> impl Strategy<Value = String> {
        let part = prop_oneof![
            4 => prop::sample::select(vec![
                r#"{"type":"text","text":"a b"}"#,
                r#"{"text":null}"#,
                r#"{"type":"image_url","image_url":{"url":"x"}}"#,
                r#"{"text":"tab\there [t1]"}"#,
            ]),
            1 => prop::sample::select(vec![r#"{"text":5}"#, r#""str""#, r#"["a"]"#, r#"{"text":"x","text":"y"}"#]),
        ];
        let content = prop_oneof![
            4 => prop::sample::select(vec![
                r#""hello there""#,
                r#""esc\"aped \n x \u00e9""#,
                r#""東京は [t1-fb] 首都""#,
                "null",
                r#""""#,
            ])
            .prop_map(|c| Some(c.to_owned())),
            1 => prop::sample::select(vec!["5", "{}"]).prop_map(|c| Some(c.to_owned())),
            1 => Just(None),
            2 => prop::collection::vec(part, 0..3).prop_map(|ps| Some(format!("[{}]", ps.join(",")))),
        ];
        let role = prop_oneof![
            6 => prop::sample::select(vec![r#""user""#, r#""system""#]),
            1 => prop::sample::select(vec!["5", "null"]),
        ];
        let name = prop_oneof![
            6 => prop::sample::select(vec!["", r#","name":"alice""#, r#","name":null"#]),
            1 => Just(r#","name":5"#),
        ];
        let message = prop_oneof![
            12 => (role, content, name, any::<bool>()).prop_map(|(role, content, name, role_first)| {
                let content = content.map(|c| format!(",\"content\":{c}")).unwrap_or_default();
                if role_first {
                    format!(r#"{{"role":{role}{content}{name}}}"#)
                } else {
                    format!(r#"{{"x":1{content}{name},"role":{role}}}"#)
                }
            }),
            1 => prop::sample::select(vec![r#"["user","hi"]"#, "5", r#"{"content":"x"}"#, r#"{"role":"user","role":"user"}"#])
                .prop_map(str::to_owned),
        ];
        let messages = prop_oneof![
            12 => prop::collection::vec(message, 1..4).prop_map(|ms| Some(format!("\"messages\":[{}]", ms.join(",")))),
            1 => prop::sample::select(vec![r#""messages":[]"#, r#""messages":"x""#]).prop_map(|m| Some(m.to_owned())),
            1 => Just(None),
        ];
        let model = prop_oneof![
            12 => prop::sample::select(vec![r#""m""#, r#""gpt-4o""#, r#""m\u00e9""#]),
            1 => prop::sample::select(vec![r#""""#, "null", "5"]),
        ]
        .prop_map(|m| Some(format!("\"model\":{m}")));
        let fields = (
            model,
            messages,
            field("max_tokens", &["null", "3", "100"], &["0", "-1", "2.5", r#""5""#]),
            field("max_completion_tokens", &["null", "4"], &["0", "1e3"]),
            field("stream", &["true", "false", "null"], &[r#""yes""#]),
            field(
                "stream_options",
                &["null", r#"{"include_usage":true}"#, "{}"],
                &[r#"{"include_usage":5}"#, "[true]", "3"],
            ),
            field("user", &[r#""t1""#, "null", r#""u\u0031""#], &["5"]),
            field("metadata", &["null", r#"{"a":1}"#, "[1]"], &[]),
            field(
                "sim_usage",
                &["null", r#"{"cached_tokens":2}"#, r#"{"omit":true}"#],
                &[r#"{"cached":1}"#, "[1,2]", "3"],
            ),
            field("sim_charset", &[r#""cjk""#, "null"], &[r#""klingon""#, "3"]),
            field("temperature", &["0.5", r#"[{"x":1}]"#], &[]),
            prop::option::weighted(0.1, Just(r#""stream":true"#.to_owned())),
        );
        (fields, prop::bool::weighted(0.05)).prop_flat_map(|(f, array)| {
            let all: Vec<String> = [f.0, f.1, f.2, f.3, f.4, f.5, f.6, f.7, f.8, f.9, f.10, f.11]
                .into_iter()
                .flatten()
                .collect();
            Just(all).prop_shuffle().prop_map(move |all| {
                let inner = all.join(",");
                if array {
                    format!("[{inner}]")
                } else {
                    format!("{{{inner}}}")
                }
            })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The body written piece by piece is the one serde writes.
        #[test]
        fn the_written_body_is_the_serde_body(
            model in "(m|gpt-4o|[a-z\"\\\\\u{1}\u{7f}é東 /]{1,12})",
            content in "[a-z \"]{0,20}",
            chat in any::<bool>(),
            max in prop::option::of(1u64..40),
            details in prop::option::of((0u64..10, 0u64..10)),
            charset in prop::sample::select(crate::sim::Charset::ALL.to_vec()),
            with_usage in any::<bool>(),
            created in any::<u64>(),
            seed in any::<u64>(),
        ) {
            let mut body = match chat {
                true => json!({"model": model, "messages": [{"role": "user", "content": content}]}),
                false => json!({"model": model, "prompt": content}),
            };
            if let Some(m) = max {
                body["max_tokens"] = json!(m);
            }
            if let Some((c, r)) = details {
                body["sim_usage"] = json!({"cached_tokens": c, "reasoning_tokens": r});
            }
            body["sim_charset"] = json!(charset.name());
            let req = super::parse(body.to_string().as_bytes(), chat).unwrap();
            let r = crate::sim::request::reply(seed, "d", &req, 16);
            let ours = String::from_utf8(super::completion_body(&req, &r, created, with_usage)).unwrap();
            let serde = String::from_utf8(super::completion_body_by_serde(&req, &r, created, with_usage)).unwrap();
            prop_assert_eq!(ours, serde);
        }

        /// The fast path gives up or gives exactly what the general parse gives.
        #[test]
        fn the_fast_chat_parse_agrees_with_the_general_one(
            body in chat_body(),
            path_model in prop::option::of(Just("az")),
            bpe in any::<bool>(),
        ) {
            let map: super::TokenizerMap = if bpe {
                [("m".to_owned(), super::Tokenizer::O200kBase)].into()
            } else {
                Default::default()
            };
            if let Some(fast) = super::fast_chat(body.as_bytes(), path_model, &map) {
                let general = super::parse_value(body.as_bytes(), true, path_model, &map);
                prop_assert_eq!(Ok(fast), general, "{}", body);
            }
        }
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
