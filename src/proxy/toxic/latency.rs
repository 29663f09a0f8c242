//! `latency`: every chunk (and the end of the stream) delivered `latency_ms` ± `jitter_ms`
//! after it arrived. The delay counts from arrival, not from when the previous chunk left, so a
//! steady stream is shifted, not slowed.

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Effect, Plan, Slot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    #[serde(alias = "latency")]
    pub latency_ms: u64,
    /// Uniform in ±jitter_ms, a delay never below zero.
    #[serde(default, alias = "jitter")]
    pub jitter_ms: u64,
}

impl Effect for Latency {
    fn shape(&self, _id: u64, plan: &mut Plan, _slot: &mut Slot, rng: &mut ChaCha8Rng) {
        let ms = if self.jitter_ms == 0 {
            self.latency_ms
        } else {
            let low = self.latency_ms.saturating_sub(self.jitter_ms);
            rng.random_range(low..=self.latency_ms.saturating_add(self.jitter_ms))
        };
        plan.delay += Duration::from_millis(ms);
    }
}
