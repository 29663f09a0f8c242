//! The stack manifest (`stack/gauntlet.toml`): services, how to start them, their
//! dependencies and health checks. Plain data, parsed once; nothing here starts anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use super::role::Role;
use crate::config::Document;
use crate::error::RunError;
use crate::ledger::prices::LedgerSettings;

/// The manifest and the files it names, as text. The default stack is compiled into the
/// binary so `gauntlet` works from any directory; `--manifest`/`GAUNTLET_MANIFEST` reads
/// another from disk.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where it came from, for error messages.
    pub origin: String,
    pub stack: StackSection,
    pub services: BTreeMap<String, ServiceSpec>,
    /// The router config template, unrendered.
    pub router_config: RouterSource,
    pub ledger: LedgerSettings,
}

/// The router config template: as read (includes resolved, every node's line known) and as
/// text to render (one file: LiteLLM must not look for includes in the private folder).
#[derive(Debug, Clone)]
pub struct RouterSource {
    pub doc: Document,
    pub text: String,
}

impl RouterSource {
    pub fn new(doc: Document, text: String) -> Self {
        let text = if doc.has_includes() { flatten(&doc) } else { text };
        Self { doc, text }
    }

    /// The file the user named.
    pub fn name(&self) -> &str {
        &self.doc.origin
    }

    /// A config on disk (`include:` resolved relative to it).
    pub fn load(path: &Path) -> Result<Self, RunError> {
        let doc = Document::load(path)?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| RunError::usage(format!("{}: cannot read: {e}", path.display())))?;
        Ok(Self::new(doc, text))
    }
}

/// One YAML text of a config whose includes were merged in.
fn flatten(doc: &Document) -> String {
    let body = crate::config::source::to_pyyaml(&doc.root);
    format!(
        "# {} with its includes ({}) merged in\n{body}",
        doc.origin,
        doc.files()[1..].join(", ")
    )
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackSection {
    pub router: String,
    pub router_config: String,
    /// No longer read: prices come from the router config (see [`Manifest::parse`]).
    pub prices: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    #[serde(default)]
    pub command: Vec<String>,
    pub builtin: Option<Builtin>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    pub health: Health,
    #[serde(default)]
    pub on_demand: bool,
    /// What the service is to the cases; inferred when absent (see [`Manifest::role_of`]).
    pub role: Option<Role>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Builtin {
    Sim,
    LedgerSink,
}

/// How a service tells it is ready.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// GET this path; ready on 200.
    pub http: Option<String>,
    /// Send a Redis PING; ready on +PONG.
    #[serde(default)]
    pub redis: bool,
}

const DEFAULT_MANIFEST: &str = include_str!("../../stack/gauntlet.toml");
const DEFAULT_ROUTER: &str = include_str!("../../stack/router.yaml");

impl Manifest {
    /// The default stack compiled into the binary.
    pub fn builtin() -> Result<Self, RunError> {
        Self::parse("stack/gauntlet.toml (built in)", DEFAULT_MANIFEST, |name| match name {
            "router.yaml" => {
                let doc = Document::parse("stack/router.yaml (built in)", DEFAULT_ROUTER)?;
                Ok(RouterSource::new(doc, DEFAULT_ROUTER.to_owned()))
            }
            other => Err(RunError::usage(format!(
                "stack/gauntlet.toml (built in): names {other}, which is not built in; \
                     point GAUNTLET_MANIFEST at a manifest on disk to use other files"
            ))),
        })
    }

    /// A manifest on disk; the router config it names is read relative to it.
    pub fn from_path(path: &Path) -> Result<Self, RunError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| RunError::usage(format!("cannot read manifest {}: {e}", path.display())))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let origin = path.display().to_string();
        Self::parse(&origin, &text, |name| {
            let p: PathBuf = dir.join(name);
            RouterSource::load(&p)
        })
    }

    /// `GAUNTLET_MANIFEST` if set, else the built-in stack.
    pub fn from_env() -> Result<Self, RunError> {
        match std::env::var_os("GAUNTLET_MANIFEST") {
            Some(p) if !p.is_empty() => Self::from_path(Path::new(&p)),
            _ => Self::builtin(),
        }
    }

    fn parse(
        origin: &str,
        text: &str,
        read: impl Fn(&str) -> Result<RouterSource, RunError>,
    ) -> Result<Self, RunError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            stack: StackSection,
            services: BTreeMap<String, ServiceSpec>,
            #[serde(default)]
            ledger: LedgerSettings,
        }
        let file: File =
            toml::from_str(text).map_err(|e| RunError::usage(format!("{origin}: invalid manifest: {e}")))?;
        if let Some(p) = &file.stack.prices {
            return Err(RunError::usage(format!(
                "{origin}: stack.prices = {p:?}: prices now come from the router config itself \
                 (model_info.input_cost_per_token / output_cost_per_token), the same lines the router \
                 bills from; move them there, put tenants under [ledger], and remove this line"
            )));
        }
        let router_config = read(&file.stack.router_config)?;
        let m = Self {
            origin: origin.to_owned(),
            stack: file.stack,
            services: file.services,
            router_config,
            ledger: file.ledger,
        };
        m.validate()?;
        Ok(m)
    }

    fn validate(&self) -> Result<(), RunError> {
        let bad = |msg: String| Err(RunError::usage(format!("{}: {msg}", self.origin)));
        if !self.services.contains_key(&self.stack.router) {
            return bad(format!(
                "stack.router names service '{}', which is not defined",
                self.stack.router
            ));
        }
        for (name, s) in &self.services {
            match (s.command.is_empty(), s.builtin) {
                (true, None) => {
                    return bad(format!("service '{name}' has neither command nor builtin"));
                }
                (false, Some(_)) => {
                    return bad(format!("service '{name}' has both command and builtin"));
                }
                _ => {}
            }
            if s.health.http.is_none() && !s.health.redis {
                return bad(format!("service '{name}' has no health check (http or redis)"));
            }
            for d in &s.depends_on {
                if !self.services.contains_key(d) {
                    return bad(format!("service '{name}' depends on '{d}', which is not defined"));
                }
            }
        }
        for role in Role::ALL {
            let playing: Vec<&String> = self.services.keys().filter(|n| self.role_of(n) == Some(role)).collect();
            if playing.len() > 1 {
                return bad(format!(
                    "services {} all play the {role} role; give each a distinct `role`",
                    playing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if self.role_of(&self.stack.router) != Some(Role::Router) {
            return bad(format!(
                "stack.router names '{}', whose role is not router",
                self.stack.router
            ));
        }
        super::order::levels_of(self.services.iter().map(|(n, s)| (n.as_str(), s.depends_on.as_slice())))
            .map_err(|e| RunError::usage(format!("{}: {e}", self.origin)))?;
        Ok(())
    }

    /// The role a service plays: its explicit `role`, else what it is — `stack.router`, a
    /// builtin simulator or ledger sink, a Redis health check.
    pub fn role_of(&self, name: &str) -> Option<Role> {
        let s = self.services.get(name)?;
        if s.role.is_some() {
            return s.role;
        }
        if name == self.stack.router {
            return Some(Role::Router);
        }
        match s.builtin {
            Some(Builtin::Sim) => Some(Role::Simulator),
            Some(Builtin::LedgerSink) => Some(Role::LedgerSink),
            None if s.health.redis => Some(Role::Redis),
            None => None,
        }
    }

    /// The service that plays `role`, if one does.
    pub fn service_with(&self, role: Role) -> Option<&str> {
        self.services
            .keys()
            .map(String::as_str)
            .find(|n| self.role_of(n) == Some(role))
    }

    /// Role → service, for every role some service plays.
    pub fn roles(&self) -> BTreeMap<Role, String> {
        Role::ALL
            .into_iter()
            .filter_map(|r| self.service_with(r).map(|n| (r, n.to_owned())))
            .collect()
    }

    /// The services to start so that `wanted` can run: them and everything they depend on.
    pub fn closure(&self, wanted: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut todo: Vec<String> = wanted.to_vec();
        while let Some(n) = todo.pop() {
            if out.contains(&n) {
                continue;
            }
            if let Some(s) = self.services.get(&n) {
                todo.extend(s.depends_on.iter().cloned());
            }
            out.push(n);
        }
        out.sort();
        out
    }

    /// Services started by default (everything not `on_demand`).
    pub fn default_services(&self) -> Vec<String> {
        self.services
            .iter()
            .filter(|(_, s)| !s.on_demand)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_parses() {
        let m = Manifest::builtin().unwrap();
        assert_eq!(m.stack.router, "router");
        assert!(m.services["router"].depends_on.contains(&"redis".to_owned()));
        assert_eq!(m.closure(&["router".into()]), ["redis", "router", "sim", "sink"]);
        assert!(!m.default_services().contains(&"router_b".to_owned()));
        let roles = m.roles();
        assert_eq!(roles[&Role::Simulator], "sim");
        assert_eq!(roles[&Role::SecondRouter], "router_b");
        assert_eq!(roles[&Role::Redis], "redis");
        assert_eq!(roles.len(), 5);
    }

    fn parse(text: &str) -> Result<Manifest, RunError> {
        Manifest::parse("test.toml", text, |_| {
            Ok(RouterSource::new(
                Document::parse("r", "model_list: []").unwrap(),
                String::new(),
            ))
        })
    }

    #[test]
    fn broken_manifests_name_the_problem() {
        let head = "[stack]\nrouter = \"a\"\nrouter_config = \"r\"\n";
        let cases = [
            (
                format!("{head}[services.b]\ncommand=[\"x\"]\nhealth={{redis=true}}"),
                "names service 'a'",
            ),
            (
                format!("{head}[services.a]\nhealth={{redis=true}}"),
                "neither command nor builtin",
            ),
            (
                format!("{head}[services.a]\ncommand=[\"x\"]\nhealth={{}}"),
                "no health check",
            ),
            (
                format!("{head}[services.a]\ncommand=[\"x\"]\ndepends_on=[\"z\"]\nhealth={{redis=true}}"),
                "depends on 'z'",
            ),
            (
                format!("{head}[services.a]\ncommand=[\"x\"]\ndepends_on=[\"a\"]\nhealth={{redis=true}}"),
                "cycle",
            ),
            (
                format!("{head}[services.a]\ncomand=[\"x\"]\nhealth={{redis=true}}"),
                "unknown field",
            ),
            ("not toml [".to_owned(), "invalid manifest"),
            (
                format!("{head}prices = \"p.toml\"\n[services.a]\ncommand=[\"x\"]\nhealth={{redis=true}}"),
                "prices now come from the router config",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "want {want:?} in {err:?}");
            assert!(err.starts_with("test.toml"), "{err}");
        }
    }
}
