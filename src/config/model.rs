//! [`RouterConfig`]: what gauntlet knows of a team's router config, each rule of LiteLLM's
//! modelled in its own file (timeouts, fallbacks, routing, pricing, providers) and combined
//! here. Read from the config *template*, so cases are derived (and listed) before anything
//! starts.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::fallback::{self, Chain, ChainKind, Fallbacks, Outcomes};
use super::pricing::{self, Pricing};
use super::provider::{Mode, Provider};
use super::routing::{self, Knobs, Strategy};
use super::source::{ConfigError, Document, Seg};
use super::timeout::{self, Effective};

/// LiteLLM's cooldown when none is configured (`DEFAULT_COOLDOWN_TIME_SECONDS`).
pub const DEFAULT_COOLDOWN_S: f64 = 5.0;

/// LiteLLM's bound on fallback hops (`ROUTER_MAX_FALLBACKS`).
pub const DEFAULT_MAX_FALLBACKS: u32 = 5;

#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// The user's file, for messages.
    pub origin: String,
    pub deployments: Vec<Deployment>,
    /// Fallback chains as the config writes them (one per entry), for naming cases.
    pub chains: Vec<Chain>,
    pub fallbacks: Fallbacks,
    pub strategy: Strategy,
    pub num_retries: u32,
    /// `retry_policy`: retries per error class (`RateLimitErrorRetries`, …).
    pub retry_policy: BTreeMap<String, u32>,
    /// `model_group_retry_policy`: the same, per group (wins over `retry_policy`).
    pub group_retry_policy: BTreeMap<String, BTreeMap<String, u32>>,
    pub cooldowns_disabled: bool,
    /// `allowed_fails_policy` is set: LiteLLM then counts failures per error class for every
    /// deployment, a group's only one included.
    pub allowed_fails_policy: bool,
    /// How often a LiteLLM re-reads a key (a cooldown) from Redis that it found absent
    /// (`default_redis_batch_cache_expiry`, 10 s by default).
    pub redis_read_interval_s: f64,
    /// The router's own `cooldown_time` (else LiteLLM's default): what a deployment without
    /// its own gets, and how long LiteLLM remembers a failure it counted against
    /// `allowed_fails` (`failed_calls`, kept for the router's cooldown time).
    pub router_cooldown_s: f64,
    /// `router_settings.optional_pre_call_checks` (`enforce_model_rate_limits`, …).
    pub pre_call_checks: Vec<String>,
    /// The router's own `allowed_fails`, as written.
    pub router_allowed_fails: Option<u32>,
    pub cache: bool,
    pub has_master_key: bool,
    pub has_generic_logger: bool,
    /// Teams the config names (`litellm_settings.default_team_settings`); empty when it has none.
    pub teams: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// `model_info.id`: what the router reports in `x-litellm-model-id`.
    pub id: String,
    /// `model_name`: the group clients ask for.
    pub group: String,
    /// The simulator deployment behind it (`${<sim service>.url}/d/<name>/…`), if any.
    pub sim: Option<String>,
    /// The stack service its `api_base` names (`${<service>.url}/…`): the simulator itself, or
    /// a service in front of it (a fault proxy standing for a region).
    pub via: Option<String>,
    pub provider: Provider,
    pub mode: Mode,
    /// Per attempt, plain and streamed.
    pub timeout: Effective,
    pub stream_timeout: Effective,
    pub knobs: Knobs,
    /// Failures tolerated before cooldown (`model_info.allowed_fails`, else the router's).
    pub allowed_fails: Option<u32>,
    /// Seconds a failing deployment is skipped (0: never cooled down).
    pub cooldown_s: f64,
    /// Its own `cooldown_time` (`model_info`, else `litellm_params`), if it sets one: LiteLLM
    /// then ignores a failure's `Retry-After` (deployment > header > router, in
    /// `Router.deployment_callback_on_failure`).
    pub own_cooldown_s: Option<f64>,
    /// Its own `model_info.allowed_fails`, if it sets one.
    pub own_allowed_fails: Option<u32>,
    pub pricing: Pricing,
    /// `litellm_params.max_retries`: retries the provider client makes inside one attempt.
    pub client_retries: u32,
    /// Its index in `model_list`, for messages.
    pub index: usize,
}

impl Deployment {
    pub fn order(&self) -> Option<i64> {
        self.knobs.order
    }
}

fn int(v: &Value) -> Option<i64> {
    pricing::number(v).map(|n| n as i64)
}

impl RouterConfig {
    /// Reads a config (already resolved: includes, merge keys) into gauntlet's model of it.
    /// Every deployment needs a `model_info.id` (gauntlet tells deployments apart by it);
    /// `gauntlet mirror` gives every deployment one.
    pub fn from_document(doc: &Document) -> Result<Self, ConfigError> {
        let root = &doc.root;
        let k = |s: &str| Seg::Key(s.to_owned());
        let list = root.get("model_list").and_then(Value::as_sequence).ok_or_else(|| {
            doc.error(
                &[k("model_list")],
                "no model_list (a list of deployments) found: gauntlet derives its cases from it",
            )
        })?;
        let rset = root.get("router_settings");
        let lset = root.get("litellm_settings");
        let setting = |key: &str| rset.and_then(|r| r.get(key)).or_else(|| lset.and_then(|l| l.get(key)));
        let global = timeout::Global {
            router_timeout: rset.and_then(|r| r.get("timeout")).and_then(pricing::number),
            router_stream_timeout: rset.and_then(|r| r.get("stream_timeout")).and_then(pricing::number),
            request_timeout: lset.and_then(|l| l.get("request_timeout")).and_then(pricing::number),
        };
        let router_allowed = setting("allowed_fails").and_then(int).map(|n| n as u32);
        let router_cooldown = setting("cooldown_time").and_then(pricing::number);
        let mut deployments = Vec::new();
        for (i, d) in list.iter().enumerate() {
            let at = |more: &[&str]| entry_path(i, more);
            let group = model_name(doc, d, i)?;
            let params = d.get("litellm_params");
            let info = d.get("model_info");
            let model = params
                .and_then(|p| p.get("model"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    doc.error(
                        &at(&["litellm_params"]),
                        &format!("model_list[{i}] ({group}) has no litellm_params.model"),
                    )
                })?;
            let id = info.and_then(|m| m.get("id")).and_then(value_str).ok_or_else(|| {
                doc.error(
                    &at(&[]),
                    &format!(
                        "model_list[{i}] ({group}) has no model_info.id; gauntlet needs stable deployment ids \
                         to tell which deployment served a request (`gauntlet mirror` adds them)"
                    ),
                )
            })?;
            let p = |key: &str| params.and_then(|p| p.get(key)).and_then(pricing::number);
            let own = timeout::Own {
                timeout: p("timeout"),
                request_timeout: p("request_timeout"),
                stream_timeout: p("stream_timeout"),
            };
            let api_base = params.and_then(|p| p.get("api_base")).and_then(Value::as_str);
            let (provider, _) = Provider::of(model);
            let knobs = Knobs {
                order: params
                    .and_then(|p| p.get("order"))
                    .or_else(|| info.and_then(|m| m.get("order")))
                    .and_then(int),
                weight: p("weight"),
                // LiteLLM copies an rpm/tpm written beside litellm_params into it.
                rpm: p("rpm").or_else(|| d.get("rpm").and_then(pricing::number)),
                tpm: p("tpm").or_else(|| d.get("tpm").and_then(pricing::number)),
            };
            deployments.push(Deployment {
                id,
                group: group.to_owned(),
                sim: api_base.and_then(sim_deployment),
                via: api_base.and_then(service_of),
                mode: Mode::of(info.and_then(|m| m.get("mode")).and_then(Value::as_str), model),
                provider,
                timeout: timeout::plain(own, global),
                stream_timeout: timeout::stream(own, global),
                knobs,
                allowed_fails: info
                    .and_then(|m| m.get("allowed_fails"))
                    .and_then(int)
                    .map(|n| n as u32)
                    .or(router_allowed),
                cooldown_s: info
                    .and_then(|m| m.get("cooldown_time"))
                    .or_else(|| params.and_then(|p| p.get("cooldown_time")))
                    .and_then(pricing::number)
                    .or(router_cooldown)
                    .unwrap_or(DEFAULT_COOLDOWN_S),
                own_cooldown_s: info
                    .and_then(|m| m.get("cooldown_time"))
                    .or_else(|| params.and_then(|p| p.get("cooldown_time")))
                    .and_then(pricing::number),
                own_allowed_fails: info
                    .and_then(|m| m.get("allowed_fails"))
                    .and_then(int)
                    .map(|n| n as u32),
                pricing: pricing::of(params, info),
                client_retries: p("max_retries").map_or(0, |n| n.max(0.0) as u32),
                index: i,
            });
        }
        for (i, d) in deployments.iter().enumerate() {
            // One id twice in a group is LiteLLM's own doing for identical deployments.
            if let Some(j) = deployments[..i].iter().position(|e| e.id == d.id && e.group != d.group) {
                return Err(doc.error(
                    &[k("model_list"), Seg::Index(i), k("model_info"), k("id")],
                    &format!("model_info.id '{}' is used twice (also by model_list[{j}])", d.id),
                ));
            }
            if d.id != d.group && deployments.iter().any(|e| e.group == d.id) {
                return Err(doc.error(
                    &[k("model_list"), Seg::Index(i), k("model_info"), k("id")],
                    &format!(
                        "model_info.id '{}' is also the name of a model group: LiteLLM would send every \
                         request for that group to this one deployment",
                        d.id
                    ),
                ));
            }
        }
        let fallbacks = read_fallbacks(doc, &|g| deployments.iter().any(|d| d.group == g || d.id == g))?;
        let mut chains = Vec::new();
        for kind in ChainKind::ALL {
            let list = match kind {
                ChainKind::General => Some(&fallbacks.general),
                ChainKind::ContextWindow => fallbacks.context_window.as_ref(),
                ChainKind::ContentPolicy => fallbacks.content_policy.as_ref(),
            };
            for (primary, rest) in list.into_iter().flatten() {
                if primary == "*" || rest.iter().all(|g| g == primary) {
                    continue;
                }
                let mut groups = vec![primary.clone()];
                groups.extend(rest.iter().filter(|g| *g != primary).cloned());
                chains.push(Chain { kind, groups });
            }
        }
        let callbacks = lset.and_then(|l| l.get("callbacks"));
        let has_generic_logger = match callbacks {
            Some(Value::Sequence(c)) => c.iter().any(|v| v.as_str() == Some("generic_api")),
            Some(Value::String(s)) => s == "generic_api",
            _ => false,
        };
        let teams = lset
            .and_then(|l| l.get("default_team_settings"))
            .and_then(Value::as_sequence)
            .map(|ts| ts.iter().filter_map(|t| t.get("team_id").and_then(value_str)).collect())
            .unwrap_or_default();
        Ok(Self {
            origin: doc.origin.clone(),
            deployments,
            chains,
            fallbacks,
            strategy: Strategy::parse(rset.and_then(|r| r.get("routing_strategy")).and_then(Value::as_str)),
            num_retries: setting("num_retries")
                .and_then(int)
                .map_or(DEFAULT_NUM_RETRIES, |n| n.max(0) as u32),
            retry_policy: setting("retry_policy").map(policy).unwrap_or_default(),
            group_retry_policy: setting("model_group_retry_policy")
                .and_then(Value::as_mapping)
                .map(|m| {
                    m.iter()
                        .filter_map(|(g, p)| Some((g.as_str()?.to_owned(), policy(p))))
                        .collect()
                })
                .unwrap_or_default(),
            cooldowns_disabled: setting("disable_cooldowns").and_then(Value::as_bool) == Some(true),
            allowed_fails_policy: setting("allowed_fails_policy").is_some_and(|v| !v.is_null()),
            redis_read_interval_s: lset
                .and_then(|l| l.get("default_redis_batch_cache_expiry"))
                .and_then(pricing::number)
                .unwrap_or(10.0),
            router_cooldown_s: router_cooldown.unwrap_or(DEFAULT_COOLDOWN_S),
            router_allowed_fails: router_allowed,
            pre_call_checks: rset
                .and_then(|r| r.get("optional_pre_call_checks"))
                .and_then(Value::as_sequence)
                .map(|s| s.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
            cache: lset
                .and_then(|l| l.get("cache"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            has_master_key: root.get("general_settings").and_then(|g| g.get("master_key")).is_some(),
            has_generic_logger,
            teams,
        })
    }

    /// Parses config text (no includes): for the built-in stack and tests.
    pub fn parse(origin: &str, text: &str) -> Result<Self, ConfigError> {
        Self::from_document(&Document::parse(origin, text)?)
    }

    /// Model groups in config order, each once.
    pub fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for d in &self.deployments {
            if !out.contains(&d.group) {
                out.push(d.group.clone());
            }
        }
        out
    }

    pub fn deployments_of(&self, group: &str) -> Vec<&Deployment> {
        self.deployments.iter().filter(|d| d.group == group).collect()
    }

    pub fn deployment(&self, id: &str) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.id == id)
    }

    /// The deployment the simulator knows as `sim`.
    pub fn by_sim(&self, sim: &str) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.sim.as_deref() == Some(sim))
    }

    /// The group a simulator deployment belongs to.
    pub fn group_of_sim(&self, sim: &str) -> Option<&str> {
        self.by_sim(sim).map(|d| d.group.as_str())
    }

    /// Simulator deployments the router points at (what the simulator must serve).
    pub fn sim_deployments(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in self.deployments.iter().filter_map(|d| d.sim.clone()) {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        out
    }

    /// What a group serves: the mode of its first deployment.
    pub fn mode_of(&self, group: &str) -> Mode {
        self.deployments_of(group)
            .first()
            .map_or(Mode::Chat, |d| d.mode.clone())
    }

    /// Whether every deployment of a group is on the simulator (so faults can be injected).
    pub fn simulated(&self, group: &str) -> bool {
        let deps = self.deployments_of(group);
        !deps.is_empty() && deps.iter().all(|d| d.sim.is_some())
    }

    /// The deployments a fallback target names: a group's, or the one deployment whose id it is.
    pub fn targets_of(&self, name: &str) -> Vec<&Deployment> {
        let group = self.deployments_of(name);
        if group.is_empty() {
            self.deployment(name).into_iter().collect()
        } else {
            group
        }
    }

    /// Requests a minute a group accepts: the sum of its deployments' `rpm`, and of their
    /// `tpm` at [`TOKENS_PER_REQUEST`], whichever is lower; `None` when nothing limits it.
    pub fn request_budget(&self, group: &str) -> Option<f64> {
        let deps = self.deployments_of(group);
        let rpm = deps.iter().map(|d| d.knobs.rpm).sum::<Option<f64>>();
        let tpm = deps
            .iter()
            .map(|d| d.knobs.tpm)
            .sum::<Option<f64>>()
            .map(|t| t / TOKENS_PER_REQUEST);
        match (rpm, tpm) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Why cases that inject faults into `group` and send it `per_minute` requests cannot
    /// run, if they cannot: [`Self::traffic_gate`], or a deployment not on the simulator.
    pub fn unusable(&self, group: &str, per_minute: f64) -> Option<String> {
        self.traffic_gate(group, per_minute).or_else(|| {
            self.targets_of(group).into_iter().find(|d| d.sim.is_none()).map(|d| {
                format!(
                    "{group}'s deployment {} is not on the simulator (mirror the config with `gauntlet mirror`)",
                    d.id
                )
            })
        })
    }

    /// Why chat cases sending `per_minute` requests to `group` cannot run, if they cannot:
    /// a wildcard or non-chat group, or one whose rpm/tpm is below that.
    pub fn traffic_gate(&self, group: &str, per_minute: f64) -> Option<String> {
        if group.contains('*') {
            return Some(format!(
                "{group} is a wildcard group: gauntlet sends requests to named groups only"
            ));
        }
        let mode = self.mode_of(group);
        if mode != Mode::Chat {
            return Some(format!("{group} serves {mode}: this case sends chat completions"));
        }
        match self.request_budget(group) {
            Some(b) if b < per_minute => Some(format!(
                "{group} accepts about {b:.0} requests a minute (rpm/tpm in the config) and this case sends up to \
                 {per_minute:.0}: LiteLLM would refuse the rest, which is the config working, not a failure"
            )),
            _ => None,
        }
    }

    /// The first chat group with room for `per_minute` requests whose every deployment the
    /// simulator serves on its OpenAI route: a direct call to one of them is the very call the
    /// router makes, so the two can be compared (router overhead, load).
    pub fn direct_comparable_group(&self, per_minute: f64) -> Option<String> {
        self.groups().into_iter().find(|g| {
            self.unusable(g, per_minute).is_none()
                && self.deployments_of(g).iter().all(|d| {
                    matches!(
                        d.provider,
                        super::provider::Provider::OpenAi | super::provider::Provider::HostedVllm
                    )
                })
        })
    }

    /// The group generic cases (auth, format, streaming, caching…) send their traffic to:
    /// the first chat group on the simulator with room for [`PROBE_RPM`] requests a minute.
    pub fn probe_group(&self) -> Option<String> {
        self.groups()
            .into_iter()
            .find(|g| self.traffic_gate(g, PROBE_RPM).is_none())
    }

    /// Like [`Self::probe_group`], among groups whose every deployment the ledger can price.
    pub fn priced_probe_group(&self) -> Option<String> {
        self.groups().into_iter().find(|g| {
            self.unusable(g, PROBE_RPM).is_none() && self.deployments_of(g).iter().all(|d| d.pricing.price().is_some())
        })
    }

    /// Expected share of traffic per deployment of `group` when healthy, if the strategy
    /// makes it predictable.
    pub fn expected_shares(&self, group: &str) -> Option<Vec<(String, f64)>> {
        if !self.strategy.predictable_share() {
            return None;
        }
        let deps = self.deployments_of(group);
        let knobs: Vec<Knobs> = deps.iter().map(|d| d.knobs).collect();
        let shares = routing::shuffle_shares(&knobs);
        // Entries sharing an id (identical deployments) are one deployment to the router's
        // headers: their shares add up.
        let mut out: Vec<(String, f64)> = Vec::new();
        for (d, s) in deps.iter().zip(shares) {
            match out.iter_mut().find(|(id, _)| *id == d.id) {
                Some((_, total)) => *total += s,
                None => out.push((d.id.clone(), s)),
            }
        }
        Some(out)
    }

    /// Whether LiteLLM can put deployments of `group` into cooldown: not when cooldowns are
    /// disabled or their time is 0, and (without `allowed_fails` or an `allowed_fails_policy`)
    /// not for a group's only deployment.
    pub fn can_cool_down(&self, group: &str) -> bool {
        let deps = self.deployments_of(group);
        let counts_singles = self.allowed_fails_policy;
        !self.cooldowns_disabled
            && deps
                .iter()
                .any(|d| d.cooldown_s > 0.0 && (deps.len() > 1 || d.allowed_fails.is_some() || counts_singles))
    }

    /// How long LiteLLM still counts a failure of `d` towards `allowed_fails` after it
    /// happened (`failed_calls` lives for the router's cooldown time, or the deployment's own
    /// when it sets one): a case counting failures from zero waits this long after the last.
    pub fn failure_memory_s(&self, d: &Deployment) -> f64 {
        self.router_cooldown_s.max(d.cooldown_s)
    }

    /// The failures LiteLLM lets `d` have before it cools it down, as it counts them: the
    /// deployment's own `allowed_fails`, else the router's — unless the router's equals
    /// LiteLLM's default (3), which `_is_allowed_fails_set_on_router` cannot tell from unset:
    /// then None, and LiteLLM cools a load-balanced deployment down at its first 429 and on
    /// 5xx by its failure rate over the minute instead.
    pub fn counted_allowed_fails(&self, d: &Deployment) -> Option<u32> {
        let router = self
            .router_allowed_fails
            .filter(|n| *n != LITELLM_DEFAULT_ALLOWED_FAILS);
        d.own_allowed_fails.or(router)
    }

    /// The cooldown LiteLLM gives `d` for a failure whose reply said `Retry-After:
    /// retry_after_s` (None: no header): the deployment's own cooldown_time, else the
    /// header, else the router's (`Router.deployment_callback_on_failure`). 0 means none.
    pub fn cooldown_for(&self, d: &Deployment, retry_after_s: Option<f64>) -> f64 {
        d.own_cooldown_s.or(retry_after_s).unwrap_or(self.router_cooldown_s)
    }

    /// What LiteLLM does with the `rpm`/`tpm` its deployments set, under this config.
    pub fn rate_limits(&self) -> RateLimits {
        if self.pre_call_checks.iter().any(|c| c == "enforce_model_rate_limits") {
            RateLimits::PreCallCheck
        } else if self.strategy == Strategy::UsageBasedV2 {
            RateLimits::UsageBasedV2
        } else if self.strategy == Strategy::SimpleShuffle {
            RateLimits::Weights
        } else {
            RateLimits::Unmeasured(self.strategy.to_string())
        }
    }

    /// How often LiteLLM calls `group` again after an error of `class` (`RateLimitError`,
    /// `InternalServerError`, `Timeout`…): the group's retry policy, else the router's, else
    /// `num_retries`.
    pub fn retries(&self, group: &str, class: &str) -> u32 {
        let key = format!("{class}Retries");
        self.group_retry_policy
            .get(group)
            .and_then(|p| p.get(&key))
            .or_else(|| self.retry_policy.get(&key))
            .copied()
            .unwrap_or(self.num_retries)
    }

    /// Whether the calls a failing group gets can be counted exactly in advance: none of its
    /// deployments can be cooled down mid-request and none retries inside its own client.
    pub fn exact_attempts(&self, group: &str) -> bool {
        !self.can_cool_down(group) && self.deployments_of(group).iter().all(|d| d.client_retries == 0)
    }

    /// The walk LiteLLM makes from `start` when every group in `failing` fails with `kind`
    /// errors (and every other group answers).
    pub fn walk(&self, start: &str, failing: &[String], kind: ChainKind) -> fallback::Walk {
        struct World<'a> {
            cfg: &'a RouterConfig,
            failing: &'a [String],
            kind: ChainKind,
        }
        impl Outcomes for World<'_> {
            fn outcome(&self, g: &str) -> Option<ChainKind> {
                self.failing.iter().any(|f| f == g).then_some(self.kind)
            }
            fn order_levels(&self, g: &str) -> Vec<i64> {
                let knobs: Vec<Knobs> = self.cfg.deployments_of(g).iter().map(|d| d.knobs).collect();
                routing::order_levels(&knobs)
            }
        }
        self.fallbacks.walk(
            start,
            &World {
                cfg: self,
                failing,
                kind,
            },
        )
    }

    /// Every group LiteLLM tries from `start` when all of them fail with `kind` errors.
    pub fn closure(&self, start: &str, kind: ChainKind) -> Vec<String> {
        let everything = self.groups();
        self.walk(start, &everything, kind).groups()
    }
}

/// What LiteLLM 1.100.5 does with a deployment's `rpm`/`tpm` (read from its source, measured
/// by the limits:: cases).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateLimits {
    /// `optional_pre_call_checks: [enforce_model_rate_limits]` (`ModelRateLimitingCheck`):
    /// a call over the limit is refused before it is made, whatever the strategy.
    PreCallCheck,
    /// `usage-based-routing-v2`: a deployment is picked only while under its limits.
    UsageBasedV2,
    /// Weights for simple-shuffle's pick and nothing more: nothing is refused.
    Weights,
    /// A strategy whose handling of limits gauntlet has not measured.
    Unmeasured(String),
}

/// `litellm.allowed_fails`: a router `allowed_fails` equal to it counts as unset.
pub const LITELLM_DEFAULT_ALLOWED_FAILS: u32 = 3;

/// Requests a minute the generic cases may send to the probe group, together: about 50
/// (smoke ~10, caching ~6, ledger ~25, secrets ~6, conformance 3), doubled for margin.
pub const PROBE_RPM: f64 = 100.0;

/// A generous token count for one of gauntlet's requests, to turn `tpm` into requests.
pub const TOKENS_PER_REQUEST: f64 = 60.0;

/// LiteLLM's router default when neither settings section sets `num_retries`
/// (`openai.DEFAULT_MAX_RETRIES`).
pub const DEFAULT_NUM_RETRIES: u32 = 2;

/// Checks that every fallback target of a config (ids or not) names a group or a deployment
/// id of its model_list, with the line of the first that does not.
pub fn check_fallbacks(doc: &Document) -> Result<(), ConfigError> {
    let list = doc
        .root
        .get("model_list")
        .and_then(Value::as_sequence)
        .cloned()
        .unwrap_or_default();
    let known = |g: &str| {
        list.iter().any(|d| {
            d.get("model_name").and_then(Value::as_str) == Some(g)
                || d.get("model_info")
                    .and_then(|m| m.get("id"))
                    .and_then(value_str)
                    .as_deref()
                    == Some(g)
        })
    };
    read_fallbacks(doc, &known).map(drop)
}

fn read_fallbacks(doc: &Document, known: &dyn Fn(&str) -> bool) -> Result<Fallbacks, ConfigError> {
    let root = &doc.root;
    let k = |s: &str| Seg::Key(s.to_owned());
    // router_settings wins over litellm_settings, as the router is built from it first.
    let find = |key: &str| -> Option<(&'static str, &Value)> {
        if let Some(v) = root.get("router_settings").and_then(|r| r.get(key)) {
            return Some(("router_settings", v));
        }
        root.get("litellm_settings")
            .and_then(|l| l.get(key))
            .map(|v| ("litellm_settings", v))
    };
    let read = |key: &str| -> Result<Option<fallback::List>, ConfigError> {
        let Some((section, v)) = find(key) else {
            return Ok(None);
        };
        if v.is_null() {
            return Ok(None);
        }
        let list = fallback::parse_list(v).map_err(|e| doc.error(&[k(section), k(key)], &format!("{key}: {e}")))?;
        for (i, (primary, rest)) in list.iter().enumerate() {
            for (j, g) in std::iter::once(primary).chain(rest).enumerate() {
                // A fallback may also name one deployment by its id (LiteLLM routes to it).
                if g == "*" || known(g) {
                    continue;
                }
                let mut at = vec![k(section), k(key), Seg::Index(i)];
                if j > 0 {
                    at.push(k(primary));
                    at.push(Seg::Index(j - 1));
                }
                return Err(doc.error(
                    &at,
                    &format!("{section}.{key} names model group '{g}', which no deployment in model_list serves"),
                ));
            }
        }
        Ok(Some(list))
    };
    let mut general = read("fallbacks")?.unwrap_or_default();
    if let Some((section, v)) = find("default_fallbacks") {
        let groups: Vec<String> = v
            .as_sequence()
            .ok_or_else(|| {
                doc.error(
                    &[k(section), k("default_fallbacks")],
                    "default_fallbacks: expected a list of groups",
                )
            })?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect();
        general.push(("*".to_owned(), groups));
    }
    let max_fallbacks = find("max_fallbacks")
        .and_then(|(_, v)| int(v))
        .map_or(DEFAULT_MAX_FALLBACKS, |n| n.max(0) as u32);
    Ok(Fallbacks {
        general,
        context_window: read("context_window_fallbacks")?.filter(|l| !l.is_empty()),
        content_policy: read("content_policy_fallbacks")?.filter(|l| !l.is_empty()),
        max_fallbacks,
    })
}

/// The path of `model_list[i]` (and of `more` keys under it), for errors and warnings.
pub(crate) fn entry_path(i: usize, more: &[&str]) -> Vec<Seg> {
    let mut p = vec![Seg::Key("model_list".into()), Seg::Index(i)];
    p.extend(more.iter().map(|s| Seg::Key((*s).to_owned())));
    p
}

/// `model_list[i].model_name`, or the error naming the entry and its line.
pub(crate) fn model_name<'a>(doc: &Document, d: &'a Value, i: usize) -> Result<&'a str, ConfigError> {
    d.get("model_name")
        .and_then(Value::as_str)
        .ok_or_else(|| doc.error(&entry_path(i, &[]), &format!("model_list[{i}] has no model_name")))
}

fn policy(v: &Value) -> BTreeMap<String, u32> {
    v.as_mapping()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), int(v)?.max(0) as u32)))
                .collect()
        })
        .unwrap_or_default()
}

fn value_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The service an `api_base` starts with (`${<service>.url}…` → `<service>`).
fn service_of(api_base: &str) -> Option<String> {
    let (placeholder, _) = api_base.strip_prefix("${")?.split_once('}')?;
    let service = placeholder.strip_suffix(".url")?;
    (!service.is_empty() && !service.contains(['$', '{', '/'])).then(|| service.to_owned())
}

/// The simulator deployment an `api_base` points at: `${<service>.url}/d/<name>` and what
/// follows (`/v1` for OpenAI; nothing for Azure and Anthropic) → `<name>`. Gauntlet reads the
/// router config before rendering it, so an address on the simulator is exactly its own base
/// URL template followed by `/d/<name>`; any other `api_base` — a real gateway's
/// `https://gw.corp/d/openai/v1` included — is not on the simulator.
fn sim_deployment(api_base: &str) -> Option<String> {
    let inner = api_base.strip_prefix("${")?;
    let (placeholder, path) = inner.split_once('}')?;
    let service = placeholder.strip_suffix(".url")?;
    if service.is_empty() || service.contains(['$', '{', '/']) || !path.starts_with("/d/") {
        return None;
    }
    // The path as a URL reads it, on a stand-in origin.
    let url = url::Url::parse(&format!("http://simulator.invalid{path}")).ok()?;
    let mut segments = url.path_segments()?;
    let (d, name) = (segments.next()?, segments.next()?);
    let name = percent_encoding::percent_decode_str(name).decode_utf8().ok()?;
    (d == "d" && !name.is_empty() && url.query().is_none() && url.fragment().is_none()).then(|| name.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> RouterConfig {
        RouterConfig::parse("r.yaml", text).unwrap()
    }

    /// The old code split at the first `/d/` anywhere: a real gateway's `api_base` was taken
    /// for the simulator's deployment `openai` (and its faults and counts looked for there).
    #[test]
    fn only_the_simulators_own_template_is_a_sim_deployment() {
        for (base, sim) in [
            ("${sim.url}/d/primary/v1", Some("primary")),
            ("${sim.url}/d/primary", Some("primary")),
            ("${sim.url}/d/primary/", Some("primary")),
            ("${sim.url}/d/a b/v1", Some("a b")),
            ("${router.url}/d/default/v1", Some("default")),
            ("https://gw.corp/d/openai/v1", None),
            ("http://127.0.0.1:7001/d/primary/v1", None),
            ("https://gw.corp/api/${sim.url}/d/x", None),
            ("${sim.url}/v1", None),
            ("${sim.url}/d//v1", None),
            ("${sim.url}/x/d/a/v1", None),
            ("${sim.host}/d/a", None),
            ("${vllm.url}/v1", None),
        ] {
            assert_eq!(sim_deployment(base).as_deref(), sim, "{base}");
        }
        let c = cfg("model_list:\n\
                     - {model_name: a, litellm_params: {model: openai/x, api_base: 'https://gw.corp/d/openai/v1'}, model_info: {id: a1}}\n\
                     - {model_name: b, litellm_params: {model: openai/x, api_base: '${sim.url}/d/b1/v1'}, model_info: {id: b1}}\n");
        assert_eq!(c.deployment("a1").unwrap().sim, None);
        assert_eq!(c.sim_deployments(), ["b1"]);
    }

    #[test]
    fn default_router_config_has_the_promised_chains() {
        let m = crate::stack::manifest::Manifest::builtin().unwrap();
        let c = RouterConfig::parse("router.yaml", &m.router_config.text).unwrap();
        assert!(c.chains.iter().any(|c| c.groups.len() == 3), "{:?}", c.chains);
        assert!(c.chains.len() >= 2);
        assert_eq!(c.deployments_of("fast").len(), 2);
        assert_eq!(c.deployment("primary").unwrap().sim.as_deref(), Some("primary"));
        assert!(c.has_master_key && c.has_generic_logger && c.cache);
        // Every deployment is on the simulator but the GPU lane's, which is vLLM's (the
        // simulator stands in for it only at start, where no GPU is).
        let off_sim: Vec<&str> = c
            .deployments
            .iter()
            .filter(|d| d.sim.is_none())
            .map(|d| d.id.as_str())
            .collect();
        assert_eq!(off_sim, ["vllm"]);
        assert_eq!(c.deployment("primary").unwrap().timeout.seconds, 2.0);
    }

    #[test]
    fn broken_configs_name_the_problem_and_the_line() {
        let cases = [
            // The parser notices the missing `]` where the text ends.
            ("model_list: [", "r.yaml:2: invalid YAML"),
            ("router_settings: {}", "r.yaml:1: no model_list"),
            (
                "model_list:\n  - litellm_params: {model: x}\n",
                "r.yaml:2: model_list[0] has no model_name",
            ),
            (
                "model_list:\n  - {model_name: a, litellm_params: {model: x}}\n",
                "r.yaml:2: model_list[0] (a) has no model_info.id",
            ),
            (
                "model_list:\n  - {model_name: a, litellm_params: {model: x}, model_info: {id: x}}\nrouter_settings:\n  fallbacks:\n    - a:\n      - zz\n",
                "r.yaml:6: router_settings.fallbacks names model group 'zz'",
            ),
            (
                "model_list:\n  - {model_name: a, litellm_params: {model: x}, model_info: {id: x}}\n  - {model_name: c, litellm_params: {model: x}, model_info: {id: x}}\n",
                "r.yaml:3: model_info.id 'x' is used twice",
            ),
            (
                "model_list:\n  - {model_name: a, litellm_params: {model: x}, model_info: {id: b}}\n  - {model_name: b, litellm_params: {model: x}, model_info: {id: c}}\n",
                "r.yaml:2: model_info.id 'b' is also the name of a model group",
            ),
        ];
        for (text, want) in cases {
            let err = RouterConfig::parse("r.yaml", text).unwrap_err().to_string();
            assert!(err.starts_with(want), "want {want:?}: {err}");
        }
    }

    #[test]
    fn global_timeouts_reach_every_deployment() {
        let c = cfg(
            "model_list:\n  - {model_name: a, litellm_params: {model: x}, model_info: {id: a1}}\n  - {model_name: a, litellm_params: {model: x, timeout: 3}, model_info: {id: a2}}\nrouter_settings: {timeout: 30}\nlitellm_settings: {request_timeout: 600}\n",
        );
        assert_eq!(c.deployment("a1").unwrap().timeout.seconds, 600.0);
        assert_eq!(c.deployment("a2").unwrap().timeout.seconds, 3.0);
        assert_eq!(c.num_retries, 2, "LiteLLM's default num_retries");
    }

    #[test]
    fn closure_walks_chains_of_chains_and_default_fallbacks() {
        let c = cfg(
            "model_list:\n  - {model_name: a, litellm_params: {model: x}, model_info: {id: a1}}\n  - {model_name: b, litellm_params: {model: x}, model_info: {id: b1}}\n  - {model_name: c, litellm_params: {model: x}, model_info: {id: c1}}\n  - {model_name: d, litellm_params: {model: x}, model_info: {id: d1}}\nrouter_settings:\n  fallbacks: [{a: [b]}, {b: [c]}]\n  default_fallbacks: [d]\n",
        );
        assert_eq!(c.closure("a", ChainKind::General), ["a", "b", "c", "d"]);
        assert_eq!(c.chains.len(), 2);
    }

    #[test]
    fn shares_cooldowns_and_budgets() {
        let c = cfg(
            "model_list:\n  - {model_name: a, litellm_params: {model: x, weight: 3}, model_info: {id: a1}}\n  - {model_name: a, litellm_params: {model: x, weight: 1}, model_info: {id: a2}}\n  - {model_name: s, litellm_params: {model: x, rpm: 1}, model_info: {id: s1}}\n",
        );
        assert_eq!(
            c.expected_shares("a").unwrap(),
            [("a1".into(), 0.75), ("a2".into(), 0.25)]
        );
        assert!(c.can_cool_down("a"));
        assert!(
            !c.can_cool_down("s"),
            "a lone deployment without allowed_fails is never cooled down"
        );
        assert_eq!(c.request_budget("s"), Some(1.0));
        assert!(c.unusable("a", 1.0).unwrap().contains("not on the simulator"));
        assert_eq!(c.probe_group().as_deref(), Some("a"));
        assert!(c.traffic_gate("s", 5.0).unwrap().contains("about 1 requests a minute"));
    }
}
