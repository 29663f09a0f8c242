//! The simulator's shared state: deployments with their default behaviour and rules, the
//! journal, and the counters behind /metrics. Locks are held only to copy or push small
//! values, never across an await.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::DeploymentSpec;
use super::model::{Behaviour, JournalEntry, JournalQuery, Rule, When};
use super::request::{CachePrefix, CacheUse, fnv};

/// Journal entries kept at most (oldest dropped first): a soak must not grow without bound.
pub const JOURNAL_CAP: usize = 100_000;

/// Prompt-cache prefixes a deployment remembers at most (oldest forgotten first), for the
/// same reason.
pub const PROMPT_CACHE_CAP: usize = 100_000;

pub struct RuleSlot {
    pub id: u64,
    pub rule: Rule,
    /// Matching requests seen so far (the rule's own count, for first/from-to/rate).
    pub seen: AtomicU64,
}

pub struct Deployment {
    pub spec: DeploymentSpec,
    pub behaviour: RwLock<Behaviour>,
    pub rules: RwLock<Vec<Arc<RuleSlot>>>,
    pub metrics: Metrics,
    pub prompt_cache: PromptCache,
}

/// The cacheable prefixes a deployment has seen, like a provider's prompt cache but without
/// expiry, so whether a request reads or creates one depends only on the requests before it.
#[derive(Default)]
pub struct PromptCache(Mutex<(HashSet<u64>, VecDeque<u64>)>);

impl PromptCache {
    /// How a request with this prefix uses the cache: created the first time, read after.
    pub fn touch(&self, prefix: CachePrefix) -> CacheUse {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (seen, order) = &mut *guard;
        if seen.contains(&prefix.key) {
            return CacheUse {
                read: prefix.tokens,
                creation: 0,
            };
        }
        if order.len() >= PROMPT_CACHE_CAP
            && let Some(old) = order.pop_front()
        {
            seen.remove(&old);
        }
        seen.insert(prefix.key);
        order.push_back(prefix.key);
        CacheUse {
            read: 0,
            creation: prefix.tokens,
        }
    }

    pub fn clear(&self) {
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        guard.0.clear();
        guard.1.clear();
    }
}

#[derive(Default)]
pub struct Metrics {
    pub running: AtomicI64,
    pub success: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub generation_tokens: AtomicU64,
    pub faults: Mutex<BTreeMap<&'static str, u64>>,
    pub ttft: Histogram,
    pub e2e: Histogram,
}

/// A Prometheus histogram with fixed buckets (seconds).
pub struct Histogram {
    pub counts: [AtomicU64; BUCKETS.len()],
    pub sum_us: AtomicU64,
    pub total: AtomicU64,
}

pub const BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
            total: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_us.fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct State {
    pub seed: u64,
    pub deployments: RwLock<BTreeMap<String, Arc<Deployment>>>,
    journal: Mutex<VecDeque<JournalEntry>>,
    next_seq: AtomicU64,
    next_rule: AtomicU64,
}

/// What decided a request's behaviour.
pub struct Decision {
    pub behaviour: Behaviour,
    pub tag: Option<String>,
}

impl State {
    pub fn new(seed: u64, specs: Vec<DeploymentSpec>) -> Self {
        let s = Self {
            seed,
            deployments: RwLock::default(),
            journal: Mutex::default(),
            next_seq: AtomicU64::new(1),
            next_rule: AtomicU64::new(1),
        };
        for d in specs {
            s.add_deployment(d);
        }
        s
    }

    pub fn add_deployment(&self, spec: DeploymentSpec) -> bool {
        let mut all = self.deployments.write().unwrap_or_else(|e| e.into_inner());
        if all.contains_key(&spec.name) {
            return false;
        }
        let d = Deployment {
            behaviour: RwLock::new(spec.behaviour.clone()),
            rules: RwLock::default(),
            metrics: Metrics::default(),
            prompt_cache: PromptCache::default(),
            spec,
        };
        all.insert(d.spec.name.clone(), Arc::new(d));
        true
    }

    pub fn deployment(&self, name: &str) -> Option<Arc<Deployment>> {
        self.deployments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    pub fn add_rule(&self, d: &Deployment, rule: Rule) -> u64 {
        let id = self.next_rule.fetch_add(1, Ordering::Relaxed);
        d.rules
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(RuleSlot {
                id,
                rule,
                seen: AtomicU64::new(0),
            }));
        id
    }

    /// The behaviour for a request: the first rule that matches and whose `when` selects this
    /// request, else the deployment's default.
    pub fn decide(&self, d: &Deployment, user: Option<&str>, text: &str) -> Decision {
        let rules = d.rules.read().unwrap_or_else(|e| e.into_inner()).clone();
        for slot in rules {
            let carries = match &slot.rule.tag {
                None => true,
                Some(t) => user.is_some_and(|u| u.contains(t.as_str())) || text.contains(t.as_str()),
            };
            if !carries {
                continue;
            }
            let n = slot.seen.fetch_add(1, Ordering::Relaxed) + 1;
            let applies = match &slot.rule.when {
                When::Always { .. } => true,
                When::First { first } => n <= *first,
                When::Range { from, to } => (*from..=*to).contains(&n),
                When::Rate { rate } => {
                    unit(fnv(&[
                        &self.seed.to_le_bytes(),
                        &slot.id.to_le_bytes(),
                        &n.to_le_bytes(),
                    ])) < *rate
                }
            };
            if applies {
                return Decision {
                    behaviour: slot.rule.behaviour.clone(),
                    tag: slot.rule.tag.clone(),
                };
            }
        }
        Decision {
            behaviour: d.behaviour.read().unwrap_or_else(|e| e.into_inner()).clone(),
            tag: None,
        }
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    pub fn journal_push(&self, e: JournalEntry) {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        if j.len() >= JOURNAL_CAP {
            j.pop_front();
        }
        j.push_back(e);
    }

    /// Updates the entry `seq` once its outcome is known.
    pub fn journal_finish(&self, seq: u64, outcome: &str, completion_tokens: u64, latency_ms: u64, cache: CacheUse) {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        // Entries are pushed in roughly seq order; search from the back, where recent ones are.
        if let Some(e) = j.iter_mut().rev().find(|e| e.seq == seq) {
            e.outcome = outcome.to_owned();
            e.completion_tokens = completion_tokens;
            e.latency_ms = latency_ms;
            e.cache_read_input_tokens = cache.read;
            e.cache_creation_input_tokens = cache.creation;
        }
    }

    /// Entries matching `q`, in arrival order. Tag matching uses the full prompt text kept in
    /// `texts`, not the excerpt.
    pub fn journal(&self, q: &JournalQuery) -> Vec<JournalEntry> {
        let j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        j.iter()
            .filter(|e| q.deployment.as_deref().is_none_or(|d| e.deployment == d))
            .filter(|e| q.since_seq.is_none_or(|s| e.seq > s))
            .filter(|e| {
                q.tag.as_deref().is_none_or(|t| {
                    e.user.as_deref().is_some_and(|u| u.contains(t))
                        || e.prompt_excerpt.contains(t)
                        || e.tag_matched.as_deref() == Some(t)
                })
            })
            .cloned()
            .collect()
    }

    pub fn reset(&self) {
        self.journal.lock().unwrap_or_else(|e| e.into_inner()).clear();
        for d in self.deployments.read().unwrap_or_else(|e| e.into_inner()).values() {
            d.rules.write().unwrap_or_else(|e| e.into_inner()).clear();
            d.prompt_cache.clear();
            *d.behaviour.write().unwrap_or_else(|e| e.into_inner()) = d.spec.behaviour.clone();
        }
    }
}

/// A hash mapped to [0, 1).
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}
