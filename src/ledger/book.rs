//! The run's ledger: every billed request the ledger cases made, accumulated per tenant and
//! per deployment, and written with the run as `ledger.json` and `ledger.csv`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub case: String,
    pub request: String,
    pub tenant: String,
    pub deployment: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// What the team's price table says this request costs.
    pub expected_cost: f64,
    /// What the router logged.
    pub router_cost: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub expected_cost: f64,
    pub router_cost: f64,
}

impl Totals {
    fn add(&mut self, e: &Entry) {
        self.requests += 1;
        self.prompt_tokens += e.prompt_tokens;
        self.completion_tokens += e.completion_tokens;
        self.expected_cost += e.expected_cost;
        self.router_cost += e.router_cost.unwrap_or(0.0);
    }
}

/// Totals keyed by `key(entry)`.
pub fn totals_by(entries: &[Entry], key: impl Fn(&Entry) -> &str) -> BTreeMap<String, Totals> {
    let mut out: BTreeMap<String, Totals> = BTreeMap::new();
    for e in entries {
        out.entry(key(e).to_owned()).or_default().add(e);
    }
    out
}

#[derive(Serialize)]
struct Report<'a> {
    currency: &'a str,
    by_tenant: BTreeMap<String, Totals>,
    by_deployment: BTreeMap<String, Totals>,
    entries: &'a [Entry],
}

/// Writes `ledger.json` and `ledger.csv` into `dir` (nothing if no request was billed);
/// returns the terminal table.
pub fn write(dir: &Path, currency: &str, entries: &[Entry]) -> anyhow::Result<Option<(Vec<PathBuf>, String)>> {
    if entries.is_empty() {
        return Ok(None);
    }
    let by_tenant = totals_by(entries, |e| &e.tenant);
    let by_deployment = totals_by(entries, |e| &e.deployment);
    std::fs::create_dir_all(dir)?;
    let json = dir.join("ledger.json");
    std::fs::write(
        &json,
        serde_json::to_string_pretty(&Report {
            currency,
            by_tenant: by_tenant.clone(),
            by_deployment: by_deployment.clone(),
            entries,
        })?,
    )?;
    let csv = dir.join("ledger.csv");
    let mut text = String::from("kind,key,requests,prompt_tokens,completion_tokens,expected_cost,router_cost\n");
    let mut table = format!(
        "{:<10} {:<28} {:>5} {:>8} {:>8} {:>14} {:>14}\n",
        "ledger", "", "reqs", "prompt", "compl", "expected", "router"
    );
    for (kind, map) in [("tenant", &by_tenant), ("deployment", &by_deployment)] {
        for (k, t) in map {
            text.push_str(&format!(
                "{kind},{k},{},{},{},{:.10},{:.10}\n",
                t.requests, t.prompt_tokens, t.completion_tokens, t.expected_cost, t.router_cost
            ));
            table.push_str(&format!(
                "{kind:<10} {k:<28} {:>5} {:>8} {:>8} {:>14.10} {:>14.10}\n",
                t.requests, t.prompt_tokens, t.completion_tokens, t.expected_cost, t.router_cost
            ));
        }
    }
    std::fs::write(&csv, text)?;
    Ok(Some((vec![json, csv], table)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_accumulate_per_key() {
        let e = |tenant: &str, cost: f64| Entry {
            case: "c".into(),
            request: "r".into(),
            tenant: tenant.into(),
            deployment: "d".into(),
            prompt_tokens: 3,
            completion_tokens: 2,
            expected_cost: cost,
            router_cost: Some(cost),
        };
        let all = [e("a", 1.0), e("a", 2.0), e("b", 4.0)];
        let t = totals_by(&all, |e| &e.tenant);
        assert_eq!(t["a"].requests, 2);
        assert_eq!(t["a"].expected_cost, 3.0);
        assert_eq!(t["b"].prompt_tokens, 3);
        assert_eq!(totals_by(&all, |e| &e.deployment)["d"].requests, 3);
    }
}
