//! What a deployment is: which provider dialect LiteLLM speaks to it, and what kind of
//! model it serves (chat, embeddings, images…).
//!
//! The simulator speaks OpenAI (also for vLLM's `hosted_vllm/`), Azure OpenAI and Anthropic
//! Messages, so those keep their provider when mirrored — LiteLLM's translation and cost
//! mapping for them stay under test. Any other provider is mirrored to `openai/` (with a
//! warning): its routing is still tested, its wire format is not.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    OpenAi,
    Azure,
    Anthropic,
    HostedVllm,
    /// A provider the simulator does not speak (named as configured).
    Other(String),
}

impl Provider {
    /// The provider and the served model name of a LiteLLM `model` string
    /// (`azure/gpt-4o-prod` → Azure, `gpt-4o-prod`). Without a prefix LiteLLM guesses from the
    /// name; gauntlet guesses the two families it can tell apart.
    pub fn of(model: &str) -> (Self, String) {
        match model.split_once('/') {
            Some((p, rest)) => {
                let provider = match p {
                    "openai" | "text-completion-openai" | "custom_openai" => Self::OpenAi,
                    "azure" => Self::Azure,
                    "anthropic" => Self::Anthropic,
                    "hosted_vllm" => Self::HostedVllm,
                    other => Self::Other(other.to_owned()),
                };
                (provider, rest.to_owned())
            }
            None if model.starts_with("claude") => (Self::Anthropic, model.to_owned()),
            None => (Self::OpenAi, model.to_owned()),
        }
    }

    /// Whether the simulator speaks this provider's wire format.
    pub fn simulated(&self) -> bool {
        !matches!(self, Self::Other(_))
    }

    /// The LiteLLM prefix for this provider.
    pub fn prefix(&self) -> &str {
        match self {
            Self::OpenAi => "openai",
            Self::Azure => "azure",
            Self::Anthropic => "anthropic",
            Self::HostedVllm => "hosted_vllm",
            Self::Other(p) => p,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.prefix())
    }
}

/// What a deployment serves (`model_info.mode`, else guessed from the model's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Chat,
    Embedding,
    ImageGeneration,
    /// Audio, rerank, moderation…: no case sends these yet.
    Other(String),
}

impl Mode {
    pub fn of(mode: Option<&str>, model: &str) -> Self {
        match mode {
            Some("chat") | Some("completion") | Some("responses") => Self::Chat,
            Some("embedding") => Self::Embedding,
            Some("image_generation") => Self::ImageGeneration,
            Some(other) => Self::Other(other.to_owned()),
            None => {
                let m = model.to_ascii_lowercase();
                if m.contains("embed") {
                    Self::Embedding
                } else if ["dall-e", "gpt-image", "imagen", "stable-diffusion", "flux"]
                    .iter()
                    .any(|n| m.contains(n))
                {
                    Self::ImageGeneration
                } else if ["whisper", "tts", "rerank", "moderation"].iter().any(|n| m.contains(n)) {
                    Self::Other("audio/rerank/moderation".into())
                } else {
                    Self::Chat
                }
            }
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Chat => "chat",
            Self::Embedding => "embedding",
            Self::ImageGeneration => "image_generation",
            Self::Other(s) => s,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_and_modes() {
        assert_eq!(
            Provider::of("azure/gpt-4o-prod"),
            (Provider::Azure, "gpt-4o-prod".into())
        );
        assert_eq!(Provider::of("claude-3-haiku").0, Provider::Anthropic);
        assert_eq!(Provider::of("gpt-4o").0, Provider::OpenAi);
        assert_eq!(
            Provider::of("bedrock/anthropic.claude-v2").0,
            Provider::Other("bedrock".into())
        );
        assert_eq!(Provider::of("bedrock/anthropic.claude-v2").1, "anthropic.claude-v2");
        assert_eq!(Mode::of(None, "text-embedding-3-small"), Mode::Embedding);
        assert_eq!(Mode::of(None, "azure/dall-e-3"), Mode::ImageGeneration);
        assert_eq!(Mode::of(Some("embedding"), "whatever"), Mode::Embedding);
        assert_eq!(Mode::of(None, "gpt-4o"), Mode::Chat);
    }
}
