//! Smoke: the router is up and does the basics.
//! - health endpoints (liveness, readiness)
//! - authentication: no key and a wrong key refused (401), the master key accepted
//! - a simple chat completion per configured chat group, an embedding per embedding group
//! - response format validated field by field (plain and streamed)
//! - model listing: every configured group present
//! - metadata handling: tenant, trace_id and user id sent, and seen upstream and in the router's log

use std::time::Duration;

use serde_json::{Value, json};

use crate::client::shape;
use crate::config::provider::Mode;
use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};
use crate::stack::role::Role;
use crate::suites::support::SINGLE_RPM;

pub fn cases(plan: &Plan) -> Vec<Case> {
    let generic = vec![
        Case::new("smoke::health::liveness", liveness),
        Case::new("smoke::health::readiness", readiness),
        Case::new("smoke::auth::missing_key_refused", |c| {
            auth_refused(c, None, Strict::Yes)
        }),
        Case::new("smoke::auth::wrong_key_refused", |c| {
            auth_refused(c, Some(WRONG_KEY.into()), Strict::NoDbAnswer)
        }),
        Case::new("smoke::auth::wrong_key_is_401", |c| {
            auth_refused(c, Some(WRONG_KEY.into()), Strict::Yes)
        })
        .ignore(
            "LiteLLM 1.100.5 without a database answers a key that is not the master key with 400 \
             no_db_connection (it cannot tell a wrong key from a virtual one); \
             smoke::auth::wrong_key_refused checks the refusal itself",
        ),
        Case::new("smoke::response_format", response_format),
        Case::new("smoke::streaming::chunks_and_done", streaming),
        Case::new("smoke::models::lists_every_group", models),
        Case::new("smoke::metadata::user_reaches_upstream", metadata_upstream)
            .needs(&[Role::Simulator])
            .ignore(
                "LiteLLM 1.100.5 does not forward the request's `user` to OpenAI-compatible upstreams \
             (seen in the simulator journal); it keeps it as end_user in its logging payload, \
             which smoke::metadata::logged_by_router checks",
            ),
        Case::new("smoke::metadata::logged_by_router", metadata_logged).needs(&[Role::LedgerSink]),
    ];
    let mut out = crate::suites::support::on_probe_group(plan, generic);
    let cfg = &plan.config;
    for group in cfg.groups() {
        let g = group.clone();
        let case = match cfg.mode_of(&group) {
            Mode::Embedding => Case::new(format!("smoke::embedding::{group}"), move |c| embedding(c, g.clone())),
            _ => Case::new(format!("smoke::chat_completion::{group}"), move |c| {
                chat_completion(c, g.clone())
            })
            .ignore_if(cfg.traffic_gate(&group, SINGLE_RPM)),
        };
        out.push(case.uses(&[&group]));
    }
    out
}

async fn liveness(c: Ctx) -> anyhow::Result<()> {
    let r = c.router.with_key(None).get("/health/liveliness").await?;
    r.expect_status(200)?;
    anyhow::ensure!(!r.text.trim().is_empty(), "{} answered 200 with an empty body", r.url);
    Ok(())
}

async fn readiness(c: Ctx) -> anyhow::Result<()> {
    let r = c.router.with_key(None).get("/health/readiness").await?;
    r.expect_status(200)?;
    let v = r.json_or_err()?;
    let status = v.get("status").and_then(Value::as_str).unwrap_or("");
    anyhow::ensure!(
        matches!(status, "healthy" | "connected"),
        "{}: status is {status:?}, expected \"healthy\" (no DB) or \"connected\": {}",
        r.url,
        r.text
    );
    // No litellm_version here without a DB; `db` is what the readiness check reports on.
    anyhow::ensure!(v.get("db").is_some(), "{}: no db field in {}", r.url, r.text);
    Ok(())
}

const WRONG_KEY: &str = "sk-wrong-key-0000000000";

/// How strictly a refusal's status is checked.
#[derive(Clone, Copy, PartialEq)]
enum Strict {
    /// 401 and nothing else.
    Yes,
    /// 401, or LiteLLM's documented answer when it has no database to look a key up in.
    NoDbAnswer,
}

async fn auth_refused(c: Ctx, key: Option<String>, strict: Strict) -> anyhow::Result<()> {
    let group = c.probe_group()?;
    let body = c.chat_body(&group, c.tag(), "auth check");
    let refused = c.router.with_key(key).chat(&body).await?;
    let v = refused.json_or_err()?;
    let no_db = refused.status == 400 && v.pointer("/error/type").and_then(Value::as_str) == Some("no_db_connection");
    anyhow::ensure!(
        refused.status == 401 || (strict == Strict::NoDbAnswer && no_db),
        "{} answered {} without the right key (expected 401): {}",
        refused.url,
        refused.status,
        crate::client::excerpt(&refused.text)
    );
    shape::error_body(v)?;
    // A refused request must never reach a provider.
    if let Ok(sim) = c.sim() {
        let calls = sim
            .journal(&crate::sim::JournalQuery {
                tag: Some(c.tag().clone()),
                ..Default::default()
            })
            .await?;
        anyhow::ensure!(
            calls.is_empty(),
            "a refused request still reached {} upstream(s)",
            calls.len()
        );
    }
    // The same request with the master key passes: the refusal was about the key.
    c.router.chat(&body).await?.expect_status(200)?;
    Ok(())
}

async fn chat_completion(c: Ctx, group: String) -> anyhow::Result<()> {
    let r = c.router.chat(&c.chat_body(&group, c.tag(), "Say hello.")).await?;
    r.expect_status(200)?;
    let content = shape::chat_completion(r.json_or_err()?)?;
    anyhow::ensure!(!content.trim().is_empty(), "empty reply from {group}");
    let served = r.router().model_id;
    served_by_member(&c, &group, served.as_deref())?;
    tracing::info!(
        group,
        served = served.as_deref().unwrap_or("?"),
        latency_ms = r.latency.as_millis() as u64,
        "ok"
    );
    Ok(())
}

async fn embedding(c: Ctx, group: String) -> anyhow::Result<()> {
    let body = json!({"model": group, "input": [format!("{} embed this", c.tag().marker())], "user": c.tag()});
    let r = c.router.post("/v1/embeddings", &body).await?;
    r.expect_status(200)?;
    let v = r.json_or_err()?;
    let vector = v
        .pointer("/data/0/embedding")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow::anyhow!("{}: no data[0].embedding in {}", r.url, crate::client::excerpt(&r.text)))?;
    anyhow::ensure!(
        !vector.is_empty() && vector.iter().all(Value::is_f64),
        "{}: data[0].embedding is not a list of numbers",
        r.url
    );
    let prompt = v.pointer("/usage/prompt_tokens").and_then(Value::as_u64).unwrap_or(0);
    anyhow::ensure!(prompt > 0, "{}: usage.prompt_tokens is {prompt}", r.url);
    served_by_member(&c, &group, r.router().model_id.as_deref())
}

/// The deployment the router says served (if it says) is one of the group's.
fn served_by_member(c: &Ctx, group: &str, served: Option<&str>) -> anyhow::Result<()> {
    let members = crate::suites::support::ids_of(&c.config, group);
    if let Some(id) = served {
        anyhow::ensure!(
            members.iter().any(|m| m == id),
            "{group} was served by deployment {id}, not one of {members:?}"
        );
    }
    Ok(())
}

async fn response_format(c: Ctx) -> anyhow::Result<()> {
    let group = c.probe_group()?;
    let r = c
        .router
        .chat(&c.chat_body(&group, c.tag(), "Check the format."))
        .await?;
    r.expect_status(200)?;
    let v = r.json_or_err()?;
    shape::chat_completion(v)?;
    // The same request twice gives the same usage: counting is deterministic end to end.
    let again = c
        .router
        .chat(&c.chat_body(&group, c.tag(), "Check the format."))
        .await?;
    let (u1, u2) = (
        shape::usage(&v["usage"])?,
        shape::usage(&again.json_or_err()?["usage"])?,
    );
    // Only from one deployment: a group's deployments may be different models, counted by
    // different tokenizers (seen on a public config: 21 vs 5 prompt tokens, o200k vs words).
    let (d1, d2) = (r.router().model_id, again.router().model_id);
    anyhow::ensure!(
        u1 == u2 || d1 != d2 || d1.is_none(),
        "identical requests reported different usage by one deployment ({d1:?}): {u1:?} vs {u2:?}"
    );
    Ok(())
}

async fn streaming(c: Ctx) -> anyhow::Result<()> {
    let group = c.probe_group()?;
    let mut body = c.chat_body(&group, c.tag(), "Stream a reply.");
    body["stream_options"] = json!({"include_usage": true});
    let s = c.router.chat_stream(&body).await?;
    s.expect_ok()?;
    anyhow::ensure!(
        s.done,
        "stream ended without data: [DONE] after {} chunks",
        s.chunks.len()
    );
    for (i, ch) in s.chunks.iter().enumerate() {
        let obj = ch.get("object").and_then(Value::as_str);
        anyhow::ensure!(obj == Some("chat.completion.chunk"), "chunk {i} has object {obj:?}");
    }
    let content = s.content();
    anyhow::ensure!(!content.is_empty(), "stream carried no content");
    let usage = s
        .usage()
        .ok_or_else(|| anyhow::anyhow!("include_usage was set but no chunk carried usage"))?;
    let (_, completion, _) = shape::usage(usage)?;
    anyhow::ensure!(completion > 0, "streamed usage has 0 completion tokens");
    // The simulator is deterministic per deployment: the streamed text is the plain reply's
    // text *from the deployment that served the stream*. In a load-balanced group another
    // deployment may answer a second request, so the plain one names the server by id.
    let served = crate::client::RouterHeaders::from(&s.headers)
        .model_id
        .ok_or_else(|| anyhow::anyhow!("the stream carried no x-litellm-model-id header"))?;
    let mut plain_body = body_without_stream(&body);
    plain_body["model"] = json!(served);
    let plain = c.router.chat(&plain_body).await?;
    plain.expect_status(200)?;
    anyhow::ensure!(
        plain.router().model_id.as_deref() == Some(served.as_str()),
        "asked for deployment {served} by id, served by {:?}",
        plain.router().model_id
    );
    let plain_text = shape::chat_completion(plain.json_or_err()?)?;
    anyhow::ensure!(
        plain_text == content,
        "streamed content {content:?} != plain content {plain_text:?} from the same deployment {served}"
    );
    Ok(())
}

fn body_without_stream(body: &Value) -> Value {
    let mut b = body.clone();
    if let Some(o) = b.as_object_mut() {
        o.remove("stream");
        o.remove("stream_options");
    }
    b
}

async fn models(c: Ctx) -> anyhow::Result<()> {
    let r = c.router.get("/v1/models").await?;
    r.expect_status(200)?;
    let ids = crate::client::shape::model_ids(r.json_or_err()?)
        .map_err(|e| anyhow::anyhow!("{}: {e}: {}", r.url, crate::client::excerpt(&r.text)))?;
    let missing: Vec<String> = c
        .config
        .groups()
        .into_iter()
        .filter(|g| !g.contains('*') && !ids.iter().any(|i| i == g))
        .collect();
    anyhow::ensure!(
        missing.is_empty(),
        "{} does not list configured groups {missing:?} (listed: {ids:?})",
        r.url
    );
    Ok(())
}

async fn metadata_upstream(c: Ctx) -> anyhow::Result<()> {
    let group = c.probe_group()?;
    let body = c.chat_body(&group, c.tag(), "metadata check");
    c.router.chat(&body).await?.expect_status(200)?;
    let journal = c
        .sim()?
        .journal(&crate::sim::JournalQuery {
            tag: Some(c.tag().clone()),
            ..Default::default()
        })
        .await?;
    let entry = journal
        .first()
        .ok_or_else(|| anyhow::anyhow!("no upstream call carrying tag {} in the simulator journal", c.tag()))?;
    anyhow::ensure!(
        entry.user.as_deref() == Some(c.tag().as_str()),
        "the upstream saw user {:?}, the client sent {:?}",
        entry.user,
        c.tag()
    );
    Ok(())
}

async fn metadata_logged(c: Ctx) -> anyhow::Result<()> {
    let group = c.probe_group()?;
    let body = c.chat_body(&group, c.tag(), "metadata logging check");
    let trace_id = crate::suites::support::trace_of(&body)?;
    c.router.chat(&body).await?.expect_status(200)?;
    let records = c
        .sink()?
        .wait_for_where(&trace_id, |p| p.is_success(), 1, Duration::from_secs(30))
        .await?;
    let rec = &records[0];
    let tag = Some(c.tag().as_str());
    for (what, got, want) in [
        ("tenant", rec.tenant.as_deref(), tag),
        ("trace_id", rec.trace_id.as_deref(), Some(trace_id.as_str())),
        ("end_user", rec.end_user.as_deref(), tag),
    ] {
        anyhow::ensure!(
            got == want,
            "the router's logging payload has {what} {got:?}, expected {want:?}"
        );
    }
    Ok(())
}
