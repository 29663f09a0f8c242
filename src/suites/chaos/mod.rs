//! Chaos: a dependency of the router dies under steady traffic, and every request is
//! accounted for (served, or lost with its error class, and its latency).
//! - `chaos::redis::killed_and_restarted`: the router keeps serving while its Redis is gone
//!   (what degrades is named: the response cache), and the shared state works again once Redis
//!   is back (a cached reply served from the new Redis)
//! - `chaos::router::killed_and_restarted`: the second router (same config, same Redis) is
//!   killed with requests in flight — they fail at once with a closed connection, not a hang;
//!   requests meanwhile are refused; once its readiness check passes every request is served
//!   (a cold-start burst of errors would fail the case); time to health and to traffic reported
//! - `chaos::region::<group>::<service>::<fault>`: a group whose deployments reach the
//!   simulator through services of their own (regions, each behind a gauntlet fault proxy):
//!   region A refused (killed), black-holed (the proxy's timeout toxic), slow (latency past the
//!   deployment's timeout), paused (SIGSTOP / `docker pause`), reset (every connection reset),
//!   truncated (answers cut), partitioned (`docker network disconnect`; for processes, the
//!   proxy holding every byte both ways)
//!   → traffic moves to the other region within a bound from the config (failures to cool down
//!   × the deployment's timeout, plus slack), and returns once the fault is healed and the
//!   cooldown over; failover and recovery times and requests lost are reported
//! - `chaos::network::<group>::<service>::<toxic>`: the proxy's other network faults (latency
//!   with jitter under the timeout, bandwidth, slicer, slow close) applied mid-traffic and
//!   removed: every request is still served, by the same region
//!
//! A case hurts only a stack this run started (`Case::hurts`), takes the services it hurts
//! exclusively (every other case using them waits), and restores what it broke before it
//! ends, failed or not.

mod account;
mod redis;
mod region;
mod router;
mod traffic;

use crate::runner::registry::{Case, Plan};

pub fn cases(plan: &Plan) -> Vec<Case> {
    let mut out = redis::cases(plan);
    out.extend(router::cases(plan));
    out.extend(region::cases(plan));
    out
}
