//! `limit_data`: once `bytes` have passed in its direction (counted from the first chunk it
//! met), the connection is closed (FIN both ways); the chunk that crosses the limit is cut at it.

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Effect, Gate, Plan, Slot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitData {
    pub bytes: u64,
}

impl Effect for LimitData {
    fn shape(&self, id: u64, plan: &mut Plan, slot: &mut Slot, _rng: &mut ChaCha8Rng) {
        if plan.eof {
            return;
        }
        let left = self.bytes.saturating_sub(slot.passed);
        if left == 0 {
            plan.gate(Gate::Close);
            return;
        }
        plan.cap = Some(plan.cap.map_or(left, |c| c.min(left)));
        plan.counting.push(id);
    }
}
