//! [`LoggingPayload`]: one of the router's per-request logging payloads (LiteLLM's standard
//! logging payload, as its `generic_api` callback posts it), with the fields the suites
//! read typed once, and the raw value kept as evidence for failure messages.

use serde_json::Value;

/// Whether the router logged the request as served or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Success,
    Failure,
    /// A status this version of gauntlet does not know (the raw payload has it).
    Other,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoggingPayload {
    /// The logging event's id: one request may be posted more than once.
    pub id: Option<String>,
    pub status: Status,
    /// The request's `user`, as the router attributes spend.
    pub end_user: Option<String>,
    pub trace_id: Option<String>,
    /// The deployment that served (`model_info.id`).
    pub model_id: Option<String>,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    pub total_tokens: Option<u64>,
    pub response_cost: Option<f64>,
    /// The token kinds priced apart, from the usage the router logged (`metadata.usage_object`).
    pub details: TokenDetails,
    pub cache_hit: bool,
    pub request_tags: Vec<String>,
    /// `metadata.requester_metadata.tenant` (the request's own metadata, kept by the router).
    pub tenant: Option<String>,
    pub raw: Value,
}

impl From<Value> for LoggingPayload {
    fn from(raw: Value) -> Self {
        let s = |k: &str| raw.get(k).and_then(Value::as_str).map(str::to_owned);
        let n = |k: &str| raw.get(k).and_then(Value::as_u64);
        Self {
            id: s("id"),
            status: match raw.get("status").and_then(Value::as_str) {
                Some("success") => Status::Success,
                Some("failure") => Status::Failure,
                _ => Status::Other,
            },
            end_user: s("end_user"),
            trace_id: s("trace_id"),
            model_id: s("model_id"),
            prompt_tokens: n("prompt_tokens"),
            completion_tokens: n("completion_tokens"),
            total_tokens: n("total_tokens"),
            response_cost: raw.get("response_cost").and_then(Value::as_f64),
            details: raw
                .pointer("/metadata/usage_object")
                .map(TokenDetails::of_usage)
                .unwrap_or_default(),
            cache_hit: raw.get("cache_hit").and_then(Value::as_bool) == Some(true),
            request_tags: raw
                .get("request_tags")
                .and_then(Value::as_array)
                .map(|t| t.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
            tenant: raw
                .pointer("/metadata/requester_metadata/tenant")
                .or_else(|| raw.pointer("/metadata/tenant"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            raw,
        }
    }
}

impl LoggingPayload {
    pub fn is_success(&self) -> bool {
        self.status == Status::Success
    }
}

/// The parts of a usage that are priced apart; `None` where the usage does not say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenDetails {
    /// Prompt tokens read from the provider's cache.
    pub cache_read: Option<u64>,
    /// Prompt tokens written to the provider's cache.
    pub cache_creation: Option<u64>,
    /// Completion tokens spent on hidden reasoning.
    pub reasoning: Option<u64>,
}

impl TokenDetails {
    /// From an OpenAI-shaped usage object, as LiteLLM returns and logs it: OpenAI's
    /// `prompt_tokens_details.cached_tokens` and `completion_tokens_details.reasoning_tokens`,
    /// and the Anthropic counts LiteLLM copies beside them (`cache_read_input_tokens`,
    /// `cache_creation_input_tokens`, or `prompt_tokens_details.cache_creation_tokens`).
    pub fn of_usage(u: &Value) -> Self {
        let n = |p: &str| u.pointer(p).and_then(Value::as_u64);
        Self {
            cache_read: n("/prompt_tokens_details/cached_tokens").or_else(|| n("/cache_read_input_tokens")),
            cache_creation: n("/cache_creation_input_tokens")
                .or_else(|| n("/prompt_tokens_details/cache_creation_tokens"))
                .or_else(|| n("/prompt_tokens_details/cache_write_tokens")),
            reasoning: n("/completion_tokens_details/reasoning_tokens"),
        }
    }
}

/// Drops repeated deliveries of one logging event (same id and status): a ledger counts each
/// request once however often the router posted it.
pub fn unique(records: Vec<LoggingPayload>) -> Vec<LoggingPayload> {
    let mut seen = std::collections::HashSet::new();
    records
        .into_iter()
        .filter(|r| match &r.id {
            Some(id) => seen.insert((id.clone(), r.status == Status::Success)),
            None => true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fields_are_read_once_and_the_raw_payload_kept() {
        let p = LoggingPayload::from(json!({
            "id": "e1", "status": "success", "end_user": "acme", "model_id": "primary",
            "prompt_tokens": 5, "completion_tokens": 16, "total_tokens": 21, "response_cost": 0.000138,
            "cache_hit": null, "request_tags": ["acme", "User-Agent: x"],
            "metadata": {"requester_metadata": {"tenant": "acme"}}
        }));
        assert!(p.is_success() && !p.cache_hit);
        assert_eq!(
            (p.prompt_tokens, p.total_tokens, p.tenant.as_deref()),
            (Some(5), Some(21), Some("acme"))
        );
        assert_eq!(p.raw["model_id"], "primary");
        assert_eq!(p.details, TokenDetails::default());
        let logged = LoggingPayload::from(json!({"metadata": {"usage_object": {
            "prompt_tokens": 8, "completion_tokens": 26,
            "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 10}}}}));
        assert_eq!(
            logged.details,
            TokenDetails {
                cache_read: Some(4),
                cache_creation: None,
                reasoning: Some(10)
            }
        );
        let anthropic = TokenDetails::of_usage(&json!({"cache_creation_input_tokens": 14,
            "cache_read_input_tokens": 0, "prompt_tokens_details": null}));
        assert_eq!((anthropic.cache_read, anthropic.cache_creation), (Some(0), Some(14)));
        let twice = vec![
            p.clone(),
            p.clone(),
            LoggingPayload::from(json!({"id": "e1", "status": "failure"})),
        ];
        assert_eq!(unique(twice).len(), 2);
    }
}
