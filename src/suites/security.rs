//! Security at the router's front door:
//! - no key the stack holds (the master key, the provider keys) in any response header or
//!   body, on every endpoint the router serves: chat, legacy completions, embeddings, the
//!   model listing and model info, the health endpoints, its own 4xx refusals, an upstream's
//!   4xx and 5xx passed on, a streamed reply
//! - every endpoint that serves or lists models refuses a missing key and a wrong key, and
//!   the refused request never reaches a provider
//! - `/v1/models` lists exactly the configured groups: none missing, none the config does
//!   not name (a wildcard group stands for the provider models it expands to)

use std::collections::BTreeSet;

use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::client::{Reply, excerpt, shape};
use crate::config::RouterConfig;
use crate::config::fallback::ChainKind;
use crate::config::provider::Mode;
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};
use crate::sim::Fault;
use crate::stack::role::Role;
use crate::suites::support::{SINGLE_RPM, break_group, calls, on_probe_group};
use crate::tag::Tag;

pub fn cases(plan: &Plan) -> Vec<Case> {
    let cfg = &plan.config;
    let embedding = embedding_group(cfg);
    let mut generic = Vec::new();
    for ep in Endpoint::ALL {
        let e = embedding.clone();
        generic.push(
            Case::new(format!("security::no_key_in_reply::{}", ep.name()), move |c| {
                no_key_in_reply(c, ep, e.clone())
            })
            .uses(&ep.groups(embedding.as_deref())),
        );
    }
    for what in [Served::Stream, Served::ModelInfo, Served::HealthOfProbe] {
        generic.push(Case::new(
            format!("security::no_key_in_reply::{}", what.name()),
            move |c| no_key_in_served(c, what),
        ));
    }
    for what in [Refusal::Unauthenticated, Refusal::UnknownModel] {
        generic.push(Case::new(
            format!("security::no_key_in_reply::{}", what.name()),
            move |c| no_key_in_refusal(c, what),
        ));
    }
    for ep in Endpoint::ALL {
        for key in [Key::Missing, Key::Wrong] {
            let e = embedding.clone();
            generic.push(
                Case::new(
                    format!("security::auth::{}::{}_refused", ep.name(), key.name()),
                    move |c| refused(c, ep, key, e.clone()),
                )
                .uses(&ep.groups(embedding.as_deref())),
            );
        }
    }
    let mut out = on_probe_group(plan, generic);
    // Health endpoints open to all (no key): nothing to send traffic to.
    for path in ["/health/liveliness", "/health/readiness"] {
        let name = path.trim_start_matches('/').replace('/', "_");
        out.push(Case::new(format!("security::no_key_in_reply::{name}"), move |c| {
            no_key_in_open(c, path)
        }));
    }
    out.extend(upstream_error_cases(cfg));
    out.push(Case::new(
        "security::models::lists_exactly_the_configured_groups",
        models_exactly,
    ));
    out
}

/// The endpoints that serve or list models, each behind the key.
#[derive(Clone, Copy, Debug)]
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Models,
}

impl Endpoint {
    const ALL: [Self; 4] = [Self::Chat, Self::Completions, Self::Embeddings, Self::Models];

    fn name(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Models => "models",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Self::Chat => "/v1/chat/completions",
            Self::Completions => "/v1/completions",
            Self::Embeddings => "/v1/embeddings",
            Self::Models => "/v1/models",
        }
    }

    /// A request for this endpoint carrying `tag` (prompt marker and `user`), or `None` for
    /// a GET. Embeddings go to the config's embedding group, else to the probe group: the
    /// case is about the key, not about what the group serves.
    fn body(self, c: &Ctx, tag: &Tag, embedding: Option<&str>) -> anyhow::Result<Option<Value>> {
        let group = c.probe_group()?;
        Ok(match self {
            Self::Chat => Some(c.chat_body(&group, tag, "security check")),
            Self::Completions => Some(json!({
                "model": group, "prompt": format!("{} security check", tag.marker()),
                "max_tokens": 16, "user": tag,
            })),
            Self::Embeddings => Some(json!({
                "model": embedding.unwrap_or(&group),
                "input": [format!("{} security check", tag.marker())], "user": tag,
            })),
            Self::Models => None,
        })
    }

    /// The groups its request goes to besides the probe group.
    fn groups(self, embedding: Option<&str>) -> Vec<String> {
        match (self, embedding) {
            (Self::Embeddings, Some(g)) => vec![g.to_owned()],
            _ => Vec::new(),
        }
    }

    async fn send(self, router: &crate::client::RouterClient, body: Option<&Value>) -> anyhow::Result<Reply> {
        match body {
            Some(b) => router.post(self.path(), b).await,
            None => router.get(self.path()).await,
        }
    }

    /// Whether the master key's answer here must be a 200: an embedding sent to a chat
    /// group may fail for reasons that have nothing to do with keys.
    fn must_serve(self, embedding: Option<&str>) -> bool {
        !matches!(self, Self::Embeddings) || embedding.is_some()
    }
}

/// The first named embedding group on the simulator, if the config has one.
fn embedding_group(cfg: &RouterConfig) -> Option<String> {
    cfg.groups()
        .into_iter()
        .find(|g| !g.contains('*') && cfg.mode_of(g) == Mode::Embedding && cfg.simulated(g))
}

/// The secrets this stack holds, each with what to call it in a message: the value itself
/// is never printed.
fn secrets_of(c: &Ctx) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = Vec::new();
    if let Some(k) = &c.endpoints.master_key {
        out.push(("the master key", k.clone()));
    }
    for s in &c.endpoints.secrets {
        out.push(("a provider key", s.clone()));
    }
    out
}

/// Whether `text` shows `secret`: whole, or its random part after the last `-` (a key
/// re-prefixed, or cut at its prefix, is still the key). A short masked tail such as
/// `sk-...abcd` is not a leak.
fn shows(text: &str, secret: &str) -> bool {
    if text.contains(secret) {
        return true;
    }
    match secret.rsplit_once('-') {
        Some((_, tail)) if tail.len() >= 16 => text.contains(tail),
        _ => false,
    }
}

/// Where in `headers` and `body` a secret shows: "the master key in header x-foo".
fn leaks(secrets: &[(&'static str, String)], headers: &HeaderMap, body: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (what, secret) in secrets {
        for (name, value) in headers {
            if shows(&String::from_utf8_lossy(value.as_bytes()), secret) {
                found.push(format!("{what} in header {name}"));
            }
        }
        if shows(body, secret) {
            found.push(format!("{what} in the body"));
        }
    }
    found.dedup();
    found
}

/// Fails when a secret shows in the reply; the failure names where, never the value.
fn check_reply(c: &Ctx, what: &str, url: &str, status: u16, headers: &HeaderMap, body: &str) -> anyhow::Result<()> {
    let secrets = secrets_of(c);
    anyhow::ensure!(
        !secrets.is_empty(),
        "this target holds no key to look for (no master key, no provider key in its state)"
    );
    let found = leaks(&secrets, headers, body);
    anyhow::ensure!(
        found.is_empty(),
        "{what}: {url} answered {status} with {}",
        found.join(", ")
    );
    tracing::info!(what, url, status, checked = secrets.len(), "no key in the reply");
    Ok(())
}

fn check(c: &Ctx, what: &str, r: &Reply) -> anyhow::Result<()> {
    check_reply(c, what, &r.url, r.status, &r.headers, &r.text)
}

async fn no_key_in_reply(c: Ctx, ep: Endpoint, embedding: Option<String>) -> anyhow::Result<()> {
    let body = ep.body(&c, c.tag(), embedding.as_deref())?;
    let r = ep.send(&c.router, body.as_ref()).await?;
    if ep.must_serve(embedding.as_deref()) {
        r.expect_status(200)?;
    }
    check(&c, ep.name(), &r)
}

/// Replies that are not one request of an [`Endpoint`].
#[derive(Clone, Copy)]
enum Served {
    Stream,
    /// `/v1/model/info`: every deployment's `litellm_params`, where an api_key would sit.
    ModelInfo,
    /// `/health?model=<probe>`: the router calls the group's deployments and reports each
    /// with its params (only the probe group, so other cases' deployments get no calls).
    HealthOfProbe,
}

impl Served {
    fn name(self) -> &'static str {
        match self {
            Self::Stream => "chat_stream",
            Self::ModelInfo => "model_info",
            Self::HealthOfProbe => "health",
        }
    }
}

async fn no_key_in_served(c: Ctx, what: Served) -> anyhow::Result<()> {
    let group = c.probe_group()?;
    match what {
        Served::Stream => {
            let mut body = c.chat_body(&group, c.tag(), "stream check");
            body["stream_options"] = json!({"include_usage": true});
            let s = c.router.chat_stream(&body).await?;
            s.expect_ok()?;
            anyhow::ensure!(s.done, "the stream ended without [DONE]: {}", s.ending());
            let text = serde_json::to_string(&s.chunks)?;
            check_reply(&c, what.name(), &s.url, s.status, &s.headers, &text)
        }
        Served::ModelInfo => {
            let r = c.router.get("/v1/model/info").await?;
            r.expect_status(200)?;
            check(&c, what.name(), &r)
        }
        Served::HealthOfProbe => {
            let r = c.router.get(&format!("/health?model={group}")).await?;
            r.expect_status(200)?;
            check(&c, what.name(), &r)
        }
    }
}

async fn no_key_in_open(c: Ctx, path: &'static str) -> anyhow::Result<()> {
    let r = c.router.with_key(None).get(path).await?;
    r.expect_status(200)?;
    check(&c, path, &r)
}

/// The router's own refusals.
#[derive(Clone, Copy)]
enum Refusal {
    /// A wrong key: the answer an attacker gets.
    Unauthenticated,
    /// A model the config does not name: LiteLLM's 400 lists where to look.
    UnknownModel,
}

impl Refusal {
    fn name(self) -> &'static str {
        match self {
            Self::Unauthenticated => "refused_key",
            Self::UnknownModel => "unknown_model",
        }
    }
}

async fn no_key_in_refusal(c: Ctx, what: Refusal) -> anyhow::Result<()> {
    let group = c.probe_group()?;
    let r = match what {
        Refusal::Unauthenticated => {
            c.router
                .with_key(Some(WRONG_KEY.into()))
                .chat(&c.chat_body(&group, c.tag(), "refusal check"))
                .await?
        }
        Refusal::UnknownModel => {
            let model = format!("{}-not-configured", c.tag());
            c.router.chat(&c.chat_body(&model, c.tag(), "refusal check")).await?
        }
    };
    anyhow::ensure!(
        (400..500).contains(&r.status),
        "{} answered {} to a request it should refuse: {}",
        r.url,
        r.status,
        excerpt(&r.text)
    );
    check(&c, what.name(), &r)
}

const WRONG_KEY: &str = "sk-wrong-key-0000000000";

#[derive(Clone, Copy)]
enum Key {
    Missing,
    Wrong,
}

impl Key {
    fn name(self) -> &'static str {
        match self {
            Self::Missing => "missing_key",
            Self::Wrong => "wrong_key",
        }
    }
    fn value(self) -> Option<String> {
        match self {
            Self::Missing => None,
            Self::Wrong => Some(WRONG_KEY.into()),
        }
    }
}

/// A refusal for the key: 401 or 403, or the 400 LiteLLM gives without a database, where it
/// cannot tell a wrong key from a virtual one (`no_db_connection`; smoke::auth::wrong_key_is_401
/// is the strict case, ignored with what 1.100.5 does).
fn is_key_refusal(r: &Reply) -> bool {
    let kind = r.json.pointer("/error/type").and_then(Value::as_str);
    matches!(r.status, 401 | 403) || (r.status == 400 && matches!(kind, Some("no_db_connection" | "auth_error")))
}

async fn refused(c: Ctx, ep: Endpoint, key: Key, embedding: Option<String>) -> anyhow::Result<()> {
    let body = ep.body(&c, c.tag(), embedding.as_deref())?;
    let r = ep.send(&c.router.with_key(key.value()), body.as_ref()).await?;
    c.observe("refusal_status", f64::from(r.status));
    anyhow::ensure!(
        is_key_refusal(&r),
        "{} answered {} to a request with {} (expected 401, 403 or LiteLLM's 400 no_db_connection): {}",
        r.url,
        r.status,
        key.name().replace('_', " "),
        excerpt(&r.text)
    );
    shape::error_body(r.json_or_err()?)?;
    tracing::info!(endpoint = ep.name(), key = key.name(), status = r.status, "refused");
    if body.is_some()
        && let Ok(sim) = c.sim()
    {
        let reached = sim
            .journal(&crate::sim::JournalQuery {
                tag: Some(c.tag().clone()),
                ..Default::default()
            })
            .await?;
        anyhow::ensure!(
            reached.is_empty(),
            "a request refused for its key still reached {} upstream(s): {}",
            reached.len(),
            crate::suites::support::path(&reached)
        );
    }
    // The same request with the master key gets through: the refusal was about the key.
    let ok = ep.send(&c.router, body.as_ref()).await?;
    anyhow::ensure!(
        !is_key_refusal(&ok),
        "{} refused the master key too ({}): {}",
        ok.url,
        ok.status,
        excerpt(&ok.text)
    );
    if ep.must_serve(embedding.as_deref()) {
        ok.expect_status(200)?;
    }
    Ok(())
}

/// Error replies built from an upstream's error: LiteLLM wraps the provider's message (and
/// its fallback attempts) into its own, the likeliest place for a key to slip out. The group
/// is the one whose failure the config's chains end soonest, and every group its chain tries
/// fails, so the client gets the error and not a fallback's answer.
fn upstream_error_cases(cfg: &RouterConfig) -> Vec<Case> {
    let Some((group, walk)) = shortest_failing_walk(cfg) else {
        let why = "the router config has no named chat group on the simulator whose failures the case can inject";
        return ["upstream_4xx", "upstream_5xx", "upstream_error_echoing_the_key"]
            .into_iter()
            .map(|n| Case::new(format!("security::no_key_in_reply::{n}"), |_| async { Ok(()) }).ignore(why))
            .collect();
    };
    let mk = |name: &str, fault: UpstreamFault| {
        let (g, w) = (group.clone(), walk.clone());
        Case::new(format!("security::no_key_in_reply::{name}"), move |c| {
            no_key_in_upstream_error(c, g.clone(), w.clone(), fault)
        })
        .needs(&[Role::Simulator])
        .breaks(&walk)
    };
    // A 400, not a 401: LiteLLM 1.100.5 cools a deployment down at once on a 401, 404 or 408
    // even when it is its group's only one and no allowed_fails is set (cooldown_handlers:
    // a status `_should_retry` refuses), which the locks cannot see coming; a 400 is neither
    // retried nor cooled down.
    vec![
        mk(
            "upstream_4xx",
            UpstreamFault {
                status: 400,
                echo_key: false,
            },
        ),
        mk(
            "upstream_5xx",
            UpstreamFault {
                status: 500,
                echo_key: false,
            },
        ),
        mk(
            "upstream_error_echoing_the_key",
            UpstreamFault {
                status: 400,
                echo_key: true,
            },
        )
        .ignore(
            "LiteLLM 1.100.5 passes an upstream's error message on verbatim: an upstream 400 whose message \
             quoted the provider key reached the client as `litellm.BadRequestError: OpenAIException - \
             Incorrect API key provided: <the key>` (only the copy after `Error doing the fallback:` said \
             REDACTED); real providers mask all but a few characters, so it takes an upstream that echoes \
             credentials",
        ),
    ]
}

/// The usable group whose failing makes LiteLLM try the fewest groups (its own general
/// chain), preferring chains LiteLLM cannot cool down (their cases share them), and that
/// chain.
fn shortest_failing_walk(cfg: &RouterConfig) -> Option<(String, Vec<String>)> {
    cfg.groups()
        .into_iter()
        .filter(|g| cfg.unusable(g, SINGLE_RPM).is_none())
        .map(|g| {
            let walk = cfg.closure(&g, ChainKind::General);
            (g, walk)
        })
        .filter(|(_, walk)| walk.iter().all(|g| cfg.unusable(g, SINGLE_RPM).is_none()))
        .min_by_key(|(_, walk)| (walk.iter().any(|g| cfg.can_cool_down(g)), walk.len()))
}

#[derive(Clone, Copy, Debug)]
struct UpstreamFault {
    status: u16,
    /// The error message quotes the provider key, as an upstream that echoes credentials would.
    echo_key: bool,
}

async fn no_key_in_upstream_error(
    c: Ctx,
    group: String,
    walk: Vec<String>,
    fault: UpstreamFault,
) -> anyhow::Result<()> {
    let want = fault.status;
    let message = if fault.echo_key {
        let key = c
            .endpoints
            .secrets
            .first()
            .ok_or_else(|| anyhow::anyhow!("this target holds no provider key to have the upstream echo"))?;
        Some(format!("Incorrect API key provided: {key}"))
    } else {
        None
    };
    let fault = Fault::Error {
        status: want,
        retry_after: None,
        message,
    };
    for g in &walk {
        break_group(&c, g, c.tag(), fault.clone()).await?;
    }
    let r = c
        .router
        .chat(&c.chat_body(&group, c.tag(), "upstream error check"))
        .await?;
    let journal = calls(&c, c.tag()).await?;
    anyhow::ensure!(
        !journal.is_empty() && journal.iter().all(|e| e.outcome.status() == Some(want)),
        "expected only upstream {want}s, the journal shows {}",
        crate::suites::support::path(&journal)
    );
    // The class of the upstream's status reaches the client (LiteLLM maps it, it need not copy it).
    anyhow::ensure!(
        r.status / 100 == want / 100,
        "{} answered {} to an upstream {want}: {}",
        r.url,
        r.status,
        excerpt(&r.text)
    );
    check(&c, &format!("an upstream {want}"), &r)
}

/// Shell-style `*` matching, all LiteLLM's wildcard groups use.
fn glob(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

/// Whether a listed id the config does not name is one a wildcard group stands for: the
/// pattern itself, a match of it, or a model of its provider (LiteLLM lists the provider's
/// known models, prefixed, for `model_name: "*"` with `model: openai/*` as well).
fn from_wildcard(cfg: &RouterConfig, id: &str) -> bool {
    cfg.groups().iter().filter(|g| g.contains('*')).any(|g| {
        glob(g, id)
            || cfg
                .deployments_of(g)
                .iter()
                .any(|d| id.starts_with(&format!("{}/", d.provider.prefix())))
    })
}

async fn models_exactly(c: Ctx) -> anyhow::Result<()> {
    let r = c.router.get("/v1/models").await?;
    r.expect_status(200)?;
    let ids =
        shape::model_ids(r.json_or_err()?).map_err(|e| anyhow::anyhow!("{}: {e}: {}", r.url, excerpt(&r.text)))?;
    let named: BTreeSet<String> = c.config.groups().into_iter().filter(|g| !g.contains('*')).collect();
    let listed: BTreeSet<&str> = ids.iter().map(String::as_str).collect();
    let missing: Vec<&String> = named.iter().filter(|g| !listed.contains(g.as_str())).collect();
    let extra: Vec<&str> = listed
        .iter()
        .copied()
        .filter(|id| !named.contains(*id) && !from_wildcard(&c.config, id))
        .collect();
    let twice = ids.len() - listed.len();
    c.observe("models_listed", ids.len() as f64);
    anyhow::ensure!(
        missing.is_empty() && extra.is_empty() && twice == 0,
        "{} lists {} ids for the config's {} named groups: missing {missing:?}, not in the config {extra:?}, \
         {twice} listed twice",
        r.url,
        ids.len(),
        named.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_litellm_wildcards() {
        assert!(glob("*", "anything/at-all"));
        assert!(glob("openai/*", "openai/gpt-4o"));
        assert!(!glob("openai/*", "anthropic/claude"));
        assert!(glob("gemini/gemini-*-pro", "gemini/gemini-1.5-pro"));
        assert!(!glob("gemini/gemini-*-pro", "gemini/gemini-1.5-flash"));
        assert!(glob("exact", "exact") && !glob("exact", "exactly"));
        assert!(!glob("a*a", "a"));
    }

    #[test]
    fn a_key_shows_whole_or_by_its_random_part_but_not_masked() {
        let key = "sk-gauntlet-0123456789abcdef0123456789abcdef";
        assert!(shows(&format!("Bearer {key}"), key));
        assert!(shows("key=0123456789abcdef0123456789abcdef", key));
        assert!(!shows("sk-gauntlet-...cdef", key));
        let mut h = HeaderMap::new();
        h.insert("x-echo", key.parse().unwrap());
        let secrets = [("the master key", key.to_owned())];
        assert_eq!(leaks(&secrets, &h, "{}"), ["the master key in header x-echo"]);
        assert_eq!(leaks(&secrets, &HeaderMap::new(), key), ["the master key in the body"]);
        assert!(leaks(&secrets, &HeaderMap::new(), "clean").is_empty());
    }

    #[test]
    fn the_upstream_error_cases_break_the_shortest_chain_of_the_default_config() {
        let m = crate::stack::manifest::Manifest::builtin().unwrap();
        let cfg = RouterConfig::from_document(&m.router_config.doc).unwrap();
        let (group, walk) = shortest_failing_walk(&cfg).unwrap();
        assert_eq!(
            walk,
            std::slice::from_ref(&group),
            "{group}: a group without fallbacks exists in router.yaml"
        );
        assert!(!cfg.can_cool_down(&group));
    }
}
