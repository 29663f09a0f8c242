//! [`Stack`]: a stack started by this process — services brought up level by level from the
//! manifest, each waited for (bounded) to be healthy, and everything torn down by
//! [`Stack::stop`], or by `Drop` on an early return or panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::backend::{Backend, BackendKind, Chaos, Launch, Launched, tail};
use super::endpoints::Endpoints;
use super::manifest::Manifest;
use super::teardown::Teardown;
use super::template::Vars;
use super::{health, order, template};
use crate::config::RouterConfig;
use crate::error::RunError;

/// A service that never became ready: which, why, and the end of its log.
#[derive(Debug, thiserror::Error)]
#[error("service '{service}' {why}{}\n--- last lines of its log ---\n{log_tail}", hint(why))]
pub struct Unhealthy {
    pub service: String,
    #[source]
    pub why: health::WaitError,
    pub log_tail: String,
}

fn hint(why: &health::WaitError) -> &'static str {
    match why {
        health::WaitError::TimedOut { .. } => " (raise HEALTH_TIMEOUT if it is only slow)",
        health::WaitError::Dead(_) => "",
    }
}

/// A running stack started by this process.
pub struct Stack {
    pub endpoints: Endpoints,
    backend: Backend,
    /// Rendered config and raw logs: private (0700), may hold secrets, removed at stop.
    private: PathBuf,
    teardown: Teardown,
    /// How long each service took to become healthy, in start order.
    pub boot: Vec<(String, Duration)>,
}

/// Options for [`Stack::start`].
pub struct StartOptions<'a> {
    pub manifest: &'a Manifest,
    pub router_config: &'a RouterConfig,
    /// Services to start (their dependencies are added).
    pub services: Vec<String>,
    pub health_timeout: Duration,
    /// Where what is started gets recorded, for a signal handler to tear down.
    pub teardown: Teardown,
}

impl Stack {
    pub async fn start(opts: StartOptions<'_>) -> anyhow::Result<Self> {
        let m = opts.manifest;
        let kind = BackendKind::select(m.stack.backend)?;
        let wanted = m.closure(&opts.services);
        // Made first: a stack whose keys cannot be secret does not start at all.
        let secret = |prefix: &str| {
            crate::random::try_random_hex(16)
                .map(|h| format!("{prefix}{h}"))
                .map_err(|e| RunError::stack(format!("cannot make the stack's keys: {e}")))
        };
        let master_key = secret("sk-gauntlet-")?;
        let provider_key = secret("sk-provider-")?;
        let private = private_dir()?;
        opts.teardown.made_dir(&private);
        let files = private.join("files");
        let made =
            std::fs::create_dir(&files).map_err(|e| RunError::stack(format!("cannot create {}: {e}", files.display())));
        let backend = match made {
            Ok(()) => Backend::open(kind, &files, &opts.teardown).await,
            Err(e) => Err(e),
        };
        let backend = match backend {
            Ok(b) => b,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&private);
                opts.teardown.removed_dir(&private);
                return Err(e.into());
            }
        };
        crate::redact::register(&master_key);
        crate::redact::register(&provider_key);
        let mut stack = Self {
            endpoints: Endpoints {
                router: m.stack.router.clone(),
                roles: m.roles().into_iter().filter(|(_, n)| wanted.contains(n)).collect(),
                master_key: Some(master_key.clone()),
                secrets: vec![provider_key.clone()],
                supervisor_pid: std::process::id(),
                locks: Some(private.join("locks")),
                backend: kind,
                ..Default::default()
            },
            backend,
            private,
            teardown: opts.teardown.clone(),
            boot: Vec::new(),
        };
        let mut vars: Vars = BTreeMap::new();
        vars.insert("master_key".into(), master_key);
        vars.insert("provider_key".into(), provider_key);
        vars.insert("bind".into(), stack.backend.bind().into());
        m.fill_vars(&wanted, &mut vars);
        let result = async {
            let specs = wanted.iter().map(|n| (n.as_str(), m.services[n].depends_on.as_slice()));
            let levels = order::levels_of(specs).map_err(|e| RunError::usage(e.to_string()))?;
            stack.backend.prepare(m, &wanted).await?;
            for level in levels {
                stack
                    .start_level(m, opts.router_config, &level, &mut vars, opts.health_timeout)
                    .await?;
            }
            anyhow::Ok(())
        }
        .await;
        if let Err(e) = result {
            stack.stop().await;
            return Err(e);
        }
        Ok(stack)
    }

    async fn start_level(
        &mut self,
        m: &Manifest,
        cfg: &RouterConfig,
        level: &[String],
        vars: &mut Vars,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let mut started: Vec<(String, Instant)> = Vec::new();
        // Builtins first: other services' templates of this level may not name them (they
        // would depend on them), but their addresses are known before any command starts.
        for name in level {
            let spec = &m.services[name];
            if let Some(kind) = spec.builtin {
                let sim = m.sim_config(cfg);
                let log = self.private.join(format!("{name}.log"));
                let t0 = Instant::now();
                let l = self.backend.builtin(name, spec, kind, &sim, &log).await?;
                self.add_endpoint(name, l, vars)?;
                started.push((name.clone(), t0));
            }
        }
        for name in level {
            let spec = &m.services[name];
            if spec.builtin.is_some() {
                continue;
            }
            let port = self.backend.port()?;
            let mut own = vars.clone();
            own.insert("port".into(), port.to_string());
            if spec
                .command
                .iter()
                .chain(spec.env.values())
                .any(|a| a.contains("${router_config}"))
            {
                own.insert("router_config".into(), self.render_router_config(m, vars)?);
            }
            if spec.command.iter().any(|a| a.contains("${gauntlet}")) {
                own.insert("gauntlet".into(), self.backend.gauntlet()?);
            }
            if spec.command.iter().any(|a| a.contains("${litellm}")) {
                own.insert("litellm".into(), self.backend.litellm().await?);
            }
            let origin = format!("{}: services.{name}", m.origin);
            let argv = spec
                .command
                .iter()
                .map(|a| template::render(&origin, a, &own))
                .collect::<Result<Vec<_>, _>>()?;
            let env = spec
                .env
                .iter()
                .map(|(k, v)| Ok((k.clone(), template::render(&origin, v, &own)?)))
                .collect::<Result<Vec<_>, RunError>>()?;
            let log = self.private.join(format!("{name}.log"));
            let launch = Launch {
                service: name.clone(),
                spec,
                argv,
                env,
                port,
                scheme: if spec.health.redis { "redis" } else { "http" },
            };
            let t0 = Instant::now();
            let l = self.backend.launch(launch, &log).await?;
            self.add_endpoint(name, l, vars)?;
            started.push((name.clone(), t0));
        }
        let http = reqwest::Client::new();
        let waits = started.iter().map(|(name, t0)| {
            let spec = &m.services[name];
            let ep = self.endpoints.services[name].clone();
            let http = http.clone();
            let backend = &self.backend;
            let log = self.endpoints.logs.get(name).cloned();
            async move {
                let check = || health::probe(&spec.health, &ep.host, ep.port, &http);
                let dead = || {
                    backend
                        .exited(name)
                        .map(|how| format!("exited during start-up ({how})"))
                };
                let r = health::wait_until(timeout, check, dead).await;
                (name.clone(), t0.elapsed(), r, log)
            }
        });
        let results = futures_util::future::join_all(waits).await;
        let mut first_err = None;
        for (name, took, r, log) in results {
            match r {
                Ok(_) => {
                    tracing::info!(service = %name, secs = took.as_secs_f64(), "healthy");
                    self.boot.push((name, took));
                }
                Err(why) if first_err.is_none() => {
                    // A container's last output may still be on its way into the log.
                    if matches!(why, health::WaitError::Dead(_)) {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    first_err = Some(Unhealthy {
                        service: name,
                        why,
                        log_tail: log.map(|l| tail(&l, 25)).unwrap_or_default(),
                    });
                }
                Err(_) => {}
            }
        }
        match first_err {
            Some(e) => Err(RunError::Unhealthy(Box::new(e)).into()),
            None => Ok(()),
        }
    }

    fn add_endpoint(&mut self, name: &str, l: Launched, vars: &mut Vars) -> Result<(), RunError> {
        let (host, port) = super::backend::host_port(&l.internal_url)?;
        vars.insert(format!("{name}.url"), l.internal_url.clone());
        vars.insert(format!("{name}.host"), host);
        vars.insert(format!("{name}.port"), port.to_string());
        if let Some(log) = l.log {
            self.endpoints.logs.insert(name.to_owned(), log);
        }
        self.endpoints.services.insert(name.to_owned(), l.endpoint);
        Ok(())
    }

    fn render_router_config(&mut self, m: &Manifest, vars: &Vars) -> anyhow::Result<String> {
        let path = self.private.join("files").join("router.yaml");
        if !path.exists() {
            let text = template::render(m.router_config.name(), &m.router_config.text, vars)?;
            write_private(&path, &text)?;
            self.endpoints.rendered_config = Some(path.clone());
        }
        Ok(self.backend.file(&path))
    }

    /// Does `what` to a running service (the chaos suite's primitives); a service that comes
    /// back on a new address has its endpoint updated.
    pub async fn chaos(&mut self, service: &str, what: Chaos) -> Result<(), RunError> {
        if !self.endpoints.has(service) {
            return Err(RunError::usage(format!(
                "chaos {what}: no service '{service}' in this stack"
            )));
        }
        let log = self.private.join(format!("{service}.log"));
        if let Some(moved) = self.backend.chaos(service, what, &log).await? {
            let ep = self.endpoints.services.get_mut(service).expect("checked above");
            if moved.port != 0 {
                ep.url = moved.url;
                ep.host = moved.host;
                ep.port = moved.port;
            }
            ep.pid = moved.pid.or(ep.pid.filter(|_| moved.container.is_none()));
            ep.container = moved.container.or(ep.container.take());
        }
        Ok(())
    }

    /// Why a service is not running, if it is not.
    pub fn exited(&self, service: &str) -> Option<String> {
        self.backend.exited(service)
    }

    /// Copies every service log (redacted) and the rendered router config (redacted) into
    /// `dir`; returns the files written.
    pub fn save_logs(&self, dir: &Path) -> Vec<PathBuf> {
        save_logs(&self.endpoints, dir)
    }

    /// Stops everything, last started first. Safe to call twice.
    pub async fn stop(&mut self) {
        self.backend.stop().await;
        let _ = std::fs::remove_dir_all(&self.private);
        self.teardown.removed_dir(&self.private);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Teardown normally happens in `stop`; this catches early returns and panics.
        self.backend.stop_now();
        let _ = std::fs::remove_dir_all(&self.private);
        self.teardown.removed_dir(&self.private);
    }
}

/// Saves the logs named in `endpoints` and the rendered router config, redacted, into
/// `dir/logs`.
pub fn save_logs(endpoints: &Endpoints, dir: &Path) -> Vec<PathBuf> {
    let mut written = Vec::new();
    let logs = dir.join("logs");
    if std::fs::create_dir_all(&logs).is_err() {
        return written;
    }
    let mut copy = |src: &Path, dst: PathBuf| {
        if let Ok(text) = std::fs::read_to_string(src)
            && std::fs::write(&dst, crate::redact::redact(&text)).is_ok()
        {
            written.push(dst);
        }
    };
    for (name, src) in &endpoints.logs {
        copy(src, logs.join(format!("{name}.log")));
    }
    if let Some(rendered) = &endpoints.rendered_config {
        copy(rendered, logs.join("router.rendered.yaml"));
    }
    written
}

/// A free loopback port. The small race between releasing it and the service binding it is
/// acceptable: the health check would report the failure with the service's log.
pub fn free_port() -> Result<u16, RunError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| RunError::stack(format!("no free loopback port: {e}")))
}

fn private_dir() -> Result<PathBuf, RunError> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!(
        "gauntlet-{}-{}",
        std::process::id(),
        crate::random::random_hex(4)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&dir)
        .map_err(|e| RunError::stack(format!("cannot create {}: {e}", dir.display())))?;
    Ok(dir)
}

/// Writes a file readable by its owner only (it may hold keys).
pub fn write_private(path: &Path, text: &str) -> Result<(), RunError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| RunError::stack(format!("cannot write {}: {e}", path.display())))
}
