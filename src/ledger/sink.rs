//! The ledger sink: an HTTP endpoint that receives the router's per-request logging payloads
//! (LiteLLM's `generic_api` callback posts batches of standard logging payloads to
//! `GENERIC_LOGGER_ENDPOINT`). Records are kept in memory and read back over HTTP, so a test
//! process attached to a detached stack sees the same records as the runner that owns it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::payload::LoggingPayload;
use crate::tag::Tag;

/// Records beyond this are dropped oldest-first: a long soak must not grow without bound.
const MAX_RECORDS: usize = 200_000;

#[derive(Default)]
struct Store {
    records: Vec<Value>,
    received_batches: u64,
}

type Shared = Arc<Mutex<Store>>;

pub struct SinkHandle {
    addr: SocketAddr,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// `gauntlet sink`: a standalone sink until SIGINT or SIGTERM (the Docker backend runs it
/// as a container).
pub async fn serve_cli(listen: SocketAddr) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let sink = start(listen).await?;
    println!("gauntlet sink listening on {}", sink.url());
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    sink.shutdown().await;
    Ok(())
}

impl SinkHandle {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

pub async fn start(listen: SocketAddr) -> anyhow::Result<SinkHandle> {
    let store: Shared = Arc::default();
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ingest", post(ingest))
        .route("/records", get(records).delete(clear))
        .with_state(store);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(SinkHandle {
        addr,
        shutdown: tx,
        task,
    })
}

/// Accepts a JSON list of payloads, one payload, or `{"logs"|"data": [...]}`.
async fn ingest(State(store): State<Shared>, body: axum::body::Bytes) -> (StatusCode, Json<Value>) {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": {"message": format!("body is not JSON: {e}"), "type": "invalid_request_error"}})),
            );
        }
    };
    let items = match v {
        Value::Array(a) => a,
        Value::Object(ref o) if o.get("logs").or(o.get("data")).is_some_and(Value::is_array) => o
            .get("logs")
            .or(o.get("data"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        other => vec![other],
    };
    let n = items.len();
    let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
    s.received_batches += 1;
    s.records.extend(items);
    let excess = s.records.len().saturating_sub(MAX_RECORDS);
    s.records.drain(..excess);
    (StatusCode::OK, Json(json!({"accepted": n})))
}

#[derive(Deserialize)]
struct RecordsQuery {
    /// Keep the payloads of requests carrying this tag (`Tag::in_payload`).
    tag: Option<Tag>,
}

async fn records(
    State(store): State<Shared>,
    q: Result<Query<RecordsQuery>, axum::extract::rejection::QueryRejection>,
) -> (StatusCode, Json<Value>) {
    let Ok(Query(q)) = q else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": {"message": "tag: not a tag", "type": "invalid_request_error"}})),
        );
    };
    let s = store.lock().unwrap_or_else(|e| e.into_inner());
    let out: Vec<&Value> = match &q.tag {
        Some(tag) => s.records.iter().filter(|r| tag.in_payload(r)).collect(),
        None => s.records.iter().collect(),
    };
    (
        StatusCode::OK,
        Json(json!({"batches": s.received_batches, "records": out})),
    )
}

async fn clear(State(store): State<Shared>) -> StatusCode {
    store.lock().unwrap_or_else(|e| e.into_inner()).records.clear();
    StatusCode::NO_CONTENT
}

/// Reads the sink over HTTP.
#[derive(Clone)]
pub struct SinkClient {
    base: String,
    http: reqwest::Client,
}

impl SinkClient {
    pub fn new(base: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest");
        Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
        }
    }

    /// The payloads of requests carrying `tag` (all of them without one).
    pub async fn records(&self, tag: Option<&Tag>) -> anyhow::Result<Vec<LoggingPayload>> {
        let mut rb = self.http.get(format!("{}/records", self.base));
        if let Some(t) = tag {
            rb = rb.query(&[("tag", t.as_str())]);
        }
        let v: Value = rb.send().await?.error_for_status()?.json().await?;
        Ok(v["records"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(LoggingPayload::from)
            .collect())
    }

    /// Waits until at least `n` payloads of requests carrying `tag` arrived: the router
    /// flushes in batches, so they arrive late. Bounded by `timeout`; the error says how many
    /// did arrive.
    pub async fn wait_for(&self, tag: &Tag, n: usize, timeout: Duration) -> anyhow::Result<Vec<LoggingPayload>> {
        self.wait_for_where(tag, |_| true, n, timeout).await
    }

    /// Like [`Self::wait_for`], counting only the records `keep` accepts (a fallback logs a
    /// failure before the success: waiting for "any record" would return too early).
    pub async fn wait_for_where(
        &self,
        tag: &Tag,
        keep: impl Fn(&LoggingPayload) -> bool,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<LoggingPayload>> {
        let start = Instant::now();
        loop {
            let got: Vec<LoggingPayload> = self.records(Some(tag)).await?.into_iter().filter(|r| keep(r)).collect();
            if got.len() >= n {
                return Ok(got);
            }
            if start.elapsed() >= timeout {
                anyhow::bail!(
                    "ledger sink: {} of {n} expected logging payloads of requests tagged {tag} arrived within {:.0}s",
                    got.len(),
                    timeout.as_secs_f64()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stores_batches_and_filters() {
        let sink = start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{}/ingest", sink.url()))
            .body(r#"[{"end_user":"gt-aaa","response_cost":1.5},{"end_user":"gt-bbb"}]"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let bad = http
            .post(format!("{}/ingest", sink.url()))
            .body("{nope")
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        let c = SinkClient::new(&sink.url());
        assert_eq!(c.records(None).await.unwrap().len(), 2);
        let tag = |s: &str| s.parse::<Tag>().unwrap();
        let got = c.wait_for(&tag("gt-aaa"), 1, Duration::from_secs(1)).await.unwrap();
        assert_eq!(got[0].response_cost, Some(1.5));
        // A tag is matched as a whole: gt-aa is not gt-aaa.
        assert!(c.records(Some(&tag("gt-aa"))).await.unwrap().is_empty());
        let err = c
            .wait_for(&tag("gt-zzz"), 1, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("0 of 1"), "{err}");
        sink.shutdown().await;
    }
}
