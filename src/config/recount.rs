//! Which tokenizer LiteLLM 1.100.5 counts a reply with when the upstream reported no usage.
//!
//! A streamed reply whose upstream sent no usage chunk is billed from LiteLLM's own count
//! (`stream_chunk_builder` → `token_counter`). What it counts with, read from the pinned
//! source (`litellm/utils.py` `_select_tokenizer_helper`, `litellm_core_utils/token_counter.py`
//! `_get_count_function`, `_fix_model_name`) and confirmed against the real proxy:
//!
//! - the model it asks about is the *model group* the client named (the stream chunks carry
//!   it), not the deployment's upstream model: a group `gpt-4o-mini` in front of any upstream
//!   is counted with `o200k_base`, a group `gpt-4o-team` in front of `openai/gpt-4o-mini` with
//!   `cl100k_base` (measured: 20 vs 30 completion tokens for the same CJK/emoji reply);
//! - a Hugging Face tokenizer first for cohere `command-r`, Anthropic models other than
//!   `claude-3*` (the bundled Claude 2 tokenizer), `llama-2`/`llama-3`/`replicate` names:
//!   gauntlet does not reproduce those (none is tiktoken);
//! - otherwise tiktoken: the name is kept if it is one of LiteLLM's OpenAI models (its price
//!   map, `litellm_provider: openai`, not a fine-tune) or an Azure alias (`gpt-35-turbo` →
//!   `gpt-3.5-turbo`), else replaced by `gpt-3.5-turbo`; then `o200k_base` if it contains
//!   `gpt-4o`, else tiktoken's own model map, else `cl100k_base`.
//!
//! Prompt tokens are OpenAI's chat accounting: per message 3 + the role's tokens + the
//! content's (+ the name's and 1), plus 3 priming the reply.

use std::collections::HashSet;
use std::path::Path;

/// The tiktoken encodings LiteLLM ships offline (`litellm_core_utils/tokenizers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    O200k,
    Cl100k,
    P50k,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Self::O200k => "o200k_base",
            Self::Cl100k => "cl100k_base",
            Self::P50k => "p50k_base",
        }
    }
}

/// What LiteLLM counts a group's replies with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recount {
    Tiktoken(Encoding),
    /// gauntlet cannot say which tokenizer, or cannot run it; why.
    Unknown(String),
}

/// The model names LiteLLM treats as OpenAI's (the pinned price map), when gauntlet could
/// read them.
#[derive(Debug, Clone, Default)]
pub struct OpenAiModels(HashSet<String>);

impl OpenAiModels {
    /// From LiteLLM's bundled price map (`model_prices_and_context_window_backup.json`, the
    /// one the stack runs with, `LITELLM_LOCAL_MODEL_COST_MAP=True`).
    pub fn from_price_map(json: &str) -> anyhow::Result<Self> {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json)?;
        Ok(Self(
            map.into_iter()
                .filter(|(k, v)| {
                    v.get("litellm_provider").and_then(|p| p.as_str()) == Some("openai")
                        && !(k.starts_with("ft:") && k.matches(':').count() <= 1)
                })
                .map(|(k, _)| k)
                .collect(),
        ))
    }

    /// From the pinned LiteLLM's install: `litellm` is its executable (`bin/litellm` in a venv).
    pub fn from_install(litellm: &Path) -> anyhow::Result<Self> {
        let venv = litellm
            .parent()
            .and_then(Path::parent)
            .ok_or_else(|| anyhow::anyhow!("{} is not inside a venv", litellm.display()))?;
        let lib = venv.join("lib");
        for entry in std::fs::read_dir(&lib)? {
            let map = entry?
                .path()
                .join("site-packages/litellm/model_prices_and_context_window_backup.json");
            if map.is_file() {
                return Self::from_price_map(&std::fs::read_to_string(&map)?);
            }
        }
        anyhow::bail!("no LiteLLM price map under {}", lib.display())
    }

    fn contains(&self, model: &str) -> bool {
        self.0.contains(model)
    }
}

/// tiktoken 0.14's `encoding_name_for_model` (the version in the pinned lock), for the
/// encodings that matter here; `None` is its KeyError.
fn tiktoken_encoding(model: &str) -> Option<&'static str> {
    const EXACT: [(&str, &str); 13] = [
        ("o1", "o200k_base"),
        ("o3", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-4.1", "o200k_base"),
        ("gpt-4o", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("gpt-3.5", "cl100k_base"),
        ("gpt-35-turbo", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-3-large", "cl100k_base"),
    ];
    const PREFIX: [(&str, &str); 15] = [
        ("o1-", "o200k_base"),
        ("o3-", "o200k_base"),
        ("o4-mini-", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("gpt-4.5-", "o200k_base"),
        ("gpt-4.1-", "o200k_base"),
        ("chatgpt-4o-", "o200k_base"),
        ("gpt-4o-", "o200k_base"),
        ("gpt-4-", "cl100k_base"),
        ("gpt-3.5-turbo-", "cl100k_base"),
        ("gpt-35-turbo-", "cl100k_base"),
        ("gpt-oss-", "o200k_harmony"),
        ("ft:gpt-4o", "o200k_base"),
        ("ft:gpt-4", "cl100k_base"),
        ("ft:gpt-3.5-turbo", "cl100k_base"),
    ];
    if let Some((_, e)) = EXACT.iter().find(|(m, _)| *m == model) {
        return Some(e);
    }
    if let Some((_, e)) = PREFIX.iter().find(|(p, _)| model.starts_with(p)) {
        return Some(e);
    }
    // Older completion models: other encodings (r50k, p50k); reported, not reproduced.
    ["davinci", "curie", "babbage", "ada", "code-", "text-"]
        .iter()
        .any(|p| model.starts_with(p))
        .then_some("other")
}

/// Azure aliases LiteLLM renames before asking tiktoken (`litellm.azure_llms`).
const AZURE_ALIASES: [&str; 6] = [
    "gpt-35-turbo",
    "gpt-35-turbo-16k",
    "gpt-35-turbo-instruct",
    "azure/gpt-41",
    "azure/gpt-41-mini",
    "azure/gpt-41-nano",
];

/// What LiteLLM 1.100.5 recounts a reply of model group `group` with. `openai` is its list of
/// OpenAI models, if gauntlet could read it: only names tiktoken knows need it.
pub fn litellm_recount(group: &str, openai: Option<&OpenAiModels>) -> Recount {
    let lower = group.to_lowercase();
    if lower.contains("command-r")
        || (lower.starts_with("claude") && !lower.contains("claude-3"))
        || ["llama-2", "llama-3", "replicate"].iter().any(|p| lower.contains(p))
    {
        return Recount::Unknown(format!(
            "LiteLLM 1.100.5 counts a model named {group:?} with a Hugging Face tokenizer (cohere \
             command-r, Claude before 3, Llama 2/3), which gauntlet does not reproduce"
        ));
    }
    let fixed = if AZURE_ALIASES.contains(&group) {
        group.replace("-35", "-3.5")
    } else {
        let known = tiktoken_encoding(group).is_some() || group.contains("gpt-4o");
        match (known, openai) {
            // An unknown name becomes gpt-3.5-turbo, a listed one stays: tiktoken knows
            // neither, so both end in cl100k_base and the list does not matter.
            (false, _) => "gpt-3.5-turbo".to_owned(),
            (true, Some(list)) if list.contains(group) => group.to_owned(),
            (true, Some(_)) => "gpt-3.5-turbo".to_owned(),
            (true, None) => {
                return Recount::Unknown(format!(
                    "whether LiteLLM counts {group:?} as an OpenAI model depends on its price map, \
                     which gauntlet could not read (provision the pinned LiteLLM: gauntlet provision)"
                ));
            }
        }
    };
    if fixed.contains("gpt-4o") {
        return Recount::Tiktoken(Encoding::O200k);
    }
    match tiktoken_encoding(&fixed) {
        Some("o200k_base" | "o200k_harmony") => Recount::Tiktoken(Encoding::O200k),
        Some("cl100k_base") | None => Recount::Tiktoken(Encoding::Cl100k),
        Some(other) => Recount::Unknown(format!(
            "LiteLLM counts {group:?} with tiktoken's {other} encoding, which it does not ship \
             offline; gauntlet does not reproduce it"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(names: &[&str]) -> OpenAiModels {
        OpenAiModels(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn the_group_name_decides_as_measured_on_the_proxy() {
        let openai = list(&["gpt-4o-mini", "gpt-4", "gpt-4.1-mini", "o3-mini"]);
        let o = Some(&openai);
        // Measured on LiteLLM 1.100.5 (docs/litellm-1.100.5.md §19): these three.
        assert_eq!(litellm_recount("gpt-4o-mini", o), Recount::Tiktoken(Encoding::O200k));
        assert_eq!(litellm_recount("gpt-4o-team", o), Recount::Tiktoken(Encoding::Cl100k));
        assert_eq!(litellm_recount("chat-primary", o), Recount::Tiktoken(Encoding::Cl100k));
        assert_eq!(litellm_recount("gpt-4", o), Recount::Tiktoken(Encoding::Cl100k));
        assert_eq!(litellm_recount("gpt-4.1-mini", o), Recount::Tiktoken(Encoding::O200k));
        assert_eq!(litellm_recount("o3-mini", o), Recount::Tiktoken(Encoding::O200k));
        // Known to tiktoken but not listed by LiteLLM: renamed gpt-3.5-turbo first.
        assert_eq!(litellm_recount("gpt-4.1-nano", o), Recount::Tiktoken(Encoding::Cl100k));
        assert_eq!(litellm_recount("gpt-35-turbo", o), Recount::Tiktoken(Encoding::Cl100k));
    }

    #[test]
    fn unknowable_choices_are_said_not_guessed() {
        assert!(matches!(litellm_recount("gpt-4o", None), Recount::Unknown(_)));
        assert_eq!(litellm_recount("my-chat", None), Recount::Tiktoken(Encoding::Cl100k));
        for hf in ["claude-2.1", "claude-sonnet-4", "llama-3-8b", "command-r-plus"] {
            assert!(matches!(litellm_recount(hf, None), Recount::Unknown(_)), "{hf}");
        }
        assert!(matches!(
            litellm_recount("text-davinci-003", Some(&list(&["text-davinci-003"]))),
            Recount::Unknown(_)
        ));
    }

    /// The pinned LiteLLM's own price map, where it is installed (CI provisions it first).
    #[test]
    fn the_pinned_price_map_lists_the_measured_models() {
        let Some(bin) = crate::stack::litellm::installed() else {
            assert!(
                std::env::var("GAUNTLET_REQUIRE").is_err(),
                "GAUNTLET_REQUIRE is set but the pinned LiteLLM is not installed: gauntlet provision"
            );
            return;
        };
        let openai = OpenAiModels::from_install(&bin).unwrap();
        assert!(openai.contains("gpt-4o-mini") && openai.contains("gpt-4"));
        assert_eq!(
            litellm_recount("gpt-4o-mini", Some(&openai)),
            Recount::Tiktoken(Encoding::O200k)
        );
        assert_eq!(
            litellm_recount("gpt-4", Some(&openai)),
            Recount::Tiktoken(Encoding::Cl100k)
        );
    }

    #[test]
    fn the_price_map_lists_openai_models_without_fine_tunes() {
        let m = OpenAiModels::from_price_map(
            r#"{"gpt-4o": {"litellm_provider": "openai"}, "ft:gpt-4o": {"litellm_provider": "openai"},
                "claude-3": {"litellm_provider": "anthropic"}, "sample_spec": {}}"#,
        )
        .unwrap();
        assert!(m.contains("gpt-4o") && !m.contains("ft:gpt-4o") && !m.contains("claude-3"));
    }
}
