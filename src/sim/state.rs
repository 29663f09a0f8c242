//! The simulator's shared state: deployments with their default behaviour and rules, the
//! journal, and the counters behind /metrics.
//!
//! A model call reads the deployments, a deployment's behaviour and its rules on every
//! request, and they change only when the admin API says so: each is a [`Snapshot`], an `Arc`
//! the request path loads without a lock and a writer replaces whole. Counters are atomics. The
//! journal is the one lock a plain call takes, once, to append: it needs a total order, and an
//! append is a few stores (an entry it evicts is dropped after the lock is released). The
//! prompt cache and the fault counts lock too, only for the calls that use them.
//!
//! Which requests a tag selects is [`Tag`]'s rule alone: a rule applies to the requests
//! [`Tag::carried_by`] says carry its tag, and the journal records [`carried_tags`], the same
//! rule turned into a list, so a journal query finds exactly the requests the tag's rules see.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use axum::http::{HeaderMap, HeaderValue};
use serde_json::Value;

use super::config::DeploymentSpec;
use super::model::{Behaviour, JournalEntry, JournalQuery, Outcome, Rule, When};
use super::request::{CachePrefix, CacheUse, fnv, unit};
use super::text::Charset;
use super::tokenizer::Tokenizer;
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
    /// `spec.name` as the `x-sim-deployment` response header (None if it cannot be one).
    pub header: Option<HeaderValue>,
    pub behaviour: Snapshot<Behaviour>,
    pub rules: Snapshot<Vec<Arc<RuleSlot>>>,
    pub metrics: Metrics,
    pub prompt_cache: PromptCache,
}

/// A value read on every request and changed rarely: readers load the current `Arc` without
/// a lock; a writer clones it, changes the clone and swaps it in, writers taking turns so
/// none loses another's change. A reader that loaded before a swap finishes with the value it
/// loaded.
pub struct Snapshot<T> {
    current: ArcSwap<T>,
    writer: Mutex<()>,
}

impl<T: Clone> Snapshot<T> {
    pub fn new(v: T) -> Self {
        Self {
            current: ArcSwap::from_pointee(v),
            writer: Mutex::new(()),
        }
    }

    /// The current value, for a short look (the request path).
    pub fn load(&self) -> arc_swap::Guard<Arc<T>> {
        self.current.load()
    }

    /// The current value, to keep.
    pub fn get(&self) -> Arc<T> {
        self.current.load_full()
    }

    /// Changes the value; what `f` returns.
    pub fn update<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let _turn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut v = T::clone(&self.current.load());
        let r = f(&mut v);
        self.current.store(Arc::new(v));
        r
    }

    pub fn set(&self, v: T) {
        self.update(|cur| *cur = v);
    }
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

impl Metrics {
    /// A whole (not streamed) reply sent `took` after the call began: its first token and
    /// its end are the same moment.
    pub fn answered(&self, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        self.ttft.observe(secs);
        self.e2e.observe(secs);
        self.success.fetch_add(1, Ordering::Relaxed);
    }
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
    deployments: Snapshot<BTreeMap<String, Arc<Deployment>>>,
    journal: Mutex<Journal>,
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
            deployments: Snapshot::new(BTreeMap::new()),
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
        self.deployments.update(|all| {
            if all.contains_key(&spec.name) {
                return false;
            }
            let d = Deployment {
                header: HeaderValue::from_str(&spec.name).ok(),
                behaviour: Snapshot::new(spec.behaviour.clone()),
                rules: Snapshot::new(Vec::new()),
                metrics: Metrics::default(),
                prompt_cache: PromptCache::default(),
                spec,
            };
            all.insert(d.spec.name.clone(), Arc::new(d));
            true
        })
    }

    /// Every deployment, by name.
    pub fn deployments(&self) -> Arc<BTreeMap<String, Arc<Deployment>>> {
        self.deployments.get()
    }

    pub fn deployment(&self, name: &str) -> Option<Arc<Deployment>> {
        self.deployments.load().get(name).cloned()
    }

    pub fn add_rule(&self, d: &Deployment, rule: Rule) -> u64 {
        let id = self.next_rule.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(RuleSlot {
            id,
            rule,
            seen: AtomicU64::new(0),
        });
        d.rules.update(|rules| rules.push(slot));
        id
    }

    /// The behaviour for a request: the first rule that matches (untagged, or its tag carried
    /// by the request) and whose `when` selects this request, else the deployment's default.
    pub fn decide(&self, d: &Deployment, user: Option<&str>, text: &str) -> Decision {
        for slot in d.rules.load().iter() {
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
            behaviour: Behaviour::clone(&d.behaviour.load()),
            tag: None,
        }
    }

    /// Appends an entry, numbering it (the journal is in `seq` order); returns its `seq`.
    pub fn journal_push(&self, r: Record, text: EntryText<'_>) -> u64 {
        let (seq, evicted);
        {
            let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
            seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            evicted = j.make_room();
            let text = j.write(&text);
            j.entries.push_back(Kept::new(seq, r, text));
        }
        // Dropped here, not under the lock the next call waits for.
        drop(evicted);
        seq
    }

    /// [`State::journal_push`] of a whole entry (its `seq` is the journal's to give).
    pub fn journal_push_entry(&self, e: JournalEntry) -> u64 {
        let text = EntryText {
            deployment: &e.deployment,
            path: &e.path,
            model: &e.model,
            prompt: &e.prompt_excerpt,
            headers: EntryHeaders::Pairs(&e.headers),
        };
        let r = Record {
            time_ms: e.time_ms,
            stream: e.stream,
            user: e.user.clone(),
            metadata: e.metadata.clone(),
            tag_matched: e.tag_matched.clone(),
            tags: e.tags.clone(),
            prompt_tokens: e.prompt_tokens,
            completion_tokens: e.completion_tokens,
            cache_read_input_tokens: e.cache_read_input_tokens,
            cache_creation_input_tokens: e.cache_creation_input_tokens,
            outcome: e.outcome,
            latency_ms: e.latency_ms,
            charset: e.charset,
            tokenizer: e.tokenizer,
            reply_fnv: u64::from_str_radix(&e.reply_fnv, 16).ok(),
        };
        self.journal_push(r, text)
    }

    /// Updates the entry `seq` once its outcome is known.
    pub fn journal_finish(&self, seq: u64, outcome: Outcome, completion_tokens: u64, latency_ms: u64, cache: CacheUse) {
        let mut j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        // Entries are in seq order without gaps: the entry is `seq - first` from the front.
        let first = j.entries.front().map_or(0, |k| k.seq);
        let at = seq.checked_sub(first).and_then(|i| usize::try_from(i).ok());
        if let Some(k) = at.and_then(|i| j.entries.get_mut(i)).filter(|k| k.seq == seq) {
            k.outcome = outcome;
            k.completion_tokens = completion_tokens;
            k.latency_ms = latency_ms;
            k.cache_read_input_tokens = cache.read;
            k.cache_creation_input_tokens = cache.creation;
        }
    }

    /// Entries matching `q` ([`JournalQuery::matches`]), in arrival order.
    pub fn journal(&self, q: &JournalQuery) -> Vec<JournalEntry> {
        let j = self.journal.lock().unwrap_or_else(|e| e.into_inner());
        let no_tags = Vec::new();
        j.entries
            .iter()
            .filter(|k| {
                // The deployment is read only when the query names one.
                let deployment = match q.deployment {
                    Some(_) => j.text(k.text.at, k.text.deployment),
                    None => String::new(),
                };
                let (tags, tag_matched) = match &k.extra {
                    Some(x) => (&x.tags, x.tag_matched.as_ref()),
                    None => (&no_tags, None),
                };
                q.selects(&deployment, k.seq, tags, tag_matched)
            })
            .map(|k| j.entry(k))
            .collect()
    }

    pub fn reset(&self) {
        let old = std::mem::take(&mut *self.journal.lock().unwrap_or_else(|e| e.into_inner()));
        drop(old);
        for d in self.deployments.load().values() {
            d.rules.set(Vec::new());
            d.prompt_cache.clear();
            d.behaviour.set(d.spec.behaviour.clone());
        }
    }
}

/// The journal: its entries, oldest first, and their text.
///
/// Full, it holds a hundred thousand entries, far more than any cache, and every call appends
/// one and evicts the oldest: the memory they take is what an append costs (profiled, nearly
/// every cache miss of a plain call was here). So an entry keeps only numbers and its text's
/// place, 128 bytes, the fields calls seldom set boxed apart; the entries' ring grows to
/// exactly [`JOURNAL_CAP`], so a full journal writes each new entry over the one it evicts,
/// into memory the eviction just read; and the text is a ring of bytes of its own.
#[derive(Default)]
struct Journal {
    entries: VecDeque<Kept>,
    /// Every kept entry's deployment, path, model, prompt excerpt and headers, in entry order.
    /// Entries come and go in the same order, so their text is a ring, appended at the back
    /// and dropped from the front: an entry's text costs no allocation of its own, where five
    /// per entry, freed a hundred thousand calls later by whichever thread evicts them, made
    /// the allocator a cost of every call (glibc consolidating, and locking other threads'
    /// arenas).
    text: VecDeque<u8>,
    /// Bytes dropped from the front of `text` since the journal began: a [`Span`] counts from
    /// there.
    dropped: usize,
}

/// A kept entry: what a [`Record`] says, the fields most calls leave empty boxed apart.
struct Kept {
    seq: u64,
    time_ms: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cache_read_input_tokens: u64,
    cache_creation_input_tokens: u64,
    latency_ms: u64,
    reply_fnv: Option<u64>,
    outcome: Outcome,
    stream: bool,
    charset: Charset,
    tokenizer: Tokenizer,
    extra: Option<Box<Extra>>,
    text: Span,
}

/// A [`Record`]'s fields a plain call leaves empty.
struct Extra {
    user: Option<String>,
    metadata: Option<Value>,
    tag_matched: Option<Tag>,
    tags: Vec<Tag>,
}

impl Kept {
    fn new(seq: u64, r: Record, text: Span) -> Self {
        let extra =
            (r.user.is_some() || r.metadata.is_some() || r.tag_matched.is_some() || !r.tags.is_empty()).then(|| {
                Box::new(Extra {
                    user: r.user,
                    metadata: r.metadata,
                    tag_matched: r.tag_matched,
                    tags: r.tags,
                })
            });
        Self {
            seq,
            time_ms: r.time_ms,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            cache_read_input_tokens: r.cache_read_input_tokens,
            cache_creation_input_tokens: r.cache_creation_input_tokens,
            latency_ms: r.latency_ms,
            reply_fnv: r.reply_fnv,
            outcome: r.outcome,
            stream: r.stream,
            charset: r.charset,
            tokenizer: r.tokenizer,
            extra,
            text,
        }
    }
}

/// Where an entry's text is in [`Journal::text`]: its deployment, path, model, excerpt and
/// headers (`name NUL value NUL` pairs), one after the other from `at`.
struct Span {
    at: usize,
    deployment: u32,
    path: u32,
    model: u32,
    excerpt: u32,
    headers: u32,
}

impl Span {
    fn len(&self) -> usize {
        [self.deployment, self.path, self.model, self.excerpt, self.headers]
            .iter()
            .map(|n| *n as usize)
            .sum()
    }
}

impl Journal {
    /// Room for one more entry: the oldest evicted (returned, to be dropped by the caller) when
    /// the journal is full, else the ring grown when it must, towards exactly [`JOURNAL_CAP`].
    fn make_room(&mut self) -> Option<Kept> {
        if self.entries.len() >= JOURNAL_CAP {
            let k = self.entries.pop_front()?;
            let len = k.text.len();
            self.text.drain(..len.min(self.text.len()));
            self.dropped += len;
            return Some(k);
        }
        let (len, cap) = (self.entries.len(), self.entries.capacity());
        if len == cap {
            self.entries.reserve_exact((cap * 2).clamp(64, JOURNAL_CAP) - len);
        }
        None
    }

    fn write(&mut self, t: &EntryText<'_>) -> Span {
        let at = self.dropped + self.text.len();
        let excerpt = &t.prompt[..excerpt_end(t.prompt)];
        for part in [t.deployment, t.path, t.model, excerpt] {
            self.text.extend(part.as_bytes());
        }
        let before = self.text.len();
        let mut pair = |k: &str, v: &str| {
            self.text.extend(k.as_bytes());
            self.text.push_back(0);
            self.text.extend(v.as_bytes());
            self.text.push_back(0);
        };
        match t.headers {
            EntryHeaders::Request(h) => {
                for (k, v) in h {
                    let v = match crate::redact::is_secret_header(k.as_str()) {
                        true => Cow::Borrowed(crate::redact::MASK),
                        // Nearly every value is visible ASCII, which `to_str` checks quickly.
                        false => v
                            .to_str()
                            .map_or_else(|_| String::from_utf8_lossy(v.as_bytes()), Cow::Borrowed),
                    };
                    pair(k.as_str(), &v);
                }
            }
            EntryHeaders::Pairs(pairs) => {
                for (k, v) in pairs {
                    pair(k, v);
                }
            }
        }
        let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Span {
            at,
            deployment: len(t.deployment.len()),
            path: len(t.path.len()),
            model: len(t.model.len()),
            excerpt: len(excerpt.len()),
            headers: len(self.text.len() - before),
        }
    }

    /// `len` bytes of text from `at` (a [`Span`] position).
    fn text(&self, at: usize, len: u32) -> String {
        let start = at - self.dropped;
        let bytes: Vec<u8> = self.text.range(start..start + len as usize).copied().collect();
        // Written from `&str`s, cut at their ends: always UTF-8.
        String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    fn entry(&self, k: &Kept) -> JournalEntry {
        let t = &k.text;
        let mut at = t.at;
        let mut next = |len: u32| {
            let s = self.text(at, len);
            at += len as usize;
            s
        };
        let (deployment, path, model, prompt_excerpt, headers) = (
            next(t.deployment),
            next(t.path),
            next(t.model),
            next(t.excerpt),
            next(t.headers),
        );
        let mut parts = headers.split_terminator('\0');
        let headers = std::iter::from_fn(|| Some((parts.next()?.to_owned(), parts.next().unwrap_or("").to_owned())));
        let x = k.extra.as_deref();
        JournalEntry {
            seq: k.seq,
            time_ms: k.time_ms,
            deployment,
            path,
            model,
            stream: k.stream,
            user: x.and_then(|x| x.user.clone()),
            metadata: x.and_then(|x| x.metadata.clone()),
            tag_matched: x.and_then(|x| x.tag_matched.clone()),
            tags: x.map(|x| x.tags.clone()).unwrap_or_default(),
            prompt_excerpt,
            headers: headers.collect(),
            prompt_tokens: k.prompt_tokens,
            completion_tokens: k.completion_tokens,
            cache_read_input_tokens: k.cache_read_input_tokens,
            cache_creation_input_tokens: k.cache_creation_input_tokens,
            outcome: k.outcome,
            latency_ms: k.latency_ms,
            charset: k.charset,
            tokenizer: k.tokenizer,
            reply_fnv: k.reply_fnv.map(|h| format!("{h:016x}")).unwrap_or_default(),
        }
    }
}

/// Where the journal's excerpt of a prompt ends: after its first 200 characters.
fn excerpt_end(prompt: &str) -> usize {
    if prompt.len() <= 200 {
        // 200 bytes are at most 200 characters.
        return prompt.len();
    }
    prompt.char_indices().nth(200).map_or(prompt.len(), |(end, _)| end)
}

/// A journal entry's numbers and the fields most calls leave empty: what a [`JournalEntry`]
/// says but for its `seq` (the journal's to give) and its text ([`EntryText`]).
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub time_ms: u64,
    pub stream: bool,
    pub user: Option<String>,
    pub metadata: Option<Value>,
    pub tag_matched: Option<Tag>,
    pub tags: Vec<Tag>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub outcome: Outcome,
    pub latency_ms: u64,
    pub charset: Charset,
    pub tokenizer: Tokenizer,
    /// FNV-1a 64 of the reply text sent, if one was.
    pub reply_fnv: Option<u64>,
}

impl Record {
    pub fn finish(&mut self, outcome: Outcome, completion_tokens: u64, latency_ms: u64, cache: CacheUse) {
        self.outcome = outcome;
        self.completion_tokens = completion_tokens;
        self.latency_ms = latency_ms;
        self.cache_read_input_tokens = cache.read;
        self.cache_creation_input_tokens = cache.creation;
    }
}

/// A journal entry's text, copied into the journal by [`State::journal_push`].
pub struct EntryText<'a> {
    pub deployment: &'a str,
    pub path: &'a str,
    pub model: &'a str,
    /// The prompt: the journal keeps its first 200 characters.
    pub prompt: &'a str,
    pub headers: EntryHeaders<'a>,
}

pub enum EntryHeaders<'a> {
    /// A request's: kept with secrets masked ([`crate::redact::is_secret_header`]).
    Request(&'a HeaderMap),
    /// Kept as they are.
    Pairs(&'a [(String, String)]),
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
        s.journal_push_entry(JournalEntry {
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
    fn the_journal_keeps_the_newest_entries_with_their_text_whole() {
        use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
        let s = State::new(0, vec![DeploymentSpec::named("a")]);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer sk-secret"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        // Prompts of every length around the excerpt's 200 characters, some multi-byte.
        let prompt = |i: usize| format!("p{i} {}", "é".repeat(i % 300));
        for i in 0..JOURNAL_CAP + 5 {
            let r = Record::default();
            let text = EntryText {
                deployment: "a",
                path: "/v1/chat/completions",
                model: &format!("m{i}"),
                prompt: &prompt(i),
                headers: EntryHeaders::Request(&headers),
            };
            assert_eq!(s.journal_push(r, text), i as u64 + 1);
        }
        let j = s.journal(&JournalQuery::default());
        assert_eq!(j.len(), JOURNAL_CAP);
        // Exactly full, so each new entry takes the place of the one it evicts.
        assert_eq!(s.journal.lock().unwrap().entries.capacity(), JOURNAL_CAP);
        assert!(std::mem::size_of::<Kept>() <= 128, "{}", std::mem::size_of::<Kept>());
        assert_eq!((j[0].seq, j[JOURNAL_CAP - 1].seq), (6, JOURNAL_CAP as u64 + 5));
        for e in &j {
            let i = e.seq as usize - 1;
            assert_eq!((e.deployment.as_str(), e.path.as_str()), ("a", "/v1/chat/completions"));
            assert_eq!(e.model, format!("m{i}"));
            assert_eq!(e.prompt_excerpt, prompt(i).chars().take(200).collect::<String>());
            assert_eq!(
                e.headers,
                [
                    ("authorization".to_owned(), crate::redact::MASK.to_owned()),
                    ("content-type".to_owned(), "application/json".to_owned())
                ]
            );
        }
        let of = |d: &str| {
            let q = JournalQuery {
                deployment: Some(d.into()),
                since_seq: Some(JOURNAL_CAP as u64),
                ..JournalQuery::default()
            };
            s.journal(&q).len()
        };
        assert_eq!((of("a"), of("b")), (5, 0));
        // Finishing finds its entry wherever the ring has moved it.
        s.journal_finish(j[7].seq, Outcome::Ok, 3, 9, CacheUse::default());
        let q = JournalQuery {
            since_seq: Some(j[6].seq),
            ..JournalQuery::default()
        };
        let after = s.journal(&q);
        assert_eq!(
            (
                after[0].seq,
                after[0].outcome,
                after[0].completion_tokens,
                after[0].latency_ms
            ),
            (j[7].seq, Outcome::Ok, 3, 9)
        );
        assert_eq!(after[1].outcome, Outcome::Pending);
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
