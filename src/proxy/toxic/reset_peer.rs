//! `reset_peer`: the first chunk it meets starts its clock; data flows until `timeout_ms` later,
//! when the connection is reset (SO_LINGER 0, then close: a RST both ways). With 0 that first
//! chunk is not delivered: the reply becomes a reset. A direction that ends (FIN) before the
//! clock runs out is not reset.

use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Effect, Gate, Plan, Slot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetPeer {
    #[serde(alias = "timeout")]
    pub timeout_ms: u64,
}

impl Effect for ResetPeer {
    fn shape(&self, id: u64, plan: &mut Plan, slot: &mut Slot, _rng: &mut ChaCha8Rng) {
        let at = *slot.since.get_or_insert(plan.now) + Duration::from_millis(self.timeout_ms);
        if plan.now >= at {
            plan.gate(Gate::Reset);
        } else {
            plan.reset_at(at, id);
        }
    }
}
