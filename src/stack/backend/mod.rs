//! Backends: what turns a manifest service into something running. The stack
//! ([`super::Stack`]) decides what starts, in which order, with which rendered command and
//! environment, and waits for health; a backend owns how a service is started, seen, hurt
//! ([`Chaos`]) and stopped.
//!
//! - [`Processes`] (the default): local child processes, builtins inside gauntlet.
//! - [`Containers`]: one Docker container per service (builtins too, from the gauntlet
//!   image) on a network of the run's own, through bollard.
//!
//! Design note: a service's *internal* address (what other services and the router config
//! use: `${sim.url}`) and its *endpoint* (what the cases on the host use) are the same for
//! processes and differ for containers (`http://sim:8000` inside, `127.0.0.1:<published>`
//! outside), so [`Launched`] carries both and the manifest never changes between backends.

mod chaos;
mod docker;
pub mod kind;
mod process;

pub use chaos::Chaos;
pub use docker::{Containers, SERVICE_PORT, builtin_command, file_inside};
pub use kind::BackendKind;
pub use process::{Proc, Processes, spawn, tail, which};

use std::path::{Path, PathBuf};

use super::endpoints::Endpoint;
use super::manifest::{Builtin, Manifest, ServiceSpec};
use super::teardown::Teardown;
use crate::error::RunError;

/// One service to start, its command and environment already rendered.
pub struct Launch<'a> {
    pub service: String,
    pub spec: &'a ServiceSpec,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The port it was told to listen on (`${port}`).
    pub port: u16,
    /// `http` or `redis`: how its URL is written.
    pub scheme: &'static str,
}

/// A started service.
pub struct Launched {
    /// Where the other services reach it (`${name.url}`).
    pub internal_url: String,
    /// Where the cases reach it.
    pub endpoint: Endpoint,
    /// Its output, if it has its own.
    pub log: Option<PathBuf>,
}

/// The backend of one stack.
pub enum Backend {
    Process(Processes),
    Docker(Box<Containers>),
}

impl Backend {
    pub async fn open(kind: BackendKind, files: &Path, teardown: &Teardown) -> Result<Self, RunError> {
        Ok(match kind {
            BackendKind::Process => Self::Process(Processes::new(teardown.clone())),
            BackendKind::Docker => Self::Docker(Box::new(Containers::open(files, teardown).await?)),
        })
    }

    pub fn kind(&self) -> BackendKind {
        match self {
            Self::Process(_) => BackendKind::Process,
            Self::Docker(_) => BackendKind::Docker,
        }
    }

    /// Everything a start needs before the first service: images, for containers.
    pub async fn prepare(&mut self, m: &Manifest, services: &[String]) -> Result<(), RunError> {
        match self {
            Self::Process(_) => Ok(()),
            Self::Docker(d) => d.prepare(m, services).await,
        }
    }

    /// The address a service listens on (`${bind}`): loopback for processes, every
    /// interface inside a container (its own namespace; only published ports reach the host).
    pub fn bind(&self) -> &'static str {
        match self {
            Self::Process(_) => "127.0.0.1",
            Self::Docker(_) => "0.0.0.0",
        }
    }

    /// The port a service is told to listen on (`${port}`).
    pub fn port(&self) -> Result<u16, RunError> {
        match self {
            Self::Process(_) => super::free_port(),
            Self::Docker(_) => Ok(docker::SERVICE_PORT),
        }
    }

    /// How a service sees a file of the stack's private files folder.
    pub fn file(&self, host: &Path) -> String {
        match self {
            Self::Process(_) => host.display().to_string(),
            Self::Docker(_) => docker::file_inside(host),
        }
    }

    /// `${litellm}`: the pinned LiteLLM, provisioned on the host or inside the image.
    pub async fn litellm(&self) -> anyhow::Result<String> {
        match self {
            Self::Process(_) => {
                let bin = tokio::task::spawn_blocking(super::litellm::resolve).await??;
                Ok(bin.display().to_string())
            }
            Self::Docker(_) => Ok(super::image::LITELLM_BIN.to_owned()),
        }
    }

    /// `${gauntlet}`: this gauntlet binary, on the host or inside the gauntlet image (a
    /// service of gauntlet's own that must be a process of its own: a fault proxy that
    /// chaos can pause).
    pub fn gauntlet(&self) -> Result<String, RunError> {
        match self {
            Self::Process(_) => Ok(super::image::gauntlet_binary()?.display().to_string()),
            Self::Docker(_) => Ok(super::image::GAUNTLET_BIN.to_owned()),
        }
    }

    pub async fn launch(&mut self, l: Launch<'_>, log: &Path) -> anyhow::Result<Launched> {
        match self {
            Self::Process(p) => Ok(p.launch(&l, log)?),
            Self::Docker(d) => Ok(d.launch(&l, log).await?),
        }
    }

    pub async fn builtin(
        &mut self,
        name: &str,
        spec: &ServiceSpec,
        kind: Builtin,
        sim: &crate::sim::SimConfig,
        log: &Path,
    ) -> anyhow::Result<Launched> {
        match self {
            Self::Process(p) => p.builtin(kind, sim).await,
            Self::Docker(d) => Ok(d.builtin(name, spec, kind, sim, log).await?),
        }
    }

    /// How `name` ended ("exit status 7"), if it is no longer running.
    pub fn exited(&self, name: &str) -> Option<String> {
        match self {
            Self::Process(p) => p.exited(name),
            Self::Docker(d) => d.exited(name),
        }
    }

    /// Does `what` to `name`; returns its new endpoint when it moved (a restarted container
    /// gets a new host port).
    pub async fn chaos(&mut self, name: &str, what: Chaos, log: &Path) -> Result<Option<Endpoint>, RunError> {
        match self {
            Self::Process(p) => p.chaos(name, what, log),
            Self::Docker(d) => d.chaos(name, what, log).await,
        }
    }

    /// Stops and removes everything this backend started. Safe to call twice.
    pub async fn stop(&mut self) {
        match self {
            Self::Process(p) => p.stop().await,
            Self::Docker(d) => d.stop().await,
        }
    }

    /// For `Drop`: no `.await` available.
    pub fn stop_now(&mut self) {
        match self {
            Self::Process(p) => p.stop_children(),
            Self::Docker(d) => d.stop_now(),
        }
    }
}

/// A service URL's host and port: the port it names, else its scheme's (80 for `http`, 443
/// for `https`, 6379 for `redis`). An IPv6 host comes without its brackets, as a `host`
/// setting (LiteLLM's `redis_host`) wants it.
pub(crate) fn host_port(url: &str) -> Result<(String, u16), RunError> {
    let bad = |why: &str| RunError::stack(format!("service URL {url:?}: {why}"));
    let u = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
    let host = match u.host() {
        Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        _ => return Err(bad("no host")),
    };
    let port = match (u.port_or_known_default(), u.scheme()) {
        (Some(p), _) => p,
        (None, "redis") => crate::stack::redis::DEFAULT_PORT,
        (None, scheme) => return Err(bad(&format!("no port, and {scheme}:// has no default"))),
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The old split took what followed the last `:` as the port and 80 otherwise:
    /// `https://h` was port 80, and `http://[::1]` (no port) port 0 with host `[:`.
    #[test]
    fn host_port_reads_urls_as_urls() {
        let hp = |u: &str| host_port(u).unwrap();
        assert_eq!(hp("https://h"), ("h".into(), 443));
        assert_eq!(hp("http://h"), ("h".into(), 80));
        assert_eq!(hp("http://127.0.0.1:7001"), ("127.0.0.1".into(), 7001));
        assert_eq!(hp("http://[::1]"), ("::1".into(), 80));
        assert_eq!(hp("http://[::1]:8000/d/x"), ("::1".into(), 8000));
        assert_eq!(hp("redis://redis"), ("redis".into(), 6379));
        assert_eq!(hp("http://user:pw@sim:9/x?y=1:2"), ("sim".into(), 9));
        assert!(host_port("not a url").is_err());
        assert!(host_port("tcp://h").is_err());
    }
}
