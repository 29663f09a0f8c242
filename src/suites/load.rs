//! A light `gauntlet load` run through the router on every run: a fixed open-loop rate far
//! below what any router handles, so what it asserts is stable on any machine — every
//! scheduled request answered, none failed, each one a single upstream call the simulator
//! journaled, and the report written and readable back. The numbers (P50/P99, what the
//! router adds) are observations, never limits.

use std::time::Duration;

use crate::load::profile::Shard;
use crate::load::profile::{Profile, Rate};
use crate::load::prompt::PromptSource;
use crate::load::report::{Slo, ms};
use crate::load::run::{self as load, Settings, Target};
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};
use crate::stack::role::Role;
use crate::suites::support::calls;

/// Requests per second: a router that cannot take this is broken, not slow.
const RATE: f64 = 5.0;
/// Measured seconds, after the warm-up.
const SECONDS: u64 = 2;
/// Sent before measuring starts.
const WARMUP_S: f64 = 0.5;

pub fn cases(plan: &Plan) -> Vec<Case> {
    let per_minute = RATE * 60.0;
    [false, true]
        .into_iter()
        .map(|stream| {
            let name = if stream { "load::light_stream" } else { "load::light" };
            // Any chat group on the simulator, whatever its dialect: the router speaks OpenAI
            // to the generator either way, and the journal sees every upstream call.
            let group = plan
                .config
                .groups()
                .into_iter()
                .find(|g| plan.config.unusable(g, per_minute).is_none());
            let case = match group {
                Some(group) => {
                    let g = group.clone();
                    Case::new(name, move |c| light(c, g.clone(), stream)).uses(&[group])
                }
                None => Case::new(name, |_| async { Ok(()) }).ignore(
                    "the router config has no named chat group on the simulator with room for 5 requests a \
                     second: nothing to load",
                ),
            };
            case.needs(&[Role::Simulator])
        })
        .collect()
}

async fn light(c: Ctx, group: String, stream: bool) -> anyhow::Result<()> {
    let router = c
        .endpoints
        .router_url()
        .ok_or_else(|| anyhow::anyhow!("the target has no router"))?
        .to_owned();
    let tag = c.subtag(if stream { "stream" } else { "plain" });
    // Distinct prompts, each stamped with the case's tag, so no cache answers for the
    // upstream and the journal finds every call.
    let bodies = (0..64)
        .map(|i| {
            let mut b = c.chat_body(&group, &tag, &format!("load probe {i}"));
            if stream {
                b["stream"] = true.into();
                b["stream_options"] = serde_json::json!({"include_usage": true});
            }
            b
        })
        .collect();
    let settings = Settings {
        profiles: vec![Profile::Constant {
            rate: Rate::new(RATE).map_err(anyhow::Error::msg)?,
        }],
        duration: Some(Duration::from_secs(SECONDS)),
        requests: None,
        warmup: Duration::from_secs_f64(WARMUP_S),
        stream,
        prompts: PromptSource::Fixed(bodies),
        timeout: Duration::from_secs(30),
        max_error_rate: 1.0,
        slo: Slo::default(),
        max_inflight: 64,
        shard: Shard::ONE,
        seed: 0,
        threads: 1,
        interactive: false,
    };
    let target = Target {
        label: String::new(),
        url: router,
        key: c.endpoints.master_key.clone(),
        model: group.clone(),
    };
    let report = load::run(&settings, &[target]).await?;
    let p = report
        .points
        .first()
        .ok_or_else(|| anyhow::anyhow!("the run measured no point"))?;
    anyhow::ensure!(
        p.failed() == 0,
        "{} of {} requests to {group} failed at {RATE} requests a second: {:?}",
        p.failed(),
        p.completed + p.failed(),
        p.errors
    );
    let scheduled = (RATE * SECONDS as f64) as u64;
    anyhow::ensure!(
        p.completed == scheduled,
        "{scheduled} requests were scheduled in the measured {SECONDS} s and {} were answered",
        p.completed
    );
    if stream {
        anyhow::ensure!(
            p.hist.ttft.len() == scheduled,
            "every stream should have a first token timed: {} of {scheduled}",
            p.hist.ttft.len()
        );
    }
    // The preflight, the warm-up (due at 0, 1/R, … before WARMUP_S) and the measured
    // requests: each one upstream call.
    let journal = calls(&c, &tag).await?;
    let sent = 1 + (RATE * WARMUP_S).ceil() as usize + scheduled as usize;
    anyhow::ensure!(
        journal.len() == sent,
        "{sent} requests went through the router and the simulator journaled {} calls for them: {}",
        journal.len(),
        crate::suites::support::path(&journal)
    );
    let dir = crate::runner::run::artifacts_dir()
        .join("load")
        .join(if stream { "light_stream" } else { "light" });
    load::write(&report, &dir)?;
    let back = load::read(&dir.join("report.json"))?;
    anyhow::ensure!(
        back.points.first().map(|b| (b.completed, b.hist.e2el.len())) == Some((p.completed, p.hist.e2el.len())),
        "{} does not read back as the run that wrote it",
        dir.join("report.json").display()
    );
    c.observe("p50_e2el_ms", ms(&p.hist.e2el, 0.5));
    c.observe("p99_e2el_ms", ms(&p.hist.e2el, 0.99));
    Ok(())
}
