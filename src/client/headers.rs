//! The router's own response headers. LiteLLM's names are `x-litellm-*`; another router
//! plugs in here with its own names, and the suites keep asking the same questions.

use reqwest::header::HeaderMap;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouterHeaders {
    /// The deployment that served (`model_info.id`).
    pub model_id: Option<String>,
    pub model_group: Option<String>,
    pub attempted_retries: Option<u32>,
    pub attempted_fallbacks: Option<u32>,
    pub response_cost: Option<f64>,
    pub call_id: Option<String>,
    pub version: Option<String>,
    pub cache_key: Option<String>,
}

fn get(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .filter(|s| !s.is_empty() && s != "None")
}

impl From<&HeaderMap> for RouterHeaders {
    fn from(h: &HeaderMap) -> Self {
        Self {
            model_id: get(h, "x-litellm-model-id"),
            model_group: get(h, "x-litellm-model-group"),
            attempted_retries: get(h, "x-litellm-attempted-retries").and_then(|v| v.parse().ok()),
            attempted_fallbacks: get(h, "x-litellm-attempted-fallbacks").and_then(|v| v.parse().ok()),
            response_cost: get(h, "x-litellm-response-cost").and_then(|v| v.parse().ok()),
            call_id: get(h, "x-litellm-call-id"),
            version: get(h, "x-litellm-version"),
            cache_key: get(h, "x-litellm-cache-key"),
        }
    }
}
