//! What each deployment should cost, from the team's router config itself (`model_info` /
//! `litellm_params` prices, read by `config::pricing`): the router bills from those same
//! lines, so there is one source of truth and a $0 bill is never mistaken for a price. The
//! ledger's own settings (currency, tolerance, tenants) come from the manifest's `[ledger]`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::RouterConfig;
use crate::config::pricing::{Price, Pricing, Tokens};

/// `[ledger]` of the stack manifest.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LedgerSettings {
    #[serde(default = "usd")]
    pub currency: String,
    /// Absolute difference under which two costs agree (float sums from different sources).
    #[serde(default = "tolerance")]
    pub tolerance_usd: f64,
    /// Tenants the ledger suite bills when the router config names no teams.
    #[serde(default)]
    pub tenants: Vec<String>,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        Self {
            currency: usd(),
            tolerance_usd: tolerance(),
            tenants: Vec::new(),
        }
    }
}

fn usd() -> String {
    "USD".into()
}
fn tolerance() -> f64 {
    1e-9
}

#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    pub currency: String,
    pub tolerance_usd: f64,
    deployments: BTreeMap<String, Pricing>,
}

impl PriceTable {
    pub fn from_config(cfg: &RouterConfig, settings: &LedgerSettings) -> Self {
        Self {
            currency: settings.currency.clone(),
            tolerance_usd: settings.tolerance_usd,
            deployments: cfg
                .deployments
                .iter()
                .map(|d| (d.id.clone(), d.pricing.clone()))
                .collect(),
        }
    }

    pub fn pricing(&self, deployment: &str) -> Option<&Pricing> {
        self.deployments.get(deployment)
    }

    pub fn price(&self, deployment: &str) -> Option<Price> {
        self.pricing(deployment).and_then(Pricing::price)
    }

    /// Expected cost of a request served by `deployment` with these token counts.
    pub fn cost(&self, deployment: &str, tokens: Tokens) -> Option<f64> {
        self.price(deployment).map(|p| p.cost(tokens))
    }

    /// Whether two costs agree within the table's tolerance (relative for large sums).
    pub fn agrees(&self, a: f64, b: f64) -> bool {
        (a - b).abs() <= self.tolerance_usd.max(1e-9 * a.abs().max(b.abs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_stack_prices_every_deployment_from_its_config() {
        let m = crate::stack::manifest::Manifest::builtin().unwrap();
        let c = RouterConfig::from_document(&m.router_config.doc).unwrap();
        let t = PriceTable::from_config(&c, &m.ledger);
        for d in &c.deployments {
            assert!(t.price(&d.id).is_some(), "no price for {}", d.id);
        }
        let tokens = Tokens {
            prompt: 10,
            completion: 5,
            ..Tokens::default()
        };
        let cost = t.cost("primary", tokens).unwrap();
        assert!(t.agrees(cost, 10.0 * 0.000002 + 5.0 * 0.000008));
        assert!(!t.agrees(cost, cost * 1.01));
    }
}
