//! Fallbacks and resilience, derived from the router's own config. For every fallback chain:
//! - primary times out → the group LiteLLM falls back to answers, each attempt given up at
//!   the primary's effective timeout
//! - primary rate-limited (429 + Retry-After) → retries as configured, then fallback
//! - primary 500 / 503 / connection reset / malformed JSON → fallback
//! - the primary and its first fallback fail → LiteLLM walks on (the first fallback's own
//!   chain first: chains of chains), to the group the config says
//! - every group LiteLLM will try fails → an OpenAI-shaped error, every one of them tried in
//!   LiteLLM's order, in bounded time
//! - metadata survives the fallback (tag upstream, trace id and tenant in the router's log)
//! - latency cost of the fallback path (median of several requests), reported
//!
//! and per context-window / content-policy chain, that error → the group its list names.
//! Cooldowns (a failing deployment skipped for `cooldown_time`, then tried again; shared
//! through Redis between two routers) for groups LiteLLM can cool down, without assuming
//! which deployment the routing strategy picks.
//!
//! The expected path is `config::fallback`'s replay of LiteLLM's walk, never "the next group
//! in the list". Faults are simulator rules scoped to the case's tag; the group locks keep
//! the cooldowns they cause from reaching cases that send the same groups traffic.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::{
    CHAIN_RPM, LONG_WAIT_S, all_calls_to, break_group, calls, group_path, ids_of, now_ms, path, sims_of, trace_of,
};
use crate::client::shape;
use crate::config::{ChainKind, RouterConfig};
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, CaseFuture, Plan};
use crate::sim::{Fault, JournalEntry};
use crate::stack::role::Role;
use crate::tag::Tag;

/// Slack on top of the configured timeouts: router overhead and scheduling on a busy CI box.
const MARGIN: Duration = Duration::from_secs(3);

/// Slack per attempt on top of a deployment's timeout: the router's backoff before a retry
/// and scheduling on a loaded 2-core box.
const ATTEMPT_MARGIN: Duration = Duration::from_secs(3);

/// What one chain's cases need to know, derived once.
#[derive(Clone)]
struct Route {
    primary: String,
    /// The group LiteLLM serves from when only the primary fails.
    served: String,
    /// Fallback hops LiteLLM reports for that (order levels of the primary count too).
    hops: usize,
}

type Run = fn(Ctx, Route) -> CaseFuture;

pub fn cases(plan: &Plan) -> Vec<Case> {
    let cfg = &plan.config;
    let mut out = Vec::new();
    let mut seen: Vec<(ChainKind, String)> = Vec::new();
    for chain in &cfg.chains {
        // LiteLLM uses the first entry for a group; later ones are dead config.
        if seen.contains(&(chain.kind, chain.primary().to_owned())) {
            continue;
        }
        seen.push((chain.kind, chain.primary().to_owned()));
        let base = match chain.kind {
            ChainKind::General => format!("fallbacks::{}", chain.name()),
            ChainKind::ContextWindow => format!("fallbacks::context_window::{}", chain.name()),
            ChainKind::ContentPolicy => format!("fallbacks::content_policy::{}", chain.name()),
        };
        let primary = chain.primary().to_owned();
        let walk = cfg.walk(&primary, std::slice::from_ref(&primary), chain.kind);
        let served = walk.served_by.clone().unwrap_or_default();
        let route = Route {
            primary: primary.clone(),
            served: served.clone(),
            hops: walk.steps.len().saturating_sub(1),
        };
        let gate = cfg
            .unusable(&primary, CHAIN_RPM)
            .or_else(|| cfg.unusable(&served, CHAIN_RPM))
            .or_else(|| {
                walk.served_by
                    .is_none()
                    .then(|| format!("LiteLLM would not fall back from {primary} at all (nothing left to try)"))
            });
        // ::rate_limit waits the Retry-After: 1 it sends before each retry; ::latency_impact
        // sends five requests, one at a time, each retried (a backoff of some 0.3 s on the
        // default stack) and fallen back.
        let retries = f64::from(cfg.retries(&primary, "InternalServerError"));
        let cost = |what: &str| match what {
            "rate_limit" => Some(f64::from(cfg.retries(&primary, "RateLimitError")) + 0.5),
            "latency_impact" => Some(5.0 * (0.3 * retries + 0.3)),
            _ => None,
        };
        let mut add = |what: &str, f: Run| {
            let r = route.clone();
            let mut case = Case::new(format!("{base}::{what}"), move |c| f(c, r.clone()))
                .needs(&[Role::Simulator])
                .breaks(&[&primary])
                .uses(&[&served])
                .ignore_if(gate.clone());
            if let Some(s) = cost(what) {
                case = case.cost(s);
            }
            out.push(case);
        };
        match chain.kind {
            ChainKind::General => {
                add("rate_limit", |c, r| Box::pin(rate_limit(c, r)));
                add("server_error_500", |c, r| {
                    Box::pin(falls_back_on(c, r, Fault::status(500)))
                });
                add("unavailable_503", |c, r| {
                    Box::pin(falls_back_on(c, r, Fault::status(503)))
                });
                add("connection_reset", |c, r| Box::pin(falls_back_on(c, r, Fault::Reset)));
                add("malformed_json", |c, r| Box::pin(falls_back_on(c, r, Fault::Malformed)));
                add("metadata_preserved", |c, r| Box::pin(metadata_preserved(c, r)));
                add("latency_impact", |c, r| Box::pin(latency_impact(c, r)));
            }
            ChainKind::ContextWindow => {
                add("context_length", |c, r| {
                    Box::pin(falls_back_on(c, r, Fault::ContextLength))
                });
            }
            ChainKind::ContentPolicy => {
                add("content_policy", |c, r| {
                    Box::pin(falls_back_on(c, r, Fault::ContentPolicy))
                });
            }
        }
        if chain.kind != ChainKind::General {
            continue;
        }
        out.push(timeout_case(cfg, &base, &route, gate.clone()));
        out.push(
            Case::new(format!("{base}::rate_limit::retry_header_agrees"), |_| async {
                anyhow::bail!("registered as a known gap: see the ignore reason")
            })
            .needs(&[Role::Simulator])
            .ignore(
                "LiteLLM 1.100.5 sends x-litellm-attempted-retries: 0 however often it retried \
                 (seen: primary 429, 429, then backup; header 0); the retries themselves are \
                 checked against the journal by ::rate_limit",
            ),
        );
        out.push(exhausted_case(cfg, &base, &primary));
        if let Some(c) = second_hop_case(cfg, &base, &primary, &served) {
            out.push(c);
        }
    }
    for group in cfg.groups() {
        out.extend(cooldown_cases(plan, &group));
    }
    out
}

/// The timeout case, opt-in when the primary's timeout makes it long.
fn timeout_case(cfg: &RouterConfig, base: &str, route: &Route, gate: Option<String>) -> Case {
    let primary = &route.primary;
    let t = cfg
        .deployments_of(primary)
        .iter()
        .map(|d| d.timeout)
        .max_by(|a, b| a.seconds.total_cmp(&b.seconds));
    let attempts = cfg.retries(primary, "TimeoutError") + 1;
    let name = format!("{base}::timeout");
    let long = t.filter(|t| t.seconds * f64::from(attempts) > LONG_WAIT_S).map(|t| {
        format!(
            "{primary} gives each attempt {t}, and LiteLLM makes {attempts}: about {:.0}s before it falls back; \
             run it with `gauntlet --ignored --exact {name}`",
            t.seconds * f64::from(attempts)
        )
    });
    let r = route.clone();
    Case::new(name, move |c| timeout(c, r.clone()))
        .needs(&[Role::Simulator])
        .breaks(&[primary])
        .uses(&[&route.served])
        .cost(t.map_or(0.0, |t| t.seconds) * f64::from(attempts) + 1.0)
        .ignore_if(gate.or(long))
}

/// Every group LiteLLM tries from the primary fails.
fn exhausted_case(cfg: &RouterConfig, base: &str, primary: &str) -> Case {
    let closure = cfg.closure(primary, ChainKind::General);
    let gate = closure.iter().find_map(|g| cfg.unusable(g, CHAIN_RPM));
    let p = primary.to_owned();
    Case::new(format!("{base}::exhausted"), move |c| exhausted(c, p.clone()))
        .needs(&[Role::Simulator])
        .breaks(&closure)
        .ignore_if(gate)
}

/// The primary and the group it falls back to both fail: LiteLLM goes on to where the
/// config's chains of chains say, not only to the next group of the primary's own list.
fn second_hop_case(cfg: &RouterConfig, base: &str, primary: &str, served: &str) -> Option<Case> {
    let broken = vec![primary.to_owned(), served.to_owned()];
    let walk = cfg.walk(primary, &broken, ChainKind::General);
    let next = walk.served_by.clone()?;
    let gate = broken
        .iter()
        .chain(std::iter::once(&next))
        .find_map(|g| cfg.unusable(g, CHAIN_RPM));
    let expected = walk.groups();
    Some(
        Case::new(format!("{base}::second_hop"), move |c| {
            second_hop(c, broken.clone(), next.clone(), expected.clone())
        })
        .needs(&[Role::Simulator])
        .breaks(&[primary, served])
        .uses(&[walk.served_by.clone().unwrap_or_default()])
        .ignore_if(gate),
    )
}

fn cooldown_cases(plan: &Plan, group: &str) -> Vec<Case> {
    let cfg = &plan.config;
    let deps = cfg.deployments_of(group);
    if deps.len() < 2 || !cfg.can_cool_down(group) {
        return Vec::new();
    }
    let longest = deps.iter().map(|d| d.cooldown_s).fold(0.0, f64::max);
    let name = format!("fallbacks::cooldown::{group}");
    let long = (longest > LONG_WAIT_S)
        .then(|| format!("{group} cools down for {longest}s; run it with `gauntlet --ignored --exact {name}`"));
    let gate = cfg.unusable(group, CHAIN_RPM).or(long);
    let g = group.to_owned();
    let mut out = vec![
        Case::new(name.clone(), move |c| cooldown(c, g.clone(), false))
            .needs(&[Role::Simulator])
            .owns(&[group])
            .cost(longest + 1.0)
            .ignore_if(gate.clone()),
    ];
    if plan.manifest.service_with(Role::SecondRouter).is_some() {
        let g = group.to_owned();
        let expiry = cfg.redis_read_interval_s;
        let unseen = (longest <= expiry + 1.0).then(|| {
            format!(
                "{group} cools down for {longest}s, while another LiteLLM reads a cooldown from Redis at most \
                 every {expiry}s (default_redis_batch_cache_expiry; seen: a second router went on calling a deployment \
                 router cooled down): a second router may never see so short a cooldown"
            )
        });
        out.push(
            Case::new(format!("{name}::shared_via_redis"), move |c| {
                cooldown(c, g.clone(), true)
            })
            .needs(&[Role::Simulator, Role::SecondRouter])
            .owns(&[group])
            .cost(longest + expiry + 1.0)
            .ignore_if(gate.or(unseen)),
        );
    }
    out
}

/// Asserts the request was served by the group LiteLLM falls back to, after the primary
/// was tried first and given up.
async fn assert_fell_back(
    c: &Ctx,
    r: &Route,
    tag: &Tag,
    reply: &crate::client::Reply,
) -> anyhow::Result<Vec<JournalEntry>> {
    let journal = calls(c, tag).await?;
    anyhow::ensure!(
        reply.status == 200,
        "{} answered {} (expected a fallback to {}): {}; upstream calls: {}",
        reply.url,
        reply.status,
        r.served,
        crate::client::excerpt(&reply.text),
        path(&journal)
    );
    shape::chat_completion(reply.json_or_err()?)?;
    let served = reply.router().model_id;
    let backup_ids = ids_of(&c.config, &r.served);
    anyhow::ensure!(
        served.as_ref().is_some_and(|id| backup_ids.contains(id)),
        "served by {served:?}, expected a deployment of {} {backup_ids:?}; upstream calls: {}",
        r.served,
        path(&journal)
    );
    let p_sims = sims_of(&c.config, &r.primary);
    let b_sims = sims_of(&c.config, &r.served);
    let first = journal
        .first()
        .ok_or_else(|| anyhow::anyhow!("the simulator saw no call carrying {tag}"))?;
    anyhow::ensure!(
        p_sims.contains(&first.deployment),
        "the router did not try {} first: {}",
        r.primary,
        path(&journal)
    );
    let last = journal.last().expect("non-empty");
    anyhow::ensure!(
        b_sims.contains(&last.deployment) && last.outcome.is_ok(),
        "the last upstream call was not a successful {} call: {}",
        r.served,
        path(&journal)
    );
    let last_primary = journal
        .iter()
        .rposition(|e| p_sims.contains(&e.deployment))
        .unwrap_or(0);
    let first_backup = journal.iter().position(|e| b_sims.contains(&e.deployment)).unwrap_or(0);
    anyhow::ensure!(
        last_primary < first_backup,
        "{} was called before {} was given up: {}",
        r.served,
        r.primary,
        path(&journal)
    );
    if let Some(n) = reply.router().attempted_fallbacks {
        anyhow::ensure!(
            n as usize == r.hops,
            "x-litellm-attempted-fallbacks is {n}, expected {} (the hops of LiteLLM's walk); calls: {}",
            r.hops,
            path(&journal)
        );
    }
    tracing::info!(calls = %path(&journal), latency_ms = reply.latency.as_millis() as u64, "fell back");
    Ok(journal)
}

async fn falls_back_on(c: Ctx, r: Route, fault: Fault) -> anyhow::Result<()> {
    let tag = c.tag().to_owned();
    break_group(&c, &r.primary, &tag, fault.clone()).await?;
    let mut body = c.chat_body(&r.primary, &tag, "fallback check");
    if matches!(fault, Fault::ContextLength) {
        body["messages"][0]["content"] = Value::String(format!("[{tag}] {}", "long ".repeat(200)));
    }
    let reply = c.router.chat(&body).await?;
    assert_fell_back(&c, &r, &tag, &reply).await?;
    Ok(())
}

async fn timeout(c: Ctx, r: Route) -> anyhow::Result<()> {
    let tag = c.tag().to_owned();
    let primary = &r.primary;
    let t = c
        .config
        .deployments_of(primary)
        .iter()
        .map(|d| d.timeout.seconds)
        .fold(0.0, f64::max);
    let attempts = c.config.retries(primary, "TimeoutError") + 1;
    break_group(&c, primary, &tag, Fault::Hang).await?;
    // The client waits well past what the assertions allow, so a slow fallback is reported
    // with its evidence rather than as a client timeout.
    let bound = (Duration::from_secs_f64(t) + ATTEMPT_MARGIN) * attempts * 2 + Duration::from_secs(30);
    let reply = c
        .router
        .post_with(
            "/v1/chat/completions",
            &c.chat_body(primary, &tag, "timeout check"),
            bound,
        )
        .await?;
    let journal = assert_fell_back(&c, &r, &tag, &reply).await?;
    // Each hanging attempt must be given up at the deployment's timeout: the next upstream
    // call starts no sooner than the timeout and no later than the timeout plus the margin
    // (the router's retry backoff, ~1.2 s seen, and scheduling on a loaded 2-core box).
    let p_sims = sims_of(&c.config, primary);
    let p_calls = journal.iter().filter(|e| p_sims.contains(&e.deployment)).count();
    for pair in journal.windows(2).filter(|w| p_sims.contains(&w[0].deployment)) {
        let gap = Duration::from_millis(pair[1].time_ms.saturating_sub(pair[0].time_ms));
        anyhow::ensure!(
            gap.as_secs_f64() >= t - 0.2 && gap <= Duration::from_secs_f64(t) + ATTEMPT_MARGIN,
            "a hanging {primary} call was given up after {:.1}s, not at its {t}s timeout (+ {}s margin): {}",
            gap.as_secs_f64(),
            ATTEMPT_MARGIN.as_secs(),
            path(&journal)
        );
    }
    let bound = (Duration::from_secs_f64(t) + ATTEMPT_MARGIN) * p_calls as u32 + MARGIN;
    anyhow::ensure!(
        reply.latency <= bound,
        "fallback after a hang took {:.1}s, more than {p_calls} × (timeout {t}s + {}s) + {}s",
        reply.latency.as_secs_f64(),
        ATTEMPT_MARGIN.as_secs(),
        MARGIN.as_secs()
    );
    c.observe("timeout_fallback_latency_s", reply.latency.as_secs_f64());
    Ok(())
}

async fn rate_limit(c: Ctx, r: Route) -> anyhow::Result<()> {
    let tag = c.tag().to_owned();
    let primary = &r.primary;
    let fault = Fault::Error {
        status: 429,
        retry_after: Some(1),
        message: None,
    };
    break_group(&c, primary, &tag, fault).await?;
    let reply = c.router.chat(&c.chat_body(primary, &tag, "rate limit check")).await?;
    let journal = assert_fell_back(&c, &r, &tag, &reply).await?;
    let p_sims = sims_of(&c.config, primary);
    let p_calls = journal.iter().filter(|e| p_sims.contains(&e.deployment)).count() as u32;
    anyhow::ensure!(
        journal
            .iter()
            .filter(|e| p_sims.contains(&e.deployment))
            .all(|e| e.outcome.status() == Some(429)),
        "the primary's calls were not all 429s: {}",
        path(&journal)
    );
    let configured = c.config.retries(primary, "RateLimitError") + 1;
    if c.config.exact_attempts(primary) {
        // Retries as configured: the retries for rate limits, then the fallback.
        anyhow::ensure!(
            p_calls == configured,
            "{primary} was called {p_calls} times, expected its retries for rate limits + 1 = {configured}: {}",
            path(&journal)
        );
    } else {
        // A 429 cools a deployment of a load-balanced group down at once, after which
        // LiteLLM stops retrying the group: anywhere from one call to the configured count.
        anyhow::ensure!(
            (1..=configured).contains(&p_calls),
            "{primary} was called {p_calls} times, expected 1 to {configured} (retries for rate limits + 1, \
             fewer once its deployments cool down): {}",
            path(&journal)
        );
    }
    Ok(())
}

async fn exhausted(c: Ctx, primary: String) -> anyhow::Result<()> {
    let tag = c.tag().to_owned();
    let walk = c.config.walk(&primary, &c.config.groups(), ChainKind::General);
    let expected = walk.groups();
    for g in &expected {
        break_group(&c, g, &tag, Fault::status(500)).await?;
    }
    let attempts: u32 = expected
        .iter()
        .map(|g| c.config.retries(g, "InternalServerError") + 1)
        .sum();
    // LiteLLM backs off between retries of a lone deployment (up to seconds each) and may
    // cool a deployment down mid-walk: the bound is generous, the time taken is reported.
    let budget = Duration::from_secs(15) + Duration::from_secs(5) * attempts;
    let start = Instant::now();
    let reply = c
        .router
        .post_with(
            "/v1/chat/completions",
            &c.chat_body(&primary, &tag, "exhaustion check"),
            budget,
        )
        .await?;
    let took = start.elapsed();
    let journal = calls(&c, &tag).await?;
    anyhow::ensure!(
        reply.status >= 500,
        "every group LiteLLM walks from {primary} ({}) failed with 500 but the client got {}: {}; upstream calls: {}",
        expected.join(" → "),
        reply.status,
        crate::client::excerpt(&reply.text),
        path(&journal)
    );
    let msg = shape::error_body(reply.json_or_err()?)?;
    let seen = group_path(&c.config, &journal);
    anyhow::ensure!(
        seen == expected,
        "LiteLLM tried {} — the config's chains (max_fallbacks {}) say {}; upstream calls: {}",
        seen.join(" → "),
        c.config.fallbacks.max_fallbacks,
        expected.join(" → "),
        path(&journal)
    );
    anyhow::ensure!(
        journal.iter().all(|e| !e.outcome.is_ok()),
        "an upstream call succeeded yet the client got an error: {}",
        path(&journal)
    );
    c.observe("exhausted_after_s", took.as_secs_f64());
    tracing::info!(status = reply.status, took_ms = took.as_millis() as u64, message = %msg.lines().next().unwrap_or(""), calls = %path(&journal), "exhausted");
    Ok(())
}

async fn second_hop(c: Ctx, broken: Vec<String>, next: String, expected: Vec<String>) -> anyhow::Result<()> {
    let tag = c.tag().to_owned();
    for g in &broken {
        break_group(&c, g, &tag, Fault::status(500)).await?;
    }
    let reply = c.router.chat(&c.chat_body(&broken[0], &tag, "second hop")).await?;
    let journal = calls(&c, &tag).await?;
    reply
        .expect_status(200)
        .map_err(|e| anyhow::anyhow!("{e}; upstream calls: {}", path(&journal)))?;
    let served = reply.router().model_id.unwrap_or_default();
    anyhow::ensure!(
        ids_of(&c.config, &next).contains(&served),
        "served by {served:?}; with {} failing, the config's chains lead to {next} ({}); upstream calls: {}",
        broken.join(" and "),
        expected.join(" → "),
        path(&journal)
    );
    let seen = group_path(&c.config, &journal);
    anyhow::ensure!(
        seen == expected,
        "LiteLLM tried {}, the config's chains say {}: {}",
        seen.join(" → "),
        expected.join(" → "),
        path(&journal)
    );
    Ok(())
}

async fn metadata_preserved(c: Ctx, r: Route) -> anyhow::Result<()> {
    let tag = c.tag().to_owned();
    break_group(&c, &r.primary, &tag, Fault::status(500)).await?;
    let body = c.chat_body(&r.primary, &tag, "metadata through fallback");
    let trace_id = trace_of(&body)?;
    let reply = c.router.chat(&body).await?;
    let journal = assert_fell_back(&c, &r, &tag, &reply).await?;
    let served = journal.last().expect("non-empty");
    anyhow::ensure!(
        served.tags.contains(&tag),
        "the backup upstream got a prompt without the client's tag: {:?}",
        served.prompt_excerpt
    );
    if let Ok(sink) = c.sink() {
        let records = sink
            .wait_for_where(&trace_id, |p| p.is_success(), 1, Duration::from_secs(30))
            .await?;
        let rec = &records[0];
        anyhow::ensure!(
            rec.tenant.as_deref() == Some(tag.as_str()),
            "the router's logging payload of the served request has tenant {:?}, not {tag}",
            rec.tenant
        );
        anyhow::ensure!(
            rec.end_user.as_deref() == Some(tag.as_str()),
            "the served request was attributed to end_user {:?}, not {tag}",
            rec.end_user
        );
        anyhow::ensure!(
            rec.model_id
                .as_ref()
                .is_some_and(|m| ids_of(&c.config, &r.served).contains(m)),
            "the logging payload names deployment {:?}, not the backup that served",
            rec.model_id
        );
    }
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The latency a fallback adds: the median of N requests through the failing primary against
/// the median of N straight to the group it falls back to, one request at a time. Sent
/// together they would measure LiteLLM's queue instead (seen: 1.6-1.9 s added with ten at
/// once, 0.5 s one at a time, on the same stack).
async fn latency_impact(c: Ctx, r: Route) -> anyhow::Result<()> {
    const N: usize = 5;
    let direct_tag = c.subtag("direct");
    let fb_tag = c.subtag("fb");
    break_group(&c, &r.primary, &fb_tag, Fault::status(500)).await?;
    let mut direct = Vec::new();
    let mut fallback = Vec::new();
    for i in 0..N {
        let reply = c
            .router
            .chat(&c.chat_body(&r.served, &direct_tag, &format!("direct {i}")))
            .await?;
        reply.expect_status(200)?;
        direct.push(reply.latency);
        let reply = c
            .router
            .chat(&c.chat_body(&r.primary, &fb_tag, &format!("fallback {i}")))
            .await?;
        reply.expect_status(200)?;
        let served = reply.router().model_id.unwrap_or_default();
        anyhow::ensure!(
            ids_of(&c.config, &r.served).contains(&served),
            "request {i} was served by {served:?}, not {}",
            r.served
        );
        fallback.push(reply.latency);
    }
    let (d, f) = (median(direct), median(fallback));
    let added = f.as_secs_f64() - d.as_secs_f64();
    c.observe("direct_median_ms", d.as_secs_f64() * 1000.0);
    c.observe("fallback_median_ms", f.as_secs_f64() * 1000.0);
    c.observe("fallback_added_ms", added * 1000.0);
    tracing::info!(
        "{} → {}: fallback adds {:.1} ms (median of {N}: {:.1} ms direct, {:.1} ms via fallback)",
        r.primary,
        r.served,
        added * 1000.0,
        d.as_secs_f64() * 1000.0,
        f.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Consecutive requests that must avoid a deployment before its absence is not chance: with
/// share `p`, the odds of avoiding it that often by luck are under 1 in 10 000.
fn skips_needed(p: f64) -> usize {
    if p >= 1.0 {
        return 1;
    }
    ((1e-4f64).ln() / (1.0 - p.max(0.05)).ln()).ceil().clamp(1.0, 40.0) as usize
}

/// Cooldown: a deployment that fails enough is skipped for `cooldown_time`, then tried again.
/// The victim is a deployment the strategy sends traffic to; the case neither assumes it is
/// picked first nor that skipping it once means it is cooling down. With `observer`, the
/// skipping is checked on another router sharing the same Redis.
async fn cooldown(c: Ctx, group: String, through_second_router: bool) -> anyhow::Result<()> {
    let deps = c.config.deployments_of(&group);
    // The victim must be a deployment the strategy actually sends traffic to: under
    // simple-shuffle the one with the largest share; under strategies that decide on live
    // state (latency, usage, load) the one that serves right now.
    // The victim must be a deployment the strategy actually sends traffic to: under
    // simple-shuffle the one with the largest share; under strategies that decide on live
    // state (latency, usage, load) whichever serves — the fault follows the traffic until
    // it has made the victim fail once.
    let follow = c.config.expected_shares(&group).is_none();
    let (mut victim_dep, p_victim) = match c.config.expected_shares(&group) {
        Some(shares) => {
            let (id, p) = shares
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .cloned()
                .unwrap_or_else(|| (deps[0].id.clone(), 0.5));
            let d = deps.iter().find(|d| d.id == id).copied().unwrap_or(deps[0]);
            (d, p)
        }
        None => {
            let knobs: Vec<_> = deps.iter().map(|d| d.knobs).collect();
            (deps[crate::config::routing::first_level(&knobs)[0]], 0.5)
        }
    };
    let sim_of = |d: &crate::config::Deployment| {
        d.sim
            .clone()
            .ok_or_else(|| anyhow::anyhow!("{group}'s deployment {} is not on the simulator", d.id))
    };
    let mut victim = sim_of(victim_dep)?;
    let skips = skips_needed(p_victim);
    let tag = c.tag().to_owned();
    let sim = c.sim()?;
    // A 429 without Retry-After (LiteLLM would take that as the cooldown): without
    // allowed_fails LiteLLM cools a deployment of a load-balanced group down at its first
    // 429, while its error-rate rule for 5xx depends on traffic other cases sent this minute;
    // with allowed_fails both count the same.
    let rule = crate::sim::Rule::tagged(
        &tag,
        Fault::Error {
            status: 429,
            retry_after: None,
            message: None,
        },
    );
    let mut rule_id = sim.add_rule(&victim, &rule).await?;
    // Fail the victim until, after its failures, `skips` requests in a row were served
    // without it. Before the cooldown a request may well fail (a retry can pick the failing
    // deployment again): that is the router's documented behaviour, not a finding.
    let mut in_a_row = 0;
    let mut sent = 0;
    let mut t0 = None;
    while sent < 120 {
        let marker = format!("cooldown trigger {sent} ");
        sent += 1;
        let r = c.router.chat(&c.chat_body(&group, &tag, &marker)).await?;
        let ours = calls(&c, &tag).await?;
        let last_failure = ours
            .iter()
            .filter(|e| e.deployment == victim && e.outcome.is_error())
            .map(|e| e.time_ms)
            .max();
        let this: Vec<&JournalEntry> = ours.iter().filter(|e| e.prompt_excerpt.contains(&marker)).collect();
        if follow
            && last_failure.is_none()
            && let Some(served) = this.iter().find(|e| e.outcome.is_ok() && e.deployment != victim)
            && let Some(d) = c.config.by_sim(&served.deployment)
        {
            sim.delete_rule(&victim, rule_id).await?;
            victim_dep = d;
            victim = sim_of(d)?;
            rule_id = sim.add_rule(&victim, &rule).await?;
            continue;
        }
        let touched = this.iter().any(|e| e.deployment == victim);
        if last_failure.is_none() || touched || r.status != 200 {
            in_a_row = 0;
            continue;
        }
        in_a_row += 1;
        if in_a_row >= skips {
            t0 = last_failure;
            break;
        }
    }
    let cooldown_s = victim_dep.cooldown_s;
    let allowed = victim_dep.allowed_fails;
    sim.delete_rule(&victim, rule_id).await?;
    let fails = calls(&c, &tag)
        .await?
        .iter()
        .filter(|e| e.deployment == victim && e.outcome.is_error())
        .count();
    let Some(t0) = t0 else {
        anyhow::bail!(
            "{victim} was not skipped {skips} times in a row after failing {fails} times within {sent} requests \
             (allowed_fails {allowed:?}, cooldown_time {cooldown_s}s, strategy {})",
            c.config.strategy
        );
    };
    c.observe("failures_before_cooldown", fails as f64);
    let window_end = t0 + (cooldown_s * 800.0) as u64;
    // Another router learns of the cooldown when it next reads Redis (at most every
    // redis_read_interval_s): the window it is held to starts then.
    let window_start = if through_second_router {
        t0 + ((c.config.redis_read_interval_s + 1.0) * 1000.0) as u64
    } else {
        t0 + 50
    };
    // While cooling down, nobody — this router or the observer — sends the victim traffic.
    let probe = if through_second_router {
        c.second_router()?
    } else {
        c.router.clone()
    };
    let mut during_sent = 0;
    while now_ms() < window_end && during_sent < 20 {
        probe
            .chat(&c.chat_body(&group, &tag, &format!("during cooldown {during_sent}")))
            .await?
            .expect_status(200)?;
        during_sent += 1;
    }
    let victim_calls = all_calls_to(&c, &victim).await?;
    let during: Vec<&JournalEntry> = victim_calls
        .iter()
        .filter(|e| e.time_ms > window_start && e.time_ms < window_end)
        .collect();
    let timeline = |es: &[&JournalEntry]| {
        es.iter()
            .map(|e| format!("+{}ms {}", e.time_ms.saturating_sub(t0), e.outcome))
            .collect::<Vec<_>>()
            .join(", ")
    };
    anyhow::ensure!(
        during.is_empty(),
        "{victim} got {} calls within {:.1}s of its last failure, #{fails} (allowed_fails {allowed:?}, cooldown_time {cooldown_s}s){}: {}",
        during.len(),
        (window_end.saturating_sub(t0)) as f64 / 1000.0,
        if through_second_router {
            " — through the second router, which shares the Redis"
        } else {
            ""
        },
        timeline(&during)
    );
    // After cooldown_time the victim is tried again (it is healthy now) — a promise only
    // where the strategy spreads traffic by config; latency- or usage-based routing may
    // rightly prefer the sibling that kept answering.
    if c.config.expected_shares(&group).is_none() {
        tracing::info!(strategy = %c.config.strategy, "not waiting for {victim} to be picked again");
        return Ok(());
    }
    let deadline = t0 + ((cooldown_s + MARGIN.as_secs_f64() + 5.0) * 1000.0) as u64;
    let mut n = 0;
    loop {
        n += 1;
        probe
            .chat(&c.chat_body(&group, &tag, &format!("after cooldown {n}")))
            .await?
            .expect_status(200)?;
        let back = all_calls_to(&c, &victim)
            .await?
            .into_iter()
            .find(|e| e.time_ms >= window_end);
        if let Some(e) = back {
            c.observe("cooldown_observed_s", (e.time_ms - t0) as f64 / 1000.0);
            return Ok(());
        }
        anyhow::ensure!(
            now_ms() < deadline,
            "{victim} was not tried again within {:.0}s of cooling down",
            (deadline - t0) as f64 / 1000.0
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chance_skips_are_ruled_out() {
        // Half the traffic: 14 misses in a row happen by chance less than once in 10 000.
        assert_eq!(skips_needed(0.5), 14);
        assert!(0.5f64.powi(skips_needed(0.5) as i32) < 1e-4);
        assert_eq!(skips_needed(1.0), 1);
    }
}
