//! Regions: a group whose deployments reach the simulator through services of their own (a
//! gauntlet fault proxy per region, `${geo_a.url}/d/<deployment>`), one region hurt under
//! steady traffic. Which deployments serve while all is well follows from the config (the
//! lowest `order`, else all of them); their region is the one hurt, the group's other
//! deployments are where traffic must go.
//!
//! Each [`Outage`] owns how it breaks a region and how it heals it; each [`Weather`] is a
//! network fault a region should ride out (served late, never lost, never moved).

use std::time::Duration;

use super::account::Account;
use super::traffic::{INTERVAL, PER_MINUTE, Shot, Traffic, request_bound, until_steady};
use crate::config::RouterConfig;
use crate::proxy::{ProxyClient, Toxic};
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};
use crate::stack::manifest::Manifest;
use crate::stack::role::Role;
use crate::stack::{BackendKind, Chaos};

/// Added to every bound read from the config: scheduling on a busy 2-core box, the router's
/// retry delay, the traffic's own interval.
const SLACK: Duration = Duration::from_secs(3);

/// Answers in a row that count as "traffic settled".
const STEADY: usize = 5;

/// A region down, in one of the ways regions go down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    /// Nothing listens: the region's process killed (connections refused).
    Refused,
    /// Frozen: connections accepted, nothing answers (SIGSTOP / `docker pause`).
    Paused,
    /// Requests arrive, answers never leave (the proxy's timeout toxic).
    BlackHoled,
    /// Answers leave a second after the deployment's timeout (latency toxic).
    Slow,
    /// Every connection reset by the peer.
    Reset,
    /// Answers cut after their first bytes (limit_data toxic).
    Truncated,
    /// Cut off from the network: containers disconnected from the stack's network (no route,
    /// connects unanswered); local processes share the host's network, so there the proxy holds
    /// every byte both ways (the timeout toxic up- and downstream).
    Partitioned,
}

impl Outage {
    pub const ALL: [Outage; 7] = [
        Outage::Refused,
        Outage::Paused,
        Outage::BlackHoled,
        Outage::Slow,
        Outage::Reset,
        Outage::Truncated,
        Outage::Partitioned,
    ];

    fn name(self) -> &'static str {
        match self {
            Outage::Refused => "refused",
            Outage::Paused => "paused",
            Outage::BlackHoled => "black_holed",
            Outage::Slow => "slow",
            Outage::Reset => "reset",
            Outage::Truncated => "truncated",
            Outage::Partitioned => "partitioned",
        }
    }

    /// The toxics standing for it, for the outages a proxy makes.
    fn toxics(self, timeout: Duration) -> Vec<Toxic> {
        let name = format!("outage-{}", self.name());
        let slow = (timeout + Duration::from_secs(1)).as_millis() as u64;
        match self {
            Outage::Refused | Outage::Paused => Vec::new(),
            Outage::BlackHoled => vec![Toxic::timeout(name, 0)],
            Outage::Slow => vec![Toxic::latency(name, slow, 0)],
            Outage::Reset => vec![Toxic::reset_peer(name, 0)],
            Outage::Truncated => vec![Toxic::limit_data(name, 64)],
            Outage::Partitioned => vec![
                Toxic::timeout(format!("{name}-down"), 0),
                Toxic::timeout(format!("{name}-up"), 0).upstream(),
            ],
        }
    }

    /// Done by the backend rather than the proxy (a kill, a pause, a disconnect), and its heal.
    fn by_backend(self, backend: BackendKind) -> Option<(Chaos, Chaos)> {
        match self {
            Outage::Refused => Some((Chaos::Kill, Chaos::Restart)),
            Outage::Paused => Some((Chaos::Pause, Chaos::Unpause)),
            Outage::Partitioned if backend == BackendKind::Docker => Some((Chaos::Disconnect, Chaos::Connect)),
            _ => None,
        }
    }

    async fn apply(self, r: &Region<'_>) -> anyhow::Result<()> {
        match self.by_backend(r.backend) {
            Some((hurt, _)) => drop(r.control.hurt(r.service, hurt).await?),
            None => {
                let proxy = r.proxy().await?;
                for t in self.toxics(r.timeout) {
                    proxy.add(&t).await?;
                }
            }
        }
        Ok(())
    }

    async fn heal(self, r: &Region<'_>) -> anyhow::Result<()> {
        match self.by_backend(r.backend) {
            Some((_, heal)) => {
                r.control.hurt(r.service, heal).await?;
                r.control.wait_healthy(r.service, Duration::from_secs(30)).await?;
            }
            None => r.proxy().await?.clear().await?,
        }
        Ok(())
    }
}

/// Network weather a region should ride out: applied, then removed, under traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Weather {
    /// 300 ms ± 100 ms on every answer, well under the timeout.
    Latency,
    /// Answers at 2 KB/s.
    Bandwidth,
    /// Answers in 8-byte slices, 2 ms apart.
    Slicer,
    /// Connections closed 500 ms after the data ends.
    SlowClose,
}

impl Weather {
    pub const ALL: [Weather; 4] = [
        Weather::Latency,
        Weather::Bandwidth,
        Weather::Slicer,
        Weather::SlowClose,
    ];

    fn name(self) -> &'static str {
        match self {
            Weather::Latency => "latency",
            Weather::Bandwidth => "bandwidth",
            Weather::Slicer => "slicer",
            Weather::SlowClose => "slow_close",
        }
    }

    fn toxic(self) -> Toxic {
        let name = format!("weather-{}", self.name());
        match self {
            Weather::Latency => Toxic::latency(name, 300, 100),
            Weather::Bandwidth => Toxic::bandwidth(name, 2),
            Weather::Slicer => Toxic::slicer(name, 8, 4, 2000),
            Weather::SlowClose => Toxic::slow_close(name, 500),
        }
    }

    /// The least it must add to the median answer, to show it was on the path. A slow close
    /// adds nothing a client sees: the router keeps its upstream connections alive, so the
    /// close it delays does not come while the traffic runs.
    fn adds_at_least(self) -> Option<Duration> {
        match self {
            Weather::Latency => Some(Duration::from_millis(150)),
            Weather::Bandwidth | Weather::Slicer => Some(Duration::from_millis(50)),
            Weather::SlowClose => None,
        }
    }
}

/// One region of a group, as a case sees it.
struct Region<'a> {
    control: &'a crate::stack::Control,
    service: &'a str,
    timeout: Duration,
    backend: BackendKind,
}

impl Region<'_> {
    /// Its proxy's control API, where it is now (a container restarted moves).
    async fn proxy(&self) -> anyhow::Result<ProxyClient> {
        let ep = self
            .control
            .endpoint(self.service)
            .await
            .ok_or_else(|| anyhow::anyhow!("no endpoint for '{}'", self.service))?;
        Ok(ProxyClient::new(&ep.url))
    }
}

/// A group with regions: the services its serving deployments go through, and which
/// deployments those are.
#[derive(Debug, Clone)]
struct Regional {
    group: String,
    /// The region hurt: a service the serving deployments reach the simulator through.
    service: String,
    /// Deployments behind it (model_info.id).
    inside: Vec<String>,
    /// How long the router keeps a name's address (`AIOHTTP_TTL_DNS_CACHE` in its environment,
    /// LiteLLM's default 300 s): a container restarted on a new address is unreachable to the
    /// router until then.
    dns_ttl_s: f64,
}

/// Groups with regions: two or more deployments, LiteLLM able to cool one down (how traffic
/// leaves a failing one), the serving deployments behind a command service that is not the
/// simulator itself (a proxy the case can hurt), and another deployment outside it.
fn regional(cfg: &RouterConfig, m: &Manifest) -> Vec<Regional> {
    let sim = m.service_with(Role::Simulator);
    let dns_ttl_s = m.services[&m.stack.router]
        .env
        .get("AIOHTTP_TTL_DNS_CACHE")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(300.0);
    let hurtable = |s: &str| Some(s) != sim && m.services.get(s).is_some_and(|spec| spec.builtin.is_none());
    let mut out = Vec::new();
    for group in cfg.groups() {
        let deps = cfg.deployments_of(&group);
        if deps.len() < 2 || !cfg.can_cool_down(&group) || cfg.traffic_gate(&group, PER_MINUTE).is_some() {
            continue;
        }
        let first = deps.iter().filter_map(|d| d.order()).min();
        let serving: Vec<_> = deps.iter().filter(|d| first.is_none() || d.order() == first).collect();
        let mut services: Vec<&str> = serving
            .iter()
            .filter_map(|d| d.via.as_deref())
            .filter(|s| hurtable(s))
            .collect();
        services.sort_unstable();
        services.dedup();
        for service in services {
            let inside: Vec<String> = deps
                .iter()
                .filter(|d| d.via.as_deref() == Some(service))
                .map(|d| d.id.clone())
                .collect();
            if inside.len() < deps.len() {
                out.push(Regional {
                    group: group.clone(),
                    service: service.to_owned(),
                    inside,
                    dns_ttl_s,
                });
            }
        }
    }
    out
}

pub fn cases(plan: &Plan) -> Vec<Case> {
    let mut out = Vec::new();
    for r in regional(&plan.config, &plan.manifest) {
        let name = |kind: &str, what: &str| format!("chaos::{kind}::{}::{}::{what}", r.group, r.service);
        let claim = |case: Case| {
            case.needs(&[Role::Simulator])
                .owns(std::slice::from_ref(&r.group))
                .hurts(std::slice::from_ref(&r.service))
        };
        for outage in Outage::ALL {
            let r2 = r.clone();
            let case = Case::new(name("region", outage.name()), move |c| {
                region_down(c, r2.clone(), outage)
            });
            out.push(claim(case).cost(8.0));
        }
        for weather in Weather::ALL {
            let r2 = r.clone();
            let case = Case::new(name("network", weather.name()), move |c| {
                rides_out(c, r2.clone(), weather)
            });
            out.push(claim(case).cost(3.0));
        }
    }
    out
}

/// Whether healing `outage` can give the region a new address (on Docker: a container
/// restarted or reconnected may get another IP on the stack's network).
fn region_moves(outage: Outage) -> bool {
    matches!(outage, Outage::Refused | Outage::Partitioned)
}

/// How the config bounds a failover: every failure LiteLLM needs before it cools the
/// deployment down, each an attempt (and its retries) at the deployment's timeout.
fn failover_bound(cfg: &RouterConfig, r: &Regional) -> Duration {
    let d = cfg.deployment(&r.inside[0]);
    let timeout = d.map(|d| d.timeout.seconds).unwrap_or(0.0);
    let fails = f64::from(d.and_then(|d| d.allowed_fails).unwrap_or(0) + 1);
    Duration::from_secs_f64(fails * timeout * f64::from(cfg.num_retries + 1)) + SLACK
}

/// How the config bounds a recovery: a request in flight at the heal can still fail (one
/// timeout), restarting the cooldown; then the cooldown, then the router's Redis read; and,
/// where a heal can move the region to a new address (a container restarted or reconnected),
/// the router's DNS cache.
fn recovery_bound(cfg: &RouterConfig, r: &Regional, moves: bool) -> Duration {
    let d = cfg.deployment(&r.inside[0]);
    let timeout = d.map(|d| d.timeout.seconds).unwrap_or(0.0);
    let cooldown = d.map(|d| d.cooldown_s).unwrap_or(0.0);
    let dns = if moves { r.dns_ttl_s } else { 0.0 };
    Duration::from_secs_f64(timeout * f64::from(cfg.num_retries + 1) + cooldown + cfg.redis_read_interval_s + dns)
        + SLACK
}

async fn region_down(c: Ctx, r: Regional, outage: Outage) -> anyhow::Result<()> {
    let control = c.control()?.clone();
    let timeout = Duration::from_secs_f64(
        c.config
            .deployment(&r.inside[0])
            .map(|d| d.timeout.seconds)
            .unwrap_or(2.0),
    );
    let region = Region {
        control: &control,
        service: &r.service,
        timeout,
        backend: c.endpoints.backend,
    };
    let moves = region.backend == BackendKind::Docker && region_moves(outage);
    let (over, back) = (failover_bound(&c.config, &r), recovery_bound(&c.config, &r, moves));
    let inside = |s: &Shot| s.served_by().is_some_and(|d| r.inside.iter().any(|i| i == d));
    // Failed over: served by another region without first waiting out the dead one's timeout
    // (a request retried onto the other region after its timeout is served, but late).
    let outside = |s: &Shot| s.latency < timeout && s.served_by().is_some_and(|d| !r.inside.iter().any(|i| i == d));
    let body = c.chat_body(&r.group, c.tag(), "steady traffic while a region goes down");
    let traffic = Traffic::start(c.router.clone(), body, INTERVAL, request_bound(&c, &r.group));
    // Whether the region is hurt now: healed once, on every path (a container unpaused twice
    // is an error).
    let hurt = std::sync::atomic::AtomicBool::new(false);
    let result = async {
        until_steady(&traffic, STEADY, Duration::from_secs(30), inside).await?;
        let fault_at = traffic.now();
        hurt.store(true, std::sync::atomic::Ordering::Relaxed);
        outage.apply(&region).await?;
        until_steady(&traffic, STEADY, over + SLACK, outside)
            .await
            .map_err(|e| anyhow::anyhow!("no failover out of {} ({}): {e}", r.service, outage.name()))?;
        let heal_at = traffic.now();
        outage.heal(&region).await?;
        hurt.store(false, std::sync::atomic::Ordering::Relaxed);
        until_steady(&traffic, STEADY, back + SLACK, inside)
            .await
            .map_err(|e| anyhow::anyhow!("traffic did not come back to {}: {e}", r.service))?;
        anyhow::Ok((fault_at, heal_at))
    }
    .await;
    // Healed whatever happened above: the next case finds the region as it was.
    let healed = if hurt.load(std::sync::atomic::Ordering::Relaxed) {
        outage.heal(&region).await
    } else {
        Ok(())
    };
    let shots = traffic.stop().await;
    let (fault_at, heal_at) = result?;
    healed?;
    let a = Account::new(shots, fault_at, heal_at);
    let failover = a.settled_after_fault(outside);
    let recovery = a.settled_after_heal(inside);
    tracing::info!(account = %a, ?failover, ?recovery, "region {} {}", r.service, outage.name());
    c.observe("requests_sent", (a.before.sent + a.during.sent + a.after.sent) as f64);
    c.observe("requests_lost", (a.during.lost() + a.after.lost()) as f64);
    let failover = failover.ok_or_else(|| {
        anyhow::anyhow!(
            "traffic never settled outside {}: {a}; the last before the heal: {}",
            r.service,
            a.last_before(heal_at, 6)
        )
    })?;
    let recovery = recovery.ok_or_else(|| {
        anyhow::anyhow!(
            "traffic never settled back on {}: {a}; the last: {}",
            r.service,
            a.last_before(Duration::MAX, 6)
        )
    })?;
    c.observe("failover_s", failover.as_secs_f64());
    c.observe(
        "slowest_during_outage_ms",
        a.slowest(fault_at, heal_at).as_secs_f64() * 1000.0,
    );
    c.observe("recovery_s", recovery.as_secs_f64());
    anyhow::ensure!(a.before.lost() == 0, "before the outage: {}", a.before);
    anyhow::ensure!(
        failover <= over,
        "failover took {:.2}s, more than the {:.2}s the config allows (allowed_fails + 1 failures at the \
         deployment's timeout, with retries, + {}s slack): {a}",
        failover.as_secs_f64(),
        over.as_secs_f64(),
        SLACK.as_secs()
    );
    anyhow::ensure!(
        recovery <= back,
        "traffic came back {:.2}s after the heal, more than the {:.2}s the config allows (a timeout, the \
         cooldown, the Redis read interval, + {}s slack): {a}",
        recovery.as_secs_f64(),
        back.as_secs_f64(),
        SLACK.as_secs()
    );
    // Once failed over, nothing is lost until the heal.
    let settled_at = fault_at + failover;
    let late: Vec<&Shot> = a.between(settled_at, heal_at).filter(|s| !s.ok()).collect();
    anyhow::ensure!(
        late.is_empty(),
        "{} request(s) lost after the failover settled: {a}",
        late.len()
    );
    Ok(())
}

async fn rides_out(c: Ctx, r: Regional, weather: Weather) -> anyhow::Result<()> {
    let control = c.control()?.clone();
    let region = Region {
        control: &control,
        service: &r.service,
        timeout: Duration::ZERO,
        backend: c.endpoints.backend,
    };
    let inside = |s: &Shot| s.served_by().is_some_and(|d| r.inside.iter().any(|i| i == d));
    let body = c.chat_body(&r.group, c.tag(), "steady traffic through bad weather");
    let traffic = Traffic::start(c.router.clone(), body, INTERVAL, request_bound(&c, &r.group));
    let proxy = region.proxy().await?;
    let result = async {
        until_steady(&traffic, STEADY, Duration::from_secs(30), inside).await?;
        let fault_at = traffic.now();
        proxy.add(&weather.toxic()).await?;
        until_steady(&traffic, 2 * STEADY, Duration::from_secs(30), inside).await?;
        let heal_at = traffic.now();
        proxy.clear().await?;
        until_steady(&traffic, STEADY, Duration::from_secs(30), inside).await?;
        anyhow::Ok((fault_at, heal_at))
    }
    .await;
    let cleared = proxy.clear().await;
    let shots = traffic.stop().await;
    let (fault_at, heal_at) = result?;
    cleared?;
    let a = Account::new(shots, fault_at, heal_at);
    let median = |from: Duration, to: Duration| {
        let mut l: Vec<Duration> = a.between(from, to).filter(|s| s.ok()).map(|s| s.latency).collect();
        l.sort();
        l.get(l.len() / 2).copied().unwrap_or_default()
    };
    let (calm, stormy) = (median(Duration::ZERO, fault_at), median(fault_at, heal_at));
    tracing::info!(account = %a, calm_ms = calm.as_millis() as u64, stormy_ms = stormy.as_millis() as u64, "{}", weather.name());
    c.observe("median_before_ms", calm.as_secs_f64() * 1000.0);
    c.observe("median_during_ms", stormy.as_secs_f64() * 1000.0);
    let moved: Vec<&Shot> = a
        .between(Duration::ZERO, Duration::MAX)
        .filter(|s| !inside(s))
        .collect();
    anyhow::ensure!(
        moved.is_empty(),
        "{} request(s) lost or moved out of {} under {}: {a}",
        moved.len(),
        r.service,
        weather.name()
    );
    if let Some(least) = weather.adds_at_least() {
        anyhow::ensure!(
            stormy >= calm + least,
            "{} did not show on the path: median {} ms before, {} ms during (expected at least +{} ms)",
            weather.name(),
            calm.as_millis(),
            stormy.as_millis(),
            least.as_millis()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_stack() -> (RouterConfig, Manifest) {
        let m = Manifest::builtin().unwrap();
        let cfg = RouterConfig::from_document(&m.router_config.doc).unwrap();
        (cfg, m)
    }

    #[test]
    fn the_default_stack_has_one_region_to_hurt_and_a_standby_outside_it() {
        let (cfg, m) = default_stack();
        let found = regional(&cfg, &m);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].group.as_str(), found[0].service.as_str()),
            ("chat-geo", "geo_a")
        );
        assert_eq!(found[0].inside, ["geo-a"]);
        // Bounds from the config: 2 failures × 2 s × 2 attempts + 3 s; 2 s × 2 + 2 s + 1 s + 3 s.
        assert_eq!(failover_bound(&cfg, &found[0]), Duration::from_secs(11));
        assert_eq!(recovery_bound(&cfg, &found[0], false), Duration::from_secs(10));
        // A heal that can move the region adds the router's DNS cache (1 s in the manifest).
        assert_eq!(recovery_bound(&cfg, &found[0], true), Duration::from_secs(11));
    }

    /// A group of two deployments, a (order 1) through `via_a` and b (order 2) through `via_b`.
    fn pair(via_a: &str, via_b: &str, router_settings: &str) -> RouterConfig {
        let text = format!(
            r#"
model_list:
  - model_name: g
    litellm_params: {{model: openai/x, api_base: "${{{via_a}.url}}/d/a/v1", order: 1}}
    model_info: {{id: a}}
  - model_name: g
    litellm_params: {{model: openai/x, api_base: "${{{via_b}.url}}/d/b/v1", order: 2}}
    model_info: {{id: b}}
router_settings: {{allowed_fails: 1, cooldown_time: 2{router_settings}}}
"#
        );
        RouterConfig::parse("r.yaml", &text).unwrap()
    }

    #[test]
    fn groups_on_the_simulator_itself_or_without_a_standby_have_no_region() {
        let (_, m) = default_stack();
        assert_eq!(
            regional(&pair("geo_a", "geo_b", ""), &m).len(),
            1,
            "the shape itself has a region"
        );
        // Both behind one service: nowhere to fail over to.
        assert!(regional(&pair("geo_a", "geo_a", ""), &m).is_empty());
        // The serving deployment straight on the simulator (a builtin: nothing of its own to kill).
        assert!(regional(&pair("sim", "geo_b", ""), &m).is_empty());
        // Cooldowns off: LiteLLM would keep sending to the dead region.
        assert!(regional(&pair("geo_a", "geo_b", ", disable_cooldowns: true"), &m).is_empty());
    }
}
