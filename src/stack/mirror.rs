//! `gauntlet mirror`: turns a team's own LiteLLM config into a gauntlet stack. Models, groups,
//! chains, timeouts, retries, cooldowns and prices are kept; every deployment is pointed at a
//! simulator route instead of its real provider, and provider credentials are dropped, so the
//! team's routing is tested without calling (or paying) anyone.

use std::path::Path;

use serde_yaml::{Mapping, Value};

use crate::error::RunError;

/// Provider-specific keys that would make LiteLLM call a real provider or carry a credential.
const DROPPED_PARAMS: &[&str] = &[
    "api_key",
    "api_base",
    "api_version",
    "base_url",
    "organization",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_region_name",
    "aws_profile_name",
    "vertex_project",
    "vertex_location",
    "vertex_credentials",
    "azure_ad_token",
    "tenant_id",
    "client_id",
    "client_secret",
    "project",
    "region_name",
    "watsonx_region_name",
    "custom_llm_provider",
];

/// The mirrored files: a router config template, a price table and a manifest using both.
pub struct Mirrored {
    pub router_yaml: String,
    pub prices_toml: String,
    pub manifest_toml: String,
    /// Deployments that had no price in their config (they get a zero price, to be filled in).
    pub unpriced: Vec<String>,
}

pub fn mirror(origin: &str, text: &str) -> Result<Mirrored, RunError> {
    let bad = |m: String| RunError::usage(format!("{origin}: {m}"));
    let mut root: Value = serde_yaml::from_str(text).map_err(|e| bad(format!("invalid YAML: {e}")))?;
    let list = root
        .get_mut("model_list")
        .and_then(Value::as_sequence_mut)
        .ok_or_else(|| bad("no model_list found".into()))?;
    let mut prices = String::from(
        "# Mirrored from the router config's model_info prices; this is now the team's table.\ncurrency = \"USD\"\ntolerance_usd = 1e-9\n",
    );
    let mut unpriced = Vec::new();
    let mut used_ids: Vec<String> = Vec::new();
    for (i, d) in list.iter_mut().enumerate() {
        let group = d
            .get("model_name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("model_list[{i}] has no model_name")))?
            .to_owned();
        let map = d
            .as_mapping_mut()
            .ok_or_else(|| bad(format!("model_list[{i}] is not a mapping")))?;
        let info = map
            .entry("model_info".into())
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        let info = info
            .as_mapping_mut()
            .ok_or_else(|| bad(format!("model_list[{i}].model_info is not a mapping")))?;
        let id = match info.get("id").and_then(Value::as_str) {
            Some(id) => id.to_owned(),
            None => {
                let base: String = group
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' })
                    .collect();
                let id = if used_ids.contains(&base) {
                    format!("{base}-{i}")
                } else {
                    base
                };
                info.insert("id".into(), id.clone().into());
                id
            }
        };
        if used_ids.contains(&id) {
            return Err(bad(format!("model_info.id '{id}' is used twice")));
        }
        used_ids.push(id.clone());
        let cost = |k: &str| info.get(k).and_then(Value::as_f64);
        match (cost("input_cost_per_token"), cost("output_cost_per_token")) {
            (Some(inp), Some(out)) => {
                prices.push_str(&format!(
                    "\n[deployments.\"{id}\"]\ninput_per_token = {inp:e}\noutput_per_token = {out:e}\n"
                ));
            }
            _ => {
                unpriced.push(id.clone());
                prices.push_str(&format!("\n# no price in the router config: fill in\n[deployments.\"{id}\"]\ninput_per_token = 0.0\noutput_per_token = 0.0\n"));
                info.insert("input_cost_per_token".into(), 0.0.into());
                info.insert("output_cost_per_token".into(), 0.0.into());
            }
        }
        let params = map
            .entry("litellm_params".into())
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        let params = params
            .as_mapping_mut()
            .ok_or_else(|| bad(format!("model_list[{i}].litellm_params is not a mapping")))?;
        let model = params
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("model")
            .to_owned();
        let served = model.rsplit('/').next().unwrap_or(&model).to_owned();
        for k in DROPPED_PARAMS {
            params.remove(*k);
        }
        params.insert("model".into(), format!("openai/{served}").into());
        params.insert("api_base".into(), format!("${{sim.url}}/d/{id}/v1").into());
        params.insert("api_key".into(), "${provider_key}".into());
    }
    let top = root
        .as_mapping_mut()
        .ok_or_else(|| bad("the config is not a mapping".into()))?;
    let section = |top: &mut Mapping, k: &str| -> Result<Mapping, RunError> {
        match top.remove(k) {
            None => Ok(Mapping::new()),
            Some(Value::Mapping(m)) => Ok(m),
            Some(_) => Err(RunError::usage(format!("{origin}: {k} is not a mapping"))),
        }
    };
    let mut general = section(top, "general_settings")?;
    general.insert("master_key".into(), "${master_key}".into());
    for k in ["database_url", "store_model_in_db", "alerting", "alerting_threshold"] {
        general.remove(k);
    }
    let mut lset = section(top, "litellm_settings")?;
    lset.insert("callbacks".into(), Value::Sequence(vec!["generic_api".into()]));
    for k in ["success_callback", "failure_callback", "service_callback"] {
        lset.remove(k);
    }
    if lset.get("cache").and_then(Value::as_bool) == Some(true) {
        let mut cp = Mapping::new();
        cp.insert("type".into(), "redis".into());
        cp.insert("host".into(), "${redis.host}".into());
        cp.insert("port".into(), "${redis.port}".into());
        cp.insert("mode".into(), "default_off".into());
        lset.insert("cache_params".into(), Value::Mapping(cp));
    }
    let mut rset = section(top, "router_settings")?;
    rset.insert("redis_host".into(), "${redis.host}".into());
    rset.insert("redis_port".into(), "${redis.port}".into());
    rset.remove("redis_password");
    rset.remove("redis_url");
    top.insert("general_settings".into(), Value::Mapping(general));
    top.insert("litellm_settings".into(), Value::Mapping(lset));
    top.insert("router_settings".into(), Value::Mapping(rset));
    top.remove("environment_variables");
    let body = serde_yaml::to_string(&root).map_err(|e| bad(format!("cannot write YAML: {e}")))?;
    // LiteLLM wants ports as integers: unquote the port placeholders serde_yaml quoted.
    let body = body.replace("'${redis.port}'", "${redis.port}");
    let router_yaml =
        format!("# Mirrored from {origin} by `gauntlet mirror`: every deployment points at the simulator.\n{body}");
    let manifest_toml = include_str!("../../stack/gauntlet.toml").to_owned();
    // Whatever the default names its config and prices, the mirror writes these names.
    super::router_config::RouterConfig::parse("mirrored router.yaml", &router_yaml)?;
    Ok(Mirrored {
        router_yaml,
        prices_toml: prices,
        manifest_toml,
        unpriced,
    })
}

/// Writes the mirrored stack into `dir`: gauntlet.toml, router.yaml, prices.toml.
pub fn write(m: &Mirrored, dir: &Path) -> Result<(), RunError> {
    std::fs::create_dir_all(dir).map_err(|e| RunError::usage(format!("cannot create {}: {e}", dir.display())))?;
    for (name, text) in [
        ("gauntlet.toml", &m.manifest_toml),
        ("router.yaml", &m.router_yaml),
        ("prices.toml", &m.prices_toml),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| RunError::usage(format!("cannot write {}: {e}", p.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEAM: &str = r#"
model_list:
  - model_name: gpt-4o
    litellm_params: {model: azure/gpt-4o-prod, api_base: "https://x.openai.azure.com", api_key: "os.environ/AZURE_KEY", api_version: "2024-02-01", timeout: 20}
    model_info: {input_cost_per_token: 0.0000025, output_cost_per_token: 0.00001}
  - model_name: gpt-4o
    litellm_params: {model: openai/gpt-4o, api_key: "sk-real-secret", timeout: 20}
  - model_name: claude
    litellm_params: {model: anthropic/claude-3-5-sonnet, api_key: "os.environ/ANTHROPIC_KEY"}
    model_info: {id: claude-main, input_cost_per_token: 0.000003, output_cost_per_token: 0.000015}
router_settings:
  num_retries: 2
  fallbacks: [{gpt-4o: [claude]}]
  redis_password: hunter2
general_settings: {master_key: sk-prod-master, database_url: "postgres://x"}
"#;

    #[test]
    fn keeps_routing_and_prices_and_drops_providers() {
        let m = mirror("team.yaml", TEAM).unwrap();
        for gone in [
            "azure.com",
            "sk-real-secret",
            "AZURE_KEY",
            "hunter2",
            "sk-prod-master",
            "postgres",
            "api_version",
        ] {
            assert!(!m.router_yaml.contains(gone), "{gone} survived:\n{}", m.router_yaml);
        }
        let c = crate::stack::router_config::RouterConfig::parse("m", &m.router_yaml).unwrap();
        assert_eq!(c.num_retries, 2);
        assert_eq!(c.chains[0].groups, ["gpt-4o", "claude"]);
        assert_eq!(c.deployments_of("gpt-4o").len(), 2);
        assert!(c.deployments.iter().all(|d| d.sim.as_deref() == Some(d.id.as_str())));
        assert_eq!(c.deployments_of("gpt-4o")[0].timeout_s, Some(20.0));
        assert!(m.router_yaml.contains("port: ${redis.port}") || !m.router_yaml.contains("redis.port"));
        let p = crate::ledger::prices::PriceTable::parse("p", &m.prices_toml).unwrap();
        assert_eq!(p.price("claude-main").unwrap().output_per_token, 0.000015);
        assert_eq!(m.unpriced, vec!["gpt-4o-1".to_owned()]);
    }
}
