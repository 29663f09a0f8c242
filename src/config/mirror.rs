//! `gauntlet mirror`: a team's own LiteLLM config turned into a gauntlet stack. It changes
//! where deployments point — every one at its own simulator route, credentials replaced by a
//! fake key — and nothing about how the router chooses among them: groups, ids (added where
//! missing, never equal to a group name, which would make LiteLLM send the whole group to one
//! deployment), weights, rpm/tpm, order, strategy, retries, cooldowns, timeouts, chains and
//! prices stay as written. What the simulator cannot stand in for (Python hooks, mock
//! responses, databases, secret managers, providers it does not speak) is removed or changed
//! with one warning each, and listed in `MIRROR.md` as not under test.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::model::{RouterConfig, entry_path, model_name};
use super::pricing::{self, Pricing};
use super::provider::Provider;
use super::routing::Strategy;
use super::source::{ConfigError, Document, Seg};
use crate::error::RunError;

/// Credentials and provider addresses: replaced by the simulator's.
const PROVIDER_PARAMS: &[&str] = &[
    "api_key",
    "api_base",
    "base_url",
    "organization",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "aws_region_name",
    "aws_profile_name",
    "aws_role_name",
    "aws_bedrock_runtime_endpoint",
    "vertex_project",
    "vertex_location",
    "vertex_credentials",
    "azure_ad_token",
    "azure_ad_token_provider",
    "tenant_id",
    "client_id",
    "client_secret",
    "project",
    "region_name",
    "watsonx_region_name",
    "custom_llm_provider",
    "extra_headers",
];

/// Deployment params that answer without any provider: the simulator never sees them.
const MOCK_PREFIX: &str = "mock_";

/// `general_settings` keys that need a database, a secret manager, or a Python hook.
const GENERAL_REMOVED: &[(&str, &str)] = &[
    ("custom_auth", "Python auth hook"),
    ("custom_sso", "Python SSO hook"),
    ("custom_key_generate", "Python key hook"),
    ("database_url", "database"),
    ("database_connection_pool_limit", "database"),
    ("store_model_in_db", "database"),
    ("store_prompts_in_spend_logs", "database"),
    ("disable_spend_logs", "database"),
    ("key_management_system", "secret manager"),
    ("key_management_settings", "secret manager"),
    ("use_azure_key_vault", "secret manager"),
    ("use_google_kms", "secret manager"),
    ("alerting", "alerting integration"),
    ("alerting_threshold", "alerting integration"),
    ("alert_to_webhook_url", "alerting integration"),
    ("pass_through_endpoints", "pass-through to real providers"),
    ("litellm_jwtauth", "JWT auth against an identity provider"),
    ("enable_jwt_auth", "JWT auth against an identity provider"),
];

/// `litellm_settings` keys that call Python hooks or external services.
const LITELLM_REMOVED: &[(&str, &str)] = &[
    ("success_callback", "logging callback"),
    ("failure_callback", "logging callback"),
    ("service_callback", "logging callback"),
    ("input_callback", "logging callback"),
    ("callback_settings", "logging callback"),
    ("custom_provider_map", "Python custom provider"),
    ("guardrails", "guardrail"),
    ("post_call_rules", "Python rule hook"),
    ("pre_call_rules", "Python rule hook"),
];

/// Top-level sections with Python hooks or external systems.
const TOP_REMOVED: &[(&str, &str)] = &[
    ("guardrails", "guardrails (Python or external)"),
    ("policies", "guardrail policies"),
    ("policy_attachments", "guardrail policies"),
    ("environment_variables", "environment (secrets)"),
    ("prompts", "prompt management integration"),
    ("mcp_servers", "MCP servers"),
    ("search_tools", "search integrations"),
    ("vector_store_registry", "vector stores"),
    ("finetune_settings", "fine-tuning provider"),
    ("files_settings", "files provider"),
    ("assistant_settings", "assistants provider"),
];

/// The Azure API version for deployments whose config takes it from the environment.
const AZURE_API_VERSION: &str = "2024-10-21";

/// One change the mirror made, with where the original was.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub at: String,
    pub what: String,
}

/// The mirrored stack: a router config template and a manifest using it, plus what changed.
#[derive(Debug)]
pub struct Mirrored {
    pub router_yaml: String,
    pub manifest_toml: String,
    pub mirror_md: String,
    /// Removed or changed, one line each (also in MIRROR.md).
    pub warnings: Vec<Note>,
    /// Deployments without a per-token price (their ledger cases are ignored).
    pub unpriced: Vec<String>,
}

pub fn mirror_file(path: &Path) -> Result<Mirrored, ConfigError> {
    mirror(&Document::load(path)?)
}

pub fn mirror(doc: &Document) -> Result<Mirrored, ConfigError> {
    let k = |s: &str| Seg::Key(s.to_owned());
    // Checked on the user's own file, so the error names its line.
    super::model::check_fallbacks(doc)?;
    let mut warnings: Vec<Note> = Vec::new();
    let mut warn = |path: &[Seg], what: String| {
        warnings.push(Note {
            at: doc.loc(path).to_string(),
            what,
        })
    };
    let mut root = doc.root.clone();
    let top = root
        .as_mapping_mut()
        .ok_or_else(|| doc.error(&[], "the config is not a mapping"))?;
    let list = top
        .get_mut("model_list")
        .and_then(Value::as_sequence_mut)
        .ok_or_else(|| doc.error(&[k("model_list")], "no model_list found: nothing to mirror"))?;
    let groups: BTreeSet<String> = list
        .iter()
        .filter_map(|d| d.get("model_name").and_then(Value::as_str).map(str::to_owned))
        .collect();
    let mut ids: BTreeSet<String> = list
        .iter()
        .filter_map(|d| d.get("model_info").and_then(|m| m.get("id")).and_then(id_str))
        .collect();
    let mut sims: BTreeSet<String> = BTreeSet::new();
    let mut rows: Vec<Row> = Vec::new();
    // LiteLLM derives a missing id from the group and the params, so byte-identical
    // deployments share one (and one cooldown): the mirror keeps them sharing.
    let mut generated: Vec<(String, Value, String, String)> = Vec::new();
    for (i, d) in list.iter_mut().enumerate() {
        let at = |more: &[&str]| entry_path(i, more);
        let group = model_name(doc, d, i)?.to_owned();
        let map = d
            .as_mapping_mut()
            .ok_or_else(|| doc.error(&at(&[]), &format!("model_list[{i}] is not a mapping")))?;
        let original_params = map.get("litellm_params").cloned().unwrap_or(Value::Null);
        let twin = generated
            .iter()
            .find(|(g, p, _, _)| *g == group && *p == original_params)
            .map(|(_, _, id, sim)| (id.clone(), sim.clone()));
        let info = mapping_entry(map, "model_info")
            .ok_or_else(|| doc.error(&at(&["model_info"]), "model_info is not a mapping"))?;
        let (id, sim) = match (info.get("id").and_then(id_str), twin) {
            (Some(id), _) => {
                let sim = match slug(&id) {
                    s if sims.contains(&s) => fresh(&s, &BTreeSet::new(), &sims),
                    s => s,
                };
                (id, sim)
            }
            (None, Some((id, sim))) => {
                info.insert("id".into(), id.clone().into());
                (id, sim)
            }
            (None, None) => {
                let id = fresh(&slug(&group), &groups, &ids);
                ids.insert(id.clone());
                info.insert("id".into(), id.clone().into());
                let sim = match slug(&id) {
                    s if sims.contains(&s) => fresh(&s, &BTreeSet::new(), &sims),
                    s => s,
                };
                generated.push((group.clone(), original_params, id.clone(), sim.clone()));
                (id, sim)
            }
        };
        sims.insert(sim.clone());
        let params = mapping_entry(map, "litellm_params")
            .ok_or_else(|| doc.error(&at(&["litellm_params"]), "litellm_params is not a mapping"))?;
        let model = params.get("model").and_then(Value::as_str).unwrap_or("").to_owned();
        let (provider, served) = if model.is_empty() || model.starts_with("os.environ/") || model.contains("${") {
            warn(
                &at(&["litellm_params", "model"]),
                format!(
                    "{group}: model {model:?} is resolved at deploy time; mirrored as openai/{}",
                    slug(&group)
                ),
            );
            (Provider::OpenAi, slug(&group))
        } else {
            Provider::of(&model)
        };
        let provider = match provider {
            p if p.simulated() => p,
            Provider::Other(name) => {
                warn(
                    &at(&["litellm_params", "model"]),
                    format!(
                        "{group}: provider '{name}' is not simulated; mirrored as openai/{served} (routing under test, {name}'s wire format not)"
                    ),
                );
                Provider::OpenAi
            }
            p => p,
        };
        let keys: Vec<String> = params.keys().filter_map(Value::as_str).map(str::to_owned).collect();
        for key in &keys {
            if key.starts_with(MOCK_PREFIX) {
                warn(
                    &at(&["litellm_params", key]),
                    format!("{group}: {key} answers without any provider; removed so requests reach the simulator"),
                );
                params.remove(key.as_str());
            }
        }
        let api_version = params.get("api_version").and_then(Value::as_str).map(str::to_owned);
        for key in PROVIDER_PARAMS {
            params.remove(*key);
        }
        params.remove("api_version");
        params.insert("model".into(), format!("{}/{served}", provider.prefix()).into());
        let base = match provider {
            Provider::Azure | Provider::Anthropic => format!("${{sim.url}}/d/{sim}"),
            _ => format!("${{sim.url}}/d/{sim}/v1"),
        };
        params.insert("api_base".into(), base.into());
        params.insert("api_key".into(), "${provider_key}".into());
        if provider == Provider::Azure {
            let v = api_version
                .filter(|v| !v.starts_with("os.environ/"))
                .unwrap_or_else(|| AZURE_API_VERSION.to_owned());
            params.insert("api_version".into(), v.into());
        }
        let pricing = pricing::of(map.get("litellm_params"), map.get("model_info"));
        rows.push(Row {
            group,
            id,
            sim,
            model,
            mirrored: format!("{}/{served}", provider.prefix()),
            pricing,
        });
    }
    for (key, why) in TOP_REMOVED {
        if let Some(v) = top.remove(*key) {
            // Never quote environment values: they are secrets.
            let what = if *key == "environment_variables" {
                String::new()
            } else {
                describe(&v)
            };
            warn(&[k(key)], format!("{key}{what}: {why} removed (not under test)"));
        }
    }
    let mut general = section(doc, top, "general_settings")?;
    for (key, why) in GENERAL_REMOVED {
        if let Some(v) = general.remove(*key)
            && !v.is_null()
        {
            // Hooks and manager names are worth quoting; URLs and credentials are not.
            let what = if NAMED_SETTINGS.contains(key) {
                describe(&v)
            } else {
                String::new()
            };
            warn(
                &[k("general_settings"), k(key)],
                format!("general_settings.{key}{what}: {why} removed (not under test)"),
            );
        }
    }
    general.insert("master_key".into(), "${master_key}".into());
    let mut lset = section(doc, top, "litellm_settings")?;
    for (key, why) in LITELLM_REMOVED {
        if let Some(v) = lset.remove(*key) {
            warn(
                &[k("litellm_settings"), k(key)],
                format!("litellm_settings.{key}{}: {why} removed (not under test)", describe(&v)),
            );
        }
    }
    if let Some(v) = lset.get("callbacks")
        && brief(v) != "[generic_api]"
    {
        warn(
            &[k("litellm_settings"), k("callbacks")],
            format!(
                "litellm_settings.callbacks {} replaced by the ledger sink's generic_api",
                brief(v)
            ),
        );
    }
    lset.insert("callbacks".into(), Value::Sequence(vec!["generic_api".into()]));
    if let Some(Value::Sequence(teams)) = lset.get_mut("default_team_settings") {
        for (i, t) in teams.iter_mut().enumerate() {
            if let Value::Mapping(m) = t {
                let dropped: Vec<String> = m
                    .keys()
                    .filter_map(Value::as_str)
                    .filter(|key| *key != "team_id")
                    .map(str::to_owned)
                    .collect();
                if !dropped.is_empty() {
                    warn(
                        &[k("litellm_settings"), k("default_team_settings"), Seg::Index(i)],
                        format!(
                            "default_team_settings[{i}]: {} removed (team callbacks and their keys are not under test; the team stays a ledger tenant)",
                            dropped.join(", ")
                        ),
                    );
                }
                m.retain(|key, _| key.as_str() == Some("team_id"));
            }
        }
    }
    if lset.get("cache").and_then(Value::as_bool) == Some(true) {
        let mode = lset
            .get("cache_params")
            .and_then(|c| c.get("mode"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if mode.as_deref() != Some("default_off") {
            warn(
                &[k("litellm_settings"), k("cache_params")],
                "cache_params: mode default_off so only the cases that opt in are served from the cache \
                 (caching itself stays under test)"
                    .into(),
            );
        }
        let mut cp = Mapping::new();
        cp.insert("type".into(), "redis".into());
        cp.insert("host".into(), "${redis.host}".into());
        cp.insert("port".into(), "${redis.port}".into());
        cp.insert("mode".into(), "default_off".into());
        lset.insert("cache_params".into(), Value::Mapping(cp));
    }
    let mut rset = section(doc, top, "router_settings")?;
    if let Some(s) = rset.get("routing_strategy").and_then(Value::as_str)
        && !Strategy::ACCEPTED.contains(&s)
    {
        return Err(doc.error(
            &[k("router_settings"), k("routing_strategy")],
            &format!(
                "routing_strategy {s:?} is not one LiteLLM accepts (it would refuse to start): use one of {}",
                Strategy::ACCEPTED.join(", ")
            ),
        ));
    }
    for key in ["redis_url", "redis_password", "redis_host", "redis_port"] {
        rset.remove(key);
    }
    rset.insert("redis_host".into(), "${redis.host}".into());
    rset.insert("redis_port".into(), "${redis.port}".into());
    top.insert("general_settings".into(), Value::Mapping(general));
    top.insert("litellm_settings".into(), Value::Mapping(lset));
    top.insert("router_settings".into(), Value::Mapping(rset));
    let body = super::source::to_pyyaml(&root);
    let router_yaml = format!(
        "# Mirrored from {} by `gauntlet mirror`: every deployment points at the simulator.\n# What changed and what is not under test: MIRROR.md.\n{body}",
        doc.files().join(", ")
    );
    // The mirror must itself be a config gauntlet can derive cases from.
    let mirrored_doc = Document::parse("mirrored router.yaml", &router_yaml)?;
    RouterConfig::from_document(&mirrored_doc).map_err(|e| {
        // Point at the user's file: a problem the mirror kept came from there.
        ConfigError {
            loc: None,
            file: doc.origin.clone(),
            message: format!("after mirroring: {}", e.message),
        }
    })?;
    let unpriced: Vec<String> = rows
        .iter()
        .filter(|r| !matches!(r.pricing, Pricing::Priced(_)))
        .map(|r| r.id.clone())
        .collect();
    let mirror_md = report(doc, &rows, &warnings);
    Ok(Mirrored {
        router_yaml,
        manifest_toml: MANIFEST.to_owned(),
        mirror_md,
        warnings,
        unpriced,
    })
}

/// The default stack's manifest: the mirror writes a `router.yaml` beside it.
const MANIFEST: &str = include_str!("../../stack/gauntlet.toml");

struct Row {
    group: String,
    id: String,
    sim: String,
    model: String,
    mirrored: String,
    pricing: Pricing,
}

fn report(doc: &Document, rows: &[Row], warnings: &[Note]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Mirror of {}\n", doc.origin);
    let _ = writeln!(
        s,
        "Read from: {}. Every deployment now points at its own simulator route; groups, ids, \
         weights, rpm/tpm, order, routing strategy, retries, cooldowns, timeouts, fallback \
         chains and prices are as in the original.\n",
        doc.files().join(", ")
    );
    let _ = writeln!(
        s,
        "| group | deployment id | original model | mirrored as | simulator route | price |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for r in rows {
        let price = match &r.pricing {
            Pricing::Priced(p) => format!("{:e} / {:e} per token", p.input, p.output),
            Pricing::Unpriced => "none: ledger cases ignored".into(),
            Pricing::Unchecked(keys) => format!("not checked ({})", keys.join(", ")),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | /d/{} | {price} |",
            r.group, r.id, r.model, r.mirrored, r.sim
        );
    }
    let _ = writeln!(s, "\n## Not under test\n");
    if warnings.is_empty() {
        let _ = writeln!(s, "Nothing was removed.");
    }
    for w in warnings {
        let _ = writeln!(s, "- {}: {}", w.at, w.what);
    }
    let unpriced: Vec<&Row> = rows.iter().filter(|r| r.pricing == Pricing::Unpriced).collect();
    if !unpriced.is_empty() {
        let _ = writeln!(
            s,
            "\n## Unpriced deployments\n\nThe router bills these from its bundled price map, not from your \
             config, so the ledger cannot check them. To put them under test, add to each:\n"
        );
        for r in unpriced {
            let _ = writeln!(s, "- {} ({}): `{}`", r.id, r.group, pricing::lines_to_add(&r.id));
        }
    }
    s
}

/// `general_settings` keys whose value is a hook or product name, safe to quote.
const NAMED_SETTINGS: &[&str] = &[
    "custom_auth",
    "custom_sso",
    "custom_key_generate",
    "key_management_system",
];

/// ` (a, b)`: the names inside a removed setting (hook modules, guardrail and provider
/// names), so the warning says what exactly is not under test.
fn describe(v: &Value) -> String {
    const NAMES: &[&str] = &[
        "guardrail_name",
        "guardrail",
        "provider",
        "custom_handler",
        "name",
        "callback",
    ];
    let mut names: Vec<String> = Vec::new();
    let mut add = |s: &str| {
        if !s.starts_with("os.environ/") && !names.iter().any(|n| n == s) {
            names.push(s.to_owned());
        }
    };
    match v {
        Value::String(s) => add(s),
        Value::Sequence(items) => {
            for item in items {
                match item {
                    Value::String(s) => add(s),
                    Value::Mapping(m) => {
                        for key in NAMES {
                            if let Some(s) = m.get(*key).and_then(Value::as_str) {
                                add(s);
                            }
                            if let Some(s) = m
                                .get("litellm_params")
                                .and_then(|p| p.get(*key))
                                .and_then(Value::as_str)
                            {
                                add(s);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => {}
    }
    if names.is_empty() {
        String::new()
    } else {
        format!(" ({})", names.join(", "))
    }
}

fn brief(v: &Value) -> String {
    match v {
        Value::Sequence(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| i.as_str().map_or_else(|| "…".to_owned(), str::to_owned))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::String(s) => s.clone(),
        _ => "(settings)".into(),
    }
}

fn id_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A URL-path-safe name.
fn slug(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if out.is_empty() { "d".into() } else { out }
}

/// `base-1`, `base-2`, … : the first that is neither a group name nor taken.
fn fresh(base: &str, groups: &BTreeSet<String>, taken: &BTreeSet<String>) -> String {
    (1..)
        .map(|n| format!("{base}-{n}"))
        .find(|c| !groups.contains(c) && !taken.contains(c))
        .expect("an unbounded range always has a free name")
}

fn mapping_entry<'a>(map: &'a mut Mapping, key: &str) -> Option<&'a mut Mapping> {
    let v = map.entry(key.into()).or_insert_with(|| Value::Mapping(Mapping::new()));
    if v.is_null() {
        *v = Value::Mapping(Mapping::new());
    }
    v.as_mapping_mut()
}

fn section(doc: &Document, top: &mut Mapping, key: &str) -> Result<Mapping, ConfigError> {
    match top.remove(key) {
        None | Some(Value::Null) => Ok(Mapping::new()),
        Some(Value::Mapping(m)) => Ok(m),
        Some(_) => Err(doc.error(&[Seg::Key(key.to_owned())], &format!("{key} is not a mapping"))),
    }
}

/// Everything in a config that decides how LiteLLM chooses among deployments — not where
/// they are. A mirror must leave it unchanged (the routing-equivalence test compares a
/// config's view with its mirror's).
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingView {
    /// Per group, in config order: each deployment's routing knobs.
    pub groups: Vec<(String, Vec<BTreeMap<String, String>>)>,
    /// Deployments LiteLLM tells apart (ids given, or derived from group and params).
    pub distinct_ids: usize,
    /// The routing settings of router_settings and litellm_settings.
    pub settings: BTreeMap<String, String>,
}

/// Deployment keys that steer routing, retries, cooldowns, timeouts and prices.
const DEPLOYMENT_ROUTING: &[&str] = &[
    "weight",
    "rpm",
    "tpm",
    "order",
    "timeout",
    "stream_timeout",
    "request_timeout",
    "cooldown_time",
    "max_retries",
    "tags",
    "max_parallel_requests",
    "input_cost_per_token",
    "output_cost_per_token",
    "cache_read_input_token_cost",
    "cache_creation_input_token_cost",
    "allowed_fails",
    "mode",
];

/// Settings that steer routing.
const SETTINGS_ROUTING: &[&str] = &[
    "routing_strategy",
    "routing_strategy_args",
    "num_retries",
    "retry_policy",
    "model_group_retry_policy",
    "allowed_fails",
    "allowed_fails_policy",
    "cooldown_time",
    "disable_cooldowns",
    "fallbacks",
    "context_window_fallbacks",
    "content_policy_fallbacks",
    "default_fallbacks",
    "max_fallbacks",
    "timeout",
    "stream_timeout",
    "request_timeout",
    "model_group_alias",
    "enable_pre_call_checks",
    "retry_after",
];

pub fn routing_view(doc: &Document) -> RoutingView {
    let text = |v: &Value| serde_yaml::to_string(v).unwrap_or_default().trim().to_owned();
    let mut groups: Vec<(String, Vec<BTreeMap<String, String>>)> = Vec::new();
    let mut ids: BTreeSet<String> = BTreeSet::new();
    for d in doc
        .root
        .get("model_list")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        let group = d
            .get("model_name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let params = d.get("litellm_params");
        let info = d.get("model_info");
        let mut knobs = BTreeMap::new();
        for key in DEPLOYMENT_ROUTING {
            // Where a knob is written (params, model_info or beside them) is LiteLLM's business;
            // its value is what routes.
            let v = params
                .and_then(|p| p.get(*key))
                .or_else(|| info.and_then(|m| m.get(*key)))
                .or_else(|| d.get(*key));
            if let Some(v) = v {
                knobs.insert((*key).to_owned(), text(v));
            }
        }
        ids.insert(match info.and_then(|m| m.get("id")).and_then(id_str) {
            Some(id) => id,
            None => format!("{group}\u{0}{}", params.map(text).unwrap_or_default()),
        });
        match groups.iter_mut().find(|(g, _)| *g == group) {
            Some((_, v)) => v.push(knobs),
            None => groups.push((group, vec![knobs])),
        }
    }
    let mut settings = BTreeMap::new();
    for section in ["router_settings", "litellm_settings"] {
        for key in SETTINGS_ROUTING {
            if let Some(v) = doc.root.get(section).and_then(|s| s.get(*key)) {
                settings.insert(format!("{section}.{key}"), text(v));
            }
        }
    }
    RoutingView {
        groups,
        distinct_ids: ids.len(),
        settings,
    }
}

/// Writes the mirrored stack into `dir`: gauntlet.toml, router.yaml, MIRROR.md.
pub fn write(m: &Mirrored, dir: &Path) -> Result<(), RunError> {
    std::fs::create_dir_all(dir).map_err(|e| RunError::usage(format!("cannot create {}: {e}", dir.display())))?;
    for (name, text) in [
        ("gauntlet.toml", &m.manifest_toml),
        ("router.yaml", &m.router_yaml),
        ("MIRROR.md", &m.mirror_md),
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
    litellm_params: {model: openai/gpt-4o, api_key: "sk-real-secret", timeout: 20, mock_response: "hi"}
  - model_name: claude
    litellm_params: {model: anthropic/claude-3-5-sonnet, api_key: "os.environ/ANTHROPIC_KEY"}
    model_info: {id: claude-main, input_cost_per_token: 0.000003, output_cost_per_token: 0.000015}
  - model_name: llama
    litellm_params: {model: bedrock/meta.llama3, aws_region_name: us-east-1}
router_settings:
  num_retries: 2
  fallbacks: [{gpt-4o: [claude]}]
  redis_password: hunter2
general_settings: {master_key: sk-prod-master, database_url: "postgres://x", custom_auth: custom_auth.user_api_key_auth}
litellm_settings:
  success_callback: ["langfuse"]
  callbacks: custom_callbacks.proxy_handler_instance
"#;

    #[test]
    fn keeps_routing_and_prices_and_drops_providers() {
        let m = mirror(&Document::parse("team.yaml", TEAM).unwrap()).unwrap();
        for gone in [
            "azure.com",
            "sk-real-secret",
            "AZURE_KEY",
            "hunter2",
            "sk-prod-master",
            "postgres",
            "custom_auth",
            "langfuse",
            "mock_response",
            "proxy_handler_instance",
        ] {
            assert!(!m.router_yaml.contains(gone), "{gone} survived:\n{}", m.router_yaml);
        }
        let c = RouterConfig::parse("m", &m.router_yaml).unwrap();
        assert_eq!(c.num_retries, 2);
        assert_eq!(c.chains[0].groups, ["gpt-4o", "claude"]);
        assert_eq!(c.deployments_of("gpt-4o").len(), 2);
        // Ids never equal a group: the group keeps load balancing over both.
        assert!(
            c.deployments.iter().all(|d| !c.groups().contains(&d.id)),
            "{:?}",
            c.deployments
        );
        assert_eq!(c.deployments_of("gpt-4o")[0].timeout.seconds, 20.0);
        assert_eq!(c.deployment("claude-main").unwrap().provider, Provider::Anthropic);
        assert_eq!(c.deployments_of("gpt-4o")[0].provider, Provider::Azure);
        assert_eq!(c.deployments_of("llama")[0].provider, Provider::OpenAi);
        assert!(m.router_yaml.contains("api_version: '2024-02-01'"), "{}", m.router_yaml);
        // Prices are kept, never invented.
        assert!(c.deployment("claude-main").unwrap().pricing.price().is_some());
        assert_eq!(c.deployments_of("gpt-4o")[1].pricing, Pricing::Unpriced);
        assert!(!m.router_yaml.contains("input_cost_per_token: 0.0\n"));
        assert_eq!(m.unpriced.len(), 2);
        // One warning per removed or changed thing, each with the user's file:line.
        let w = |needle: &str| m.warnings.iter().find(|w| w.what.contains(needle)).unwrap().at.clone();
        assert_eq!(w("custom_auth"), "team.yaml:17");
        assert_eq!(w("mock_response"), "team.yaml:7");
        assert_eq!(w("bedrock"), "team.yaml:12");
        assert!(m.mirror_md.contains("## Not under test") && m.mirror_md.contains("custom_auth"));
        assert!(m.mirror_md.contains("## Unpriced deployments"));
    }

    #[test]
    fn an_invalid_routing_strategy_is_the_users_error() {
        let text = "model_list:\n  - {model_name: a, litellm_params: {model: openai/x}}\nrouter_settings:\n  routing_strategy: latency-based-routing\"\n";
        let e = mirror(&Document::parse("t.yaml", text).unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("t.yaml:4: routing_strategy"), "{e}");
    }
}
