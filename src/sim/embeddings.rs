//! OpenAI's embeddings wire format (Azure's too): `input` as a string, a list of strings, a
//! token array or a list of token arrays; deterministic unit vectors; `encoding_format`
//! `float` or `base64` (little-endian f32, what the OpenAI SDK asks for when the caller does
//! not say).

use serde::Serialize;
use serde_json::{Map, Value};

use super::openai::{self, Refusal, invalid};
use super::request::{EmbeddingInput, Kind, Request, fnv, type_name, unit, xorshift};
use super::tokenizer::{Tokenizer, TokenizerMap};

/// Small, so journal dumps and test fixtures stay readable; `dimensions` asks for more.
pub const DEFAULT_DIMENSIONS: usize = 8;
/// Above the largest real embedding model's size; keeps a typo from allocating gigabytes.
pub const MAX_DIMENSIONS: usize = 4096;

/// Parses an embeddings request; `path_model` as in [`openai::model`], `tokenizers` as in
/// [`openai::parse_for`].
pub fn parse(body: &[u8], path_model: Option<&str>, tokenizers: &TokenizerMap) -> Result<Request, Refusal> {
    let obj = openai::object(body)?;
    let model = openai::model(&obj, path_model)?;
    let tokenizer = Tokenizer::resolve(tokenizers, &model);
    let inputs = inputs(&obj, tokenizer)?;
    let tokens: u64 = inputs.iter().map(|(_, n)| n).sum();
    let texts: Vec<String> = inputs.into_iter().map(|(t, _)| t).collect();
    let dimensions = match obj.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=MAX_DIMENSIONS as u64).contains(&n) => n as usize,
            _ => {
                return Err(invalid(
                    format!("dimensions must be an integer from 1 to {MAX_DIMENSIONS}"),
                    Some("dimensions"),
                ));
            }
        },
    };
    let base64 = match obj.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(other) => {
            return Err(invalid(
                format!("encoding_format must be \"float\" or \"base64\", not {other}"),
                Some("encoding_format"),
            ));
        }
    };
    Ok(Request {
        kind: Kind::Embeddings,
        model,
        text: texts.join("\n"),
        prompt_tokens: tokens.max(1),
        max_tokens: None,
        stream: false,
        include_usage: false,
        user: openai::user(&obj)?,
        metadata: obj.get("metadata").cloned(),
        cache_prefix: None,
        usage_details: None,
        omit_usage: false,
        charset: None,
        tokenizer,
        embedding: Some(EmbeddingInput {
            inputs: texts,
            dimensions,
            base64,
        }),
    })
}

/// Each input's text and token count: a string's by the tokenizer, a token array's length.
fn inputs(obj: &Map<String, Value>, tokenizer: Tokenizer) -> Result<Vec<(String, u64)>, Refusal> {
    let bad = |why: String| invalid(format!("input {why}"), Some("input"));
    let tokens = |a: &[Value]| -> Option<(String, u64)> {
        let ids: Option<Vec<String>> = a.iter().map(|t| t.as_u64().map(|n| n.to_string())).collect();
        ids.filter(|ids| !ids.is_empty())
            .map(|ids| (ids.join(" "), ids.len() as u64))
    };
    match obj.get("input") {
        None | Some(Value::Null) => Err(invalid("missing required parameter: input".into(), Some("input"))),
        Some(Value::String(s)) if s.is_empty() => Err(bad("must not be an empty string".into())),
        Some(Value::String(s)) => Ok(vec![(s.clone(), tokenizer.count(s))]),
        Some(Value::Array(a)) if a.is_empty() => Err(bad("must not be an empty list".into())),
        Some(Value::Array(a)) if a.iter().all(Value::is_number) => tokens(a)
            .map(|t| vec![t])
            .ok_or_else(|| bad("token ids must be non-negative integers".into())),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) if !s.is_empty() => Ok((s.clone(), tokenizer.count(s))),
                Value::Array(t) => tokens(t).ok_or_else(|| bad(format!("[{i}] must be a non-empty list of token ids"))),
                other => Err(bad(format!(
                    "[{i}] must be a non-empty string or a token array, not {}",
                    type_name(other)
                ))),
            })
            .collect(),
        Some(other) => Err(bad(format!(
            "must be a string, a list of strings or token arrays, not {}",
            type_name(other)
        ))),
    }
}

/// The vector for one input: a unit vector drawn from a hash of (seed, model, input). The
/// deployment is left out, as a model embeds a text the same wherever it is served, and
/// fewer `dimensions` give the renormalised prefix of more, as OpenAI's shortened
/// embeddings do.
pub fn vector(seed: u64, model: &str, input: &str, dimensions: usize) -> Vec<f32> {
    // `| 1`: xorshift would stay at zero forever from a zero state.
    let mut x = fnv(&[&seed.to_le_bytes(), model.as_bytes(), input.as_bytes()]) | 1;
    let raw: Vec<f64> = (0..dimensions).map(|_| unit(xorshift(&mut x)) * 2.0 - 1.0).collect();
    let norm = raw.iter().map(|v| v * v).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
    raw.iter().map(|v| (v / norm) as f32).collect()
}

#[derive(Serialize)]
#[serde(untagged)]
enum Vector {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct Item {
    object: &'static str,
    index: usize,
    embedding: Vector,
}

#[derive(Serialize)]
struct Usage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct Body<'a> {
    object: &'static str,
    data: Vec<Item>,
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

/// The reply body: one vector per input, in order.
pub fn body(seed: u64, req: &Request, with_usage: bool) -> Vec<u8> {
    let data = req
        .embedding
        .as_ref()
        .map(|e| {
            e.inputs
                .iter()
                .enumerate()
                .map(|(index, input)| {
                    let v = vector(seed, &req.model, input, e.dimensions);
                    Item {
                        object: "embedding",
                        index,
                        embedding: if e.base64 {
                            Vector::Base64(base64(&v))
                        } else {
                            Vector::Float(v)
                        },
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let body = Body {
        object: "list",
        data,
        model: &req.model,
        usage: with_usage.then_some(Usage {
            prompt_tokens: req.prompt_tokens,
            total_tokens: req.prompt_tokens,
        }),
    };
    serde_json::to_vec(&body).expect("an embedding serializes")
}

/// Standard base64 (with padding) of the vector's little-endian f32 bytes. Hand-rolled: a
/// dozen lines do not justify a dependency.
pub fn base64(v: &[f32]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// Decodes standard base64 into f32s, as the OpenAI SDK does.
    pub fn decode(s: &str) -> Vec<f32> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        };
        let mut bytes = Vec::new();
        for chunk in s.as_bytes().chunks(4) {
            let data: Vec<u8> = chunk.iter().copied().filter(|c| *c != b'=').map(val).collect();
            let n = data
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, d)| n | (u32::from(*d) << (18 - 6 * i)));
            bytes.extend((0..data.len().saturating_sub(1)).map(|i| (n >> (16 - 8 * i)) as u8));
        }
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    #[test]
    fn inputs_count_by_the_word_rule_and_vectors_are_unit_and_stable() {
        let req = parse(
            br#"{"model":"e","input":["hello there","one"],"dimensions":5}"#,
            None,
            &Default::default(),
        )
        .unwrap();
        assert_eq!(req.prompt_tokens, 3);
        let req2 = parse(br#"{"model":"e","input":[[1,2,3],[4]]}"#, None, &Default::default()).unwrap();
        assert_eq!(req2.prompt_tokens, 4);
        assert_eq!(req2.embedding.unwrap().dimensions, DEFAULT_DIMENSIONS);
        let v = vector(1, "e", "hello there", 5);
        assert_eq!(v, vector(1, "e", "hello there", 5));
        assert_ne!(v, vector(2, "e", "hello there", 5), "the seed must matter");
        let norm: f32 = v.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-5, "{norm}");
        let long = vector(1, "e", "hello there", 9);
        let scale = v[0] / long[0];
        assert!(v.iter().zip(&long).all(|(a, b)| (a - b * scale).abs() < 1e-5));
        assert_eq!(decode(&base64(&v)), v);
        for n in 1..=7 {
            let v: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 1.0).collect();
            assert_eq!(decode(&base64(&v)), v, "{n}");
        }
    }

    #[test]
    fn bad_embedding_requests_are_named() {
        for (body, want) in [
            (&br#"{"model":"e"}"#[..], "missing required parameter: input"),
            (br#"{"model":"e","input":""}"#, "empty string"),
            (br#"{"model":"e","input":[]}"#, "empty list"),
            (br#"{"model":"e","input":[1,-2]}"#, "token ids"),
            (br#"{"model":"e","input":["a",5]}"#, "input [1]"),
            (br#"{"model":"e","input":"a","dimensions":0}"#, "dimensions"),
            (
                br#"{"model":"e","input":"a","encoding_format":"hex"}"#,
                "encoding_format",
            ),
            (br#"{"input":"a"}"#, "model"),
        ] {
            let r = parse(body, None, &Default::default()).unwrap_err();
            assert_eq!(r.status, 400);
            let msg = r.body["error"]["message"].as_str().unwrap();
            assert!(msg.contains(want), "{want}: {msg}");
        }
        assert_eq!(
            parse(br#"{"input":"a"}"#, Some("azdep"), &Default::default())
                .unwrap()
                .model,
            "azdep"
        );
    }
}
