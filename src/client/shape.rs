//! Field-by-field checks of OpenAI response shapes, with errors that name the field.

use serde_json::Value;

fn field<'a>(v: &'a Value, path: &str) -> anyhow::Result<&'a Value> {
    v.pointer(path)
        .filter(|x| !x.is_null())
        .ok_or_else(|| anyhow::anyhow!("response has no {path}: {}", short(v)))
}

fn short(v: &Value) -> String {
    super::excerpt(&v.to_string())
}

/// Usage as (prompt, completion, total), checked: integers, total = prompt + completion.
pub fn usage(v: &Value) -> anyhow::Result<(u64, u64, u64)> {
    let get = |k: &str| {
        v.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| anyhow::anyhow!("usage.{k} is not a non-negative integer: {}", short(v)))
    };
    let (p, c, t) = (get("prompt_tokens")?, get("completion_tokens")?, get("total_tokens")?);
    anyhow::ensure!(
        t == p + c,
        "usage.total_tokens {t} != prompt_tokens {p} + completion_tokens {c}"
    );
    Ok((p, c, t))
}

/// A non-streamed chat completion, field by field. Returns the assistant's content.
pub fn chat_completion(v: &Value) -> anyhow::Result<String> {
    let id = field(v, "/id")?;
    anyhow::ensure!(
        id.as_str().is_some_and(|s| !s.is_empty()),
        "id is not a non-empty string: {id}"
    );
    let object = field(v, "/object")?;
    anyhow::ensure!(
        object == "chat.completion",
        "object is {object}, expected \"chat.completion\""
    );
    anyhow::ensure!(
        field(v, "/created")?.as_u64().is_some(),
        "created is not a unix timestamp"
    );
    anyhow::ensure!(field(v, "/model")?.is_string(), "model is not a string");
    let choices = field(v, "/choices")?
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("choices is not a list"))?;
    anyhow::ensure!(!choices.is_empty(), "choices is empty");
    let c0 = &choices[0];
    anyhow::ensure!(
        c0.get("index").and_then(Value::as_u64) == Some(0),
        "choices[0].index is not 0"
    );
    let role = field(c0, "/message/role")?;
    anyhow::ensure!(
        role == "assistant",
        "choices[0].message.role is {role}, expected \"assistant\""
    );
    let content = field(c0, "/message/content")?
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("choices[0].message.content is not a string"))?;
    let finish = field(c0, "/finish_reason")?;
    anyhow::ensure!(
        matches!(finish.as_str(), Some("stop" | "length")),
        "choices[0].finish_reason is {finish}, expected \"stop\" or \"length\""
    );
    usage(field(v, "/usage")?)?;
    Ok(content.to_owned())
}

/// An OpenAI-shaped error body: `{"error": {"message": ..., ...}}`. Returns the message.
pub fn error_body(v: &Value) -> anyhow::Result<String> {
    let msg = field(v, "/error/message")?;
    msg.as_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("error.message is not a string: {msg}"))
}

/// The model ids of a `/v1/models` reply (`data[].id`).
pub fn model_ids(v: &Value) -> anyhow::Result<Vec<String>> {
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow::anyhow!("no data list in a /v1/models reply"))?;
    Ok(data
        .iter()
        .filter_map(|m| m.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}})
    }

    #[test]
    fn accepts_a_good_completion_and_names_each_broken_field() {
        assert_eq!(chat_completion(&good()).unwrap(), "hi");
        let breaks: [(&str, Value, &str); 5] = [
            ("/object", json!("x"), "object is"),
            ("/choices", json!([]), "choices is empty"),
            ("/choices/0/message/role", json!("user"), "role"),
            ("/usage/total_tokens", json!(4), "total_tokens 4"),
            ("/choices/0/finish_reason", json!("weird"), "finish_reason"),
        ];
        for (path, val, want) in breaks {
            let mut v = good();
            *v.pointer_mut(path).unwrap() = val;
            let e = chat_completion(&v).unwrap_err().to_string();
            assert!(e.contains(want), "{path}: {e}");
        }
    }
}
