//! The team's price table (`stack/prices.toml`): USD per token, per deployment. The ledger
//! bills from this, never from the router's own prices.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::RunError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    #[serde(default = "usd")]
    pub currency: String,
    /// Absolute difference under which two costs agree (float sums from different sources).
    #[serde(default = "tolerance")]
    pub tolerance_usd: f64,
    /// Tenants the ledger suite bills, one case each.
    #[serde(default)]
    pub tenants: Vec<String>,
    #[serde(default)]
    pub deployments: BTreeMap<String, Price>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_token: f64,
    pub output_per_token: f64,
}

fn usd() -> String {
    "USD".into()
}
fn tolerance() -> f64 {
    1e-9
}

impl PriceTable {
    pub fn parse(origin: &str, text: &str) -> Result<Self, RunError> {
        let t: Self =
            toml::from_str(text).map_err(|e| RunError::usage(format!("{origin}: invalid price table: {e}")))?;
        for (d, p) in &t.deployments {
            if !(p.input_per_token >= 0.0 && p.output_per_token >= 0.0) {
                return Err(RunError::usage(format!(
                    "{origin}: deployments.{d}: prices must be >= 0"
                )));
            }
        }
        Ok(t)
    }

    pub fn price(&self, deployment: &str) -> Option<Price> {
        self.deployments.get(deployment).copied()
    }

    /// Expected cost of a request served by `deployment` with these token counts.
    pub fn cost(&self, deployment: &str, prompt_tokens: u64, completion_tokens: u64) -> Option<f64> {
        self.price(deployment)
            .map(|p| prompt_tokens as f64 * p.input_per_token + completion_tokens as f64 * p.output_per_token)
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
    fn default_table_covers_every_default_deployment() {
        let m = crate::stack::manifest::Manifest::builtin().unwrap();
        let t = PriceTable::parse("prices.toml", &m.prices.text).unwrap();
        let c = crate::stack::router_config::RouterConfig::parse("r", &m.router_config.text).unwrap();
        for d in &c.deployments {
            assert!(t.price(&d.id).is_some(), "no price for {}", d.id);
        }
        let cost = t.cost("primary", 10, 5).unwrap();
        assert!(t.agrees(cost, 10.0 * 0.000002 + 5.0 * 0.000008));
        assert!(!t.agrees(cost, cost * 1.01));
    }

    #[test]
    fn bad_tables_are_usage_errors() {
        let e = PriceTable::parse("p.toml", "[deployments.a]\ninput_per_token = -1\noutput_per_token = 0").unwrap_err();
        assert!(e.to_string().contains("deployments.a"), "{e}");
        let e = PriceTable::parse("p.toml", "[deployments.a]\ninput = 1").unwrap_err();
        assert!(e.to_string().starts_with("p.toml: invalid price table"), "{e}");
    }
}
