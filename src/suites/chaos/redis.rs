//! Redis killed under traffic, then restarted.

use std::time::Duration;

use super::account::Account;
use super::traffic::{INTERVAL, Traffic, request_bound, steady_group, until_steady};
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};
use crate::stack::Chaos;
use crate::stack::role::Role;

/// How long Redis stays dead: long enough for a few dozen requests to need it.
const OUTAGE: Duration = Duration::from_secs(2);

pub fn cases(plan: &Plan) -> Vec<Case> {
    let Some(redis) = plan.manifest.service_with(Role::Redis).map(str::to_owned) else {
        return Vec::new();
    };
    let group = steady_group(plan);
    let g = group.clone().unwrap_or_default();
    let service = redis.clone();
    let cache = plan.config.cache;
    // LiteLLM's Redis circuit breaker: how long after its last failed Redis call it tries Redis
    // again (litellm/constants.py, 60 s unless the router's environment says otherwise).
    let breaker_s = plan.manifest.services[&plan.manifest.stack.router]
        .env
        .get("REDIS_CIRCUIT_BREAKER_RECOVERY_TIMEOUT")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(60.0);
    vec![
        Case::new("chaos::redis::killed_and_restarted", move |c| {
            killed_and_restarted(c, g.clone(), service.clone(), cache.then_some(breaker_s))
        })
        .needs(&[Role::Redis, Role::Simulator])
        .hurts(&[redis])
        .uses(&group.iter().collect::<Vec<_>>())
        .ignore_if(group.err())
        .cost(8.0 + plan.config.redis_read_interval_s + if cache { breaker_s } else { 0.0 }),
    ]
}

/// `breaker_s`: with a Redis cache, LiteLLM's Redis circuit breaker's recovery time.
async fn killed_and_restarted(c: Ctx, group: String, redis: String, breaker_s: Option<f64>) -> anyhow::Result<()> {
    let control = c.control()?.clone();
    let timeout = request_bound(&c, &group);
    let body = c.chat_body(&group, c.tag(), "steady traffic while redis dies");
    let traffic = Traffic::start(c.router.clone(), body, INTERVAL, timeout);
    let result = async {
        until_steady(&traffic, 5, Duration::from_secs(30), |_| true).await?;
        let fault_at = traffic.now();
        control.hurt(&redis, Chaos::Kill).await?;
        tokio::time::sleep(OUTAGE).await;
        let heal_at = traffic.now();
        control.hurt(&redis, Chaos::Restart).await?;
        let healthy = control.wait_healthy(&redis, Duration::from_secs(30)).await?;
        // Traffic through every router on this Redis for one of its Redis read intervals: a
        // router's first read after the restart fails on a pooled connection that died with
        // Redis, and it reads again only an interval later (seen: a second router idle through
        // the outage missed a shared cooldown for 10 s in the next case). Each router makes
        // that failed read here, before the case lets Redis go.
        let second = c.second_router().ok().map(|r| {
            let body = c.chat_body(&group, c.tag(), "steady traffic through the second router");
            Traffic::start(r, body, INTERVAL, timeout)
        });
        let interval = Duration::from_secs_f64(c.config.redis_read_interval_s + 1.0);
        tokio::time::sleep(interval).await;
        until_steady(&traffic, 10, Duration::from_secs(30), |_| true).await?;
        if let Some(t) = second {
            until_steady(&t, 5, Duration::from_secs(30), |_| true).await?;
            t.stop().await;
        }
        anyhow::Ok((fault_at, heal_at, healthy))
    }
    .await;
    // Whatever failed above, Redis is running again before the case lets go of it.
    if control.exited(&redis).await.is_some() {
        control.hurt(&redis, Chaos::Restart).await?;
        control.wait_healthy(&redis, Duration::from_secs(30)).await?;
    }
    let shots = traffic.stop().await;
    let (fault_at, heal_at, healthy) = result?;
    let a = Account::new(shots, fault_at, heal_at);
    tracing::info!(account = %a, redis_healthy_s = healthy.as_secs_f64(), "redis killed and restarted");
    c.observe("requests_sent", (a.before.sent + a.during.sent + a.after.sent) as f64);
    c.observe("requests_lost_while_redis_down", a.during.lost() as f64);
    c.observe("redis_back_s", healthy.as_secs_f64());
    anyhow::ensure!(a.before.lost() == 0, "before Redis was killed: {}", a.before);
    anyhow::ensure!(
        a.during.lost() == 0,
        "the router did not keep serving while its Redis was down: {} (the account: {a})",
        a.during
    );
    let settled = a.settled_after_heal(|s| s.ok());
    anyhow::ensure!(settled.is_some(), "traffic did not settle after Redis came back: {a}");
    if let Some(breaker_s) = breaker_s {
        let bound = Duration::from_secs_f64(breaker_s) + Duration::from_secs(10);
        // Every router on this Redis: one idle through the outage keeps dead connections in
        // its pool, and its first Redis read after the restart fails on one (seen: a second
        // router missed a shared cooldown for one more read interval, 10 s).
        let mut routers = vec![c.clone()];
        if let Ok(second) = c.second_router() {
            let mut other = c.clone();
            other.router = second;
            routers.push(other);
        }
        let mut back = Duration::ZERO;
        for r in &routers {
            back = back.max(shared_state_back(r, &redis, bound).await?);
        }
        c.observe("shared_state_back_s", back.as_secs_f64());
    }
    Ok(())
}

/// Waits (bounded) until `c.router` writes its cache to the new Redis again: three replies in
/// a row cached now, each found under its key in Redis (each pooled connection that died with
/// Redis fails once before the router reconnects). A hit alone proves nothing — LiteLLM serves
/// hits from its in-process layer, and keeps doing so while its Redis circuit breaker is open.
async fn shared_state_back(c: &Ctx, redis: &str, bound: Duration) -> anyhow::Result<Duration> {
    let url = c
        .endpoints
        .url_of(Role::Redis)
        .ok_or_else(|| anyhow::anyhow!("no Redis endpoint for '{redis}'"))?
        .to_owned();
    let t0 = std::time::Instant::now();
    let mut attempt = 0;
    let mut in_a_row = 0;
    loop {
        attempt += 1;
        let body = crate::suites::caching::cached_body(c, &format!("cached once redis is back, try {attempt}"))?;
        let (_, hit, _) = crate::suites::caching::until_cache_hit(c, &body).await?;
        let key = hit
            .router()
            .cache_key
            .ok_or_else(|| anyhow::anyhow!("{}: the cache hit carries no x-litellm-cache-key", hit.url))?;
        if crate::stack::health::redis_pttl(&url, &key).await? != -2 {
            in_a_row += 1;
            if in_a_row == 3 {
                return Ok(t0.elapsed());
            }
            continue;
        }
        in_a_row = 0;
        anyhow::ensure!(
            t0.elapsed() < bound,
            "{}: the router's cache did not reach Redis again within {:.0}s of its restart (LiteLLM's Redis \
             circuit breaker: REDIS_CIRCUIT_BREAKER_RECOVERY_TIMEOUT in the router's environment)",
            c.router.base,
            bound.as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
