//! The GPU lane: a real vLLM server on an NVIDIA GPU, which the simulator stands in for
//! everywhere else.
//! - health: vLLM's `/health` answers 200
//! - model listed: `/v1/models` lists the manifest's model (`[gpu] model`)
//! - chat and streaming through the router to vLLM (`[gpu] group`), with the usage vLLM
//!   reports counted by the ledger: the router's logging payload has the same tokens, the
//!   deployment that served, and the price table's cost
//! - vLLM's `/metrics` move: prompt and generation token counters, requests served
//! - TTFT measured: to the first streamed chunk, direct and through the router, and counted
//!   in vLLM's `vllm:time_to_first_token_seconds` histogram
//!
//! Registered when the manifest has a service playing the vllm role. Where no GPU is found (or
//! the target lacks that service, or the config the group) they are ignored with the reason,
//! and start nothing; `GAUNTLET_REQUIRE=gpu` makes that a failure. `GAUNTLET_REQUIRE=all`
//! does not: CI has no GPU.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::exposition::{self, Exposition};
use crate::client::{RouterClient, RouterHeaders, shape};
use crate::config::pricing::Tokens;
use crate::ledger::book::Entry;
use crate::ledger::payload::LoggingPayload;
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};
use crate::stack::backend::{self, BackendKind};
use crate::stack::gpu;
use crate::stack::role::Role;
use crate::suites::support::{SINGLE_RPM, ids_of, trace_of};
use crate::tag::Tag;

/// The router flushes its logging callbacks in batches: how long a payload may take.
const FLUSH: Duration = Duration::from_secs(30);

/// vLLM updates its metrics as its engine loop gets round to it, not before it answers.
const METRICS_SETTLE: Duration = Duration::from_secs(10);

/// vLLM's Prometheus names (the simulator's `/metrics` uses the same).
const RUNNING: &str = "vllm:num_requests_running";
const PROMPT: &str = "vllm:prompt_tokens_total";
const GENERATION: &str = "vllm:generation_tokens_total";
const SUCCESS: &str = "vllm:request_success_total";
const TTFT_COUNT: &str = "vllm:time_to_first_token_seconds_count";
const TTFT_SUM: &str = "vllm:time_to_first_token_seconds_sum";

pub fn cases(plan: &Plan) -> Vec<Case> {
    let m = &plan.manifest;
    let (Some(service), Some(settings)) = (m.service_with(Role::Vllm), m.gpu.as_ref()) else {
        return Vec::new();
    };
    let model = settings.model.clone();
    let group = settings.group.clone();
    let with_model = |f: fn(Ctx, String) -> CaseFut| {
        let m = model.clone();
        move |c: Ctx| f(c, m.clone())
    };
    let with_group = |f: fn(Ctx, String) -> CaseFut| {
        let g = group.clone();
        move |c: Ctx| f(c, g.clone())
    };
    let direct = [
        Case::new("gpu::vllm::health", health),
        Case::new(
            "gpu::vllm::model_listed",
            with_model(|c, m| Box::pin(model_listed(c, m))),
        ),
        Case::new(
            "gpu::vllm::metrics_move",
            with_model(|c, m| Box::pin(metrics_move(c, m))),
        ),
        Case::new(
            "gpu::vllm::ttft_measured",
            with_model(|c, m| Box::pin(ttft_measured(c, m))),
        ),
    ]
    .map(|c| c.needs(&[Role::Vllm]));
    let group_gate = group_reason(plan, &group);
    let routed = [
        Case::new("gpu::router::chat", with_group(|c, g| Box::pin(router_chat(c, g)))),
        Case::new(
            "gpu::router::streaming",
            with_group(|c, g| Box::pin(router_streaming(c, g))),
        ),
    ]
    .map(|c| {
        let c = c.needs(&[Role::Vllm, Role::LedgerSink]).uses(&[&group]);
        match &group_gate {
            Some(why) => hold(c, why, plan.requires_gpu()),
            None => c,
        }
    });
    let all: Vec<Case> = direct.into_iter().chain(routed).collect();
    match lane_reason(plan, service) {
        Some(why) => all.into_iter().map(|c| hold(c, &why, plan.requires_gpu())).collect(),
        None => all,
    }
}

type CaseFut = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;

/// Why the lane cannot run on this target, if it cannot: no GPU for an embedded stack (or a
/// process backend with no program to start), no vLLM in an attached stack or a bare router.
fn lane_reason(plan: &Plan, service: &str) -> Option<String> {
    if !plan.embedded {
        return (!plan.offers(Role::Vllm)).then(|| {
            format!(
                "needs the vllm service, which this target lacks: run on the embedded stack (no \
                 ROUTER_URL), or attach a stack started with '{service}'"
            )
        });
    }
    let spec = &plan.manifest.services[service];
    let kind = BackendKind::select(plan.manifest.stack.backend).unwrap_or_default();
    if let Some(why) = gpu::unavailable(kind, spec.gpu.as_deref().unwrap_or("all")) {
        return Some(why);
    }
    let program = spec.command.first().map(String::as_str).unwrap_or_default();
    let templated = program.contains("${");
    if kind == BackendKind::Process && !templated && backend::which(program).is_none() {
        return Some(format!(
            "the process backend cannot start '{service}': its command begins with {program:?}, \
             no program on PATH (the default manifest's is the vLLM image's arguments, for the \
             Docker backend); set GAUNTLET_BACKEND=docker, or point GAUNTLET_MANIFEST at a \
             manifest whose '{service}' command is a local `vllm serve …`"
        ));
    }
    None
}

/// Why the through-router cases cannot run, if they cannot: the config has no such chat group.
fn group_reason(plan: &Plan, group: &str) -> Option<String> {
    if plan.config.deployments_of(group).is_empty() {
        return Some(format!(
            "the router config has no model group '{group}' ([gpu] group): add one whose \
             deployment is hosted_vllm/<model> at ${{<vllm service>.url}}/v1"
        ));
    }
    plan.config.traffic_gate(group, SINGLE_RPM)
}

/// A case that cannot run here: starts nothing, and fails with `why` if run anyway
/// (`--include-ignored`); ignored with `why`, unless `GAUNTLET_REQUIRE=gpu` asks for a failure.
fn hold(case: Case, why: &str, required: bool) -> Case {
    let message = if required {
        format!("GAUNTLET_REQUIRE=gpu: {why}")
    } else {
        why.to_owned()
    };
    let held = Case {
        needs: Vec::new(),
        run: Arc::new(move |_| {
            let m = message.clone();
            Box::pin(async move { Err(anyhow::anyhow!(m)) })
        }),
        ..case
    };
    if required { held } else { held.ignore(why) }
}

/// vLLM itself, as the cases on this host reach it.
fn vllm(c: &Ctx) -> anyhow::Result<RouterClient> {
    let url = c
        .endpoints
        .url_of(Role::Vllm)
        .ok_or_else(|| anyhow::anyhow!("this case needs the vLLM service, and the target has none"))?;
    Ok(RouterClient::new(url, None))
}

/// A request straight to vLLM, carrying the case's tag like every other request.
fn direct_body(c: &Ctx, model: &str, prompt: &str) -> Value {
    let mut b = json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": 16,
        "temperature": 0,
    });
    c.tag().stamp(&mut b);
    b
}

async fn health(c: Ctx) -> anyhow::Result<()> {
    let v = vllm(&c)?;
    v.get("/health").await?.expect_status(200)?;
    // Which vLLM answered, for the report (not every build serves /version).
    if let Ok(r) = v.get("/version").await
        && let Some(version) = r.json.get("version").and_then(Value::as_str)
    {
        tracing::info!(version, "vLLM");
    }
    Ok(())
}

async fn model_listed(c: Ctx, model: String) -> anyhow::Result<()> {
    let r = vllm(&c)?.get("/v1/models").await?;
    r.expect_status(200)?;
    let ids = crate::client::shape::model_ids(r.json_or_err()?)
        .map_err(|e| anyhow::anyhow!("{}: {e}: {}", r.url, crate::client::excerpt(&r.text)))?;
    anyhow::ensure!(
        ids.contains(&model),
        "{} does not list {model} (the manifest's [gpu] model); it lists {ids:?}",
        r.url
    );
    Ok(())
}

async fn metrics_move(c: Ctx, model: String) -> anyhow::Result<()> {
    let v = vllm(&c)?;
    let before = scrape(&v).await?;
    before.require(&[RUNNING, PROMPT, GENERATION, SUCCESS, TTFT_COUNT])?;
    let r = v.chat(&direct_body(&c, &model, "Name three colours.")).await?;
    r.expect_status(200)?;
    let reply = r.json_or_err()?;
    shape::chat_completion(reply)?;
    let (prompt, completion, _) = shape::usage(&reply["usage"])?;
    anyhow::ensure!(completion > 0, "{}: usage.completion_tokens is 0", r.url);
    // Other cases may use vLLM meanwhile: its counters grow by at least this request's share.
    let after = settle(&v, |a| {
        a.grew(&before, PROMPT) >= prompt as f64
            && a.grew(&before, GENERATION) >= completion as f64
            && a.grew(&before, SUCCESS) >= 1.0
    })
    .await
    .map_err(|a| {
        anyhow::anyhow!(
            "vLLM's /metrics did not count the request ({prompt} prompt, {completion} completion tokens) \
             within {}s: {PROMPT} +{}, {GENERATION} +{}, {SUCCESS} +{}",
            METRICS_SETTLE.as_secs(),
            a.grew(&before, PROMPT),
            a.grew(&before, GENERATION),
            a.grew(&before, SUCCESS)
        )
    })?;
    c.observe("vllm_prompt_tokens_counted", after.grew(&before, PROMPT));
    c.observe("vllm_generation_tokens_counted", after.grew(&before, GENERATION));
    Ok(())
}

async fn ttft_measured(c: Ctx, model: String) -> anyhow::Result<()> {
    let v = vllm(&c)?;
    let before = scrape(&v).await?;
    let mut body = direct_body(&c, &model, "Count from one to five.");
    body["stream_options"] = json!({"include_usage": true});
    let s = v.chat_stream(&body).await?;
    let ttft = streamed(&s)?;
    c.observe("vllm_direct_ttft_ms", ms(ttft));
    let after = settle(&v, |a| a.grew(&before, TTFT_COUNT) >= 1.0).await.map_err(|_| {
        anyhow::anyhow!(
            "vLLM's {TTFT_COUNT} did not count the streamed request within {}s",
            METRICS_SETTLE.as_secs()
        )
    })?;
    // vLLM's own measure, the mean over what it counted meanwhile: for the report.
    let n = after.grew(&before, TTFT_COUNT);
    c.observe("vllm_server_ttft_ms", after.grew(&before, TTFT_SUM) / n * 1000.0);
    Ok(())
}

async fn router_chat(c: Ctx, group: String) -> anyhow::Result<()> {
    let v = vllm(&c)?;
    let before = scrape(&v).await?;
    let body = c.chat_body(&group, c.tag(), "Say hello in five words.");
    let r = c.router.chat(&body).await?;
    r.expect_status(200)?;
    let reply = r.json_or_err()?;
    let content = shape::chat_completion(reply)?;
    anyhow::ensure!(!content.trim().is_empty(), "empty reply from {group}");
    let (prompt, completion, _) = shape::usage(&reply["usage"])?;
    let served = served_by(&c, &group, r.router().model_id)?;
    reached_vllm(&v, &before, prompt, completion).await?;
    counted(&c, &trace_of(&body)?, &served, Tokens::new(prompt, completion)).await
}

async fn router_streaming(c: Ctx, group: String) -> anyhow::Result<()> {
    let v = vllm(&c)?;
    let before = scrape(&v).await?;
    let mut body = c.chat_body(&group, c.tag(), "Stream a short greeting.");
    body["stream_options"] = json!({"include_usage": true});
    let s = c.router.chat_stream(&body).await?;
    let ttft = streamed(&s)?;
    c.observe("vllm_router_ttft_ms", ms(ttft));
    let usage = s.usage().expect("checked by streamed");
    let (prompt, completion, _) = shape::usage(usage)?;
    let served = served_by(&c, &group, RouterHeaders::from(&s.headers).model_id)?;
    reached_vllm(&v, &before, prompt, completion).await?;
    counted(&c, &trace_of(&body)?, &served, Tokens::new(prompt, completion)).await
}

/// A streamed reply checked whole — 200, chunks, `[DONE]`, content, a usage chunk with
/// completion tokens — and its time to the first chunk.
fn streamed(s: &crate::client::StreamReply) -> anyhow::Result<Duration> {
    s.expect_ok()?;
    anyhow::ensure!(
        s.done,
        "{}: stream ended without data: [DONE] after {} chunks",
        s.url,
        s.chunks.len()
    );
    for (i, ch) in s.chunks.iter().enumerate() {
        let obj = ch.get("object").and_then(Value::as_str);
        anyhow::ensure!(
            obj == Some("chat.completion.chunk"),
            "{}: chunk {i} has object {obj:?}",
            s.url
        );
    }
    anyhow::ensure!(!s.content().is_empty(), "{}: the stream carried no content", s.url);
    let usage = s
        .usage()
        .ok_or_else(|| anyhow::anyhow!("{}: include_usage was set but no chunk carried usage", s.url))?;
    let (_, completion, _) = shape::usage(usage)?;
    anyhow::ensure!(completion > 0, "{}: streamed usage has 0 completion tokens", s.url);
    let ttft = s
        .ttft
        .ok_or_else(|| anyhow::anyhow!("{}: no time to first chunk", s.url))?;
    anyhow::ensure!(
        ttft <= s.latency,
        "{}: first chunk after {ttft:?}, later than the whole stream ({:?})",
        s.url,
        s.latency
    );
    Ok(ttft)
}

/// The deployment the router says served, one of the group's.
fn served_by(c: &Ctx, group: &str, served: Option<String>) -> anyhow::Result<String> {
    let served = served.ok_or_else(|| anyhow::anyhow!("the router's reply has no x-litellm-model-id"))?;
    let members = ids_of(&c.config, group);
    anyhow::ensure!(
        members.contains(&served),
        "{group} was served by deployment {served}, not one of {members:?}"
    );
    Ok(served)
}

/// The request went to vLLM itself, not a stand-in: its counters grew by the usage reported.
async fn reached_vllm(v: &RouterClient, before: &Scrape, prompt: u64, completion: u64) -> anyhow::Result<()> {
    settle(v, |a| {
        a.grew(before, PROMPT) >= prompt as f64 && a.grew(before, GENERATION) >= completion as f64
    })
    .await
    .map(|_| ())
    .map_err(|a| {
        anyhow::anyhow!(
            "the router reported {prompt} prompt and {completion} completion tokens, but vLLM's \
             counters grew by {} and {} within {}s: the request did not reach vLLM",
            a.grew(before, PROMPT),
            a.grew(before, GENERATION),
            METRICS_SETTLE.as_secs()
        )
    })
}

/// The router's logging payload counts what vLLM reported, for the deployment that served,
/// at the price table's cost; recorded in the run's ledger.
async fn counted(c: &Ctx, trace: &Tag, served: &str, tokens: Tokens) -> anyhow::Result<()> {
    let rec = c
        .sink()?
        .wait_for_where(trace, LoggingPayload::is_success, 1, FLUSH)
        .await?
        .swap_remove(0);
    anyhow::ensure!(
        rec.prompt_tokens == Some(tokens.prompt) && rec.completion_tokens == Some(tokens.completion),
        "the router logged {:?} prompt and {:?} completion tokens; vLLM reported {} and {}",
        rec.prompt_tokens,
        rec.completion_tokens,
        tokens.prompt,
        tokens.completion
    );
    anyhow::ensure!(
        rec.model_id.as_deref() == Some(served),
        "the router logged deployment {:?}, its reply named {served}",
        rec.model_id
    );
    let expected = c.prices.cost(served, tokens);
    if let Some(want) = expected {
        let got = rec
            .response_cost
            .ok_or_else(|| anyhow::anyhow!("the router logged no response_cost for priced deployment {served}"))?;
        anyhow::ensure!(
            c.prices.agrees(got, want),
            "the router billed {got:e} for {} + {} tokens on {served}; the price table says {want:e}",
            tokens.prompt,
            tokens.completion
        );
    }
    c.bill(Entry {
        case: c.case.clone(),
        request: trace.to_string(),
        tenant: c.tag().to_string(),
        deployment: served.to_owned(),
        prompt_tokens: tokens.prompt,
        completion_tokens: tokens.completion,
        expected_cost: expected.unwrap_or(0.0),
        router_cost: rec.response_cost,
    });
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One read of vLLM's `/metrics`: Prometheus text 0.0.4 from vLLM (or OpenMetrics from the
/// simulator standing in for it), parsed as a scraper parses it.
#[derive(Debug, Default)]
struct Scrape(Exposition);

impl Scrape {
    /// A text that does not parse is an error naming its line: a scraper would refuse it too.
    fn parse(text: &str) -> anyhow::Result<Self> {
        exposition::parse(text)
            .map(Self)
            .map_err(|e| anyhow::anyhow!("vLLM's /metrics does not parse as Prometheus text: {e}"))
    }

    /// The sum over every series of the sample `name` (one per label set), `None` when it has
    /// none.
    fn sum(&self, name: &str) -> Option<f64> {
        self.0.samples(name).map(|s| s.value).reduce(|a, b| a + b)
    }

    /// How much `name` grew since `before` (a series missing before counts from 0).
    fn grew(&self, before: &Scrape, name: &str) -> f64 {
        self.sum(name).unwrap_or(0.0) - before.sum(name).unwrap_or(0.0)
    }

    fn require(&self, names: &[&str]) -> anyhow::Result<()> {
        let missing: Vec<&str> = names.iter().copied().filter(|n| self.sum(n).is_none()).collect();
        anyhow::ensure!(
            missing.is_empty(),
            "vLLM's /metrics has no {missing:?}: a vLLM whose metric names differ from the ones \
             gauntlet (and the simulator) expect"
        );
        Ok(())
    }
}

async fn scrape(v: &RouterClient) -> anyhow::Result<Scrape> {
    let r = v.get("/metrics").await?;
    r.expect_status(200)?;
    Scrape::parse(&r.text).map_err(|e| anyhow::anyhow!("{}: {e}", r.url))
}

/// Scrapes until `ok` holds, bounded by [`METRICS_SETTLE`]; the last scrape either way.
async fn settle(v: &RouterClient, ok: impl Fn(&Scrape) -> bool) -> Result<Scrape, Scrape> {
    let start = Instant::now();
    loop {
        let s = scrape(v).await.unwrap_or_default();
        if ok(&s) {
            return Ok(s);
        }
        if start.elapsed() >= METRICS_SETTLE {
            return Err(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RouterConfig;
    use crate::runner::context::CaseResults;
    use crate::stack::manifest::Manifest;

    fn plan(embedded: bool, available: Vec<Role>) -> Plan {
        let manifest = Manifest::builtin().unwrap();
        let config = RouterConfig::from_document(&manifest.router_config.doc).unwrap();
        Plan {
            manifest,
            config,
            available,
            require_all: true,
            embedded,
        }
    }

    /// Runs a case's closure on a context that reaches nothing.
    fn run(case: &Case) -> anyhow::Result<()> {
        let m = Manifest::builtin().unwrap();
        let cfg = Arc::new(RouterConfig::from_document(&m.router_config.doc).unwrap());
        let prices = Arc::new(crate::ledger::prices::PriceTable::from_config(&cfg, &m.ledger));
        let ctx = Ctx::new(
            &case.name,
            Arc::default(),
            cfg,
            prices,
            "http://127.0.0.1:9",
            Arc::new(CaseResults::default()),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on((case.run)(ctx))
    }

    #[test]
    fn held_cases_are_ignored_with_the_reason_or_fail_when_required() {
        let p = plan(true, Role::ALL.to_vec());
        let case = || Case::new("gpu::x", |_| async { Ok(()) }).needs(&[Role::Vllm]);
        let ignored = hold(case(), gpu::NO_GPU, false);
        assert_eq!(ignored.ignored.as_deref(), Some(gpu::NO_GPU));
        assert!(ignored.needs.is_empty(), "an ignored GPU case must start no vLLM");
        // Forced to run (--include-ignored) it fails with the reason, not by starting vLLM.
        assert_eq!(run(&ignored).unwrap_err().to_string(), gpu::NO_GPU);
        let failing = hold(case(), gpu::NO_GPU, true);
        assert!(failing.ignored.is_none() && failing.needs.is_empty());
        let err = run(&failing).unwrap_err().to_string();
        assert_eq!(err, format!("GAUNTLET_REQUIRE=gpu: {}", gpu::NO_GPU));
        // The availability gate does not undo either: no role is missing for a held case.
        let gated = crate::runner::registry::gate(&p, vec![ignored, failing]);
        assert_eq!(gated[0].ignored.as_deref(), Some(gpu::NO_GPU));
        assert!(gated[1].ignored.is_none());
    }

    #[test]
    fn every_gpu_case_is_registered_from_the_manifest_and_held_where_it_cannot_run() {
        // A bare router: the lane is held whatever the machine has.
        let p = plan(false, vec![Role::Router]);
        let cases = cases(&p);
        let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "gpu::vllm::health",
                "gpu::vllm::model_listed",
                "gpu::vllm::metrics_move",
                "gpu::vllm::ttft_measured",
                "gpu::router::chat",
                "gpu::router::streaming",
            ]
        );
        // Held for the lane, even under GAUNTLET_REQUIRE=all (require_all is set in `plan`).
        for c in &cases {
            let why = c.ignored.as_deref().unwrap_or_default();
            assert!(why.starts_with("needs the vllm service"), "{}: {why:?}", c.name);
            assert!(c.needs.is_empty());
        }
        // Embedded on this machine: held exactly when no GPU is found, with that reason.
        let p = plan(true, Role::ALL.to_vec());
        let embedded = super::cases(&p);
        if !gpu::nvidia_driver_present() {
            for c in &embedded {
                let why = c.ignored.as_deref().unwrap_or_default();
                assert!(why.starts_with(gpu::NO_GPU), "{}: {why:?}", c.name);
            }
        }
        // Router cases run only on a config with the group; the direct ones need none.
        let mut p = plan(false, Role::ALL.to_vec());
        p.manifest.gpu.as_mut().unwrap().group = "no-such-group".into();
        let cases = super::cases(&p);
        let reason = |n: &str| cases.iter().find(|c| c.name == n).unwrap().ignored.clone();
        assert_eq!(reason("gpu::vllm::health"), None);
        assert!(
            reason("gpu::router::chat")
                .unwrap()
                .contains("no model group 'no-such-group'")
        );
        // A manifest without the lane registers none.
        let mut p = plan(true, Role::ALL.to_vec());
        p.manifest.services.remove("vllm");
        assert!(super::cases(&p).is_empty());
    }

    #[test]
    fn scrapes_read_vllm_metrics() {
        // vLLM's own Prometheus text, and one without TYPE lines (its samples untyped).
        let s = Scrape::parse(exposition::VLLM_PROMETHEUS_TEXT).unwrap();
        assert_eq!(s.sum(RUNNING), Some(0.0));
        assert_eq!(s.sum(PROMPT), Some(120.0));
        assert_eq!(s.sum(GENERATION), Some(40.0));
        assert_eq!(s.sum(SUCCESS), Some(5.0));
        assert_eq!(s.sum(TTFT_COUNT), Some(5.0));
        assert_eq!(s.sum(TTFT_SUM), Some(0.249));
        s.require(&[RUNNING, PROMPT, GENERATION, SUCCESS, TTFT_COUNT]).unwrap();
        let later = Scrape::parse("vllm:prompt_tokens_total{a=\"b\"} 150\nprocess_open_fds 12\n").unwrap();
        assert_eq!(later.grew(&s, PROMPT), 30.0);
        assert_eq!(later.grew(&s, GENERATION), -40.0);
        assert_eq!(later.sum("process_open_fds"), Some(12.0));
        let err = later.require(&[PROMPT, GENERATION]).unwrap_err().to_string();
        assert!(err.contains("vllm:generation_tokens_total"), "{err}");
        // A line that does not parse fails the scrape, naming it.
        let err = Scrape::parse("vllm:prompt_tokens_total 1\nbroken{line 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("broken{line 1"), "{err}");
    }

    /// The simulator standing in for vLLM serves OpenMetrics: the same sample names read.
    #[test]
    fn scrapes_read_the_simulators_metrics() {
        let state = crate::sim::state::State::new(0, vec![crate::sim::DeploymentSpec::named("default")]);
        let d = state.deployment("default").unwrap();
        d.metrics
            .prompt_tokens
            .fetch_add(12, std::sync::atomic::Ordering::Relaxed);
        d.metrics.success.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        d.metrics.ttft.observe(0.25);
        let s = Scrape::parse(&crate::sim::metrics::text(vec![d]).unwrap()).unwrap();
        s.require(&[RUNNING, PROMPT, GENERATION, SUCCESS, TTFT_COUNT, TTFT_SUM])
            .unwrap();
        assert_eq!(s.sum(PROMPT), Some(12.0));
        assert_eq!(s.sum(SUCCESS), Some(1.0));
        assert_eq!((s.sum(TTFT_COUNT), s.sum(TTFT_SUM)), (Some(1.0), Some(0.25)));
    }
}
