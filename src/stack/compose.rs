//! `gauntlet compose`: the stack as a `compose.yml`, for teams that bring it up by hand with
//! Docker Compose — the images the Docker backend runs, its health checks and its start order.
//!
//! What it writes into the output folder:
//!
//! - `compose.yml`: one service per manifest service, configured as the Docker backend
//!   configures its containers: listening on [`SERVICE_PORT`] on every address, the others
//!   reached at `http://<service>:8000` on the project's network, the `files/` folder mounted
//!   read-only at `/run/gauntlet`; `depends_on` with `condition: service_healthy`; a
//!   `healthcheck` made of what each image has (the gauntlet image is `FROM scratch`: no shell,
//!   no curl, so it checks itself with `gauntlet probe`); the router published on loopback.
//! - `files/router.yaml` (the rendered router config) and `files/<sim>.sim.json` (the
//!   simulator's deployments).
//! - `.env` (mode 0600): the master and provider keys. Neither is in `compose.yml` nor in
//!   `router.yaml`: compose fills `${GAUNTLET_MASTER_KEY}` in from `.env`, and the router
//!   config names them as `os.environ/GAUNTLET_MASTER_KEY`, which LiteLLM reads from its
//!   environment. So the two files can be shown, diffed and committed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::{Mapping, Value};

use super::backend::{SERVICE_PORT, builtin_command};
use super::image::{self, ImageSpec, Recipe};
use super::manifest::{Builtin, Health, Manifest};
use super::template::{self, Vars};
use crate::config::RouterConfig;
use crate::error::RunError;

/// `.env` names: the keys, and the router's port on the host.
pub const MASTER_KEY_VAR: &str = "GAUNTLET_MASTER_KEY";
pub const PROVIDER_KEY_VAR: &str = "GAUNTLET_PROVIDER_KEY";
pub const ROUTER_PORT_VAR: &str = "GAUNTLET_ROUTER_PORT";
/// LiteLLM's own default port: what a team's clients most likely point at already.
pub const DEFAULT_ROUTER_PORT: u16 = 4000;
/// Where `files/` appears in every container (as the Docker backend mounts its files folder).
const FILES_INSIDE: &str = "/run/gauntlet";
/// On every container compose creates. Deliberately not the backend's run label: `gauntlet
/// down --all` removes what carries that, and a stack brought up by hand is not its to remove.
pub const COMPOSE_LABEL: &str = "dev.gauntlet.compose";
const HEALTH_INTERVAL: &str = "2s";
const HEALTH_RETRIES: u64 = 5;

/// `gauntlet compose` arguments.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "The stack is the manifest's as for every command: $GAUNTLET_MANIFEST (default: the \
                        built-in stack), with $GAUNTLET_ROUTER_CONFIG's router config if set. The images are \
                        built, or found built, as `gauntlet images build` does, so compose.yml names images \
                        that are on this machine."
)]
pub struct ComposeArgs {
    /// Where to write compose.yml, files/ and .env.
    #[arg(long, default_value = "target/gauntlet/compose")]
    pub out: PathBuf,
    /// Services to write, with everything they depend on (default: every service that is not
    /// on_demand, and the router's dependencies).
    #[arg(long, value_delimiter = ',')]
    pub services: Vec<String>,
    /// Build nothing: name the newest local image of each recipe (which may predate this
    /// gauntlet; `gauntlet images build` makes the current ones), and fail if one is missing.
    #[arg(long)]
    pub no_build: bool,
}

/// What a service's image is: which tools a health check can use inside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    Recipe(Recipe),
    /// An image pinned by digest: nothing is known of what is in it.
    Pinned,
}

/// A service's image, present on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub kind: ImageKind,
    pub reference: String,
}

/// The files `gauntlet compose` writes, as text.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub compose: String,
    /// Into `files/`: name and text.
    pub files: Vec<(String, String)>,
    /// The services written, in start order.
    pub services: Vec<String>,
    /// Services whose health check guesses at what their image has.
    pub guessed: Vec<String>,
}

/// The services to write: `wanted` (default: the non-on-demand ones and the router) and
/// everything they depend on.
pub fn selected(m: &Manifest, wanted: &[String]) -> Result<Vec<String>, RunError> {
    for s in wanted {
        if !m.services.contains_key(s) {
            return Err(RunError::usage(format!(
                "--services: no service named '{s}' in {}",
                m.origin
            )));
        }
    }
    let mut base = wanted.to_vec();
    if base.is_empty() {
        base = m.default_services();
        base.push(m.stack.router.clone());
    }
    Ok(m.closure(&base))
}

/// Makes sure each service's image is on this machine and names it: built (or found built)
/// by [`image::ensure`], or with `no_build` only looked up.
pub async fn images(
    docker: &bollard::Docker,
    m: &Manifest,
    services: &[String],
    no_build: bool,
) -> Result<BTreeMap<String, Image>, RunError> {
    let mut found: BTreeMap<String, Image> = BTreeMap::new();
    let mut by_spec: Vec<(ImageSpec, Image)> = Vec::new();
    for name in services {
        let spec = m.image_of(name)?;
        if let Some((_, img)) = by_spec.iter().find(|(s, _)| *s == spec) {
            found.insert(name.clone(), img.clone());
            continue;
        }
        let kind = match &spec {
            ImageSpec::Recipe(r) => ImageKind::Recipe(*r),
            ImageSpec::Pinned(_) => ImageKind::Pinned,
        };
        let reference = if no_build {
            local_image(docker, &spec)
                .await
                .map_err(|e| RunError::stack(format!("service '{name}': {e}")))?
        } else {
            let ready = image::ensure(docker, &spec)
                .await
                .map_err(|e| RunError::stack(format!("service '{name}': {e}")))?;
            tracing::info!(service = %name, image = %ready.reference, built = ready.built, "image ready");
            ready.reference
        };
        let img = Image { kind, reference };
        by_spec.push((spec, img.clone()));
        found.insert(name.clone(), img);
    }
    Ok(found)
}

/// `--no-build`: the newest image gauntlet built of a recipe, or a pinned image that is here
/// (by its reference, or, loaded with `docker load`, by its ID).
async fn local_image(docker: &bollard::Docker, spec: &ImageSpec) -> Result<String, String> {
    match spec {
        ImageSpec::Pinned(p) => {
            let digest = p.reference.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
            for candidate in [p.reference.as_str(), digest] {
                if docker.inspect_image(candidate).await.is_ok() {
                    return Ok(candidate.to_owned());
                }
            }
            Err(format!(
                "image {} is not on this machine (--no-build pulls nothing); load or pull it, or \
                 drop --no-build",
                p.reference
            ))
        }
        ImageSpec::Recipe(r) => {
            use bollard::query_parameters::ListImagesOptionsBuilder;
            let filters = std::collections::HashMap::from([("label", vec![super::engine::RECIPE_LABEL])]);
            let list = docker
                .list_images(Some(ListImagesOptionsBuilder::default().filters(&filters).build()))
                .await
                .map_err(|e| format!("cannot list images: {e}"))?;
            let repo = format!("{}:", r.repository());
            let prefix = format!("{}@", r.name());
            list.into_iter()
                .filter(|i| {
                    i.labels
                        .get(super::engine::RECIPE_LABEL)
                        .is_some_and(|l| l.starts_with(&prefix))
                })
                .filter_map(|i| Some((i.created, i.repo_tags.into_iter().find(|t| t.starts_with(&repo))?)))
                .max()
                .map(|(_, tag)| tag)
                .ok_or_else(|| {
                    format!(
                        "no {} image on this machine: run `gauntlet images build {}`, or drop --no-build",
                        r.name(),
                        r.name()
                    )
                })
        }
    }
}

/// Marks where a key goes in a command or environment value until compose's `${NAME}` can
/// be put there: after the literal `$`s have been doubled, so compose reads them as text.
fn key_mark(var: &str) -> String {
    format!("\u{1}{var}\u{1}")
}

/// Text for compose.yml: compose interpolates `$` everywhere, so a literal one is `$$`.
fn lit(text: &str) -> String {
    text.replace('$', "$$")
}

fn with_keys(text: &str) -> String {
    let mut out = lit(text);
    for var in [MASTER_KEY_VAR, PROVIDER_KEY_VAR] {
        // `:?` makes a missing .env one clear error at `up`, not a router with an empty key.
        out = out.replace(
            &key_mark(var),
            &format!("${{{var}:?is not set: it is in the .env next to compose.yml}}"),
        );
    }
    out
}

fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

fn map<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    Value::Mapping(pairs.into_iter().map(|(k, v)| (s(k), v)).collect())
}

fn seq<I: IntoIterator<Item = T>, T: Into<String>>(items: I) -> Value {
    Value::Sequence(items.into_iter().map(|i| s(i.into())).collect())
}

/// The in-network values of the template variables: what the Docker backend gives them.
fn network_vars(m: &Manifest, services: &[String], mark_keys: bool) -> Vars {
    let mut vars = Vars::new();
    vars.insert("bind".into(), "0.0.0.0".into());
    vars.insert("port".into(), SERVICE_PORT.to_string());
    vars.insert("litellm".into(), image::LITELLM_BIN.into());
    vars.insert("gauntlet".into(), image::GAUNTLET_BIN.into());
    vars.insert("router_config".into(), format!("{FILES_INSIDE}/router.yaml"));
    for name in services {
        let scheme = if m.services[name].health.redis { "redis" } else { "http" };
        vars.insert(format!("{name}.url"), format!("{scheme}://{name}:{SERVICE_PORT}"));
        vars.insert(format!("{name}.host"), name.clone());
        vars.insert(format!("{name}.port"), SERVICE_PORT.to_string());
    }
    m.fill_vars(services, &mut vars);
    for (var, name) in [(MASTER_KEY_VAR, "master_key"), (PROVIDER_KEY_VAR, "provider_key")] {
        let value = if mark_keys {
            key_mark(var)
        } else {
            format!("os.environ/{var}")
        };
        vars.insert(name.into(), value);
    }
    vars
}

/// The router config with the keys named, not written: every `${master_key}` and
/// `${provider_key}` becomes `os.environ/NAME`, which LiteLLM resolves only as a whole value.
fn router_config(m: &Manifest, services: &[String]) -> Result<String, RunError> {
    let src = &m.router_config;
    let text = template::render(src.name(), &src.text, &network_vars(m, services, false))?;
    let parsed: Value = serde_yaml::from_str(&text)
        .map_err(|e| RunError::usage(format!("{}: the rendered config is not YAML: {e}", src.name())))?;
    let mut partial = Vec::new();
    find_partial_refs(&parsed, &mut partial);
    if let Some(v) = partial.first() {
        return Err(RunError::usage(format!(
            "{}: a key placeholder is part of the longer value {v:?}; in compose.yml the keys stay \
             out of the files and LiteLLM reads them as os.environ/NAME, which works only as a \
             whole value: make ${{master_key}} or ${{provider_key}} the entire value",
            src.name()
        )));
    }
    Ok(format!(
        "# {} rendered for gauntlet compose; the keys are read from the environment.\n{text}",
        src.name()
    ))
}

fn find_partial_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(t) => {
            let named = [MASTER_KEY_VAR, PROVIDER_KEY_VAR].map(|k| format!("os.environ/{k}"));
            if t.contains("os.environ/GAUNTLET_") && !named.contains(t) {
                out.push(t.clone());
            }
        }
        Value::Sequence(items) => items.iter().for_each(|i| find_partial_refs(i, out)),
        Value::Mapping(m) => m.iter().for_each(|(k, v)| {
            find_partial_refs(k, out);
            find_partial_refs(v, out);
        }),
        Value::Tagged(t) => find_partial_refs(&t.value, out),
        _ => {}
    }
}

/// The `healthcheck.test` for a service: the manifest's check, made of what its image has.
/// Whether it had to guess (a pinned image) is the second value.
fn health_test(name: &str, kind: ImageKind, health: &Health) -> Result<(Vec<String>, bool), RunError> {
    let local = match &health.http {
        _ if health.redis => format!("redis://127.0.0.1:{SERVICE_PORT}"),
        Some(path) => format!("http://127.0.0.1:{SERVICE_PORT}{path}"),
        None => format!("http://127.0.0.1:{SERVICE_PORT}/"),
    };
    let cmd = |argv: &[&str]| argv.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let redis_cli = cmd(&["CMD", "redis-cli", "-p", &SERVICE_PORT.to_string(), "ping"]);
    Ok(match (kind, health.redis) {
        (ImageKind::Recipe(Recipe::Gauntlet), _) => (cmd(&["CMD", image::GAUNTLET_BIN, "probe", &local]), false),
        (ImageKind::Recipe(Recipe::Redis), true) => (redis_cli, false),
        (ImageKind::Recipe(Recipe::Litellm), false) => {
            // No curl in the image, and a proxy in its environment must not answer for it.
            let url = serde_json::to_string(&local).expect("a string serializes");
            let py = format!("import urllib.request as u; u.build_opener(u.ProxyHandler({{}})).open({url}, timeout=5)");
            let python = format!("{}/python", image::LITELLM_BIN.rsplit_once('/').map_or("", |(d, _)| d));
            (cmd(&["CMD", &python, "-c", &py]), false)
        }
        (ImageKind::Pinned, true) => (redis_cli, true),
        (ImageKind::Pinned, false) => {
            // Quoted for the shell: a `&` or `;` in the path would end the command early (and
            // `curl … &` in the background makes the check pass whatever the service says).
            let url = shlex::try_quote(&local).map_err(|e| {
                RunError::usage(format!(
                    "service '{name}': health.http {local:?} cannot be quoted for a shell: {e}"
                ))
            })?;
            let sh = format!("curl -fsS -m 5 -o /dev/null {url} || wget -q -T 5 -O /dev/null {url}");
            (cmd(&["CMD-SHELL", &sh]), true)
        }
        (ImageKind::Recipe(r), redis) => {
            return Err(RunError::usage(format!(
                "service '{name}': the {r} image has nothing to run a{} health check with inside \
                 its container; give it another image or health check",
                if redis { " Redis" } else { "n HTTP" }
            )));
        }
    })
}

/// `compose.yml` and the files beside it for `services` (already closed over dependencies),
/// each running `images[service]`. `health_start` is how long a service may take to become
/// healthy before failed checks count (gauntlet's own `HEALTH_TIMEOUT`).
pub fn render(
    m: &Manifest,
    cfg: &RouterConfig,
    services: &[String],
    images: &BTreeMap<String, Image>,
    health_start: Duration,
) -> Result<Rendered, RunError> {
    let levels = super::order::levels_of(
        services
            .iter()
            .map(|n| (n.as_str(), m.services[n].depends_on.as_slice())),
    )
    .map_err(|e| RunError::usage(format!("{}: {e}", m.origin)))?;
    let ordered: Vec<String> = levels.into_iter().flatten().collect();
    let vars = network_vars(m, &ordered, true);
    let mut files: Vec<(String, String)> = Vec::new();
    let mut guessed = Vec::new();
    let mut out = Mapping::new();
    for name in &ordered {
        let spec = &m.services[name];
        let img = images
            .get(name)
            .ok_or_else(|| RunError::stack(format!("service '{name}': no image")))?;
        let origin = format!("{}: services.{name}", m.origin);
        let uses = |needle: &str| spec.command.iter().chain(spec.env.values()).any(|a| a.contains(needle));
        let command: Vec<String> = match spec.builtin {
            Some(kind) => {
                let mut config = None;
                if kind == Builtin::Sim {
                    let file = format!("{name}.sim.json");
                    let sim = m.sim_config(cfg);
                    let text = serde_json::to_string_pretty(&sim).expect("simulator config serializes");
                    config = Some(format!("{FILES_INSIDE}/{file}"));
                    files.push((file, text + "\n"));
                }
                builtin_command(kind, config.as_deref())
            }
            None => spec
                .command
                .iter()
                .map(|a| template::render(&origin, a, &vars))
                .collect::<Result<_, _>>()?,
        };
        let mut env = Mapping::new();
        for (k, v) in &spec.env {
            env.insert(s(k.as_str()), s(with_keys(&template::render(&origin, v, &vars)?)));
        }
        if uses("${router_config}") {
            if !files.iter().any(|(f, _)| f == "router.yaml") {
                files.push(("router.yaml".into(), router_config(m, &ordered)?));
            }
            let placeholders = template::placeholders(&m.router_config.text);
            for (var, name) in [(MASTER_KEY_VAR, "master_key"), (PROVIDER_KEY_VAR, "provider_key")] {
                if placeholders.iter().any(|p| p == name) {
                    env.insert(s(var), s(with_keys(&key_mark(var))));
                }
            }
        }
        let (test, guess) = health_test(name, img.kind, &spec.health)?;
        if guess {
            guessed.push(name.clone());
        }
        let mut svc = Mapping::new();
        svc.insert(s("image"), s(lit(&img.reference)));
        svc.insert(s("command"), seq(command.iter().map(|a| with_keys(a))));
        if !env.is_empty() {
            svc.insert(s("environment"), Value::Mapping(env));
        }
        if !spec.depends_on.is_empty() {
            let deps: Mapping = spec
                .depends_on
                .iter()
                .map(|d| (s(d.as_str()), map([("condition", s("service_healthy"))])))
                .collect();
            svc.insert(s("depends_on"), Value::Mapping(deps));
        }
        svc.insert(
            s("healthcheck"),
            map([
                ("test", seq(test.iter().map(|a| lit(a)))),
                ("interval", s(HEALTH_INTERVAL)),
                ("timeout", s("6s")),
                ("retries", Value::Number(HEALTH_RETRIES.into())),
                ("start_period", s(format!("{}s", health_start.as_secs().max(1)))),
            ]),
        );
        if *name == m.stack.router {
            svc.insert(
                s("ports"),
                seq([format!(
                    "127.0.0.1:${{{ROUTER_PORT_VAR}:-{DEFAULT_ROUTER_PORT}}}:{SERVICE_PORT}"
                )]),
            );
        }
        svc.insert(s("volumes"), seq([format!("./files:{FILES_INSIDE}:ro")]));
        if let Some(l) = &spec.limits {
            if let Some(mb) = l.memory_mb {
                svc.insert(s("mem_limit"), s(format!("{mb}m")));
            }
            if let Some(c) = l.cpus {
                svc.insert(s("cpus"), Value::Number(c.into()));
            }
            if let Some(mb) = l.shm_mb {
                svc.insert(s("shm_size"), s(format!("{mb}m")));
            }
        }
        if let Some(gpu) = &spec.gpu {
            svc.insert(s("deploy"), gpu_deploy(gpu));
        }
        svc.insert(
            s("labels"),
            map([
                (super::engine::SERVICE_LABEL, s(lit(name))),
                (COMPOSE_LABEL, s(lit(&m.origin))),
            ]),
        );
        out.insert(s(name.as_str()), Value::Mapping(svc));
    }
    let mut body = String::new();
    emit(&map([("services", Value::Mapping(out))]), 0, &mut body);
    let compose = format!(
        "# Written by `gauntlet compose` from {}.\n\
         # Start: docker compose -f compose.yml up -d --wait (or docker-compose -f compose.yml up -d).\n\
         # The keys are in .env beside this file; the router listens on 127.0.0.1:${ROUTER_PORT_VAR} \
         (default {DEFAULT_ROUTER_PORT}).\n{body}",
        lit(&m.origin)
    );
    Ok(Rendered {
        compose,
        files,
        services: ordered,
        guessed,
    })
}

/// Block YAML with every string double-quoted. docker-compose v1 reads YAML 1.1, where a
/// plain `no`, `on` or `y` is a boolean (serde_yaml would leave redis' `--appendonly no` plain,
/// and v1 would pass `False`); a JSON string is also a YAML double-quoted scalar.
fn emit(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    let scalar = |v: &Value| -> Option<String> {
        match v {
            Value::String(t) => Some(yaml_quoted(t)),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => Some("null".into()),
            Value::Mapping(m) if m.is_empty() => Some("{}".into()),
            Value::Sequence(q) if q.is_empty() => Some("[]".into()),
            _ => None,
        }
    };
    match v {
        Value::Mapping(m) => {
            for (k, v) in m {
                let key = match k.as_str() {
                    Some(k) if plain_key(k) => k.to_owned(),
                    _ => scalar(k).unwrap_or_default(),
                };
                match scalar(v) {
                    Some(text) => out.push_str(&format!("{pad}{key}: {text}\n")),
                    None => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        emit(v, indent + 2, out);
                    }
                }
            }
        }
        Value::Sequence(items) => {
            for item in items {
                match scalar(item) {
                    Some(text) => out.push_str(&format!("{pad}- {text}\n")),
                    None => {
                        let mut inner = String::new();
                        emit(item, indent + 2, &mut inner);
                        out.push_str(&format!("{pad}- {}", &inner[indent + 2..]));
                    }
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other).unwrap_or_default())),
    }
}

/// `t` as a double-quoted scalar that YAML 1.1 (PyYAML, docker-compose v1) and 1.2 read back
/// as `t`. A JSON string is one, but JSON leaves DEL and the C1 controls raw, which YAML 1.1
/// does not allow in a document at all (PyYAML: "unacceptable character"), and NEL, LS and PS
/// raw, which YAML reads as line breaks and folds; those are written as `\uXXXX` escapes
/// (valid in both YAML versions), as are the BOM and the noncharacters U+FFFE and U+FFFF.
fn yaml_quoted(t: &str) -> String {
    let json = serde_json::to_string(t).expect("a string serializes");
    let escape = |c: char| {
        matches!(
            c,
            '\u{7f}'..='\u{9f}' | '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
    };
    if !json.contains(escape) {
        return json;
    }
    let mut out = String::with_capacity(json.len() + 8);
    for c in json.chars() {
        if escape(c) {
            out.push_str(&format!("\\u{:04X}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// A key YAML 1.1 and 1.2 both read as the same string unquoted.
fn plain_key(k: &str) -> bool {
    const SPECIAL: [&str; 11] = ["y", "n", "yes", "no", "on", "off", "true", "false", "null", "~", "<<"];
    k.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && !SPECIAL.contains(&k.to_ascii_lowercase().as_str())
}

fn gpu_deploy(gpu: &str) -> Value {
    let device = match gpu.strip_prefix("cdi:") {
        Some(id) => map([
            ("driver", s("cdi")),
            ("device_ids", seq([id])),
            ("capabilities", seq(["gpu"])),
        ]),
        None => map([
            ("driver", s("nvidia")),
            (
                "count",
                gpu.parse::<u64>()
                    .map_or_else(|_| s("all"), |n| Value::Number(n.into())),
            ),
            ("capabilities", seq(["gpu"])),
        ]),
    };
    map([(
        "resources",
        map([("reservations", map([("devices", Value::Sequence(vec![device]))]))]),
    )])
}

/// `COMPOSE_PROJECT_NAME` in `.env`: else compose names the project after the folder
/// (`compose`, by default).
const PROJECT_VAR: &str = "COMPOSE_PROJECT_NAME";

/// The comment `.env` starts with; its lines are gauntlet's, rewritten at every run.
const ENV_HEADER: &str = "# Written by gauntlet compose: the router's master key (send it as the bearer token), the\n\
     # fake provider key the router passes to the simulator, the router's port on 127.0.0.1,\n\
     # and the compose project's name. Kept when gauntlet compose writes this folder again.\n";

/// One entry of a `.env` as dotenvy reads it: its text as written (one line, or every line of
/// a quoted value that spans several, with their line ends), and the variable it sets, if any
/// (none for a comment, a blank line, or a line dotenvy cannot read).
struct EnvEntry<'a> {
    text: &'a str,
    vars: Vec<(String, String)>,
}

/// `text` split into [`EnvEntry`]s: each the fewest whole lines from where the last one ended
/// that dotenvy reads without an error (a line that no run of lines from it reads is an entry
/// of its own, kept as written). Quadratic in the lines, which a `.env` has few of.
fn env_entries(text: &str) -> Vec<EnvEntry<'_>> {
    let mut ends = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        at += line.len();
        ends.push(at);
    }
    let read = |chunk: &str| -> Option<Vec<(String, String)>> {
        dotenvy::from_read_iter(chunk.as_bytes()).collect::<Result<_, _>>().ok()
    };
    let mut out = Vec::new();
    let (mut start, mut i) = (0, 0);
    while i < ends.len() {
        let whole = (i..ends.len()).find_map(|j| Some((j, read(&text[start..ends[j]])?)));
        let (j, vars) = whole.unwrap_or((i, Vec::new()));
        out.push(EnvEntry {
            text: &text[start..ends[j]],
            vars,
        });
        start = ends[j];
        i = j + 1;
    }
    out
}

/// `.env`: the keys, the router's host port and the project name — each as a `.env` already
/// there sets it (a second `gauntlet compose` must not change the keys of a stack that is up),
/// else a new one — and every other line it held (settings, comments, blank lines), as
/// written. Read as compose reads it (dotenvy): a quoted value is its value without the
/// quotes, which is what is registered for redaction. Returns the text and the port.
fn env_file(existing: Option<&str>) -> Result<(String, String), RunError> {
    let entries = env_entries(existing.unwrap_or_default());
    let ours = [MASTER_KEY_VAR, PROVIDER_KEY_VAR, ROUTER_PORT_VAR, PROJECT_VAR];
    let with_newline = |t: &str| {
        if t.ends_with('\n') {
            t.to_owned()
        } else {
            format!("{t}\n")
        }
    };
    let mut text = String::from(ENV_HEADER);
    let mut setting = |var: &str, fresh: &dyn Fn() -> Result<String, RunError>| -> Result<String, RunError> {
        // The first entry setting it to something, as dotenvy (and so compose) takes it.
        let kept = entries.iter().find_map(|e| {
            let (_, v) = e.vars.iter().find(|(k, v)| k == var && !v.is_empty())?;
            Some((e.text, v.clone()))
        });
        let (line, value) = match kept {
            Some((line, value)) => (with_newline(line), value),
            None => {
                let value = fresh()?;
                (format!("{var}={value}\n"), value)
            }
        };
        text.push_str(&line);
        Ok(value)
    };
    let key = |prefix: &'static str| {
        move || {
            crate::random::try_random_hex(16)
                .map(|h| format!("{prefix}{h}"))
                .map_err(|e| RunError::stack(format!("cannot make the stack's keys: {e}")))
        }
    };
    let master = setting(MASTER_KEY_VAR, &key("sk-gauntlet-"))?;
    let provider = setting(PROVIDER_KEY_VAR, &key("sk-provider-"))?;
    let port = setting(ROUTER_PORT_VAR, &|| Ok(DEFAULT_ROUTER_PORT.to_string()))?;
    setting(PROJECT_VAR, &|| Ok("gauntlet".into()))?;
    crate::redact::register(&master);
    crate::redact::register(&provider);
    let header: Vec<&str> = ENV_HEADER.lines().collect();
    for e in &entries {
        let is_header = e.vars.is_empty() && header.contains(&e.text.trim_end_matches(['\r', '\n']));
        if is_header || e.vars.iter().any(|(k, _)| ours.contains(&k.as_str())) {
            continue;
        }
        text.push_str(&with_newline(e.text));
    }
    Ok((text, port))
}

/// Writes `rendered` into `dir`: compose.yml, files/, and .env (0600, keys kept if present).
/// Returns the router's port on the host.
pub fn write(dir: &Path, rendered: &Rendered) -> Result<String, RunError> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |p: &Path, e: std::io::Error| RunError::stack(format!("cannot write {}: {e}", p.display()));
    let files = dir.join("files");
    std::fs::create_dir_all(&files).map_err(|e| fail(&files, e))?;
    let env_path = dir.join(".env");
    let existing = std::fs::read_to_string(&env_path).ok();
    let (env, port) = env_file(existing.as_deref())?;
    super::write_private(&env_path, &env)?;
    // write_private sets the mode only when it creates the file.
    std::fs::set_permissions(&env_path, std::fs::Permissions::from_mode(0o600)).map_err(|e| fail(&env_path, e))?;
    for (name, text) in &rendered.files {
        let p = files.join(name);
        std::fs::write(&p, text).map_err(|e| fail(&p, e))?;
    }
    let p = dir.join("compose.yml");
    std::fs::write(&p, &rendered.compose).map_err(|e| fail(&p, e))?;
    Ok(port)
}

/// `gauntlet compose`.
pub async fn compose_cli(a: ComposeArgs) -> anyhow::Result<()> {
    let (m, cfg, _prices) = crate::runner::run::load_config()?;
    let services = selected(&m, &a.services)?;
    let health_start = super::health::health_timeout()?;
    let docker = super::engine::connect().await?;
    let pb = crate::runner::progress::spinner(if a.no_build {
        "looking up the images"
    } else {
        "making the images (a first LiteLLM build takes minutes)"
    });
    let found = images(&docker, &m, &services, a.no_build).await;
    pb.finish_and_clear();
    let rendered = render(&m, &cfg, &services, &found?, health_start)?;
    let port = write(&a.out, &rendered)?;
    let file = a.out.join("compose.yml");
    let f = file.display();
    println!(
        "gauntlet: wrote {f} ({}), {} and {} (the keys, mode 0600)",
        rendered.services.join(", "),
        a.out.join("files").display(),
        a.out.join(".env").display()
    );
    for name in &rendered.guessed {
        println!(
            "  note: service '{name}' runs a pinned image; its health check assumes redis-cli, or a shell with curl or wget"
        );
    }
    println!("  start: docker compose -f {f} up -d --wait");
    println!("     or: docker-compose -f {f} up -d   (then docker-compose -f {f} ps until all are healthy)");
    if rendered.services.contains(&m.stack.router) {
        println!(
            "  router: http://127.0.0.1:{port} ({ROUTER_PORT_VAR} in .env moves it); \
             its master key is {MASTER_KEY_VAR} in .env"
        );
    }
    println!("  stop:  docker compose -f {f} down -v   (or docker-compose)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images_for(m: &Manifest, services: &[String]) -> BTreeMap<String, Image> {
        services
            .iter()
            .map(|n| {
                let kind = match m.image_of(n).unwrap() {
                    ImageSpec::Recipe(r) => ImageKind::Recipe(r),
                    ImageSpec::Pinned(_) => ImageKind::Pinned,
                };
                let reference = match kind {
                    ImageKind::Recipe(r) => format!("{}:0123456789abcdef", r.repository()),
                    ImageKind::Pinned => "x@sha256:00".into(),
                };
                (n.clone(), Image { kind, reference })
            })
            .collect()
    }

    fn default_stack() -> (Manifest, Rendered, Value) {
        let m = Manifest::builtin().unwrap();
        let cfg = RouterConfig::from_document(&m.router_config.doc).unwrap();
        let services = selected(&m, &[]).unwrap();
        let r = render(&m, &cfg, &services, &images_for(&m, &services), Duration::from_secs(60)).unwrap();
        let doc: Value = serde_yaml::from_str(&r.compose).unwrap();
        (m, r, doc)
    }

    fn strs(v: &Value) -> Vec<String> {
        v.as_sequence()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn default_stack_in_start_order_with_healthy_dependencies() {
        let (_, r, doc) = default_stack();
        let services = doc["services"].as_mapping().unwrap();
        let names: Vec<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
        assert_eq!(
            names,
            ["redis", "sim", "sink", "geo_a", "geo_b", "router"],
            "on_demand router_b left out"
        );
        assert_eq!(r.services, names);
        let router = &doc["services"]["router"];
        let deps = router["depends_on"].as_mapping().unwrap();
        for d in ["redis", "sim", "sink"] {
            assert_eq!(deps[d]["condition"], "service_healthy", "{d}");
            let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
            assert!(pos(d) < pos("router"));
        }
        assert_eq!(
            strs(&router["command"]),
            [
                "/opt/litellm/bin/litellm",
                "--config",
                "/run/gauntlet/router.yaml",
                "--host",
                "0.0.0.0",
                "--port",
                "8000",
                "--num_workers",
                "1"
            ]
        );
        assert_eq!(
            router["environment"]["GENERIC_LOGGER_ENDPOINT"],
            "http://sink:8000/ingest"
        );
        assert_eq!(router["image"], "gauntlet/litellm:0123456789abcdef");
        assert_eq!(router["mem_limit"], "2048m");
        assert_eq!(strs(&router["ports"]), ["127.0.0.1:${GAUNTLET_ROUTER_PORT:-4000}:8000"]);
        assert!(doc["services"]["sim"].get("ports").is_none());
        assert_eq!(strs(&router["volumes"]), ["./files:/run/gauntlet:ro"]);
        assert_eq!(router["labels"]["dev.gauntlet.service"], "router");
        assert!(router["labels"].get(super::super::engine::RUN_LABEL).is_none());
        assert_eq!(
            strs(&doc["services"]["sim"]["command"]),
            [
                "/gauntlet",
                "sim",
                "--listen",
                "0.0.0.0:8000",
                "--config",
                "/run/gauntlet/sim.sim.json"
            ]
        );
        // An empty argument survives (redis' --save ""), and YAML 1.1's booleans stay strings.
        let redis = strs(&doc["services"]["redis"]["command"]);
        assert_eq!(
            &redis[5..],
            ["--save", "", "--appendonly", "no", "--protected-mode", "no"]
        );
        assert!(r.compose.contains("- \"no\"\n") && !r.compose.contains("- no\n"));
        assert!(
            r.compose.contains("\n      dev.gauntlet.service: \"router\"\n"),
            "{}",
            r.compose
        );
    }

    #[test]
    fn health_checks_use_what_each_image_has() {
        let (_, _, doc) = default_stack();
        let test = |svc: &str| strs(&doc["services"][svc]["healthcheck"]["test"]);
        assert_eq!(test("redis"), ["CMD", "redis-cli", "-p", "8000", "ping"]);
        assert_eq!(
            test("sim"),
            ["CMD", "/gauntlet", "probe", "http://127.0.0.1:8000/health"]
        );
        assert_eq!(
            test("sink"),
            ["CMD", "/gauntlet", "probe", "http://127.0.0.1:8000/health"]
        );
        let router = test("router");
        assert_eq!(&router[..3], ["CMD", "/opt/litellm/bin/python", "-c"]);
        assert!(
            router[3].contains("\"http://127.0.0.1:8000/health/readiness\", timeout=5"),
            "{}",
            router[3]
        );
        let hc = &doc["services"]["router"]["healthcheck"];
        assert_eq!(hc["start_period"], "60s");
        assert_eq!(hc["interval"], HEALTH_INTERVAL);
        let pinned = health_test(
            "x",
            ImageKind::Pinned,
            &Health {
                http: Some("/h".into()),
                redis: false,
            },
        )
        .unwrap();
        assert!(pinned.1 && pinned.0[0] == "CMD-SHELL" && pinned.0[1].contains("http://127.0.0.1:8000/h"));
        let e = health_test(
            "r",
            ImageKind::Recipe(Recipe::Redis),
            &Health {
                http: Some("/".into()),
                redis: false,
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("service 'r'") && e.contains("HTTP"), "{e}");
    }

    #[test]
    fn no_key_in_compose_or_router_config() {
        let (_, r, doc) = default_stack();
        assert!(!r.compose.contains("sk-"), "{}", r.compose);
        let router = &doc["services"]["router"]["environment"];
        let master = router["LITELLM_MASTER_KEY"].as_str().unwrap();
        assert!(master.starts_with("${GAUNTLET_MASTER_KEY:?"), "{master}");
        assert_eq!(router["GAUNTLET_MASTER_KEY"], router["LITELLM_MASTER_KEY"]);
        assert!(
            router["GAUNTLET_PROVIDER_KEY"]
                .as_str()
                .unwrap()
                .starts_with("${GAUNTLET_PROVIDER_KEY:?")
        );
        let (_, text) = r.files.iter().find(|(f, _)| f == "router.yaml").unwrap();
        assert!(!text.contains("sk-") && !text.contains("${"), "{text}");
        let cfg: Value = serde_yaml::from_str(text).unwrap();
        assert_eq!(cfg["general_settings"]["master_key"], "os.environ/GAUNTLET_MASTER_KEY");
        assert_eq!(
            cfg["model_list"][0]["litellm_params"]["api_key"],
            "os.environ/GAUNTLET_PROVIDER_KEY"
        );
        assert_eq!(
            cfg["model_list"][0]["litellm_params"]["api_base"],
            "http://sim:8000/d/primary/v1"
        );
        assert_eq!(cfg["router_settings"]["redis_host"], "redis");
        assert_eq!(cfg["router_settings"]["redis_port"], 8000);
        let (_, sim) = r.files.iter().find(|(f, _)| f == "sim.sim.json").unwrap();
        assert!(sim.contains("\"primary\""), "{sim}");
        // The GPU lane is not started: the simulator stands in for it.
        assert!(
            text.contains("http://sim:8000/d/vllm/v1") && sim.contains("\"vllm\""),
            "{text}"
        );

        let (env, port) = env_file(None).unwrap();
        assert_eq!(port, "4000");
        let line = |l: &str| env.lines().find(|x| x.starts_with(l)).unwrap().to_owned();
        assert!(line("GAUNTLET_MASTER_KEY=sk-gauntlet-").len() > 30);
        assert_eq!(line("COMPOSE_PROJECT_NAME="), "COMPOSE_PROJECT_NAME=gauntlet");
        // A second run keeps the keys of a stack that may be up, and what the team set.
        assert_eq!(env_file(Some(&env)).unwrap().0, env);
        let edited = env.replace("=4000", "=4100") + "HTTP_PROXY=http://proxy:3128\n";
        let (again, port) = env_file(Some(&edited)).unwrap();
        assert_eq!((again.as_str(), port.as_str()), (edited.as_str(), "4100"));
    }

    #[test]
    fn gpu_lane_gets_its_devices_shm_and_a_guessed_health_check() {
        let m = Manifest::builtin().unwrap();
        let cfg = RouterConfig::from_document(&m.router_config.doc).unwrap();
        let services = selected(&m, &["router".into(), "vllm".into()]).unwrap();
        let r = render(&m, &cfg, &services, &images_for(&m, &services), Duration::from_secs(60)).unwrap();
        assert_eq!(r.guessed, ["vllm"]);
        let doc: Value = serde_yaml::from_str(&r.compose).unwrap();
        let vllm = &doc["services"]["vllm"];
        assert_eq!(vllm["shm_size"], "2048m");
        let device = &vllm["deploy"]["resources"]["reservations"]["devices"][0];
        assert_eq!((&device["driver"], &device["count"]), (&s("nvidia"), &s("all")));
        assert_eq!(strs(&device["capabilities"]), ["gpu"]);
        let command = strs(&vllm["command"]);
        assert_eq!(&command[..2], ["--model", &m.gpu.as_ref().unwrap().model]);
        assert!(command.windows(2).any(|w| w == ["--port", "8000"]), "{command:?}");
        assert_eq!(strs(&vllm["healthcheck"]["test"])[0], "CMD-SHELL");
        let (_, text) = r.files.iter().find(|(f, _)| f == "router.yaml").unwrap();
        assert!(
            text.contains("http://vllm:8000/v1") && !text.contains("sim:8000/d/vllm"),
            "{text}"
        );
    }

    #[test]
    fn literal_dollars_are_escaped_and_partial_key_values_refused() {
        assert_eq!(with_keys("a$b"), "a$$b");
        assert_eq!(
            with_keys(&format!("Bearer {}", key_mark(MASTER_KEY_VAR))),
            "Bearer ${GAUNTLET_MASTER_KEY:?is not set: it is in the .env next to compose.yml}"
        );
        let mut partial = Vec::new();
        let v: Value = serde_yaml::from_str("a: {b: [\"x-os.environ/GAUNTLET_MASTER_KEY\"]}").unwrap();
        find_partial_refs(&v, &mut partial);
        assert_eq!(partial, ["x-os.environ/GAUNTLET_MASTER_KEY"]);
    }

    #[test]
    fn selection_adds_dependencies_and_refuses_unknown_services() {
        let m = Manifest::builtin().unwrap();
        assert_eq!(
            selected(&m, &["router_b".into()]).unwrap(),
            ["geo_a", "geo_b", "redis", "router_b", "sim", "sink"]
        );
        let e = selected(&m, &["nope".into()]).unwrap_err().to_string();
        assert!(e.contains("no service named 'nope'"), "{e}");
        assert!(matches!(
            gpu_deploy("2")["resources"]["reservations"]["devices"][0]["count"],
            Value::Number(_)
        ));
        assert_eq!(
            gpu_deploy("all")["resources"]["reservations"]["devices"][0]["count"],
            "all"
        );
        let mut text = String::new();
        emit(&map([("deploy", gpu_deploy("cdi:nvidia.com/gpu=0"))]), 0, &mut text);
        let back: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back["deploy"], gpu_deploy("cdi:nvidia.com/gpu=0"), "{text}");
        assert!(!plain_key("on") && !plain_key("a b") && plain_key("router_b"));
    }

    /// The old command was `curl … http://…/ready?deep=1&x=1 || wget …`: the shell ran curl in
    /// the background and `x=1 || wget …` in the foreground, which succeeds, so the check
    /// passed whatever the service answered. Run here with a curl and a wget that fail.
    #[test]
    fn pinned_health_check_quotes_the_url_for_the_shell() {
        let health = Health {
            http: Some("/ready?deep=1&x=1;true".into()),
            redis: false,
        };
        let (test, _) = health_test("x", ImageKind::Pinned, &health).unwrap();
        let dir = std::env::temp_dir().join(format!("gauntlet-hc-{}", crate::random::random_hex(4)));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("args");
        let script = format!(
            "curl() {{ printf '%s\\n' \"$@\" >> '{}'; return 7; }}; wget() {{ return 8; }}; {}",
            log.display(),
            test[1]
        );
        let status = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&script)
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(8), "an unhealthy service passed: {}", test[1]);
        let args = std::fs::read_to_string(&log).unwrap();
        assert!(
            args.lines().any(|a| a == "http://127.0.0.1:8000/ready?deep=1&x=1;true"),
            "{args}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// serde_json leaves DEL, the C1 controls and the Unicode line separators raw; PyYAML
    /// (docker-compose v1) refuses the first two anywhere in a document and folds the others.
    #[test]
    fn strings_are_quoted_so_yaml_1_1_reads_them() {
        let odd = "a\u{7f}b\u{80}c\u{85}d\u{9f}e\u{2028}f\u{feff}g\u{a0}h\"\\\n\u{1}é";
        let mut text = String::new();
        emit(&map([("x", s(odd)), (odd, s("k"))]), 0, &mut text);
        for c in ['\u{7f}', '\u{80}', '\u{85}', '\u{9f}', '\u{2028}', '\u{feff}'] {
            assert!(!text.contains(c), "raw U+{:04X} in {text:?}", u32::from(c));
        }
        assert!(text.contains("\\u007F") && text.contains("\\u0085"), "{text}");
        // What YAML 1.1 may hold raw stays readable.
        assert!(text.contains("\u{a0}") && text.contains('é'), "{text}");
        let back: Value = serde_yaml::from_str(&text).unwrap();
        assert_eq!(back["x"], odd);
        assert_eq!(back[odd], "k");
    }

    /// The old rewrite dropped the team's comments and blank lines, cut a quoted value that
    /// spans lines to its first line (and kept the rest as `KEY=VALUE` garbage or lost it),
    /// and registered a quoted key for redaction with its quotes, so the key itself leaked.
    #[test]
    fn env_file_keeps_every_other_line_as_written_and_redacts_unquoted_keys() {
        let existing = "# team: proxy for the egress\n\
                        HTTP_PROXY=http://proxy:3128\n\
                        \n\
                        GAUNTLET_MASTER_KEY=\"sk-quoted-master-0123456789\"\n\
                        CA_CERT=\"-----BEGIN CERTIFICATE-----\n\
                        MIIB=abc\n\
                        -----END CERTIFICATE-----\"\n\
                        GAUNTLET_ROUTER_PORT='4100' # moved\n\
                        export OTHER=1\n";
        let (text, port) = env_file(Some(existing)).unwrap();
        assert_eq!(port, "4100");
        assert!(text.starts_with(ENV_HEADER), "{text}");
        for kept in [
            "# team: proxy for the egress\nHTTP_PROXY=http://proxy:3128\n\n",
            "CA_CERT=\"-----BEGIN CERTIFICATE-----\nMIIB=abc\n-----END CERTIFICATE-----\"\nexport OTHER=1\n",
            "\nGAUNTLET_MASTER_KEY=\"sk-quoted-master-0123456789\"\n",
            "\nGAUNTLET_ROUTER_PORT='4100' # moved\n",
        ] {
            assert!(text.contains(kept), "{kept:?} not in:\n{text}");
        }
        assert_eq!(text.matches("GAUNTLET_MASTER_KEY=").count(), 1, "{text}");
        // Read back as compose reads it: every value as it was.
        let vars: BTreeMap<String, String> = dotenvy::from_read_iter(text.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(vars["GAUNTLET_MASTER_KEY"], "sk-quoted-master-0123456789");
        assert!(vars["CA_CERT"].contains("MIIB=abc\n-----END"), "{vars:?}");
        assert_eq!(
            (vars["OTHER"].as_str(), vars["COMPOSE_PROJECT_NAME"].as_str()),
            ("1", "gauntlet")
        );
        assert!(!vars.contains_key("MIIB"), "{vars:?}");
        assert_eq!(
            crate::redact::redact("key sk-quoted-master-0123456789 here"),
            "key [REDACTED] here"
        );
        // And a second run changes nothing.
        assert_eq!(env_file(Some(&text)).unwrap().0, text);
    }
}
