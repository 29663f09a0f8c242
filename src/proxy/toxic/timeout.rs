//! `timeout`: nothing passes. The first chunk it meets starts its clock; `timeout_ms` later the
//! connection is closed. With 0 it is never closed: the data (and the FIN) wait, unread past
//! what the buffers hold, until the toxic is removed, and then flow again. Toxiproxy drops what
//! it holds; keeping it lets a case model a stall that recovers.

use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Effect, Gate, Plan, Slot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timeout {
    #[serde(alias = "timeout")]
    pub timeout_ms: u64,
}

impl Effect for Timeout {
    fn shape(&self, _id: u64, plan: &mut Plan, slot: &mut Slot, _rng: &mut ChaCha8Rng) {
        let since = *slot.since.get_or_insert(plan.now);
        if self.timeout_ms == 0 {
            plan.gate(Gate::Hold { until: None });
            return;
        }
        let until = since + Duration::from_millis(self.timeout_ms);
        plan.gate(if plan.now >= until {
            Gate::Close
        } else {
            Gate::Hold { until: Some(until) }
        });
    }
}
