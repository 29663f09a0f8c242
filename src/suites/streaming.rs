//! Fallbacks for streamed requests (issue 13: LiteLLM users report fallbacks that do not fire
//! for `stream: true`, a 429 reaching the client — BerriAI/litellm#20870, #10972), derived from
//! the router's config like the non-streamed ones. For every general fallback chain, streamed:
//! - the primary fails before its first byte — 429, 500, 503, connection reset, no answer
//!   within its `stream_timeout` — or answers 200 and then sends no chunk within it → the
//!   client gets a whole stream from the group LiteLLM falls back to, and — where the router
//!   had sent nothing before falling back — headers naming the deployment that served (a
//!   known gap after a first-chunk timeout)
//! - the primary answers 200 with a body that is not a stream → the same (a known gap)
//! - the primary's stream breaks before any content → the same: nothing reached the client yet
//! - the primary's stream breaks after content reached the client → the client is told (an
//!   error event, no `[DONE]`, a broken connection), never handed a truncated answer that
//!   looks complete ([`StreamReply::looks_complete`])
//!
//! "A whole stream" is: 200, no error event, nothing broken, `[DONE]` at the end, a
//! `finish_reason`, and every word of the serving upstream call's reply (the simulator's
//! journal counts them). Evidence: the client's stream, the journal (who was called, in
//! which order, how each call ended) and the router's logging payloads in the sink.
//! The time limit on a streamed attempt is the deployment's `stream_timeout`
//! (`config::timeout::stream`), not its `timeout`.

use std::time::Duration;

use serde_json::json;

use super::support::{CHAIN_RPM, LONG_WAIT_S, calls, ids_of, path, sims_of, trace_of};
use crate::client::StreamReply;
use crate::config::{ChainKind, RouterConfig};
use crate::ledger::payload::LoggingPayload;
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, CaseFuture, Plan};
use crate::sim::{Behaviour, Fault, JournalEntry, Outcome, Rule, When};
use crate::stack::role::Role;
use crate::tag::Tag;

/// Slack on top of the configured timeouts: router overhead and scheduling on a busy CI box.
const MARGIN: Duration = Duration::from_secs(3);

/// Slack per attempt on top of a deployment's stream_timeout: the router's backoff before a
/// retry (~1.2 s seen) and scheduling on a loaded 2-core box.
const ATTEMPT_MARGIN: Duration = Duration::from_secs(3);

/// How long the router's logging payloads may take to reach the sink.
const SINK_WAIT: Duration = Duration::from_secs(30);

/// Events the simulator sends before it cuts a stream "mid-way": in every dialect that is
/// past the first content (OpenAI: the role chunk and four words; Anthropic: message_start,
/// content_block_start, ping and two text deltas) and short of the end of a 16-word reply.
const CUT_MID: u32 = 5;

/// Events before a cut that comes ahead of any content (OpenAI's role chunk, Anthropic's
/// message_start).
const CUT_BEFORE_CONTENT: u32 = 1;

/// What one chain's cases need to know, derived once.
#[derive(Clone)]
struct Route {
    primary: String,
    /// The group LiteLLM serves from when only the primary fails.
    served: String,
    /// Fallback hops LiteLLM reports for that (order levels of the primary count too).
    hops: usize,
    /// The longest stream_timeout of the primary's deployments, in seconds.
    stream_timeout: f64,
    /// Attempts LiteLLM may make on the primary for a timeout (its retries + 1).
    attempts: u32,
}

/// How the primary misbehaves.
#[derive(Clone, Debug)]
enum Trouble {
    /// A simulator fault (for every request carrying the case's tag).
    Fault(Fault),
    /// 200 and headers at once, then the first chunk after this long.
    SlowFirstChunk(Duration),
    /// The stream cut after this many events, sent [`PACE`] apart.
    PacedCut(u32),
}

/// Between the events of a stream that will be cut. A router reading late gets the last
/// events and the break in one read, and its HTTP client may drop those events for the
/// error (aiohttp raises a stored error before buffered data): seen under load, LiteLLM
/// then fell back as if nothing had come — right for what it had read, but no test of a
/// break after content. Paced, the first events are passed on before the break comes.
const PACE: Duration = Duration::from_millis(100);

impl Trouble {
    fn behaviour(&self) -> Behaviour {
        match self {
            Self::Fault(f) => Behaviour::fault(f.clone()),
            Self::SlowFirstChunk(d) => Behaviour {
                ttft_ms: Some(d.as_millis() as u64),
                ..Behaviour::default()
            },
            Self::PacedCut(n) => Behaviour {
                itl_ms: Some(PACE.as_millis() as u64),
                ..Behaviour::fault(Fault::CutStream { after_chunks: *n })
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Fault(f) => f.outcome().to_string(),
            Self::SlowFirstChunk(d) => format!("200, then no chunk for {}s", d.as_secs()),
            Self::PacedCut(n) => format!("cut after {n} events"),
        }
    }

    /// How the simulator journals a primary call under this trouble: a delayed stream is
    /// journaled as answered when the simulator starts it.
    fn outcome(&self) -> Outcome {
        match self {
            Self::Fault(f) => f.outcome(),
            Self::SlowFirstChunk(_) => Outcome::Ok,
            Self::PacedCut(n) => Outcome::Cut(*n),
        }
    }
}

type Run = fn(Ctx, Route) -> CaseFuture;

pub fn cases(plan: &Plan) -> Vec<Case> {
    let cfg = &plan.config;
    let mut out = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for chain in cfg.chains.iter().filter(|c| c.kind == ChainKind::General) {
        // LiteLLM uses the first entry for a group; later ones are dead config.
        if seen.iter().any(|p| p == chain.primary()) {
            continue;
        }
        seen.push(chain.primary().to_owned());
        let base = format!("streaming::{}", chain.name());
        let primary = chain.primary().to_owned();
        let walk = cfg.walk(&primary, std::slice::from_ref(&primary), ChainKind::General);
        let served = walk.served_by.clone().unwrap_or_default();
        let route = Route {
            primary: primary.clone(),
            served: served.clone(),
            hops: walk.steps.len().saturating_sub(1),
            stream_timeout: cfg
                .deployments_of(&primary)
                .iter()
                .map(|d| d.stream_timeout.seconds)
                .fold(0.0, f64::max),
            attempts: cfg.retries(&primary, "TimeoutError") + 1,
        };
        let gate = cfg
            .unusable(&primary, CHAIN_RPM)
            .or_else(|| cfg.unusable(&served, CHAIN_RPM))
            .or_else(|| {
                walk.served_by
                    .is_none()
                    .then(|| format!("LiteLLM would not fall back from {primary} at all (nothing left to try)"))
            });
        let long = long_wait(cfg, &primary, &route);
        // The waits the config gives: every attempt at a hanging primary takes its
        // stream_timeout, a late first chunk one stream_timeout, a 429 its Retry-After: 1.
        let cost = |what: &str| match what {
            "timeout" => Some(route.stream_timeout * f64::from(route.attempts) + 1.0),
            "first_chunk_timeout" => Some(route.stream_timeout + 0.5),
            "rate_limit" => Some(f64::from(cfg.retries(&primary, "RateLimitError")) + 0.5),
            _ => None,
        };
        let mut add = |what: &str, f: Run, extra: Option<String>| {
            let r = route.clone();
            let name = format!("{base}::{what}");
            let extra = extra.map(|e| e.replace("{name}", &name));
            let mut case = Case::new(name, move |c| f(c, r.clone()))
                .needs(&[Role::Simulator])
                .breaks(&[&primary])
                .uses(&[&served])
                .ignore_if(gate.clone().or(extra));
            if let Some(s) = cost(what) {
                case = case.cost(s);
            }
            out.push(case);
        };
        add(
            "rate_limit",
            |c, r| Box::pin(falls_back(c, r, Trouble::Fault(rate_limited()), true)),
            None,
        );
        add(
            "server_error_500",
            |c, r| Box::pin(falls_back(c, r, Trouble::Fault(Fault::status(500)), true)),
            None,
        );
        add(
            "unavailable_503",
            |c, r| Box::pin(falls_back(c, r, Trouble::Fault(Fault::status(503)), true)),
            None,
        );
        add(
            "connection_reset",
            |c, r| Box::pin(falls_back(c, r, Trouble::Fault(Fault::Reset), true)),
            None,
        );
        add(
            "timeout",
            |c, r| Box::pin(falls_back(c, r, Trouble::Fault(Fault::Hang), true)),
            long.clone(),
        );
        add(
            "first_chunk_timeout",
            |c, r| {
                Box::pin({
                    let t = slow_first_chunk(&r);
                    falls_back(c, r, t, false)
                })
            },
            long.clone(),
        );
        add(
            "first_chunk_timeout::headers_name_server",
            |c, r| {
                Box::pin({
                    let t = slow_first_chunk(&r);
                    falls_back(c, r, t, true)
                })
            },
            Some(
                "LiteLLM 1.100.5 names the primary's deployment in the headers of a stream the fallback \
                 served after the primary's first chunk timed out (seen on both chains of the default stack: the primary \
                 answered 200 and no chunk within its stream_timeout 2s, chat-backup served the whole stream \
                 2.0s in, and the headers said x-litellm-model-id: primary (region-b), \
                 x-litellm-attempted-fallbacks: 0); run it with `gauntlet --ignored --exact {name}`"
                    .to_owned(),
            ),
        );
        add(
            "malformed_json",
            |c, r| Box::pin(falls_back(c, r, Trouble::Fault(Fault::Malformed), true)),
            Some(
                "LiteLLM 1.100.5 turns a streamed call whose upstream answered 200 with a body that is not \
                 JSON into an empty stream that looks complete, with no fallback and no logging payload (seen on both \
                 chains of the default stack: one upstream call, primary(malformed); the client got 200, \
                 `data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],...}`, an empty \
                 chunk, `data: [DONE]`; the sink got nothing); run it with `gauntlet --ignored --exact {name}`"
                    .to_owned(),
            ),
        );
        add(
            "cut_before_content",
            |c, r| Box::pin(falls_back(c, r, Trouble::Fault(cut(CUT_BEFORE_CONTENT)), false)),
            None,
        );
        add("cut_mid_stream", |c, r| Box::pin(cut_mid_stream(c, r)), None);
    }
    out
}

fn rate_limited() -> Fault {
    Fault::Error {
        status: 429,
        retry_after: Some(1),
        message: None,
    }
}

fn cut(after_chunks: u32) -> Fault {
    Fault::CutStream { after_chunks }
}

/// A first chunk later than every attempt the router may make could wait for it: a router
/// that never gives up gets the primary's stream, late, and the case says so.
fn slow_first_chunk(r: &Route) -> Trouble {
    let per_attempt = Duration::from_secs_f64(r.stream_timeout) + ATTEMPT_MARGIN;
    Trouble::SlowFirstChunk(per_attempt * r.attempts * 2 + Duration::from_secs(10))
}

/// Why the timeout cases are opt-in, when the primary's stream_timeout makes them long.
fn long_wait(cfg: &RouterConfig, primary: &str, r: &Route) -> Option<String> {
    let t = cfg
        .deployments_of(primary)
        .iter()
        .map(|d| d.stream_timeout)
        .max_by(|a, b| a.seconds.total_cmp(&b.seconds))?;
    let total = t.seconds * f64::from(r.attempts);
    (total > LONG_WAIT_S).then(|| {
        format!(
            "{primary} gives each streamed attempt {t}, and LiteLLM may make {}: about {total:.0}s before it \
             falls back; run it with `gauntlet --ignored --exact {{name}}`",
            r.attempts
        )
    })
}

/// The client's bound on a case's one request: well past what the assertions allow, so a
/// slow router is reported with its evidence rather than as a client timeout.
fn client_bound(r: &Route, trouble: &Trouble) -> Duration {
    let per_attempt = Duration::from_secs_f64(r.stream_timeout) + ATTEMPT_MARGIN;
    let base = per_attempt * (r.attempts + 1) * 2 + Duration::from_secs(30);
    match trouble {
        Trouble::SlowFirstChunk(d) => base.max(*d + Duration::from_secs(30)),
        Trouble::Fault(_) | Trouble::PacedCut(_) => base,
    }
}

async fn install(c: &Ctx, group: &str, tag: &Tag, trouble: &Trouble) -> anyhow::Result<()> {
    let sim = c.sim()?;
    let rule = Rule {
        tag: Some(tag.clone()),
        when: When::ALWAYS,
        behaviour: trouble.behaviour(),
    };
    for d in sims_of(&c.config, group) {
        sim.add_rule(&d, &rule).await?;
    }
    Ok(())
}

/// A streamed request for the chain's primary, stamped with `tag`, asking for usage.
fn body(c: &Ctx, r: &Route, tag: &Tag, what: &str) -> serde_json::Value {
    let mut b = c.chat_body(&r.primary, tag, what);
    b["stream_options"] = json!({"include_usage": true});
    b
}

/// The primary misbehaves (`trouble`), streamed: the client must get a whole stream from
/// the group LiteLLM falls back to. `headers`: also hold the router's headers to naming the
/// deployment that served, and the hops.
async fn falls_back(c: Ctx, r: Route, trouble: Trouble, headers: bool) -> anyhow::Result<()> {
    let tag = c.tag().to_owned();
    install(&c, &r.primary, &tag, &trouble).await?;
    let body = body(&c, &r, &tag, "streamed fallback check");
    let s = c.router.chat_stream_to_end(&body, client_bound(&r, &trouble)).await?;
    let journal = calls(&c, &tag).await?;
    let served = assert_whole_stream_from_fallback(&c, &r, &s, &journal, &trouble)?;
    if headers {
        let h = crate::client::RouterHeaders::from(&s.headers);
        let ids = ids_of(&c.config, &r.served);
        anyhow::ensure!(
            h.model_id.as_ref().is_some_and(|id| ids.contains(id)),
            "the stream's x-litellm-model-id is {:?}, but {} (a deployment of {} {ids:?}) served it: {}",
            h.model_id,
            served.deployment,
            r.served,
            path(&journal)
        );
        if let Some(n) = h.attempted_fallbacks {
            anyhow::ensure!(
                n as usize == r.hops,
                "x-litellm-attempted-fallbacks is {n}, expected {} (the hops of LiteLLM's walk): {}",
                r.hops,
                path(&journal)
            );
        }
    }
    if matches!(trouble, Trouble::SlowFirstChunk(_) | Trouble::Fault(Fault::Hang)) {
        given_up_at_stream_timeout(&c, &r, &s, &journal)?;
    }
    // After a cut before any content LiteLLM 1.100.5 logs the fallback's success up to four
    // times, or not at all (seen in CI on the usage_limits fixture: 0 payloads in 30 s though
    // the client got nano's whole stream): the log is evidence only for the other faults.
    if !matches!(trouble, Trouble::Fault(Fault::CutStream { .. })) {
        logged_as_fallback(&c, &r, &body).await?;
    }
    tracing::info!(calls = %path(&journal), latency_ms = s.latency.as_millis() as u64, "stream fell back");
    Ok(())
}

/// The stream is whole and came from the fallback group, after the primary was tried first
/// and given up; returns the upstream call that served it.
fn assert_whole_stream_from_fallback<'j>(
    c: &Ctx,
    r: &Route,
    s: &StreamReply,
    journal: &'j [JournalEntry],
    trouble: &Trouble,
) -> anyhow::Result<&'j JournalEntry> {
    let p_sims = sims_of(&c.config, &r.primary);
    let b_sims = sims_of(&c.config, &r.served);
    let calls = path(journal);
    anyhow::ensure!(
        s.status == 200 && s.error_events().is_empty() && s.broken.is_none() && s.done,
        "{} failed ({}) while streaming, and instead of a whole stream from {} the client got: {}; \
         upstream calls: {calls}",
        r.primary,
        trouble.describe(),
        r.served,
        s.ending()
    );
    let first = journal
        .first()
        .ok_or_else(|| anyhow::anyhow!("the simulator saw no call carrying the case's tag"))?;
    anyhow::ensure!(
        p_sims.contains(&first.deployment),
        "the router did not try {} first: {calls}",
        r.primary
    );
    let want = trouble.outcome();
    anyhow::ensure!(
        journal
            .iter()
            .filter(|e| p_sims.contains(&e.deployment))
            .all(|e| e.outcome == want),
        "the primary's calls did not all end {want}: {calls}"
    );
    let last = journal.last().expect("non-empty");
    anyhow::ensure!(
        b_sims.contains(&last.deployment) && last.outcome.is_ok(),
        "the last upstream call was not a successful {} call, yet the client got a stream ({}): {calls}",
        r.served,
        s.ending()
    );
    let last_primary = journal
        .iter()
        .rposition(|e| p_sims.contains(&e.deployment))
        .unwrap_or(0);
    let first_backup = journal.iter().position(|e| b_sims.contains(&e.deployment)).unwrap_or(0);
    anyhow::ensure!(
        last_primary < first_backup,
        "{} was called before {} was given up: {calls}",
        r.served,
        r.primary
    );
    let content = s.content();
    let tokens = last.tokenizer.count(&content);
    let whole = format!("{:016x}", crate::sim::fnv(&[content.as_bytes()])) == last.reply_fnv;
    anyhow::ensure!(
        s.finish_reason().is_some() && tokens > 0 && whole,
        "the stream is not {}'s whole reply: {tokens} of its {} tokens ({}), {} (ending: {}): {calls}",
        last.deployment,
        last.completion_tokens,
        last.tokenizer.name(),
        if whole {
            "the same bytes"
        } else {
            "not the bytes it sent"
        },
        s.ending()
    );
    Ok(last)
}

/// Each attempt that waited for the primary was given up at its stream_timeout.
fn given_up_at_stream_timeout(c: &Ctx, r: &Route, s: &StreamReply, journal: &[JournalEntry]) -> anyhow::Result<()> {
    let t = r.stream_timeout;
    let p_sims = sims_of(&c.config, &r.primary);
    let p_calls = journal.iter().filter(|e| p_sims.contains(&e.deployment)).count() as u32;
    for pair in journal.windows(2).filter(|w| p_sims.contains(&w[0].deployment)) {
        let gap = Duration::from_millis(pair[1].time_ms.saturating_sub(pair[0].time_ms));
        anyhow::ensure!(
            gap.as_secs_f64() >= t - 0.2 && gap <= Duration::from_secs_f64(t) + ATTEMPT_MARGIN,
            "a streamed {} call was given up after {:.1}s, not at its stream_timeout {t}s (+ {}s margin): {}",
            r.primary,
            gap.as_secs_f64(),
            ATTEMPT_MARGIN.as_secs(),
            path(journal)
        );
    }
    let bound = (Duration::from_secs_f64(t) + ATTEMPT_MARGIN) * p_calls + MARGIN;
    anyhow::ensure!(
        s.latency <= bound,
        "the streamed fallback took {:.1}s, more than {p_calls} × (stream_timeout {t}s + {}s) + {}s",
        s.latency.as_secs_f64(),
        ATTEMPT_MARGIN.as_secs(),
        MARGIN.as_secs()
    );
    c.observe("stream_timeout_fallback_s", s.latency.as_secs_f64());
    Ok(())
}

/// The router's log agrees: the fallback's success is recorded, and no success of the
/// primary. The primary's failure is not required: after a fallback inside the stream
/// (first chunk late, cut before content) LiteLLM 1.100.5 logs it under the fallback's
/// deployment or not at all, so the log cannot say which deployment failed.
async fn logged_as_fallback(c: &Ctx, r: &Route, body: &serde_json::Value) -> anyhow::Result<()> {
    let Ok(sink) = c.sink() else {
        tracing::info!("no ledger sink: the router's logging payloads not checked");
        return Ok(());
    };
    let trace = trace_of(body)?;
    let p_ids = ids_of(&c.config, &r.primary);
    let b_ids = ids_of(&c.config, &r.served);
    let of = |p: &LoggingPayload, ids: &[String]| p.model_id.as_ref().is_some_and(|m| ids.contains(m));
    sink.wait_for_where(&trace, |p| p.is_success() && of(p, &b_ids), 1, SINK_WAIT)
        .await
        .map_err(|e| anyhow::anyhow!("no success logged for {}'s deployment: {e}", r.served))?;
    let all = sink.records(Some(&trace)).await?;
    anyhow::ensure!(
        !all.iter().any(|p| p.is_success() && of(p, &p_ids)),
        "the router logged a success for {} though {} served: {}",
        r.primary,
        r.served,
        summary(&all)
    );
    tracing::info!(logged = %summary(&all), "router log");
    Ok(())
}

fn summary(records: &[LoggingPayload]) -> String {
    records
        .iter()
        .map(|p| format!("{:?}@{}", p.status, p.model_id.as_deref().unwrap_or("?")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The primary's stream breaks after content reached the client: the client must be told.
/// A router that streams as it reads cannot take back what it sent, so it can only say so
/// (an error event, or ending without `[DONE]`); what it must not do is end the stream as
/// if the answer were whole.
async fn cut_mid_stream(c: Ctx, r: Route) -> anyhow::Result<()> {
    let tag = c.tag().to_owned();
    let trouble = Trouble::PacedCut(CUT_MID);
    install(&c, &r.primary, &tag, &trouble).await?;
    let body = body(&c, &r, &tag, "streamed cut check");
    let bound = client_bound(&r, &trouble);
    let s = c.router.chat_stream_to_end(&body, bound).await?;
    let journal = calls(&c, &tag).await?;
    let calls = path(&journal);
    anyhow::ensure!(
        !s.client_timed_out,
        "the stream was still open after {:.0}s: {}; upstream calls: {calls}",
        bound.as_secs_f64(),
        s.ending()
    );
    let first = journal
        .first()
        .ok_or_else(|| anyhow::anyhow!("the simulator saw no call carrying {tag}"))?;
    anyhow::ensure!(
        first.outcome == Outcome::Cut(CUT_MID) && u64::from(CUT_MID) < first.completion_tokens,
        "the first upstream call was not a {} stream cut mid-way (after {CUT_MID} of more events): {calls}",
        r.primary
    );
    let told = s.status != 200 || !s.error_events().is_empty() || s.broken.is_some() || !s.done;
    // A router that held the primary's chunks back may still fall back unseen: the client then
    // has exactly the fallback's reply, byte for byte, and none of the cut one's (seen on the
    // load_balanced_no_ids fixture: default-2(cut:5) → backup-1(ok), the client had backup-1's
    // 16 tokens). That is a whole answer, not a silent cut.
    let last = journal
        .last()
        .filter(|l| l.outcome.is_ok() && l.deployment != first.deployment);
    let recovered =
        !told && last.is_some_and(|l| format!("{:016x}", crate::sim::fnv(&[s.content().as_bytes()])) == l.reply_fnv);
    if recovered {
        tracing::info!(calls = %calls, "the router fell back before any of the cut stream reached the client");
        return Ok(());
    }
    anyhow::ensure!(
        told,
        "{}'s stream broke after {CUT_MID} events, and the client was not told: {}{}; upstream calls: {calls}",
        r.primary,
        s.ending(),
        if s.looks_complete() {
            ""
        } else {
            " ([DONE] and no error event: an OpenAI SDK takes that as the end of the answer)"
        }
    );
    if let Ok(sink) = c.sink() {
        // The router's log must not book the cut stream as served either.
        let trace = trace_of(&body)?;
        let got = sink
            .wait_for(&trace, 1, SINK_WAIT)
            .await
            .map_err(|e| anyhow::anyhow!("the router logged nothing about the cut stream: {e}"))?;
        anyhow::ensure!(
            !got.iter().any(LoggingPayload::is_success),
            "the router logged the cut stream as a success: {}",
            summary(&got)
        );
        tracing::info!(logged = %summary(&got), "router log");
    }
    tracing::info!(ending = %s.ending(), calls = %calls, "cut stream reported");
    Ok(())
}
