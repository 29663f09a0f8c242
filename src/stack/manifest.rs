//! The stack manifest (`stack/gauntlet.toml`): services, how to start them, their
//! dependencies and health checks. Plain data, parsed once; nothing here starts anything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::image::{ImageSpec, Recipe};
pub use super::role::Role;
use super::template::{self, Vars};
use crate::config::{Document, RouterConfig};
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
    /// The GPU lane (`[gpu]`), when a service plays the vllm role.
    pub gpu: Option<GpuSettings>,
    /// The router-overhead budget (`[perf]`).
    pub perf: PerfSettings,
    /// The embedded simulator's settings (`[sim]`).
    pub sim: SimSettings,
}

/// `[sim]`: what the stack's builtin simulator is configured with besides its deployments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimSettings {
    /// `tokenizers = { "<model>" = "<encoding>" }`: how the simulator counts the tokens of
    /// requests for these models (see [`crate::sim::tokenizer`]), checked at parse.
    pub tokenizers: crate::sim::TokenizerMap,
}

/// `[sim]` as written, checked into [`SimSettings`] by [`Manifest::parse`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SimSection {
    #[serde(default)]
    tokenizers: BTreeMap<String, String>,
}

impl SimSection {
    fn check(self, origin: &str) -> Result<SimSettings, RunError> {
        let mut tokenizers = crate::sim::TokenizerMap::new();
        for (model, name) in self.tokenizers {
            let t = crate::sim::Tokenizer::by_name(&name).ok_or_else(|| {
                RunError::usage(format!(
                    "{origin}: [sim] tokenizers.\"{model}\" = {name:?} is not a tokenizer: use \
                     o200k_base, cl100k_base, p50k_base, r50k_base or words"
                ))
            })?;
            tokenizers.insert(model, t);
        }
        Ok(SimSettings { tokenizers })
    }
}

/// How much latency the router may add to a call of the same deployment made directly
/// before `perf::overhead` fails. Generous by default: shared CI machines are noisy, and
/// the case is there to catch a gross regression, not a few milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PerfSettings {
    pub overhead_p50_ms: u64,
    pub overhead_p99_ms: u64,
}

impl Default for PerfSettings {
    fn default() -> Self {
        Self {
            overhead_p50_ms: 250,
            overhead_p99_ms: 1000,
        }
    }
}

/// What the GPU lane's vLLM serves and where the router sends traffic for it. Its values fill
/// `${gpu.model}` and `${gpu.revision}` in commands and the router config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSettings {
    /// The Hugging Face model id vLLM serves, and lists under that name.
    pub model: String,
    /// The model repository's commit (40 hex digits): a branch or tag can move to other weights.
    pub revision: String,
    /// The router config's model group whose deployment points at the vLLM service. A config
    /// without it (a mirrored team config) still gets the cases that talk to vLLM directly.
    pub group: String,
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
    /// Which backend runs the services (`GAUNTLET_BACKEND` overrides it).
    pub backend: Option<super::backend::kind::BackendKind>,
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
    /// Docker backend: the image, pinned by digest (`name@sha256:…`) or a built-in recipe
    /// (`gauntlet`, `redis`, `litellm`); inferred from the command when absent.
    pub image: Option<String>,
    /// Docker backend: resource limits.
    pub limits: Option<Limits>,
    /// Docker backend: GPUs for the service: `"all"`, a count, or `"cdi:<device>"`.
    pub gpu: Option<String>,
    /// A builtin simulator that answers for this (on-demand) service while it is not started:
    /// its `${name.url}` is then the simulator's `/d/<name>` deployment, so a router config
    /// naming it works on every machine (the GPU lane's vLLM, where there is no GPU).
    pub stand_in: Option<String>,
}

/// A container's resource limits (the process backend does not limit).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub memory_mb: Option<u64>,
    pub cpus: Option<f64>,
    /// /dev/shm size (vLLM needs more than Docker's 64 MB default).
    pub shm_mb: Option<u64>,
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
            gpu: Option<GpuSettings>,
            #[serde(default)]
            perf: PerfSettings,
            #[serde(default)]
            sim: SimSection,
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
            gpu: file.gpu,
            perf: file.perf,
            sim: file.sim.check(origin)?,
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
        self.validate_gpu_lane()?;
        self.validate_perf()
    }

    /// A zero budget would fail on the first millisecond, and a P99 under the P50 cannot hold.
    fn validate_perf(&self) -> Result<(), RunError> {
        let p = &self.perf;
        if p.overhead_p50_ms == 0 || p.overhead_p99_ms < p.overhead_p50_ms {
            return Err(RunError::usage(format!(
                "{}: [perf] overhead_p50_ms = {}, overhead_p99_ms = {}: both must be above 0 and the P99 \
                 budget at least the P50 one",
                self.origin, p.overhead_p50_ms, p.overhead_p99_ms
            )));
        }
        Ok(())
    }

    /// `[gpu]` and the service playing vllm come together; stand-ins are builtin simulators
    /// for on-demand services.
    fn validate_gpu_lane(&self) -> Result<(), RunError> {
        let bad = |msg: String| Err(RunError::usage(format!("{}: {msg}", self.origin)));
        match (self.service_with(Role::Vllm), &self.gpu) {
            (Some(name), None) => {
                return bad(format!(
                    "service '{name}' plays the vllm role but there is no [gpu] section; add one with \
                     model, revision (the commit) and group (the router's model group routed to it)"
                ));
            }
            (None, Some(_)) => {
                return bad("[gpu] is set but no service plays the vllm role (role = \"vllm\")".into());
            }
            _ => {}
        }
        if let Some(g) = &self.gpu {
            if g.model.trim().is_empty() || g.model.chars().any(char::is_whitespace) {
                return bad(format!(
                    "gpu.model {:?} is not a model id (e.g. \"Qwen/Qwen2.5-0.5B-Instruct\")",
                    g.model
                ));
            }
            let commit = g.revision.len() == 40
                && g.revision
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !commit {
                return bad(format!(
                    "gpu.revision {:?}: pin the model repository's commit (40 lowercase hex digits), \
                     not a branch or tag, which can move to other weights",
                    g.revision
                ));
            }
            if g.group.trim().is_empty() {
                return bad("gpu.group is empty: name the router config's model group routed to vLLM".into());
            }
        }
        for (name, s) in &self.services {
            let Some(by) = &s.stand_in else { continue };
            let is_sim = self.services.get(by).is_some_and(|b| b.builtin == Some(Builtin::Sim));
            if !is_sim || by.contains('/') {
                return bad(format!(
                    "service '{name}': stand_in = {by:?} must name a builtin simulator service \
                     (builtin = \"sim\"), which serves it as its deployment /d/{name}"
                ));
            }
            if !s.on_demand {
                return bad(format!(
                    "service '{name}' has a stand_in but is not on_demand: it always starts, so the \
                     stand-in would never answer for it"
                ));
            }
        }
        Ok(())
    }

    /// Placeholders the manifest itself fills for a stack of the `started` services:
    /// `${gpu.model}`, `${gpu.revision}`, and the address of each service not started that
    /// has a stand-in (the stand-in's, see [`template::stand_in`]).
    pub fn fill_vars(&self, started: &[String], vars: &mut Vars) {
        if let Some(g) = &self.gpu {
            vars.insert("gpu.model".into(), g.model.clone());
            vars.insert("gpu.revision".into(), g.revision.clone());
        }
        for (name, s) in &self.services {
            if let Some(by) = &s.stand_in
                && !started.contains(name)
            {
                template::stand_in(vars, name, by, &format!("/d/{name}"));
            }
        }
    }

    /// The deployments the stack's simulator serves: those the router config points at, and
    /// one per service it stands in for, named after it (idle while that service runs).
    pub fn sim_deployments(&self, cfg: &RouterConfig) -> Vec<String> {
        let mut out = cfg.sim_deployments();
        for (name, s) in &self.services {
            if s.stand_in.is_some() && !out.contains(name) {
                out.push(name.clone());
            }
        }
        out
    }

    /// The config the stack's builtin simulator starts with, on either backend (the Docker one
    /// hands it to `gauntlet sim --config` as JSON): [`Manifest::sim_deployments`], and the
    /// `[sim]` settings.
    pub fn sim_config(&self, cfg: &RouterConfig) -> crate::sim::SimConfig {
        let mut sim = crate::sim::SimConfig::for_deployments(&self.sim_deployments(cfg));
        sim.tokenizers = self.sim.tokenizers.clone();
        sim
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

    /// The image a service runs on the Docker backend: its own `image`, else the recipe its
    /// command implies (a builtin or `${gauntlet}`: the gauntlet image; `redis-server`;
    /// `${litellm}`).
    pub fn image_of(&self, name: &str) -> Result<ImageSpec, RunError> {
        let spec = &self.services[name];
        let origin = format!("{}: services.{name}.image", self.origin);
        if let Some(text) = &spec.image {
            return ImageSpec::parse(&origin, text);
        }
        if spec.builtin.is_some() {
            return Ok(ImageSpec::Recipe(Recipe::Gauntlet));
        }
        match spec.command.first().map(String::as_str) {
            Some("redis-server") => Ok(ImageSpec::Recipe(Recipe::Redis)),
            Some("${litellm}") => Ok(ImageSpec::Recipe(Recipe::Litellm)),
            Some("${gauntlet}") => Ok(ImageSpec::Recipe(Recipe::Gauntlet)),
            _ => Err(RunError::usage(format!(
                "{origin}: service '{name}' has no image, and none follows from its command; add \
                 image = \"<name>@sha256:<digest>\" (pulled if missing) or one of the built-in recipes \
                 (gauntlet, redis, litellm)"
            ))),
        }
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
        assert_eq!(
            m.closure(&["router".into()]),
            ["geo_a", "geo_b", "redis", "router", "sim", "sink"]
        );
        assert!(!m.default_services().contains(&"router_b".to_owned()));
        let roles = m.roles();
        assert_eq!(roles[&Role::Simulator], "sim");
        assert_eq!(roles[&Role::SecondRouter], "router_b");
        assert_eq!(roles[&Role::Redis], "redis");
        assert_eq!(roles[&Role::Vllm], "vllm");
        assert_eq!(roles.len(), 6);
        // The GPU lane starts only on demand, with nothing else.
        assert!(!m.default_services().contains(&"vllm".to_owned()));
        assert_eq!(m.closure(&["vllm".into()]), ["vllm"]);
        let vllm = &m.services["vllm"];
        assert_eq!(vllm.stand_in.as_deref(), Some("sim"));
        assert!(vllm.gpu.is_some() && vllm.limits.as_ref().and_then(|l| l.shm_mb).is_some());
        assert!(
            vllm.image
                .as_deref()
                .is_some_and(|i| i.starts_with("vllm/vllm-openai:") && i.contains("@sha256:"))
        );
        let image = super::super::image::ImageSpec::parse("t", vllm.image.as_deref().unwrap()).unwrap();
        assert!(matches!(image, super::super::image::ImageSpec::Pinned(_)), "{image:?}");
        let gpu = m.gpu.as_ref().unwrap();
        assert!(gpu.revision.len() == 40 && !gpu.model.is_empty());
        assert_eq!(m.perf, PerfSettings::default());
    }

    /// `[perf]` is optional and each budget on its own too; what is given must be usable.
    #[test]
    fn perf_budgets_default_and_are_checked() {
        let head =
            "[stack]\nrouter = \"a\"\nrouter_config = \"r\"\n[services.a]\ncommand=[\"x\"]\nhealth={redis=true}\n";
        assert_eq!(parse(head).unwrap().perf, PerfSettings::default());
        let some = parse(&format!("{head}[perf]\noverhead_p99_ms = 4000\n")).unwrap();
        assert_eq!((some.perf.overhead_p50_ms, some.perf.overhead_p99_ms), (250, 4000));
        for (perf, want) in [
            ("overhead_p50_ms = 0", "both must be above 0"),
            ("overhead_p50_ms = 500\noverhead_p99_ms = 100", "at least the P50"),
            ("overhead_ms = 5", "unknown field"),
            ("overhead_p50_ms = -5", "invalid manifest"),
        ] {
            let err = parse(&format!("{head}[perf]\n{perf}\n")).unwrap_err().to_string();
            assert!(err.contains(want), "{perf}: want {want:?} in {err:?}");
        }
    }

    /// The router config of the default stack routes its GPU group to `${vllm.url}`: without
    /// vllm started, the simulator's `/d/vllm` deployment answers for it, and the simulator
    /// serves that deployment.
    #[test]
    fn a_vllm_not_started_is_stood_in_for_by_the_simulator() {
        let m = Manifest::builtin().unwrap();
        let cfg = RouterConfig::from_document(&m.router_config.doc).unwrap();
        let gpu = m.gpu.as_ref().unwrap();
        assert!(cfg.groups().contains(&gpu.group), "{:?}", cfg.groups());
        let mut vars: Vars = [
            ("sim.url", "http://127.0.0.1:7001"),
            ("sim.host", "127.0.0.1"),
            ("sim.port", "7001"),
            ("redis.host", "127.0.0.1"),
            ("redis.port", "7002"),
            ("geo_a.url", "http://127.0.0.1:7003"),
            ("geo_b.url", "http://127.0.0.1:7004"),
            ("master_key", "sk-m"),
            ("provider_key", "sk-p"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let default = m.closure(&m.default_services());
        m.fill_vars(&default, &mut vars);
        let rendered = template::render("router.yaml", &m.router_config.text, &vars).unwrap();
        assert!(
            rendered.contains("api_base: \"http://127.0.0.1:7001/d/vllm/v1\""),
            "{rendered}"
        );
        assert!(rendered.contains(&format!("hosted_vllm/{}", gpu.model)), "{rendered}");
        assert!(m.sim_deployments(&cfg).contains(&"vllm".to_owned()));
        assert_eq!(m.sim_deployments(&cfg).len(), cfg.sim_deployments().len() + 1);
        // With vllm started, its own address is used, never the stand-in's.
        let mut with: Vars = vars.clone();
        with.retain(|k, _| !k.ends_with(".*"));
        let mut all = default.clone();
        all.push("vllm".into());
        m.fill_vars(&all, &mut with);
        let err = template::render("router.yaml", &m.router_config.text, &with)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown placeholder ${vllm.url}"), "{err}");
        with.insert("vllm.url".into(), "http://vllm:8000".into());
        let rendered = template::render("router.yaml", &m.router_config.text, &with).unwrap();
        assert!(rendered.contains("api_base: \"http://vllm:8000/v1\""), "{rendered}");
    }

    const REV: &str = "7ae557604adf67be50417f59c2c2f167def9a775";

    fn parse(text: &str) -> Result<Manifest, RunError> {
        Manifest::parse("test.toml", text, |_| {
            Ok(RouterSource::new(
                Document::parse("r", "model_list: []").unwrap(),
                String::new(),
            ))
        })
    }

    #[test]
    fn sim_tokenizers_reach_the_simulators_config() {
        use crate::sim::Tokenizer;
        let m = Manifest::builtin().unwrap();
        assert_eq!(m.sim.tokenizers.get("sim-chat"), Some(&Tokenizer::O200kBase));
        assert_eq!(m.sim.tokenizers.get("sim-fast"), Some(&Tokenizer::Cl100kBase));
        let cfg = RouterConfig::from_document(&m.router_config.doc).unwrap();
        let sim = m.sim_config(&cfg);
        assert_eq!(sim.tokenizers, m.sim.tokenizers);
        assert_eq!(sim.deployments.len(), m.sim_deployments(&cfg).len());
        // As the Docker backend hands it to `gauntlet sim --config`: JSON, read back the same.
        let json = serde_json::to_string(&sim).unwrap();
        let back = crate::sim::SimConfig::parse("x.sim.json", &json).unwrap();
        assert_eq!(back.tokenizers, sim.tokenizers);
        let head =
            "[stack]\nrouter = \"a\"\nrouter_config = \"r\"\n[services.a]\ncommand=[\"x\"]\nhealth={redis=true}\n";
        assert_eq!(parse(head).unwrap().sim, SimSettings::default());
    }

    #[test]
    fn broken_manifests_name_the_problem() {
        let head = "[stack]\nrouter = \"a\"\nrouter_config = \"r\"\n";
        // A valid stack with a simulator, and the pieces of a GPU lane.
        let a = format!(
            "{head}[services.a]\ncommand=[\"x\"]\nhealth={{redis=true}}\n[services.s]\nbuiltin=\"sim\"\nhealth={{http=\"/h\"}}\n"
        );
        let vllm =
            "[services.v]\ncommand=[\"x\"]\nhealth={http=\"/h\"}\nrole=\"vllm\"\non_demand=true\nstand_in=\"s\"\n";
        let gpu = format!("[gpu]\nmodel=\"Qwen/Q\"\nrevision=\"{REV}\"\ngroup=\"g\"\n");
        assert!(parse(&format!("{a}{vllm}{gpu}")).is_ok());
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
            (
                format!("{a}[services.v]\ncommand=[\"x\"]\nhealth={{http=\"/h\"}}\nrole=\"vllm\""),
                "no [gpu] section",
            ),
            (format!("{a}{gpu}"), "no service plays the vllm role"),
            (
                format!("{a}[sim]\ntokenizers = {{ \"sim-chat\" = \"o100k_base\" }}\n"),
                "[sim] tokenizers.\"sim-chat\" = \"o100k_base\" is not a tokenizer",
            ),
            (format!("{a}[sim]\ntokenisers = {{}}\n"), "unknown field `tokenisers`"),
            (
                format!("{a}{vllm}{}", gpu.replace(REV, "main")),
                "pin the model repository's commit",
            ),
            (
                format!("{a}{vllm}{}", gpu.replace("\"Qwen/Q\"", "\"\"")),
                "is not a model id",
            ),
            (
                format!("{a}{}{gpu}", vllm.replace("stand_in=\"s\"", "stand_in=\"a\"")),
                "must name a builtin simulator",
            ),
            (
                format!("{a}{}{gpu}", vllm.replace("on_demand=true", "on_demand=false")),
                "is not on_demand",
            ),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "want {want:?} in {err:?}");
            assert!(err.starts_with("test.toml"), "{err}");
        }
    }
}
