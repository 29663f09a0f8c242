//! Caching and state through Redis (the router's response cache):
//! - an identical request is served from the cache, without a second upstream call
//! - a different request is not: it goes upstream
//! - a cached reply carries the same content and usage as the original
//!
//! The default stack's cache is `mode: default_off`, so only requests that opt in
//! (`cache: {"use-cache": true}`) touch it and no other case is served stale replies.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::Reply;

use crate::client::shape;
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};
use crate::stack::role::Role;

pub fn cases(plan: &Plan) -> Vec<Case> {
    if !plan.config.cache {
        return Vec::new();
    }
    let cases = vec![
        Case::new("caching::identical_request_served_from_cache", identical).needs(&[Role::Simulator, Role::Redis]),
        Case::new("caching::different_request_goes_upstream", different).needs(&[Role::Simulator, Role::Redis]),
    ];
    crate::suites::support::on_probe_group(plan, cases)
}

pub(crate) fn cached_body(c: &Ctx, prompt: &str) -> anyhow::Result<Value> {
    let group = c.probe_group()?;
    let mut body = c.chat_body(&group, c.tag(), prompt);
    // The trace id differs per request; keep the cached requests byte-identical.
    body["metadata"]["trace_id"] = json!(c.tag().sub("trace"));
    body["cache"] = json!({"use-cache": true});
    Ok(body)
}

async fn upstream_calls(c: &Ctx) -> anyhow::Result<usize> {
    Ok(c.sim()?
        .journal(&crate::sim::JournalQuery {
            tag: Some(c.tag().clone()),
            ..Default::default()
        })
        .await?
        .len())
}

/// The router writes its cache after answering, so an identical request sent at once can
/// still miss. Repeats `body` (bounded) until a reply is a cache hit; returns the first
/// reply, the hit, and how many repeats missed. The hit must not have called upstream.
pub(crate) async fn until_cache_hit(c: &Ctx, body: &Value) -> anyhow::Result<(Reply, Reply, usize)> {
    let first = c.router.chat(body).await?;
    first.expect_status(200)?;
    let start = Instant::now();
    let mut misses = 0;
    loop {
        let before = upstream_calls(c).await?;
        let r = c.router.chat(body).await?;
        r.expect_status(200)?;
        let after = upstream_calls(c).await?;
        if r.router().cache_key.is_some() {
            anyhow::ensure!(
                after == before,
                "a reply marked as a cache hit still made {} upstream call(s)",
                after - before
            );
            return Ok((first, r, misses));
        }
        misses += 1;
        anyhow::ensure!(
            start.elapsed() < CACHE_WRITE_BOUND,
            "no identical request was served from the cache within {:.0}s ({misses} misses, {after} upstream calls)",
            CACHE_WRITE_BOUND.as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long the router may take to write a reply into its cache.
const CACHE_WRITE_BOUND: Duration = Duration::from_secs(5);

async fn identical(c: Ctx) -> anyhow::Result<()> {
    let body = cached_body(&c, "cache me")?;
    let (first, hit, misses) = until_cache_hit(&c, &body).await?;
    let (a, b) = (first.json_or_err()?, hit.json_or_err()?);
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
        cached_ms = hit.latency.as_millis() as u64,
        misses,
        "cache hit"
    );
    c.observe("cache_hit_ms", hit.latency.as_secs_f64() * 1000.0);
    c.observe("misses_before_cache_write", misses as f64);
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
