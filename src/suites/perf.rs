//! Router overhead, in every run: the same small requests sent straight to a simulator
//! deployment and through the router to that deployment, one after the other, so both see
//! the same machine at the same moment. The latency the router adds at P50 and P99 is
//! reported; the case fails only past the manifest's budget (`[perf]`), which is generous:
//! it is there to catch a gross regression (a blocking call, a retry on every request), not
//! noise.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::client::RouterClient;
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};
use crate::stack::manifest::PerfSettings;
use crate::stack::role::Role;
use crate::suites::support::calls;

/// Requests measured on each path, after the warm-up.
const MEASURED: usize = 50;
/// Requests per path not measured: the first ones open connections and fill the router's
/// own caches (deployment lookups, the cost map), which no later request pays again.
const WARM_UP: usize = 5;

pub fn cases(plan: &Plan) -> Vec<Case> {
    let budget = Budget {
        limits: plan.manifest.perf,
        origin: plan.manifest.origin.clone(),
    };
    let case = match plan.config.direct_comparable_group((MEASURED + WARM_UP) as f64) {
        Some(group) => {
            let g = group.clone();
            // Twice WARM_UP + MEASURED requests, one at a time, some 20 ms each.
            Case::new("perf::overhead", move |c| overhead(c, g.clone(), budget.clone()))
                .uses(&[group])
                .cost((2 * (WARM_UP + MEASURED)) as f64 * 0.02)
        }
        None => Case::new("perf::overhead", |_| async { Ok(()) }).ignore(
            "the router config has no named chat group whose every deployment is an OpenAI-dialect simulator \
             deployment (openai/, hosted_vllm/) with room for the case's requests: nothing to compare the router with",
        ),
    };
    vec![case.needs(&[Role::Simulator])]
}

/// The manifest's `[perf]` budget, and the manifest's name for the message that cites it.
#[derive(Clone)]
struct Budget {
    limits: PerfSettings,
    origin: String,
}

/// Microseconds, up to a minute (no single call here can take longer: the client gives up).
fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

fn record(h: &mut Histogram<u64>, d: Duration) -> anyhow::Result<()> {
    h.record((d.as_micros() as u64).clamp(1, 60_000_000))?;
    Ok(())
}

fn ms_at(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

async fn overhead(c: Ctx, group: String, budget: Budget) -> anyhow::Result<()> {
    let sim = c
        .endpoints
        .url_of(Role::Simulator)
        .ok_or_else(|| anyhow::anyhow!("this case needs the provider simulator, and the target has none"))?
        .to_owned();
    // One tag per path, so the journal tells the router's calls from the direct ones.
    let (via_router, direct) = (c.subtag("router"), c.subtag("direct"));
    let mut routed_h = histogram()?;
    let mut direct_h = histogram()?;
    let mut clients: Vec<(String, RouterClient)> = Vec::new();
    for i in 0..WARM_UP + MEASURED {
        // A fresh prompt each time: a config whose cache is on by default must not turn the
        // router's side into cache hits.
        let prompt = format!("overhead probe {i}");
        let r = c.router.chat(&c.chat_body(&group, &via_router, &prompt)).await?;
        r.expect_status(200)?;
        let served = r
            .router()
            .model_id
            .ok_or_else(|| anyhow::anyhow!("{}: the reply names no deployment (x-litellm-model-id)", r.url))?;
        let deployment = c
            .config
            .deployment(&served)
            .filter(|d| d.group == group)
            .and_then(|d| d.sim.clone())
            .ok_or_else(|| {
                anyhow::anyhow!("{group} was served by {served:?}, which is not one of its simulator deployments")
            })?;
        let client = match clients.iter().find(|(d, _)| *d == deployment) {
            Some((_, client)) => client.clone(),
            None => {
                let client = RouterClient::new(&format!("{sim}/d/{deployment}"), None);
                clients.push((deployment.clone(), client.clone()));
                client
            }
        };
        let d = client.chat(&c.chat_body(&group, &direct, &prompt)).await?;
        d.expect_status(200)?;
        if i >= WARM_UP {
            record(&mut routed_h, r.latency)?;
            record(&mut direct_h, d.latency)?;
        }
    }
    // The comparison holds only if each routed request was one upstream call, like a direct
    // one: a retry or a fallback would be measured as overhead.
    let n = WARM_UP + MEASURED;
    let (routed_calls, direct_calls) = (calls(&c, &via_router).await?, calls(&c, &direct).await?);
    anyhow::ensure!(
        routed_calls.len() == n && direct_calls.len() == n,
        "expected {n} upstream calls on each path, the journal shows {} through the router and {} direct: {}",
        routed_calls.len(),
        direct_calls.len(),
        crate::suites::support::path(&routed_calls)
    );
    anyhow::ensure!(
        routed_calls.iter().all(|e| e.outcome.is_ok()),
        "not every routed call was answered normally upstream: {}",
        crate::suites::support::path(&routed_calls)
    );
    let (d50, d99) = (ms_at(&direct_h, 0.5), ms_at(&direct_h, 0.99));
    let (r50, r99) = (ms_at(&routed_h, 0.5), ms_at(&routed_h, 0.99));
    let (o50, o99) = (r50 - d50, r99 - d99);
    for (name, v) in [
        ("direct_p50_ms", d50),
        ("direct_p99_ms", d99),
        ("router_p50_ms", r50),
        ("router_p99_ms", r99),
        ("overhead_p50_ms", o50),
        ("overhead_p99_ms", o99),
    ] {
        c.observe(name, v);
    }
    tracing::info!(
        "{group}: the router adds {o50:.1} ms at P50 and {o99:.1} ms at P99 ({MEASURED} requests each: \
         direct {d50:.1}/{d99:.1} ms, routed {r50:.1}/{r99:.1} ms)"
    );
    let over: Vec<String> = [
        ("P50", o50, budget.limits.overhead_p50_ms),
        ("P99", o99, budget.limits.overhead_p99_ms),
    ]
    .into_iter()
    .filter(|(_, got, limit)| *got > *limit as f64)
    .map(|(q, got, limit)| format!("{got:.1} ms at {q} (budget {limit} ms)"))
    .collect();
    anyhow::ensure!(
        over.is_empty(),
        "the router adds {} over a direct call to the same deployment ({MEASURED} requests each: direct \
         {d50:.1}/{d99:.1} ms, routed {r50:.1}/{r99:.1} ms at P50/P99); the budget is [perf] in {}",
        over.join(" and "),
        budget.origin
    );
    Ok(())
}
