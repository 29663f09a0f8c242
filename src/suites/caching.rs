//! Caching and state through Redis (the router's response cache):
//! - an identical request is served from the cache, without a second upstream call
//! - a different request is not: it goes upstream
//! - a cached reply carries the same content and usage as the original
//! - the cache key covers the model and the sampling parameters: the same messages with
//!   another temperature, max_tokens or model group go upstream
//! - per-request controls: `no-cache` skips the lookup, `no-store` the write, `ttl` sets
//!   the entry's life in Redis; without one, the entry lives as long as the config says
//! - a hit names its entry in `x-litellm-cache-key` (and a miss does not)
//! - the cache's mode, from the config: `default_off` serves and stores only requests that
//!   ask (`cache: {"use-cache": true}`), otherwise every request uses it
//!
//! The default stack's cache is `mode: default_off`, so only requests that opt in
//! (`cache: {"use-cache": true}`) touch it and no other case is served stale replies.
//! What LiteLLM 1.100.5 puts in the key was read from `Cache.get_cache_key`: the request's
//! LLM API parameters (model group, messages, temperature, max_tokens, user, stream…), not
//! the `cache` controls nor `metadata`.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serde_yaml::Value as Yaml;

use crate::client::Reply;

use crate::client::shape;
use crate::config::RouterConfig;
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};
use crate::stack::role::Role;
use crate::suites::support::{SINGLE_RPM, calls, sims_of};

pub fn cases(plan: &Plan) -> Vec<Case> {
    if !plan.config.cache {
        return Vec::new();
    }
    let settings = CacheSettings::of(&plan.manifest.router_config.doc.root);
    let need = [Role::Simulator, Role::Redis];
    let mut cases = vec![
        Case::new("caching::identical_request_served_from_cache", identical),
        Case::new("caching::different_request_goes_upstream", different),
        Case::new("caching::key::covers_temperature", |c| {
            key_covers(c, Variant::Temperature)
        }),
        Case::new("caching::key::covers_max_tokens", |c| key_covers(c, Variant::MaxTokens)),
        Case::new("caching::control::no_cache_goes_upstream", no_cache),
        Case::new("caching::control::no_store_is_not_stored", no_store),
        Case::new("caching::control::ttl_expires_the_entry", ttl_per_request)
            .cost(REQUEST_TTL_S as f64)
            .ignore_if(settings.not_redis()),
        Case::new("caching::hit_header::names_the_entry", hit_header).ignore_if(settings.not_redis()),
    ];
    let default_ttl = settings.not_redis().map_or_else(|| settings.default_ttl_s(), Err);
    cases.push(match default_ttl {
        Ok(ttl) => Case::new("caching::ttl::default_from_config", move |c| ttl_default(c, ttl)),
        Err(why) => Case::new("caching::ttl::default_from_config", |_| async { Ok(()) }).ignore(why),
    });
    cases.push(if settings.default_off {
        Case::new("caching::mode::default_off_unless_asked", default_off)
    } else {
        Case::new("caching::mode::default_on", default_on)
    });
    let other = plan
        .config
        .probe_group()
        .and_then(|probe| other_group(&plan.config, &settings, &probe));
    cases.push(match other {
        Some(g) => {
            let group = g.clone();
            Case::new("caching::key::covers_model", move |c| {
                key_covers(c, Variant::Model(group.clone()))
            })
            .uses(&[g])
        }
        None => Case::new("caching::key::covers_model", |_| async { Ok(()) }).ignore(
            "the router config has no second named chat group on the simulator (outside the probe group's \
             caching_groups) to send the same messages to",
        ),
    });
    let cases = cases.into_iter().map(|c| c.needs(&need)).collect();
    crate::suites::support::on_probe_group(plan, cases)
}

/// A chat group other than `probe` that does not share its cache (`caching_groups`).
fn other_group(cfg: &RouterConfig, settings: &CacheSettings, probe: &str) -> Option<String> {
    cfg.groups().into_iter().find(|g| {
        g != probe
            && cfg.unusable(g, SINGLE_RPM).is_none()
            && !settings
                .caching_groups
                .iter()
                .any(|set| set.iter().any(|x| x == probe) && set.iter().any(|x| x == g))
    })
}

/// The cache settings the cases depend on, read from the config as LiteLLM reads them.
struct CacheSettings {
    /// `cache_params.type` (LiteLLM's default is `local`, in-process).
    kind: String,
    /// `cache_params.mode: default_off`: the cache is opt-in per request.
    default_off: bool,
    /// `cache_params.ttl` / `default_in_redis_ttl`, as written.
    ttl: Option<Yaml>,
    in_redis_ttl: Option<Yaml>,
    /// `litellm_settings.default_redis_ttl`, which changes the Redis cache's own default.
    redis_default_set: bool,
    /// `router_settings.caching_groups`: groups that share entries.
    caching_groups: Vec<Vec<String>>,
}

/// LiteLLM's Redis cache keeps an entry this long when nothing says otherwise
/// (`BaseCache.__init__(default_ttl=60)`).
const LITELLM_DEFAULT_TTL_S: f64 = 60.0;

impl CacheSettings {
    fn of(root: &Yaml) -> Self {
        let lset = root.get("litellm_settings");
        let params = lset.and_then(|l| l.get("cache_params"));
        let param = |k: &str| params.and_then(|p| p.get(k)).filter(|v| !v.is_null()).cloned();
        let caching_groups = root
            .get("router_settings")
            .and_then(|r| r.get("caching_groups"))
            .and_then(Yaml::as_sequence)
            .map(|sets| {
                sets.iter()
                    .filter_map(Yaml::as_sequence)
                    .map(|set| set.iter().filter_map(Yaml::as_str).map(str::to_owned).collect())
                    .collect()
            })
            .unwrap_or_default();
        Self {
            kind: param("type")
                .as_ref()
                .and_then(Yaml::as_str)
                .unwrap_or("local")
                .to_owned(),
            default_off: param("mode").as_ref().and_then(Yaml::as_str) == Some("default_off"),
            ttl: param("ttl"),
            in_redis_ttl: param("default_in_redis_ttl"),
            redis_default_set: lset
                .and_then(|l| l.get("default_redis_ttl"))
                .is_some_and(|v| !v.is_null()),
            caching_groups,
        }
    }

    /// Why cases reading an entry in Redis cannot run, if they cannot.
    fn not_redis(&self) -> Option<String> {
        (self.kind != "redis").then(|| {
            format!(
                "the config's cache is cache_params type {:?}, not redis: there is no entry in Redis to read",
                self.kind
            )
        })
    }

    /// How long an entry stored without a per-request `ttl` lives: `default_in_redis_ttl`
    /// (for a Redis cache), else `ttl`, else LiteLLM's 60 s (`Cache.__init__`, `BaseCache`).
    fn default_ttl_s(&self) -> Result<f64, String> {
        if self.redis_default_set {
            return Err(
                "the config sets litellm_settings.default_redis_ttl, whose order against cache_params \
                        gauntlet has not measured"
                    .into(),
            );
        }
        match self.in_redis_ttl.as_ref().or(self.ttl.as_ref()) {
            None => Ok(LITELLM_DEFAULT_TTL_S),
            Some(v) => crate::config::pricing::number(v)
                .filter(|t| *t >= 1.0)
                .ok_or_else(|| format!("cache_params ttl {v:?} is not a number of seconds gauntlet can read")),
        }
    }
}

pub(crate) fn cached_body(c: &Ctx, prompt: &str) -> anyhow::Result<Value> {
    let group = c.probe_group()?;
    let mut body = c.chat_body(&group, c.tag(), prompt);
    // The trace id differs per request; keep the cached requests byte-identical.
    body["metadata"]["trace_id"] = json!(c.tag().sub("trace"));
    body["cache"] = json!({"use-cache": true});
    Ok(body)
}

async fn upstream_calls(c: &Ctx) -> anyhow::Result<usize> {
    Ok(c.sim()?
        .journal(&crate::sim::JournalQuery {
            tag: Some(c.tag().clone()),
            ..Default::default()
        })
        .await?
        .len())
}

/// The router writes its cache after answering, so an identical request sent at once can
/// still miss. Repeats `body` (bounded) until a reply is a cache hit; returns the first
/// reply, the hit, and how many repeats missed. The hit must not have called upstream.
pub(crate) async fn until_cache_hit(c: &Ctx, body: &Value) -> anyhow::Result<(Reply, Reply, usize)> {
    let first = c.router.chat(body).await?;
    first.expect_status(200)?;
    let start = Instant::now();
    let mut misses = 0;
    loop {
        let before = upstream_calls(c).await?;
        let r = c.router.chat(body).await?;
        r.expect_status(200)?;
        let after = upstream_calls(c).await?;
        if r.router().cache_key.is_some() {
            anyhow::ensure!(
                after == before,
                "a reply marked as a cache hit still made {} upstream call(s)",
                after - before
            );
            return Ok((first, r, misses));
        }
        misses += 1;
        anyhow::ensure!(
            start.elapsed() < CACHE_WRITE_BOUND,
            "no identical request was served from the cache within {:.0}s ({misses} misses, {after} upstream calls)",
            CACHE_WRITE_BOUND.as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long the router may take to write a reply into its cache.
const CACHE_WRITE_BOUND: Duration = Duration::from_secs(5);

async fn identical(c: Ctx) -> anyhow::Result<()> {
    let body = cached_body(&c, "cache me")?;
    let (first, hit, misses) = until_cache_hit(&c, &body).await?;
    let (a, b) = (first.json_or_err()?, hit.json_or_err()?);
    anyhow::ensure!(
        shape::chat_completion(a)? == shape::chat_completion(b)?,
        "the cached reply's content differs from the original"
    );
    anyhow::ensure!(
        shape::usage(&a["usage"])? == shape::usage(&b["usage"])?,
        "the cached reply's usage differs"
    );
    tracing::info!(
        first_ms = first.latency.as_millis() as u64,
        cached_ms = hit.latency.as_millis() as u64,
        misses,
        "cache hit"
    );
    c.observe("cache_hit_ms", hit.latency.as_secs_f64() * 1000.0);
    c.observe("misses_before_cache_write", misses as f64);
    Ok(())
}

async fn different(c: Ctx) -> anyhow::Result<()> {
    c.router
        .chat(&cached_body(&c, "first question")?)
        .await?
        .expect_status(200)?;
    c.router
        .chat(&cached_body(&c, "second question")?)
        .await?
        .expect_status(200)?;
    let n = upstream_calls(&c).await?;
    anyhow::ensure!(
        n == 2,
        "two different cacheable requests made {n} upstream calls, expected 2"
    );
    Ok(())
}

/// Sends `body` once: it must go upstream (one more call in the journal) and its reply must
/// not be marked as a hit.
async fn expect_miss(c: &Ctx, body: &Value, what: &str) -> anyhow::Result<Reply> {
    let before = upstream_calls(c).await?;
    let r = c.router.chat(body).await?;
    r.expect_status(200)?;
    let made = upstream_calls(c).await? - before;
    let key = r.router().cache_key;
    anyhow::ensure!(
        made == 1 && key.is_none(),
        "{what}: it made {made} upstream call(s) (expected 1){}",
        if key.is_some() {
            " and its reply is marked as a cache hit (x-litellm-cache-key)"
        } else {
            ""
        }
    );
    Ok(r)
}

/// LiteLLM writes an entry after answering. Storing an entry of its own and seeing it
/// served shows that the writes queued before it have landed: what is missing by then was
/// never written. Returns how many repeats that took.
async fn writes_settled(c: &Ctx, label: &str) -> anyhow::Result<usize> {
    let (_, _, misses) = until_cache_hit(c, &cached_body(c, &format!("settle {label}"))?).await?;
    Ok(misses)
}

fn redis_url(c: &Ctx) -> anyhow::Result<&str> {
    c.endpoints
        .url_of(Role::Redis)
        .ok_or_else(|| anyhow::anyhow!("this case reads the router's Redis, and the target has none"))
}

/// The Redis key of a hit's entry: the `x-litellm-cache-key` header (a namespace, if one is
/// set, is part of it).
fn entry_key(hit: &Reply) -> anyhow::Result<String> {
    hit.router()
        .cache_key
        .ok_or_else(|| anyhow::anyhow!("{}: the cache hit carries no x-litellm-cache-key", hit.url))
}

/// PTTL of the entry `key` once Redis has it. LiteLLM writes a Redis-backed entry to its
/// in-process layer first and to Redis after (`DualCache.async_set_cache`), and serves hits
/// from the former, so a hit can come before Redis has the key: seen right after a stack
/// started. Bounded by [`CACHE_WRITE_BOUND`].
async fn stored_pttl(c: &Ctx, key: &str) -> anyhow::Result<i64> {
    let redis = redis_url(c)?;
    let start = Instant::now();
    loop {
        let pttl = crate::stack::health::redis_pttl(redis, key).await?;
        if pttl != -2 {
            return Ok(pttl);
        }
        anyhow::ensure!(
            start.elapsed() < CACHE_WRITE_BOUND,
            "the entry {key} the router served a hit from was not in its Redis within {:.0}s",
            CACHE_WRITE_BOUND.as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One sampling parameter (or the model group) changed on an otherwise identical request.
#[derive(Clone)]
enum Variant {
    Temperature,
    MaxTokens,
    Model(String),
}

async fn key_covers(c: Ctx, v: Variant) -> anyhow::Result<()> {
    let mut base = cached_body(&c, "cache key probe")?;
    base["temperature"] = json!(0.2);
    let (_, _, misses) = until_cache_hit(&c, &base).await?;
    let mut other = base.clone();
    let what = match &v {
        Variant::Temperature => {
            other["temperature"] = json!(0.7);
            "the same messages with temperature 0.7 instead of 0.2".to_owned()
        }
        Variant::MaxTokens => {
            other["max_tokens"] = json!(base["max_tokens"].as_u64().unwrap_or(16) / 2);
            format!(
                "the same messages with max_tokens {} instead of {}",
                other["max_tokens"], base["max_tokens"]
            )
        }
        Variant::Model(g) => {
            other["model"] = json!(g);
            format!(
                "the same messages to {g} instead of {}",
                base["model"].as_str().unwrap_or("?")
            )
        }
    };
    expect_miss(
        &c,
        &other,
        &format!("{what}, after the original was served from the cache"),
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e}: the cache key ignores the difference"))?;
    if let Variant::Model(g) = &v {
        let last = calls(&c, c.tag()).await?.pop();
        let want = sims_of(&c.config, g);
        anyhow::ensure!(
            last.as_ref().is_some_and(|e| want.contains(&e.deployment)),
            "the request to {g} went to {:?}, not one of its deployments {want:?}",
            last.map(|e| e.deployment)
        );
    }
    c.observe("misses_before_cache_write", misses as f64);
    Ok(())
}

async fn no_cache(c: Ctx) -> anyhow::Result<()> {
    let body = cached_body(&c, "no-cache probe")?;
    until_cache_hit(&c, &body).await?;
    let mut skip = body.clone();
    skip["cache"] = json!({"use-cache": true, "no-cache": true});
    expect_miss(&c, &skip, "a request with cache no-cache, whose entry is stored").await?;
    Ok(())
}

async fn no_store(c: Ctx) -> anyhow::Result<()> {
    let mut body = cached_body(&c, "no-store probe")?;
    body["cache"] = json!({"use-cache": true, "no-store": true});
    expect_miss(&c, &body, "the first request with cache no-store").await?;
    writes_settled(&c, "after no-store").await?;
    body["cache"] = json!({"use-cache": true});
    expect_miss(
        &c,
        &body,
        "the same request asking for the cache, once later writes had landed (no-store was not honoured)",
    )
    .await?;
    Ok(())
}

/// The per-request `ttl` LiteLLM sets as the entry's expiry in Redis (seconds).
const REQUEST_TTL_S: u64 = 2;

async fn ttl_per_request(c: Ctx) -> anyhow::Result<()> {
    let mut body = cached_body(&c, "ttl probe")?;
    body["cache"] = json!({"use-cache": true, "ttl": REQUEST_TTL_S});
    let (_, hit, _) = until_cache_hit(&c, &body).await?;
    let key = entry_key(&hit)?;
    let redis = redis_url(&c)?;
    let pttl = stored_pttl(&c, &key).await?;
    anyhow::ensure!(
        pttl > 0 && pttl <= (REQUEST_TTL_S * 1000) as i64,
        "the entry of a request with ttl {REQUEST_TTL_S} has PTTL {pttl} ms in Redis (-1: never expires, -2: gone)"
    );
    // Bounded by the ttl and a margin for Redis' own expiry sweep.
    let bound = Duration::from_secs(REQUEST_TTL_S + 3);
    let start = Instant::now();
    loop {
        let left = crate::stack::health::redis_pttl(redis, &key).await?;
        if left == -2 {
            break;
        }
        anyhow::ensure!(
            start.elapsed() < bound,
            "the entry was still in Redis {:.1}s after a {REQUEST_TTL_S}s ttl (PTTL {left} ms)",
            start.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(left.clamp(20, 200) as u64)).await;
    }
    c.observe("entry_ttl_ms", pttl as f64);
    expect_miss(&c, &body, "the same request once its entry expired").await?;
    Ok(())
}

async fn ttl_default(c: Ctx, ttl_s: f64) -> anyhow::Result<()> {
    let body = cached_body(&c, "default ttl probe")?;
    let started = Instant::now();
    let (_, hit, _) = until_cache_hit(&c, &body).await?;
    let key = entry_key(&hit)?;
    let pttl = stored_pttl(&c, &key).await?;
    let full = (ttl_s * 1000.0) as i64;
    // The entry was written at most this long ago.
    let age = started.elapsed().as_millis() as i64 + 1000;
    anyhow::ensure!(
        pttl <= full && pttl > full - age,
        "an entry stored without a per-request ttl has PTTL {pttl} ms in Redis (-1: never expires); the config \
         says {ttl_s}s (cache_params ttl, else LiteLLM's 60 s), so {}..{full} ms",
        full - age
    );
    c.observe("entry_ttl_ms", pttl as f64);
    Ok(())
}

async fn hit_header(c: Ctx) -> anyhow::Result<()> {
    let body = cached_body(&c, "hit header probe")?;
    let (first, hit, _) = until_cache_hit(&c, &body).await?;
    anyhow::ensure!(
        first.router().cache_key.is_none(),
        "the first request, which went upstream, is marked as a hit: x-litellm-cache-key {:?}",
        first.router().cache_key
    );
    let key = entry_key(&hit)?;
    let hash = key.rsplit(':').next().unwrap_or_default();
    anyhow::ensure!(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        "x-litellm-cache-key {key:?} is not a sha256 (with an optional namespace)"
    );
    // The header names the entry as stored in Redis, where another router would find it.
    stored_pttl(&c, &key).await?;
    // The router's own log agrees that the reply came from the cache.
    if let Ok(sink) = c.sink() {
        sink.wait_for_where(c.tag(), |p| p.cache_hit, 1, Duration::from_secs(30))
            .await
            .map_err(|e| anyhow::anyhow!("no logging payload marks the reply with the header as a cache hit: {e}"))?;
    }
    Ok(())
}

/// `mode: default_off`: a request that does not ask is neither served from the cache nor
/// stored in it.
async fn default_off(c: Ctx) -> anyhow::Result<()> {
    let stored = cached_body(&c, "stored probe")?;
    until_cache_hit(&c, &stored).await?;
    let mut unasked = stored.clone();
    strip_cache(&mut unasked);
    expect_miss(
        &c,
        &unasked,
        "a request without `cache` whose entry is stored (mode default_off serves only requests that ask)",
    )
    .await?;
    let mut fresh = cached_body(&c, "unasked probe")?;
    strip_cache(&mut fresh);
    expect_miss(&c, &fresh, "a new request without `cache`").await?;
    writes_settled(&c, "after unasked").await?;
    fresh["cache"] = json!({"use-cache": true});
    expect_miss(
        &c,
        &fresh,
        "that request asking for the cache, once later writes had landed (mode default_off stored a request \
         that did not ask)",
    )
    .await?;
    Ok(())
}

/// The cache on by default (no `mode`, or `default_on`): a request that says nothing about
/// it is served from it.
async fn default_on(c: Ctx) -> anyhow::Result<()> {
    let mut body = cached_body(&c, "default on probe")?;
    strip_cache(&mut body);
    let (_, _, misses) = until_cache_hit(&c, &body)
        .await
        .map_err(|e| anyhow::anyhow!("the config's cache is on by default, yet a request without `cache`: {e}"))?;
    c.observe("misses_before_cache_write", misses as f64);
    Ok(())
}

fn strip_cache(body: &mut Value) {
    if let Some(o) = body.as_object_mut() {
        o.remove("cache");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(yaml: &str) -> CacheSettings {
        CacheSettings::of(&serde_yaml::from_str(yaml).unwrap())
    }

    #[test]
    fn the_mode_and_default_ttl_come_from_the_config() {
        let m = crate::stack::manifest::Manifest::builtin().unwrap();
        let s = CacheSettings::of(&m.router_config.doc.root);
        assert!(s.default_off, "router.yaml keeps its cache opt-in");
        assert_eq!(s.not_redis(), None);
        assert!(
            settings("litellm_settings: {cache: true}")
                .not_redis()
                .unwrap()
                .contains("\"local\"")
        );
        assert_eq!(s.default_ttl_s(), Ok(60.0));
        let on = settings("litellm_settings: {cache: true, cache_params: {type: redis, ttl: 600}}");
        assert!(!on.default_off);
        assert_eq!(on.default_ttl_s(), Ok(600.0));
        let redis = settings("litellm_settings: {cache_params: {ttl: 600, default_in_redis_ttl: 30}}");
        assert_eq!(redis.default_ttl_s(), Ok(30.0));
        let env = settings("litellm_settings: {cache_params: {ttl: os.environ/TTL}}");
        assert!(env.default_ttl_s().unwrap_err().contains("os.environ/TTL"));
        assert!(
            settings("litellm_settings: {default_redis_ttl: 5}")
                .default_ttl_s()
                .is_err()
        );
    }

    #[test]
    fn the_model_case_avoids_groups_that_share_the_cache() {
        let m = crate::stack::manifest::Manifest::builtin().unwrap();
        let cfg = RouterConfig::from_document(&m.router_config.doc).unwrap();
        let probe = cfg.probe_group().unwrap();
        let s = CacheSettings::of(&m.router_config.doc.root);
        let first = other_group(&cfg, &s, &probe).unwrap();
        assert_ne!(first, probe);
        let shared = settings(&format!("router_settings: {{caching_groups: [[{probe}, {first}]]}}"));
        let next = other_group(&cfg, &shared, &probe).unwrap();
        assert!(next != first && next != probe, "{next}");
    }
}
