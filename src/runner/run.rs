//! `gauntlet test`: parse libtest arguments, derive the cases, bring up (or attach to) the
//! stack only if a selected case needs it, run the cases through libtest-mimic, report, and
//! tear down — on success, failure, panic or signal.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use clap::Parser as _;
use libtest_mimic::{Arguments, Completion, Failed, Trial};

use super::capture::{self, Buffer};
use super::context::Ctx;
use super::registry::{Case, Plan};
use super::report::{self, CaseRecord, Recorder, Status, Summary};
use crate::config::RouterConfig;
use crate::error::{RunError, exit};
use crate::ledger::prices::PriceTable;
use crate::stack::manifest::Manifest;
use crate::stack::{self, Endpoints, Stack};

/// Where the run's stack comes from.
#[derive(Debug, Clone)]
pub enum Target {
    /// Started by this run from the manifest (the default).
    Embedded,
    /// An existing stack from `GAUNTLET_STACK=<state file>`.
    Attached(PathBuf, Box<Endpoints>),
    /// A bare router at `ROUTER_URL` (no simulator, no sink).
    External(String),
}

impl Target {
    pub fn describe(&self) -> String {
        match self {
            Self::Embedded => "embedded stack".into(),
            Self::Attached(p, _) => format!("stack {}", p.display()),
            Self::External(u) => format!("router {u}"),
        }
    }
}

/// Reads `GAUNTLET_STACK` and `ROUTER_URL`.
pub fn target_from_env() -> Result<(Target, Option<String>), RunError> {
    let router_url = std::env::var("ROUTER_URL").ok().filter(|s| !s.trim().is_empty());
    if let Some(u) = &router_url {
        validate_url("ROUTER_URL", u)?;
    }
    let t = match std::env::var_os("GAUNTLET_STACK").filter(|s| !s.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            let ep = stack::state::attach(&p)?;
            Target::Attached(p, Box::new(ep))
        }
        None => match &router_url {
            Some(u) => Target::External(u.clone()),
            None => Target::Embedded,
        },
    };
    Ok((t, router_url))
}

fn validate_url(var: &str, u: &str) -> Result<(), RunError> {
    let ok = (u.starts_with("http://") || u.starts_with("https://"))
        && reqwest::Url::parse(u).is_ok_and(|p| p.host_str().is_some());
    if ok {
        Ok(())
    } else {
        Err(RunError::usage(format!(
            "{var}={u:?} is not an http(s) URL (e.g. {var}=http://localhost:4000)"
        )))
    }
}

/// `GAUNTLET_ARTIFACTS`, else `target/gauntlet`: where reports, logs and a detached stack's
/// state file go.
pub fn artifacts_base() -> PathBuf {
    std::env::var_os("GAUNTLET_ARTIFACTS")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/gauntlet"))
}

/// The artifacts folder of this run.
pub fn artifacts_dir() -> PathBuf {
    let base = artifacts_base();
    // nextest runs each case in its own process: give each its own folder.
    match std::env::var("NEXTEST_RUN_ID") {
        Ok(id) if !id.is_empty() => base.join(format!("nextest-{id}")).join(std::process::id().to_string()),
        _ => base,
    }
}

/// Loads the manifest and router config (`GAUNTLET_ROUTER_CONFIG` overrides the manifest's).
pub fn load_config() -> Result<(Manifest, RouterConfig, PriceTable), RunError> {
    let mut manifest = Manifest::from_env()?;
    if let Some(p) = std::env::var_os("GAUNTLET_ROUTER_CONFIG").filter(|s| !s.is_empty()) {
        manifest.router_config = crate::stack::manifest::RouterSource::load(std::path::Path::new(&p))?;
    }
    let config = RouterConfig::from_document(&manifest.router_config.doc)?;
    let prices = PriceTable::from_config(&config, &manifest.ledger);
    Ok((manifest, config, prices))
}

/// Everything a trial needs once the stack is up.
struct Shared {
    endpoints: Arc<Endpoints>,
    router_url: String,
    config: Arc<RouterConfig>,
    prices: Arc<PriceTable>,
    locks: super::locks::Locks,
    rt: tokio::runtime::Handle,
}

pub fn main(argv: Vec<String>) -> ExitCode {
    capture::install();
    let args = match Arguments::try_parse_from(&argv) {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gauntlet: error: {}", crate::redact::redact(&format!("{e:#}")));
            crate::error::exit_code_of(&e)
        }
    }
}

/// Cases spend their time waiting on the stack, not computing: without `--test-threads`,
/// run this many at once (libtest's default, one per core, would serialize a 2-core CI box).
const DEFAULT_TEST_THREADS: usize = 8;

fn run(mut args: Arguments) -> anyhow::Result<ExitCode> {
    if args.test_threads.is_none() {
        args.test_threads = Some(DEFAULT_TEST_THREADS);
    }
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339();
    let (manifest, config, prices) = load_config()?;
    let (target, router_override) = target_from_env()?;
    let available = match &target {
        Target::Embedded => manifest.services.keys().cloned().collect(),
        Target::Attached(_, ep) => ep.services.keys().cloned().collect(),
        Target::External(_) => vec![manifest.stack.router.clone()],
    };
    let plan = Plan {
        manifest,
        config,
        available,
        require_all: std::env::var("GAUNTLET_REQUIRE").is_ok_and(|v| v == "all"),
    };
    let cases = crate::suites::all(&plan);
    let shared: Arc<OnceLock<Shared>> = Arc::new(OnceLock::new());
    let recorder = Arc::new(Recorder::default());
    let trials: Vec<Trial> = cases.iter().map(|c| trial(c, &shared, &recorder)).collect();
    if args.list {
        let _listed = libtest_mimic::run(&args, trials);
        return Ok(ExitCode::SUCCESS);
    }
    let selected: Vec<&Case> = cases
        .iter()
        .zip(&trials)
        .filter(|(_, t)| !args.is_filtered_out(t) && !args.is_ignored(t))
        .map(|(c, _)| c)
        .collect();
    let filtered_out = (cases.len()
        - cases
            .iter()
            .zip(&trials)
            .filter(|(_, t)| !args.is_filtered_out(t))
            .count()) as u64;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()?;
    let artifacts = artifacts_dir();
    super::signals::install(&rt);
    let mut stack: Option<Stack> = None;
    let mut boot = Vec::new();
    let endpoints = match &target {
        Target::Embedded if !selected.is_empty() => {
            let mut wanted = vec![plan.manifest.stack.router.clone()];
            wanted.extend(plan.manifest.default_services());
            for c in &selected {
                wanted.extend(c.needs.iter().map(|s| s.to_string()));
            }
            wanted.sort();
            wanted.dedup();
            let health_timeout = stack::health::health_timeout()?;
            let pb = super::progress::spinner(&format!(
                "starting the stack: {}",
                plan.manifest.closure(&wanted).join(", ")
            ));
            let s = rt.block_on(Stack::start(stack::StartOptions {
                manifest: &plan.manifest,
                router_config: &plan.config,
                services: wanted,
                health_timeout,
            }));
            pb.finish_and_clear();
            let s = s?;
            boot = s.boot.clone();
            let ep = s.endpoints.clone();
            super::signals::set_private_stack_dirs(&s);
            stack = Some(s);
            ep
        }
        Target::Embedded => Endpoints::default(),
        Target::Attached(_, ep) => (**ep).clone(),
        Target::External(url) => Endpoints {
            services: [(
                plan.manifest.stack.router.clone(),
                stack::Endpoint {
                    url: url.clone(),
                    host: String::new(),
                    port: 0,
                    pid: None,
                },
            )]
            .into(),
            router: plan.manifest.stack.router.clone(),
            master_key: external_key(),
            ..Default::default()
        },
    };
    let router_url = router_override
        .or_else(|| endpoints.router_url().map(str::to_owned))
        .unwrap_or_default();
    let mut endpoints = endpoints;
    if !selected.is_empty() && !router_url.is_empty() {
        endpoints.router_version = rt.block_on(check_router(&router_url, &target));
    }
    let prices_currency = prices.currency.clone();
    // A stack's cases share its lock folder (nextest's processes too); a bare router's get one
    // for this run.
    let lock_dir = endpoints
        .locks
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("gauntlet-locks-{}", std::process::id())));
    let locks = super::locks::Locks::new(&lock_dir)
        .map_err(|e| RunError::stack(format!("cannot create the lock folder {}: {e}", lock_dir.display())))?;
    let _ = shared.set(Shared {
        endpoints: Arc::new(endpoints.clone()),
        router_url,
        config: Arc::new(plan.config.clone()),
        prices: Arc::new(prices),
        locks,
        rt: rt.handle().clone(),
    });

    let conclusion = libtest_mimic::run(&args, trials);

    let mut records = recorder.take();
    // Ignored cases never ran a closure: record them with their reason.
    for c in &cases {
        if !is_filtered(&args, c) && !records.iter().any(|r| r.name == c.name) {
            records.push(CaseRecord {
                name: c.name.clone(),
                suite: c.suite().to_owned(),
                status: Status::Ignored,
                duration_s: 0.0,
                message: c.ignored.clone(),
                output: vec![],
                observations: vec![],
            });
        }
    }
    records.sort_by(|a, b| a.name.cmp(&b.name));
    let failed = conclusion.has_failed();
    let mut logs = Vec::new();
    if failed {
        if let Some(s) = &stack {
            logs = s.save_logs(&artifacts);
        } else if let Target::Attached(..) = target {
            logs = stack::save_logs(&endpoints, std::path::Path::new("/nonexistent"), &artifacts);
        }
    }
    let summary = Summary {
        schema_version: report::SUMMARY_SCHEMA_VERSION,
        gauntlet_version: env!("CARGO_PKG_VERSION"),
        started_at,
        wall_time_s: started.elapsed().as_secs_f64(),
        target: target.describe(),
        router_version: endpoints.router_version.clone(),
        stack_digest: stack_digest(&plan),
        boot: boot
            .iter()
            .map(|(s, d)| report::BootTime {
                service: s.clone(),
                seconds: d.as_secs_f64(),
            })
            .collect(),
        totals: Summary::totals_of(&records, filtered_out),
        cases: records,
        logs,
    };
    if let Err(e) = report::write_files(&artifacts, &summary) {
        eprintln!("gauntlet: could not write reports to {}: {e}", artifacts.display());
    }
    report::print_terminal(&summary, &artifacts, std::io::stderr().is_terminal());
    match crate::ledger::book::write(&artifacts, &prices_currency) {
        Ok(Some((_, table))) => eprint!("{table}"),
        Ok(None) => {}
        Err(e) => eprintln!("gauntlet: could not write the ledger report: {e}"),
    }
    if let Some(mut s) = stack.take() {
        rt.block_on(s.stop());
    }
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    Ok(if failed {
        ExitCode::from(exit::TEST_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

fn is_filtered(args: &Arguments, c: &Case) -> bool {
    let t = Trial::test(c.name.clone(), || Ok(()));
    args.is_filtered_out(&t)
}

/// The key for a bare `ROUTER_URL`: `ROUTER_API_KEY`, else `LITELLM_MASTER_KEY`.
fn external_key() -> Option<String> {
    let k = std::env::var("ROUTER_API_KEY")
        .or_else(|_| std::env::var("LITELLM_MASTER_KEY"))
        .ok()?;
    crate::redact::register(&k);
    Some(k)
}

/// Waits (bounded by HEALTH_TIMEOUT) for an attached or external router to answer its
/// readiness endpoint, and returns its version. A dead router or one answering garbage is
/// reported here once, instead of as every case failing the same way.
async fn check_router(url: &str, target: &Target) -> Option<String> {
    let http = reqwest::Client::new();
    let timeout = stack::health::health_timeout().unwrap_or(std::time::Duration::from_secs(60));
    let probe_url = format!("{}/health/readiness", url.trim_end_matches('/'));
    let last = std::sync::Mutex::new(None::<serde_json::Value>);
    let check = || async {
        let r = http
            .get(&probe_url)
            .timeout(std::time::Duration::from_secs(5))
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                let text = r.text().await.unwrap_or_default();
                match serde_json::from_str::<serde_json::Value>(&text) {
                    Ok(v) => {
                        *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(v);
                        Ok(())
                    }
                    Err(_) => Err(format!(
                        "answered 200 with a body that is not JSON: {}",
                        crate::client::excerpt(&text)
                    )),
                }
            }
            Ok(r) => Err(format!("answered {}", r.status())),
            Err(e) => Err(crate::client::error_chain(&e)),
        }
    };
    match stack::health::wait_until(timeout, check, || None).await {
        Ok(_) => {
            let v = last.lock().unwrap_or_else(|e| e.into_inner()).clone()?;
            v.get("litellm_version").and_then(|s| s.as_str()).map(str::to_owned)
        }
        Err(why) => {
            tracing::warn!("router {probe_url} ({}) is not ready: {why}", target.describe());
            eprintln!("gauntlet: warning: router readiness {probe_url}: {why}");
            None
        }
    }
}

fn stack_digest(plan: &Plan) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(plan.manifest.router_config.text.as_bytes());
    h.update(crate::stack::litellm::LOCK.as_bytes());
    hex::encode(h.finalize())[..16].to_owned()
}

/// Waits until no deployment of `groups` is cooling down (see `runner::locks`).
async fn drain(s: &Shared, groups: &[String]) -> anyhow::Result<()> {
    let ids: Vec<String> = groups
        .iter()
        .filter(|g| s.config.can_cool_down(g))
        .flat_map(|g| s.config.deployments_of(g))
        .map(|d| d.id.clone())
        .collect();
    let Some(redis) = s.endpoints.url("redis").filter(|_| !ids.is_empty()) else {
        return Ok(());
    };
    let longest = s
        .config
        .deployments
        .iter()
        .filter(|d| ids.contains(&d.id))
        .map(|d| d.cooldown_s)
        .fold(0.0, f64::max);
    let bound = std::time::Duration::from_secs_f64(longest + 10.0);
    let waited = super::locks::drain_cooldowns(redis, &ids, bound).await?;
    if !waited.is_zero() {
        tracing::debug!(ms = waited.as_millis() as u64, "waited for cooldowns to end");
    }
    Ok(())
}

/// Wraps a case as a libtest-mimic trial that records its outcome and captured output.
fn trial(case: &Case, shared: &Arc<OnceLock<Shared>>, recorder: &Arc<Recorder>) -> Trial {
    let name = case.name.clone();
    let run = case.run.clone();
    let shared = shared.clone();
    let recorder = recorder.clone();
    let ignored = case.ignored.clone();
    let suite = case.suite().to_owned();
    let claims = case.claims.clone();
    Trial::ignorable_test(case.name.clone(), move || {
        let t0 = Instant::now();
        let buf = Buffer::default();
        let result: Result<(), String> = match shared.get() {
            None => Err("the stack was not started for this case (internal error)".into()),
            Some(s) => {
                let ctx = Ctx::new(
                    &name,
                    s.endpoints.clone(),
                    s.config.clone(),
                    s.prices.clone(),
                    &s.router_url,
                );
                let span = capture::case_span(&name, &buf);
                let claims = claims.resolve(|g| s.config.can_cool_down(g));
                let waited = Instant::now();
                match s.locks.acquire(&claims) {
                    Err(e) => Err(format!("{e:#}")),
                    Ok(held) => {
                        if waited.elapsed() > std::time::Duration::from_millis(100) {
                            let _in = span.enter();
                            tracing::info!(
                                ms = waited.elapsed().as_millis() as u64,
                                groups = ?claims.owns,
                                "waited for other cases to let go of its groups"
                            );
                        }
                        let fut = (run)(ctx);
                        let guarded = tracing::Instrument::instrument(fut, span);
                        let r = match s.rt.block_on(s.rt.spawn(guarded)) {
                            Ok(Ok(())) => Ok(()),
                            Ok(Err(e)) => Err(crate::redact::redact(&format!("{e:#}"))),
                            Err(join) => Err(format!("case panicked: {join}")),
                        };
                        // Whatever cooldowns the case caused end before the groups are let go.
                        let drained = s.rt.block_on(drain(s, &claims.owns));
                        drop(held);
                        r.and(drained.map_err(|e| format!("{e:#}")))
                    }
                }
            }
        };
        let message = result.as_ref().err().cloned();
        recorder.push(CaseRecord {
            name: name.clone(),
            suite: suite.clone(),
            status: if result.is_ok() { Status::Passed } else { Status::Failed },
            duration_s: t0.elapsed().as_secs_f64(),
            message: message.clone(),
            output: buf.lines(),
            observations: super::report::take_observations(&name),
        });
        match result {
            Ok(()) => Ok(Completion::Completed),
            Err(m) => Err(Failed::from(m)),
        }
    })
    .with_ignored_flag(ignored.is_some())
}
