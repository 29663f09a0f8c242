//! Caching and state through Redis (the router's response cache):
//! - an identical request is served from the cache, without a second upstream call
//! - a different request is not: it goes upstream
//! - a cached reply carries the same content and usage as the original
//!
//! The default stack's cache is `mode: default_off`, so only requests that opt in
//! (`cache: {"use-cache": true}`) touch it and no other case is served stale replies.

use serde_json::{Value, json};

use crate::client::shape;
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};

pub fn cases(plan: &Plan) -> Vec<Case> {
    if !plan.config.cache {
        return Vec::new();
    }
    vec![
        Case::new("caching::identical_request_served_from_cache", identical).needs(&["sim", "redis"]),
        Case::new("caching::different_request_goes_upstream", different).needs(&["sim", "redis"]),
    ]
}

fn cached_body(c: &Ctx, prompt: &str) -> anyhow::Result<Value> {
    let group = c
        .config
        .groups()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no model groups"))?;
    let mut body = c.chat_body(&group, c.tag(), prompt);
    // The trace id differs per request; keep the cached requests byte-identical.
    body["metadata"]["trace_id"] = json!(format!("trace-{}", c.tag()));
    body["cache"] = json!({"use-cache": true});
    Ok(body)
}

async fn upstream_calls(c: &Ctx) -> anyhow::Result<usize> {
    Ok(c.sim()?
        .journal(&crate::sim::JournalQuery {
            tag: Some(c.tag().to_owned()),
            ..Default::default()
        })
        .await?
        .len())
}

async fn identical(c: Ctx) -> anyhow::Result<()> {
    let body = cached_body(&c, "cache me")?;
    let first = c.router.chat(&body).await?;
    first.expect_status(200)?;
    let second = c.router.chat(&body).await?;
    second.expect_status(200)?;
    let n = upstream_calls(&c).await?;
    anyhow::ensure!(
        n == 1,
        "two identical cacheable requests made {n} upstream calls, expected 1 (the second from Redis)"
    );
    let (a, b) = (first.json_or_err()?, second.json_or_err()?);
    anyhow::ensure!(
        shape::chat_completion(a)? == shape::chat_completion(b)?,
        "the cached reply's content differs from the original"
    );
    anyhow::ensure!(
        shape::usage(&a["usage"])? == shape::usage(&b["usage"])?,
        "the cached reply's usage differs"
    );
    tracing::info!(
        first_ms = first.latency.as_millis() as u64,
        cached_ms = second.latency.as_millis() as u64,
        "cache hit"
    );
    c.observe("cache_hit_ms", second.latency.as_secs_f64() * 1000.0);
    Ok(())
}

async fn different(c: Ctx) -> anyhow::Result<()> {
    c.router
        .chat(&cached_body(&c, "first question")?)
        .await?
        .expect_status(200)?;
    c.router
        .chat(&cached_body(&c, "second question")?)
        .await?
        .expect_status(200)?;
    let n = upstream_calls(&c).await?;
    anyhow::ensure!(
        n == 2,
        "two different cacheable requests made {n} upstream calls, expected 2"
    );
    Ok(())
}
