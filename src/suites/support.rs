//! Helpers the suites share, one per job: which simulator deployments stand behind a group,
//! making a group fail for one tag, reading a tag's upstream calls, and showing them.

use crate::config::RouterConfig;
use crate::runner::context::Ctx;
use crate::runner::registry::Case;
use crate::sim::{Fault, JournalEntry, JournalQuery};
use crate::tag::Tag;

/// Requests a minute a fallback chain's cases send to each of its groups, together.
pub const CHAIN_RPM: f64 = 60.0;

/// Requests a minute one single-request case sends.
pub const SINGLE_RPM: f64 = 5.0;

/// Waits longer than this (a 600 s timeout, a 2-minute cooldown) make a case opt-in: a
/// pull-request check should not idle for them.
pub const LONG_WAIT_S: f64 = 30.0;

/// Cases that send their traffic to the probe group (`RouterConfig::probe_group`): claimed
/// as its users, or ignored with the reason when the config has none.
pub fn on_probe_group(plan: &crate::runner::registry::Plan, cases: Vec<Case>) -> Vec<Case> {
    let probe: Vec<String> = plan.config.probe_group().into_iter().collect();
    let none = probe.is_empty().then(|| {
        "the router config has no named chat group that accepts the generic cases' traffic \
         (every chat group is a wildcard or limits requests below what they send, by rpm/tpm)"
            .to_owned()
    });
    cases
        .into_iter()
        .map(|c| c.uses(&probe).ignore_if(none.clone()))
        .collect()
}

/// Simulator deployments behind a group (or behind the one deployment a fallback names).
pub fn sims_of(cfg: &RouterConfig, group: &str) -> Vec<String> {
    cfg.targets_of(group).iter().filter_map(|d| d.sim.clone()).collect()
}

/// Deployment ids behind a group (or the one a fallback names).
pub fn ids_of(cfg: &RouterConfig, group: &str) -> Vec<String> {
    cfg.targets_of(group).iter().map(|d| d.id.clone()).collect()
}

/// Makes every deployment of `group` answer requests carrying `tag` with `fault`.
pub async fn break_group(c: &Ctx, group: &str, tag: &Tag, fault: Fault) -> anyhow::Result<()> {
    let sim = c.sim()?;
    for d in sims_of(&c.config, group) {
        sim.add_rule(&d, &crate::sim::Rule::tagged(tag, fault.clone())).await?;
    }
    Ok(())
}

/// The upstream calls carrying `tag`, in arrival order.
pub async fn calls(c: &Ctx, tag: &Tag) -> anyhow::Result<Vec<JournalEntry>> {
    let mut j = c
        .sim()?
        .journal(&JournalQuery {
            tag: Some(tag.clone()),
            ..Default::default()
        })
        .await?;
    j.sort_by_key(|e| e.seq);
    Ok(j)
}

/// The last upstream call carrying `tag` that sent a whole reply ([`Outcome::served`]): the one
/// that answered the request.
pub async fn served_call(c: &Ctx, tag: &Tag) -> anyhow::Result<JournalEntry> {
    let journal = calls(c, tag).await?;
    let seen = path(&journal);
    journal
        .into_iter()
        .rev()
        .find(|e| e.outcome.served())
        .ok_or_else(|| anyhow::anyhow!("{tag}: no upstream call sent a whole reply (the simulator journal: [{seen}])"))
}

/// Every call one simulator deployment has had, from any case: cooldown is per deployment,
/// not per tag.
pub async fn all_calls_to(c: &Ctx, deployment: &str) -> anyhow::Result<Vec<JournalEntry>> {
    c.sim()?
        .journal(&JournalQuery {
            deployment: Some(deployment.to_owned()),
            ..Default::default()
        })
        .await
}

/// `primary(error:500) → backup(ok)`: the calls as the evidence of a failure message.
pub fn path(journal: &[JournalEntry]) -> String {
    journal
        .iter()
        .map(|e| format!("{}({})", e.deployment, e.outcome))
        .collect::<Vec<_>>()
        .join(" → ")
}

/// The groups the calls went to, consecutive repeats (retries) merged.
pub fn group_path(cfg: &RouterConfig, journal: &[JournalEntry]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in journal {
        let g = cfg.group_of_sim(&e.deployment).unwrap_or(&e.deployment).to_owned();
        if out.last() != Some(&g) {
            out.push(g);
        }
    }
    out
}

/// The trace id a request body carries (set by `Ctx::chat_body`).
pub fn trace_of(body: &serde_json::Value) -> anyhow::Result<Tag> {
    let t = body["metadata"]["trace_id"].as_str().unwrap_or_default();
    Ok(t.parse()?)
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub use crate::stack::redis::Resp;

/// One command to the stack's Redis (what LiteLLM shares between routers: cooldowns, usage
/// counters), bounded: the suites read the router's state from it, never write.
pub async fn redis(c: &Ctx, args: &[&str]) -> anyhow::Result<Resp> {
    let url = c
        .endpoints
        .url_of(crate::stack::role::Role::Redis)
        .ok_or_else(|| anyhow::anyhow!("this case reads the router's state in Redis, and the target has none"))?;
    crate::stack::redis::command_at(url, args, std::time::Duration::from_secs(5)).await
}

/// A cooldown as LiteLLM wrote it to `deployment:<id>:cooldown` (a Python dict's repr:
/// `{'exception_received': …, 'status_code': '500', 'timestamp': 1795…, 'cooldown_time': 3}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Cooldown {
    /// When it started (Unix seconds, the router's clock).
    pub since_s: f64,
    /// How long it was set for.
    pub length_s: f64,
    /// The status of the failure that started it.
    pub status: String,
    /// What Redis has left of it (`PTTL`).
    pub left_ms: i64,
}

impl Cooldown {
    /// Reads the value; `None` when it is not LiteLLM's shape.
    pub fn parse(value: &str, left_ms: i64) -> Option<Self> {
        let field = |name: &str| {
            let at = value.find(&format!("'{name}': "))? + name.len() + 4;
            let rest = &value[at..];
            let end = rest.find([',', '}']).unwrap_or(rest.len());
            Some(rest[..end].trim().trim_matches('\'').to_owned())
        };
        Some(Self {
            since_s: field("timestamp")?.parse().ok()?,
            length_s: field("cooldown_time")?.parse().ok()?,
            status: field("status_code").unwrap_or_default(),
            left_ms,
        })
    }

    /// When it ends (Unix milliseconds).
    pub fn until_ms(&self) -> u64 {
        ((self.since_s + self.length_s) * 1000.0) as u64
    }

    pub fn since_ms(&self) -> u64 {
        (self.since_s * 1000.0) as u64
    }
}

/// The cooldown LiteLLM keeps in Redis for deployment `id` right now, if any.
pub async fn cooldown_of(c: &Ctx, id: &str) -> anyhow::Result<Option<Cooldown>> {
    let key = format!("deployment:{id}:cooldown");
    let Resp::Text(value) = redis(c, &["GET", &key]).await? else {
        return Ok(None);
    };
    let left = match redis(c, &["PTTL", &key]).await? {
        Resp::Int(ms) => ms,
        other => anyhow::bail!("redis answered {other:?} to PTTL {key}"),
    };
    if left < 0 {
        return Ok(None);
    }
    Cooldown::parse(&value, left)
        .map(Some)
        .ok_or_else(|| anyhow::anyhow!("{key} holds {value:?}, not the cooldown LiteLLM writes"))
}

/// Polls Redis until deployment `id` is cooling down, for at most `bound` (LiteLLM writes the
/// cooldown from a failure callback, a moment after the failed reply).
pub async fn wait_for_cooldown(c: &Ctx, id: &str, bound: std::time::Duration) -> anyhow::Result<Option<Cooldown>> {
    let start = std::time::Instant::now();
    loop {
        if let Some(cd) = cooldown_of(c, id).await? {
            return Ok(Some(cd));
        }
        if start.elapsed() >= bound {
            return Ok(None);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Waits, bounded, until none of `ids` is cooling down in Redis (a cooldown another case or
/// an earlier step caused ends by its own deadline; nothing ends it sooner).
pub async fn until_no_cooldown(c: &Ctx, ids: &[String], bound: std::time::Duration) -> anyhow::Result<()> {
    let redis = c
        .endpoints
        .url_of(crate::stack::role::Role::Redis)
        .ok_or_else(|| anyhow::anyhow!("this case reads the router's state in Redis, and the target has none"))?;
    crate::runner::locks::drain_cooldowns(redis, ids, bound).await.map(drop)
}
