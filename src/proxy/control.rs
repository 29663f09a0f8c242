//! The control API, served on a connection `sniff` found to be one: a small axum router under
//! [`CONTROL_PREFIX`](super::sniff::CONTROL_PREFIX), on hyper's HTTP/1 server for that one
//! connection. Refusals are `{"error": "<one line>"}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;
use tower::ServiceExt;

use super::sniff::Replay;
use super::state::{AddError, Shared};
use super::toxic::Toxic;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/__gauntlet/proxy/health", get(health))
        .route("/__gauntlet/proxy/toxics", get(list).post(add).delete(clear))
        .route("/__gauntlet/proxy/toxics/{name}", get(one).delete(remove))
        .route("/__gauntlet/proxy/stats", get(stats))
        .route("/__gauntlet/proxy/reset", post(reset))
        .fallback(unknown)
        .with_state(shared)
}

/// Serves the control API on one connection until the client closes it. Every request on it
/// is a control request: a later one for another path gets a 404, it is never forwarded.
pub(crate) async fn serve(io: Replay<TcpStream>, app: Router) {
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| app.clone().oneshot(req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

fn refuse(status: StatusCode, msg: impl Into<String>) -> Response {
    let msg: String = msg.into();
    (status, Json(json!({ "error": msg.replace('\n', " ") }))).into_response()
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn list(State(s): State<Arc<Shared>>) -> Json<Vec<Toxic>> {
    Json(s.list())
}

async fn one(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    match s.list().into_iter().find(|t| t.name == name) {
        Some(t) => Json(t).into_response(),
        None => refuse(StatusCode::NOT_FOUND, format!("no toxic named {name:?}")),
    }
}

async fn add(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let toxic: Toxic = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, format!("invalid toxic: {e}")),
    };
    match s.add(toxic.clone()) {
        Ok(()) => (StatusCode::CREATED, Json(toxic)).into_response(),
        Err(e @ AddError::Duplicate(_)) => refuse(StatusCode::CONFLICT, e.to_string()),
        Err(e @ AddError::Invalid(_)) => refuse(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn remove(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    if s.remove(&name) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        refuse(StatusCode::NOT_FOUND, format!("no toxic named {name:?}"))
    }
}

async fn clear(State(s): State<Arc<Shared>>) -> StatusCode {
    s.clear();
    StatusCode::NO_CONTENT
}

async fn stats(State(s): State<Arc<Shared>>) -> Response {
    Json(s.stats()).into_response()
}

async fn reset(State(s): State<Arc<Shared>>) -> StatusCode {
    s.reset();
    StatusCode::NO_CONTENT
}

async fn unknown(method: Method, uri: Uri) -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        format!("no control route {method} {}", uri.path()),
    )
}
