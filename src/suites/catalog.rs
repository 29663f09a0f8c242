//! Every suite's cases, gated on what the target offers.

use super::{caching, conformance, fallbacks, gpu, ledger, routing, secrets, smoke};
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
    cases.extend(gpu::cases(plan));
    gate(plan, cases)
}
