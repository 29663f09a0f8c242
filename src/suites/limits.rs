//! Rate limits, per model group whose every deployment sets `rpm` (or `tpm`), with the
//! simulator's journal — every call each deployment got in one UTC minute, whichever case or
//! router sent it — as the evidence:
//! - rpm: within a minute no deployment gets more calls than its rpm; the requests past the
//!   group's budget go to another deployment or group, or are refused with 429
//! - rpm across two routers on one Redis: what one router used counts for the other (#2730)
//! - tpm: no call reaches a deployment once its tokens this minute reached its tpm
//! - tpm across two routers
//!
//! LiteLLM counts per UTC minute (`HH-MM` in its keys), so each case runs inside one minute,
//! waiting for the next when too little of this one is left. Where the config does not ask
//! LiteLLM to enforce limits (simple-shuffle without `enforce_model_rate_limits`), the cases
//! are ignored saying what it does instead.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::support::{Resp, all_calls_to, now_ms, redis, until_no_cooldown};
use crate::client::RouterClient;
use crate::config::model::RateLimits;
use crate::config::{Deployment, RouterConfig};
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};
use crate::sim::JournalEntry;
use crate::stack::role::Role;
use crate::tag::Tag;

/// Requests a case may send; more would make it slow rather than telling.
const MAX_REQUESTS: u64 = 40;

/// How long LiteLLM may take to count a reply's tokens (a success callback, after the reply).
const SETTLE: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Limit {
    Rpm,
    Tpm,
}

impl Limit {
    fn name(self) -> &'static str {
        match self {
            Self::Rpm => "rpm",
            Self::Tpm => "tpm",
        }
    }

    fn of(self, d: &Deployment) -> Option<f64> {
        match self {
            Self::Rpm => d.knobs.rpm,
            Self::Tpm => d.knobs.tpm,
        }
    }
}

pub fn cases(plan: &Plan) -> Vec<Case> {
    let cfg = &plan.config;
    let mut out = Vec::new();
    let second = plan.manifest.service_with(Role::SecondRouter).is_some();
    for group in cfg.groups() {
        for limit in [Limit::Rpm, Limit::Tpm] {
            let deps = cfg.deployments_of(&group);
            if deps.is_empty() || deps.iter().any(|d| limit.of(d).is_none()) {
                continue;
            }
            let base = format!("limits::{}::{group}", limit.name());
            let gate = cfg
                .unusable(&group, 0.0)
                .or_else(|| shared_ids(cfg, &group))
                .or_else(|| too_many(cfg, &group, limit))
                .or_else(|| not_enforced(cfg, limit));
            let g = group.clone();
            out.push(
                Case::new(base.clone(), move |c| one_router(c, g.clone(), limit))
                    .needs(&[Role::Simulator])
                    .owns(&[&group])
                    .ignore_if(gate.clone()),
            );
            if second {
                let g = group.clone();
                out.push(
                    Case::new(format!("{base}::shared_via_redis"), move |c| {
                        two_routers(c, g.clone(), limit)
                    })
                    .needs(&[Role::Simulator, Role::SecondRouter])
                    .owns(&[&group])
                    .ignore_if(gate.or_else(|| not_shared(cfg, limit))),
                );
            }
        }
    }
    out
}

/// Entries sharing a `model_info.id` share LiteLLM's counters but each states its own limit.
fn shared_ids(cfg: &RouterConfig, group: &str) -> Option<String> {
    let deps = cfg.deployments_of(group);
    deps.iter()
        .enumerate()
        .find(|(i, d)| deps[..*i].iter().any(|e| e.id == d.id))
        .map(|(_, d)| {
            format!(
                "{group} lists deployment {} twice: LiteLLM counts both entries under one id",
                d.id
            )
        })
}

fn not_enforced(cfg: &RouterConfig, limit: Limit) -> Option<String> {
    match cfg.rate_limits() {
        RateLimits::PreCallCheck | RateLimits::UsageBasedV2 => None,
        RateLimits::Weights => Some(format!(
            "the config does not ask LiteLLM to enforce {0} (routing_strategy simple-shuffle, no \
             optional_pre_call_checks: [enforce_model_rate_limits]): LiteLLM 1.100.5 then uses rpm/tpm only to \
             weigh its pick and refuses nothing (seen on the default stack: 8 requests within one minute, \
             all served by limited-a, rpm 3)",
            limit.name()
        )),
        RateLimits::Unmeasured(s) => Some(format!(
            "gauntlet has not measured how LiteLLM 1.100.5 limits {} under routing_strategy {s}",
            limit.name()
        )),
    }
}

/// Why the two-router case cannot run, or is known to fail, under this config.
fn not_shared(cfg: &RouterConfig, limit: Limit) -> Option<String> {
    match (limit, cfg.rate_limits()) {
        (Limit::Tpm, RateLimits::PreCallCheck) => Some(
            "LiteLLM 1.100.5's enforce_model_rate_limits reads a deployment's tokens this minute from the \
             router's own memory (ModelRateLimitingCheck: async_get_cache(tpm_key, local_only=True)), so \
             each router allows the whole tpm (seen: limited-a and limited-b, tpm 60, each called through \
             router_b when router had already served them 62 tokens that minute)"
                .to_owned(),
        ),
        (Limit::Tpm, RateLimits::UsageBasedV2) => Some(
            "under usage-based-routing-v2 a router picks a deployment only while the request's input \
             estimate fits under its tpm, so one router never uses a deployment's tpm up and a second \
             router's excess cannot be told from a fair last call (seen: with router_b counting on a Redis \
             of its own, limited-a got one 31-token call through each router, 62 tokens in a minute \
             against tpm 60, and this case passed)"
                .to_owned(),
        ),
        _ => None,
    }
}

/// Words of filler that make one request cost about `tokens_per_request` by the simulator's
/// count: the marker and the words, one per message, one completion token.
fn filler_words(tokens_per_request: u64) -> u64 {
    tokens_per_request.saturating_sub(3).max(1)
}

/// Tokens one request of the tpm case costs: enough that tpm refuses before rpm would (when
/// the deployment sets both), else about two and a half requests to a deployment's tpm.
fn tokens_per_request(cfg: &RouterConfig, group: &str) -> u64 {
    let deps = cfg.deployments_of(group);
    let tpm = deps.iter().filter_map(|d| d.knobs.tpm).fold(f64::INFINITY, f64::min);
    let rpm = deps.iter().filter_map(|d| d.knobs.rpm).fold(f64::INFINITY, f64::min);
    let t = if rpm.is_finite() {
        (tpm / (rpm - 1.0).max(1.0)).ceil() + 1.0
    } else {
        (tpm / 2.5).ceil()
    };
    (t.max(4.0)) as u64
}

/// Requests that pass the group's budget by two: one minute's worth cannot all be served
/// inside the limits.
fn requests_needed(cfg: &RouterConfig, group: &str, limit: Limit) -> u64 {
    let deps = cfg.deployments_of(group);
    match limit {
        Limit::Rpm => {
            deps.iter()
                .filter_map(|d| d.knobs.rpm)
                .map(|r| r.max(0.0) as u64)
                .sum::<u64>()
                + 2
        }
        Limit::Tpm => {
            let t = tokens_per_request(cfg, group) as f64;
            deps.iter()
                .filter_map(|d| d.knobs.tpm)
                .map(|tpm| (tpm / t).ceil() as u64 + 1)
                .sum::<u64>()
                + 2
        }
    }
}

fn too_many(cfg: &RouterConfig, group: &str, limit: Limit) -> Option<String> {
    let n = requests_needed(cfg, group, limit);
    let words = filler_words(tokens_per_request(cfg, group));
    if n > MAX_REQUESTS {
        Some(format!(
            "{group}'s {} would take {n} requests a minute to exceed (more than {MAX_REQUESTS})",
            limit.name()
        ))
    } else if limit == Limit::Tpm && words > 2000 {
        Some(format!(
            "{group}'s tpm would take prompts of {words} words to exceed in a few requests"
        ))
    } else {
        None
    }
}

/// The UTC minute of a Unix millisecond time: what LiteLLM's `HH-MM` keys count.
fn minute(ms: u64) -> u64 {
    ms / 60_000
}

/// `HH-MM` of a UTC minute, as LiteLLM's keys name it.
fn hh_mm(minute: u64) -> String {
    let of_day = minute % 1440;
    format!("{:02}-{:02}", of_day / 60, of_day % 60)
}

/// Waits for the next minute when less than `need` is left of this one: the limits count per
/// minute, and a case straddling two would be judged against two budgets.
async fn fresh_minute_if_short(need: Duration) {
    let left = 60_000 - now_ms() % 60_000;
    if u128::from(left) < need.as_millis() {
        tracing::debug!(ms = left, "waiting for the next minute");
        tokio::time::sleep(Duration::from_millis(left + 50)).await;
    }
}

/// What one request got.
struct Sent {
    router: &'static str,
    status: u16,
    served_by: Option<String>,
}

/// Sends `n` requests to `group` through `router`, one at a time; for tpm each waits until
/// LiteLLM has counted the tokens of the one before.
async fn send(
    c: &Ctx,
    router: &RouterClient,
    name: &'static str,
    group: &str,
    tag: &Tag,
    limit: Limit,
    n: u64,
) -> anyhow::Result<Vec<Sent>> {
    let words = filler_words(tokens_per_request(&c.config, group));
    let mut out = Vec::new();
    for i in 0..n {
        let mut body = c.chat_body(group, tag, &format!("{name} {i}"));
        if limit == Limit::Tpm {
            let text = body["messages"][0]["content"].as_str().unwrap_or_default().to_owned();
            let filler = vec!["tok"; words.saturating_sub(2) as usize].join(" ");
            body["messages"][0]["content"] = Value::String(format!("{text} {filler}"));
        }
        body["max_tokens"] = Value::from(1);
        let r = router.chat(&body).await?;
        anyhow::ensure!(
            r.status == 200 || r.status == 429,
            "{} answered {} to request {i} (expected 200, or 429 past the {}): {}",
            r.url,
            r.status,
            limit.name(),
            crate::client::excerpt(&r.text)
        );
        let served_by = (r.status == 200).then(|| r.router().model_id).flatten();
        // Only a config that enforces limits has LiteLLM count tokens per deployment.
        if limit == Limit::Tpm
            && matches!(
                c.config.rate_limits(),
                RateLimits::PreCallCheck | RateLimits::UsageBasedV2
            )
            && let Some(id) = &served_by
        {
            counted(c, id).await?;
        }
        out.push(Sent {
            router: name,
            status: r.status,
            served_by,
        });
    }
    Ok(out)
}

/// Waits, bounded, until LiteLLM's tpm counter for deployment `id` in Redis holds every token
/// the simulator served it this minute (its `<id>:<model>:tpm:<HH-MM>` key).
async fn counted(c: &Ctx, id: &str) -> anyhow::Result<()> {
    let Some(d) = c.config.deployment(id) else {
        return Ok(());
    };
    let Some(sim) = d.sim.clone() else {
        return Ok(());
    };
    let start = Instant::now();
    loop {
        let m = minute(now_ms());
        let served: u64 = in_minute(c, &sim, m)
            .await?
            .iter()
            .filter(|e| e.outcome.is_ok())
            .map(|e| e.prompt_tokens + e.completion_tokens)
            .sum();
        let pattern = format!("{id}:*:tpm:{}", hh_mm(m));
        let mut recorded = 0.0;
        if let Resp::List(keys) = redis(c, &["KEYS", &pattern]).await? {
            for k in keys.iter().filter_map(Resp::text) {
                if let Resp::Text(v) = redis(c, &["GET", k]).await? {
                    recorded += v.parse::<f64>().unwrap_or(0.0);
                }
            }
        }
        if recorded >= served as f64 || start.elapsed() > SETTLE {
            if recorded < served as f64 {
                tracing::debug!(recorded, served, "LiteLLM had not counted every token of {id} yet");
            }
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn in_minute(c: &Ctx, sim: &str, m: u64) -> anyhow::Result<Vec<JournalEntry>> {
    let mut v: Vec<JournalEntry> = all_calls_to(c, sim)
        .await?
        .into_iter()
        .filter(|e| minute(e.time_ms) == m)
        .collect();
    v.sort_by_key(|e| e.time_ms);
    Ok(v)
}

/// The calls that broke `d`'s limit in minute `m`: past its rpm, or arriving once the tokens
/// of the calls that had already ended reached its tpm. Each is described with the router
/// (sub-tag) that sent it.
fn over_limit(
    d: &Deployment,
    limit: Limit,
    calls: &[JournalEntry],
    who: &dyn Fn(&JournalEntry) -> String,
) -> Vec<String> {
    let Some(cap) = limit.of(d) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, e) in calls.iter().enumerate() {
        match limit {
            Limit::Rpm if (i + 1) as f64 > cap => out.push(format!("call {} ({})", i + 1, who(e))),
            Limit::Tpm => {
                let before: u64 = calls[..i]
                    .iter()
                    .filter(|p| p.outcome.is_ok() && p.time_ms + p.latency_ms <= e.time_ms)
                    .map(|p| p.prompt_tokens + p.completion_tokens)
                    .sum();
                if before as f64 >= cap {
                    out.push(format!("a call at {before} tokens ({})", who(e)));
                }
            }
            Limit::Rpm => {}
        }
    }
    out
}

/// Checks every deployment of `group` against its limit over minute `m`.
async fn judge(
    c: &Ctx,
    group: &str,
    limit: Limit,
    m: u64,
    routers: &[(&Tag, &str)],
    sent: &[Sent],
) -> anyhow::Result<()> {
    let who = |e: &JournalEntry| {
        routers
            .iter()
            .find(|(t, _)| e.tags.contains(t))
            .map_or_else(|| "another case".to_owned(), |(_, r)| format!("through {r}"))
    };
    let mut broken = Vec::new();
    let mut seen = BTreeMap::new();
    for d in c.config.deployments_of(group) {
        let Some(sim) = d.sim.clone() else { continue };
        let calls = in_minute(c, &sim, m).await?;
        seen.insert(d.id.clone(), calls.len());
        let over = over_limit(d, limit, &calls, &who);
        if !over.is_empty() {
            broken.push(format!(
                "{} ({} {}) got {} calls in minute {}: {}",
                d.id,
                limit.name(),
                limit.of(d).unwrap_or_default(),
                calls.len(),
                hh_mm(m),
                over.join(", ")
            ));
        }
    }
    let refused = sent.iter().filter(|s| s.status == 429).count();
    let ids: Vec<String> = c.config.deployments_of(group).iter().map(|d| d.id.clone()).collect();
    let elsewhere = sent
        .iter()
        .filter(|s| s.served_by.as_ref().is_some_and(|id| !ids.contains(id)))
        .count();
    c.observe("refused_429", refused as f64);
    c.observe("served_by_another_group", elsewhere as f64);
    for (id, n) in &seen {
        c.observe(&format!("calls_in_minute_{id}"), *n as f64);
    }
    let by_router: Vec<String> = routers
        .iter()
        .map(|(_, r)| {
            let mine: Vec<&Sent> = sent.iter().filter(|s| s.router == *r).collect();
            format!(
                "{r}: {} requests, {} served, {} refused",
                mine.len(),
                mine.iter().filter(|s| s.status == 200).count(),
                mine.iter().filter(|s| s.status == 429).count()
            )
        })
        .collect();
    anyhow::ensure!(
        broken.is_empty(),
        "{} ({}; strategy {}, {:?}): {}",
        group,
        by_router.join("; "),
        c.config.strategy,
        c.config.rate_limits(),
        broken.join("; ")
    );
    tracing::info!("{group}: {}", by_router.join("; "));
    Ok(())
}

fn ids_of(c: &Ctx, group: &str) -> Vec<String> {
    c.config.deployments_of(group).iter().map(|d| d.id.clone()).collect()
}

/// A refusal for a limit cools the deployment down for the router's cooldown time (whatever
/// the deployment's own says): a case starts, and a second router goes on, only once those
/// cooldowns ended, so what it sees is the limit's doing.
async fn settle(c: &Ctx, group: &str) -> anyhow::Result<()> {
    let bound = Duration::from_secs_f64(c.config.router_cooldown_s.max(1.0) + 2.0);
    until_no_cooldown(c, &ids_of(c, group), bound).await
}

/// One router: more requests in a minute than the group's limits allow.
async fn one_router(c: Ctx, group: String, limit: Limit) -> anyhow::Result<()> {
    let n = requests_needed(&c.config, &group, limit);
    let tag = c.subtag("a");
    for attempt in 0..2 {
        settle(&c, &group).await?;
        fresh_minute_if_short(Duration::from_secs(2) + Duration::from_millis(300) * n as u32).await;
        let m = minute(now_ms());
        let sent = send(&c, &c.router, "router", &group, &tag, limit, n).await?;
        if minute(now_ms()) != m && attempt == 0 {
            tracing::info!("the minute turned during the burst; once more");
            continue;
        }
        return judge(&c, &group, limit, m, &[(&tag, "router")], &sent).await;
    }
    unreachable!("the second attempt returns")
}

/// Two routers on one Redis: the first uses up the minute's limits, the second must not serve
/// past them.
async fn two_routers(c: Ctx, group: String, limit: Limit) -> anyhow::Result<()> {
    let b = c.second_router()?;
    let n = requests_needed(&c.config, &group, limit) - 1;
    let (tag_a, tag_b) = (c.subtag("a"), c.subtag("b"));
    let need = Duration::from_secs_f64(c.config.router_cooldown_s + 4.0) + Duration::from_millis(600) * n as u32;
    for attempt in 0..2 {
        settle(&c, &group).await?;
        fresh_minute_if_short(need).await;
        let m = minute(now_ms());
        let mut sent = send(&c, &c.router, "router", &group, &tag_a, limit, n).await?;
        settle(&c, &group).await?;
        sent.extend(send(&c, &b, "router_b", &group, &tag_b, limit, n).await?);
        if minute(now_ms()) != m && attempt == 0 {
            tracing::info!("the minute turned during the bursts; once more");
            continue;
        }
        return judge(&c, &group, limit, m, &[(&tag_a, "router"), (&tag_b, "router_b")], &sent).await;
    }
    unreachable!("the second attempt returns")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> RouterConfig {
        RouterConfig::parse("r.yaml", text).unwrap()
    }

    #[test]
    fn budgets_and_gates() {
        let m = crate::stack::manifest::Manifest::builtin().unwrap();
        let c = RouterConfig::parse("router.yaml", &m.router_config.text).unwrap();
        assert_eq!(requests_needed(&c, "chat-limited", Limit::Rpm), 8);
        assert_eq!(
            tokens_per_request(&c, "chat-limited"),
            31,
            "tpm 60 refuses before rpm 3 does"
        );
        assert_eq!(requests_needed(&c, "chat-limited", Limit::Tpm), 8);
        assert!(not_enforced(&c, Limit::Rpm).unwrap().contains("simple-shuffle"));
        assert!(
            c.traffic_gate("chat-limited", crate::suites::support::SINGLE_RPM)
                .is_some()
        );
        let v2 = cfg(
            "model_list:\n  - {model_name: g, litellm_params: {model: x, rpm: 1}, model_info: {id: a}}\nrouter_settings: {routing_strategy: usage-based-routing-v2}\n",
        );
        assert!(not_enforced(&v2, Limit::Rpm).is_none());
        assert!(not_shared(&v2, Limit::Rpm).is_none());
        assert!(not_shared(&v2, Limit::Tpm).unwrap().contains("cannot be told"));
        let pre = cfg(
            "model_list:\n  - {model_name: g, litellm_params: {model: x, tpm: 100000}, model_info: {id: a}}\nrouter_settings: {optional_pre_call_checks: [enforce_model_rate_limits]}\n",
        );
        assert_eq!(pre.rate_limits(), RateLimits::PreCallCheck);
        assert!(not_shared(&pre, Limit::Tpm).is_some());
        assert!(too_many(&pre, "g", Limit::Tpm).unwrap().contains("words"));
        assert_eq!(
            hh_mm(minute(1_795_533_181_000)),
            "15-13",
            "as LiteLLM named the key then"
        );
    }

    #[test]
    fn limits_are_judged_per_call() {
        let c =
            cfg("model_list:\n  - {model_name: g, litellm_params: {model: x, rpm: 2, tpm: 50}, model_info: {id: a}}\n");
        let d = c.deployment("a").unwrap();
        let call = |t: u64, tokens: u64| JournalEntry {
            seq: t,
            time_ms: t,
            deployment: "a".into(),
            path: String::new(),
            model: String::new(),
            stream: false,
            user: None,
            metadata: None,
            tag_matched: None,
            tags: vec![],
            prompt_excerpt: String::new(),
            headers: vec![],
            prompt_tokens: tokens,
            completion_tokens: 0,
            cache_read_input_tokens: 0,
            cache_creation_input_tokens: 0,
            outcome: crate::sim::Outcome::Ok,
            latency_ms: 10,
            charset: Default::default(),
            tokenizer: Default::default(),
            reply_fnv: String::new(),
        };
        let who = |_: &JournalEntry| "x".to_owned();
        let calls = [call(0, 30), call(100, 30), call(200, 30)];
        assert_eq!(over_limit(d, Limit::Rpm, &calls, &who), ["call 3 (x)"]);
        assert_eq!(over_limit(d, Limit::Tpm, &calls, &who), ["a call at 60 tokens (x)"]);
        // A call that had not ended when the next arrived does not count against it yet.
        let overlapping = [call(0, 30), call(5, 30), call(200, 5)];
        assert_eq!(over_limit(d, Limit::Tpm, &overlapping, &who).len(), 1);
    }
}
