//! `bandwidth`: throughput held to `rate_kbps` KB/s (1 KB = 1000 bytes), paced in pieces of
//! a tenth of a second's worth so a reader sees a steady trickle rather than bursts.

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Effect, Plan, Slot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bandwidth {
    #[serde(alias = "rate")]
    pub rate_kbps: u64,
}

impl Bandwidth {
    pub(crate) fn bytes_per_second(self) -> u64 {
        self.rate_kbps.saturating_mul(1000)
    }
}

impl Effect for Bandwidth {
    fn validate(&self) -> Result<(), String> {
        if self.rate_kbps == 0 {
            return Err("rate_kbps must be above 0 (to stop data, use a timeout toxic)".into());
        }
        Ok(())
    }
    fn shape(&self, _id: u64, plan: &mut Plan, _slot: &mut Slot, _rng: &mut ChaCha8Rng) {
        let rate = self.bytes_per_second();
        plan.rate = Some(plan.rate.map_or(rate, |r| r.min(rate)));
    }
}
