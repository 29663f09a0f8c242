//! Routing inside a group, as the config's strategy promises:
//! - simple-shuffle spreads a healthy group's traffic by `weight` (else `rpm`, else `tpm`)
//!   over its lowest `order` level: each deployment's share, counted from the router's own
//!   `x-litellm-model-id`, lies within 4.5 standard deviations of what the config implies
//!   (a deployment the config never picks gets nothing).
//!
//! Strategies that decide on live state (latency, usage, in-flight requests) get no share
//! case: their promise depends on measurements, not on the config alone.

use std::collections::BTreeMap;

use crate::config::routing::allowed_deviation;
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};

/// Requests per distribution case.
const N: u64 = 120;

/// Requests in flight at once (the shuffle does not depend on timing).
const PARALLEL: usize = 4;

pub fn cases(plan: &Plan) -> Vec<Case> {
    let cfg = &plan.config;
    let mut out = Vec::new();
    for group in cfg.groups() {
        let Some(shares) = cfg.expected_shares(&group) else {
            continue;
        };
        if shares.iter().filter(|(_, p)| *p > 0.0).count() < 2 {
            continue;
        }
        let g = group.clone();
        out.push(
            Case::new(format!("routing::distribution::{group}"), move |c| {
                distribution(c, g.clone())
            })
            .owns(&[&group])
            .ignore_if(cfg.traffic_gate(&group, N as f64 * 2.0)),
        );
    }
    out
}

async fn distribution(c: Ctx, group: String) -> anyhow::Result<()> {
    let shares = c
        .config
        .expected_shares(&group)
        .ok_or_else(|| anyhow::anyhow!("{group}: the strategy gives no predictable share"))?;
    let tag = c.tag().to_owned();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut sent = 0u64;
    while sent < N {
        let batch: Vec<_> = (0..PARALLEL as u64)
            .take_while(|i| sent + i < N)
            .map(|i| {
                let body = c.chat_body(&group, &tag, &format!("spread {}", sent + i));
                let router = c.router.clone();
                async move { router.chat(&body).await }
            })
            .collect();
        sent += batch.len() as u64;
        for r in futures_util::future::join_all(batch).await {
            let r = r?;
            r.expect_status(200)?;
            let id = r
                .router()
                .model_id
                .ok_or_else(|| anyhow::anyhow!("{}: no x-litellm-model-id header", r.url))?;
            *counts.entry(id).or_default() += 1;
        }
    }
    let mut bad = Vec::new();
    for (id, p) in &shares {
        let got = counts.remove(id).unwrap_or(0);
        let want = p * N as f64;
        let dev = allowed_deviation(N, *p);
        c.observe(&format!("share_{id}"), got as f64 / N as f64);
        if (got as f64 - want).abs() > dev {
            bad.push(format!(
                "{id}: {got} of {N} (expected {want:.1} ± {dev:.1}, share {p:.3})"
            ));
        }
    }
    anyhow::ensure!(
        counts.is_empty(),
        "{group} was served by deployments outside it: {counts:?}"
    );
    anyhow::ensure!(
        bad.is_empty(),
        "{group} under {} spread {N} requests unlike its config says: {}",
        c.config.strategy,
        bad.join("; ")
    );
    Ok(())
}
