//! What each request asks: synthetic prompts of an exact token length (seeded, so two runs
//! send the same text), or the lines of a JSONL file. Bodies are serialized once, before the
//! run, so the generator's hot path copies bytes and never builds JSON.

use std::path::Path;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

use crate::error::RunError;

/// Common English words that are one token each, with their leading space, in o200k_base and
/// cl100k_base alike (checked by a test), so `n` of them are `n` tokens for GPT-4-era and
/// GPT-4o-era models; other tokenizers land within a few percent.
const WORDS: &[&str] = &[
    " the",
    " time",
    " people",
    " way",
    " day",
    " man",
    " thing",
    " woman",
    " life",
    " child",
    " world",
    " school",
    " state",
    " family",
    " student",
    " group",
    " country",
    " problem",
    " hand",
    " part",
    " place",
    " case",
    " week",
    " company",
    " system",
    " program",
    " question",
    " work",
    " government",
    " number",
    " night",
    " point",
    " home",
    " water",
    " room",
    " mother",
    " area",
    " money",
    " story",
    " fact",
    " month",
    " lot",
    " right",
    " study",
    " book",
    " eye",
    " job",
    " word",
    " business",
    " issue",
    " side",
    " kind",
    " head",
    " house",
    " service",
    " friend",
    " father",
    " power",
    " hour",
    " game",
    " line",
    " end",
    " member",
    " law",
    " car",
    " city",
    " community",
    " name",
    " president",
    " team",
    " minute",
    " idea",
    " kid",
    " body",
    " information",
    " back",
    " parent",
    " face",
    " others",
    " level",
    " office",
    " door",
    " health",
    " person",
    " art",
    " war",
    " history",
    " party",
    " result",
    " change",
    " morning",
    " reason",
    " research",
    " girl",
    " guy",
    " moment",
    " air",
    " teacher",
    " force",
    " education",
];

/// One request's body, ready to send, and what it asks for.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub body: Bytes,
    /// Prompt tokens as generated (synthetic prompts), or as the file gives them (else 0).
    pub input_tokens: u64,
}

/// Where prompts come from.
#[derive(Debug, Clone)]
pub enum PromptSource {
    /// `input_tokens` words of [`WORDS`] chosen by a seeded generator, asking for
    /// `output_tokens` tokens back.
    Synthetic {
        input_tokens: u32,
        output_tokens: u32,
        seed: u64,
    },
    /// One request per line: `{"prompt": "..."}` or `{"messages": [...]}`, with an optional
    /// `"max_tokens"` (else `output_tokens`).
    Jsonl {
        lines: Vec<(Value, Option<u64>)>,
        output_tokens: u32,
    },
    /// Whole request bodies, sent as they are (a case stamps its own).
    Fixed(Vec<Value>),
}

/// Enough distinct prompts that a cache in front of the model sees few repeats in a short
/// run, few enough to build in well under a second.
const SYNTHETIC_POOL: usize = 4096;

impl PromptSource {
    /// Reads a JSONL file; a bad line is an error naming file:line.
    pub fn jsonl(path: &Path, output_tokens: u32) -> Result<Self, RunError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RunError::usage(format!("--prompts {}: cannot read it: {e}", path.display())))?;
        let mut lines = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let at = format!("{}:{}", path.display(), i + 1);
            let v: Value =
                serde_json::from_str(line).map_err(|e| RunError::usage(format!("{at}: not a JSON object: {e}")))?;
            let max = match v.get("max_tokens") {
                None => None,
                Some(m) => Some(m.as_u64().filter(|m| *m > 0).ok_or_else(|| {
                    RunError::usage(format!("{at}: max_tokens must be a whole number above 0, got {m}"))
                })?),
            };
            let messages = match (v.get("prompt"), v.get("messages")) {
                (Some(Value::String(p)), None) => json!([{"role": "user", "content": p}]),
                (None, Some(m @ Value::Array(a))) if !a.is_empty() => m.clone(),
                _ => {
                    return Err(RunError::usage(format!(
                        "{at}: each line needs \"prompt\" (a string) or \"messages\" (a non-empty array), not both"
                    )));
                }
            };
            lines.push((messages, max));
        }
        if lines.is_empty() {
            return Err(RunError::usage(format!(
                "--prompts {}: no prompts in it",
                path.display()
            )));
        }
        Ok(Self::Jsonl { lines, output_tokens })
    }

    /// The bodies for `model`, built once; requests take them in turn.
    pub fn bodies(&self, model: &str, stream: bool, shard: u32) -> Vec<Prompt> {
        let body = |messages: Value, max_tokens: u64| {
            let mut b = json!({"model": model, "messages": messages, "max_tokens": max_tokens});
            if stream {
                b["stream"] = json!(true);
                b["stream_options"] = json!({"include_usage": true});
            }
            Bytes::from(serde_json::to_vec(&b).expect("a JSON value serializes"))
        };
        match self {
            Self::Synthetic {
                input_tokens,
                output_tokens,
                seed,
            } => {
                // Each shard its own stream of prompts, so N shards are not N copies of one.
                let mut rng = ChaCha8Rng::seed_from_u64(seed ^ (u64::from(shard) << 32));
                (0..SYNTHETIC_POOL)
                    .map(|_| {
                        let text = synthetic_text(&mut rng, *input_tokens);
                        Prompt {
                            body: body(json!([{"role": "user", "content": text}]), u64::from(*output_tokens)),
                            input_tokens: u64::from(*input_tokens),
                        }
                    })
                    .collect()
            }
            Self::Fixed(bodies) => bodies
                .iter()
                .map(|b| Prompt {
                    body: Bytes::from(serde_json::to_vec(b).expect("a JSON value serializes")),
                    input_tokens: 0,
                })
                .collect(),
            Self::Jsonl { lines, output_tokens } => lines
                .iter()
                .map(|(m, max)| Prompt {
                    body: body(m.clone(), max.unwrap_or(u64::from(*output_tokens))),
                    input_tokens: 0,
                })
                .collect(),
        }
    }
}

/// `tokens` words of [`WORDS`], the first without its leading space.
fn synthetic_text(rng: &mut ChaCha8Rng, tokens: u32) -> String {
    let mut s = String::with_capacity(tokens as usize * 8);
    for i in 0..tokens {
        let w = WORDS[rng.random_range(0..WORDS.len())];
        s.push_str(if i == 0 { &w[1..] } else { w });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::tokenizer::Tokenizer;

    #[test]
    fn synthetic_prompts_have_the_asked_token_count_in_both_gpt_encodings() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for n in [1, 7, 128, 1000] {
            let text = synthetic_text(&mut rng, n);
            for t in [Tokenizer::O200kBase, Tokenizer::Cl100kBase] {
                assert_eq!(t.count(&text), u64::from(n), "{} on {n} words: {text:.80}", t.name());
            }
        }
    }

    #[test]
    fn synthetic_bodies_are_seeded_and_differ_per_shard() {
        let src = PromptSource::Synthetic {
            input_tokens: 16,
            output_tokens: 8,
            seed: 3,
        };
        let (a, b) = (src.bodies("m", true, 0), src.bodies("m", true, 0));
        assert_eq!(a[5].body, b[5].body);
        assert_ne!(a[5].body, src.bodies("m", true, 1)[5].body);
        let v: Value = serde_json::from_slice(&a[0].body).unwrap();
        assert_eq!(v["max_tokens"], 8);
        assert_eq!(v["stream_options"]["include_usage"], true);
    }

    #[test]
    fn a_bad_jsonl_line_is_named_by_file_and_line() {
        let dir = std::env::temp_dir().join(format!("gauntlet-prompts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("p.jsonl");
        std::fs::write(&f, "{\"prompt\": \"hi\"}\n\n{\"prompt\": 3}\n").unwrap();
        let e = PromptSource::jsonl(&f, 8).unwrap_err().to_string();
        assert!(e.contains("p.jsonl:3:"), "{e}");
        std::fs::write(
            &f,
            "{\"messages\": [{\"role\":\"user\",\"content\":\"x\"}], \"max_tokens\": 4}\n",
        )
        .unwrap();
        let ok = PromptSource::jsonl(&f, 8).unwrap().bodies("m", false, 0);
        assert_eq!(serde_json::from_slice::<Value>(&ok[0].body).unwrap()["max_tokens"], 4);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
