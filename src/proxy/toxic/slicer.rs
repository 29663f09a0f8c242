//! `slicer`: each chunk cut into slices of `average_size` ± `size_variation` bytes (uniform; the
//! last may be shorter), `delay_us` apart, so a reader sees many small reads: a server's reply
//! split across TCP segments.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{Effect, Plan, Slot};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slicer {
    pub average_size: u64,
    #[serde(default)]
    pub size_variation: u64,
    #[serde(default, alias = "delay")]
    pub delay_us: u64,
}

impl Slicer {
    /// The next slice's size, at least 1.
    pub(crate) fn next_size(&self, rng: &mut ChaCha8Rng) -> usize {
        let size = if self.size_variation == 0 {
            self.average_size
        } else {
            rng.random_range(self.average_size - self.size_variation..=self.average_size + self.size_variation)
        };
        usize::try_from(size.max(1)).unwrap_or(usize::MAX)
    }
}

impl Effect for Slicer {
    fn validate(&self) -> Result<(), String> {
        if self.average_size == 0 {
            return Err("average_size must be above 0".into());
        }
        if self.size_variation >= self.average_size {
            return Err(format!(
                "size_variation {} must be below average_size {}",
                self.size_variation, self.average_size
            ));
        }
        Ok(())
    }
    fn shape(&self, _id: u64, plan: &mut Plan, _slot: &mut Slot, _rng: &mut ChaCha8Rng) {
        if plan.slicer.is_none() {
            plan.slicer = Some(*self);
        }
    }
}
