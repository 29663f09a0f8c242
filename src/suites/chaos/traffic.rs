//! Steady background traffic for a chaos case: one chat request every `interval`, each sent
//! at its planned time whatever the earlier ones are doing (an open loop: a request hung on a
//! paused upstream cannot delay the next, so a stall shows as latency and errors, not as a
//! gap), each bounded by its own timeout, each recorded.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::client::RouterClient;
use crate::runner::context::Ctx;
use crate::runner::registry::Plan;
use crate::suites::support::sims_of;

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx with a chat completion; the deployment that served it, as the router said.
    Served(Option<String>),
    /// Anything else, by class: `connect` (refused: nothing listening), `timeout` (no answer
    /// within the request's bound), `closed` (the connection ended before a whole answer),
    /// `http_NNN`, `malformed` (2xx that is not a chat completion).
    Failed(String),
}

/// One request of the traffic.
#[derive(Debug, Clone)]
pub struct Shot {
    /// Its number: the n-th request planned.
    pub seq: usize,
    /// Its planned send time, from the traffic's start.
    pub at: Duration,
    pub latency: Duration,
    pub outcome: Outcome,
}

impl Shot {
    pub fn ok(&self) -> bool {
        matches!(self.outcome, Outcome::Served(_))
    }
    pub fn served_by(&self) -> Option<&str> {
        match &self.outcome {
            Outcome::Served(d) => d.as_deref(),
            Outcome::Failed(_) => None,
        }
    }
}

/// Traffic under way; [`Traffic::stop`] ends it and returns every request, in send order.
pub struct Traffic {
    start: Instant,
    interval: Duration,
    client: Arc<RwLock<RouterClient>>,
    shots: Arc<Mutex<Vec<Shot>>>,
    stop: tokio::sync::watch::Sender<bool>,
    pacer: tokio::task::JoinHandle<Vec<tokio::task::JoinHandle<()>>>,
}

impl Traffic {
    /// Starts sending `body` (one request per `interval`, each bounded by `timeout`) to
    /// `client`'s chat completions.
    pub fn start(client: RouterClient, body: Value, interval: Duration, timeout: Duration) -> Self {
        let start = Instant::now();
        let client = Arc::new(RwLock::new(client));
        let shots = Arc::new(Mutex::new(Vec::new()));
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (c, s) = (client.clone(), shots.clone());
        let pacer = tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut seq = 0;
            let mut tick = tokio::time::interval_at(tokio::time::Instant::from_std(start), interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            loop {
                tokio::select! {
                    t = tick.tick() => {
                        let at = t.into_std().saturating_duration_since(start);
                        let client = c.read().unwrap_or_else(|e| e.into_inner()).clone();
                        let (body, shots) = (body.clone(), s.clone());
                        seq += 1;
                        sent.push(tokio::spawn(async move {
                            let t0 = Instant::now();
                            let outcome = send(&client, &body, timeout).await;
                            let shot = Shot { seq, at, latency: t0.elapsed(), outcome };
                            shots.lock().unwrap_or_else(|e| e.into_inner()).push(shot);
                        }));
                    }
                    _ = stopped.changed() => break,
                }
            }
            sent
        });
        Self {
            start,
            interval,
            client,
            shots,
            stop,
            pacer,
        }
    }

    /// Time since the traffic started: how a case marks when it hurt and healed.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// The number of the first request planned at or after `at` (request k is planned at
    /// (k - 1) × interval).
    fn first_planned_from(&self, at: Duration) -> usize {
        at.as_nanos().div_ceil(self.interval.as_nanos().max(1)) as usize + 1
    }

    /// Sends the next requests to another address (a router restarted on a new port).
    pub fn retarget(&self, client: RouterClient) {
        *self.client.write().unwrap_or_else(|e| e.into_inner()) = client;
    }

    /// Requests answered so far (a case waiting for traffic to come back reads this).
    pub fn answered(&self) -> Vec<Shot> {
        let mut v = self.shots.lock().unwrap_or_else(|e| e.into_inner()).clone();
        v.sort_by_key(|s| s.at);
        v
    }

    /// Stops sending and waits for every request sent (each is bounded by its timeout).
    pub async fn stop(self) -> Vec<Shot> {
        let _ = self.stop.send(true);
        if let Ok(sent) = self.pacer.await {
            for s in sent {
                let _ = s.await;
            }
        }
        let mut v = std::mem::take(&mut *self.shots.lock().unwrap_or_else(|e| e.into_inner()));
        v.sort_by_key(|s| s.at);
        v
    }
}

async fn send(client: &RouterClient, body: &Value, timeout: Duration) -> Outcome {
    let resp = match client.post_raw("/v1/chat/completions", body, timeout).await {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(class(&e)),
    };
    let status = resp.status().as_u16();
    let served_by = crate::client::RouterHeaders::from(resp.headers()).model_id;
    let body = match resp.bytes().await {
        Ok(b) => b,
        Err(e) => return Outcome::Failed(class(&e)),
    };
    if !(200..300).contains(&status) {
        return Outcome::Failed(format!("http_{status}"));
    }
    let whole = serde_json::from_slice::<Value>(&body)
        .ok()
        .is_some_and(|v| crate::client::shape::chat_completion(&v).is_ok());
    if whole {
        Outcome::Served(served_by)
    } else {
        Outcome::Failed("malformed".into())
    }
}

/// The class of a request that got no whole HTTP answer.
fn class(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "closed".into()
    }
}

/// How often the chaos cases send: enough to see a failover to a tenth of a second, light
/// enough for one LiteLLM worker on a busy 2-core box.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// Requests per minute the traffic sends (for the config's rpm gate).
pub const PER_MINUTE: f64 = 600.0;

/// Waits (at most `bound`) until every request planned since the call up to the newest
/// answered one has been answered, and the last `n` of them were served and `ok`: a request
/// still in flight behind a newer answer (hung on a dead region, waiting out its timeout) is
/// a hole, not a pass — healing then would release it and hide how it ends. Returns how long
/// that took. The case's own readiness check, never a fixed sleep.
pub async fn until_steady(
    t: &Traffic,
    n: usize,
    bound: Duration,
    ok: impl Fn(&Shot) -> bool,
) -> anyhow::Result<Duration> {
    let from = t.now();
    let t0 = Instant::now();
    loop {
        let answered: Vec<Shot> = t.answered().into_iter().filter(|s| s.at >= from).collect();
        let oldest = t.first_planned_from(from);
        let newest = answered.iter().map(|s| s.seq).max().unwrap_or(0);
        let whole = newest >= oldest && answered.len() == newest - oldest + 1;
        let window: Vec<&Shot> = answered.iter().filter(|s| s.seq + n > newest).collect();
        if whole && window.len() == n && window.iter().all(|s| s.ok() && ok(s)) {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > bound {
            let last: Vec<String> = answered
                .iter()
                .rev()
                .take(5)
                .map(|s| format!("{:?}", s.outcome))
                .collect();
            anyhow::bail!(
                "traffic not served steadily within {:.0}s ({} answered since; the last: {})",
                bound.as_secs_f64(),
                answered.len(),
                last.join(", ")
            );
        }
        tokio::time::sleep(INTERVAL / 2).await;
    }
}

/// The group a chaos case sends its traffic to: the first chat group on the simulator that
/// takes [`PER_MINUTE`], else why there is none (the case is then ignored with it).
pub fn steady_group(plan: &Plan) -> Result<String, String> {
    let cfg = &plan.config;
    cfg.groups()
        .into_iter()
        .find(|g| cfg.traffic_gate(g, PER_MINUTE).is_none() && !sims_of(cfg, g).is_empty())
        .ok_or_else(|| {
            format!(
                "no chat group on the simulator takes {PER_MINUTE} requests a minute (rpm/tpm), the traffic a \
                 chaos case sends"
            )
        })
}

/// A request's bound: every attempt the router may make at the group's timeout, plus slack.
pub fn request_bound(c: &Ctx, group: &str) -> Duration {
    let per_attempt = c
        .config
        .deployments_of(group)
        .iter()
        .map(|d| d.timeout.seconds)
        .fold(0.0, f64::max);
    let attempts = f64::from(c.config.num_retries + 1) * 2.0;
    Duration::from_secs_f64((per_attempt * attempts).clamp(5.0, 60.0) + 5.0)
}
