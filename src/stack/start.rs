//! [`Stack`]: a stack started by this process — services brought up level by level from the
//! manifest, each waited for (bounded) to be healthy, and everything torn down by
//! [`Stack::stop`], or by `Drop` on an early return or panic.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::endpoints::{Endpoint, Endpoints};
use super::manifest::{Builtin, Manifest};
use super::teardown::Teardown;
use super::template::Vars;
use super::{health, litellm, order, process, template};
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
    procs: Vec<process::Proc>,
    sim: Option<crate::sim::SimHandle>,
    sink: Option<crate::ledger::sink::SinkHandle>,
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
        let wanted = m.closure(&opts.services);
        let private = private_dir()?;
        opts.teardown.made_dir(&private);
        let master_key = format!("sk-gauntlet-{}", crate::random::random_hex(16));
        let provider_key = format!("sk-provider-{}", crate::random::random_hex(16));
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
                ..Default::default()
            },
            procs: Vec::new(),
            sim: None,
            sink: None,
            private,
            teardown: opts.teardown.clone(),
            boot: Vec::new(),
        };
        let mut vars: Vars = BTreeMap::new();
        vars.insert("master_key".into(), master_key);
        vars.insert("provider_key".into(), provider_key);
        let specs = wanted.iter().map(|n| (n.as_str(), m.services[n].depends_on.as_slice()));
        let levels = order::levels_of(specs).map_err(|e| RunError::usage(e.to_string()))?;
        for level in levels {
            if let Err(e) = stack
                .start_level(m, opts.router_config, &level, &mut vars, opts.health_timeout)
                .await
            {
                stack.stop().await;
                return Err(e);
            }
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
        // Builtins first: they bind their own ports, which later services' templates need.
        for name in level {
            let spec = &m.services[name];
            if let Some(kind) = spec.builtin {
                let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
                let url = match kind {
                    Builtin::Sim => {
                        let config = crate::sim::SimConfig::for_deployments(&cfg.sim_deployments());
                        let h = crate::sim::start(config, any).await?;
                        let url = h.url();
                        self.sim = Some(h);
                        url
                    }
                    Builtin::LedgerSink => {
                        let h = crate::ledger::sink::start(any).await?;
                        let url = h.url();
                        self.sink = Some(h);
                        url
                    }
                };
                self.add_endpoint(name, &url, None, vars);
            }
        }
        let mut started: Vec<(String, Instant)> = Vec::new();
        for name in level {
            let spec = &m.services[name];
            if spec.builtin.is_some() {
                started.push((name.clone(), Instant::now()));
                continue;
            }
            let port = free_port()?;
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
            if spec.command.iter().any(|a| a.contains("${litellm}")) {
                let bin = tokio::task::spawn_blocking(litellm::resolve).await??;
                own.insert("litellm".into(), bin.display().to_string());
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
            if process::which(&argv[0]).is_none() {
                return Err(RunError::stack(missing_program(name, &argv[0])).into());
            }
            let log = self.private.join(format!("{name}.log"));
            let proc = process::spawn(name, &argv, &env, &log, &self.teardown)
                .map_err(|e| RunError::stack(format!("service '{name}': cannot start {}: {e}", argv[0])))?;
            let scheme = if spec.health.redis { "redis" } else { "http" };
            let url = format!("{scheme}://127.0.0.1:{port}");
            self.endpoints.logs.insert(name.clone(), log);
            self.add_endpoint(name, &url, Some(proc.child.id()), vars);
            self.procs.push(proc);
            started.push((name.clone(), Instant::now()));
        }
        let http = reqwest::Client::new();
        let waits = started.iter().map(|(name, t0)| {
            let spec = &m.services[name];
            let ep = self.endpoints.services[name].clone();
            let http = http.clone();
            let procs = &self.procs;
            let log = self.endpoints.logs.get(name).cloned();
            async move {
                let check = || health::probe(&spec.health, &ep.host, ep.port, &http);
                let dead = || exited(procs, name);
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
                    first_err = Some(Unhealthy {
                        service: name,
                        why,
                        log_tail: log.map(|l| process::tail(&l, 25)).unwrap_or_default(),
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

    fn add_endpoint(&mut self, name: &str, url: &str, pid: Option<u32>, vars: &mut Vars) {
        let (host, port) = host_port(url);
        vars.insert(format!("{name}.url"), url.to_owned());
        vars.insert(format!("{name}.host"), host.clone());
        vars.insert(format!("{name}.port"), port.to_string());
        self.endpoints.services.insert(
            name.to_owned(),
            Endpoint {
                url: url.to_owned(),
                host,
                port,
                pid,
            },
        );
    }

    fn render_router_config(&mut self, m: &Manifest, vars: &Vars) -> anyhow::Result<String> {
        let path = self.private.join("router.yaml");
        if !path.exists() {
            let text = template::render(m.router_config.name(), &m.router_config.text, vars)?;
            write_private(&path, &text)?;
            self.endpoints.rendered_config = Some(path.clone());
        }
        Ok(path.display().to_string())
    }

    /// Copies every service log (redacted) and the rendered router config (redacted) into
    /// `dir`; returns the files written.
    pub fn save_logs(&self, dir: &Path) -> Vec<PathBuf> {
        save_logs(&self.endpoints, dir)
    }

    /// Stops everything, last started first. Safe to call twice.
    pub async fn stop(&mut self) {
        for p in self.procs.iter_mut().rev() {
            p.stop();
        }
        self.procs.clear();
        if let Some(s) = self.sim.take() {
            s.shutdown().await;
        }
        if let Some(s) = self.sink.take() {
            s.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&self.private);
        self.teardown.removed_dir(&self.private);
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Teardown normally happens in `stop`; this catches early returns and panics.
        for p in self.procs.iter_mut().rev() {
            p.stop();
        }
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

fn exited(procs: &[process::Proc], name: &str) -> Option<String> {
    let p = procs.iter().find(|p| p.name == name)?;
    // waitid with WNOWAIT peeks without reaping, so `Proc::stop` can still wait on it; the
    // health wait holds only shared borrows of the procs.
    // SAFETY: plain syscall on our own child; siginfo is zeroed and only read after success.
    unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let r = libc::waitid(
            libc::P_PID,
            p.child.id(),
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        );
        (r == 0 && info.si_pid() != 0).then(|| format!("exited during start-up (exit status {})", info.si_status()))
    }
}

fn missing_program(service: &str, program: &str) -> String {
    let how = match program {
        "redis-server" => {
            "install it (Debian/Ubuntu: apt-get install -y redis-server; macOS: brew install redis) or use `nix develop`"
        }
        _ => "install it or fix the command in the stack manifest",
    };
    format!("service '{service}' needs '{program}', which is not on PATH: {how}")
}

fn host_port(url: &str) -> (String, u16) {
    let hp = url.split("://").nth(1).unwrap_or(url).split('/').next().unwrap_or("");
    let (h, p) = hp.rsplit_once(':').unwrap_or((hp, "80"));
    (h.to_owned(), p.parse().unwrap_or(80))
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
