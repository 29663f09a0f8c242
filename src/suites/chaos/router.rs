//! The second router killed with requests in flight, then restarted. The second router runs
//! the same config on the same Redis as the first: killing it is killing LiteLLM's proxy,
//! without stopping the router every other case goes through.

use std::time::Duration;

use super::account::Account;
use super::traffic::{INTERVAL, Traffic, request_bound, steady_group, until_steady};
use crate::client::RouterClient;
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};
use crate::sim::{Behaviour, Rule, When};
use crate::stack::Chaos;
use crate::stack::role::Role;
use crate::suites::support::sims_of;

/// Each request is held this long upstream, so a few are in flight when the router dies.
const HELD_MS: u64 = 300;

/// How long the router stays dead: requests meanwhile must be refused, at once.
const OUTAGE: Duration = Duration::from_secs(1);

/// How late after its readiness check passed a request may still fail: the check and the
/// traffic are separate connections a few milliseconds apart.
const READY_SLACK: Duration = Duration::from_millis(500);

pub fn cases(plan: &Plan) -> Vec<Case> {
    let Some(second) = plan.manifest.service_with(Role::SecondRouter).map(str::to_owned) else {
        return Vec::new();
    };
    let group = steady_group(plan);
    let g = group.clone().unwrap_or_default();
    let service = second.clone();
    vec![
        Case::new("chaos::router::killed_and_restarted", move |c| {
            killed_and_restarted(c, g.clone(), service.clone())
        })
        .needs(&[Role::SecondRouter, Role::Simulator])
        .hurts(&[second])
        .uses(&group.iter().collect::<Vec<_>>())
        .ignore_if(group.err())
        .cost(12.0),
    ]
}

async fn killed_and_restarted(c: Ctx, group: String, router: String) -> anyhow::Result<()> {
    let control = c.control()?.clone();
    let sim = c.sim()?;
    let held = Rule {
        tag: Some(c.tag().clone()),
        when: When::ALWAYS,
        behaviour: Behaviour {
            latency_ms: Some(HELD_MS),
            ..Behaviour::default()
        },
    };
    for d in sims_of(&c.config, &group) {
        sim.add_rule(&d, &held).await?;
    }
    let client = |url: &str| RouterClient::new(url, c.endpoints.master_key.clone());
    let at = control
        .endpoint(&router)
        .await
        .ok_or_else(|| anyhow::anyhow!("no endpoint for '{router}'"))?;
    let body = c.chat_body(&group, c.tag(), "steady traffic while the router dies");
    let traffic = Traffic::start(client(&at.url), body, INTERVAL, request_bound(&c, &group));
    let result = async {
        until_steady(&traffic, 5, Duration::from_secs(30), |_| true).await?;
        let fault_at = traffic.now();
        control.hurt(&router, Chaos::Kill).await?;
        // A kill takes a while (an engine call, for a container): a request answered meanwhile
        // may have been answered before the kill landed.
        let killed_at = traffic.now();
        tokio::time::sleep(OUTAGE).await;
        let heal_at = traffic.now();
        let moved = control.hurt(&router, Chaos::Restart).await?;
        traffic.retarget(client(&moved.url));
        let boot = control.wait_healthy(&router, Duration::from_secs(120)).await?;
        let ready_at = traffic.now();
        until_steady(&traffic, 10, Duration::from_secs(30), |_| true).await?;
        anyhow::Ok((fault_at, killed_at, heal_at, ready_at, boot))
    }
    .await;
    if control.exited(&router).await.is_some() {
        control.hurt(&router, Chaos::Restart).await?;
        control.wait_healthy(&router, Duration::from_secs(120)).await?;
    }
    let shots = traffic.stop().await;
    let (fault_at, killed_at, heal_at, ready_at, boot) = result?;
    let a = Account::new(shots, fault_at, heal_at);
    // Requests in flight when the router died: sent before the kill had landed, still
    // unanswered when it began. One answered while the kill was under way may have beaten it;
    // one answered after it landed, or failing later than 2 s after, did not end with the
    // connection.
    let in_flight: Vec<_> = a
        .between(Duration::ZERO, killed_at)
        .filter(|s| s.at + s.latency > fault_at)
        .collect();
    let cut = in_flight.iter().filter(|s| !s.ok()).count();
    let cold: Vec<_> = a
        .between(ready_at + READY_SLACK, Duration::MAX)
        .filter(|s| !s.ok())
        .collect();
    let served_again = a.settled_after_heal(|s| s.ok());
    tracing::info!(
        account = %a,
        cut,
        boot_s = boot.as_secs_f64(),
        "router killed and restarted"
    );
    c.observe("requests_cut_by_the_kill", cut as f64);
    c.observe(
        "requests_lost",
        (a.before.lost() + a.during.lost() + a.after.lost()) as f64,
    );
    c.observe("router_ready_after_restart_s", boot.as_secs_f64());
    if let Some(s) = served_again {
        c.observe("traffic_back_after_restart_s", s.as_secs_f64());
    }
    let lost_before: Vec<String> = a
        .between(Duration::ZERO, fault_at)
        .filter(|s| s.at + s.latency <= fault_at && !s.ok())
        .map(|s| format!("{:?}", s.outcome))
        .collect();
    anyhow::ensure!(
        lost_before.is_empty(),
        "requests answered before the router was killed failed: {}",
        lost_before.join(", ")
    );
    // In flight at the kill: each ends with the connection, not at its timeout.
    let slow: Vec<String> = in_flight
        .iter()
        .filter(|s| {
            let ended = s.at + s.latency;
            (s.ok() && ended > killed_at) || ended > killed_at + Duration::from_secs(2)
        })
        .map(|s| format!("{:?} after {} ms", s.outcome, s.latency.as_millis()))
        .collect();
    anyhow::ensure!(
        slow.is_empty(),
        "requests in flight when the router was killed did not fail at once: {}",
        slow.join("; ")
    );
    // While it is down, nothing answers but a refusal.
    let odd: Vec<String> = a
        .between(killed_at + Duration::from_millis(200), heal_at)
        .filter(|s| s.ok() || s.latency > Duration::from_secs(2))
        .map(|s| format!("{:?} after {} ms", s.outcome, s.latency.as_millis()))
        .collect();
    anyhow::ensure!(odd.is_empty(), "while the router was dead: {}", odd.join("; "));
    anyhow::ensure!(
        cold.is_empty(),
        "a cold-start burst: {} request(s) failed after the router's readiness check passed ({:?})",
        cold.len(),
        cold.iter().map(|s| &s.outcome).collect::<Vec<_>>()
    );
    Ok(())
}
