//! How the simulator counts tokens: by the word rule ([`super::text::words`]) or with a real
//! BPE encoding (tiktoken's, embedded in `tiktoken-rs`: no download, ever).
//!
//! Which one a request gets depends on the model it asks for ([`Tokenizer::resolve`]): the
//! simulator config's explicit `tokenizers` map first, then the model's family as tiktoken
//! knows it (gpt-4o, gpt-4.1, gpt-5, o1, o3 → o200k_base; gpt-4, gpt-3.5 → cl100k_base; …),
//! else the word rule. The suites call the same functions to count on their side.
//!
//! Chat prompts are counted the way OpenAI's cookbook and LiteLLM's `token_counter` do: 3
//! tokens per message, plus its role, its content (each text part) and its name (plus 1) if it
//! has one, plus 3 priming the reply. With the word rule: each message's words plus 1.
//!
//! A BPE encoding costs a few hundred milliseconds to load: each is loaded once per process,
//! on first use, and [`warm`] loads the ones a config names in the background at start.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use tiktoken_rs::CoreBPE;

use super::text::words;

/// A token counter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tokenizer {
    /// The word rule ([`words`]).
    #[default]
    Words,
    /// GPT-4o, GPT-4.1, GPT-5, o-series.
    O200kBase,
    /// GPT-4, GPT-3.5, text-embedding-3.
    Cl100kBase,
    /// Codex, text-davinci-002/003.
    P50kBase,
    /// GPT-3 (davinci, curie, babbage, ada), GPT-2.
    R50kBase,
}

/// A name that is not a tokenizer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a tokenizer: o200k_base, cl100k_base, p50k_base, r50k_base or words")]
pub struct BadTokenizer(pub String);

/// The explicit model → tokenizer map of a simulator config (`tokenizers:`).
pub type TokenizerMap = BTreeMap<String, Tokenizer>;

impl Tokenizer {
    pub const ALL: [Tokenizer; 5] = [
        Tokenizer::Words,
        Tokenizer::O200kBase,
        Tokenizer::Cl100kBase,
        Tokenizer::P50kBase,
        Tokenizer::R50kBase,
    ];

    /// tiktoken's name for the encoding, or `words`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Words => "words",
            Self::O200kBase => "o200k_base",
            Self::Cl100kBase => "cl100k_base",
            Self::P50kBase => "p50k_base",
            Self::R50kBase => "r50k_base",
        }
    }

    /// The tokenizer with this [`Tokenizer::name`].
    pub fn by_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The tokenizer of a model's family as tiktoken maps it (exact names, then prefixes), or
    /// the word rule for a model tiktoken does not know.
    pub fn for_model(model: &str) -> Self {
        use tiktoken_rs::tokenizer::{Tokenizer as T, get_tokenizer};
        match get_tokenizer(model) {
            // Harmony is o200k_base with more special tokens, p50k_edit p50k_base's ranks,
            // gpt2 r50k_base: ordinary text counts the same.
            Some(T::O200kBase | T::O200kHarmony) => Self::O200kBase,
            Some(T::Cl100kBase) => Self::Cl100kBase,
            Some(T::P50kBase | T::P50kEdit) => Self::P50kBase,
            Some(T::R50kBase | T::Gpt2) => Self::R50kBase,
            None => Self::Words,
        }
    }

    /// The tokenizer for requests asking for `model`: `explicit`'s entry for it, else
    /// [`Tokenizer::for_model`].
    pub fn resolve(explicit: &TokenizerMap, model: &str) -> Self {
        explicit.get(model).copied().unwrap_or_else(|| Self::for_model(model))
    }

    /// The loaded encoding (loaded on first use, once per process), None for the word rule.
    fn bpe(self) -> Option<&'static CoreBPE> {
        // tiktoken-rs' singletons are `LazyLock`s: the first caller parses the embedded ranks,
        // concurrent ones wait for it, every later one gets the same instance.
        Some(match self {
            Self::Words => return None,
            Self::O200kBase => tiktoken_rs::o200k_base_singleton(),
            Self::Cl100kBase => tiktoken_rs::cl100k_base_singleton(),
            Self::P50kBase => tiktoken_rs::p50k_base_singleton(),
            Self::R50kBase => tiktoken_rs::r50k_base_singleton(),
        })
    }

    /// Loads the encoding now (a no-op once loaded, and for the word rule).
    pub fn load(self) {
        let _ = self.bpe();
    }

    /// Tokens in `text`. Special tokens (`<|endoftext|>`, …) count as ordinary text, as
    /// LiteLLM counts them (`encode(text, disallowed_special=())`).
    pub fn count(self, text: &str) -> u64 {
        match self.bpe() {
            None => words(text),
            Some(bpe) => bpe.encode_ordinary(text).len() as u64,
        }
    }

    /// One chat message's tokens: `parts` are its content's text parts (a string content is
    /// one part). Word rule: the parts' words plus 1. BPE: 3 + role + each part + (name + 1).
    pub fn message_tokens(self, role: &str, name: Option<&str>, parts: &[&str]) -> u64 {
        let content: u64 = parts.iter().map(|p| self.count(p)).sum();
        match self {
            Self::Words => content + 1,
            _ => 3 + self.count(role) + content + name.map_or(0, |n| self.count(n) + 1),
        }
    }

    /// A chat prompt of (role, content) messages, each content one text part: what the
    /// simulator counts for it ([`Tokenizer::message_tokens`] of each, plus
    /// [`Tokenizer::reply_priming`]).
    pub fn chat_prompt<R: AsRef<str>, C: AsRef<str>>(self, messages: &[(R, C)]) -> u64 {
        let each: u64 = messages
            .iter()
            .map(|(role, content)| self.message_tokens(role.as_ref(), None, &[content.as_ref()]))
            .sum();
        each + self.reply_priming()
    }

    /// Tokens a chat prompt adds once besides its messages: 3 priming the reply
    /// (`<|start|>assistant<|message|>`) with a BPE encoding, none with the word rule.
    pub fn reply_priming(self) -> u64 {
        match self {
            Self::Words => 0,
            _ => 3,
        }
    }
}

impl fmt::Display for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Tokenizer {
    type Err = BadTokenizer;
    fn from_str(s: &str) -> Result<Self, BadTokenizer> {
        Self::by_name(s).ok_or_else(|| BadTokenizer(s.to_owned()))
    }
}

/// Loads these encodings on background threads (one each) so the first request that needs
/// one does not wait for it. Returns at once.
pub fn warm(tokenizers: impl IntoIterator<Item = Tokenizer>) {
    let mut todo: Vec<Tokenizer> = tokenizers.into_iter().filter(|t| *t != Tokenizer::Words).collect();
    todo.sort();
    todo.dedup();
    for t in todo {
        let _ = std::thread::Builder::new()
            .name(format!("sim-load-{}", t.name()))
            .spawn(move || t.load());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference counts from Python tiktoken (the pinned LiteLLM 1.100.5 venv's, offline, with
    /// the encodings LiteLLM bundles):
    /// `TIKTOKEN_CACHE_DIR=…/litellm/litellm_core_utils/tokenizers python -c 'import tiktoken;
    /// e=tiktoken.get_encoding("o200k_base"); print(len(e.encode("…")))'`.
    /// Columns: text, o200k_base, cl100k_base.
    const REFERENCE: [(&str, u64, u64); 11] = [
        ("hello world", 2, 2),
        ("The quick brown fox jumps over the lazy dog.", 10, 10),
        ("東京は日本の首都です", 7, 10),
        ("学习汉字很有意思", 6, 11),
        // Family: man, ZWJ, woman, ZWJ, girl, ZWJ, boy.
        ("\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}\u{200D}\u{1F466}", 11, 18),
        // Skin tone, flag, keycap, rainbow flag (VS16 + ZWJ).
        (
            "\u{1F44D}\u{1F3FD} \u{1F1EF}\u{1F1F5} 1\u{FE0F}\u{20E3} \u{1F3F3}\u{FE0F}\u{200D}\u{1F308}",
            17,
            27,
        ),
        ("مرحبا بالعالم", 4, 10),
        ("שלום עולם", 2, 10),
        // Combining marks, not precomposed: café Việt nước.
        ("cafe\u{301} Vie\u{323}\u{302}t nu\u{31B}o\u{31B}\u{301}c", 15, 17),
        // Special tokens are ordinary text (LiteLLM encodes with disallowed_special=()).
        ("<|endoftext|> is text here", 10, 10),
        ("gpt東京 \u{1F600} مرحبا e\u{301}", 8, 13),
    ];

    #[test]
    fn bpe_counts_match_python_tiktoken() {
        for (text, o200k, cl100k) in REFERENCE {
            assert_eq!(Tokenizer::O200kBase.count(text), o200k, "o200k_base {text:?}");
            assert_eq!(Tokenizer::Cl100kBase.count(text), cl100k, "cl100k_base {text:?}");
        }
        // p50k_base, same venv: "hello world" 2, the CJK sentence 16.
        assert_eq!(Tokenizer::P50kBase.count("hello world"), 2);
        assert_eq!(Tokenizer::P50kBase.count("東京は日本の首都です"), 16);
        assert_eq!(Tokenizer::Words.count("東京は日本の首都です"), 10);
    }

    /// The chat rule against LiteLLM 1.100.5's `litellm.token_counter(model=..., messages=...)`
    /// in the same venv (LITELLM_LOCAL_MODEL_COST_MAP=True): 39 for gpt-4o, 49 for gpt-4 — and
    /// 49 for `sim-chat`, a model LiteLLM does not know, which it counts with cl100k_base.
    #[test]
    fn chat_prompts_count_as_litellm_counts_them() {
        let family = "\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}\u{200D}\u{1F466}";
        let prompt = |t: Tokenizer| {
            t.message_tokens("system", None, &["be brief"])
                + t.message_tokens("user", Some("alice"), &["東京は日本の首都です"])
                + t.message_tokens("user", None, &["hello world", family])
                + t.reply_priming()
        };
        assert_eq!(prompt(Tokenizer::O200kBase), 39);
        assert_eq!(prompt(Tokenizer::Cl100kBase), 49);
        // The word rule: words plus one per message, no priming.
        assert_eq!(prompt(Tokenizer::Words), (2 + 1) + (10 + 1) + (2 + 1 + 1));
    }

    #[test]
    fn models_map_to_their_family_unless_the_config_says_otherwise() {
        for (model, want) in [
            ("gpt-4o", Tokenizer::O200kBase),
            ("gpt-4o-mini", Tokenizer::O200kBase),
            ("gpt-4.1-mini", Tokenizer::O200kBase),
            ("gpt-5", Tokenizer::O200kBase),
            ("o1", Tokenizer::O200kBase),
            ("o3-mini", Tokenizer::O200kBase),
            ("gpt-4", Tokenizer::Cl100kBase),
            ("gpt-4-turbo", Tokenizer::Cl100kBase),
            ("gpt-3.5-turbo", Tokenizer::Cl100kBase),
            ("text-davinci-003", Tokenizer::P50kBase),
            ("davinci", Tokenizer::R50kBase),
            ("sim-chat", Tokenizer::Words),
            ("claude-x", Tokenizer::Words),
            ("m", Tokenizer::Words),
        ] {
            assert_eq!(Tokenizer::for_model(model), want, "{model}");
        }
        let map: TokenizerMap = [
            ("sim-chat".to_owned(), Tokenizer::O200kBase),
            ("gpt-4o".to_owned(), Tokenizer::Words),
        ]
        .into();
        assert_eq!(Tokenizer::resolve(&map, "sim-chat"), Tokenizer::O200kBase);
        assert_eq!(Tokenizer::resolve(&map, "gpt-4o"), Tokenizer::Words);
        assert_eq!(Tokenizer::resolve(&map, "gpt-4"), Tokenizer::Cl100kBase);
        for t in Tokenizer::ALL {
            assert_eq!(t.name().parse::<Tokenizer>(), Ok(t));
            assert_eq!(serde_json::to_value(t).unwrap(), serde_json::json!(t.name()));
        }
        let e = "o100k_base".parse::<Tokenizer>().unwrap_err().to_string();
        assert!(e.contains("o100k_base") && e.contains("cl100k_base"), "{e}");
        let e = serde_json::from_str::<TokenizerMap>(r#"{"m": "gpt2"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("gpt2") && e.contains("o200k_base"), "{e}");
    }

    /// The costs the report quotes: `cargo test --release --lib sim::tokenizer::tests::timing
    /// -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn timing() {
        use std::time::Instant;
        for t in [Tokenizer::O200kBase, Tokenizer::Cl100kBase] {
            let t0 = Instant::now();
            t.load();
            println!("{t}: loaded in {:?}", t0.elapsed());
        }
        let prompt = "[gt1a2b] hello there, please answer briefly: what does the router do?";
        let reply =
            "the router answers quickly and every token counts a simulated model replies with plain words so tests";
        for t in [Tokenizer::O200kBase, Tokenizer::Cl100kBase, Tokenizer::Words] {
            let n = 20_000;
            let t0 = Instant::now();
            let mut sum = 0;
            for _ in 0..n {
                sum += t.message_tokens("user", None, &[prompt]) + t.reply_priming() + t.count(reply);
            }
            println!("{t}: prompt + reply counted in {:?} ({sum})", t0.elapsed() / n);
        }
    }
}
