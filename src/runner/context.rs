//! What a running case gets: the endpoints, clients for the router, simulator and sink, the
//! router config, and its own tag. The tag isolates cases running in parallel: it travels in
//! the `user` field and the prompt (routers pass both through), the simulator scopes faults to
//! it, and journal and ledger queries filter by it.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::client::RouterClient;
use crate::config::RouterConfig;
use crate::ledger::prices::PriceTable;
use crate::ledger::sink::SinkClient;
use crate::sim::AdminClient;
use crate::stack::Endpoints;

#[derive(Clone)]
pub struct Ctx {
    pub case: String,
    pub endpoints: Arc<Endpoints>,
    pub config: Arc<RouterConfig>,
    pub prices: Arc<PriceTable>,
    pub router: RouterClient,
    tag: String,
}

impl Ctx {
    pub fn new(
        case: &str,
        endpoints: Arc<Endpoints>,
        config: Arc<RouterConfig>,
        prices: Arc<PriceTable>,
        router_url: &str,
    ) -> Self {
        let router = RouterClient::new(router_url, endpoints.master_key.clone());
        Self {
            case: case.to_owned(),
            endpoints,
            config,
            prices,
            router,
            tag: format!("gt{}", crate::stack::random_hex(6)),
        }
    }

    /// Records a measurement (latency, count…) shown in the summary and reports.
    pub fn observe(&self, name: &str, value: f64) {
        tracing::info!(observation = name, value, "observed");
        super::report::observe(&self.case, name, value);
    }

    /// Serializes cases that change state shared across tags (a deployment's cooldown):
    /// holders of the same key never run at the same time.
    pub async fn exclusive(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        static LOCKS: std::sync::Mutex<Vec<(String, Arc<tokio::sync::Mutex<()>>)>> = std::sync::Mutex::new(Vec::new());
        let lock = {
            let mut all = LOCKS.lock().unwrap_or_else(|e| e.into_inner());
            match all.iter().find(|(k, _)| k == key) {
                Some((_, l)) => l.clone(),
                None => {
                    let l = Arc::new(tokio::sync::Mutex::new(()));
                    all.push((key.to_owned(), l.clone()));
                    l
                }
            }
        };
        lock.lock_owned().await
    }

    /// The group generic checks send their traffic to (see `RouterConfig::probe_group`).
    pub fn probe_group(&self) -> anyhow::Result<String> {
        self.config.probe_group().ok_or_else(|| {
            anyhow::anyhow!("the router config has no chat group on the simulator with room for the generic cases")
        })
    }

    /// The group the ledger's generic checks bill (every deployment priced).
    pub fn priced_group(&self) -> anyhow::Result<String> {
        self.config
            .priced_probe_group()
            .ok_or_else(|| anyhow::anyhow!("the router config has no chat group whose every deployment is priced"))
    }

    /// This case's tag: unique per run of the case.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// A fresh sub-tag, for cases that need several isolated request streams.
    pub fn subtag(&self, part: &str) -> String {
        format!("{}-{part}", self.tag)
    }

    /// A trace id for one request of this case.
    pub fn trace_id(&self) -> String {
        format!("trace-{}-{}", self.tag, crate::stack::random_hex(4))
    }

    pub fn sim(&self) -> anyhow::Result<AdminClient> {
        let url = self
            .endpoints
            .url("sim")
            .ok_or_else(|| anyhow::anyhow!("this case needs the provider simulator, and the target has none"))?;
        Ok(AdminClient::new(url))
    }

    pub fn sink(&self) -> anyhow::Result<SinkClient> {
        let url = self
            .endpoints
            .url("sink")
            .ok_or_else(|| anyhow::anyhow!("this case needs the ledger sink, and the target has none"))?;
        Ok(SinkClient::new(url))
    }

    /// A client for another router service of the stack (e.g. `router_b`).
    pub fn router_named(&self, service: &str) -> anyhow::Result<RouterClient> {
        let url = self
            .endpoints
            .url(service)
            .ok_or_else(|| anyhow::anyhow!("this case needs service '{service}', and the target has none"))?;
        Ok(RouterClient::new(url, self.endpoints.master_key.clone()))
    }

    /// A chat request for `model` carrying `tag` in `user`, prompt and metadata, so the
    /// simulator, the router's logs and the ledger can all be filtered by it.
    pub fn chat_body(&self, model: &str, tag: &str, prompt: &str) -> Value {
        json!({
            "model": model,
            "messages": [{"role": "user", "content": format!("[{tag}] {prompt}")}],
            "user": tag,
            "max_tokens": 16,
            "metadata": {"tenant": tag, "trace_id": self.trace_id(), "tags": [tag, format!("case:{}", self.case)]},
        })
    }
}
