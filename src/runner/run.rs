//! `gauntlet test`: parse libtest arguments, derive the cases, bring up (or attach to) the
//! stack only if a selected case needs it, run the cases through libtest-mimic, report, and
//! tear down — on success, failure, panic or signal.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use clap::Parser as _;
use libtest_mimic::{Arguments, Trial};

use super::capture;
use super::registry::{Case, Plan};
use super::report::{self, CaseRecord, Recorder, Status, Summary};
use super::target::{Target, external_key, target_from_env};
use super::trial::Live;
use crate::config::RouterConfig;
use crate::error::{RunError, exit};
use crate::ledger::prices::PriceTable;
use crate::stack::manifest::Manifest;
use crate::stack::role::Role;
use crate::stack::{self, Control, Endpoints, Stack};

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
    if let Err(e) = check_args(&args) {
        eprintln!("gauntlet: error: {e}");
        return ExitCode::from(exit::USAGE);
    }
    // Orphans of our services (a shell's background job, a forked worker) become ours to
    // reap, not PID 1's: a stopped process group is gone when we have reaped it, not when a
    // busy init gets round to it.
    // SAFETY: prctl on our own process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
    }
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gauntlet: error: {}", crate::redact::redact(&format!("{e:#}")));
            crate::error::exit_code_of(&e)
        }
    }
}

/// libtest arguments libtest-mimic accepts but cannot run with: refused before anything starts.
fn check_args(args: &Arguments) -> Result<(), RunError> {
    if args.test_threads == Some(0) {
        return Err(RunError::usage(
            "--test-threads 0: at least one thread must run the cases",
        ));
    }
    if let Some(log) = &args.logfile {
        let dir = std::path::Path::new(log).parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(d) = dir.filter(|d| !d.is_dir()) {
            return Err(RunError::usage(format!(
                "--logfile {log}: the folder {} does not exist",
                d.display()
            )));
        }
    }
    Ok(())
}

/// Cases spend their time waiting on the stack, not computing: without `--test-threads`,
/// run this many at once (libtest's default, one per core, would serialize a 2-core CI box),
/// plus a thread per chain of exclusive cases for the one queued behind the running one
/// (`runner::schedule`). More at once slows the one LiteLLM worker down more than it gains on
/// a loaded 2-core box (seen with 16: the timeout cases 50% longer, perf::overhead's P99 past
/// its budget).
const DEFAULT_TEST_THREADS: usize = 8;

fn run(mut args: Arguments) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339();
    let (manifest, config, prices) = load_config()?;
    let (target, router_override) = target_from_env()?;
    let available = target.roles(&manifest);
    let plan = Plan {
        manifest,
        config,
        available,
        require_all: super::registry::Require::from_env()?.all,
        embedded: matches!(target, Target::Embedded),
    };
    let cases = crate::suites::all(&plan);
    let shared: Arc<OnceLock<Live>> = Arc::new(OnceLock::new());
    let recorder = Arc::new(Recorder::default());
    let trials: Vec<Trial> = cases
        .iter()
        .map(|c| super::trial::trial(c, &shared, &recorder))
        .collect();
    if args.list {
        let _listed = libtest_mimic::run(&args, trials);
        return Ok(ExitCode::SUCCESS);
    }
    let runs: Vec<bool> = trials
        .iter()
        .map(|t| !args.is_filtered_out(t) && !args.is_ignored(t))
        .collect();
    let selected: Vec<&Case> = cases.iter().zip(&runs).filter(|(_, r)| **r).map(|(c, _)| c).collect();
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
    // The longest path first (`runner::schedule`), estimated from the last run's times.
    let history = super::schedule::history(&artifacts.join("summary.json"));
    let (trials, threads) = super::schedule::arrange(
        &cases,
        trials,
        &runs,
        |g| plan.config.can_cool_down(g),
        &history,
        (args.test_threads, DEFAULT_TEST_THREADS),
    );
    args.test_threads = Some(threads);
    let teardown = stack::Teardown::default();
    super::signals::install(&rt, teardown.clone());
    let Up { stack, boot, endpoints } = bring_up(&target, &plan, &selected, &rt, &teardown)?;
    let mut stack = stack;
    let router_url = router_override
        .or_else(|| endpoints.router_url().map(str::to_owned))
        .unwrap_or_default();
    let mut endpoints = endpoints;
    if !selected.is_empty() && !router_url.is_empty() {
        let key = endpoints.master_key.clone();
        endpoints.router_version = rt.block_on(super::target::check_router(&router_url, key.as_deref(), &target));
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
    let _ = shared.set(Live {
        endpoints: Arc::new(endpoints.clone()),
        router_url,
        config: Arc::new(plan.config.clone()),
        prices: Arc::new(prices),
        locks,
        rt: rt.handle().clone(),
        control: stack.clone(),
        started,
    });

    let conclusion = libtest_mimic::run(&args, trials);

    let failed = conclusion.has_failed();
    let (records, billed) = recorder.take();
    let logs = match (&stack, &target) {
        (Some(s), _) if failed => s.lock_blocking().save_logs(&artifacts),
        (None, Target::Attached(..)) if failed => stack::save_logs(&endpoints, &artifacts),
        _ => Vec::new(),
    };
    let summary = Summary {
        schema_version: report::SUMMARY_SCHEMA_VERSION,
        gauntlet_version: env!("CARGO_PKG_VERSION"),
        started_at,
        wall_time_s: started.elapsed().as_secs_f64(),
        target: match (&target, endpoints.backend) {
            (Target::Embedded, stack::BackendKind::Docker) => format!("{} (docker backend)", target.describe()),
            _ => target.describe(),
        },
        router_version: endpoints.router_version.clone(),
        stack_digest: stack_digest(&plan),
        boot: boot
            .iter()
            .map(|(s, d)| report::BootTime {
                service: s.clone(),
                seconds: d.as_secs_f64(),
            })
            .collect(),
        totals: Default::default(),
        longest_chain: None,
        cases: with_ignored(records, &cases, &args),
        logs,
    };
    write_reports(summary, filtered_out, &artifacts, &prices_currency, &billed);
    if let Some(s) = stack.take() {
        rt.block_on(async { s.lock().await.stop().await });
    }
    if endpoints.locks.is_none() {
        let _ = std::fs::remove_dir_all(&lock_dir);
    }
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    Ok(if failed {
        ExitCode::from(exit::TEST_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}

/// The records of the cases that ran, plus one per ignored case (which never ran a closure)
/// with its reason, sorted by name.
fn with_ignored(mut records: Vec<CaseRecord>, cases: &[Case], args: &Arguments) -> Vec<CaseRecord> {
    for c in cases {
        if !is_filtered(args, c) && !records.iter().any(|r| r.name == c.name) {
            records.push(CaseRecord {
                name: c.name.clone(),
                suite: c.suite().to_owned(),
                status: Status::Ignored,
                duration_s: 0.0,
                lock_wait_s: 0.0,
                started_s: None,
                holds: vec![],
                message: c.ignored.clone(),
                output: vec![],
                observations: vec![],
            });
        }
    }
    records.sort_by(|a, b| a.name.cmp(&b.name));
    records
}

/// `summary.json`, `junit.xml`, the ledger report and the terminal summary. A report that
/// cannot be written is said so, and the run goes on to tear down.
fn write_reports(
    mut summary: Summary,
    filtered_out: u64,
    artifacts: &std::path::Path,
    currency: &str,
    billed: &[crate::ledger::book::Entry],
) {
    summary.totals = Summary::totals_of(&summary.cases, filtered_out);
    summary.longest_chain = report::Chain::longest(&summary.cases);
    if let Err(e) = report::write_files(artifacts, &summary) {
        eprintln!("gauntlet: could not write reports to {}: {e}", artifacts.display());
    }
    report::print_terminal(&summary, artifacts, std::io::stderr().is_terminal());
    match crate::ledger::book::write(artifacts, currency, billed) {
        Ok(Some((_, table))) => eprint!("{table}"),
        Ok(None) => {}
        Err(e) => eprintln!("gauntlet: could not write the ledger report: {e}"),
    }
}

fn is_filtered(args: &Arguments, c: &Case) -> bool {
    let t = Trial::test(c.name.clone(), || Ok(()));
    args.is_filtered_out(&t)
}

fn stack_digest(plan: &Plan) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(plan.manifest.router_config.text.as_bytes());
    h.update(crate::stack::litellm::LOCK.as_bytes());
    hex::encode(h.finalize())[..16].to_owned()
}

/// The stack a run's cases talk to, and what started it.
struct Up {
    /// Started by this run (stopped at its end); `None` when attached or external.
    stack: Option<Control>,
    boot: Vec<(String, std::time::Duration)>,
    endpoints: Endpoints,
}

/// Starts the services the selected cases need (embedded), or takes the endpoints of an
/// attached stack or a bare router. Nothing starts when no case is selected.
fn bring_up(
    target: &Target,
    plan: &Plan,
    selected: &[&Case],
    rt: &tokio::runtime::Runtime,
    teardown: &stack::Teardown,
) -> anyhow::Result<Up> {
    let mut stack: Option<Control> = None;
    let mut boot = Vec::new();
    let endpoints = match target {
        Target::Embedded if !selected.is_empty() => {
            let mut wanted = vec![plan.manifest.stack.router.clone()];
            wanted.extend(plan.manifest.default_services());
            for c in selected {
                wanted.extend(
                    c.needs
                        .iter()
                        .filter_map(|r| plan.manifest.service_with(*r))
                        .map(str::to_owned),
                );
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
                teardown: teardown.clone(),
            }));
            pb.finish_and_clear();
            let s = s?;
            boot = s.boot.clone();
            let ep = s.endpoints.clone();
            let health = plan
                .manifest
                .services
                .iter()
                .map(|(n, spec)| (n.clone(), spec.health.clone()))
                .collect();
            stack = Some(Control::new(s, health));
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
                    container: None,
                },
            )]
            .into(),
            router: plan.manifest.stack.router.clone(),
            roles: [(Role::Router, plan.manifest.stack.router.clone())].into(),
            master_key: external_key(),
            ..Default::default()
        },
    };
    Ok(Up { stack, boot, endpoints })
}
