//! Three-way reconciliation of one request: what the client saw (usage and the router's cost
//! header), what the upstream reported (the simulator journal), and what the router logged
//! (the sink), each against the cost the team's price table expects for the deployment that
//! actually served. Every disagreement is reported with the request it belongs to.

use super::payload::{LoggingPayload, TokenDetails};
use super::prices::PriceTable;
use crate::config::pricing::Tokens;

/// Tokens and cost as one source saw them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    pub deployment: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// Of the prompt tokens, read from / written to the provider's prompt cache.
    pub cache_read_tokens: Option<u64>,
    pub cache_creation_tokens: Option<u64>,
    /// Of the completion tokens, hidden reasoning.
    pub reasoning_tokens: Option<u64>,
    pub cost: Option<f64>,
}

impl View {
    /// The tokens a price applies to; `None` when the counts are missing.
    pub fn tokens(&self) -> Option<Tokens> {
        Some(Tokens {
            prompt: self.prompt_tokens?,
            completion: self.completion_tokens?,
            cache_read: self.cache_read_tokens.unwrap_or(0),
            cache_creation: self.cache_creation_tokens.unwrap_or(0),
            reasoning: self.reasoning_tokens.unwrap_or(0),
        })
    }

    /// Takes the token kinds priced apart from a usage object (what the client got).
    pub fn with_details(self, d: TokenDetails) -> Self {
        Self {
            cache_read_tokens: d.cache_read,
            cache_creation_tokens: d.cache_creation,
            reasoning_tokens: d.reasoning,
            ..self
        }
    }
}

impl View {
    /// The router's logging payload.
    pub fn from_payload(p: &LoggingPayload) -> Self {
        Self {
            deployment: p.model_id.clone(),
            prompt_tokens: p.prompt_tokens,
            completion_tokens: p.completion_tokens,
            cost: p.response_cost,
            ..Self::default()
        }
        .with_details(p.details)
    }
}

/// One disagreement, named by request and field.
#[derive(Debug, Clone, PartialEq)]
pub struct Discrepancy {
    pub request: String,
    pub what: String,
}

impl std::fmt::Display for Discrepancy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "request {}: {}", self.request, self.what)
    }
}

/// Compares the three views of `request`. `client.cost` may be absent (LiteLLM sends no cost
/// header for streams); every other field present in two views must agree, and every cost
/// must equal the price table's cost for the serving deployment's tokens.
pub fn reconcile(
    request: &str,
    client: &View,
    upstream: &View,
    router: &View,
    prices: &PriceTable,
) -> Vec<Discrepancy> {
    let mut out = Vec::new();
    let mut flag = |what: String| {
        out.push(Discrepancy {
            request: request.to_owned(),
            what,
        })
    };
    let views = [("client", client), ("upstream", upstream), ("router log", router)];
    for (field, get) in [
        (
            "deployment",
            (|v: &View| v.deployment.clone().map(|d| d.to_string())) as fn(&View) -> Option<String>,
        ),
        ("prompt_tokens", |v: &View| v.prompt_tokens.map(|n| n.to_string())),
        ("completion_tokens", |v: &View| {
            v.completion_tokens.map(|n| n.to_string())
        }),
        ("cache_read_tokens", |v: &View| {
            v.cache_read_tokens.map(|n| n.to_string())
        }),
        ("cache_creation_tokens", |v: &View| {
            v.cache_creation_tokens.map(|n| n.to_string())
        }),
        ("reasoning_tokens", |v: &View| v.reasoning_tokens.map(|n| n.to_string())),
    ] {
        let seen: Vec<(&str, String)> = views.iter().filter_map(|(n, v)| get(v).map(|x| (*n, x))).collect();
        if let Some((first_name, first)) = seen.first() {
            for (name, val) in &seen[1..] {
                if val != first {
                    flag(format!("{field}: {first_name} says {first}, {name} says {val}"));
                }
            }
        }
    }
    let Some(deployment) = upstream
        .deployment
        .as_ref()
        .or(router.deployment.as_ref())
        .or(client.deployment.as_ref())
    else {
        flag("no source names the deployment that served".into());
        return out;
    };
    let (Some(p), Some(c)) = (
        upstream.prompt_tokens.or(client.prompt_tokens),
        upstream.completion_tokens.or(client.completion_tokens),
    ) else {
        flag("no source reports token counts".into());
        return out;
    };
    // The upstream's own counts are the bill; a router's claim of a discount is no evidence.
    let tokens = Tokens {
        prompt: p,
        completion: c,
        cache_read: upstream.cache_read_tokens.unwrap_or(0),
        cache_creation: upstream.cache_creation_tokens.unwrap_or(0),
        reasoning: upstream.reasoning_tokens.unwrap_or(0),
    };
    let Some(price) = prices.price(deployment) else {
        flag(format!("deployment {deployment} is not in the price table"));
        return out;
    };
    let expected = price.cost(tokens);
    for (name, v) in [("client cost header", client), ("router log", router)] {
        if let Some(cost) = v.cost
            && !prices.agrees(cost, expected)
        {
            flag(format!(
                "{name} cost {cost:.10} != expected {expected:.10} ({} at {deployment}'s price)",
                price.explain(tokens)
            ));
        }
    }
    if router.cost.is_none() {
        flag("the router logged no response_cost".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> PriceTable {
        let cfg = crate::config::RouterConfig::parse(
            "r.yaml",
            "model_list:\n  - {model_name: g, litellm_params: {model: x}, model_info: {id: a, input_cost_per_token: 0.001, output_cost_per_token: 0.002}}\n  - {model_name: g, litellm_params: {model: x}, model_info: {id: b, input_cost_per_token: 0.01, output_cost_per_token: 0.02}}\n",
        )
        .unwrap();
        PriceTable::from_config(&cfg, &crate::ledger::prices::LedgerSettings::default())
    }

    fn view(d: &str, p: u64, c: u64, cost: Option<f64>) -> View {
        View {
            deployment: Some(d.into()),
            prompt_tokens: Some(p),
            completion_tokens: Some(c),
            cost,
            ..View::default()
        }
    }

    #[test]
    fn agreeing_sources_reconcile() {
        let t = table();
        let v = view("a", 10, 5, Some(0.02));
        assert!(reconcile("r1", &v, &view("a", 10, 5, None), &v, &t).is_empty());
    }

    #[test]
    fn wrong_price_and_wrong_deployment_are_named() {
        let t = table();
        // The router billed the primary's price for a request the backup served.
        let client = view("b", 10, 5, Some(0.02));
        let d = reconcile(
            "r2",
            &client,
            &view("b", 10, 5, None),
            &view("b", 10, 5, Some(0.02)),
            &t,
        );
        assert!(
            d.iter()
                .any(|x| x.what.contains("router log cost") && x.request == "r2"),
            "{d:?}"
        );
        let d = reconcile(
            "r3",
            &view("a", 10, 5, Some(0.02)),
            &view("b", 10, 5, None),
            &view("a", 10, 5, Some(0.02)),
            &t,
        );
        assert!(d.iter().any(|x| x.what.starts_with("deployment:")), "{d:?}");
        let d = reconcile(
            "r4",
            &view("a", 10, 5, Some(0.02)),
            &view("a", 10, 6, None),
            &view("a", 10, 5, Some(0.02)),
            &t,
        );
        assert!(d.iter().any(|x| x.what.starts_with("completion_tokens")), "{d:?}");
    }

    #[test]
    fn token_kinds_priced_apart_are_reconciled_from_the_upstream() {
        let cfg = crate::config::RouterConfig::parse(
            "r.yaml",
            "model_list:\n  - {model_name: g, litellm_params: {model: x}, model_info: {id: r, input_cost_per_token: 0.004, output_cost_per_token: 0.016, cache_read_input_token_cost: 0.001, output_cost_per_reasoning_token: 0.03}}\n",
        )
        .unwrap();
        let t = PriceTable::from_config(&cfg, &crate::ledger::prices::LedgerSettings::default());
        let details = TokenDetails {
            cache_read: Some(4),
            cache_creation: None,
            reasoning: Some(10),
        };
        let upstream = view("r", 8, 26, None).with_details(details);
        let want = 4.0 * 0.004 + 4.0 * 0.001 + 16.0 * 0.016 + 10.0 * 0.03;
        let router = view("r", 8, 26, Some(want)).with_details(details);
        assert!(reconcile("r5", &router, &upstream, &router, &t).is_empty());
        // A router that billed the cached tokens at the input price, having lost the details.
        let lost = view("r", 8, 26, Some(want + 4.0 * 0.003));
        let d = reconcile("r6", &view("r", 8, 26, None), &upstream, &lost, &t);
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].what.contains("4 cache-read × 1e-3") && d[0].what.contains("10 reasoning × 3e-2"),
            "{d:?}"
        );
        // A router that says it read fewer tokens from the cache than the upstream did.
        let fewer = router.clone().with_details(TokenDetails {
            cache_read: Some(2),
            ..details
        });
        let d = reconcile("r7", &router, &upstream, &fewer, &t);
        assert!(d.iter().any(|x| x.what.starts_with("cache_read_tokens:")), "{d:?}");
    }
}
