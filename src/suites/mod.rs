//! The suites, one file each, reading like the seed's bullet lists. Each returns its cases
//! from the plan; `all` gates them on what the target offers.

pub mod caching;
pub mod conformance;
pub mod fallbacks;
pub mod ledger;
pub mod routing;
pub mod secrets;
pub mod smoke;
pub mod support;

use crate::runner::registry::{Case, Plan, gate};

pub fn all(plan: &Plan) -> Vec<Case> {
    let mut cases = Vec::new();
    cases.extend(smoke::cases(plan));
    cases.extend(fallbacks::cases(plan));
    cases.extend(routing::cases(plan));
    cases.extend(caching::cases(plan));
    cases.extend(ledger::cases(plan));
    cases.extend(secrets::cases(plan));
    cases.extend(conformance::cases(plan));
    gate(plan, cases)
}
