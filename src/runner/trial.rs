//! A case as a libtest-mimic trial: it takes the case's group locks, runs the case on the
//! run's tokio runtime inside a capturing span, drains the cooldowns it caused, and hands its
//! outcome, output, measurements and billed requests to the recorder.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use libtest_mimic::{Completion, Failed, Trial};

use super::capture::{self, Buffer};
use super::context::Ctx;
use super::registry::Case;
use super::report::{CaseRecord, Recorder, Status};
use crate::config::RouterConfig;
use crate::ledger::prices::PriceTable;
use crate::stack::Endpoints;
use crate::stack::role::Role;

/// Everything a trial needs once the stack is up.
pub struct Live {
    pub endpoints: Arc<Endpoints>,
    pub router_url: String,
    pub config: Arc<RouterConfig>,
    pub prices: Arc<PriceTable>,
    pub locks: super::locks::Locks,
    pub rt: tokio::runtime::Handle,
    /// The stack, when this run started it: what the chaos cases hurt.
    pub control: Option<crate::stack::Control>,
    /// When the run began: case records say when each case started from it.
    pub started: Instant,
}

/// Waits until no deployment of `groups` is cooling down (see `runner::locks`).
async fn drain(s: &Live, groups: &[String]) -> anyhow::Result<()> {
    let ids: Vec<String> = groups
        .iter()
        .filter(|g| s.config.can_cool_down(g))
        .flat_map(|g| s.config.deployments_of(g))
        .map(|d| d.id.clone())
        .collect();
    let Some(redis) = s.endpoints.url_of(Role::Redis).filter(|_| !ids.is_empty()) else {
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
pub fn trial(case: &Case, shared: &Arc<OnceLock<Live>>, recorder: &Arc<Recorder>) -> Trial {
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
        let results = Arc::new(super::context::CaseResults::default());
        let mut lock_wait = std::time::Duration::ZERO;
        let mut holds = Vec::new();
        let started_s = shared.get().map(|s| t0.duration_since(s.started).as_secs_f64());
        let result: Result<(), String> = match shared.get() {
            None => Err("the stack was not started for this case (internal error)".into()),
            Some(s) => {
                let ctx = Ctx::new(
                    &name,
                    s.endpoints.clone(),
                    s.config.clone(),
                    s.prices.clone(),
                    &s.router_url,
                    results.clone(),
                )
                .with_control(s.control.clone());
                let span = capture::case_span(&name, &buf);
                let claims = claims.resolve(|g| s.config.can_cool_down(g));
                holds = claims.owns.clone();
                let waited = Instant::now();
                match s.locks.acquire(&claims) {
                    Err(e) => Err(format!("{e:#}")),
                    Ok(held) => {
                        lock_wait = waited.elapsed();
                        if lock_wait > std::time::Duration::from_millis(100) {
                            let _in = span.enter();
                            tracing::info!(
                                ms = lock_wait.as_millis() as u64,
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
        let (observations, billed) = results.take();
        recorder.push(
            CaseRecord {
                name: name.clone(),
                suite: suite.clone(),
                status: if result.is_ok() { Status::Passed } else { Status::Failed },
                duration_s: t0.elapsed().as_secs_f64(),
                lock_wait_s: lock_wait.as_secs_f64(),
                started_s,
                holds,
                message: message.clone(),
                output: buf.lines(),
                observations,
            },
            billed,
        );
        match result {
            Ok(()) => Ok(Completion::Completed),
            Err(m) => Err(Failed::from(m)),
        }
    })
    .with_ignored_flag(ignored.is_some())
}
