//! Secret redaction. Every secret gauntlet creates or reads (master key, provider keys) is
//! registered here once; every text that leaves the process for a log, report or artifact
//! passes through [`redact`]. Registering at the source beats pattern-guessing at the sink.

use std::sync::RwLock;

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// What a secret is replaced with.
pub const MASK: &str = "[REDACTED]";

/// Header names whose values are always secret, whatever the value.
pub const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "set-cookie",
    "x-litellm-api-key",
];

/// Registers a secret value so that [`redact`] masks it. Short values are refused because
/// masking "a" everywhere would shred every log without protecting anything.
pub fn register(secret: &str) {
    if secret.len() < 8 {
        return;
    }
    let mut all = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|s| s == secret) {
        all.push(secret.to_owned());
        // Longest first, so a secret that contains another is masked whole.
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Returns `text` with every registered secret, and every `Bearer <token>`, masked.
pub fn redact(text: &str) -> String {
    let all = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    let mut out = text.to_owned();
    for s in all.iter() {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), MASK);
        }
    }
    mask_bearer(&out)
}

/// True when a header of this name carries a secret.
pub fn is_secret_header(name: &str) -> bool {
    SECRET_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

fn mask_bearer(text: &str) -> String {
    const BEARER: &str = "Bearer ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(BEARER) {
        out.push_str(&rest[..i + BEARER.len()]);
        rest = &rest[i + BEARER.len()..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == ',')
            .unwrap_or(rest.len());
        if end > 0 {
            out.push_str(MASK);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_registered_secrets_and_bearer_tokens() {
        register("sk-test-redact-0123456789");
        let text = "key=sk-test-redact-0123456789 h: Authorization: Bearer abc.def-ghi, next";
        let out = redact(text);
        assert!(!out.contains("sk-test-redact-0123456789"), "{out}");
        assert!(!out.contains("abc.def-ghi"), "{out}");
        assert!(out.contains("Bearer [REDACTED], next"), "{out}");
    }

    #[test]
    fn short_values_are_not_registered() {
        register("abc");
        assert_eq!(redact("abc"), "abc");
    }
}
