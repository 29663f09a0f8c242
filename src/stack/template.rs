//! `${name}` substitution for commands, env and the router config template. An unknown name
//! is an error naming the file and line, never an empty string.

use std::collections::BTreeMap;

use crate::error::RunError;

pub type Vars = BTreeMap<String, String>;

/// Replaces every `${name}` in `text` from `vars`; `origin` names the text in errors.
pub fn render(origin: &str, text: &str, vars: &Vars) -> Result<String, RunError> {
    let mut out = String::with_capacity(text.len());
    for (lineno, line) in text.split_inclusive('\n').enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(RunError::usage(format!(
                    "{origin}:{}: unterminated '${{' placeholder",
                    lineno + 1
                )));
            };
            let name = &after[..end];
            let value = vars.get(name).ok_or_else(|| {
                let known: Vec<&str> = vars.keys().map(String::as_str).collect();
                RunError::usage(format!(
                    "{origin}:{}: unknown placeholder ${{{name}}} (known: {})",
                    lineno + 1,
                    known.join(", ")
                ))
            })?;
            out.push_str(value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// Every placeholder name used in `text` (for deriving what a config needs without values).
pub fn placeholders(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        names.push(after[..end].to_owned());
        rest = &after[end + 1..];
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_rejects_unknown_names() {
        let vars: Vars = [("sim.url".to_owned(), "http://x".to_owned())].into();
        assert_eq!(render("t", "a ${sim.url}/d\n", &vars).unwrap(), "a http://x/d\n");
        let err = render("cfg.yaml", "ok\nb: ${nope}\n", &vars).unwrap_err().to_string();
        assert!(err.starts_with("cfg.yaml:2: unknown placeholder ${nope}"), "{err}");
        let err = render("cfg.yaml", "b: ${open\n", &vars).unwrap_err().to_string();
        assert!(err.contains("unterminated"), "{err}");
        assert_eq!(placeholders("${a} x ${b.c}"), ["a", "b.c"]);
    }
}
