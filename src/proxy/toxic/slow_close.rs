//! `slow_close`: the data goes as it comes; the end of the stream (the FIN) follows it only
//! `delay_ms` later.

use std::time::Duration;

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Effect, Plan, Slot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowClose {
    #[serde(alias = "delay")]
    pub delay_ms: u64,
}

impl Effect for SlowClose {
    fn shape(&self, _id: u64, plan: &mut Plan, _slot: &mut Slot, _rng: &mut ChaCha8Rng) {
        if plan.eof {
            plan.close_delay = plan.close_delay.max(Duration::from_millis(self.delay_ms));
        }
    }
}
