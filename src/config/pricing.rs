//! A deployment's price, read from the team's own config — the one source both the router
//! (which bills from it) and the ledger (which checks the bill) use.
//!
//! LiteLLM takes custom prices from `model_info` or `litellm_params` (`input_cost_per_token`,
//! `output_cost_per_token`, `cache_read_input_token_cost`, `cache_creation_input_token_cost`,
//! `output_cost_per_reasoning_token`, …). Without any, it bills from its bundled price map by
//! model name, which is not the team's table: such a deployment is *unpriced* and its ledger
//! cases say what to add. Prices gauntlet cannot reproduce yet (per second, per character,
//! per query) make a deployment *unchecked*, naming the keys.

use serde_yaml::Value;

/// USD per token, as the config gives it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    pub cache_read: Option<f64>,
    pub cache_creation: Option<f64>,
    pub reasoning: Option<f64>,
}

/// Token counts of one request, as the upstream reported them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tokens {
    /// All prompt tokens, cached ones included (OpenAI's `prompt_tokens`).
    pub prompt: u64,
    pub completion: u64,
    /// Of `prompt`, read from the provider's prompt cache.
    pub cache_read: u64,
    /// Of `prompt`, written to the provider's prompt cache.
    pub cache_creation: u64,
    /// Of `completion`, hidden reasoning (OpenAI counts them in `completion_tokens`).
    pub reasoning: u64,
}

impl Tokens {
    /// A request without prompt caching.
    pub fn new(prompt: u64, completion: u64) -> Self {
        Self {
            prompt,
            completion,
            ..Self::default()
        }
    }
}

impl Price {
    /// What `t` costs: cached prompt tokens and reasoning tokens at their own price where the
    /// config has one, the rest at the input and output prices.
    pub fn cost(&self, t: Tokens) -> f64 {
        self.lines(t).iter().map(|l| l.tokens as f64 * l.price).sum()
    }

    /// The bill of `t` line by line (token kinds a request has none of left out), for a
    /// failure message that shows which price a router may have used instead.
    pub fn explain(&self, t: Tokens) -> String {
        let lines: Vec<String> = self
            .lines(t)
            .iter()
            .filter(|l| l.tokens > 0)
            .map(|l| format!("{} {} × {:e}", l.tokens, l.kind, l.price))
            .collect();
        if lines.is_empty() {
            "no tokens".into()
        } else {
            lines.join(" + ")
        }
    }

    fn lines(&self, t: Tokens) -> [Line; 5] {
        [
            Line {
                kind: "prompt",
                tokens: t.prompt.saturating_sub(t.cache_read + t.cache_creation),
                price: self.input,
            },
            Line {
                kind: "cache-read",
                tokens: t.cache_read,
                price: self.cache_read.unwrap_or(self.input),
            },
            Line {
                kind: "cache-write",
                tokens: t.cache_creation,
                price: self.cache_creation.unwrap_or(self.input),
            },
            Line {
                kind: "completion",
                tokens: t.completion.saturating_sub(t.reasoning),
                price: self.output,
            },
            Line {
                kind: "reasoning",
                tokens: t.reasoning,
                price: self.reasoning.unwrap_or(self.output),
            },
        ]
    }
}

/// One line of a bill: so many tokens of a kind at a price.
struct Line {
    kind: &'static str,
    tokens: u64,
    price: f64,
}

/// Whether the ledger can check what a deployment costs.
#[derive(Debug, Clone, PartialEq)]
pub enum Pricing {
    Priced(Price),
    /// No per-token price in the config.
    Unpriced,
    /// Priced in a way gauntlet cannot reproduce yet; the keys that make it so.
    Unchecked(Vec<String>),
}

impl Pricing {
    pub fn price(&self) -> Option<Price> {
        match self {
            Self::Priced(p) => Some(*p),
            _ => None,
        }
    }
}

/// Price keys whose effect on a short text request gauntlet does not reproduce.
const UNCHECKED_MARKERS: &[&str] = &["per_second", "per_character", "per_query", "per_request", "per_pixel"];

/// Reads the price of one deployment from its `litellm_params` and `model_info`.
pub fn of(params: Option<&Value>, info: Option<&Value>) -> Pricing {
    let get = |k: &str| {
        params
            .and_then(|p| p.get(k))
            .or_else(|| info.and_then(|m| m.get(k)))
            .and_then(number)
    };
    let mut unchecked: Vec<String> = [params, info]
        .into_iter()
        .flatten()
        .filter_map(Value::as_mapping)
        .flat_map(|m| m.keys().filter_map(Value::as_str))
        .filter(|k| k.contains("cost") && UNCHECKED_MARKERS.iter().any(|m| k.contains(m)))
        .filter(|k| get(k).is_some_and(|v| v != 0.0))
        .map(str::to_owned)
        .collect();
    unchecked.sort();
    unchecked.dedup();
    if !unchecked.is_empty() {
        return Pricing::Unchecked(unchecked);
    }
    match (get("input_cost_per_token"), get("output_cost_per_token")) {
        (Some(input), Some(output)) => Pricing::Priced(Price {
            input,
            output,
            cache_read: get("cache_read_input_token_cost"),
            cache_creation: get("cache_creation_input_token_cost"),
            reasoning: get("output_cost_per_reasoning_token"),
        }),
        _ => Pricing::Unpriced,
    }
}

/// A number, or a string holding one (YAML configs write `"0.000002"` too).
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The lines a team adds to a deployment's `model_info` to price it (for ignore reasons).
pub fn lines_to_add(id: &str) -> String {
    format!(
        "model_info: {{id: {id}, input_cost_per_token: <USD>, output_cost_per_token: <USD>}} \
         (optionally cache_read_input_token_cost, cache_creation_input_token_cost, \
         output_cost_per_reasoning_token)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_yaml::from_str(s).unwrap()
    }

    #[test]
    fn prices_come_from_model_info_or_params() {
        let info = yaml(
            "{input_cost_per_token: 0.000002, output_cost_per_token: '0.000008', cache_read_input_token_cost: 1e-7}",
        );
        let p = of(None, Some(&info)).price().unwrap();
        assert_eq!((p.input, p.output, p.cache_read), (0.000002, 0.000008, Some(1e-7)));
        let params = yaml("{model: openai/x, input_cost_per_token: 0.1, output_cost_per_token: 0.2}");
        assert_eq!(of(Some(&params), None).price().unwrap().input, 0.1);
        assert_eq!(of(Some(&yaml("{model: x}")), Some(&yaml("{id: a}"))), Pricing::Unpriced);
        // Explicit zero is a price (a team's own vLLM), not a missing one.
        assert_eq!(
            of(None, Some(&yaml("{input_cost_per_token: 0, output_cost_per_token: 0}")))
                .price()
                .unwrap()
                .output,
            0.0
        );
    }

    #[test]
    fn prices_gauntlet_cannot_check_are_named() {
        let info = yaml("{input_cost_per_second: 0.0001, output_cost_per_second: 0.0002, input_cost_per_token: 0}");
        assert_eq!(
            of(None, Some(&info)),
            Pricing::Unchecked(vec!["input_cost_per_second".into(), "output_cost_per_second".into()])
        );
    }

    #[test]
    fn cached_tokens_are_billed_at_their_own_price() {
        let p = Price {
            input: 3e-6,
            output: 15e-6,
            cache_read: Some(3e-7),
            cache_creation: Some(3.75e-6),
            reasoning: None,
        };
        let t = Tokens {
            prompt: 100,
            completion: 10,
            cache_read: 40,
            cache_creation: 20,
            reasoning: 0,
        };
        let want = 40.0 * 3e-6 + 40.0 * 3e-7 + 20.0 * 3.75e-6 + 10.0 * 15e-6;
        assert!((p.cost(t) - want).abs() < 1e-12);
        assert_eq!(
            p.explain(t),
            "40 prompt × 3e-6 + 40 cache-read × 3e-7 + 20 cache-write × 3.75e-6 + 10 completion × 1.5e-5"
        );
    }

    #[test]
    fn reasoning_tokens_are_part_of_the_completion_at_their_own_price() {
        let p = Price {
            input: 4e-6,
            output: 16e-6,
            reasoning: Some(30e-6),
            ..Price::default()
        };
        let t = Tokens {
            prompt: 8,
            completion: 26,
            reasoning: 10,
            ..Tokens::default()
        };
        assert!((p.cost(t) - (8.0 * 4e-6 + 16.0 * 16e-6 + 10.0 * 30e-6)).abs() < 1e-15);
        // Without a price of their own they cost what the other completion tokens cost.
        let plain = Price { reasoning: None, ..p };
        assert!((plain.cost(t) - (8.0 * 4e-6 + 26.0 * 16e-6)).abs() < 1e-15);
    }
}
