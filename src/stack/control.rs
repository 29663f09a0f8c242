//! [`Control`]: a stack this run started, shared between the run (which stops it) and the
//! chaos cases (which hurt a service and wait for it to heal).
//!
//! Design note: one async mutex around the [`Stack`]. Chaos actions are rare and must not
//! interleave — a restart re-reads an endpoint that the next action uses — while the cases'
//! traffic never goes through here: it reads endpoints that a case re-asks for after an action
//! that can move them (a container restarted on a new host port).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::manifest::Health;
use super::{Chaos, Endpoint, Stack, health};
use crate::error::RunError;

#[derive(Clone)]
pub struct Control {
    stack: Arc<tokio::sync::Mutex<Stack>>,
    /// Each service's readiness check, from the manifest.
    health: Arc<BTreeMap<String, Health>>,
}

impl Control {
    pub fn new(stack: Stack, health: BTreeMap<String, Health>) -> Self {
        Self {
            stack: Arc::new(tokio::sync::Mutex::new(stack)),
            health: Arc::new(health),
        }
    }

    /// Does `what` to `service`; returns where it is now.
    pub async fn hurt(&self, service: &str, what: Chaos) -> Result<Endpoint, RunError> {
        let mut s = self.stack.lock().await;
        s.chaos(service, what).await?;
        tracing::info!(service, chaos = %what, "chaos");
        Ok(s.endpoints.services[service].clone())
    }

    /// Where `service` is now.
    pub async fn endpoint(&self, service: &str) -> Option<Endpoint> {
        self.stack.lock().await.endpoints.services.get(service).cloned()
    }

    /// Why `service` is not running, if it is not.
    pub async fn exited(&self, service: &str) -> Option<String> {
        self.stack.lock().await.exited(service)
    }

    /// Waits, at most `bound`, until `service` passes its manifest readiness check; returns how
    /// long that took.
    pub async fn wait_healthy(&self, service: &str, bound: Duration) -> Result<Duration, RunError> {
        let check = self
            .health
            .get(service)
            .cloned()
            .ok_or_else(|| RunError::usage(format!("no service '{service}' in this stack")))?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| RunError::stack(format!("cannot make an HTTP client: {e}")))?;
        let t0 = Instant::now();
        let mut last = String::new();
        while t0.elapsed() < bound {
            let ep = self
                .endpoint(service)
                .await
                .ok_or_else(|| RunError::stack(format!("service '{service}' has no endpoint")))?;
            let left = bound.saturating_sub(t0.elapsed());
            match tokio::time::timeout(left, health::probe(&check, &ep.host, ep.port, &http)).await {
                Ok(Ok(())) => return Ok(t0.elapsed()),
                Ok(Err(why)) => last = why,
                Err(_) => last = "the readiness check did not answer".into(),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Err(RunError::stack(format!(
            "service '{service}' not healthy {:.1}s after chaos: {last}",
            bound.as_secs_f64()
        )))
    }

    /// The stack itself, outside the runtime (the run's reports, once every case has ended).
    pub fn lock_blocking(&self) -> tokio::sync::MutexGuard<'_, Stack> {
        self.stack.blocking_lock()
    }

    /// The stack itself, for the run's own end: logs, then stop.
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, Stack> {
        self.stack.lock().await
    }
}
