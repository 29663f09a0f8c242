//! The admin API (`/admin/...`): change behaviours and rules at run time, read the journal,
//! reset. [`AdminClient`] is its typed client, used by the suites. Tags are [`Tag`]s on both
//! sides: a rule or query whose tag is not one is a 400 that says why.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::config::DeploymentSpec;
use super::model::{Behaviour, JournalEntry, JournalQuery, Rule};
use super::openai::error_body;
use super::state::{Deployment, Shared};
use crate::tag::Tag;

pub fn router() -> Router<Shared> {
    Router::new()
        .route("/admin/deployments", get(list).post(add_deployment))
        .route("/admin/deployments/{d}/behaviour", put(set_behaviour))
        .route("/admin/deployments/{d}/rules", post(add_rule))
        .route("/admin/deployments/{d}/rules/{id}", delete(delete_rule))
        .route("/admin/rules", delete(delete_tagged))
        .route("/admin/journal", get(journal))
        .route("/admin/reset", post(reset))
}

/// A refused admin request: status and what was wrong, answered OpenAI-shaped.
pub struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(error_body(
                &self.1,
                "invalid_request_error",
                None,
                Some("bad_admin_request"),
            )),
        )
            .into_response()
    }
}

fn bad(status: StatusCode, msg: String) -> AdminError {
    AdminError(status, msg)
}

fn parse<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, AdminError> {
    serde_json::from_slice(body).map_err(|e| bad(StatusCode::BAD_REQUEST, format!("invalid {what}: {e}")))
}

fn deployment(s: &Shared, d: &str) -> Result<std::sync::Arc<Deployment>, AdminError> {
    s.deployment(d)
        .ok_or_else(|| bad(StatusCode::NOT_FOUND, format!("unknown deployment '{d}'")))
}

fn validate(b: &Behaviour) -> Result<(), AdminError> {
    match &b.fault {
        Some(f) => f.validate().map_err(|e| bad(StatusCode::BAD_REQUEST, e)),
        None => Ok(()),
    }
}

async fn list(State(s): State<Shared>) -> Json<Value> {
    let all = s.deployments();
    let out: Vec<Value> = all
        .values()
        .map(|d| {
            let rules: Vec<Value> = d
                .rules
                .get()
                .iter()
                .map(|r| json!({"id": r.id, "rule": r.rule, "seen": r.seen.load(std::sync::atomic::Ordering::Relaxed)}))
                .collect();
            json!({"spec": d.spec, "behaviour": *d.behaviour.get(), "rules": rules})
        })
        .collect();
    Json(json!({"deployments": out}))
}

async fn add_deployment(State(s): State<Shared>, body: Bytes) -> Result<Response, AdminError> {
    let spec: DeploymentSpec = parse(&body, "deployment")?;
    if spec.name.is_empty() || spec.name.contains('/') {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            format!("invalid deployment name {:?}", spec.name),
        ));
    }
    validate(&spec.behaviour)?;
    let name = spec.name.clone();
    if s.add_deployment(spec) {
        Ok((StatusCode::CREATED, Json(json!({"name": name}))).into_response())
    } else {
        Err(bad(StatusCode::CONFLICT, format!("deployment '{name}' exists")))
    }
}

async fn set_behaviour(State(s): State<Shared>, Path(d): Path<String>, body: Bytes) -> Response {
    let run = || -> Result<Response, AdminError> {
        let dep = deployment(&s, &d)?;
        let b: Behaviour = parse(&body, "behaviour")?;
        validate(&b)?;
        dep.behaviour.set(b);
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

async fn add_rule(State(s): State<Shared>, Path(d): Path<String>, body: Bytes) -> Response {
    let run = || -> Result<Response, AdminError> {
        let dep = deployment(&s, &d)?;
        let rule: Rule = parse(&body, "rule")?;
        validate(&rule.behaviour)?;
        rule.when.validate().map_err(|e| bad(StatusCode::BAD_REQUEST, e))?;
        let id = s.add_rule(&dep, rule);
        Ok((StatusCode::CREATED, Json(json!({"id": id}))).into_response())
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

async fn delete_rule(State(s): State<Shared>, Path((d, id)): Path<(String, String)>) -> Response {
    let run = || -> Result<Response, AdminError> {
        let dep = deployment(&s, &d)?;
        let id: u64 = id
            .parse()
            .map_err(|_| bad(StatusCode::BAD_REQUEST, format!("rule id {id:?} is not a number")))?;
        let removed = dep.rules.update(|rules| {
            let before = rules.len();
            rules.retain(|r| r.id != id);
            rules.len() < before
        });
        if !removed {
            return Err(bad(StatusCode::NOT_FOUND, format!("deployment '{d}' has no rule {id}")));
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct TagQuery {
    tag: Option<String>,
}

async fn delete_tagged(State(s): State<Shared>, Query(q): Query<TagQuery>) -> Response {
    let Some(tag) = q.tag.filter(|t| !t.is_empty()) else {
        return bad(StatusCode::BAD_REQUEST, "DELETE /admin/rules needs ?tag=<tag>".into()).into_response();
    };
    let tag: Tag = match tag.parse() {
        Ok(t) => t,
        Err(e) => return bad(StatusCode::BAD_REQUEST, format!("invalid tag: {e}")).into_response(),
    };
    let mut removed = 0;
    for d in s.deployments().values() {
        removed += d.rules.update(|rules| {
            let before = rules.len();
            rules.retain(|r| r.rule.tag.as_ref() != Some(&tag));
            before - rules.len()
        });
    }
    Json(json!({"removed": removed})).into_response()
}

async fn journal(
    State(s): State<Shared>,
    q: Result<Query<JournalQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match q {
        Ok(Query(q)) => Json(json!({"entries": s.journal(&q)})).into_response(),
        Err(e) => bad(StatusCode::BAD_REQUEST, format!("invalid journal query: {e}")).into_response(),
    }
}

async fn reset(State(s): State<Shared>) -> StatusCode {
    s.reset();
    StatusCode::NO_CONTENT
}

/// Typed client of the admin API.
#[derive(Clone)]
pub struct AdminClient {
    base: String,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    async fn call(&self, rb: reqwest::RequestBuilder, what: &str) -> anyhow::Result<String> {
        let r = rb
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("simulator admin {what}: {}", crate::client::error_chain(&e)))?;
        let status = r.status();
        let text = r.text().await?;
        anyhow::ensure!(status.is_success(), "simulator admin {what}: {status}: {text}");
        Ok(text)
    }

    pub async fn add_rule(&self, deployment: &str, rule: &Rule) -> anyhow::Result<u64> {
        let text = self
            .call(
                self.http
                    .post(format!("{}/admin/deployments/{deployment}/rules", self.base))
                    .json(rule),
                "add rule",
            )
            .await?;
        let v: Value = serde_json::from_str(&text)?;
        v["id"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("simulator admin add rule: no id in {text}"))
    }

    pub async fn delete_rule(&self, deployment: &str, id: u64) -> anyhow::Result<()> {
        self.call(
            self.http
                .delete(format!("{}/admin/deployments/{deployment}/rules/{id}", self.base)),
            "delete rule",
        )
        .await
        .map(drop)
    }

    /// Removes every rule with this tag, on every deployment.
    pub async fn clear_tag(&self, tag: &Tag) -> anyhow::Result<()> {
        self.call(
            self.http
                .delete(format!("{}/admin/rules", self.base))
                .query(&[("tag", tag.as_str())]),
            "clear tag",
        )
        .await
        .map(drop)
    }

    pub async fn set_behaviour(&self, deployment: &str, b: &Behaviour) -> anyhow::Result<()> {
        self.call(
            self.http
                .put(format!("{}/admin/deployments/{deployment}/behaviour", self.base))
                .json(b),
            "set behaviour",
        )
        .await
        .map(drop)
    }

    pub async fn add_deployment(&self, spec: &DeploymentSpec) -> anyhow::Result<()> {
        self.call(
            self.http.post(format!("{}/admin/deployments", self.base)).json(spec),
            "add deployment",
        )
        .await
        .map(drop)
    }

    pub async fn reset(&self) -> anyhow::Result<()> {
        self.call(self.http.post(format!("{}/admin/reset", self.base)), "reset")
            .await
            .map(drop)
    }

    /// The entries of requests carrying `tag`, as the admin API returns them (JSON text).
    pub async fn journal_text(&self, tag: &Tag) -> anyhow::Result<String> {
        self.call(
            self.http
                .get(format!("{}/admin/journal", self.base))
                .query(&[("tag", tag.as_str())]),
            "journal",
        )
        .await
    }

    pub async fn journal(&self, q: &JournalQuery) -> anyhow::Result<Vec<JournalEntry>> {
        let text = self
            .call(
                self.http.get(format!("{}/admin/journal", self.base)).query(q),
                "journal",
            )
            .await?;
        #[derive(Deserialize)]
        struct Page {
            entries: Vec<JournalEntry>,
        }
        Ok(serde_json::from_str::<Page>(&text)?.entries)
    }
}
