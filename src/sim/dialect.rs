//! Which provider API a call speaks. The dialect decides only how a request is parsed and how
//! a reply, a stream and an error are rendered; behaviours, rules, the journal, metrics and
//! faults are applied the same way for all of them (see `server::complete`).

use std::borrow::Cow;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::model::Fault;
use super::openai::{self, Refusal};
use super::request::{CacheUse, Kind, Reply, Request};
use super::tokenizer::TokenizerMap;
use super::{anthropic, embeddings};

#[derive(Debug, Clone, PartialEq)]
pub enum Dialect {
    /// OpenAI and vLLM: `/v1/chat/completions`, `/v1/completions`, `/v1/embeddings`.
    OpenAi(Kind),
    /// Azure OpenAI: `/openai/deployments/{deployment}/...?api-version=...`, or the v1 API
    /// (`/openai/v1/...`, model in the body, no api-version) when `deployment` is None.
    Azure {
        kind: Kind,
        deployment: Option<String>,
        api_version: Option<String>,
    },
    /// Anthropic Messages: `/v1/messages`.
    Anthropic,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        (status, axum::Json(self.body)).into_response()
    }
}

fn endpoint(kind: Kind) -> &'static str {
    match kind {
        Kind::Chat => "chat/completions",
        Kind::Legacy => "completions",
        Kind::Embeddings => "embeddings",
    }
}

impl Dialect {
    /// The path the journal records: the endpoint, without the deployment prefix or query.
    pub fn journal_path(&self) -> Cow<'static, str> {
        let openai = |k| match k {
            Kind::Chat => "/v1/chat/completions",
            Kind::Legacy => "/v1/completions",
            Kind::Embeddings => "/v1/embeddings",
        };
        let azure_v1 = |k| match k {
            Kind::Chat => "/openai/v1/chat/completions",
            Kind::Legacy => "/openai/v1/completions",
            Kind::Embeddings => "/openai/v1/embeddings",
        };
        match self {
            Self::OpenAi(k) => openai(*k).into(),
            Self::Azure {
                kind,
                deployment: Some(d),
                ..
            } => format!("/openai/deployments/{d}/{}", endpoint(*kind)).into(),
            Self::Azure {
                kind, deployment: None, ..
            } => azure_v1(*kind).into(),
            Self::Anthropic => "/v1/messages".into(),
        }
    }

    /// Parses a request, counting its tokens by the tokenizer `tokenizers` names for its model,
    /// else its family's.
    pub fn parse(&self, body: &[u8], tokenizers: &TokenizerMap) -> Result<Request, Refusal> {
        match self {
            Self::OpenAi(Kind::Embeddings) => embeddings::parse(body, None, tokenizers),
            Self::OpenAi(k) => openai::parse_for(body, *k == Kind::Chat, None, tokenizers),
            Self::Azure {
                kind,
                deployment,
                api_version,
            } => {
                if deployment.is_some() && api_version.as_deref().is_none_or(str::is_empty) {
                    return Err(openai::azure_missing_api_version());
                }
                match kind {
                    Kind::Embeddings => embeddings::parse(body, deployment.as_deref(), tokenizers),
                    k => openai::parse_for(body, *k == Kind::Chat, deployment.as_deref(), tokenizers),
                }
            }
            Self::Anthropic => anthropic::parse_with(body, tokenizers),
        }
    }

    /// A refusal of the simulator's own (unknown deployment, bad override header, hang cap).
    pub fn refusal(&self, status: u16, message: &str, code: &str) -> Refusal {
        match self {
            Self::Anthropic => anthropic::refusal(status, message),
            _ => {
                let kind = if status >= 500 {
                    "server_error"
                } else {
                    "invalid_request_error"
                };
                Refusal {
                    status,
                    body: openai::error_body(message, kind, None, Some(code)),
                }
            }
        }
    }

    /// The status, body and Retry-After of a fault that is an HTTP error.
    pub fn fault_error(&self, fault: &Fault, prompt_tokens: u64) -> Option<(u16, Value, Option<u64>)> {
        match self {
            Self::OpenAi(_) => openai::fault_error(fault, prompt_tokens),
            Self::Azure { .. } => openai::azure_fault_error(fault, prompt_tokens),
            Self::Anthropic => anthropic::fault_error(fault, prompt_tokens),
        }
    }

    /// A whole reply body.
    pub fn body(
        &self,
        seed: u64,
        req: &Request,
        r: &Reply,
        cache: CacheUse,
        created: u64,
        with_usage: bool,
    ) -> Vec<u8> {
        match (self, req.kind) {
            (Self::Anthropic, _) => anthropic::body(req, r, cache, with_usage),
            (_, Kind::Embeddings) => embeddings::body(seed, req, with_usage),
            _ => openai::completion_body(req, r, created, with_usage),
        }
    }

    /// A stream's frames, in order, and the line that ends it, if the dialect has one.
    pub fn stream(
        &self,
        req: &Request,
        r: &Reply,
        cache: CacheUse,
        created: u64,
        with_usage: bool,
    ) -> (Vec<Bytes>, Option<Bytes>) {
        match self {
            Self::Anthropic => (
                anthropic::stream_frames(req, r, cache, with_usage)
                    .into_iter()
                    .map(Bytes::from)
                    .collect(),
                None,
            ),
            _ => (
                openai::stream_events(req, r, created, with_usage)
                    .iter()
                    .map(|ev| Bytes::from(format!("data: {ev}\n\n")))
                    .collect(),
                Some(Bytes::from_static(b"data: [DONE]\n\n")),
            ),
        }
    }
}

/// Each dialect's routes as a client sees them.
#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use crate::sim::embeddings::tests::decode;
    use crate::sim::{AdminClient, Fault, JournalEntry, JournalQuery, Outcome, Rule};

    use crate::sim::testkit::{send, sim, tag};

    async fn post(url: &str, body: &Value, headers: &[(&str, &str)]) -> reqwest::Response {
        send(url, body, headers).await.unwrap()
    }

    async fn json_of(r: reqwest::Response) -> (u16, Value) {
        let status = r.status().as_u16();
        (status, r.json().await.unwrap())
    }

    /// SSE frames as (event name, data), parsed the way a client splits them.
    fn sse(text: &str) -> Vec<(Option<String>, String)> {
        text.split("\n\n")
            .filter(|f| !f.trim().is_empty())
            .map(|f| {
                let mut event = None;
                let mut data = String::new();
                for line in f.lines() {
                    if let Some(e) = line.strip_prefix("event: ") {
                        event = Some(e.to_owned());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                (event, data)
            })
            .collect()
    }

    async fn journal(s: &crate::sim::SimHandle) -> Vec<JournalEntry> {
        AdminClient::new(&s.url())
            .journal(&JournalQuery::default())
            .await
            .unwrap()
    }

    fn messages(system: Value, question: &str) -> Value {
        json!({"model": "claude-x", "max_tokens": 4, "system": system,
               "messages": [{"role": "user", "content": [{"type": "text", "text": question}]}]})
    }

    #[tokio::test]
    async fn azure_chat_stream_and_embeddings_on_the_deployment_urls() {
        let s = sim(&["a"]).await;
        let az = |rest: &str| format!("{}/d/a/openai/deployments/gpt-east/{rest}", s.url());
        let key = [("api-key", "az-secret-key-98765")];
        let chat = json!({"messages": [{"role": "user", "content": "hello azure"}], "max_tokens": 3, "user": "u-az"});
        let (status, v) = json_of(post(&az("chat/completions?api-version=2024-10-21"), &chat, &key).await).await;
        assert_eq!(status, 200, "{v}");
        // Azure serves the URL's deployment whatever the body says (here: nothing).
        assert_eq!(v["model"], "gpt-east");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6})
        );
        let mut streamed = chat.clone();
        streamed["stream"] = json!(true);
        let text = post(&az("chat/completions?api-version=2024-10-21"), &streamed, &key)
            .await
            .text()
            .await
            .unwrap();
        let frames = sse(&text);
        assert_eq!(frames.last().unwrap().1, "[DONE]", "{text}");
        let content: String = frames
            .iter()
            .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
            .filter_map(|c| {
                c.pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect();
        assert_eq!(content, v["choices"][0]["message"]["content"].as_str().unwrap());
        let emb = json!({"input": ["hello there", "again"], "encoding_format": "base64", "dimensions": 6});
        let (status, b64) = json_of(post(&az("embeddings?api-version=2024-10-21"), &emb, &key).await).await;
        assert_eq!(status, 200, "{b64}");
        let mut float_req = emb.clone();
        float_req["encoding_format"] = json!("float");
        let (_, floats) = json_of(post(&az("embeddings?api-version=2024-10-21"), &float_req, &key).await).await;
        for i in 0..2 {
            let decoded = decode(b64["data"][i]["embedding"].as_str().unwrap());
            let want: Vec<f32> = serde_json::from_value(floats["data"][i]["embedding"].clone()).unwrap();
            assert_eq!(decoded, want);
            assert_eq!(decoded.len(), 6);
        }
        assert_eq!(b64["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
        // The v1 API has no api-version and names the model in the body.
        let mut v1 = chat.clone();
        v1["model"] = json!("gpt-east");
        let (status, _) = json_of(post(&format!("{}/d/a/openai/v1/chat/completions", s.url()), &v1, &key).await).await;
        assert_eq!(status, 200);
        let j = journal(&s).await;
        let paths: Vec<&str> = j.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/openai/deployments/gpt-east/chat/completions",
                "/openai/deployments/gpt-east/chat/completions",
                "/openai/deployments/gpt-east/embeddings",
                "/openai/deployments/gpt-east/embeddings",
                "/openai/v1/chat/completions",
            ]
        );
        assert_eq!(j[0].user.as_deref(), Some("u-az"));
        let text = serde_json::to_string(&j).unwrap();
        assert!(
            text.contains("api-key") && !text.contains("az-secret-key-98765"),
            "{text}"
        );
        s.shutdown().await;
    }

    #[tokio::test]
    async fn azure_refuses_a_deployment_call_without_api_version() {
        let s = sim(&["a"]).await;
        for path in ["chat/completions", "chat/completions?api-version=", "embeddings?foo=1"] {
            let url = format!("{}/d/a/openai/deployments/gpt-east/{path}", s.url());
            let body = json!({"messages": [{"role": "user", "content": "x"}], "input": "x"});
            let (status, v) = json_of(post(&url, &body, &[]).await).await;
            assert_eq!(status, 404, "{path}: {v}");
            assert_eq!(v["error"]["code"], "404");
            assert!(v["error"]["message"].as_str().unwrap().contains("api-version"), "{v}");
        }
        assert!(journal(&s).await.is_empty(), "a refused call never reaches the model");
        s.shutdown().await;
    }

    #[tokio::test]
    async fn azure_and_embeddings_faults_are_openai_shaped() {
        let s = sim(&["a"]).await;
        let chat_url = format!(
            "{}/d/a/openai/deployments/gpt-east/chat/completions?api-version=2024-10-21",
            s.url()
        );
        let chat = json!({"messages": [{"role": "user", "content": "x"}]});
        let emb_url = format!("{}/d/a/v1/embeddings", s.url());
        let emb = json!({"model": "e", "input": "x"});
        for (url, body) in [(&chat_url, &chat), (&emb_url, &emb)] {
            let r = post(url, body, &[("x-sim-fault", "429")]).await;
            assert_eq!(r.headers()["retry-after"], "1");
            let (status, v) = json_of(r).await;
            assert_eq!((status, v["error"]["type"].as_str()), (429, Some("rate_limit_error")));
            let (status, v) = json_of(post(url, body, &[("x-sim-fault", "500")]).await).await;
            assert_eq!((status, v["error"]["type"].as_str()), (500, Some("server_error")));
            let (status, v) = json_of(post(url, body, &[("x-sim-fault", "context_length")]).await).await;
            assert_eq!(status, 400);
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("maximum context length")
            );
            assert!(
                send(url, body, &[("x-sim-fault", "reset")]).await.is_err(),
                "reset must not answer"
            );
        }
        let (status, v) = json_of(post(&chat_url, &chat, &[("x-sim-fault", "content_policy")]).await).await;
        assert_eq!(status, 400);
        assert_eq!(v["error"]["code"], "content_filter");
        assert_eq!(v["error"]["innererror"]["code"], "ResponsibleAIPolicyViolation");
        let (status, v) = json_of(post(&emb_url, &emb, &[("x-sim-fault", "content_policy")]).await).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (400, Some("content_policy_violation"))
        );
        let (_, v) = json_of(post(&emb_url, &emb, &[("x-sim-fault", "no_usage")]).await).await;
        assert!(v.get("usage").is_none() && v["data"][0]["embedding"].is_array(), "{v}");
        s.shutdown().await;
    }

    #[tokio::test]
    async fn anthropic_messages_plain_and_streamed() {
        let s = sim(&["a"]).await;
        let url = format!("{}/d/a/v1/messages", s.url());
        let key = [("x-api-key", "sk-ant-secret-4242"), ("anthropic-version", "2023-06-01")];
        let mut req = messages(json!("be brief"), "hello claude there");
        req["metadata"] = json!({"user_id": "tagU1"});
        let (status, v) = json_of(post(&url, &req, &key).await).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["type"], "message");
        assert_eq!(v["role"], "assistant");
        assert_eq!(v["content"][0]["type"], "text");
        // max_tokens 4 < 16 reply words.
        assert_eq!(v["stop_reason"], "max_tokens");
        // "be brief" 2 + 1, "hello claude there" 3 + 1.
        assert_eq!(
            v["usage"],
            json!({"input_tokens": 7, "output_tokens": 4, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0})
        );
        let mut long = req.clone();
        long["max_tokens"] = json!(100);
        let (_, v) = json_of(post(&url, &long, &key).await).await;
        assert_eq!(v["stop_reason"], "end_turn");
        long["stream"] = json!(true);
        let r = post(&url, &long, &key).await;
        assert_eq!(r.headers()["content-type"], "text/event-stream");
        let frames = sse(&r.text().await.unwrap());
        let names: Vec<&str> = frames.iter().map(|(e, _)| e.as_deref().unwrap_or("")).collect();
        let mut want = vec!["message_start", "content_block_start", "ping"];
        want.extend(std::iter::repeat_n("content_block_delta", 16));
        want.extend(["content_block_stop", "message_delta", "message_stop"]);
        assert_eq!(names, want);
        let data: Vec<Value> = frames.iter().map(|(_, d)| serde_json::from_str(d).unwrap()).collect();
        for ((name, _), d) in frames.iter().zip(&data) {
            assert_eq!(d["type"].as_str(), name.as_deref(), "event name and data type agree");
        }
        assert_eq!(data[0]["message"]["usage"]["input_tokens"], 7);
        let text: String = data
            .iter()
            .filter_map(|d| d.pointer("/delta/text").and_then(Value::as_str))
            .collect();
        assert_eq!(text, v["content"][0]["text"].as_str().unwrap());
        let end = &data[data.len() - 2];
        assert_eq!(end["delta"]["stop_reason"], "end_turn");
        assert_eq!(end["usage"]["output_tokens"], 16);
        // metadata.user_id is the request's user: for the journal and for tag rules.
        AdminClient::new(&s.url())
            .add_rule("a", &Rule::tagged(&tag("tagU1"), Fault::status(503)))
            .await
            .unwrap();
        assert_eq!(post(&url, &req, &key).await.status(), 503);
        let j = journal(&s).await;
        assert!(
            j.iter()
                .all(|e| e.path == "/v1/messages" && e.user.as_deref() == Some("tagU1"))
        );
        assert_eq!(j[3].tag_matched, Some(tag("tagU1")));
        assert_eq!((j[0].prompt_tokens, j[0].completion_tokens), (7, 4));
        let text = serde_json::to_string(&j).unwrap();
        assert!(!text.contains("sk-ant-secret-4242"), "{text}");
        s.shutdown().await;
    }

    #[tokio::test]
    async fn anthropic_faults_are_anthropic_shaped() {
        let s = sim(&["a"]).await;
        let url = format!("{}/d/a/v1/messages", s.url());
        let req = messages(json!("sys"), "question");
        let fault = |f: &'static str| [("x-sim-fault", f)];
        for (f, status, kind, wording) in [
            ("429", 429, "rate_limit_error", "rate limit"),
            ("500", 500, "api_error", "Internal server error"),
            ("529", 529, "overloaded_error", "Overloaded"),
            ("401", 401, "authentication_error", "x-api-key"),
            ("context_length", 400, "invalid_request_error", "prompt is too long"),
            (
                "content_policy",
                400,
                "invalid_request_error",
                "content filtering policy",
            ),
            ("explode", 400, "invalid_request_error", "x-sim-fault"),
        ] {
            let r = post(&url, &req, &fault(f)).await;
            if status == 429 {
                assert_eq!(r.headers()["retry-after"], "1");
            }
            let (got, v) = json_of(r).await;
            assert_eq!(got, status, "{f}: {v}");
            assert_eq!(v["type"], "error", "{f}: {v}");
            assert_eq!(v["error"]["type"], kind, "{f}: {v}");
            assert!(v["error"]["message"].as_str().unwrap().contains(wording), "{f}: {v}");
        }
        let (status, v) = json_of(post(&format!("{}/d/zz/v1/messages", s.url()), &req, &[]).await).await;
        assert_eq!((status, v["error"]["type"].as_str()), (404, Some("not_found_error")));
        let (status, v) = json_of(post(&url, &json!({"model": "c", "messages": []}), &[]).await).await;
        assert_eq!(
            (status, v["error"]["type"].as_str()),
            (400, Some("invalid_request_error"))
        );
        assert!(
            send(&url, &req, &fault("reset")).await.is_err(),
            "reset must not answer"
        );
        let r = post(&url, &req, &fault("malformed")).await;
        assert!(serde_json::from_str::<Value>(&r.text().await.unwrap()).is_err());
        let (_, v) = json_of(post(&url, &req, &fault("no_usage")).await).await;
        assert!(v.get("usage").is_none() && v["type"] == "message", "{v}");
        let mut streamed = req.clone();
        streamed["stream"] = json!(true);
        let text = post(&url, &streamed, &fault("no_usage")).await.text().await.unwrap();
        assert!(!text.contains("usage") && text.contains("message_stop"), "{text}");
        let mut body = post(&url, &streamed, &fault("cut:2")).await.bytes_stream();
        let (mut text, mut broke) = (String::new(), false);
        while let Some(part) = futures_util::StreamExt::next(&mut body).await {
            match part {
                Ok(b) => text.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => broke = true,
            }
        }
        assert!(broke, "a cut stream must end with a broken connection");
        let names: Vec<Option<String>> = sse(&text).into_iter().map(|(e, _)| e).collect();
        assert_eq!(
            names,
            [Some("message_start".into()), Some("content_block_start".into())]
        );
        let hung = reqwest::Client::new()
            .post(&url)
            .json(&messages(json!("sys"), "[hangA1] question"))
            .header("x-sim-fault", "hang")
            .timeout(Duration::from_millis(300))
            .send()
            .await;
        assert!(hung.unwrap_err().is_timeout());
        let j = AdminClient::new(&s.url())
            .journal(&JournalQuery {
                tag: Some(tag("hangA1")),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(j[0].outcome, Outcome::Hang);
        s.shutdown().await;
    }

    #[tokio::test]
    async fn anthropic_prompt_cache_is_created_once_then_read() {
        let s = sim(&["a", "b"]).await;
        let url = |d: &str| format!("{}/d/{d}/v1/messages", s.url());
        // 7 words + 1 for the system turn: the cached prefix is 8 tokens.
        let system = json!([{"type": "text", "text": "a long shared system prompt for caching", "cache_control": {"type": "ephemeral"}}]);
        let usage = |v: &Value| {
            let u = &v["usage"];
            [
                &u["input_tokens"],
                &u["cache_creation_input_tokens"],
                &u["cache_read_input_tokens"],
            ]
            .map(|n| n.as_u64().unwrap())
        };
        let (_, v) = json_of(post(&url("a"), &messages(system.clone(), "first question"), &[]).await).await;
        assert_eq!(usage(&v), [3, 8, 0], "created: {v}");
        let (_, v) = json_of(post(&url("a"), &messages(system.clone(), "a second longer question"), &[]).await).await;
        assert_eq!(usage(&v), [5, 0, 8], "read: {v}");
        let mut streamed = messages(system.clone(), "streamed");
        streamed["stream"] = json!(true);
        let text = post(&url("a"), &streamed, &[]).await.text().await.unwrap();
        let start: Value = serde_json::from_str(&sse(&text)[0].1).unwrap();
        assert_eq!(start["message"]["usage"]["cache_read_input_tokens"], 8, "{start}");
        assert_eq!(start["message"]["usage"]["input_tokens"], 2, "{start}");
        // The cache is the deployment's: another one creates its own.
        let (_, v) = json_of(post(&url("b"), &messages(system.clone(), "first question"), &[]).await).await;
        assert_eq!(usage(&v), [3, 8, 0], "{v}");
        // A marker on the user block too: a longer prefix, created anew.
        let mut both = messages(system.clone(), "first question");
        both["messages"][0]["content"][0]["cache_control"] = json!({"type": "ephemeral"});
        let (_, v) = json_of(post(&url("a"), &both, &[]).await).await;
        assert_eq!(usage(&v), [0, 11, 0], "{v}");
        // A failed call writes nothing.
        let fresh = json!([{"type": "text", "text": "another prefix", "cache_control": {"type": "ephemeral"}}]);
        assert_eq!(
            post(&url("a"), &messages(fresh.clone(), "q"), &[("x-sim-fault", "500")])
                .await
                .status(),
            500
        );
        let (_, v) = json_of(post(&url("a"), &messages(fresh, "q"), &[]).await).await;
        assert_eq!(usage(&v), [2, 3, 0], "{v}");
        let j: Vec<(u64, u64, u64)> = journal(&s)
            .await
            .iter()
            .filter(|e| e.deployment == "a")
            .map(|e| {
                (
                    e.prompt_tokens,
                    e.cache_creation_input_tokens,
                    e.cache_read_input_tokens,
                )
            })
            .collect();
        assert_eq!(
            j,
            [(11, 8, 0), (13, 0, 8), (10, 0, 8), (11, 11, 0), (5, 0, 0), (5, 3, 0)]
        );
        AdminClient::new(&s.url()).reset().await.unwrap();
        let (_, v) = json_of(post(&url("a"), &messages(system, "first question"), &[]).await).await;
        assert_eq!(usage(&v), [3, 8, 0], "a reset forgets the cache: {v}");
        s.shutdown().await;
    }

    #[tokio::test]
    async fn openai_embeddings_strings_tokens_base64_and_default_route() {
        let s = sim(&["default"]).await;
        let url = format!("{}/d/default/v1/embeddings", s.url());
        let (status, v) =
            json_of(post(&url, &json!({"model": "e", "input": "hello embedding world"}), &[]).await).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][0]["object"], "embedding");
        let one: Vec<f32> = serde_json::from_value(v["data"][0]["embedding"].clone()).unwrap();
        assert_eq!(one.len(), crate::sim::embeddings::DEFAULT_DIMENSIONS);
        assert_eq!(v["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
        let (_, v) = json_of(
            post(
                &format!("{}/v1/embeddings", s.url()),
                &json!({"model": "e", "input": [[10, 20, 30], [40]], "encoding_format": "base64", "dimensions": 3}),
                &[],
            )
            .await,
        )
        .await;
        assert_eq!(v["usage"]["prompt_tokens"], 4, "a token array counts its length: {v}");
        let decoded = decode(v["data"][1]["embedding"].as_str().unwrap());
        assert_eq!(decoded, crate::sim::embeddings::vector(7, "e", "40", 3));
        let (_, again) =
            json_of(post(&url, &json!({"model": "e", "input": ["hello embedding world"]}), &[]).await).await;
        let same: Vec<f32> = serde_json::from_value(again["data"][0]["embedding"].clone()).unwrap();
        assert_eq!(same, one, "the same input embeds the same");
        let j = journal(&s).await;
        assert!(
            j.iter()
                .all(|e| e.path == "/v1/embeddings" && e.completion_tokens == 0 && e.outcome.is_ok())
        );
        s.shutdown().await;
    }

    /// A simulator whose deployment `j` writes CJK unless asked otherwise, and that counts
    /// `m-o200k` and `m-cl100k` with those encodings (any other test model by the word rule).
    async fn text_sim() -> crate::sim::SimHandle {
        use crate::sim::{Charset, DeploymentSpec, SimConfig, Tokenizer};
        let mut j = DeploymentSpec::named("j");
        j.charset = Charset::Cjk;
        crate::sim::testkit::sim_with(SimConfig {
            seed: 7,
            deployments: vec![DeploymentSpec::named("a"), j],
            tokenizers: [
                ("m-o200k".to_owned(), Tokenizer::O200kBase),
                ("m-cl100k".to_owned(), Tokenizer::Cl100kBase),
            ]
            .into(),
        })
        .await
    }

    /// The text of a stream's deltas, piece by piece.
    fn deltas(text: &str) -> Vec<String> {
        sse(text)
            .iter()
            .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
            .filter_map(|c| {
                c.pointer("/choices/0/delta/content")
                    .or_else(|| c.pointer("/delta/text"))
                    .and_then(Value::as_str)
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
            })
            .collect()
    }

    #[tokio::test]
    async fn every_charset_reaches_the_client_counted_by_the_models_tokenizer() {
        use crate::sim::{Charset, Tokenizer, fnv};
        let s = text_sim().await;
        let url = format!("{}/d/a/v1/chat/completions", s.url());
        let prompt = "請 route this 👩🏽‍💻 مرحبا";
        let mut n = 0;
        for (model, t) in [
            ("m-words", Tokenizer::Words),
            ("m-o200k", Tokenizer::O200kBase),
            ("m-cl100k", Tokenizer::Cl100kBase),
        ] {
            for cs in Charset::ALL {
                let what = format!("{model} {cs}");
                let body =
                    json!({"model": model, "messages": [{"role": "user", "content": prompt}], "sim_charset": cs});
                let (status, v) = json_of(post(&url, &body, &[]).await).await;
                assert_eq!(status, 200, "{what}: {v}");
                let content = v["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
                assert!(cs == Charset::Ascii || !content.is_ascii(), "{what}: {content}");
                let (prompt_tokens, completion) = (t.chat_prompt(&[("user", prompt)]), t.count(&content));
                assert_eq!(
                    v["usage"],
                    json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}),
                    "{what}: {content:?}"
                );
                assert!(completion <= 16, "{what}");
                let mut streamed = body.clone();
                streamed["stream"] = json!(true);
                streamed["stream_options"] = json!({"include_usage": true});
                let text = post(&url, &streamed, &[]).await.text().await.unwrap();
                let pieces = deltas(&text);
                assert_eq!(
                    pieces.concat(),
                    content,
                    "{what}: the stream is the reply, byte for byte"
                );
                for (i, p) in pieces.iter().enumerate() {
                    let unit = if i == 0 {
                        Some(p.as_str())
                    } else {
                        p.strip_prefix(cs.separator())
                    };
                    assert!(
                        unit.is_some_and(|u| cs.vocabulary().contains(&u)),
                        "{what}: piece {p:?}"
                    );
                }
                let last: Value = serde_json::from_str(&sse(&text).iter().rev().nth(1).unwrap().1).unwrap();
                assert_eq!(last["usage"], v["usage"], "{what}");
                let j = journal(&s).await;
                for e in &j[n..] {
                    assert_eq!((e.charset, e.tokenizer), (cs, t), "{what}");
                    assert_eq!(e.reply_fnv, format!("{:016x}", fnv(&[content.as_bytes()])), "{what}");
                    assert_eq!(
                        (e.prompt_tokens, e.completion_tokens),
                        (prompt_tokens, completion),
                        "{what}"
                    );
                }
                n = j.len();
            }
        }
        // A deployment's charset is the default; a request's sim_charset wins.
        let cjk_url = format!("{}/d/j/v1/chat/completions", s.url());
        let plain = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        let (_, v) = json_of(post(&cjk_url, &plain, &[]).await).await;
        let content = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(content.chars().all(crate::sim::text::is_cjk), "{content}");
        assert_eq!(v["usage"]["completion_tokens"], crate::sim::words(content));
        let mut ascii = plain.clone();
        ascii["sim_charset"] = json!("ascii");
        let (_, v) = json_of(post(&cjk_url, &ascii, &[]).await).await;
        assert!(
            v["choices"][0]["message"]["content"].as_str().unwrap().is_ascii(),
            "{v}"
        );
        // Azure and Anthropic read sim_charset too; the legacy endpoint as well.
        let az = format!(
            "{}/d/a/openai/deployments/m-o200k/chat/completions?api-version=2024-10-21",
            s.url()
        );
        let (_, v) = json_of(
            post(
                &az,
                &json!({"messages": [{"role": "user", "content": "hi"}], "sim_charset": "rtl"}),
                &[],
            )
            .await,
        )
        .await;
        let content = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert_eq!(
            v["usage"]["completion_tokens"],
            Tokenizer::O200kBase.count(content),
            "{v}"
        );
        assert!(
            content.chars().any(|c| ('\u{0590}'..='\u{06FF}').contains(&c)),
            "{content}"
        );
        let legacy = format!("{}/d/a/v1/completions", s.url());
        let (_, v) = json_of(
            post(
                &legacy,
                &json!({"model": "m-cl100k", "prompt": "hi", "sim_charset": "combining"}),
                &[],
            )
            .await,
        )
        .await;
        let content = v["choices"][0]["text"].as_str().unwrap();
        assert_eq!(
            v["usage"]["completion_tokens"],
            Tokenizer::Cl100kBase.count(content),
            "{v}"
        );
        assert_eq!(v["usage"]["prompt_tokens"], 1, "{v}");
        let msgs = format!("{}/d/a/v1/messages", s.url());
        let mut req = messages(json!("be brief"), "hello");
        req["model"] = json!("m-o200k");
        req["max_tokens"] = json!(16);
        req["sim_charset"] = json!("emoji");
        let (_, v) = json_of(post(&msgs, &req, &[]).await).await;
        let content = v["content"][0]["text"].as_str().unwrap().to_owned();
        assert_eq!(v["usage"]["output_tokens"], Tokenizer::O200kBase.count(&content), "{v}");
        assert_eq!(v["usage"]["input_tokens"], (3 + 1 + 2) + (3 + 1 + 1) + 3, "{v}");
        req["stream"] = json!(true);
        let text = post(&msgs, &req, &[]).await.text().await.unwrap();
        assert_eq!(deltas(&text).concat(), content);
        s.shutdown().await;
    }

    #[tokio::test]
    async fn a_bad_sim_charset_is_refused_in_the_dialects_shape() {
        let s = text_sim().await;
        let chat = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "sim_charset": "klingon"});
        let (status, v) = json_of(post(&format!("{}/d/a/v1/chat/completions", s.url()), &chat, &[]).await).await;
        assert_eq!(
            (status, v["error"]["param"].as_str()),
            (400, Some("sim_charset")),
            "{v}"
        );
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("ascii, cjk, emoji, rtl, combining"),
            "{v}"
        );
        let mut req = messages(json!("sys"), "q");
        req["sim_charset"] = json!("klingon");
        let (status, v) = json_of(post(&format!("{}/d/a/v1/messages", s.url()), &req, &[]).await).await;
        assert_eq!(
            (status, v["type"].as_str(), v["error"]["type"].as_str()),
            (400, Some("error"), Some("invalid_request_error"))
        );
        assert!(v["error"]["message"].as_str().unwrap().contains("sim_charset"), "{v}");
        assert!(journal(&s).await.is_empty(), "a refused call never reaches the model");
        s.shutdown().await;
    }

    #[tokio::test]
    async fn sim_usage_omit_drops_usage_from_bodies_and_streams() {
        let s = text_sim().await;
        let url = format!("{}/d/a/v1/chat/completions", s.url());
        let body = json!({"model": "m-cl100k", "messages": [{"role": "user", "content": "hello there"}],
                          "sim_usage": {"omit": true}, "sim_charset": "cjk"});
        let (status, v) = json_of(post(&url, &body, &[]).await).await;
        assert_eq!(status, 200, "{v}");
        assert!(v.get("usage").is_none(), "{v}");
        let content = v["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
        let mut streamed = body.clone();
        streamed["stream"] = json!(true);
        streamed["stream_options"] = json!({"include_usage": true});
        let text = post(&url, &streamed, &[]).await.text().await.unwrap();
        assert!(
            !text.contains("usage") && text.trim_end().ends_with("data: [DONE]"),
            "{text}"
        );
        assert_eq!(deltas(&text).concat(), content);
        let legacy = json!({"model": "m", "prompt": "x", "sim_usage": {"omit": true}});
        let (_, v) = json_of(post(&format!("{}/d/a/v1/completions", s.url()), &legacy, &[]).await).await;
        assert!(v.get("usage").is_none() && v["choices"][0]["text"].is_string(), "{v}");
        // The journal still has the counts the provider would have billed, and says why the
        // client got none.
        let j = journal(&s).await;
        let want = crate::sim::Tokenizer::Cl100kBase.count(&content);
        assert!(j.iter().all(|e| e.outcome == Outcome::NoUsage), "{j:?}");
        assert_eq!((j[0].completion_tokens, j[1].completion_tokens), (want, want));
        assert_eq!(j[0].reply_fnv, j[1].reply_fnv);
        // Without omit, usage is back.
        let mut kept = body.clone();
        kept["sim_usage"] = json!({"omit": false});
        let (_, v) = json_of(post(&url, &kept, &[]).await).await;
        assert_eq!(v["usage"]["completion_tokens"], want, "{v}");
        // An error sends no reply: its entry has no reply_fnv.
        let (status, _) = json_of(post(&url, &body, &[("x-sim-fault", "500")]).await).await;
        assert_eq!(status, 500);
        let j = journal(&s).await;
        assert_eq!(
            (j.last().unwrap().outcome, j.last().unwrap().reply_fnv.as_str()),
            (Outcome::Error(500), "")
        );
        s.shutdown().await;
    }
}
