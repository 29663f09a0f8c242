//! Cooldown, per model group LiteLLM can cool down (two or more deployments, a cooldown time,
//! cooldowns not disabled), with the simulator's journal and LiteLLM's own cooldown keys in
//! Redis (`deployment:<id>:cooldown`: its value and its PTTL) as the evidence:
//! - per error class — 429, 500, a timeout, a connection reset: `allowed_fails` + 1
//!   failures of that class, one per request, cool the deployment down (not sooner), for the
//!   time the config gives it, and the next request is not sent to it
//! - a 429's `Retry-After`: the cooldown lasts what LiteLLM's priority says (the deployment's
//!   own `cooldown_time`, else the header, else the router's), and the deployment is tried
//!   again when it ends, not before
//! - a request whose attempt and retry both fail on the deployment counts two failures
//! - a failure during the cooldown (a request that was already in flight) restarts it: the
//!   deployment stays out until that failure's cooldown ends — and, when that failure says a
//!   longer `Retry-After`, until that one ends (LiteLLM #40130)
//! - through Redis: a second router honours a cooldown within its Redis read interval, for
//!   the time that is left of it (not the full length again, not an in-memory default)
//!
//! Each trigger request carries its own sub-tag whose rule fails only its first call, so a
//! request makes the deployment fail exactly once whatever LiteLLM retries; failures are
//! counted from the journal, never assumed. Every case owns its group: it counts every call
//! the deployment gets, and the cooldowns it causes are global.

use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::support::{
    CHAIN_RPM, Cooldown, LONG_WAIT_S, all_calls_to, calls, cooldown_of, now_ms, path, wait_for_cooldown,
};
use crate::client::RouterClient;
use crate::config::{Deployment, RouterConfig};
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, CaseFuture, Plan};
use crate::sim::{Behaviour, Fault, JournalEntry, Outcome, Rule, When};
use crate::stack::role::Role;
use crate::tag::Tag;

/// How long LiteLLM may take to write a cooldown after the failure that earned it (it is
/// written from a failure callback on another thread).
const SETTLE: Duration = Duration::from_secs(3);

/// Slack on deadlines read from the router's clock and the simulator's: the same host, but a
/// request picked just before a deadline reaches the simulator a little after it.
const SKEW_MS: u64 = 250;

/// How long after a cooldown's end the deployment must be tried again: the case's probing
/// interval and scheduling on a loaded 2-core box.
const MARGIN: Duration = Duration::from_secs(3);

/// Trigger requests a case sends at most before it calls the deployment unreachable.
const MAX_TRIGGERS: usize = 40;

/// An error class LiteLLM counts towards `allowed_fails`, as the simulator produces it.
#[derive(Clone)]
struct Class {
    /// The case's last name segment.
    name: &'static str,
    /// How LiteLLM names it, for messages.
    litellm: &'static str,
    fault: Fault,
    /// Several trigger requests at a time: each failure takes the deployment's timeout.
    parallel: bool,
}

fn classes() -> Vec<Class> {
    vec![
        Class {
            name: "rate_limit_429",
            litellm: "RateLimitError (429, no Retry-After)",
            fault: Fault::status(429),
            parallel: false,
        },
        Class {
            name: "server_error_500",
            litellm: "InternalServerError (500)",
            fault: Fault::status(500),
            parallel: false,
        },
        Class {
            name: "timeout",
            litellm: "Timeout (no answer within the deployment's timeout)",
            fault: Fault::Hang,
            parallel: true,
        },
        Class {
            name: "connection_reset",
            litellm: "connection error (TCP reset, no answer)",
            fault: Fault::Reset,
            parallel: false,
        },
    ]
}

pub fn cases(plan: &Plan) -> Vec<Case> {
    let cfg = &plan.config;
    let mut out = Vec::new();
    for group in cfg.groups() {
        let deps = cfg.deployments_of(&group);
        let mut ids: Vec<&str> = deps.iter().map(|d| d.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() < 2 || !cfg.can_cool_down(&group) {
            continue;
        }
        let longest = deps.iter().map(|d| d.cooldown_s).fold(0.0, f64::max);
        let base = format!("cooldown::{group}");
        let long = |name: &str, seconds: f64| {
            (seconds > LONG_WAIT_S).then(|| {
                format!("{group} takes about {seconds:.0}s here; run it with `gauntlet --ignored --exact {name}`")
            })
        };
        let gate = cfg.unusable(&group, CHAIN_RPM);
        let fails_gate = |class: &Class| failure_count_gate(cfg, &group, class);
        let case = |name: String, f: fn(Ctx, String) -> CaseFuture| {
            let g = group.clone();
            Case::new(name, move |c| f(c, g.clone()))
                .needs(&[Role::Simulator])
                .owns(&[&group])
        };
        let mut mine = Vec::new();
        for class in classes() {
            let name = format!("{base}::{}", class.name);
            let timeout = deps.iter().map(|d| d.timeout.seconds).fold(0.0, f64::max);
            let wait = longest + if class.parallel { timeout } else { 0.0 };
            let g = group.clone();
            let cl = class.clone();
            mine.push(
                Case::new(name.clone(), move |c| per_class(c, g.clone(), cl.clone()))
                    .needs(&[Role::Simulator])
                    .owns(&[&group])
                    .cost(wait + 1.0)
                    .ignore_if(
                        gate.clone()
                            .or_else(|| fails_gate(&class))
                            .or_else(|| long(&name, wait))
                            .or_else(|| (class.name == "timeout").then(|| TIMEOUT_UNSETTLED.to_owned())),
                    ),
            );
        }
        let rate_limit = &classes()[0];
        let name = format!("{base}::retry_after");
        let header = distinct_header(cfg) as f64;
        let header_cooldown = deps
            .iter()
            .map(|d| cfg.cooldown_for(d, Some(header)))
            .fold(0.0, f64::max);
        mine.push(
            case(name.clone(), |c, g| Box::pin(retry_after(c, g)))
                .cost(header_cooldown + 1.0)
                .ignore_if(
                    gate.clone()
                        .or_else(|| fails_gate(rate_limit))
                        .or_else(|| long(&name, longest)),
                ),
        );
        let name = format!("{base}::retried_failures_count");
        mine.push(
            case(name.clone(), |c, g| Box::pin(retried_failures_count(c, g)))
                .ignore_if(
                    gate.clone()
                        .or_else(|| fails_gate(&classes()[1]))
                        .or_else(|| retried_gate(cfg, &group))
                        .or_else(|| long(&name, longest)),
                )
                .ignore(
                    "LiteLLM 1.100.5 counts one failure per request, however many of its calls failed \
                     (seen: fast-a(error:500) → fast-a(error:500) → fast-b(ok) in one request, allowed_fails \
                     1, and no deployment:fast-a:cooldown 3s later; a third failure, in the next request, \
                     cools it down): a request's logging object reports its failure once \
                     (has_logged_sync_failure), and only that report reaches deployment_callback_on_failure",
                ),
        );
        let name = format!("{base}::re_cooldown");
        mine.push(
            case(name.clone(), |c, g| Box::pin(re_cooldown(c, g, false)))
                .ignore_if(
                    gate.clone()
                        .or_else(|| fails_gate(&classes()[1]))
                        .or_else(|| long(&name, longest * 2.0)),
                )
                .ignore(
                    "LiteLLM 1.100.5 keeps a cooldown's first deadline in the router that set it \
                     (seen: fast-a failed again 0.96s into its 3s cooldown, which should keep it out until \
                     3.96s; Redis had the restarted cooldown, 3s from +0.97s, yet the router called fast-a at \
                     3.05s): InMemoryCache.set_cache keeps an unexpired key's TTL (allow_ttl_override), so \
                     the rewritten cooldown leaves the router's memory at the old deadline",
                ),
        );
        let name = format!("{base}::re_cooldown::longer_retry_after");
        let header_ignored = deps.iter().all(|d| d.own_cooldown_s.is_some()).then(|| {
            format!("every deployment of {group} sets its own cooldown_time, which LiteLLM puts before Retry-After")
        });
        mine.push(
            case(name.clone(), |c, g| Box::pin(re_cooldown(c, g, true)))
                .ignore_if(
                    gate.clone()
                        .or_else(|| fails_gate(rate_limit))
                        .or(header_ignored.clone())
                        .or_else(|| long(&name, 5.0)),
                )
                .ignore(
                    "LiteLLM 1.100.5 keeps the first, shorter Retry-After deadline (#40130) (seen: fast-a \
                     cooled down for Retry-After: 1, then a 429 with Retry-After: 4 ended 0.46s in, which \
                     should keep it out until 4.46s; Redis had the restarted cooldown, 4s from +0.47s, yet \
                     the router called fast-a at 1.03s): the router's in-memory copy keeps its first TTL \
                     (InMemoryCache.allow_ttl_override)",
                ),
        );
        if plan.manifest.service_with(Role::SecondRouter).is_some() {
            let name = format!("{base}::shared_via_redis");
            let interval = cfg.redis_read_interval_s;
            let too_short = header_ignored.and_then(|_| {
                let t = deps.iter().map(|d| d.cooldown_s).fold(0.0, f64::max);
                (t <= interval + 1.0).then(|| {
                    format!(
                        "{group} cools down for {t}s (its own cooldown_time, which Retry-After cannot lengthen), \
                         while another LiteLLM reads a cooldown from Redis at most every {interval}s: a second \
                         router may never see it"
                    )
                })
            });
            let g = group.clone();
            mine.push(
                Case::new(name.clone(), move |c| shared_via_redis(c, g.clone()))
                    .needs(&[Role::Simulator, Role::SecondRouter])
                    .owns(&[&group])
                    .cost(shared_length(cfg, &group) + 1.0)
                    .ignore_if(
                        gate.clone()
                            .or_else(|| fails_gate(rate_limit))
                            .or(too_short)
                            .or_else(|| long(&name, shared_length(cfg, &group))),
                    ),
            );
        }
        let unmodelled = unmodelled(cfg, &group);
        let mut mine: Vec<Case> = mine.into_iter().map(|c| c.ignore_if(unmodelled.clone())).collect();
        // The group's cases hold it one after another: the longest go first, so the chain
        // never idles waiting for a long case's turn to come near the end of the run, and
        // retry_after, whose short cooldown leaves LiteLLM's failure count behind it, goes last
        // of those that run.
        mine.sort_by_key(|c| match c.name.rsplit("::").next().unwrap_or_default() {
            _ if c.ignored.is_some() => 4,
            "shared_via_redis" => 0,
            "timeout" => 1,
            "retry_after" => 3,
            _ => 2,
        });
        out.extend(mine);
    }
    out
}

/// Seen in CI on the order_priority fixture while every suite ran (it passed alone and on the
/// default stack): two hung requests, sent in parallel, left no cooldown key 3 s after the
/// last. Parallel timeouts race LiteLLM's per-request failure count (a request's retries count
/// once, see docs/litellm-1.100.5.md §17), so the case cannot yet tell LiteLLM's promise from
/// its own timing.
const TIMEOUT_UNSETTLED: &str = "seen failing under load in CI (order_priority fixture: oai-gpt-4o-mini-eu(hang) → \
     oai-gpt-4o-mini-eu(hang), no deployment cooldown key 3s after the last) while passing alone: parallel timeouts \
     race LiteLLM's once-per-request failure count; run it with --ignored";

/// Why these cases cannot promise anything for `group`, if they cannot. They were measured on
/// OpenAI-compatible deployments under simple-shuffle; elsewhere LiteLLM 1.100.5 was seen to
/// map the same upstream faults to other exceptions (a reset at an Azure deployment: not
/// cooled down) and to cool down differently (latency-based routing: 500s and timeouts not
/// cooled, failures spread by the strategy), so a failure there would blame the user's config
/// for what gauntlet does not model.
fn unmodelled(cfg: &RouterConfig, group: &str) -> Option<String> {
    use crate::config::provider::Provider;
    if cfg.strategy != crate::config::routing::Strategy::SimpleShuffle {
        return Some(format!(
            "cooldown per error class is modelled under simple-shuffle only; this config routes with {}",
            cfg.strategy
        ));
    }
    let other: Vec<String> = cfg
        .deployments_of(group)
        .iter()
        .filter(|d| !matches!(d.provider, Provider::OpenAi | Provider::HostedVllm))
        .map(|d| format!("{} ({})", d.id, d.provider))
        .collect();
    (!other.is_empty()).then(|| {
        format!(
            "cooldown per error class is modelled for OpenAI-compatible deployments only; {} map upstream \
             faults to other exceptions in LiteLLM 1.100.5 (a reset at an Azure deployment was not cooled down)",
            other.join(", ")
        )
    })
}

/// Why the failures needed before a cooldown cannot be told from the config, if they cannot.
fn failure_count_gate(cfg: &RouterConfig, group: &str, class: &Class) -> Option<String> {
    if cfg.allowed_fails_policy {
        return Some(
            "the config sets allowed_fails_policy (allowed failures per error class), which gauntlet does not model"
                .into(),
        );
    }
    let rate_limited = matches!(class.fault, Fault::Error { status: 429, .. });
    cfg.deployments_of(group)
        .iter()
        .find(|d| cfg.counted_allowed_fails(d).is_none() && !rate_limited)
        .map(|d| {
            format!(
                "LiteLLM counts no allowed_fails for {} (none set, or the router's equals LiteLLM's default 3, \
                 which it takes for unset): after a {} it then cools a deployment down by its failure rate \
                 over the minute's traffic from every case, not after a number of failures",
                d.id, class.litellm
            )
        })
}

/// Why one request cannot make its deployment fail allowed_fails + 1 times, if it cannot.
fn retried_gate(cfg: &RouterConfig, group: &str) -> Option<String> {
    let deps = cfg.deployments_of(group);
    let knobs: Vec<_> = deps.iter().map(|d| d.knobs).collect();
    let first = crate::config::routing::first_level(&knobs);
    let mut ids: Vec<&str> = first.iter().map(|i| deps[*i].id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.len() != 1 {
        return Some(format!(
            "{group}'s first order level has {} deployments: a retry may go to another, so one request \
             cannot be made to fail on one deployment twice",
            ids.len()
        ));
    }
    let af = cfg.counted_allowed_fails(deps[first[0]]).unwrap_or(0);
    if af == 0 {
        return Some(format!(
            "{} allows no failure: its first cools it down, so its retries' failures have nothing to add",
            deps[first[0]].id
        ));
    }
    let retries = cfg.retries(group, "InternalServerError");
    (retries < af).then(|| {
        format!(
            "{group} retries a 500 {retries} times: one request makes at most {} calls, fewer than the \
             allowed_fails + 1 = {} that cool a deployment down",
            retries + 1,
            af + 1
        )
    })
}

/// The Retry-After a case sends to make a cooldown that LiteLLM's priority can tell from the
/// router's (an own cooldown_time wins whatever the header says).
fn distinct_header(cfg: &RouterConfig) -> u64 {
    if cfg.router_cooldown_s >= 2.0 {
        1
    } else {
        cfg.router_cooldown_s.ceil() as u64 + 2
    }
}

/// The Retry-After that makes a cooldown outlast a second router's Redis read interval.
fn shared_header(cfg: &RouterConfig) -> u64 {
    cfg.redis_read_interval_s.ceil() as u64 + 2
}

/// How long the shared case's cooldown lasts for `group` (what the case waits).
fn shared_length(cfg: &RouterConfig, group: &str) -> f64 {
    cfg.deployments_of(group)
        .iter()
        .map(|d| cfg.cooldown_for(d, Some(shared_header(cfg) as f64)))
        .fold(0.0, f64::max)
}

/// The deployment a case makes fail: one the strategy sends traffic to — under simple-shuffle
/// the one with the largest share, otherwise whichever serves a healthy request right now.
async fn pick_victim(c: &Ctx, group: &str) -> anyhow::Result<Deployment> {
    let deps = c.config.deployments_of(group);
    let id = match c.config.expected_shares(group) {
        Some(shares) => shares
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|s| s.0.clone())
            .unwrap_or_else(|| deps[0].id.clone()),
        None => {
            let probe = c.subtag("probe");
            let r = c
                .router
                .chat(&c.chat_body(group, &probe, "which deployment serves"))
                .await?;
            r.expect_status(200)?;
            r.router()
                .model_id
                .ok_or_else(|| anyhow::anyhow!("{}: no x-litellm-model-id header", r.url))?
        }
    };
    let d = deps
        .into_iter()
        .find(|d| d.id == id)
        .ok_or_else(|| anyhow::anyhow!("{group} was served by {id}, which is not one of its deployments"))?;
    anyhow::ensure!(d.sim.is_some(), "{group}'s deployment {} is not on the simulator", d.id);
    Ok(d.clone())
}

fn sim_of(d: &Deployment) -> String {
    d.sim.clone().unwrap_or_default()
}

/// Failures needed before LiteLLM cools `d` down (a class without `allowed_fails` is gated
/// off but the 429).
fn failures_needed(cfg: &RouterConfig, d: &Deployment) -> u32 {
    match cfg.counted_allowed_fails(d) {
        Some(n) => n + 1,
        // Without allowed_fails a 429 cools a load-balanced deployment down at once.
        None => 1,
    }
}

/// Waits until LiteLLM no longer counts `d`'s earlier failures (from other cases, or an
/// earlier step): a count starting above zero would cool it down early. LiteLLM keeps that
/// count in memory only, so the wait is its known lifetime after the last failed call.
async fn forget_failures(c: &Ctx, d: &Deployment) -> anyhow::Result<()> {
    // A hang fails when the router gives up on it, at the deployment's timeout.
    let timeout_ms = (d.timeout.seconds * 1000.0) as u64;
    let last = all_calls_to(c, &sim_of(d))
        .await?
        .iter()
        .filter(|e| !e.outcome.is_ok() && e.outcome != Outcome::Pending)
        .map(|e| match e.outcome {
            Outcome::Hang => e.time_ms + timeout_ms,
            _ => e.time_ms + e.latency_ms,
        })
        .max();
    let Some(last) = last else {
        return Ok(());
    };
    let until = last + (c.config.failure_memory_s(d) * 1000.0) as u64 + 100;
    let now = now_ms();
    if until > now {
        let wait = Duration::from_millis((until - now).min(60_000));
        tracing::debug!(
            ms = wait.as_millis() as u64,
            "waiting for LiteLLM to forget earlier failures"
        );
        tokio::time::sleep(wait).await;
    }
    Ok(())
}

/// A rule failing only the first call of requests carrying `tag`.
fn once(tag: &Tag, behaviour: Behaviour) -> Rule {
    Rule {
        tag: Some(tag.clone()),
        when: When::First { first: 1 },
        behaviour,
    }
}

/// What a case makes its deployment do: fail with `fault`, once per request, `n` times;
/// several requests at a time when `parallel`; sub-tags named after `label`.
struct Trigger<'a> {
    fault: &'a Fault,
    n: u32,
    parallel: bool,
    label: &'a str,
}

/// Makes `victim` fail as `t` says, through `router`, until the journal shows `t.n` such
/// failures. Returns the failed calls, in arrival order, and the sub-tags used (for clean-up).
async fn fail_times(
    c: &Ctx,
    router: &RouterClient,
    group: &str,
    victim: &Deployment,
    t: Trigger<'_>,
) -> anyhow::Result<(Vec<JournalEntry>, Vec<Tag>)> {
    let Trigger {
        fault,
        n,
        parallel,
        label,
    } = t;
    let sim = c.sim()?;
    let victim_sim = sim_of(victim);
    let want = fault.outcome();
    let mut tags: Vec<Tag> = Vec::new();
    let mut failed: Vec<JournalEntry> = Vec::new();
    while failed.len() < n as usize && tags.len() < MAX_TRIGGERS {
        let batch = if parallel { n as usize - failed.len() } else { 1 };
        let mut sends = Vec::new();
        for _ in 0..batch {
            let tag = c.subtag(&format!("{label}{}", tags.len()));
            sim.add_rule(&victim_sim, &once(&tag, Behaviour::fault(fault.clone())))
                .await?;
            let body = c.chat_body(group, &tag, &format!("cooldown trigger {}", tags.len()));
            tags.push(tag);
            let r = router.clone();
            sends.push(async move { r.chat(&body).await });
        }
        for r in join_all(sends).await {
            let r = r?;
            if r.status != 200 {
                tracing::debug!(
                    status = r.status,
                    "a trigger request failed: {}",
                    crate::client::excerpt(&r.text)
                );
            }
        }
        failed.clear();
        for t in &tags {
            failed.extend(
                calls(c, t)
                    .await?
                    .into_iter()
                    .filter(|e| e.deployment == victim_sim && e.outcome == want),
            );
        }
    }
    failed.sort_by_key(|e| e.time_ms);
    anyhow::ensure!(
        failed.len() >= n as usize,
        "{} failed only {} of the {n} times needed within {} requests to {group}: the router sent it too \
         little traffic",
        victim.id,
        failed.len(),
        tags.len()
    );
    Ok((failed, tags))
}

async fn clear(c: &Ctx, tags: &[Tag]) -> anyhow::Result<()> {
    let sim = c.sim()?;
    for t in tags {
        sim.clear_tag(t).await?;
    }
    Ok(())
}

/// Sends one request and returns whether it called `victim` (and the reply's status).
async fn touches(
    c: &Ctx,
    router: &RouterClient,
    group: &str,
    victim: &Deployment,
    label: &str,
) -> anyhow::Result<(bool, u16, Vec<JournalEntry>)> {
    let tag = c.subtag(label);
    let r = router.chat(&c.chat_body(group, &tag, label)).await?;
    let journal = calls(c, &tag).await?;
    let victim_sim = sim_of(victim);
    Ok((journal.iter().any(|e| e.deployment == victim_sim), r.status, journal))
}

fn secs(ms: u64, from_ms: u64) -> f64 {
    (ms as f64 - from_ms as f64) / 1000.0
}

/// One error class: `allowed_fails` + 1 failures cool the deployment down, not fewer, for the
/// config's time, and the next request goes elsewhere.
async fn per_class(c: Ctx, group: String, class: Class) -> anyhow::Result<()> {
    let v = pick_victim(&c, &group).await?;
    forget_failures(&c, &v).await?;
    let need = failures_needed(&c.config, &v);
    let (failed, tags) = fail_times(
        &c,
        &c.router,
        &group,
        &v,
        Trigger {
            fault: &class.fault,
            n: need,
            parallel: class.parallel,
            label: "f",
        },
    )
    .await?;
    let all = path(&failed);
    let cd = wait_for_cooldown(&c, &v.id, SETTLE).await?;
    clear(&c, &tags).await?;
    let Some(cd) = cd else {
        anyhow::bail!(
            "{} was not cooled down after {} failures of class {} (allowed_fails {:?}): no \
             deployment:{}:cooldown in Redis {}s after the last; its failed calls: {all}",
            v.id,
            failed.len(),
            class.litellm,
            c.config.counted_allowed_fails(&v),
            v.id,
            SETTLE.as_secs()
        );
    };
    let nth = &failed[need as usize - 1];
    anyhow::ensure!(
        cd.since_ms() + 50 >= nth.time_ms,
        "{} was cooled down {:.3}s before its failure #{need} arrived (allowed_fails {:?} lets {} pass): \
         cooldown written at {:.3}, failures at {}",
        v.id,
        secs(nth.time_ms, cd.since_ms()),
        c.config.counted_allowed_fails(&v),
        need - 1,
        cd.since_s,
        failed
            .iter()
            .map(|e| format!("{:.3}", e.time_ms as f64 / 1000.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let want = c.config.cooldown_for(&v, None);
    anyhow::ensure!(
        (cd.length_s - want).abs() < 1e-6 && cd.left_ms <= (want * 1000.0) as i64 + 50,
        "{} was cooled down for {}s ({} ms left in Redis) after {}; the config gives it {want}s \
         (its own cooldown_time {:?}, the router's {}s)",
        v.id,
        cd.length_s,
        cd.left_ms,
        class.litellm,
        v.own_cooldown_s,
        c.config.router_cooldown_s
    );
    let (hit, status, journal) = touches(&c, &c.router, &group, &v, "after").await?;
    anyhow::ensure!(
        !hit,
        "{} was called by the next request while cooling down ({} ms of its {}s left): {} (client got {status})",
        v.id,
        cd.left_ms,
        cd.length_s,
        path(&journal)
    );
    c.observe("failures_before_cooldown", failed.len() as f64);
    c.observe("cooldown_s", cd.length_s);
    tracing::info!(status = %cd.status, "{} cooled down for {}s after {} × {}", v.id, cd.length_s, failed.len(), class.litellm);
    Ok(())
}

/// Probes `group` through `router` every 100 ms until it calls `victim` (a healthy request
/// now), for at most until `deadline_ms`; returns that call.
async fn until_called(
    c: &Ctx,
    router: &RouterClient,
    group: &str,
    victim: &Deployment,
    tag: &Tag,
    deadline_ms: u64,
) -> anyhow::Result<Option<JournalEntry>> {
    let victim_sim = sim_of(victim);
    let mut n = 0;
    while now_ms() < deadline_ms {
        n += 1;
        router.chat(&c.chat_body(group, tag, &format!("probe {n}"))).await?;
        if let Some(e) = calls(c, tag).await?.into_iter().find(|e| e.deployment == victim_sim) {
            return Ok(Some(e));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(None)
}

/// A 429 with Retry-After: the cooldown lasts what LiteLLM's priority gives, and the
/// deployment comes back when it ends.
async fn retry_after(c: Ctx, group: String) -> anyhow::Result<()> {
    let v = pick_victim(&c, &group).await?;
    forget_failures(&c, &v).await?;
    let header = distinct_header(&c.config);
    let fault = Fault::Error {
        status: 429,
        retry_after: Some(header),
        message: None,
    };
    let (failed, tags) = fail_times(
        &c,
        &c.router,
        &group,
        &v,
        Trigger {
            fault: &fault,
            n: failures_needed(&c.config, &v),
            parallel: false,
            label: "ra",
        },
    )
    .await?;
    let cd = wait_for_cooldown(&c, &v.id, SETTLE).await?;
    clear(&c, &tags).await?;
    let Some(cd) = cd else {
        anyhow::bail!(
            "{} was not cooled down after {} × 429 with Retry-After: {header}: {}",
            v.id,
            failed.len(),
            path(&failed)
        );
    };
    let want = c.config.cooldown_for(&v, Some(header as f64));
    anyhow::ensure!(
        (cd.length_s - want).abs() < 1e-6,
        "{} was cooled down for {}s after a 429 with Retry-After: {header}; LiteLLM's order (the \
         deployment's cooldown_time {:?}, else Retry-After, else the router's {}s) gives {want}s",
        v.id,
        cd.length_s,
        v.own_cooldown_s,
        c.config.router_cooldown_s
    );
    c.observe("cooldown_s", cd.length_s);
    if c.config.expected_shares(&group).is_none() {
        tracing::info!(strategy = %c.config.strategy, "not waiting for {} to be picked again", v.id);
        return Ok(());
    }
    let back = until_called(
        &c,
        &c.router,
        &group,
        &v,
        &c.subtag("back"),
        cd.until_ms() + MARGIN.as_millis() as u64,
    )
    .await?;
    let Some(back) = back else {
        anyhow::bail!(
            "{} was not tried again within {}s of its {}s cooldown's end",
            v.id,
            MARGIN.as_secs(),
            cd.length_s
        );
    };
    anyhow::ensure!(
        back.time_ms + SKEW_MS >= cd.until_ms(),
        "{} was called {:.2}s into its {}s cooldown (Retry-After: {header})",
        v.id,
        secs(back.time_ms, cd.since_ms()),
        cd.length_s
    );
    c.observe("cooldown_observed_s", secs(back.time_ms, cd.since_ms()));
    Ok(())
}

/// A request whose attempt and retries all fail on the deployment counts each failure.
async fn retried_failures_count(c: Ctx, group: String) -> anyhow::Result<()> {
    let v = pick_victim(&c, &group).await?;
    forget_failures(&c, &v).await?;
    let need = c.config.counted_allowed_fails(&v).unwrap_or(0) + 1;
    let tag = c.subtag("retried");
    let sim = c.sim()?;
    sim.add_rule(
        &sim_of(&v),
        &Rule {
            tag: Some(tag.clone()),
            when: When::First { first: u64::from(need) },
            behaviour: Behaviour::fault(Fault::status(500)),
        },
    )
    .await?;
    c.router.chat(&c.chat_body(&group, &tag, "failing retries")).await?;
    let journal = calls(&c, &tag).await?;
    let failed = journal
        .iter()
        .filter(|e| e.deployment == sim_of(&v) && e.outcome.is_error())
        .count();
    let cd = wait_for_cooldown(&c, &v.id, SETTLE).await?;
    sim.clear_tag(&tag).await?;
    anyhow::ensure!(
        failed == need as usize,
        "one request made {} fail {failed} times, not the {need} this case needs: {}",
        v.id,
        path(&journal)
    );
    anyhow::ensure!(
        cd.is_some(),
        "{} failed {failed} times within one request (its attempt and retries: {}) and was not cooled \
         down (allowed_fails {:?}): no deployment:{}:cooldown {}s later",
        v.id,
        path(&journal),
        c.config.counted_allowed_fails(&v),
        v.id,
        SETTLE.as_secs()
    );
    Ok(())
}

/// A failure that lands during the cooldown (its request was in flight when the cooldown
/// began) restarts it. With `longer_header`, both failures are 429s and the second says a
/// longer Retry-After than the first.
async fn re_cooldown(c: Ctx, group: String, longer_header: bool) -> anyhow::Result<()> {
    let v = pick_victim(&c, &group).await?;
    forget_failures(&c, &v).await?;
    let (first, second, second_len) = if longer_header {
        let r1 = distinct_header(&c.config);
        let r2 = r1 + 3;
        let f = |s| Fault::Error {
            status: 429,
            retry_after: Some(s),
            message: None,
        };
        (f(r1), f(r2), c.config.cooldown_for(&v, Some(r2 as f64)))
    } else {
        (Fault::status(500), Fault::status(500), c.config.cooldown_for(&v, None))
    };
    let first_len = c.config.cooldown_for(
        &v,
        match &first {
            Fault::Error { retry_after, .. } => retry_after.map(|s| s as f64),
            _ => None,
        },
    );
    // The second failure must land well inside the first cooldown.
    let latency = ((first_len * 1000.0) as u64 / 2).clamp(300, 1000);
    let sim = c.sim()?;
    let victim_sim = sim_of(&v);
    let mut slow = None;
    let mut slow_tags = Vec::new();
    for i in 0..8 {
        let tag = c.subtag(&format!("slow{i}"));
        sim.add_rule(
            &victim_sim,
            &once(
                &tag,
                Behaviour {
                    latency_ms: Some(latency),
                    ..Behaviour::fault(second.clone())
                },
            ),
        )
        .await?;
        slow_tags.push(tag.clone());
        let body = c.chat_body(&group, &tag, "in flight when the cooldown begins");
        let router = c.router.clone();
        let task = tokio::spawn(async move { router.chat(&body).await });
        let start = Instant::now();
        let first_call = loop {
            if let Some(e) = calls(&c, &tag).await?.into_iter().next() {
                break Some(e);
            }
            if start.elapsed() > SETTLE {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if first_call.as_ref().is_some_and(|e| e.deployment == victim_sim) {
            slow = Some((tag, task));
            break;
        }
        task.await??;
    }
    let Some((slow_tag, task)) = slow else {
        anyhow::bail!("none of 8 requests to {group} went to {} first", v.id);
    };
    let (failed, tags) = fail_times(
        &c,
        &c.router,
        &group,
        &v,
        Trigger {
            fault: &first,
            n: failures_needed(&c.config, &v),
            parallel: false,
            label: "q",
        },
    )
    .await?;
    let cd1 = wait_for_cooldown(&c, &v.id, SETTLE)
        .await?
        .ok_or_else(|| anyhow::anyhow!("{} was not cooled down after {}", v.id, path(&failed)))?;
    task.await??;
    let late = calls(&c, &slow_tag)
        .await?
        .into_iter()
        .find(|e| e.deployment == victim_sim)
        .ok_or_else(|| anyhow::anyhow!("the in-flight request's call to {} left the journal", v.id))?;
    let late_at = late.time_ms + late.latency_ms;
    anyhow::ensure!(
        late.outcome.is_error() && late_at < cd1.until_ms(),
        "the in-flight call did not fail inside the first cooldown (it ended {:+.2}s into it, {}): the case \
         cannot judge a second failure",
        secs(late_at, cd1.since_ms()),
        late.outcome
    );
    // Redis' view once the second failure is written, for the message.
    let start = Instant::now();
    let mut cd2: Option<Cooldown> = None;
    while start.elapsed() < SETTLE {
        cd2 = cooldown_of(&c, &v.id).await?;
        if cd2.as_ref().is_some_and(|cd| cd.since_ms() + 5 >= late_at) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let want_until = late_at + (second_len * 1000.0) as u64;
    let back = until_called(
        &c,
        &c.router,
        &group,
        &v,
        &c.subtag("back"),
        want_until + MARGIN.as_millis() as u64,
    )
    .await?;
    clear(&c, &tags).await?;
    clear(&c, &slow_tags).await?;
    let redis_view = match &cd2 {
        Some(cd) if cd.since_ms() + 5 >= late_at => format!(
            "Redis has the restarted cooldown: {}s from {:+.2}s",
            cd.length_s,
            secs(cd.since_ms(), cd1.since_ms())
        ),
        Some(cd) => format!("Redis still has the first cooldown ({}s from +0.00s)", cd.length_s),
        None => "Redis has no cooldown left".into(),
    };
    if let Some(back) = &back {
        anyhow::ensure!(
            back.time_ms + SKEW_MS >= want_until,
            "{} failed again {:.2}s into its {}s cooldown ({}), which should keep it out until {:.2}s, \
             yet it was called at {:.2}s ({redis_view}; times from the first cooldown's start)",
            v.id,
            secs(late_at, cd1.since_ms()),
            cd1.length_s,
            late.outcome,
            secs(want_until, cd1.since_ms()),
            secs(back.time_ms, cd1.since_ms())
        );
        c.observe("second_cooldown_observed_s", secs(back.time_ms, late_at));
    } else if c.config.expected_shares(&group).is_some() {
        anyhow::bail!(
            "{} was not tried again within {}s of the restarted cooldown's end ({redis_view})",
            v.id,
            MARGIN.as_secs()
        );
    }
    Ok(())
}

/// Router A cools a deployment down; router B, on the same Redis, stops calling it within
/// its read interval and starts again when the cooldown ends — for the time left of it.
async fn shared_via_redis(c: Ctx, group: String) -> anyhow::Result<()> {
    let b = c.second_router()?;
    let v = pick_victim(&c, &group).await?;
    let interval = c.config.redis_read_interval_s;
    let header = shared_header(&c.config);
    let want = c.config.cooldown_for(&v, Some(header as f64));
    anyhow::ensure!(
        want > interval + 1.0,
        "{} cools down for {want}s whatever Retry-After says, no longer than a second router's read interval \
         ({interval}s): this case cannot tell whether it sees the cooldown",
        v.id
    );
    forget_failures(&c, &v).await?;
    let fault = Fault::Error {
        status: 429,
        retry_after: Some(header),
        message: None,
    };
    let (failed, tags) = fail_times(
        &c,
        &c.router,
        &group,
        &v,
        Trigger {
            fault: &fault,
            n: failures_needed(&c.config, &v),
            parallel: false,
            label: "a",
        },
    )
    .await?;
    let cd = wait_for_cooldown(&c, &v.id, SETTLE)
        .await?
        .ok_or_else(|| anyhow::anyhow!("router did not cool {} down: {}", v.id, path(&failed)))?;
    clear(&c, &tags).await?;
    anyhow::ensure!(
        (cd.length_s - want).abs() < 1e-6,
        "router cooled {} down for {}s, expected {want}s (Retry-After: {header})",
        v.id,
        cd.length_s
    );
    let b_tag = c.subtag("b");
    let victim_sim = sim_of(&v);
    let deadline = cd.until_ms() + MARGIN.as_millis() as u64;
    let mut first_skip: Option<u64> = None;
    let mut resumed: Option<u64> = None;
    let mut n = 0;
    while now_ms() < deadline {
        n += 1;
        let sent = now_ms();
        let r = b
            .chat(&c.chat_body(&group, &b_tag, &format!("through router_b {n}")))
            .await?;
        let served = r.router().model_id.unwrap_or_default();
        if served != v.id && r.status == 200 && first_skip.is_none() {
            first_skip = Some(sent);
        }
        if served == v.id && sent + SKEW_MS >= cd.until_ms() {
            resumed = Some(sent);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b_calls: Vec<JournalEntry> = calls(&c, &b_tag)
        .await?
        .into_iter()
        .filter(|e| e.deployment == victim_sim)
        .collect();
    let seen_by = cd.since_ms() + ((interval + 0.5) * 1000.0) as u64;
    let wrong: Vec<String> = b_calls
        .iter()
        .filter(|e| e.time_ms > seen_by && e.time_ms + SKEW_MS < cd.until_ms())
        .map(|e| format!("{:+.2}s", secs(e.time_ms, cd.since_ms())))
        .collect();
    anyhow::ensure!(
        wrong.is_empty(),
        "router_b called {} at {} — more than {interval}s (its Redis read interval) into the {}s cooldown \
         router set ({} ms were left when router_b began): it did not honour the shared cooldown",
        v.id,
        wrong.join(", "),
        cd.length_s,
        cd.left_ms
    );
    if let Some(t) = first_skip {
        c.observe("second_router_honoured_after_s", secs(t, cd.since_ms()));
    }
    match resumed {
        Some(t) => c.observe("second_router_resumed_after_s", secs(t, cd.since_ms())),
        None if c.config.expected_shares(&group).is_some() => anyhow::bail!(
            "router_b did not call {} again within {}s of the end of its {}s cooldown: it kept the cooldown \
             longer than Redis said ({} calls to it from router_b: {})",
            v.id,
            MARGIN.as_secs(),
            cd.length_s,
            b_calls.len(),
            b_calls
                .iter()
                .map(|e| format!("{:+.2}s", secs(e.time_ms, cd.since_ms())))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => tracing::info!(strategy = %c.config.strategy, "not waiting for router_b to pick {} again", v.id),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> RouterConfig {
        RouterConfig::parse("r.yaml", text).unwrap()
    }

    #[test]
    fn headers_are_told_apart_from_the_router_cooldown() {
        let two = "model_list:\n  - {model_name: g, litellm_params: {model: x}, model_info: {id: a}}\n  - {model_name: g, litellm_params: {model: x}, model_info: {id: b, cooldown_time: 7}}\n";
        let c = cfg(&format!(
            "{two}router_settings: {{cooldown_time: 3, allowed_fails: 1}}\n"
        ));
        assert_eq!(distinct_header(&c), 1);
        let a = c.deployment("a").unwrap();
        let b = c.deployment("b").unwrap();
        assert_eq!(c.cooldown_for(a, Some(1.0)), 1.0, "the header wins over the router's");
        assert_eq!(
            c.cooldown_for(b, Some(1.0)),
            7.0,
            "the deployment's wins over the header"
        );
        assert_eq!(c.cooldown_for(a, None), 3.0);
        assert_eq!(shared_header(&c), 12);
        assert_eq!(shared_length(&c, "g"), 12.0);
        let c = cfg(&format!("{two}router_settings: {{cooldown_time: 1}}\n"));
        assert_eq!(distinct_header(&c), 3);
        assert!(
            failure_count_gate(&c, "g", &classes()[1])
                .unwrap()
                .contains("no allowed_fails")
        );
        assert!(
            failure_count_gate(&c, "g", &classes()[0]).is_none(),
            "a 429 needs no allowed_fails"
        );
        // LiteLLM takes a router allowed_fails equal to its default for unset.
        let c = cfg(&format!("{two}router_settings: {{allowed_fails: 3}}\n"));
        assert_eq!(c.counted_allowed_fails(c.deployment("a").unwrap()), None);
        assert!(failure_count_gate(&c, "g", &classes()[1]).is_some());
        let c = cfg(&format!("{two}router_settings: {{allowed_fails: 2}}\n"));
        assert_eq!(failures_needed(&c, c.deployment("a").unwrap()), 3);
    }

    #[test]
    fn the_default_stack_gets_every_cooldown_case_for_fast() {
        let m = crate::stack::manifest::Manifest::builtin().unwrap();
        let c = RouterConfig::parse("router.yaml", &m.router_config.text).unwrap();
        assert!(retried_gate(&c, "fast").is_none());
        for class in classes() {
            assert!(failure_count_gate(&c, "fast", &class).is_none(), "{}", class.name);
        }
        let fast_a = c.deployment("fast-a").unwrap();
        assert_eq!(failures_needed(&c, fast_a), 2);
        assert_eq!(c.failure_memory_s(fast_a), 2.0);
    }

    #[test]
    fn cooldown_values_parse() {
        let v = "{'exception_received': 'litellm.InternalServerError: Inter***', 'status_code': '500', 'timestamp': 1795533000.0908406, 'cooldown_time': 3}";
        let cd = Cooldown::parse(v, 2950).unwrap();
        assert_eq!(cd.status, "500");
        assert_eq!(cd.length_s, 3.0);
        assert_eq!(cd.until_ms(), 1_795_533_003_090);
        assert!(Cooldown::parse("{}", 1).is_none());
    }
}
