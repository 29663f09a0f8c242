//! Reading a team's config file as LiteLLM reads it, but keeping where every node came from.
//!
//! serde_yaml gives values without positions, so one extra pass over the parser's events
//! records the line of every node by its path (`router_settings.fallbacks[0].a[1]`) and
//! rejects a key repeated in one mapping — PyYAML would silently keep the last one, so the
//! first `router_settings:` of a file that has two is never applied, which is worth stopping
//! for. `include:` is resolved as LiteLLM's proxy does (`_process_includes`): paths relative to
//! the main file, a top-level list extends the same key, anything else replaces it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde_yaml::Value;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A place in the user's files, shown as `file:line`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loc {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One step of a path into a YAML document.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(k: &str) -> Self {
        Seg::Key(k.to_owned())
    }
}

impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

/// A config the user gave gauntlet is wrong: what, and where.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    pub loc: Option<Loc>,
    pub file: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.loc {
            Some(l) => write!(f, "{l}: {}", self.message),
            None => write!(f, "{}: {}", self.file, self.message),
        }
    }
}

/// One parsed file: its value and the line of each node.
#[derive(Debug, Clone)]
struct File {
    name: String,
    lines: HashMap<Vec<Seg>, usize>,
}

/// Which file a top-level key's value came from; for a list extended by includes, from which
/// element on.
#[derive(Debug, Clone)]
struct Part {
    file: usize,
    first_elem: usize,
}

/// A config after `include:`, with every node's origin.
#[derive(Debug, Clone)]
pub struct Document {
    /// The main file, as the user named it.
    pub origin: String,
    pub root: Value,
    files: Vec<File>,
    owners: BTreeMap<String, Vec<Part>>,
}

impl Document {
    /// Reads `path` and the files it includes.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            loc: None,
            file: origin.clone(),
            message: format!("cannot read: {e}"),
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse_with(&origin, &text, Some(&base))
    }

    /// Parses text that cannot include other files (a built-in or already rendered config).
    pub fn parse(origin: &str, text: &str) -> Result<Self, ConfigError> {
        Self::parse_with(origin, text, None)
    }

    fn parse_with(origin: &str, text: &str, base: Option<&Path>) -> Result<Self, ConfigError> {
        let (root, main) = parse_file(origin, text)?;
        let mut doc = Self {
            origin: origin.to_owned(),
            root: Value::Null,
            files: vec![main],
            owners: BTreeMap::new(),
        };
        let Value::Mapping(mut top) = root else {
            return Err(doc.error(
                &[],
                "the config is not a mapping of settings (model_list, router_settings, …)",
            ));
        };
        for k in top.keys().filter_map(Value::as_str) {
            doc.owners.insert(k.to_owned(), vec![Part { file: 0, first_elem: 0 }]);
        }
        if let Some(inc) = top.remove("include") {
            let list = inc
                .as_sequence()
                .ok_or_else(|| doc.error(&["include".into()], "include: must be a list of file paths"))?
                .clone();
            let Some(base) = base else {
                return Err(doc.error(
                    &["include".into()],
                    "include: is only resolved for a config read from disk",
                ));
            };
            // LiteLLM appends an included file's own `include:` entries to the list it is
            // walking, so they are loaded too (relative to the main file, as the first level).
            let mut queue: Vec<(Value, Vec<Seg>)> = list
                .iter()
                .enumerate()
                .map(|(i, v)| (v.clone(), vec!["include".into(), i.into()]))
                .collect();
            let mut at = 0;
            while at < queue.len() {
                let (entry, where_) = queue[at].clone();
                at += 1;
                let name = entry
                    .as_str()
                    .ok_or_else(|| doc.error(&where_, "include: entries must be file paths"))?;
                let p: PathBuf = base.join(name);
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| doc.error(&where_, &format!("cannot read included file {}: {e}", p.display())))?;
                let shown = p.display().to_string();
                let (value, file) = parse_file(&shown, &text)?;
                let idx = doc.files.len();
                doc.files.push(file);
                let Value::Mapping(m) = value else {
                    return Err(ConfigError {
                        loc: Some(Loc { file: shown, line: 1 }),
                        file: name.to_owned(),
                        message: "an included file must be a mapping of settings".into(),
                    });
                };
                for (k, v) in m {
                    let Some(key) = k.as_str().map(str::to_owned) else {
                        continue;
                    };
                    if key == "include" {
                        if let Some(more) = v.as_sequence() {
                            let n = queue.len();
                            queue.extend(
                                more.iter()
                                    .enumerate()
                                    .map(|(i, v)| (v.clone(), vec!["include".into(), (n + i).into()])),
                            );
                        }
                        continue;
                    }
                    match (top.get_mut(key.as_str()), v) {
                        (Some(Value::Sequence(existing)), Value::Sequence(more)) => {
                            let first_elem = existing.len();
                            existing.extend(more);
                            doc.owners.entry(key).or_default().push(Part { file: idx, first_elem });
                        }
                        (_, v) => {
                            top.insert(Value::String(key.clone()), v);
                            doc.owners.insert(
                                key,
                                vec![Part {
                                    file: idx,
                                    first_elem: 0,
                                }],
                            );
                        }
                    }
                }
            }
        }
        let mut root = Value::Mapping(top);
        root.apply_merge()
            .map_err(|e| doc.error(&[], &format!("YAML merge keys (<<): {e}")))?;
        doc.root = root;
        Ok(doc)
    }

    /// Where the node at `path` was written; for a node gauntlet cannot place exactly, its
    /// nearest ancestor that it can.
    pub fn loc(&self, path: &[Seg]) -> Loc {
        let (file, local): (usize, Vec<Seg>) = match path.first() {
            Some(Seg::Key(k)) => match self.owners.get(k) {
                Some(parts) => {
                    let part = match path.get(1) {
                        Some(Seg::Index(i)) => parts.iter().rev().find(|p| p.first_elem <= *i).unwrap_or(&parts[0]),
                        _ => parts.last().unwrap_or(&parts[0]),
                    };
                    let mut local = path.to_vec();
                    if let Some(Seg::Index(i)) = local.get_mut(1) {
                        *i -= part.first_elem;
                    }
                    (part.file, local)
                }
                None => (0, path.to_vec()),
            },
            _ => (0, path.to_vec()),
        };
        let f = &self.files[file];
        let mut p = local;
        loop {
            if let Some(l) = f.lines.get(&p) {
                return Loc {
                    file: f.name.clone(),
                    line: *l,
                };
            }
            if p.pop().is_none() {
                return Loc {
                    file: f.name.clone(),
                    line: 1,
                };
            }
        }
    }

    /// An error about the node at `path`.
    pub fn error(&self, path: &[Seg], message: &str) -> ConfigError {
        ConfigError {
            loc: Some(self.loc(path)),
            file: self.origin.clone(),
            message: message.to_owned(),
        }
    }

    /// Whether the config pulled in other files.
    pub fn has_includes(&self) -> bool {
        self.files.len() > 1
    }

    /// Every file the config was read from, main file first.
    pub fn files(&self) -> Vec<String> {
        self.files.iter().map(|f| f.name.clone()).collect()
    }
}

/// Parses one file: the value, and the line of each node (or the first syntax error or
/// repeated key, with its line).
fn parse_file(name: &str, text: &str) -> Result<(Value, File), ConfigError> {
    let mut rx = Lines::default();
    let mut parser = Parser::new_from_str(text);
    if let Err(e) = parser.load(&mut rx, false) {
        let m = e.marker();
        return Err(ConfigError {
            loc: Some(Loc {
                file: name.to_owned(),
                line: m.line(),
            }),
            file: name.to_owned(),
            message: format!("invalid YAML: {} (column {})", e.info(), m.col() + 1),
        });
    }
    if let Some((key, line, first)) = rx.duplicate {
        return Err(ConfigError {
            loc: Some(Loc {
                file: name.to_owned(),
                line,
            }),
            file: name.to_owned(),
            message: format!(
                "key '{key}' appears twice in one mapping (first at line {first}); LiteLLM would silently use only the last one"
            ),
        });
    }
    let value: Value = serde_yaml::from_str(text).map_err(|e| ConfigError {
        loc: e.location().map(|l| Loc {
            file: name.to_owned(),
            line: l.line(),
        }),
        file: name.to_owned(),
        message: format!("invalid YAML: {e}"),
    })?;
    Ok((
        value,
        File {
            name: name.to_owned(),
            lines: rx.lines,
        },
    ))
}

/// A container being read: its path, and for a mapping the keys seen and the key whose
/// value comes next.
enum Frame {
    Map {
        path: Vec<Seg>,
        keys: HashMap<String, usize>,
        key: Option<String>,
    },
    Seq {
        path: Vec<Seg>,
        next: usize,
    },
    /// A complex (non-scalar) mapping key: nothing inside it is addressable.
    Skip,
}

#[derive(Default)]
struct Lines {
    stack: Vec<Frame>,
    lines: HashMap<Vec<Seg>, usize>,
    duplicate: Option<(String, usize, usize)>,
    seen_root: bool,
}

impl Lines {
    /// Records a node starting at `line`; returns its path if it is addressable.
    fn node(&mut self, line: usize, scalar: Option<&str>) -> Option<Vec<Seg>> {
        match self.stack.last_mut() {
            None => {
                if self.seen_root {
                    return None;
                }
                self.seen_root = true;
                self.lines.insert(Vec::new(), line);
                Some(Vec::new())
            }
            Some(Frame::Skip) => None,
            Some(Frame::Seq { path, next }) => {
                let mut p = path.clone();
                p.push(Seg::Index(*next));
                *next += 1;
                self.lines.entry(p.clone()).or_insert(line);
                Some(p)
            }
            Some(Frame::Map { path, keys, key }) => match key.take() {
                None => {
                    // This node is a key.
                    let k = scalar?.to_owned();
                    if let Some(first) = keys.get(&k)
                        && self.duplicate.is_none()
                        && k != "<<"
                    {
                        self.duplicate = Some((k.clone(), line, *first));
                    }
                    keys.insert(k.clone(), line);
                    let mut p = path.clone();
                    p.push(Seg::Key(k.clone()));
                    self.lines.entry(p).or_insert(line);
                    *key = Some(k);
                    None
                }
                Some(k) => {
                    let mut p = path.clone();
                    p.push(Seg::Key(k));
                    self.lines.entry(p.clone()).or_insert(line);
                    Some(p)
                }
            },
        }
    }

    fn open(&mut self, line: usize, map: bool) {
        let is_key = matches!(self.stack.last(), Some(Frame::Map { key: None, .. }));
        if is_key {
            // A complex key: mark the value slot as taken so the next node is its value.
            if let Some(Frame::Map { key, .. }) = self.stack.last_mut() {
                *key = Some("?".into());
            }
            self.stack.push(Frame::Skip);
            return;
        }
        let frame = match self.node(line, None) {
            Some(path) if map => Frame::Map {
                path,
                keys: HashMap::new(),
                key: None,
            },
            Some(path) => Frame::Seq { path, next: 0 },
            None => Frame::Skip,
        };
        self.stack.push(frame);
    }
}

impl MarkedEventReceiver for Lines {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let line = mark.line();
        match ev {
            Event::Scalar(s, ..) => {
                self.node(line, Some(&s));
            }
            Event::Alias(_) => {
                self.node(line, None);
            }
            Event::MappingStart(..) => self.open(line, true),
            Event::SequenceStart(..) => self.open(line, false),
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

/// YAML text that PyYAML (LiteLLM's reader, YAML 1.1) reads back as `value`. serde_yaml
/// writes YAML 1.2, where `2024-10-21`, `on` or `1:30` are plain strings; PyYAML would read a
/// date, a boolean, a number — and LiteLLM then drops the deployment as invalid. Such strings
/// are written quoted. The `${redis.port}` placeholder is written bare: LiteLLM wants the
/// rendered port as an integer.
pub fn to_pyyaml(value: &Value) -> String {
    let mut quoted: Vec<String> = Vec::new();
    let marked = mark_ambiguous(value, &mut quoted);
    let mut text = serde_yaml::to_string(&marked).unwrap_or_default();
    for (i, s) in quoted.iter().enumerate().rev() {
        text = text.replace(
            &format!("__gauntlet_quoted_{i}__"),
            &format!("'{}'", s.replace('\'', "''")),
        );
    }
    text.replace("'${redis.port}'", "${redis.port}")
}

fn mark_ambiguous(v: &Value, quoted: &mut Vec<String>) -> Value {
    match v {
        Value::String(s) if yaml11_non_string(s) => {
            quoted.push(s.clone());
            Value::String(format!("__gauntlet_quoted_{}__", quoted.len() - 1))
        }
        Value::Sequence(items) => Value::Sequence(items.iter().map(|i| mark_ambiguous(i, quoted)).collect()),
        Value::Mapping(m) => Value::Mapping(
            m.iter()
                .map(|(k, v)| (mark_ambiguous(k, quoted), mark_ambiguous(v, quoted)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Whether PyYAML's implicit resolvers could read this plain scalar as something other than
/// a string. Errs towards yes: quoting a string never changes it.
fn yaml11_non_string(s: &str) -> bool {
    // `=` and `<<` are PyYAML's value and merge tags: safe_load has no constructor for either
    // as a plain scalar (ConstructorError), so they are quoted too.
    const WORDS: &[&str] = &["yes", "no", "on", "off", "true", "false", "null", "~", "", "=", "<<"];
    if WORDS.contains(&s.to_ascii_lowercase().as_str()) {
        return true;
    }
    let first = s.chars().next().unwrap_or(' ');
    (first.is_ascii_digit() || "+-.".contains(first))
        && s.chars()
            .all(|c| c.is_ascii_hexdigit() || "xXoObB_.:+-eEtTzZ ".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Seg {
        Seg::Key(s.into())
    }

    #[test]
    fn every_node_has_its_line() {
        let text = "model_list:\n  - model_name: a\n    litellm_params:\n      model: openai/x\n  - model_name: b\nrouter_settings:\n  fallbacks: [{a: [b]}]\n";
        let d = Document::parse("c.yaml", text).unwrap();
        assert_eq!(d.loc(&[k("model_list"), Seg::Index(1)]).line, 5);
        assert_eq!(
            d.loc(&[k("model_list"), Seg::Index(0), k("litellm_params"), k("model")])
                .line,
            4
        );
        assert_eq!(
            d.loc(&[
                k("router_settings"),
                k("fallbacks"),
                Seg::Index(0),
                k("a"),
                Seg::Index(0)
            ])
            .line,
            7
        );
        // An unknown deeper path falls back to its nearest known ancestor.
        assert_eq!(
            d.loc(&[k("model_list"), Seg::Index(1), k("nope")]).to_string(),
            "c.yaml:5"
        );
    }

    #[test]
    fn repeated_keys_and_syntax_errors_name_the_line() {
        let e = Document::parse("c.yaml", "model_list: []\nrouter_settings: {}\nrouter_settings: {}\n").unwrap_err();
        assert_eq!(e.loc.as_ref().unwrap().line, 3, "{e}");
        assert!(
            e.to_string()
                .starts_with("c.yaml:3: key 'router_settings' appears twice"),
            "{e}"
        );
        let e = Document::parse("c.yaml", "model_list:\n  - a: [\n").unwrap_err();
        assert!(e.to_string().starts_with("c.yaml:3: invalid YAML"), "{e}");
        let e = Document::parse("c.yaml", "- a\n- b\n").unwrap_err();
        assert!(
            e.to_string().starts_with("c.yaml:1: the config is not a mapping"),
            "{e}"
        );
    }

    #[test]
    fn includes_extend_lists_replace_the_rest_and_keep_their_lines() {
        let dir = std::env::temp_dir().join(format!("gauntlet-inc-{}", crate::random::random_hex(4)));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(
            dir.join("main.yaml"),
            "include:\n  - sub/models.yaml\nmodel_list:\n  - model_name: a\nrouter_settings:\n  num_retries: 1\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("sub/models.yaml"),
            "model_list:\n  - model_name: b\n  - model_name: c\nrouter_settings:\n  num_retries: 3\n",
        )
        .unwrap();
        let d = Document::load(&dir.join("main.yaml")).unwrap();
        let names: Vec<&str> = d.root["model_list"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|m| m["model_name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(d.root["router_settings"]["num_retries"], 3);
        let loc = d.loc(&[k("model_list"), Seg::Index(2)]);
        assert!(loc.file.ends_with("sub/models.yaml") && loc.line == 3, "{loc}");
        assert!(d.loc(&[k("model_list"), Seg::Index(0)]).file.ends_with("main.yaml"));
        assert!(d.root.get("include").is_none());
        std::fs::write(dir.join("bad.yaml"), "include:\n  - missing.yaml\nmodel_list: []\n").unwrap();
        let e = Document::load(&dir.join("bad.yaml")).unwrap_err().to_string();
        assert!(
            e.contains("bad.yaml:2: cannot read included file") && e.contains("missing.yaml"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn strings_pyyaml_would_misread_are_written_quoted() {
        let v: Value = serde_yaml::from_str(
            "api_version: '2024-10-21'\nflag: 'on'\ntime: '1:30'\nmodel: llama3.2:3b\nport: ${redis.port}\nn: 5\n",
        )
        .unwrap();
        let text = to_pyyaml(&v);
        assert!(text.contains("api_version: '2024-10-21'"), "{text}");
        assert!(text.contains("flag: 'on'") && text.contains("time: '1:30'"), "{text}");
        assert!(
            text.contains("model: llama3.2:3b") && text.contains("port: ${redis.port}") && text.contains("n: 5"),
            "{text}"
        );
        let back: Value = serde_yaml::from_str(&text.replace("${redis.port}", "1")).unwrap();
        assert_eq!(back["api_version"], "2024-10-21");
    }

    /// serde_yaml writes `=` and `<<` plain; PyYAML resolves them to its value and merge tags
    /// and safe_load fails on the document ("could not determine a constructor").
    #[test]
    fn value_and_merge_indicators_are_written_quoted() {
        let mut v = serde_yaml::Mapping::new();
        v.insert("op".into(), "=".into());
        v.insert("m".into(), "<<".into());
        v.insert("<<".into(), "x".into());
        v.insert("=".into(), "y".into());
        let text = to_pyyaml(&Value::Mapping(v.clone()));
        for line in ["op: '='", "m: '<<'", "'<<': x", "'=': y"] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in:\n{text}");
        }
        assert_eq!(serde_yaml::from_str::<Value>(&text).unwrap(), Value::Mapping(v));
    }

    #[test]
    fn merge_keys_are_applied_like_pyyaml() {
        let text = "base: &b {timeout: 5, rpm: 10}\nmodel_list:\n  - model_name: a\n    litellm_params:\n      <<: *b\n      model: openai/x\n";
        let d = Document::parse("c.yaml", text).unwrap();
        assert_eq!(d.root["model_list"][0]["litellm_params"]["timeout"], 5);
    }
}
