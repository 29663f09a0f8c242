//! The simulator's shared state: deployments with their default behaviour and rules, the
//! journal, and the counters behind /metrics. Locks are held only to copy or push small
//! values, never across an await.
//!
//! Which requests a tag selects is [`Tag`]'s rule alone: a rule applies to the requests
//! [`Tag::carried_by`] says carry its tag, and the journal records [`carried_tags`], the same
//! rule turned into a list, so a journal query finds exactly the requests the tag's rules see.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::config::DeploymentSpec;
use super::model::{Behaviour, JournalEntry, JournalQuery, Outcome, Rule, When};
use super::request::{CachePrefix, CacheUse, fnv, unit};
use crate::tag::Tag;

/// The state every handler shares.
pub type Shared = Arc<State>;

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

/// A Prometheus histogram with fixed buckets (seconds). An observation bumps one bucket and
/// the sum, so a scrape that adds the buckets up (see `metrics`) gets cumulative counts whose
/// `+Inf` is the count however observations interleave with it.
pub struct Histogram {
    /// Observations per bucket, not cumulative: `counts[i]` those in (BUCKETS[i-1], BUCKETS[i]],
    /// the last those above every bound (the `+Inf` bucket's own).
    pub counts: [AtomicU64; BUCKETS.len() + 1],
    pub sum_us: AtomicU64,
}

pub const BUCKETS: [f64; 12] = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, secs: f64) {
        let i = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add((secs * 1e6) as u64, Ordering::Relaxed);
    }
}

pub struct State {
    pub seed: u64,
    /// The config's model → tokenizer map (see [`crate::sim::tokenizer`]).
    pub tokenizers: crate::sim::tokenizer::TokenizerMap,
    pub deployments: RwLock<BTreeMap<String, Arc<Deployment>>>,
    journal: Mutex<VecDeque<JournalEntry>>,
    next_seq: AtomicU64,
    next_rule: AtomicU64,
}

/// What decided a request's behaviour.
pub struct Decision {
    pub behaviour: Behaviour,
    /// The tag of the rule that decided, if a tagged rule did.
    pub tag: Option<Tag>,
}

/// Every tag a request with this `user` and prompt text carries: its prompt's `[tag]` markers
/// and its `user` if that is a tag. `carried_tags(u, x).contains(t)` is `t.carried_by(u, x)`.
pub fn carried_tags(user: Option<&str>, text: &str) -> Vec<Tag> {
    let mut tags = Tag::all_in(text);
    if let Some(u) = user.and_then(|u| u.parse::<Tag>().ok())
        && !tags.contains(&u)
    {
        tags.push(u);
    }
    tags
}

impl State {
    pub fn new(seed: u64, specs: Vec<DeploymentSpec>) -> Self {
        let s = Self {
            seed,
            tokenizers: Default::default(),
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

    /// The behaviour for a request: the first rule that matches (untagged, or its tag carried
    /// by the request) and whose `when` selects this request, else the deployment's default.
    pub fn decide(&self, d: &Deployment, user: Option<&str>, text: &str) -> Decision {
        let rules = d.rules.read().unwrap_or_else(|e| e.into_inner()).clone();
        for slot in rules {
            if !slot.rule.tag.as_ref().is_none_or(|t| t.carried_by(user, text)) {
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
    pub fn journal_finish(&self, seq: u64, outcome: Outcome, completion_tokens: u64, latency_ms: u64, cache: CacheUse) {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        // Entries are pushed in roughly seq order; search from the back, where recent ones are.
        if let Some(e) = j.iter_mut().rev().find(|e| e.seq == seq) {
            e.outcome = outcome;
            e.completion_tokens = completion_tokens;
            e.latency_ms = latency_ms;
            e.cache_read_input_tokens = cache.read;
            e.cache_creation_input_tokens = cache.creation;
        }
    }

    /// Entries matching `q` ([`JournalQuery::matches`]), in arrival order.
    pub fn journal(&self, q: &JournalQuery) -> Vec<JournalEntry> {
        let j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        j.iter().filter(|e| q.matches(e)).cloned().collect()
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::sim::model::Fault;

    fn tag(s: &str) -> Tag {
        s.parse().unwrap()
    }

    /// What the server does with a request: decide by the rules, journal it with the tags it
    /// carried; returns the fault that decided it.
    fn call(s: &State, d: &Deployment, user: Option<&str>, text: &str) -> Option<Fault> {
        let decision = s.decide(d, user, text);
        s.journal_push(JournalEntry {
            seq: s.next_seq(),
            deployment: d.spec.name.clone(),
            user: user.map(str::to_owned),
            tag_matched: decision.tag,
            tags: carried_tags(user, text),
            prompt_excerpt: text.chars().take(200).collect(),
            ..JournalEntry::default()
        });
        decision.behaviour.fault
    }

    fn by_tag(s: &State, t: &Tag) -> Vec<u64> {
        let q = JournalQuery {
            tag: Some(t.clone()),
            ..JournalQuery::default()
        };
        s.journal(&q).iter().map(|e| e.seq).collect()
    }

    #[test]
    fn rules_and_journal_queries_select_the_same_requests() {
        let s = State::new(0, vec![DeploymentSpec::named("a")]);
        let d = s.deployment("a").unwrap();
        let t = tag("t1");
        s.add_rule(&d, Rule::tagged(&t, Fault::status(503)));
        // seq 1: the sub-tag's marker, and `t1` as a plain word: neither carries `t1`.
        assert_eq!(call(&s, &d, None, "[t1-fb] t1 hello"), None);
        // seq 2: `user` is the tag.
        assert_eq!(call(&s, &d, Some("t1"), "hello"), Some(Fault::status(503)));
        // seq 3: `user` merely contains the tag.
        assert_eq!(call(&s, &d, Some("t1-fb"), "hello"), None);
        // seq 4: the marker after an unclosed bracket, past the excerpt's 200 characters.
        let late = format!("{} [see [t1] here", "word ".repeat(60));
        assert_eq!(call(&s, &d, None, &late), Some(Fault::status(503)));
        assert_eq!(by_tag(&s, &t), [2, 4]);
        assert_eq!(by_tag(&s, &t.sub("fb")), [1, 3]);
        assert!(by_tag(&s, &tag("hello")).is_empty());
        assert_eq!(s.journal(&JournalQuery::default())[1].tag_matched, Some(t));
    }

    proptest! {
        /// Over texts dense in brackets, tags and near-tags: the journal's tags are exactly the
        /// tags `carried_by` says the request carries.
        #[test]
        fn carried_tags_are_what_carried_by_says(
            user in prop::option::of("(t1|t1-fb|xy|t1 )"),
            text in "(\\[|\\]|t1|-fb|xy| ){0,24}",
        ) {
            let tags = carried_tags(user.as_deref(), &text);
            for t in ["t1", "t1-fb", "fb", "xy", "t1xy", "t1-fbt1"].map(tag) {
                prop_assert_eq!(tags.contains(&t), t.carried_by(user.as_deref(), &text), "{} {:?}", t, text);
            }
            for t in &tags {
                prop_assert!(t.carried_by(user.as_deref(), &text), "{} {:?}", t, text);
            }
        }
    }
}
