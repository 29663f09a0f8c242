//! Fallbacks and resilience, derived from the router's own config. For every fallback chain:
//! - primary times out → the next group answers, within the timeout plus a margin
//! - primary rate-limited (429 + Retry-After) → retries as configured, then fallback; the
//!   router's attempted-retries/fallbacks headers agree with the upstream journal
//! - primary 500 / 503 / connection reset / malformed JSON → fallback
//! - every group of the chain fails → an OpenAI-shaped error, in bounded time
//! - metadata survives the fallback (user upstream, trace id and tenant in the router's log)
//! - latency cost of the fallback path (median of several requests), reported
//!
//! and per context-window chain, a context-length error → the larger group. Cooldowns (a
//! failing deployment skipped for `cooldown_time`, then tried again; shared through Redis
//! between two routers) need groups of two deployments: LiteLLM never cools down the only one.
//!
//! Faults are simulator rules scoped to the case's tag, so parallel cases never see each
//! other's failures; the journal says which upstreams the router called, in which order.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::shape;
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};
use crate::sim::{Fault, JournalEntry, JournalQuery};
use crate::stack::router_config::{Chain, ChainKind, RouterConfig};

/// Slack on top of the configured timeouts: router overhead and scheduling on a busy CI box.
const MARGIN: Duration = Duration::from_secs(3);

/// Slack per attempt on top of a deployment's timeout: the router's backoff before a retry
/// and scheduling on a loaded 2-core box.
const ATTEMPT_MARGIN: Duration = Duration::from_secs(3);

pub fn cases(plan: &Plan) -> Vec<Case> {
    let mut out = Vec::new();
    for chain in &plan.config.chains {
        let base = match chain.kind {
            ChainKind::General => format!("fallbacks::{}", chain.name()),
            ChainKind::ContextWindow => format!("fallbacks::context_window::{}", chain.name()),
            ChainKind::ContentPolicy => format!("fallbacks::content_policy::{}", chain.name()),
        };
        let mut add = |what: &str, f: fn(Ctx, Chain) -> crate::runner::registry::CaseFuture| {
            let ch = chain.clone();
            out.push(Case::new(format!("{base}::{what}"), move |c| f(c, ch.clone())).needs(&["sim"]));
        };
        match chain.kind {
            ChainKind::General => {
                add("timeout", |c, ch| Box::pin(timeout(c, ch)));
                add("rate_limit", |c, ch| Box::pin(rate_limit(c, ch, false)));
                add("server_error_500", |c, ch| {
                    Box::pin(falls_back_on(c, ch, Fault::status(500)))
                });
                add("unavailable_503", |c, ch| {
                    Box::pin(falls_back_on(c, ch, Fault::status(503)))
                });
                add("connection_reset", |c, ch| Box::pin(falls_back_on(c, ch, Fault::Reset)));
                add("malformed_json", |c, ch| {
                    Box::pin(falls_back_on(c, ch, Fault::Malformed))
                });
                add("exhausted", |c, ch| Box::pin(exhausted(c, ch)));
                add("metadata_preserved", |c, ch| Box::pin(metadata_preserved(c, ch)));
                add("latency_impact", |c, ch| Box::pin(latency_impact(c, ch)));
            }
            ChainKind::ContextWindow => {
                add("context_length", |c, ch| {
                    Box::pin(falls_back_on(c, ch, Fault::ContextLength))
                });
            }
            ChainKind::ContentPolicy => {
                add("content_policy", |c, ch| {
                    Box::pin(falls_back_on(c, ch, Fault::ContentPolicy))
                });
            }
        }
        if chain.kind == ChainKind::General {
            let ch = chain.clone();
            out.push(
                Case::new(format!("{base}::rate_limit::retry_header_agrees"), move |c| {
                    rate_limit(c, ch.clone(), true)
                })
                .needs(&["sim"])
                .ignore(
                    "LiteLLM 1.100.5 sends x-litellm-attempted-retries: 0 however often it retried \
                         (seen: primary 429, 429, then backup; header 0); the retries themselves are \
                         checked against the journal by ::rate_limit",
                ),
            );
        }
    }
    for group in plan.config.groups() {
        // A cooldown case needs two deployments that cool down (LiteLLM keeps a group's last one).
        let deps = plan.config.deployments_of(&group);
        if deps.len() < 2
            || !deps
                .iter()
                .all(|d| d.allowed_fails.is_some() && d.cooldown_s.is_none_or(|s| s > 0.0))
        {
            continue;
        }
        let g = group.clone();
        out.push(
            Case::new(format!("fallbacks::cooldown::{group}"), move |c| {
                cooldown(c, g.clone(), None)
            })
            .needs(&["sim"]),
        );
        let g = group.clone();
        out.push(
            Case::new(format!("fallbacks::cooldown::{group}::shared_via_redis"), move |c| {
                cooldown(c, g.clone(), Some("router_b"))
            })
            .needs(&["sim", "router_b"]),
        );
    }
    out
}

/// Simulator deployments behind a model group.
fn sims_of(cfg: &RouterConfig, group: &str) -> Vec<String> {
    cfg.deployments_of(group).iter().filter_map(|d| d.sim.clone()).collect()
}

fn ids_of(cfg: &RouterConfig, group: &str) -> Vec<String> {
    cfg.deployments_of(group).iter().map(|d| d.id.clone()).collect()
}

/// Makes every deployment of `group` answer requests carrying `tag` with `fault`.
async fn break_group(c: &Ctx, group: &str, tag: &str, fault: Fault) -> anyhow::Result<()> {
    let sim = c.sim()?;
    for d in sims_of(&c.config, group) {
        let rule = crate::sim::Rule::tagged(tag, fault.clone());
        sim.add_rule(&d, &rule).await?;
    }
    Ok(())
}

async fn calls(c: &Ctx, tag: &str) -> anyhow::Result<Vec<JournalEntry>> {
    let mut j = c
        .sim()?
        .journal(&JournalQuery {
            tag: Some(tag.to_owned()),
            ..Default::default()
        })
        .await?;
    j.sort_by_key(|e| e.seq);
    Ok(j)
}

fn path(journal: &[JournalEntry]) -> String {
    journal
        .iter()
        .map(|e| format!("{}({})", e.deployment, e.outcome))
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Asserts the request was served by the chain's second group after the first was tried.
async fn assert_fell_back(
    c: &Ctx,
    chain: &Chain,
    tag: &str,
    reply: &crate::client::Reply,
) -> anyhow::Result<Vec<JournalEntry>> {
    let (primary, backup) = (chain.primary(), &chain.groups[1]);
    reply.expect_status(200)?;
    shape::chat_completion(reply.json_or_err()?)?;
    let served = reply.router().model_id;
    let backup_ids = ids_of(&c.config, backup);
    let journal = calls(c, tag).await?;
    anyhow::ensure!(
        served.as_ref().is_some_and(|id| backup_ids.contains(id)),
        "served by {served:?}, expected a deployment of {backup} {backup_ids:?}; upstream calls: {}",
        path(&journal)
    );
    let p_sims = sims_of(&c.config, primary);
    let b_sims = sims_of(&c.config, backup);
    let first = journal
        .first()
        .ok_or_else(|| anyhow::anyhow!("the simulator saw no call carrying {tag}"))?;
    anyhow::ensure!(
        p_sims.contains(&first.deployment),
        "the router did not try {primary} first: {}",
        path(&journal)
    );
    let last = journal.last().expect("non-empty");
    anyhow::ensure!(
        b_sims.contains(&last.deployment) && last.outcome == "ok",
        "the last upstream call was not a successful {backup} call: {}",
        path(&journal)
    );
    let last_primary = journal
        .iter()
        .rposition(|e| p_sims.contains(&e.deployment))
        .unwrap_or(0);
    let first_backup = journal.iter().position(|e| b_sims.contains(&e.deployment)).unwrap_or(0);
    anyhow::ensure!(
        last_primary < first_backup,
        "{backup} was called before {primary} was given up: {}",
        path(&journal)
    );
    let fb = reply.router().attempted_fallbacks;
    if let Some(n) = fb {
        anyhow::ensure!(
            n == 1,
            "x-litellm-attempted-fallbacks is {n}, expected 1 (one hop); calls: {}",
            path(&journal)
        );
    }
    tracing::info!(calls = %path(&journal), latency_ms = reply.latency.as_millis() as u64, "fell back");
    Ok(journal)
}

async fn falls_back_on(c: Ctx, chain: Chain, fault: Fault) -> anyhow::Result<()> {
    let tag = c.tag().to_owned();
    break_group(&c, chain.primary(), &tag, fault.clone()).await?;
    let mut body = c.chat_body(chain.primary(), &tag, "fallback check");
    if matches!(fault, Fault::ContextLength) {
        body["messages"][0]["content"] = Value::String(format!("[{tag}] {}", "long ".repeat(200)));
    }
    let reply = c.router.chat(&body).await?;
    assert_fell_back(&c, &chain, &tag, &reply).await?;
    Ok(())
}

async fn timeout(c: Ctx, chain: Chain) -> anyhow::Result<()> {
    let tag = c.tag().to_owned();
    let primary = chain.primary();
    let t = c
        .config
        .deployments_of(primary)
        .iter()
        .filter_map(|d| d.timeout_s)
        .fold(0.0, f64::max);
    anyhow::ensure!(
        t > 0.0,
        "{primary} has no litellm_params.timeout: a hang would wait for the router's global timeout"
    );
    break_group(&c, primary, &tag, Fault::Hang).await?;
    let reply = c.router.chat(&c.chat_body(primary, &tag, "timeout check")).await?;
    let journal = assert_fell_back(&c, &chain, &tag, &reply).await?;
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
    // The whole request: every attempt, plus the backup's answer and the router's own queueing.
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

async fn rate_limit(c: Ctx, chain: Chain, check_retry_header: bool) -> anyhow::Result<()> {
    let tag = c.tag().to_owned();
    let primary = chain.primary();
    break_group(
        &c,
        primary,
        &tag,
        Fault::Error {
            status: 429,
            retry_after: Some(1),
            message: None,
        },
    )
    .await?;
    let reply = c.router.chat(&c.chat_body(primary, &tag, "rate limit check")).await?;
    let journal = assert_fell_back(&c, &chain, &tag, &reply).await?;
    let p_sims = sims_of(&c.config, primary);
    let p_calls = journal.iter().filter(|e| p_sims.contains(&e.deployment)).count() as u32;
    anyhow::ensure!(
        journal
            .iter()
            .filter(|e| p_sims.contains(&e.deployment))
            .all(|e| e.outcome == "error:429"),
        "the primary's calls were not all 429s: {}",
        path(&journal)
    );
    // Retries as configured: num_retries re-calls of the primary group, then the fallback.
    let configured = c.config.num_retries + 1;
    anyhow::ensure!(
        p_calls == configured,
        "{primary} was called {p_calls} times, expected num_retries + 1 = {configured}: {}",
        path(&journal)
    );
    // The header must count exactly the re-calls the journal saw.
    if check_retry_header {
        let r = reply
            .router()
            .attempted_retries
            .ok_or_else(|| anyhow::anyhow!("no x-litellm-attempted-retries header"))?;
        anyhow::ensure!(
            r + 1 == p_calls,
            "x-litellm-attempted-retries is {r}, but the journal shows {p_calls} calls to {primary}: {}",
            path(&journal)
        );
    }
    Ok(())
}

async fn exhausted(c: Ctx, chain: Chain) -> anyhow::Result<()> {
    let tag = c.tag().to_owned();
    for g in &chain.groups {
        break_group(&c, g, &tag, Fault::status(500)).await?;
    }
    let budget = Duration::from_secs(30);
    let start = Instant::now();
    let reply = c
        .router
        .post_with(
            "/v1/chat/completions",
            &c.chat_body(chain.primary(), &tag, "exhaustion check"),
            budget,
        )
        .await?;
    let took = start.elapsed();
    anyhow::ensure!(
        reply.status >= 500,
        "every group failed with 500 but the client got {}: {}",
        reply.status,
        crate::client::excerpt(&reply.text)
    );
    let msg = shape::error_body(reply.json_or_err()?)?;
    let journal = calls(&c, &tag).await?;
    for g in &chain.groups {
        let sims = sims_of(&c.config, g);
        anyhow::ensure!(
            journal.iter().any(|e| sims.contains(&e.deployment)),
            "{g} was never tried before giving up: {}",
            path(&journal)
        );
    }
    anyhow::ensure!(
        journal.iter().all(|e| e.outcome != "ok"),
        "an upstream call succeeded yet the client got an error: {}",
        path(&journal)
    );
    tracing::info!(status = reply.status, took_ms = took.as_millis() as u64, message = %msg.lines().next().unwrap_or(""), calls = %path(&journal), "exhausted");
    Ok(())
}

async fn metadata_preserved(c: Ctx, chain: Chain) -> anyhow::Result<()> {
    let tag = c.tag().to_owned();
    break_group(&c, chain.primary(), &tag, Fault::status(500)).await?;
    let body = c.chat_body(chain.primary(), &tag, "metadata through fallback");
    let trace_id = body["metadata"]["trace_id"].as_str().unwrap_or_default().to_owned();
    let reply = c.router.chat(&body).await?;
    let journal = assert_fell_back(&c, &chain, &tag, &reply).await?;
    let served = journal.last().expect("non-empty");
    anyhow::ensure!(
        served.prompt_excerpt.contains(&tag),
        "the backup upstream got a prompt without the client's tag: {:?}",
        served.prompt_excerpt
    );
    if let Some(sink) = c.endpoints.url("sink").map(crate::ledger::sink::SinkClient::new) {
        let records = sink
            .wait_for_where(&trace_id, crate::ledger::sink::is_success, 1, Duration::from_secs(30))
            .await?;
        let rec = &records[0];
        let text = rec.to_string();
        anyhow::ensure!(
            text.contains(&format!("\"tenant\":\"{tag}\"")),
            "the router's logging payload of the served request lost the tenant {tag}"
        );
        let end_user = rec.get("end_user").and_then(Value::as_str);
        anyhow::ensure!(
            end_user == Some(tag.as_str()),
            "the served request was attributed to end_user {end_user:?}, not {tag}"
        );
        let model_id = rec.get("model_id").and_then(Value::as_str);
        anyhow::ensure!(
            model_id.is_some_and(|m| ids_of(&c.config, &chain.groups[1]).iter().any(|i| i == m)),
            "the logging payload names deployment {model_id:?}, not the backup that served"
        );
    }
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn latency_impact(c: Ctx, chain: Chain) -> anyhow::Result<()> {
    const N: usize = 5;
    let direct_tag = c.subtag("direct");
    let fb_tag = c.subtag("fb");
    break_group(&c, chain.primary(), &fb_tag, Fault::status(500)).await?;
    let mut direct = Vec::new();
    let mut fallback = Vec::new();
    for i in 0..N {
        let r = c
            .router
            .chat(&c.chat_body(&chain.groups[1], &direct_tag, &format!("direct {i}")))
            .await?;
        r.expect_status(200)?;
        direct.push(r.latency);
        let r = c
            .router
            .chat(&c.chat_body(chain.primary(), &fb_tag, &format!("fallback {i}")))
            .await?;
        r.expect_status(200)?;
        let served = r.router().model_id.unwrap_or_default();
        anyhow::ensure!(
            ids_of(&c.config, &chain.groups[1]).contains(&served),
            "request {i} was served by {served:?}, not {}",
            chain.groups[1]
        );
        fallback.push(r.latency);
    }
    let (d, f) = (median(direct), median(fallback));
    let added = f.as_secs_f64() - d.as_secs_f64();
    c.observe("direct_median_ms", d.as_secs_f64() * 1000.0);
    c.observe("fallback_median_ms", f.as_secs_f64() * 1000.0);
    c.observe("fallback_added_ms", added * 1000.0);
    tracing::info!(
        "{}: fallback adds {:.1} ms (median of {N}: {:.1} ms direct, {:.1} ms via fallback)",
        chain.name(),
        added * 1000.0,
        d.as_secs_f64() * 1000.0,
        f.as_secs_f64() * 1000.0
    );
    Ok(())
}

/// Cooldown: after `allowed_fails` failures a deployment is skipped for `cooldown_time`,
/// then tried again. With `observer`, the skipping is checked on another router sharing
/// the same Redis.
async fn cooldown(c: Ctx, group: String, observer: Option<&'static str>) -> anyhow::Result<()> {
    let deps = c.config.deployments_of(&group);
    let mut ordered: Vec<_> = deps.iter().collect();
    ordered.sort_by_key(|d| d.order.unwrap_or(i64::MAX));
    let victim = ordered[0]
        .sim
        .clone()
        .ok_or_else(|| anyhow::anyhow!("{group}'s first deployment is not on the simulator"))?;
    let cooldown_s = ordered[0].cooldown_s.unwrap_or(5.0);
    let allowed = ordered[0].allowed_fails.unwrap_or(0);
    let tag = c.tag().to_owned();
    // Both cooldown cases count every call the victim gets: they must not overlap.
    let _turn = c.exclusive(&format!("cooldown:{group}")).await;
    let sim = c.sim()?;
    let rule = crate::sim::Rule::tagged(&tag, Fault::status(500));
    let rule_id = sim.add_rule(&victim, &rule).await?;
    // Fail the victim until the router stops calling it: the request that is served without
    // touching the victim shows the cooldown began. (LiteLLM counts failures asynchronously
    // and per minute, so the exact failure that trips it varies by one.)
    // A skip before any failure of ours means someone else's cooldown is still running (a
    // router outside this run, say): wait it out, bounded, rather than count it as ours.
    let mut skipped = false;
    for i in 0..60 {
        let marker = format!("cooldown trigger {i} ");
        c.router
            .chat(&c.chat_body(&group, &tag, &marker))
            .await?
            .expect_status(200)?;
        let ours = calls(&c, &tag).await?;
        let failed_yet = ours
            .iter()
            .any(|e| e.deployment == victim && e.outcome.starts_with("error"));
        let this: Vec<&JournalEntry> = ours.iter().filter(|e| e.prompt_excerpt.contains(&marker)).collect();
        if !this.is_empty() && this.iter().all(|e| e.deployment != victim) {
            if failed_yet {
                skipped = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    sim.delete_rule(&victim, rule_id).await?;
    let failures: Vec<JournalEntry> = calls(&c, &tag)
        .await?
        .into_iter()
        .filter(|e| e.deployment == victim && e.outcome.starts_with("error"))
        .collect();
    let fails = failures.len();
    anyhow::ensure!(
        skipped,
        "{victim} was never skipped after failing {fails} times (allowed_fails {allowed}, cooldown_time {cooldown_s}s)"
    );
    let t0 = failures.last().map(|e| e.time_ms).unwrap_or_else(now_ms);
    c.observe("failures_before_cooldown", fails as f64);
    let window_end = t0 + (cooldown_s * 800.0) as u64;
    // While cooling down, nobody — this router or the observer — sends the victim traffic.
    let probe = match observer {
        Some(svc) => c.router_named(svc)?,
        None => c.router.clone(),
    };
    let mut sent = 0;
    while now_ms() < window_end && sent < 20 {
        probe
            .chat(&c.chat_body(&group, &tag, &format!("during cooldown {sent}")))
            .await?
            .expect_status(200)?;
        sent += 1;
    }
    anyhow::ensure!(sent > 0, "no request could be sent during the cooldown window");
    let victim_calls = all_calls_to(&c, &victim).await?;
    let during: Vec<&JournalEntry> = victim_calls
        .iter()
        .filter(|e| e.time_ms > t0 + 50 && e.time_ms < window_end)
        .collect();
    let timeline = |es: &[&JournalEntry]| {
        es.iter()
            .map(|e| format!("+{}ms {}", e.time_ms.saturating_sub(t0), e.outcome))
            .collect::<Vec<_>>()
            .join(", ")
    };
    anyhow::ensure!(
        during.is_empty(),
        "{victim} got {} calls within {:.1}s of its last failure, #{fails} (allowed_fails {allowed}, cooldown_time {cooldown_s}s){}: {}",
        during.len(),
        (window_end - t0) as f64 / 1000.0,
        observer
            .map(|o| format!(" — through {o}, which shares the Redis"))
            .unwrap_or_default(),
        timeline(&during)
    );
    // After cooldown_time the victim is tried again (it is healthy now).
    let deadline = t0 + ((cooldown_s + MARGIN.as_secs_f64() + 5.0) * 1000.0) as u64;
    loop {
        probe
            .chat(&c.chat_body(&group, &tag, "after cooldown"))
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
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Every call the victim has had, from any case: cooldown is per deployment, not per tag.
async fn all_calls_to(c: &Ctx, deployment: &str) -> anyhow::Result<Vec<JournalEntry>> {
    c.sim()?
        .journal(&JournalQuery {
            deployment: Some(deployment.to_owned()),
            ..Default::default()
        })
        .await
}
