//! The dialect-neutral request model every wire format parses into, and the deterministic
//! reply the simulator gives it.
//!
//! Counting rule (documented in docs/sim.md), the same for every dialect, by the request's
//! [`Tokenizer`] (chosen by its model, see [`super::tokenizer`]): with the word rule, prompt
//! tokens are the words of every message's text plus one per message (a system prompt is one
//! message); with a BPE encoding, OpenAI's chat accounting (3 per message + its role + its
//! content + its name and 1, + 3 priming the reply). For a legacy completion or an embedding,
//! the count of the input texts, at least 1. The reply is drawn unit by unit from the
//! request's [`Charset`] by a hash of (seed, deployment, model, prompt) and is the longest run
//! of units whose count is at most `min(max_tokens, reply_tokens)`; completion tokens are the
//! reply's count. The same request always gets the same reply and the same usage.
//!
//! An OpenAI request may ask for usage details ([`UsageDetails`]): that many of its prompt
//! tokens (at most all) are reported cached, and that many reasoning tokens are added to its
//! completion tokens; or for no usage at all ([`SimUsage::omit`]).

use serde_json::Value;

use super::text::{Charset, words};
use super::tokenizer::Tokenizer;

/// What a request asks for, whatever the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Chat,
    Legacy,
    Embeddings,
}

/// A parsed request: only what the simulator uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub kind: Kind,
    pub model: String,
    /// All prompt text (every message's content), for tag matching and hashing.
    pub text: String,
    pub prompt_tokens: u64,
    pub max_tokens: Option<u64>,
    pub stream: bool,
    pub include_usage: bool,
    pub user: Option<String>,
    pub metadata: Option<Value>,
    /// The prompt-cacheable prefix the request marked, if it marked one.
    pub cache_prefix: Option<CachePrefix>,
    /// Embeddings only.
    pub embedding: Option<EmbeddingInput>,
    /// Usage details the request asked the simulator to report (OpenAI dialect), if any.
    pub usage_details: Option<UsageDetails>,
    /// `sim_usage.omit`: answer without usage (OpenAI dialect).
    pub omit_usage: bool,
    /// The charset the request asked for (`sim_charset`); None: the deployment's.
    pub charset: Option<Charset>,
    /// How this request's tokens are counted (by its model).
    pub tokenizer: Tokenizer,
}

impl Request {
    pub fn chat(&self) -> bool {
        self.kind == Kind::Chat
    }
}

/// A prefix of the prompt marked cacheable: identified by a hash of its content (and model),
/// and worth `tokens` of the prompt's tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachePrefix {
    pub key: u64,
    pub tokens: u64,
}

/// How a reply's prompt tokens split over the prompt cache: `creation` tokens were written to
/// it by this request, `read` tokens were already there.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheUse {
    pub read: u64,
    pub creation: u64,
}

/// Token kinds a provider reports inside its usage that the word rule alone cannot produce:
/// OpenAI's `prompt_tokens_details.cached_tokens` and `completion_tokens_details.reasoning_tokens`.
/// A real provider decides them; the simulator reports what it is told, by a fixed rule, so a
/// ledger knows exactly what the upstream billed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageDetails {
    /// Prompt tokens reported as read from the provider's cache: this many, at most the prompt.
    #[serde(default)]
    pub cached_tokens: u64,
    /// Hidden reasoning tokens, added to the completion tokens (as OpenAI counts them).
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl UsageDetails {
    /// The cached part of a prompt of `prompt_tokens` tokens.
    pub fn cached(&self, prompt_tokens: u64) -> u64 {
        self.cached_tokens.min(prompt_tokens)
    }
}

/// The whole `sim_usage` object a request may carry: the [`UsageDetails`] to report, or
/// `omit` to report no usage at all. (`omit` is not a field of [`UsageDetails`], whose
/// two-field literals the suites build.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimUsage {
    #[serde(default)]
    pub cached_tokens: u64,
    #[serde(default)]
    pub reasoning_tokens: u64,
    /// No usage in the reply: no `usage` object in a body, no usage chunk in a stream even when
    /// `stream_options.include_usage` asks for one (as some OpenAI-compatible servers stream),
    /// so the router has to count the tokens itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub omit: bool,
}

impl SimUsage {
    /// `{"omit": true}`.
    pub const OMIT: SimUsage = SimUsage {
        cached_tokens: 0,
        reasoning_tokens: 0,
        omit: true,
    };

    pub fn details(&self) -> UsageDetails {
        UsageDetails {
            cached_tokens: self.cached_tokens,
            reasoning_tokens: self.reasoning_tokens,
        }
    }
}

impl From<UsageDetails> for SimUsage {
    fn from(d: UsageDetails) -> Self {
        Self {
            cached_tokens: d.cached_tokens,
            reasoning_tokens: d.reasoning_tokens,
            omit: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingInput {
    /// One text per vector asked for (a token array is its numbers, space-separated).
    pub inputs: Vec<String>,
    pub dimensions: usize,
    pub base64: bool,
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// FNV-1a: small, stable across platforms and releases (a std hasher is neither).
pub fn fnv(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in *p {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// xorshift64: a cheap deterministic stream from a request hash.
pub fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// A hash mapped to [0, 1).
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// The deterministic reply: its text, the pieces a stream sends it in, its count and whether
/// `max_tokens` truncated it.
pub struct Reply {
    text: String,
    /// Where each piece ends in `text`: a piece is a unit and the separator before it.
    ends: Vec<usize>,
    /// The text's tokens by the request's tokenizer.
    count: u64,
    pub charset: Charset,
    pub truncated: bool,
    /// What [`Reply::id`] starts with: `chatcmpl`, `cmpl` or `emb`.
    id_prefix: &'static str,
    /// The request hash every dialect derives its own id format from.
    pub hash: u64,
    /// Hidden reasoning tokens generated besides the text (counted in [`Reply::tokens`]).
    pub reasoning: u64,
}

impl Reply {
    pub fn text(&self) -> &str {
        &self.text
    }
    /// `{prefix}-{hash:016x}`, the prefix by the request's kind: OpenAI's id of the reply.
    pub fn id(&self) -> ReplyId {
        ReplyId::new(self.id_prefix, self.hash)
    }
    /// The stream's pieces, one unit each (the first without a separator): concatenated, they
    /// are [`Reply::text`], byte for byte.
    pub fn pieces(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.ends.len()).map(|i| {
            let start = if i == 0 { 0 } else { self.ends[i - 1] };
            &self.text[start..self.ends[i]]
        })
    }
    /// Completion tokens: the text's, and the reasoning tokens before them.
    pub fn tokens(&self) -> u64 {
        self.count + self.reasoning
    }
    pub fn finish_reason(&self) -> &'static str {
        if self.truncated { "length" } else { "stop" }
    }
    /// FNV-1a 64 of the text as 16 hex digits: what the journal records, so a client can show
    /// that the bytes it got are the bytes the simulator sent.
    pub fn fnv_hex(&self) -> String {
        format!("{:016x}", self.fnv())
    }

    /// The hash [`Reply::fnv_hex`] writes.
    pub fn fnv(&self) -> u64 {
        fnv(&[self.text.as_bytes()])
    }
}

pub fn reply(seed: u64, deployment: &str, req: &Request, reply_tokens: u64) -> Reply {
    let h = fnv(&[
        &seed.to_le_bytes(),
        deployment.as_bytes(),
        req.model.as_bytes(),
        req.text.as_bytes(),
    ]);
    // An embedding generates no tokens; its vectors are drawn by the embeddings dialect.
    let target = match req.kind {
        Kind::Embeddings => 0,
        _ => req.max_tokens.map_or(reply_tokens, |m| m.min(reply_tokens)).max(1),
    };
    let charset = req.charset.unwrap_or_default();
    let mut draft = Draft::new(charset, h, target);
    let count = draft.fill(req.tokenizer, target);
    let prefix = match req.kind {
        Kind::Chat => "chatcmpl",
        Kind::Legacy => "cmpl",
        Kind::Embeddings => "emb",
    };
    Reply {
        text: draft.text,
        ends: draft.ends,
        count,
        charset,
        truncated: req.kind != Kind::Embeddings && req.max_tokens.is_some_and(|m| m < reply_tokens),
        id_prefix: prefix,
        hash: h,
        reasoning: req.usage_details.map_or(0, |u| u.reasoning_tokens),
    }
}

/// A reply's id, written where it is used rather than kept in an allocation of its own:
/// dereferences to the `str`, serializes as one.
#[derive(Clone, Copy)]
pub struct ReplyId {
    buf: [u8; 32],
    len: usize,
}

impl ReplyId {
    /// `{prefix}-{h:016x}` (the prefix at most 15 bytes), written without `format!`, whose
    /// machinery costs more than a reply's other steps.
    fn new(prefix: &str, h: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 32];
        let p = prefix.len().min(15);
        buf[..p].copy_from_slice(&prefix.as_bytes()[..p]);
        buf[p] = b'-';
        for i in 0..16 {
            buf[p + 1 + i] = HEX[(h >> ((15 - i) * 4)) as usize & 0xf];
        }
        Self { buf, len: p + 17 }
    }
}

impl std::ops::Deref for ReplyId {
    type Target = str;
    fn deref(&self) -> &str {
        // ASCII prefixes and hex digits.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Display for ReplyId {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl serde::Serialize for ReplyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

/// Draws for a first unit that fits the target on its own before giving up on whole units.
const FIRST_TRIES: usize = 64;

/// A reply being written: units drawn from the charset's vocabulary by xorshift from the
/// request hash (for `ascii`, exactly the words the simulator always drew).
struct Draft {
    vocab: &'static [&'static str],
    /// [`words`] of each unit of `vocab`.
    unit_words: &'static [u64],
    sep: &'static str,
    x: u64,
    text: String,
    ends: Vec<usize>,
}

impl Draft {
    /// Sized for `target` units of the vocabulary's longest, as the word rule writes them (one
    /// unit a word; a BPE reply draws more and may grow): growing a reply as it is written
    /// would cost a few copies of it per request.
    fn new(charset: Charset, h: u64, target: u64) -> Self {
        let vocab = charset.vocabulary();
        let sep = charset.separator();
        let units = usize::try_from(target).unwrap_or(usize::MAX).min(1024);
        let longest = vocab.iter().map(|u| u.len()).max().unwrap_or(0);
        Self {
            vocab,
            unit_words: charset.unit_words(),
            sep,
            x: h,
            text: String::with_capacity(units * (longest + sep.len())),
            ends: Vec::with_capacity(units),
        }
    }

    fn draw(&mut self) -> &'static str {
        self.vocab[self.draw_index()]
    }

    /// The next draw, as its index in `vocab`.
    fn draw_index(&mut self) -> usize {
        (xorshift(&mut self.x) % self.vocab.len() as u64) as usize
    }

    fn push(&mut self, unit: &str) {
        if !self.ends.is_empty() {
            self.text.push_str(self.sep);
        }
        self.text.push_str(unit);
        self.ends.push(self.text.len());
    }

    fn prefix(&self, units: usize) -> &str {
        &self.text[..self.ends[units - 1]]
    }

    fn keep(&mut self, units: usize) {
        self.ends.truncate(units);
        self.text.truncate(self.ends.last().copied().unwrap_or(0));
    }

    /// Writes the longest run of units whose count is at most `target`, and returns its count.
    /// At least one unit: the first draw that fits alone (nearly always the very first); when
    /// none does in [`FIRST_TRIES`] draws (a one-token `max_tokens` and a vocabulary of
    /// multi-token emoji), the longest run of whole characters of the first draw that fits,
    /// which may be nothing: `max_tokens` is never exceeded.
    fn fill(&mut self, tokenizer: Tokenizer, target: u64) -> u64 {
        if target == 0 {
            return 0;
        }
        let count = |s: &str| tokenizer.count(s);
        let first_draw = self.draw();
        let mut first = first_draw;
        let mut tries = 1;
        while count(first) > target {
            if tries == FIRST_TRIES {
                // No whole unit fits: the longest character prefix of the first draw that does.
                let cut = first_draw
                    .char_indices()
                    .map(|(i, c)| i + c.len_utf8())
                    .take_while(|end| count(&first_draw[..*end]) <= target)
                    .last();
                let Some(end) = cut else { return 0 };
                self.push(&first_draw[..end]);
                return count(&self.text);
            }
            first = self.draw();
            tries += 1;
        }
        self.push(first);
        match tokenizer {
            // The word rule adds up unit by unit (units are separated by whitespace, or are
            // CJK characters, each a word): draw until the next unit would not fit.
            Tokenizer::Words => {
                let mut n = words(first);
                while n < target {
                    let i = self.draw_index();
                    let w = self.unit_words[i];
                    if n + w > target {
                        break;
                    }
                    self.push(self.vocab[i]);
                    n += w;
                }
                debug_assert_eq!(n, words(&self.text));
                n
            }
            // BPE merges across units (CJK has no spaces to stop it): draw past the target,
            // then binary-search the longest prefix within it.
            _ => {
                let cap = usize::try_from(target.saturating_mul(4).saturating_add(16)).unwrap_or(usize::MAX);
                let mut want = usize::try_from(target.saturating_add(1)).unwrap_or(usize::MAX).min(cap);
                let mut total = loop {
                    while self.ends.len() < want {
                        let unit = self.draw();
                        self.push(unit);
                    }
                    let total = count(&self.text);
                    if total > target || want >= cap {
                        break total;
                    }
                    want = want.saturating_mul(2).min(cap);
                };
                if total > target {
                    // Invariant: the first `lo` units fit, more than `hi` do not.
                    let (mut lo, mut hi, mut lo_count) = (1, self.ends.len() - 1, count(self.prefix(1)));
                    while lo < hi {
                        let mid = lo + (hi - lo).div_ceil(2);
                        let c = count(self.prefix(mid));
                        if c <= target {
                            (lo, lo_count) = (mid, c);
                        } else {
                            hi = mid - 1;
                        }
                    }
                    self.keep(lo);
                    total = lo_count;
                }
                total
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(text: &str, max_tokens: Option<u64>, charset: Charset, tokenizer: Tokenizer) -> Request {
        Request {
            kind: Kind::Chat,
            model: "m".into(),
            text: text.into(),
            prompt_tokens: 1,
            max_tokens,
            stream: false,
            include_usage: false,
            user: None,
            metadata: None,
            cache_prefix: None,
            embedding: None,
            usage_details: None,
            omit_usage: false,
            charset: Some(charset),
            tokenizer,
        }
    }

    /// The simulator's reply before charsets and tokenizers, verbatim: `ascii` with the word
    /// rule must still write exactly this.
    fn historical(seed: u64, deployment: &str, req: &Request, reply_tokens: u64) -> String {
        let h = fnv(&[
            &seed.to_le_bytes(),
            deployment.as_bytes(),
            req.model.as_bytes(),
            req.text.as_bytes(),
        ]);
        let n = req.max_tokens.map_or(reply_tokens, |m| m.min(reply_tokens)).max(1);
        let vocab = Charset::Ascii.vocabulary();
        let mut x = h;
        let words: Vec<&str> = (0..n)
            .map(|_| vocab[(xorshift(&mut x) % vocab.len() as u64) as usize])
            .collect();
        words.join(" ")
    }

    #[test]
    fn ascii_by_the_word_rule_is_the_reply_it_always_was() {
        for seed in [0, 7, 42] {
            for text in ["hello there", "[t] hello there", "another prompt entirely"] {
                for max in [None, Some(1), Some(4), Some(100)] {
                    let req = request(text, max, Charset::Ascii, Tokenizer::Words);
                    let r = reply(seed, "d", &req, 16);
                    assert_eq!(r.text(), historical(seed, "d", &req, 16), "{seed} {text} {max:?}");
                    assert_eq!(r.tokens(), max.unwrap_or(16).min(16));
                    assert_eq!(r.pieces().len() as u64, r.tokens());
                }
            }
        }
    }

    const BPE: [Tokenizer; 4] = [
        Tokenizer::O200kBase,
        Tokenizer::Cl100kBase,
        Tokenizer::P50kBase,
        Tokenizer::R50kBase,
    ];

    #[test]
    fn every_charset_and_tokenizer_writes_its_vocabulary_within_max_tokens() {
        for cs in Charset::ALL {
            let vocab = cs.vocabulary();
            for t in std::iter::once(Tokenizer::Words).chain(BPE) {
                for (i, max) in [None, Some(1), Some(2), Some(3), Some(5), Some(16), Some(40)]
                    .into_iter()
                    .enumerate()
                {
                    let req = request(&format!("prompt {i} for {cs} {t}"), max, cs, t);
                    let reply_tokens = if max == Some(40) { 64 } else { 16 };
                    let r = reply(7, "d", &req, reply_tokens);
                    let what = format!("{cs} {t} max {max:?}: {:?}", r.text());
                    let target = max.unwrap_or(reply_tokens).min(reply_tokens);
                    // Counted by the tokenizer, never over the target.
                    assert_eq!(r.tokens(), t.count(r.text()), "{what}");
                    assert!(r.tokens() <= target, "{what}");
                    // Valid UTF-8 whose pieces are the text, byte for byte.
                    assert!(std::str::from_utf8(r.text().as_bytes()).is_ok());
                    assert_eq!(r.pieces().collect::<String>(), r.text(), "{what}");
                    assert_eq!(r.fnv_hex(), format!("{:016x}", fnv(&[r.text().as_bytes()])));
                    // Each piece one unit of the vocabulary (after the separator, but the first).
                    let whole = r.pieces().enumerate().all(|(i, p)| {
                        let unit = if i == 0 {
                            Some(p)
                        } else {
                            p.strip_prefix(cs.separator())
                        };
                        unit.is_some_and(|u| vocab.contains(&u))
                    });
                    if !whole {
                        // Only when no unit fits alone: a character prefix of one, at most.
                        assert_eq!(r.pieces().len(), 1, "{what}");
                        assert!(vocab.iter().any(|u| u.starts_with(r.text())), "{what}");
                    }
                    // At least one whole unit whenever one fits alone.
                    if vocab.iter().any(|u| t.count(u) <= target) {
                        assert!(whole && r.pieces().len() >= 1, "{what}");
                    }
                    // The same request, the same reply; another seed, another one.
                    let again = reply(7, "d", &req, reply_tokens);
                    assert_eq!((again.text(), again.tokens()), (r.text(), r.tokens()));
                    if target >= 5 {
                        let differs = (8..12).any(|seed| reply(seed, "d", &req, reply_tokens).text() != r.text());
                        assert!(differs, "{what}: the seed must matter");
                    }
                }
            }
        }
    }

    #[test]
    fn a_bpe_reply_is_the_longest_run_of_units_within_the_target() {
        for cs in Charset::ALL {
            for t in [Tokenizer::O200kBase, Tokenizer::Cl100kBase] {
                let req = request("longest run", Some(12), cs, t);
                let r = reply(3, "d", &req, 16);
                // One more unit of the same draw would not fit.
                let mut draft = Draft::new(cs, r.hash, 0);
                let units: Vec<&str> = (0..64).map(|_| draft.draw()).collect();
                let n = r.pieces().len();
                if units[..n].join(cs.separator()) == r.text() {
                    let longer = units[..=n].join(cs.separator());
                    assert!(t.count(&longer) > 12, "{cs} {t}: {:?} + {:?}", r.text(), units[n]);
                }
            }
        }
    }

    /// What a default reply costs to write: `cargo test --release --lib
    /// sim::request::tests::reply_timing -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn reply_timing() {
        for t in [Tokenizer::Words, Tokenizer::O200kBase, Tokenizer::Cl100kBase] {
            t.load();
            for cs in Charset::ALL {
                let n = 5_000;
                let t0 = std::time::Instant::now();
                let mut sum = 0;
                for i in 0..n {
                    sum += reply(i, "d", &request("a typical prompt", None, cs, t), 16).tokens();
                }
                println!(
                    "{t} {cs}: a 16-token reply written in {:?} ({sum})",
                    t0.elapsed() / n as u32
                );
            }
        }
    }

    #[test]
    fn embeddings_get_no_reply() {
        let mut req = request("embed me", None, Charset::Cjk, Tokenizer::O200kBase);
        req.kind = Kind::Embeddings;
        let r = reply(7, "d", &req, 16);
        assert_eq!((r.text(), r.tokens(), r.pieces().len()), ("", 0, 0));
    }
}
