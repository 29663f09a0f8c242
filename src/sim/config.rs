//! What a simulator starts with: a seed and named deployments, each with its default behaviour
//! (`gauntlet sim --config`, or built in code by the embedded stack).

use serde::{Deserialize, Serialize};

use super::model::Behaviour;
use super::text::Charset;
use super::tokenizer::{Tokenizer, TokenizerMap};

/// Replies are this many tokens unless a deployment says otherwise.
pub const DEFAULT_REPLY_TOKENS: u64 = 16;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Seeds every pseudo-random choice (jitter, `rate` rules, reply words).
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub deployments: Vec<DeploymentSpec>,
    /// How the tokens of requests for these models are counted: `o200k_base`, `cl100k_base`,
    /// `p50k_base`, `r50k_base` or `words`. A model not listed is counted by its family's
    /// tokenizer when tiktoken knows it (gpt-4o → o200k_base, …), else by the word rule.
    #[serde(default, skip_serializing_if = "TokenizerMap::is_empty")]
    pub tokenizers: TokenizerMap,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeploymentSpec {
    pub name: String,
    /// Model ids `/v1/models` lists (default: the deployment's name). Any model is served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    #[serde(default)]
    pub behaviour: Behaviour,
    /// Tokens in a reply when `max_tokens` does not cut it shorter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_tokens: Option<u64>,
    /// What replies are written in, unless a request asks otherwise (`sim_charset`).
    #[serde(default, skip_serializing_if = "is_ascii")]
    pub charset: Charset,
}

fn is_ascii(c: &Charset) -> bool {
    *c == Charset::Ascii
}

impl DeploymentSpec {
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }
    pub fn served_models(&self) -> Vec<String> {
        if self.models.is_empty() {
            vec![self.name.clone()]
        } else {
            self.models.clone()
        }
    }
    pub fn reply_tokens(&self) -> u64 {
        self.reply_tokens.unwrap_or(DEFAULT_REPLY_TOKENS).max(1)
    }
}

impl SimConfig {
    /// Healthy deployments with these names.
    pub fn for_deployments(names: &[String]) -> Self {
        Self {
            seed: 0,
            deployments: names.iter().map(|n| DeploymentSpec::named(n)).collect(),
            tokenizers: TokenizerMap::new(),
        }
    }

    /// The BPE encodings this config will likely need: those its `tokenizers` name, and the
    /// families of the models its deployments list (see [`super::tokenizer::warm`]).
    pub fn encodings(&self) -> Vec<Tokenizer> {
        let listed = self.deployments.iter().flat_map(|d| d.models.iter());
        let mut out: Vec<Tokenizer> = self
            .tokenizers
            .values()
            .copied()
            .chain(listed.map(|m| Tokenizer::resolve(&self.tokenizers, m)))
            .filter(|t| *t != Tokenizer::Words)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// YAML or JSON (JSON is YAML). An unknown tokenizer name is an error naming it.
    pub fn parse(origin: &str, text: &str) -> anyhow::Result<Self> {
        let c: Self = serde_yaml::from_str(text)
            .map_err(|e| crate::error::RunError::usage(format!("{origin}: invalid simulator config: {e}")))?;
        for d in &c.deployments {
            if let Some(f) = &d.behaviour.fault {
                f.validate()
                    .map_err(|e| crate::error::RunError::usage(format!("{origin}: deployment {}: {e}", d.name)))?;
            }
        }
        Ok(c)
    }
}
