//! Every suite's cases, gated on what the target offers.

use super::{
    caching, chaos, conformance, cooldown, fallbacks, gpu, ledger, limits, load, perf, pricing, routing, secrets,
    security, smoke, streaming, text,
};
use crate::runner::registry::{Case, Plan, gate};

pub fn all(plan: &Plan) -> Vec<Case> {
    let mut cases = Vec::new();
    cases.extend(smoke::cases(plan));
    cases.extend(fallbacks::cases(plan));
    cases.extend(streaming::cases(plan));
    cases.extend(routing::cases(plan));
    cases.extend(caching::cases(plan));
    cases.extend(ledger::cases(plan));
    cases.extend(pricing::cases(plan));
    cases.extend(secrets::cases(plan));
    cases.extend(security::cases(plan));
    cases.extend(perf::cases(plan));
    cases.extend(load::cases(plan));
    cases.extend(conformance::cases(plan));
    cases.extend(limits::cases(plan));
    cases.extend(gpu::cases(plan));
    cases.extend(text::cases(plan));
    cases.extend(chaos::cases(plan));
    spread(&mut cases, cooldown::cases(plan));
    gate(plan, cases)
}

/// Inserts `chain` evenly through `cases`, its first case first. The cooldown cases of a
/// group hold it one after another, and a case waiting for its group holds a test thread:
/// listed together they would leave every other suite a thread or two, while spread out the
/// chain runs beside them from the start.
fn spread(cases: &mut Vec<Case>, chain: Vec<Case>) {
    let step = cases.len() / chain.len().max(1) + 1;
    for (i, c) in chain.into_iter().enumerate() {
        let at = (i * step).min(cases.len());
        cases.insert(at, c);
    }
}
