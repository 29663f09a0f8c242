//! What the accept loop, the connections and the control API share: the toxics (an
//! `ArcSwap` snapshot the data path loads without a lock), two change signals, the counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::toxic::Toxic;

/// A toxic as the proxy holds it: with an id no later toxic reuses, so per-connection state
/// (a clock, a byte count) never carries over to a new toxic of the same name.
#[derive(Debug)]
pub(crate) struct Active {
    pub id: u64,
    pub toxic: Toxic,
}

/// The proxy's counters (`GET /__gauntlet/proxy/stats`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStats {
    /// Connections forwarded upstream (control connections are not counted here).
    pub connections_accepted: u64,
    /// Forwarded connections open now.
    pub connections_open: u64,
    /// Bytes delivered client to server, and server to client.
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// Forwarded connections whose upstream could not be reached (closed with a RST).
    pub upstream_failures: u64,
    /// Connections served by the control API.
    pub control_connections: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    pub open: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub upstream_failures: AtomicU64,
    pub control: AtomicU64,
}

/// Why a toxic was not added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("toxic {0:?} exists (remove it first)")]
    Duplicate(String),
    #[error("{0}")]
    Invalid(String),
}

pub(crate) struct Shared {
    pub upstream: String,
    pub seed: u64,
    toxics: ArcSwap<Vec<Active>>,
    /// Writers take turns, so two adds of one name cannot both pass the duplicate check.
    edit: Mutex<()>,
    next_id: AtomicU64,
    /// Bumped on every change of the toxics: wakes the lanes holding data for a `timeout`.
    pub changed: watch::Sender<u64>,
    /// Bumped by `POST /reset`: every forwarded connection open then resets itself.
    pub resets: watch::Sender<u64>,
    pub counters: Counters,
}

impl Shared {
    pub fn new(upstream: String, seed: u64) -> Self {
        Self {
            upstream,
            seed,
            toxics: ArcSwap::from_pointee(Vec::new()),
            edit: Mutex::new(()),
            next_id: AtomicU64::new(1),
            changed: watch::Sender::new(0),
            resets: watch::Sender::new(0),
            counters: Counters::default(),
        }
    }

    pub fn toxics(&self) -> arc_swap::Guard<Arc<Vec<Active>>> {
        self.toxics.load()
    }

    pub fn list(&self) -> Vec<Toxic> {
        self.toxics.load().iter().map(|a| a.toxic.clone()).collect()
    }

    /// Whether the toxic `id` is still in place.
    pub fn holds(&self, id: u64) -> bool {
        self.toxics.load().iter().any(|a| a.id == id)
    }

    fn edit<R>(&self, f: impl FnOnce(&mut Vec<Active>) -> R) -> R {
        let _turn = self.edit.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut next: Vec<Active> = self
            .toxics
            .load()
            .iter()
            .map(|a| Active {
                id: a.id,
                toxic: a.toxic.clone(),
            })
            .collect();
        let r = f(&mut next);
        self.toxics.store(Arc::new(next));
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
        r
    }

    pub fn add(&self, toxic: Toxic) -> Result<(), AddError> {
        toxic.validate().map_err(AddError::Invalid)?;
        self.edit(|all| {
            if all.iter().any(|a| a.toxic.name == toxic.name) {
                return Err(AddError::Duplicate(toxic.name));
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            all.push(Active { id, toxic });
            Ok(())
        })
    }

    pub fn remove(&self, name: &str) -> bool {
        self.edit(|all| {
            let before = all.len();
            all.retain(|a| a.toxic.name != name);
            all.len() < before
        })
    }

    pub fn clear(&self) {
        self.edit(Vec::clear);
    }

    /// Removes every toxic, then resets every forwarded connection open now.
    pub fn reset(&self) {
        self.clear();
        self.resets.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ProxyStats {
            connections_accepted: get(&c.accepted),
            connections_open: get(&c.open),
            bytes_up: get(&c.bytes_up),
            bytes_down: get(&c.bytes_down),
            upstream_failures: get(&c.upstream_failures),
            control_connections: get(&c.control),
        }
    }
}

/// Whether a toxic of this `name` and `toxicity` affects connection number `conn`: a pure
/// function of the seed, so a run replays, and every chunk of a connection gets the same
/// answer. Exactly never at 0 and always at 1.
pub(crate) fn affects(seed: u64, conn: u64, name: &str, toxicity: f64) -> bool {
    if toxicity >= 1.0 {
        return true;
    }
    if toxicity <= 0.0 {
        return false;
    }
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let x = mix(mix(seed ^ h).wrapping_add(conn));
    // The top 53 bits as a uniform draw in [0, 1).
    let u = (x >> 11) as f64 / (1u64 << 53) as f64;
    u < toxicity
}

/// splitmix64's finaliser: neighbouring inputs (connection 7, 8) give unrelated outputs.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toxicity_is_exact_at_the_ends_and_about_right_between() {
        assert!((0..1000).all(|c| affects(1, c, "t", 1.0)));
        assert!((0..1000).all(|c| !affects(1, c, "t", 0.0)));
        let hits = (0..10_000).filter(|&c| affects(1, c, "t", 0.3)).count();
        assert!((2_700..3_300).contains(&hits), "{hits} of 10000 at 0.3");
        // The same seed decides the same; another name decides independently.
        let a: Vec<bool> = (0..64).map(|c| affects(1, c, "t", 0.5)).collect();
        assert_eq!(a, (0..64).map(|c| affects(1, c, "t", 0.5)).collect::<Vec<_>>());
        assert_ne!(a, (0..64).map(|c| affects(1, c, "u", 0.5)).collect::<Vec<_>>());
    }

    #[test]
    fn a_name_is_unique_until_removed() {
        let s = Shared::new("x:1".into(), 0);
        s.add(Toxic::timeout("t", 0)).unwrap();
        assert!(matches!(s.add(Toxic::latency("t", 1, 0)), Err(AddError::Duplicate(_))));
        assert!(s.remove("t"));
        assert!(!s.remove("t"));
        s.add(Toxic::latency("t", 1, 0)).unwrap();
        assert_eq!(s.list(), vec![Toxic::latency("t", 1, 0)]);
    }
}
