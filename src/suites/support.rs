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
