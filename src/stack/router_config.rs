//! What gauntlet needs to know of the router's config (LiteLLM's `config.yaml`): model groups,
//! deployments, fallback chains, retries, cooldowns, cache. Read from the *template*, so
//! cases can be derived (and listed) without starting anything.

use serde_yaml::Value;

use crate::error::RunError;

#[derive(Debug, Clone, Default)]
pub struct RouterConfig {
    pub deployments: Vec<Deployment>,
    pub chains: Vec<Chain>,
    pub num_retries: u32,
    pub cache: bool,
    pub has_master_key: bool,
    pub has_generic_logger: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// `model_info.id`: what the router reports in `x-litellm-model-id`.
    pub id: String,
    /// `model_name`: the group clients ask for.
    pub group: String,
    /// The simulator deployment behind it (`${sim.url}/d/<name>/v1`), if any.
    pub sim: Option<String>,
    pub timeout_s: Option<f64>,
    pub order: Option<i64>,
    /// Failures tolerated before cooldown (`model_info.allowed_fails`, else the router's).
    pub allowed_fails: Option<u32>,
    /// Cooldown seconds (`model_info`/`litellm_params.cooldown_time`, else the router's);
    /// 0 means never cooled down.
    pub cooldown_s: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainKind {
    General,
    ContextWindow,
    ContentPolicy,
}

impl ChainKind {
    pub fn key(self) -> &'static str {
        match self {
            Self::General => "fallbacks",
            Self::ContextWindow => "context_window_fallbacks",
            Self::ContentPolicy => "content_policy_fallbacks",
        }
    }
}

/// A fallback chain: the group asked for, then each fallback group in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    pub kind: ChainKind,
    pub groups: Vec<String>,
}

impl Chain {
    /// `chat-primary/chat-backup/chat-regional`: a stable, filterable, shell-safe case name part.
    pub fn name(&self) -> String {
        self.groups.join("/")
    }
    pub fn primary(&self) -> &str {
        &self.groups[0]
    }
}

impl RouterConfig {
    pub fn parse(origin: &str, text: &str) -> Result<Self, RunError> {
        let bad = |msg: String| RunError::usage(format!("{origin}: {msg}"));
        let root: Value = serde_yaml::from_str(text).map_err(|e| bad(format!("invalid YAML: {e}")))?;
        let list = root
            .get("model_list")
            .and_then(Value::as_sequence)
            .ok_or_else(|| bad("no model_list (a list of deployments) found".into()))?;
        let mut deployments = Vec::new();
        for (i, d) in list.iter().enumerate() {
            let group = d
                .get("model_name")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(format!("model_list[{i}] has no model_name")))?;
            let params = d.get("litellm_params");
            let info = d.get("model_info");
            let id = info.and_then(|m| m.get("id")).and_then(value_str).ok_or_else(|| {
                bad(format!(
                    "model_list[{i}] ({group}) has no model_info.id; gauntlet needs stable \
                         deployment ids to tell which deployment served a request"
                ))
            })?;
            let api_base = params.and_then(|p| p.get("api_base")).and_then(Value::as_str);
            deployments.push(Deployment {
                id,
                group: group.to_owned(),
                sim: api_base.and_then(sim_deployment),
                timeout_s: params.and_then(|p| p.get("timeout")).and_then(Value::as_f64),
                order: params.and_then(|p| p.get("order")).and_then(Value::as_i64),
                allowed_fails: info
                    .and_then(|m| m.get("allowed_fails"))
                    .and_then(Value::as_u64)
                    .map(|n| n as u32),
                cooldown_s: info
                    .and_then(|m| m.get("cooldown_time"))
                    .or_else(|| params.and_then(|p| p.get("cooldown_time")))
                    .and_then(Value::as_f64),
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for d in &deployments {
            if !seen.insert(&d.id) {
                return Err(bad(format!("model_info.id '{}' is used twice", d.id)));
            }
        }
        let router = root.get("router_settings");
        let lset = root.get("litellm_settings");
        let setting = |k: &str| router.and_then(|r| r.get(k)).or_else(|| lset.and_then(|l| l.get(k)));
        let mut chains = Vec::new();
        for kind in [ChainKind::General, ChainKind::ContextWindow, ChainKind::ContentPolicy] {
            let Some(v) = setting(kind.key()) else {
                continue;
            };
            chains.extend(parse_chains(kind, v).map_err(|e| bad(format!("{}: {e}", kind.key())))?);
        }
        for c in &chains {
            for g in &c.groups {
                if !deployments.iter().any(|d| &d.group == g) {
                    return Err(bad(format!(
                        "{} names model group '{g}', which no deployment serves",
                        c.kind.key()
                    )));
                }
            }
        }
        let router_allowed = setting("allowed_fails").and_then(Value::as_u64).map(|n| n as u32);
        let router_cooldown = setting("cooldown_time").and_then(Value::as_f64);
        for d in &mut deployments {
            d.allowed_fails = d.allowed_fails.or(router_allowed);
            d.cooldown_s = d.cooldown_s.or(router_cooldown);
        }
        let callbacks = lset.and_then(|l| l.get("callbacks")).and_then(Value::as_sequence);
        Ok(Self {
            deployments,
            chains,
            num_retries: setting("num_retries").and_then(Value::as_u64).unwrap_or(0) as u32,
            cache: lset
                .and_then(|l| l.get("cache"))
                .and_then(Value::as_bool)
                .unwrap_or(false),
            has_master_key: root.get("general_settings").and_then(|g| g.get("master_key")).is_some(),
            has_generic_logger: callbacks.is_some_and(|c| c.iter().any(|v| v.as_str() == Some("generic_api"))),
        })
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

    /// Simulator deployments the router points at (what the simulator must serve).
    pub fn sim_deployments(&self) -> Vec<String> {
        let mut out: Vec<String> = self.deployments.iter().filter_map(|d| d.sim.clone()).collect();
        out.dedup();
        out
    }
}

fn value_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `${sim.url}/d/primary/v1` (or a rendered `http://…/d/primary/v1`) → `primary`.
fn sim_deployment(api_base: &str) -> Option<String> {
    let rest = api_base.split("/d/").nth(1)?;
    let name = rest.split('/').next()?;
    (api_base.contains("${sim.url}") || !name.is_empty()).then(|| name.to_owned())
}

/// LiteLLM writes chains as a list of one-key maps: `[{a: [b, c]}, {d: [e]}]`.
fn parse_chains(kind: ChainKind, v: &Value) -> Result<Vec<Chain>, String> {
    let list = v.as_sequence().ok_or("expected a list of {group: [fallback, ...]}")?;
    let mut out = Vec::new();
    for item in list {
        let map = item.as_mapping().ok_or("expected {group: [fallback, ...]}")?;
        for (k, v) in map {
            let primary = k.as_str().ok_or("group names must be strings")?;
            let rest = v
                .as_sequence()
                .ok_or_else(|| format!("'{primary}': expected a list of groups"))?;
            let mut groups = vec![primary.to_owned()];
            for g in rest {
                groups.push(g.as_str().ok_or("group names must be strings")?.to_owned());
            }
            out.push(Chain { kind, groups });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_router_config_has_the_promised_chains() {
        let m = super::super::manifest::Manifest::builtin().unwrap();
        let c = RouterConfig::parse("router.yaml", &m.router_config.text).unwrap();
        assert!(c.chains.iter().any(|c| c.groups.len() == 3), "{:?}", c.chains);
        assert!(c.chains.len() >= 2);
        assert_eq!(c.deployments_of("fast").len(), 2);
        assert_eq!(c.deployment("primary").unwrap().sim.as_deref(), Some("primary"));
        assert!(c.has_master_key && c.has_generic_logger && c.cache);
        assert_eq!(c.sim_deployments().len(), c.deployments.len());
    }

    #[test]
    fn broken_configs_name_the_problem() {
        let cases = [
            ("model_list: [", "invalid YAML"),
            ("router_settings: {}", "no model_list"),
            ("model_list: [{litellm_params: {}}]", "has no model_name"),
            ("model_list: [{model_name: a}]", "no model_info.id"),
            (
                "model_list: [{model_name: a, model_info: {id: x}}]\nrouter_settings: {fallbacks: [{a: [zz]}]}",
                "'zz', which no deployment serves",
            ),
            (
                "model_list: [{model_name: a, model_info: {id: x}}, {model_name: b, model_info: {id: x}}]",
                "used twice",
            ),
        ];
        for (text, want) in cases {
            let err = RouterConfig::parse("r.yaml", text).unwrap_err().to_string();
            assert!(
                err.contains(want) && err.starts_with("r.yaml: "),
                "want {want:?}: {err}"
            );
        }
    }
}
