//! The simulator's HTTP side: the router that mounts every dialect's endpoints per deployment,
//! metrics and the admin API; the one path that applies behaviours, rules, journal, metrics and
//! faults to model calls; streams; and the connection stream a `reset` fault aborts (the accept
//! loop that uses it is `handle::start`).

use std::future::{Future, Ready};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Path, State as AxState};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use axum::{Json, Router};
use futures_util::future::Either;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::dialect::Dialect;
use super::model::{Behaviour, Fault, Outcome};
use super::request::{CacheUse, Kind, Reply, Request, fnv, reply, unit};
use super::state::{Deployment, EntryHeaders, EntryText, Record, Shared, State, carried_tags};
use super::{admin, metrics, openai};

/// A hang is answered by the client giving up; this cap keeps an abandoned one from living
/// for the rest of a long run.
const HANG_CAP: Duration = Duration::from_secs(300);

/// Set by a `reset` fault; the connection's stream then refuses to write and is closed with
/// SO_LINGER 0, which sends the client a TCP RST instead of a response.
#[derive(Clone, Default)]
pub struct ResetFlag(Arc<AtomicBool>);

tokio::task_local! {
    /// The flag of the connection whose task is running: hyper polls a connection's handlers
    /// on its own task, so a handler finds its connection's flag here. (A request extension
    /// would cost every request an allocation for what only a `reset` fault reads.)
    static CONNECTION: ResetFlag;
}

impl ResetFlag {
    /// Serves a connection with this as the flag its requests' `reset` faults set.
    pub fn scope<F: Future>(self, connection: F) -> impl Future<Output = F::Output> {
        CONNECTION.scope(self, connection)
    }

    /// The flag of the connection this request came on.
    fn current() -> Option<Self> {
        CONNECTION.try_with(Self::clone).ok()
    }
}

pub fn router(state: Shared) -> Router {
    let mut r = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics::all))
        .route("/d/{deployment}/health", get(deployment_health))
        .route("/d/{deployment}/metrics", get(metrics::one))
        .route("/d/{deployment}/v1/models", get(models))
        .route("/v1/models", get(|s| models(s, Path("default".into()))));
    // Unprefixed, the model routes serve the `default` deployment (see `Call`).
    for prefix in ["/d/{deployment}", ""] {
        for (path, dialect) in MODEL_ROUTES {
            r = r.route(&format!("{prefix}{path}"), call(dialect));
        }
    }
    r.merge(admin::router())
        .fallback(|| async {
            refuse(
                404,
                "no such endpoint on the provider simulator",
                "invalid_request_error",
                Some("not_found"),
            )
        })
        .with_state(state)
}

/// Picks a call's dialect; Azure's takes its deployment and api-version from the request.
type DialectOf = fn(&Call) -> Dialect;

/// Each model route and the dialect it speaks.
const MODEL_ROUTES: [(&str, DialectOf); 10] = [
    ("/v1/chat/completions", |_| Dialect::OpenAi(Kind::Chat)),
    ("/v1/completions", |_| Dialect::OpenAi(Kind::Legacy)),
    ("/v1/embeddings", |_| Dialect::OpenAi(Kind::Embeddings)),
    ("/v1/messages", |_| Dialect::Anthropic),
    ("/openai/deployments/{azure_deployment}/chat/completions", |c| {
        c.azure(Kind::Chat)
    }),
    ("/openai/deployments/{azure_deployment}/completions", |c| {
        c.azure(Kind::Legacy)
    }),
    ("/openai/deployments/{azure_deployment}/embeddings", |c| {
        c.azure(Kind::Embeddings)
    }),
    ("/openai/v1/chat/completions", |c| c.azure(Kind::Chat)),
    ("/openai/v1/completions", |c| c.azure(Kind::Legacy)),
    ("/openai/v1/embeddings", |c| c.azure(Kind::Embeddings)),
];

fn call(dialect: DialectOf) -> MethodRouter<Shared> {
    post(move |c: Call| {
        let d = dialect(&c);
        complete(c, d)
    })
}

/// The deployment the unprefixed model routes serve.
const DEFAULT: &str = "default";

/// What a model call brings: its deployment (None on the unprefixed routes: [`DEFAULT`]),
/// Azure's deployment and api-version when the route has them, headers and body.
struct Call {
    state: Shared,
    deployment: Option<String>,
    azure_deployment: Option<String>,
    api_version: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Call {
    fn azure(&self, kind: Kind) -> Dialect {
        Dialect::Azure {
            kind,
            deployment: self.azure_deployment.clone(),
            api_version: self.api_version.clone(),
        }
    }
}

#[derive(Default, serde::Deserialize)]
struct RouteParams {
    deployment: Option<String>,
    azure_deployment: Option<String>,
}

impl FromRequest<Shared> for Call {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, state: &Shared) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let params = Path::<RouteParams>::from_request_parts(&mut parts, state)
            .await
            .map(|p| p.0)
            .unwrap_or_default();
        let api_version = parts.uri.query().and_then(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == "api-version")
                .map(|(_, v)| v.to_owned())
        });
        let body = read_body(body).await?;
        Ok(Self {
            state: state.clone(),
            deployment: params.deployment,
            azure_deployment: params.azure_deployment,
            api_version,
            headers: parts.headers,
            body,
        })
    }
}

/// The body size axum's `Bytes` extractor accepts by default, which the simulator keeps.
const BODY_LIMIT: usize = 2_097_152;

/// A request body, read as axum's `Bytes` extractor reads it and refused as it refuses one (413
/// past [`BODY_LIMIT`], 400 when it breaks off), at a fraction of the cost: the extractor boxes
/// the body again behind a limit, collects it into a list and copies it out, where a model
/// call's body nearly always arrives in one piece, kept here as it came.
async fn read_body(body: Body) -> Result<Bytes, Response> {
    use futures_util::StreamExt;
    let refuse = |status: StatusCode, why: &dyn std::fmt::Display| {
        (status, format!("Failed to buffer the request body: {why}")).into_response()
    };
    let mut chunks = body.into_data_stream();
    let (mut first, mut more, mut len) = (Bytes::new(), Vec::new(), 0);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| refuse(StatusCode::BAD_REQUEST, &e))?;
        len += chunk.len();
        if len > BODY_LIMIT {
            return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, &"length limit exceeded"));
        }
        if first.is_empty() && more.is_empty() {
            first = chunk;
        } else {
            if more.is_empty() {
                more.extend_from_slice(&first);
            }
            more.extend_from_slice(&chunk);
        }
    }
    Ok(if more.is_empty() { first } else { Bytes::from(more) })
}

fn refuse(status: u16, msg: &str, kind: &str, code: Option<&str>) -> Response {
    let s = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (s, Json(openai::error_body(msg, kind, None, code))).into_response()
}

fn unknown_deployment(state: &State, name: &str, dialect: &Dialect) -> Response {
    let known: Vec<String> = state.deployments().keys().cloned().collect();
    dialect
        .refusal(
            404,
            &format!("unknown deployment '{name}' (known: {})", known.join(", ")),
            "deployment_not_found",
        )
        .into_response()
}

const OPENAI: Dialect = Dialect::OpenAi(Kind::Chat);

async fn deployment_health(AxState(s): AxState<Shared>, Path(d): Path<String>) -> Response {
    match s.deployment(&d) {
        Some(_) => Json(json!({"status": "ok", "deployment": d})).into_response(),
        None => unknown_deployment(&s, &d, &OPENAI),
    }
}

async fn models(AxState(s): AxState<Shared>, Path(d): Path<String>) -> Response {
    let Some(dep) = s.deployment(&d) else {
        return unknown_deployment(&s, &d, &OPENAI);
    };
    let data: Vec<Value> = dep
        .spec
        .served_models()
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "gauntlet-sim"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

/// The per-request override: `x-sim-behaviour: <Behaviour JSON>`, `x-sim-fault: <shorthand>`,
/// or llm-d-inference-sim's `X-Return-Error: <status>`.
/// A bad header is an error message naming it.
fn header_override(h: &HeaderMap) -> Result<Option<Behaviour>, String> {
    const BEHAVIOUR: HeaderName = HeaderName::from_static("x-sim-behaviour");
    const FAULT: HeaderName = HeaderName::from_static("x-sim-fault");
    const RETURN_ERROR: HeaderName = HeaderName::from_static("x-return-error");
    let bad = |name: &str, why: String| format!("header {name}: {why}");
    // One pass over the few headers a request has, rather than a hashed lookup of each name.
    let (mut behaviour, mut fault, mut return_error) = (None, None, None);
    for (k, v) in h {
        let first = match k {
            k if *k == BEHAVIOUR => &mut behaviour,
            k if *k == FAULT => &mut fault,
            k if *k == RETURN_ERROR => &mut return_error,
            _ => continue,
        };
        first.get_or_insert(v);
    }
    if let Some(v) = behaviour {
        let b: Behaviour = serde_json::from_slice(v.as_bytes()).map_err(|e| bad("x-sim-behaviour", e.to_string()))?;
        if let Some(f) = &b.fault {
            f.validate().map_err(|e| bad("x-sim-behaviour", e))?;
        }
        return Ok(Some(b));
    }
    if let Some(v) = fault {
        let v = v.to_str().unwrap_or("");
        return parse_shorthand(v)
            .map(|f| Some(Behaviour::fault(f)))
            .map_err(|e| bad("x-sim-fault", e));
    }
    if let Some(v) = return_error {
        let v = v.to_str().unwrap_or("");
        return parse_shorthand(v)
            .map(|f| Some(Behaviour::fault(f)))
            .map_err(|e| bad("x-return-error", e));
    }
    Ok(None)
}

/// `429`, `500`, `hang`, `reset`, `malformed`, `cut:N`, `no_usage`, `context_length`.
pub fn parse_shorthand(v: &str) -> Result<Fault, String> {
    let v = v.trim();
    let f = match v {
        "hang" => Fault::Hang,
        "reset" => Fault::Reset,
        "malformed" => Fault::Malformed,
        "no_usage" => Fault::NoUsage,
        "context_length" => Fault::ContextLength,
        "content_policy" => Fault::ContentPolicy,
        _ => {
            if let Some(n) = v.strip_prefix("cut:") {
                Fault::CutStream {
                    after_chunks: n.parse().map_err(|_| format!("cut:N needs a number, got {v:?}"))?,
                }
            } else {
                let status: u16 = v.parse().map_err(|_| {
                    format!("unknown fault {v:?} (try 429, 500, hang, reset, malformed, cut:3, no_usage)")
                })?;
                Fault::Error {
                    status,
                    // The shorthand's 429 is a provider's usual one: "retry after 1 s".
                    retry_after: (status == 429).then_some(1),
                    message: None,
                }
            }
        }
    };
    f.validate()?;
    Ok(f)
}

/// Sleeps only when there is something to wait: a zero sleep still costs a timer entry.
async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A delay with seeded jitter.
fn delay(base: Option<u64>, jitter: Option<u64>, seed: u64, seq: u64, salt: u64) -> Duration {
    let base = base.unwrap_or(0) as f64;
    let j = jitter.unwrap_or(0) as f64;
    let r = unit(fnv(&[&seed.to_le_bytes(), &seq.to_le_bytes(), &salt.to_le_bytes()]));
    Duration::from_secs_f64(((base + (r * 2.0 - 1.0) * j).max(0.0)) / 1000.0)
}

/// One model call, whatever its dialect: behaviour, rules, journal, metrics, faults.
///
/// Most load is plain calls: no fault, no delay, not streamed. Such a call has nothing to wait
/// for once its body is read, so [`begin`] answers it at once, journaled once, finished; any
/// other call is journaled pending there and goes on in [`Pending::answer`], which finishes
/// its entry when the outcome is known (a hang shows while it hangs). Only those calls have a
/// future of their own to allocate and move about; a plain one's is a ready response.
///
/// What a plain call costs beyond a bare handler (measure it with `gauntlet bench sim
/// --external`): its body read as it arrived (`read_body`), parsed into a typed request
/// (`openai::parse_for`'s fast path), the reply, its body written as bytes
/// (`openai::completion_body`), a lock-free look at the deployment, its behaviour and rules
/// ([`super::state::Snapshot`]), atomic counters, and one short lock to append to the journal,
/// whose text goes into a ring rather than allocations of its own (`state::Journal`).
fn complete(c: Call, dialect: Dialect) -> Either<Ready<Response>, Answering> {
    match begin(c, dialect) {
        Begun::Answered(response) => Either::Left(std::future::ready(response)),
        Begun::Pending(answering) => Either::Right(answering),
    }
}

/// [`Pending::answer`]'s future.
type Answering = Pin<Box<dyn Future<Output = Response> + Send>>;

enum Begun {
    /// Refused, or a plain call answered.
    Answered(Response),
    /// Journaled, pending: to be answered after faults and delays.
    Pending(Answering),
}

/// A call [`begin`] journaled and did not answer.
struct Pending {
    s: Shared,
    dep: Arc<Deployment>,
    dialect: Dialect,
    req: Request,
    reply: Reply,
    behaviour: Behaviour,
    seq: u64,
    start: Instant,
    /// The delay before the reply (or the first event), before jitter.
    wait: Option<u64>,
    _running: Running,
}

/// A call up to its journal entry: answered there if it is plain (see [`complete`]).
fn begin(c: Call, dialect: Dialect) -> Begun {
    let start = Instant::now();
    let Call {
        state: s,
        deployment,
        headers,
        body,
        ..
    } = c;
    let name = deployment.as_deref().unwrap_or(DEFAULT);
    let Some(dep) = s.deployment(name) else {
        return Begun::Answered(unknown_deployment(&s, name, &dialect));
    };
    let mut req = match dialect.parse(&body, &s.tokenizers) {
        Ok(r) => r,
        Err(refusal) => return Begun::Answered(refusal.into_response()),
    };
    req.charset = req.charset.or(Some(dep.spec.charset));
    let over = match header_override(&headers) {
        Ok(o) => o,
        Err(msg) => return Begun::Answered(dialect.refusal(400, &msg, "invalid_header").into_response()),
    };
    let decision = s.decide(&dep, req.user.as_deref(), &req.text);
    let (behaviour, tag) = match over {
        Some(b) => (b, None),
        None => (decision.behaviour, decision.tag),
    };
    // The reply depends on the request alone: written before the call is journaled, so its
    // entry records what will be sent, when something will.
    let replies = req.kind != Kind::Embeddings && behaviour.fault.as_ref().is_none_or(Fault::replies);
    let reply = reply(s.seed, &dep.spec.name, &req, dep.spec.reply_tokens());
    let mut entry = Record {
        time_ms: now_ms(),
        stream: req.stream,
        user: req.user.clone(),
        metadata: req.metadata.clone(),
        tag_matched: tag,
        tags: carried_tags(req.user.as_deref(), &req.text),
        prompt_tokens: req.prompt_tokens,
        outcome: Outcome::Pending,
        charset: req.charset.unwrap_or_default(),
        tokenizer: req.tokenizer,
        reply_fnv: replies.then(|| reply.fnv()),
        ..Record::default()
    };
    let path = dialect.journal_path();
    let text = EntryText {
        deployment: &dep.spec.name,
        path: &path,
        model: &req.model,
        prompt: &req.text,
        headers: EntryHeaders::Request(&headers),
    };
    let m = &dep.metrics;
    let wait = if req.stream {
        behaviour.ttft_ms.or(behaviour.latency_ms)
    } else {
        behaviour.latency_ms
    };
    let plain =
        behaviour.fault.is_none() && !req.stream && wait.unwrap_or(0) == 0 && behaviour.jitter_ms.unwrap_or(0) == 0;
    if !plain {
        let seq = s.journal_push(entry, text);
        m.running.fetch_add(1, Ordering::Relaxed);
        let running = Running(dep.clone());
        let call = Pending {
            s,
            dep,
            dialect,
            req,
            reply,
            behaviour,
            seq,
            start,
            wait,
            _running: running,
        };
        return Begun::Pending(Box::pin(call.answer()));
    }
    // What `Pending::answer` does, less the fault, the delay and the pending entry.
    let cache = req
        .cache_prefix
        .map_or_else(CacheUse::default, |p| dep.prompt_cache.touch(p));
    let outcome = if req.omit_usage { Outcome::NoUsage } else { Outcome::Ok };
    m.prompt_tokens.fetch_add(req.prompt_tokens, Ordering::Relaxed);
    m.generation_tokens.fetch_add(reply.tokens(), Ordering::Relaxed);
    let body = dialect.body(s.seed, &req, &reply, cache, entry.time_ms / 1000, !req.omit_usage);
    let elapsed = start.elapsed();
    m.answered(elapsed);
    entry.finish(outcome, reply.tokens(), elapsed.as_millis() as u64, cache);
    let seq = s.journal_push(entry, text);
    Begun::Answered(with_ids(json(body), &dep, seq))
}

impl Pending {
    async fn answer(self) -> Response {
        let Pending {
            s,
            dep,
            dialect,
            req,
            reply,
            behaviour,
            seq,
            start,
            wait,
            _running,
        } = self;
        let m = &dep.metrics;
        let finish = |outcome: Outcome, completion: u64, cache: CacheUse| {
            s.journal_finish(seq, outcome, completion, start.elapsed().as_millis() as u64, cache);
        };
        let first_delay = delay(wait, behaviour.jitter_ms, s.seed, seq, 1);
        if let Some(fault) = &behaviour.fault {
            *m.faults
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(fault.kind())
                .or_default() += 1;
            let failed = Failure {
                dialect: &dialect,
                prompt_tokens: req.prompt_tokens,
                first_delay,
                finish: &finish,
            };
            if let Some(resp) = failed.answer(fault).await {
                return with_ids(resp, &dep, seq);
            }
        }
        // Only an answered request writes the prompt cache, as a provider's would.
        let cache = req
            .cache_prefix
            .map_or_else(CacheUse::default, |p| dep.prompt_cache.touch(p));
        // `sim_usage.omit` answers as the no_usage fault does, and is journaled the same.
        let with_usage = !matches!(behaviour.fault, Some(Fault::NoUsage)) && !req.omit_usage;
        let outcome = match &behaviour.fault {
            Some(f) => f.outcome(),
            None if req.omit_usage => Outcome::NoUsage,
            None => Outcome::Ok,
        };
        let created = now_ms() / 1000;
        m.prompt_tokens.fetch_add(req.prompt_tokens, Ordering::Relaxed);
        m.generation_tokens.fetch_add(reply.tokens(), Ordering::Relaxed);
        if !req.stream {
            pause(first_delay).await;
            m.answered(start.elapsed());
            finish(outcome, reply.tokens(), cache);
            let body = dialect.body(s.seed, &req, &reply, cache, created, with_usage);
            return with_ids(json(body), &dep, seq);
        }
        let (mut frames, end) = dialect.stream(&req, &reply, cache, created, with_usage);
        let cut = match behaviour.fault {
            Some(Fault::CutStream { after_chunks }) => Some(after_chunks as usize),
            _ => None,
        };
        if let Some(n) = cut {
            frames.truncate(n);
        }
        finish(outcome, reply.tokens(), cache);
        m.success.fetch_add(u64::from(cut.is_none()), Ordering::Relaxed);
        let pacing = Pacing {
            first: first_delay,
            itl: behaviour.itl_ms,
            jitter: behaviour.jitter_ms,
            seed: s.seed,
            seq,
        };
        let end = if cut.is_some() { Ended::Cut } else { Ended::With(end) };
        with_ids(sse(dep.clone(), start, frames, end, pacing), &dep, seq)
    }
}

/// The faults that answer instead of the model: hang, reset, malformed, HTTP errors.
struct Failure<'a> {
    dialect: &'a Dialect,
    prompt_tokens: u64,
    first_delay: Duration,
    finish: &'a (dyn Fn(Outcome, u64, CacheUse) + Sync),
}

impl Failure<'_> {
    /// The response to send instead of a reply; None for faults that still reply
    /// (`no_usage`, `cut_stream`).
    async fn answer(&self, fault: &Fault) -> Option<Response> {
        let finish = |outcome: Outcome| (self.finish)(outcome, 0, CacheUse::default());
        match fault {
            Fault::Hang => {
                // Visible in the journal while it hangs: tests can see the router called.
                finish(Outcome::Hang);
                tokio::time::sleep(HANG_CAP).await;
                let msg = "simulated hang reached the simulator's cap";
                Some(self.dialect.refusal(504, msg, "timeout").into_response())
            }
            Fault::Reset => {
                pause(self.first_delay).await;
                finish(Outcome::Reset);
                if let Some(f) = ResetFlag::current() {
                    f.0.store(true, Ordering::SeqCst);
                }
                // The stream refuses this response and the connection closes with a RST.
                Some(StatusCode::INTERNAL_SERVER_ERROR.into_response())
            }
            Fault::Malformed => {
                pause(self.first_delay).await;
                finish(Outcome::Malformed);
                Some(
                    (
                        [("content-type", "application/json")],
                        "{\"id\": \"chatcmpl-broken\", \"choices\": [{\"message\": ",
                    )
                        .into_response(),
                )
            }
            f => {
                let (status, body, retry) = self.dialect.fault_error(f, self.prompt_tokens)?;
                pause(self.first_delay).await;
                finish(Outcome::Error(status));
                let mut resp = (
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    Json(body),
                )
                    .into_response();
                if let Some(r) = retry.and_then(|r| HeaderValue::from_str(&r.to_string()).ok()) {
                    resp.headers_mut().insert("retry-after", r);
                }
                Some(resp)
            }
        }
    }
}

/// When a stream's events go out.
struct Pacing {
    first: Duration,
    itl: Option<u64>,
    jitter: Option<u64>,
    seed: u64,
    seq: u64,
}

/// How a stream ends: with the dialect's terminator (if it has one), or broken by a cut.
enum Ended {
    With(Option<Bytes>),
    Cut,
}

fn sse(dep: Arc<Deployment>, start: Instant, frames: Vec<Bytes>, end: Ended, p: Pacing) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    tokio::spawn(async move {
        pause(p.first).await;
        dep.metrics.ttft.observe(start.elapsed().as_secs_f64());
        for (i, frame) in frames.into_iter().enumerate() {
            if i > 0 && p.itl.is_some() {
                tokio::time::sleep(delay(p.itl, p.jitter, p.seed, p.seq, 2 + i as u64)).await;
            }
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
        match end {
            Ended::Cut => {
                // An error ends the body without the terminating event: the client sees the
                // connection close mid-stream. First let hyper take and write what was sent,
                // or the abort would drop the events still in its buffer.
                let drained = async {
                    while tx.capacity() < tx.max_capacity() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                };
                let _ = tokio::time::timeout(Duration::from_secs(1), drained).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = tx.send(Err(std::io::Error::other("simulated cut stream"))).await;
            }
            Ended::With(end) => {
                if let Some(end) = end {
                    let _ = tx.send(Ok(end)).await;
                }
                dep.metrics.e2e.observe(start.elapsed().as_secs_f64());
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(body)
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// Decrements the running gauge however the request ends (even when the client goes away).
struct Running(Arc<Deployment>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.metrics.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A JSON body, its content type a constant (not a string parsed per response).
fn json(body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn with_ids(mut r: Response, dep: &Deployment, seq: u64) -> Response {
    const DEPLOYMENT: HeaderName = HeaderName::from_static("x-sim-deployment");
    const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
    if let Some(v) = &dep.header {
        r.headers_mut().insert(DEPLOYMENT, v.clone());
    }
    r.headers_mut().insert(REQUEST_ID, request_id(seq));
    r
}

/// `sim-{seq}`, written without `format!` (whose machinery costs more than the rest of this).
fn request_id(seq: u64) -> HeaderValue {
    let mut buf = [0u8; 24];
    let mut at = buf.len();
    let mut n = seq;
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    at -= 4;
    buf[at..at + 4].copy_from_slice(b"sim-");
    HeaderValue::from_bytes(&buf[at..]).expect("sim- and digits are a header value")
}

/// A connection's stream that can be told to die with a RST (see [`ResetFlag`]).
pub struct ResettableStream {
    inner: TcpStream,
    flag: ResetFlag,
}

impl ResettableStream {
    pub fn new(inner: TcpStream, flag: ResetFlag) -> Self {
        Self { inner, flag }
    }

    fn reset(&self) -> Option<std::io::Error> {
        if !self.flag.0.load(Ordering::SeqCst) {
            return None;
        }
        // Linger 0 makes the close that follows this error a RST, not a FIN.
        let _ = socket2::SockRef::from(&self.inner).set_linger(Some(Duration::ZERO));
        Some(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.reset() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if let Some(e) = self.reset() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use crate::sim::{AdminClient, Fault, JournalQuery, Outcome, Rule, When};
    use crate::tag::Tag;

    use crate::sim::testkit::{sim, tag};

    fn chat(tag: &str) -> Value {
        json!({"model": "m", "messages": [{"role": "user", "content": format!("[{tag}] hello there")}], "max_tokens": 5})
    }

    async fn post(url: &str, body: &Value, header: Option<(&str, &str)>) -> reqwest::Result<reqwest::Response> {
        let mut rb = reqwest::Client::new()
            .post(url)
            .json(body)
            .timeout(Duration::from_secs(5));
        if let Some((k, v)) = header {
            rb = rb.header(k, v);
        }
        rb.send().await
    }

    #[tokio::test]
    async fn replies_are_deterministic_and_counted_by_the_documented_rule() {
        let s = sim(&["a"]).await;
        let url = format!("{}/d/a/v1/chat/completions", s.url());
        let a: Value = post(&url, &chat("t"), None).await.unwrap().json().await.unwrap();
        let b: Value = post(&url, &chat("t"), None).await.unwrap().json().await.unwrap();
        assert_eq!(a["choices"], b["choices"]);
        assert_eq!(a["id"], b["id"]);
        // "[t] hello there" = 3 words + 1 for the message; max_tokens 5 < 16 words.
        assert_eq!(
            a["usage"],
            json!({"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9})
        );
        assert_eq!(a["choices"][0]["finish_reason"], "length");
        s.shutdown().await;
    }

    #[tokio::test]
    async fn bodies_are_read_whole_however_they_arrive_and_refused_past_the_limit() {
        let s = sim(&["a"]).await;
        let url = format!("{}/d/a/v1/chat/completions", s.url());
        let whole: Value = post(&url, &chat("pieces"), None).await.unwrap().json().await.unwrap();
        // The same body in two chunks, some time apart.
        let text = chat("pieces").to_string().into_bytes();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
        let (a, b) = text.split_at(text.len() / 2);
        let (a, b) = (a.to_vec(), b.to_vec());
        tokio::spawn(async move {
            let _ = tx.send(Ok(a)).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx.send(Ok(b)).await;
        });
        let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        let r = reqwest::Client::new()
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.json::<Value>().await.unwrap()["choices"], whole["choices"]);
        // axum's default limit, as its extractor refused past it.
        let big = vec![b' '; super::BODY_LIMIT + 1];
        let r = reqwest::Client::new().post(&url).body(big).send().await.unwrap();
        assert_eq!(r.status(), 413);
        assert_eq!(
            r.text().await.unwrap(),
            "Failed to buffer the request body: length limit exceeded"
        );
        s.shutdown().await;
    }

    #[tokio::test]
    async fn each_fault_reaches_the_client_as_intended() {
        let s = sim(&["a"]).await;
        let url = format!("{}/d/a/v1/chat/completions", s.url());
        let r = post(&url, &chat("x"), Some(("x-sim-fault", "429"))).await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "1");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        let r = post(&url, &chat("x"), Some(("x-sim-fault", "reset"))).await;
        assert!(r.is_err(), "a reset must not produce an HTTP response: {r:?}");
        let r = post(&url, &chat("x"), Some(("x-sim-fault", "malformed")))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(serde_json::from_str::<Value>(&r.text().await.unwrap()).is_err());
        let r = post(&url, &chat("x"), Some(("x-sim-fault", "no_usage"))).await.unwrap();
        assert!(r.json::<Value>().await.unwrap().get("usage").is_none());
        let r = post(&url, &chat("x"), Some(("x-sim-fault", "context_length")))
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("maximum context length"));
        let mut stream = chat("x");
        stream["stream"] = json!(true);
        let mut body = post(&url, &stream, Some(("x-sim-fault", "cut:2")))
            .await
            .unwrap()
            .bytes_stream();
        let (mut text, mut broke) = (String::new(), false);
        while let Some(part) = futures_util::StreamExt::next(&mut body).await {
            match part {
                Ok(b) => text.push_str(&String::from_utf8_lossy(&b)),
                Err(_) => broke = true,
            }
        }
        assert!(broke, "a cut stream must end with a broken connection");
        assert_eq!(text.matches("data: ").count(), 2, "{text}");
        assert!(!text.contains("[DONE]"));
        let hung = reqwest::Client::new()
            .post(&url)
            .json(&chat("hang1"))
            .header("x-sim-fault", "hang");
        let r = hung.timeout(Duration::from_millis(300)).send().await;
        assert!(r.unwrap_err().is_timeout());
        let admin = AdminClient::new(&s.url());
        let j = admin
            .journal(&JournalQuery {
                tag: Some(tag("hang1")),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(j[0].outcome, Outcome::Hang);
        let r = post(&url, &chat("x"), Some(("x-sim-fault", "explode"))).await.unwrap();
        assert_eq!(r.status(), 400);
        assert!(r.text().await.unwrap().contains("x-sim-fault"));
        s.shutdown().await;
    }

    #[tokio::test]
    async fn tagged_scripted_rules_never_touch_other_tags() {
        let s = sim(&["a"]).await;
        let admin = AdminClient::new(&s.url());
        let first_two = Rule {
            tag: Some(tag("tagA")),
            when: When::First { first: 2 },
            behaviour: crate::sim::Behaviour::fault(Fault::Error {
                status: 503,
                retry_after: None,
                message: None,
            }),
        };
        admin.add_rule("a", &first_two).await.unwrap();
        admin
            .add_rule(
                "a",
                &Rule::tagged(
                    &tag("tagB"),
                    Fault::Error {
                        status: 500,
                        retry_after: None,
                        message: None,
                    },
                ),
            )
            .await
            .unwrap();
        let url = format!("{}/d/a/v1/chat/completions", s.url());
        let mut a = Vec::new();
        for _ in 0..3 {
            a.push(post(&url, &chat("tagA"), None).await.unwrap().status().as_u16());
        }
        assert_eq!(a, [503, 503, 200]);
        assert_eq!(post(&url, &chat("tagB"), None).await.unwrap().status(), 500);
        assert_eq!(post(&url, &chat("untagged"), None).await.unwrap().status(), 200);
        admin.clear_tag(&tag("tagB")).await.unwrap();
        assert_eq!(post(&url, &chat("tagB"), None).await.unwrap().status(), 200);
        s.shutdown().await;
    }

    #[tokio::test]
    async fn journal_queries_find_exactly_the_requests_a_tags_rules_apply_to() {
        let s = sim(&["a"]).await;
        let admin = AdminClient::new(&s.url());
        let t = tag("t1");
        admin
            .add_rule("a", &Rule::tagged(&t, Fault::status(503)))
            .await
            .unwrap();
        let url = format!("{}/d/a/v1/chat/completions", s.url());
        // The sub-tag's marker does not carry `t1`; neither does `t1` as a plain word.
        let mut sub = chat("t1-fb");
        sub["messages"][0]["content"] = json!("[t1-fb] t1 hello");
        assert_eq!(post(&url, &sub, None).await.unwrap().status(), 200);
        // A `user` that is the tag does.
        let mut by_user = json!({"model": "m", "messages": [{"role": "user", "content": "hello"}], "user": "t1"});
        assert_eq!(post(&url, &by_user, None).await.unwrap().status(), 503);
        by_user["user"] = json!("t1-fb");
        assert_eq!(post(&url, &by_user, None).await.unwrap().status(), 200);
        let q = |t: &Tag| JournalQuery {
            tag: Some(t.clone()),
            ..Default::default()
        };
        let j = admin.journal(&q(&t)).await.unwrap();
        assert_eq!(j.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
        assert_eq!(
            (j[0].tag_matched.as_ref(), j[0].outcome),
            (Some(&t), Outcome::Error(503))
        );
        let j = admin.journal(&q(&t.sub("fb"))).await.unwrap();
        assert_eq!(j.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(j[0].tags, [t.sub("fb")]);
        assert!(j.iter().all(|e| e.tag_matched.is_none() && e.outcome == Outcome::Ok));
        s.shutdown().await;
    }

    #[tokio::test]
    async fn seeded_rates_repeat_exactly() {
        async fn run() -> Vec<u16> {
            let s = sim(&["a"]).await;
            let rule = Rule {
                tag: None,
                when: When::Rate { rate: 0.3 },
                behaviour: crate::sim::Behaviour::fault(Fault::Error {
                    status: 500,
                    retry_after: None,
                    message: None,
                }),
            };
            AdminClient::new(&s.url()).add_rule("a", &rule).await.unwrap();
            let url = format!("{}/d/a/v1/chat/completions", s.url());
            let mut out = Vec::new();
            for i in 0..40 {
                out.push(
                    post(&url, &chat(&format!("r{i}")), None)
                        .await
                        .unwrap()
                        .status()
                        .as_u16(),
                );
            }
            s.shutdown().await;
            out
        }
        let (a, b) = (run().await, run().await);
        assert_eq!(a, b);
        let fails = a.iter().filter(|s| **s == 500).count();
        assert!((4..=20).contains(&fails), "{fails} of 40 failed at rate 0.3");
    }

    #[tokio::test]
    async fn journal_redacts_secrets_and_admin_refuses_bad_input() {
        let s = sim(&["a"]).await;
        let url = format!("{}/d/a/v1/chat/completions", s.url());
        post(
            &url,
            &chat("sec"),
            Some(("authorization", "Bearer sk-secret-xyz-12345")),
        )
        .await
        .unwrap();
        let text = AdminClient::new(&s.url()).journal_text(&tag("sec")).await.unwrap();
        assert!(text.contains("sec") && !text.contains("sk-secret-xyz-12345"), "{text}");
        let http = reqwest::Client::new();
        let cases = [
            (
                format!("{}/admin/deployments/nope/rules", s.url()),
                r#"{"behaviour":{}}"#,
                404,
            ),
            (format!("{}/admin/deployments/a/rules", s.url()), "{nope", 400),
            (
                format!("{}/admin/deployments/a/rules", s.url()),
                r#"{"behaviour":{"fault":{"kind":"explode"}}}"#,
                400,
            ),
            (
                format!("{}/admin/deployments/a/rules", s.url()),
                r#"{"when":{"from":5,"to":2},"behaviour":{}}"#,
                400,
            ),
            (
                format!("{}/admin/deployments/a/rules", s.url()),
                r#"{"behaviour":{"fault":{"kind":"error","status":200}}}"#,
                400,
            ),
            (
                format!("{}/admin/deployments/a/rules", s.url()),
                r#"{"tag":"has space","behaviour":{}}"#,
                400,
            ),
            (
                format!("{}/admin/deployments/a/rules", s.url()),
                r#"{"tag":"","behaviour":{}}"#,
                400,
            ),
        ];
        for (u, body, want) in cases {
            let r = http.post(&u).body(body).send().await.unwrap();
            assert_eq!(r.status().as_u16(), want, "{u} {body}");
            let v: Value = r.json().await.unwrap();
            assert!(v["error"]["message"].is_string(), "{v}");
            if body.contains("tag") {
                assert!(v["error"]["message"].as_str().unwrap().contains("is not a tag"), "{v}");
            }
        }
        for bad in [
            http.delete(format!("{}/admin/rules?tag=a%20b", s.url())),
            http.get(format!("{}/admin/journal?tag=a%20b", s.url())),
        ] {
            let r = bad.send().await.unwrap();
            assert_eq!(r.status(), 400);
            let v: Value = r.json().await.unwrap();
            assert!(v["error"]["message"].as_str().unwrap().contains("is not a tag"), "{v}");
        }
        let r = post(&format!("{}/d/zz/v1/chat/completions", s.url()), &chat("x"), None)
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let r = post(&url, &json!({"model": "m"}), None).await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["param"], "messages");
        s.shutdown().await;
    }

    #[tokio::test]
    async fn streams_end_with_usage_and_done_and_metrics_count() {
        let s = sim(&["default"]).await;
        let mut body = chat("st");
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let text = post(&format!("{}/v1/chat/completions", s.url()), &body, None)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        assert!(text.contains("\"usage\":{\"completion_tokens\":5"), "{text}");
        let m = reqwest::get(format!("{}/metrics", s.url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            m.contains("vllm:generation_tokens_total{deployment=\"default\",model_name=\"default\"} 5"),
            "{m}"
        );
        assert!(m.contains("vllm:time_to_first_token_seconds_bucket"), "{m}");
        s.shutdown().await;
    }
}
