//! What a running case gets: the endpoints, clients for the router, simulator and sink, the
//! router config, and its own tag. The tag isolates cases running in parallel: it travels in
//! the `user` field and the prompt (routers pass both through), the simulator scopes faults to
//! it, and journal and ledger queries filter by it.

use std::sync::Arc;

use serde_json::{Value, json};

use super::report::Observation;
use crate::client::RouterClient;
use crate::config::RouterConfig;
use crate::ledger::book::Entry;
use crate::ledger::prices::PriceTable;
use crate::ledger::sink::SinkClient;
use crate::sim::AdminClient;
use crate::stack::Endpoints;
use crate::stack::role::Role;
use crate::tag::Tag;

#[derive(Clone)]
pub struct Ctx {
    pub case: String,
    pub endpoints: Arc<Endpoints>,
    pub config: Arc<RouterConfig>,
    pub prices: Arc<PriceTable>,
    pub router: RouterClient,
    tag: Tag,
    /// The stack, when this run started it (the chaos cases hurt its services).
    control: Option<crate::stack::Control>,
    /// What the case reports besides pass/fail: read by the trial once the case ends.
    results: Arc<CaseResults>,
}

/// A case's measurements and billed requests, handed from the case to its trial (and from
/// there to the one recorder the reports read): no process-wide list in between.
#[derive(Default)]
pub struct CaseResults {
    observations: std::sync::Mutex<Vec<Observation>>,
    ledger: std::sync::Mutex<Vec<Entry>>,
}

impl CaseResults {
    /// Everything the case reported, emptied.
    pub fn take(&self) -> (Vec<Observation>, Vec<Entry>) {
        let o = std::mem::take(&mut *self.observations.lock().unwrap_or_else(|e| e.into_inner()));
        let l = std::mem::take(&mut *self.ledger.lock().unwrap_or_else(|e| e.into_inner()));
        (o, l)
    }
}

impl Ctx {
    pub fn new(
        case: &str,
        endpoints: Arc<Endpoints>,
        config: Arc<RouterConfig>,
        prices: Arc<PriceTable>,
        router_url: &str,
        results: Arc<CaseResults>,
    ) -> Self {
        let router = RouterClient::new(router_url, endpoints.master_key.clone());
        Self {
            case: case.to_owned(),
            endpoints,
            config,
            prices,
            router,
            tag: Tag::fresh("gt", 6),
            control: None,
            results,
        }
    }

    pub fn with_control(mut self, control: Option<crate::stack::Control>) -> Self {
        self.control = control;
        self
    }

    /// The stack's services, to hurt and heal: only a stack this run started (the registry
    /// gates chaos cases on it, so reaching this without one is the registry's bug or a
    /// target changed under the case).
    pub fn control(&self) -> anyhow::Result<&crate::stack::Control> {
        self.control.as_ref().ok_or_else(|| {
            anyhow::anyhow!(
                "this case hurts the stack's services, and this run did not start the stack: \
                 run it on the embedded stack (no GAUNTLET_STACK, no ROUTER_URL)"
            )
        })
    }

    /// Records a measurement (latency, count…) shown in the summary and reports.
    pub fn observe(&self, name: &str, value: f64) {
        tracing::info!(observation = name, value, "observed");
        self.results
            .observations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Observation {
                name: name.to_owned(),
                value,
            });
    }

    /// Records a billed request in the run's ledger (`ledger.json`, the terminal table).
    pub fn bill(&self, entry: Entry) {
        self.results
            .ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(entry);
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
    pub fn tag(&self) -> &Tag {
        &self.tag
    }

    /// A sub-tag, for cases that need several isolated request streams (its requests do not
    /// carry this case's own tag).
    pub fn subtag(&self, part: &str) -> Tag {
        self.tag.sub(part)
    }

    /// A trace id for one request of this case (itself a tag: the sink finds payloads by it).
    pub fn trace_id(&self) -> Tag {
        Tag::fresh(&format!("trace-{}-", self.tag), 4)
    }

    pub fn sim(&self) -> anyhow::Result<AdminClient> {
        let url = self
            .endpoints
            .url_of(Role::Simulator)
            .ok_or_else(|| anyhow::anyhow!("this case needs the provider simulator, and the target has none"))?;
        Ok(AdminClient::new(url))
    }

    pub fn sink(&self) -> anyhow::Result<SinkClient> {
        let url = self
            .endpoints
            .url_of(Role::LedgerSink)
            .ok_or_else(|| anyhow::anyhow!("this case needs the ledger sink, and the target has none"))?;
        Ok(SinkClient::new(url))
    }

    /// A client for the stack's second router (same Redis, same config).
    pub fn second_router(&self) -> anyhow::Result<RouterClient> {
        let url = self
            .endpoints
            .url_of(Role::SecondRouter)
            .ok_or_else(|| anyhow::anyhow!("this case needs a second router, and the target has none"))?;
        Ok(RouterClient::new(url, self.endpoints.master_key.clone()))
    }

    /// A chat request for `model` stamped with `tag` (user, prompt marker, metadata), so the
    /// simulator, the router's logs and the ledger can all be filtered by it, and a trace id
    /// of its own.
    pub fn chat_body(&self, model: &str, tag: &Tag, prompt: &str) -> Value {
        let mut body = json!({
            "model": model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 16,
            "metadata": {"trace_id": self.trace_id(), "tags": [format!("case:{}", self.case)]},
        });
        tag.stamp(&mut body);
        body
    }
}
