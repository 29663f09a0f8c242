//! `${name}` substitution for commands, env and the router config template. An unknown name
//! is an error naming the file and line, never an empty string.
//!
//! A service that is not started may have a stand-in ([`stand_in`]): its `${name.url}`,
//! `${name.host}` and `${name.port}` then render as the stand-in's, so a config naming an
//! optional service (the GPU lane's vLLM) still renders, and its traffic goes to the stand-in.

use std::borrow::Cow;
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
            let value = lookup(vars, name).ok_or_else(|| unknown(origin, lineno + 1, name, vars))?;
            out.push_str(&value);
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// Records that `service`, not started, is answered by `by` (a service name without `/`): its
/// `${service.host}` and `${service.port}` are `by`'s, its `${service.url}` is `by`'s followed
/// by `path` (the simulator serves a deployment under `/d/<name>`). One entry, `service.*`: a
/// name no placeholder can be looked up by directly.
pub fn stand_in(vars: &mut Vars, service: &str, by: &str, path: &str) {
    debug_assert!(!by.contains('/'), "a stand-in's name cannot hold its path separator");
    vars.insert(stand_in_key(service), format!("{by}{path}"));
}

fn stand_in_key(service: &str) -> String {
    format!("{service}.*")
}

/// `service.*` → (the stand-in's name, the path after its URL).
fn stand_in_of<'a>(vars: &'a Vars, service: &str) -> Option<(&'a str, &'a str)> {
    let v = vars.get(&stand_in_key(service))?;
    Some(match v.find('/') {
        Some(i) => v.split_at(i),
        None => (v.as_str(), ""),
    })
}

fn lookup<'a>(vars: &'a Vars, name: &str) -> Option<Cow<'a, str>> {
    if name.ends_with(".*") {
        return None;
    }
    if let Some(v) = vars.get(name) {
        return Some(Cow::Borrowed(v));
    }
    let (service, field) = name.rsplit_once('.')?;
    let (by, path) = stand_in_of(vars, service)?;
    let v = vars.get(&format!("{by}.{field}"))?;
    match field {
        "url" => Some(Cow::Owned(format!("{v}{path}"))),
        "host" | "port" => Some(Cow::Borrowed(v)),
        _ => None,
    }
}

fn unknown(origin: &str, line: usize, name: &str, vars: &Vars) -> RunError {
    let stand_in = name
        .rsplit_once('.')
        .and_then(|(service, _)| Some((service, stand_in_of(vars, service)?.0)));
    if let Some((service, by)) = stand_in {
        return RunError::usage(format!(
            "{origin}:{line}: placeholder ${{{name}}}: '{service}' is not started and its stand-in \
             '{by}' answers for its url, host and port only, once started itself (a service must \
             depend on the services its command or config names)"
        ));
    }
    let known: Vec<String> = vars
        .keys()
        .map(|k| match k.strip_suffix(".*") {
            Some(service) => format!("{service}.url|host|port (stand-in)"),
            None => k.clone(),
        })
        .collect();
    RunError::usage(format!(
        "{origin}:{line}: unknown placeholder ${{{name}}} (known: {})",
        known.join(", ")
    ))
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

    #[test]
    fn a_service_not_started_renders_as_its_stand_in() {
        let mut vars: Vars = [
            ("sim.url".to_owned(), "http://127.0.0.1:9".to_owned()),
            ("sim.host".to_owned(), "127.0.0.1".to_owned()),
            ("sim.port".to_owned(), "9".to_owned()),
        ]
        .into();
        stand_in(&mut vars, "vllm", "sim", "/d/vllm");
        let text = "base: ${vllm.url}/v1 at ${vllm.host}:${vllm.port}\n";
        assert_eq!(
            render("r", text, &vars).unwrap(),
            "base: http://127.0.0.1:9/d/vllm/v1 at 127.0.0.1:9\n"
        );
        // Only address fields stand in, and the entry itself is no placeholder.
        let err = render("r", "${vllm.model}", &vars).unwrap_err().to_string();
        assert!(err.contains("'vllm' is not started and its stand-in 'sim'"), "{err}");
        let err = render("r", "${vllm.*}", &vars).unwrap_err().to_string();
        assert!(err.contains("'vllm' is not started"), "{err}");
        // A started service's own values win over any stand-in.
        vars.insert("vllm.url".into(), "http://vllm:8000".into());
        assert_eq!(render("r", "${vllm.url}/v1", &vars).unwrap(), "http://vllm:8000/v1");
        // A stand-in not started (yet) is named in the error.
        let mut early: Vars = BTreeMap::new();
        stand_in(&mut early, "vllm", "sim", "/d/vllm");
        let err = render("router.yaml", "a\nb: ${vllm.url}\n", &early)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("router.yaml:2: placeholder ${vllm.url}"), "{err}");
        assert!(err.contains("stand-in 'sim'"), "{err}");
        // Without a path the URL is the stand-in's own.
        let mut plain = vars.clone();
        plain.remove("vllm.url");
        stand_in(&mut plain, "vllm", "sim", "");
        assert_eq!(render("r", "${vllm.url}", &plain).unwrap(), "http://127.0.0.1:9");
        let err = render("r", "${nope}", &plain).unwrap_err().to_string();
        assert!(err.contains("vllm.url|host|port (stand-in)"), "{err}");
    }
}
