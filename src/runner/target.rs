//! Where a run's router and stack come from: started by the run (the default), attached
//! from a `gauntlet up --detach` state file (`GAUNTLET_STACK`), or a bare router at
//! `ROUTER_URL` — and the readiness check an attached or bare router gets once, up front.

use std::path::PathBuf;

use crate::error::RunError;
use crate::stack::manifest::Manifest;
use crate::stack::role::Role;
use crate::stack::{self, Endpoints};

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

impl Target {
    /// The roles this target offers the cases: every role of the manifest's services when
    /// started here, those in the state file when attached, the router alone when bare.
    pub fn roles(&self, manifest: &Manifest) -> Vec<Role> {
        match self {
            Self::Embedded => manifest.roles().into_keys().collect(),
            Self::Attached(_, ep) => ep.roles.keys().copied().collect(),
            Self::External(_) => vec![Role::Router],
        }
    }
}

/// The key for a bare `ROUTER_URL`: `ROUTER_API_KEY`, else `LITELLM_MASTER_KEY`.
pub fn external_key() -> Option<String> {
    let k = std::env::var("ROUTER_API_KEY")
        .or_else(|_| std::env::var("LITELLM_MASTER_KEY"))
        .ok()?;
    crate::redact::register(&k);
    Some(k)
}

/// Waits (bounded by HEALTH_TIMEOUT) for an attached or external router to answer its
/// readiness endpoint, and returns its version. A dead router or one answering garbage is
/// reported here once, instead of as every case failing the same way. A router this run
/// started has already passed its manifest's health check: it is asked once, for its version.
pub async fn check_router(url: &str, key: Option<&str>, target: &Target) -> Option<String> {
    let http = reqwest::Client::new();
    let timeout = match target {
        Target::Embedded => std::time::Duration::ZERO,
        _ => stack::health::health_timeout().unwrap_or(std::time::Duration::from_secs(60)),
    };
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
            match v.get("litellm_version").and_then(|s| s.as_str()) {
                Some(version) => Some(version.to_owned()),
                // Since 1.100 the public probe says only `status` and `db`; the version is in
                // the authenticated details.
                None => details_version(&http, url, key?).await,
            }
        }
        Err(_) if matches!(target, Target::Embedded) => None,
        Err(why) => {
            tracing::warn!("router {probe_url} ({}) is not ready: {why}", target.describe());
            eprintln!("gauntlet: warning: router readiness {probe_url}: {why}");
            None
        }
    }
}

/// `litellm_version` from `/health/readiness/details` (LiteLLM ≥ 1.100 answers it to a key).
async fn details_version(http: &reqwest::Client, url: &str, key: &str) -> Option<String> {
    let r = http
        .get(format!("{}/health/readiness/details", url.trim_end_matches('/')))
        .bearer_auth(key)
        .timeout(std::time::Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = r.error_for_status().ok()?.json().await.ok()?;
    v.get("litellm_version")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;
    use axum::routing::get;

    /// LiteLLM 1.100's probes: the public one without the version, the details behind a key.
    async fn router() -> String {
        let app = axum::Router::new()
            .route(
                "/health/readiness",
                get(|| async { axum::Json(serde_json::json!({"status": "healthy", "db": "Not connected"})) }),
            )
            .route(
                "/health/readiness/details",
                get(|h: HeaderMap| async move {
                    if h.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer sk-test") {
                        Ok(axum::Json(
                            serde_json::json!({"status": "healthy", "litellm_version": "9.9.9"}),
                        ))
                    } else {
                        Err(axum::http::StatusCode::UNAUTHORIZED)
                    }
                }),
            );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, app).await });
        url
    }

    #[tokio::test]
    async fn the_version_comes_from_the_authenticated_details_when_the_probe_hides_it() {
        let url = router().await;
        assert_eq!(
            check_router(&url, Some("sk-test"), &Target::Embedded).await.as_deref(),
            Some("9.9.9")
        );
        assert_eq!(check_router(&url, Some("sk-wrong"), &Target::Embedded).await, None);
        assert_eq!(check_router(&url, None, &Target::Embedded).await, None);
    }
}
