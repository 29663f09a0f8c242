//! [`Tag`]: what lets cases run in parallel against one stack. Every request a case sends
//! carries its tag; the simulator applies a case's fault rules only to requests that carry
//! it; the journal and the ledger sink answer "what carried this tag". One type, one rule,
//! used on all three sides — so a tag that matches a fault rule also finds its journal
//! entries and logging payloads.
//!
//! The rule: a request carries tag `t` when its `user` is `t`, or its prompt contains the
//! marker `[t]`. Routers forward prompts verbatim (LiteLLM does not forward `user` to
//! OpenAI-compatible upstreams, so the marker is what reaches the simulator); the brackets
//! make `gt1a2b` and its sub-tag `gt1a2b-fb` different tags, never one a prefix of the other.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A checked tag: 2 to 64 characters of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

/// A string that cannot be a tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a tag: 2 to 64 characters of letters, digits, '.', '_' or '-'")]
pub struct BadTag(pub String);

impl TryFrom<String> for Tag {
    type Error = BadTag;
    fn try_from(s: String) -> Result<Self, BadTag> {
        let ok = (2..=64).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if ok { Ok(Self(s)) } else { Err(BadTag(s)) }
    }
}

impl From<Tag> for String {
    fn from(t: Tag) -> Self {
        t.0
    }
}

impl std::str::FromStr for Tag {
    type Err = BadTag;
    fn from_str(s: &str) -> Result<Self, BadTag> {
        Self::try_from(s.to_owned())
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Tag {
    /// A fresh tag: `prefix` and random hex (`gt1a2b3c4d5e6f`, `req-1a2b3c`).
    pub fn fresh(prefix: &str, hex_bytes: usize) -> Self {
        Self(format!("{prefix}{}", crate::random::random_hex(hex_bytes)))
    }

    /// A tag derived from this one (`gt…-fb`): a different tag, not matched by this one.
    pub fn sub(&self, part: &str) -> Self {
        Self(format!("{}-{part}", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `[tag]`, as it stands in a prompt.
    pub fn marker(&self) -> String {
        format!("[{}]", self.0)
    }

    /// Whether a request with this `user` and prompt text carries the tag.
    pub fn carried_by(&self, user: Option<&str>, text: &str) -> bool {
        user == Some(self.0.as_str()) || text.contains(&self.marker())
    }

    /// Every tag a prompt text carries (its `[tag]` markers), for a journal that answers
    /// tag queries without keeping whole prompts.
    ///
    /// `all_in(text).contains(t)` is exactly `text.contains(&t.marker())`: every `[` may open a
    /// marker (also one inside an unclosed bracket, `[see [t]`), and as a tag has no brackets
    /// its marker ends at the first `]` after it, within 65 bytes.
    pub fn all_in(text: &str) -> Vec<Tag> {
        let mut out: Vec<Tag> = Vec::new();
        for (open, _) in text.match_indices('[') {
            let rest = &text[open + 1..];
            let Some(close) = rest.bytes().take(65).position(|b| b == b']') else {
                continue;
            };
            if let Ok(t) = rest[..close].parse::<Tag>()
                && !out.contains(&t)
            {
                out.push(t);
            }
        }
        out
    }

    /// Whether one of the router's logging payloads is about a request carrying the tag:
    /// billed to it (`end_user`), traced by it (`trace_id`), tagged with it, or with its
    /// marker in the logged messages.
    pub fn in_payload(&self, p: &Value) -> bool {
        let t = Some(self.0.as_str());
        p.get("end_user").and_then(Value::as_str) == t
            || p.get("trace_id").and_then(Value::as_str) == t
            || p.get("request_tags")
                .and_then(Value::as_array)
                .is_some_and(|tags| tags.iter().any(|x| x.as_str() == t))
            || p.get("messages")
                .is_some_and(|m| m.to_string().contains(&self.marker()))
    }

    /// Stamps a chat request: `user`, the prompt marker, and metadata the router logs
    /// (`tenant`, `tags`); `trace_id` is left to the caller, which may want one per request.
    pub fn stamp(&self, body: &mut Value) {
        body["user"] = json!(self.0);
        if let Some(first) = body.pointer_mut("/messages/0/content")
            && let Some(text) = first.as_str()
            && !text.contains(&self.marker())
        {
            *first = json!(format!("{} {text}", self.marker()));
        }
        let meta = &mut body["metadata"];
        if !meta.is_object() {
            *meta = json!({});
        }
        meta["tenant"] = json!(self.0);
        let tags = meta["tags"].as_array().cloned().unwrap_or_default();
        if !tags.iter().any(|x| x.as_str() == Some(self.0.as_str())) {
            let mut tags = tags;
            tags.push(json!(self.0));
            meta["tags"] = Value::Array(tags);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> Tag {
        s.parse().unwrap()
    }

    #[test]
    fn tags_are_checked_once() {
        assert!("gt1a2b".parse::<Tag>().is_ok());
        for bad in ["", "a", "has space", "semi;colon", &"x".repeat(65)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<Tag>("\"a b\"").is_err());
    }

    #[test]
    fn a_tag_and_its_sub_tag_never_match_each_other() {
        let t = tag("gt1a2b");
        let fb = t.sub("fb");
        assert!(t.carried_by(None, "[gt1a2b] hello"));
        assert!(!t.carried_by(None, "[gt1a2b-fb] hello"));
        assert!(!fb.carried_by(Some("gt1a2b"), "[gt1a2b] hello"));
        assert!(fb.carried_by(Some("gt1a2b-fb"), "no marker"));
        assert_eq!(
            Tag::all_in("[acme-gt1] [req-9f] text [not a tag] [x"),
            [tag("acme-gt1"), tag("req-9f")]
        );
        assert_eq!(Tag::all_in("[see [gt1] and [[gt2]"), [tag("gt1"), tag("gt2")]);
    }

    #[test]
    fn stamped_requests_and_their_payloads_carry_the_tag() {
        let t = tag("gt77");
        let mut body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        t.stamp(&mut body);
        t.stamp(&mut body);
        assert_eq!(body["messages"][0]["content"], "[gt77] hi");
        assert_eq!(body["metadata"]["tags"], json!(["gt77"]));
        assert!(t.carried_by(body["user"].as_str(), body["messages"][0]["content"].as_str().unwrap()));
        let payload = json!({"end_user": "someone", "messages": [{"content": "[gt77] hi"}]});
        assert!(t.in_payload(&payload));
        assert!(!tag("gt7").in_payload(&payload));
        assert!(tag("someone").in_payload(&payload));
    }
}
