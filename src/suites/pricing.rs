//! Pricing depth: the token kinds a router bills at prices of their own, and streams billed
//! from the provider's usage whatever the client asked to see. Each request is seen three
//! ways (client, upstream, router log) and billed against the team's price table, as the
//! ledger does.
//! - prompt tokens read from the provider's cache at `cache_read_input_token_cost`, plain and streamed
//! - prompt tokens written to it at `cache_creation_input_token_cost` (Anthropic), plain and streamed
//! - reasoning tokens at `output_cost_per_reasoning_token`, plain and streamed
//! - a stream whose client asked for no usage is billed from the provider's usage, per group
//! - cached tokens of a deployment without a cache-read price cost its input price
//! - a streamed legacy completion is billed from the provider's usage
//!
//! The simulator reports cached and reasoning tokens in an OpenAI reply when the request asks
//! (`sim_usage`, docs/sim.md; LiteLLM passes the parameter on), and Anthropic cache writes and
//! reads for the `cache_control` prefixes a request marks. A case asks only a group whose every
//! deployment has the price it checks, and fails if the upstream reported none of the tokens
//! it is about: a case that bills none of them checks nothing.

use std::time::Duration;

use serde_json::{Value, json};

use super::ledger::{entry, group_price_gate};
use crate::client::{RouterHeaders, shape};
use crate::config::RouterConfig;
use crate::config::pricing::Price;
use crate::config::provider::{Mode, Provider};
use crate::ledger::payload::{LoggingPayload, TokenDetails};
use crate::ledger::reconcile::{self, View};
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};
use crate::sim::request::UsageDetails;
use crate::stack::role::Role;
use crate::suites::support::SINGLE_RPM;
use crate::tag::Tag;

/// The router flushes its logging callbacks in batches: how long a payload may take.
const FLUSH: Duration = Duration::from_secs(30);

/// What the OpenAI-dialect cases ask the simulator to report: fewer cached tokens than any of
/// their prompts has, and reasoning tokens unlike the reply's word count.
const ASK: UsageDetails = UsageDetails {
    cached_tokens: 5,
    reasoning_tokens: 12,
};

/// The system prompt an Anthropic case marks cacheable (after its own marker, which makes
/// the prefix new to the provider's cache).
const SYSTEM: &str = "You are the pricing check's assistant: this long system prompt is the part of \
                      every request the provider keeps in its prompt cache.";

/// A token kind billed at a price of its own.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    CacheRead,
    CacheCreation,
    Reasoning,
}

impl Kind {
    const ALL: [Self; 3] = [Self::CacheRead, Self::CacheCreation, Self::Reasoning];

    fn name(self) -> &'static str {
        match self {
            Self::CacheRead => "cache_read",
            Self::CacheCreation => "cache_creation",
            Self::Reasoning => "reasoning",
        }
    }

    /// The price line in `model_info` / `litellm_params`.
    fn key(self) -> &'static str {
        match self {
            Self::CacheRead => "cache_read_input_token_cost",
            Self::CacheCreation => "cache_creation_input_token_cost",
            Self::Reasoning => "output_cost_per_reasoning_token",
        }
    }

    fn priced(self, p: &Price) -> bool {
        match self {
            Self::CacheRead => p.cache_read.is_some(),
            Self::CacheCreation => p.cache_creation.is_some(),
            Self::Reasoning => p.reasoning.is_some(),
        }
    }

    /// How many tokens of this kind the upstream billed.
    fn of(self, v: &View) -> u64 {
        match self {
            Self::CacheRead => v.cache_read_tokens,
            Self::CacheCreation => v.cache_creation_tokens,
            Self::Reasoning => v.reasoning_tokens,
        }
        .unwrap_or(0)
    }
}

/// How the simulator is asked for the token kinds: OpenAI's usage details, or Anthropic's
/// prompt cache (which has writes, and no reasoning count).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    /// The dialect every deployment of `group` speaks, if they all speak one the cases can ask.
    fn of(cfg: &RouterConfig, group: &str) -> Option<Self> {
        let each: Vec<Option<Self>> = cfg
            .deployments_of(group)
            .iter()
            .map(|d| match d.provider {
                Provider::OpenAi | Provider::Azure | Provider::HostedVllm => Some(Self::OpenAi),
                Provider::Anthropic => Some(Self::Anthropic),
                Provider::Other(_) => None,
            })
            .collect();
        each.first()
            .copied()
            .flatten()
            .filter(|d| each.iter().all(|e| *e == Some(*d)))
    }
}

/// Why a price line of `group` cannot be checked, when the upstream it speaks to never
/// reports tokens of that kind.
fn unreportable(group: &str, dialect: Option<Dialect>, kind: Kind) -> Option<String> {
    match (dialect, kind) {
        (None, _) => Some(format!(
            "{group}'s deployments do not all speak one dialect the simulator reports {} tokens in",
            kind.name()
        )),
        (Some(Dialect::OpenAi), Kind::CacheCreation) => Some(format!(
            "{group} speaks OpenAI's dialect, whose usage has no cache writes (its prompt cache is written \
             for free): {} is not checked",
            kind.key()
        )),
        (Some(Dialect::Anthropic), Kind::Reasoning) => Some(format!(
            "{group} speaks Anthropic's dialect, whose usage counts thinking inside output_tokens with no \
             count of its own: {} is not checked",
            kind.key()
        )),
        _ => None,
    }
}

/// How the reply comes back: whole, streamed with the usage chunk, or streamed without it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Transport {
    Plain,
    Streamed,
    StreamedWithoutUsage,
}

impl Transport {
    fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::Streamed => "streamed",
            Self::StreamedWithoutUsage => "streamed_without_include_usage",
        }
    }
}

/// What one case does to one group.
#[derive(Debug, Clone)]
struct Job {
    group: String,
    dialect: Option<Dialect>,
    /// The kinds the request asks the upstream for (all priced on every deployment).
    kinds: Vec<Kind>,
    /// The kind whose billing the case is about, if one is.
    checks: Option<Kind>,
    transport: Transport,
}

pub fn cases(plan: &Plan) -> Vec<Case> {
    let cfg = &plan.config;
    if !cfg.has_generic_logger {
        return Vec::new();
    }
    let mut out = Vec::new();
    for group in cfg.groups() {
        if cfg.mode_of(&group) != Mode::Chat {
            continue;
        }
        let gate = cfg
            .unusable(&group, SINGLE_RPM)
            .or_else(|| group_price_gate(cfg, &group));
        let dialect = Dialect::of(cfg, &group);
        let prices: Vec<Option<Price>> = cfg.deployments_of(&group).iter().map(|d| d.pricing.price()).collect();
        let mut priced = Vec::new();
        for kind in Kind::ALL {
            let with = prices
                .iter()
                .filter(|p| p.as_ref().is_some_and(|p| kind.priced(p)))
                .count();
            if with == 0 {
                continue;
            }
            if let Some(why) = unreportable(&group, dialect, kind) {
                let job = Job {
                    group: group.clone(),
                    dialect,
                    kinds: Vec::new(),
                    checks: Some(kind),
                    transport: Transport::Plain,
                };
                out.push(
                    Case::new(format!("pricing::{}::plain::{group}", kind.name()), move |c| {
                        billed_at_its_price(c, job.clone())
                    })
                    .uses(&[&group])
                    .ignore(why),
                );
                continue;
            }
            let partial = (with < prices.len()).then(|| {
                format!(
                    "only {with} of {group}'s {} deployments have {}: which one serves decides the price",
                    prices.len(),
                    kind.key()
                )
            });
            if partial.is_none() {
                priced.push(kind);
            }
            for transport in [Transport::Plain, Transport::Streamed] {
                let job = Job {
                    group: group.clone(),
                    dialect,
                    kinds: vec![kind],
                    checks: Some(kind),
                    transport,
                };
                out.push(
                    Case::new(
                        format!("pricing::{}::{}::{group}", kind.name(), transport.name()),
                        move |c| billed_at_its_price(c, job.clone()),
                    )
                    .uses(&[&group])
                    .ignore_if(gate.clone().or(partial.clone())),
                );
            }
        }
        let job = Job {
            group: group.clone(),
            dialect,
            kinds: priced,
            checks: None,
            transport: Transport::StreamedWithoutUsage,
        };
        out.push(
            Case::new(format!("pricing::stream_without_include_usage::{group}"), move |c| {
                billed_at_its_price(c, job.clone())
            })
            .uses(&[&group])
            .ignore_if(gate),
        );
    }
    out.extend(per_config(cfg));
    out.into_iter()
        .map(|c| c.needs(&[Role::Simulator, Role::LedgerSink]))
        .collect()
}

/// The cases one group per config is enough for: an OpenAI-dialect group the ledger can
/// price, with no cache-read price for the first.
fn per_config(cfg: &RouterConfig) -> Vec<Case> {
    let usable = |g: &String| {
        cfg.mode_of(g) == Mode::Chat
            && Dialect::of(cfg, g) == Some(Dialect::OpenAi)
            && cfg.unusable(g, SINGLE_RPM).is_none()
            && group_price_gate(cfg, g).is_none()
    };
    let mut out = Vec::new();
    let without = cfg.groups().into_iter().filter(|g| usable(g)).find(|g| {
        cfg.deployments_of(g)
            .iter()
            .all(|d| d.pricing.price().is_some_and(|p| p.cache_read.is_none()))
    });
    if let Some(group) = without {
        let job = Job {
            group: group.clone(),
            dialect: Some(Dialect::OpenAi),
            kinds: vec![Kind::CacheRead],
            checks: Some(Kind::CacheRead),
            transport: Transport::Plain,
        };
        out.push(
            Case::new(format!("pricing::cache_read_without_its_price::{group}"), move |c| {
                billed_at_its_price(c, job.clone())
            })
            .uses(&[&group])
            .ignore(
                "LiteLLM 1.100.5 bills the cached prompt tokens of a deployment priced without \
                 cache_read_input_token_cost at $0, not at its input price (seen on chat-primary, 2e-6 a prompt \
                 token: 11 prompt tokens, 5 of them cached, logged response_cost 0.000140 with \
                 cost_breakdown.input_cost 1.2e-05, the 6 uncached tokens alone; the table says 0.000150). \
                 generic_cost_per_token reads a missing cache-read price as 0.0, while LiteLLM's own \
                 custom-pricing helper falls back to the input price",
            ),
        );
    }
    if let Some(group) = cfg.priced_probe_group().filter(|g| usable(g)) {
        for include_usage in [true, false] {
            let g = group.clone();
            let variant = if include_usage {
                "include_usage"
            } else {
                "without_include_usage"
            };
            out.push(
                Case::new(format!("pricing::legacy_stream::{variant}::{group}"), move |c| {
                    legacy_stream(c, g.clone(), include_usage)
                })
                .uses(&[&group])
                .ignore(if include_usage {
                    "LiteLLM 1.100.5 bills a streamed /v1/completions from its own token count, not from the \
                     usage chunk the provider sent (seen on chat-primary: upstream usage 7 prompt + 16 completion \
                     tokens; the client's usage chunk and the log said 29 to 34 prompt tokens, its tokenizer's \
                     count of the prompt, and response_cost 0.000186 to 0.000196 where the table says 0.000142; \
                     stream_chunk_builder_text_completion recounts with token_counter)"
                } else {
                    "LiteLLM 1.100.5 bills a streamed /v1/completions whose client asked for no usage from its \
                     own token count (seen on chat-primary: upstream 7 prompt + 16 completion tokens, logged 29 to \
                     34 prompt tokens and response_cost 0.000186 to 0.000196 where the table says 0.000142; it \
                     asks the provider for usage on chat completions only), and sends that client a usage chunk \
                     of zeros"
                }),
            );
        }
    }
    out
}

/// One priced request seen from all three sides.
struct Seen {
    request: Tag,
    client: View,
    upstream: View,
    router: View,
    payload: LoggingPayload,
}

/// The chat body of one request: its own tag in the prompt and as trace id, the case's tag
/// as tenant, and what it asks the upstream for.
fn body(c: &Ctx, model: &str, request: &Tag, job: &Job, prefix: Option<&Tag>, prompt: &str) -> Value {
    let question = json!({"role": "user", "content": format!("{} {prompt}", request.marker())});
    let messages = match prefix {
        Some(p) => json!([
            {"role": "system", "content": [{"type": "text", "text": format!("{} {SYSTEM}", p.marker()),
                                            "cache_control": {"type": "ephemeral"}}]},
            question,
        ]),
        None => json!([question]),
    };
    let mut b = json!({
        "model": model,
        "messages": messages,
        "max_tokens": 16,
        "metadata": {"trace_id": request, "tags": [format!("case:{}", c.case)]},
    });
    if job.dialect == Some(Dialect::OpenAi) {
        let ask = UsageDetails {
            cached_tokens: if job.kinds.contains(&Kind::CacheRead) {
                ASK.cached_tokens
            } else {
                0
            },
            reasoning_tokens: if job.kinds.contains(&Kind::Reasoning) {
                ASK.reasoning_tokens
            } else {
                0
            },
        };
        if ask != UsageDetails::default() {
            b["sim_usage"] = json!(ask);
        }
    }
    if job.transport == Transport::Streamed {
        b["stream_options"] = json!({"include_usage": true});
    }
    c.tag().stamp(&mut b);
    b
}

/// Sends `body` as `job` says and returns what the client saw.
async fn send(c: &Ctx, body: &Value, transport: Transport) -> anyhow::Result<View> {
    if transport == Transport::Plain {
        let r = c.router.chat(body).await?;
        r.expect_status(200)?;
        let v = r.json_or_err()?;
        shape::chat_completion(v)?;
        let (p, comp, _) = shape::usage(&v["usage"])?;
        return Ok(View {
            deployment: r.router().model_id,
            prompt_tokens: Some(p),
            completion_tokens: Some(comp),
            cost: r.router().response_cost,
            ..View::default()
        }
        .with_details(TokenDetails::of_usage(&v["usage"])));
    }
    let s = c.router.chat_stream(body).await?;
    s.expect_ok()?;
    let h = RouterHeaders::from(&s.headers);
    let mut view = View {
        deployment: h.model_id,
        // LiteLLM sends its cost headers before the stream ends: 0 is "not known yet".
        cost: h.response_cost.filter(|c| *c > 0.0),
        ..View::default()
    };
    match (transport, s.usage()) {
        (Transport::Streamed, None) => anyhow::bail!("a stream with include_usage carried no usage chunk"),
        (Transport::Streamed, Some(u)) => {
            let (p, comp, _) = shape::usage(u)?;
            view.prompt_tokens = Some(p);
            view.completion_tokens = Some(comp);
            view = view.with_details(TokenDetails::of_usage(u));
        }
        (_, Some(u)) => tracing::info!(usage = %u, "the client got a usage chunk it did not ask for"),
        (_, None) => {}
    }
    Ok(view)
}

/// The upstream's bill of `request`: the journal's counts, and the usage details the
/// simulator reported by its rule for what the request asked.
async fn upstream(c: &Ctx, request: &Tag, job: &Job) -> anyhow::Result<View> {
    let served = super::support::served_call(c, request).await?;
    let mut v = View {
        deployment: c.config.by_sim(&served.deployment).map(|d| d.id.clone()),
        prompt_tokens: Some(served.prompt_tokens),
        completion_tokens: Some(served.completion_tokens),
        cache_read_tokens: Some(served.cache_read_input_tokens),
        cache_creation_tokens: Some(served.cache_creation_input_tokens),
        reasoning_tokens: Some(0),
        cost: None,
    };
    // The journal keeps the Anthropic prompt cache's counts; OpenAI usage details are the
    // simulator's rule applied to what the request asked.
    if job.dialect == Some(Dialect::OpenAi) {
        if job.kinds.contains(&Kind::CacheRead) {
            v.cache_read_tokens = Some(ASK.cached(served.prompt_tokens));
        }
        if job.kinds.contains(&Kind::Reasoning) {
            v.reasoning_tokens = Some(ASK.reasoning_tokens);
        }
    }
    Ok(v)
}

/// Sends one request and gathers its three views; records it in the run's ledger.
async fn bill(c: &Ctx, model: &str, job: &Job, prefix: Option<&Tag>, prompt: &str) -> anyhow::Result<Seen> {
    let request = Tag::fresh("req-", 6);
    let b = body(c, model, &request, job, prefix, prompt);
    let client = send(c, &b, job.transport).await?;
    let upstream = upstream(c, &request, job).await?;
    let payload = c
        .sink()?
        .wait_for_where(&request, LoggingPayload::is_success, 1, FLUSH)
        .await?
        .swap_remove(0);
    let router = View::from_payload(&payload);
    c.bill(entry(c, &request, c.tag(), &upstream, router.cost));
    Ok(Seen {
        request,
        client,
        upstream,
        router,
        payload,
    })
}

/// Fails with every disagreement among the three views and with the price table, quoting
/// how the router broke its bill down.
fn reconciled(c: &Ctx, s: &Seen) -> anyhow::Result<()> {
    let d = reconcile::reconcile(s.request.as_str(), &s.client, &s.upstream, &s.router, &c.prices);
    if !d.is_empty() {
        let lines: Vec<String> = d.iter().map(ToString::to_string).collect();
        anyhow::bail!(
            "pricing sources disagree:\n  {}\nthe router's cost_breakdown: {}\nits usage: {}",
            lines.join("\n  "),
            s.payload.raw.get("cost_breakdown").unwrap_or(&Value::Null),
            s.payload.raw.pointer("/metadata/usage_object").unwrap_or(&Value::Null)
        );
    }
    Ok(())
}

/// One request billed for a token kind priced apart (or, without one, a stream whose
/// client asked for no usage): the router's bill must be the table's for the upstream's
/// tokens, and the upstream must have billed some of that kind.
async fn billed_at_its_price(c: Ctx, job: Job) -> anyhow::Result<()> {
    let anthropic_cache = job.dialect == Some(Dialect::Anthropic) && !job.kinds.is_empty();
    let prefix = anthropic_cache.then(|| Tag::fresh("prefix-", 6));
    let mut model = job.group.clone();
    if job.checks == Some(Kind::CacheRead) && anthropic_cache {
        // A prefix is read from the cache of the deployment that wrote it: the reading
        // request asks for that deployment by id.
        let write = Job {
            transport: Transport::Plain,
            ..job.clone()
        };
        let first = bill(&c, &model, &write, prefix.as_ref(), "write the cache").await?;
        model =
            first.upstream.deployment.clone().ok_or_else(|| {
                anyhow::anyhow!("request {}: no deployment of {} served it", first.request, job.group)
            })?;
    }
    let seen = bill(
        &c,
        &model,
        &job,
        prefix.as_ref(),
        "what does this cost with all its parts",
    )
    .await?;
    reconciled(&c, &seen)?;
    if let Some(kind) = job.checks {
        anyhow::ensure!(
            kind.of(&seen.upstream) > 0,
            "request {}: the upstream billed no {} tokens, so this case checked nothing of {} \
             (did the router pass the request's {} on?)",
            seen.request,
            kind.name(),
            kind.key(),
            match job.dialect {
                Some(Dialect::Anthropic) => "cache_control",
                _ => "sim_usage",
            }
        );
    }
    if let Some(cost) = seen.router.cost {
        c.observe("cost_usd", cost);
    }
    Ok(())
}

/// The last non-null `usage` among the events of an SSE stream, read as an event stream is
/// (`data:` with or without its space, any line end).
fn stream_usage(body: &[u8]) -> Option<Value> {
    crate::client::sse::Parser::default()
        .feed(body)
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v.get("usage").filter(|u| !u.is_null()).cloned())
        .next_back()
}

/// A streamed legacy completion: billed from the provider's usage like a chat stream.
async fn legacy_stream(c: Ctx, group: String, include_usage: bool) -> anyhow::Result<()> {
    let request = Tag::fresh("req-", 6);
    let mut b = json!({
        "model": group,
        "prompt": format!("{} {} complete this streamed legacy prompt", request.marker(), c.tag().marker()),
        "max_tokens": 16,
        "stream": true,
        "user": c.tag(),
        "metadata": {"trace_id": request, "tags": [format!("case:{}", c.case)]},
    });
    if include_usage {
        b["stream_options"] = json!({"include_usage": true});
    }
    let r = c.router.post("/v1/completions", &b).await?;
    r.expect_status(200)?;
    let usage = stream_usage(r.text.as_bytes());
    let mut client = View {
        deployment: r.router().model_id,
        ..View::default()
    };
    match (include_usage, &usage) {
        (true, None) => anyhow::bail!("a stream with include_usage carried no usage chunk"),
        (true, Some(u)) => {
            let (p, comp, _) = shape::usage(u)?;
            client.prompt_tokens = Some(p);
            client.completion_tokens = Some(comp);
        }
        (false, Some(u)) => tracing::info!(usage = %u, "the client got a usage chunk it did not ask for"),
        (false, None) => {}
    }
    let job = Job {
        group: group.clone(),
        dialect: Some(Dialect::OpenAi),
        kinds: Vec::new(),
        checks: None,
        transport: Transport::StreamedWithoutUsage,
    };
    let upstream = upstream(&c, &request, &job).await?;
    let payload = c
        .sink()?
        .wait_for_where(&request, LoggingPayload::is_success, 1, FLUSH)
        .await?
        .swap_remove(0);
    let router = View::from_payload(&payload);
    c.bill(entry(&c, &request, c.tag(), &upstream, router.cost));
    reconciled(
        &c,
        &Seen {
            request,
            client,
            upstream,
            router,
            payload,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The old scan took only `data: ` lines split by `\n`: a `data:{…}` (the space is
    /// optional) or a stream with CR line ends gave no usage, and the case failed saying the
    /// stream carried none.
    #[test]
    fn usage_is_found_however_the_events_are_written() {
        let u = |n: u64| json!({"prompt_tokens": n, "completion_tokens": 2, "total_tokens": n + 2});
        let body = format!(
            "data: {{\"choices\":[],\"usage\":null}}\r\rdata:{{\"choices\":[],\"usage\":{}}}\r\rdata: [DONE]\r\r",
            u(5)
        );
        assert_eq!(stream_usage(body.as_bytes()), Some(u(5)));
        let crlf = format!("data: {{\"usage\":{}}}\r\n\r\ndata: {{\"usage\":{}}}\n\n", u(1), u(7));
        assert_eq!(stream_usage(crlf.as_bytes()), Some(u(7)));
        assert_eq!(stream_usage(b"data: {\"choices\":[]}\n\ndata: [DONE]\n\n"), None);
    }

    fn plan(yaml: &str) -> Plan {
        let m = crate::stack::manifest::Manifest::builtin().unwrap();
        Plan {
            config: RouterConfig::parse("r.yaml", yaml).unwrap(),
            manifest: m,
            available: vec![Role::Router, Role::Simulator, Role::LedgerSink],
            require_all: false,
            embedded: true,
        }
    }

    fn names(cases: &[Case]) -> Vec<(String, bool)> {
        cases.iter().map(|c| (c.name.clone(), c.ignored.is_none())).collect()
    }

    #[test]
    fn cases_follow_the_prices_each_dialect_can_show() {
        let p = plan(
            "model_list:\n\
             - {model_name: o, litellm_params: {model: openai/x, api_base: '${sim.url}/d/o/v1'}, model_info: {id: o1, input_cost_per_token: 1, output_cost_per_token: 2, cache_read_input_token_cost: 0.5, cache_creation_input_token_cost: 3}}\n\
             - {model_name: a, litellm_params: {model: anthropic/y, api_base: '${sim.url}/d/a'}, model_info: {id: a1, input_cost_per_token: 1, output_cost_per_token: 2, cache_creation_input_token_cost: 3, output_cost_per_reasoning_token: 4}}\n\
             - {model_name: m, litellm_params: {model: openai/x, api_base: '${sim.url}/d/m1/v1'}, model_info: {id: m1, input_cost_per_token: 1, output_cost_per_token: 2, output_cost_per_reasoning_token: 4}}\n\
             - {model_name: m, litellm_params: {model: openai/x, api_base: '${sim.url}/d/m2/v1'}, model_info: {id: m2, input_cost_per_token: 1, output_cost_per_token: 2}}\n\
             litellm_settings: {callbacks: [generic_api]}\n",
        );
        let got = names(&cases(&p));
        let want: Vec<(String, bool)> = [
            // OpenAI has no cache writes, Anthropic no reasoning count: said, not checked.
            ("pricing::cache_read::plain::o", true),
            ("pricing::cache_read::streamed::o", true),
            ("pricing::cache_creation::plain::o", false),
            ("pricing::stream_without_include_usage::o", true),
            ("pricing::cache_creation::plain::a", true),
            ("pricing::cache_creation::streamed::a", true),
            ("pricing::reasoning::plain::a", false),
            ("pricing::stream_without_include_usage::a", true),
            // One of two deployments priced: which one serves decides the price.
            ("pricing::reasoning::plain::m", false),
            ("pricing::reasoning::streamed::m", false),
            ("pricing::stream_without_include_usage::m", true),
            ("pricing::cache_read_without_its_price::m", false),
            ("pricing::legacy_stream::include_usage::o", false),
            ("pricing::legacy_stream::without_include_usage::o", false),
        ]
        .into_iter()
        .map(|(n, run)| (n.to_owned(), run))
        .collect();
        assert_eq!(got, want);
        assert!(
            cases(&p)[8]
                .ignored
                .as_deref()
                .is_some_and(|r| r.contains("only 1 of m's 2 deployments have output_cost_per_reasoning_token")),
        );
        // Without the router's logging callback there is no bill to check.
        assert!(cases(&plan("model_list: []\n")).is_empty());
    }

    #[test]
    fn the_default_stack_checks_every_price_line_it_has() {
        let m = crate::stack::manifest::Manifest::builtin().unwrap();
        let cfg = RouterConfig::from_document(&m.router_config.doc).unwrap();
        let p = Plan {
            config: cfg,
            manifest: m,
            available: vec![Role::Router, Role::Simulator, Role::LedgerSink],
            require_all: false,
            embedded: true,
        };
        let run: Vec<String> = cases(&p)
            .into_iter()
            .filter(|c| c.ignored.is_none())
            .map(|c| c.name)
            .collect();
        for name in [
            "pricing::cache_read::plain::chat-reasoning",
            "pricing::reasoning::streamed::chat-reasoning",
            "pricing::cache_read::streamed::claude-cached",
            "pricing::cache_creation::plain::claude-cached",
            "pricing::stream_without_include_usage::chat-primary",
            "pricing::stream_without_include_usage::claude-cached",
        ] {
            assert!(run.iter().any(|n| n == name), "{name} not among {run:?}");
        }
    }
}
