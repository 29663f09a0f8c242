//! [`Endpoints`]: where a running stack's services are and which role each plays — what the
//! suites need to reach it, and the state file `gauntlet up` writes and `GAUNTLET_STACK`
//! attaches to.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::role;

/// Where one service can be reached.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub url: String,
    pub host: String,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// The container running it (Docker backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

/// What the suites need to reach a running stack. This is also the state file that
/// `gauntlet up` writes and `GAUNTLET_STACK` attaches to.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Endpoints {
    /// Service name → endpoint (router, sim, sink, redis, …).
    pub services: BTreeMap<String, Endpoint>,
    /// Which service is the router.
    pub router: String,
    /// Which service plays each role the cases ask for.
    #[serde(default)]
    pub roles: BTreeMap<role::Role, String>,
    /// The router's master key. Only in memory and in the 0600 state file; never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key: Option<String>,
    /// Other secrets the stack made (the fake provider key): every process attaching to the
    /// stack registers them for redaction, as the one that made them did.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Which backend runs the services.
    #[serde(default)]
    pub backend: super::backend::kind::BackendKind,
    /// The process that owns the stack (the runner, or `gauntlet up`).
    pub supervisor_pid: u32,
    /// Where service logs are written.
    #[serde(default)]
    pub logs: BTreeMap<String, PathBuf>,
    /// Router version, once known (for reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_version: Option<String>,
    /// The router config as rendered for this stack (private: it holds keys; saved redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered_config: Option<PathBuf>,
    /// Where the cases of every process using this stack take their group locks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locks: Option<PathBuf>,
}

impl Endpoints {
    pub fn url(&self, service: &str) -> Option<&str> {
        self.services.get(service).map(|e| e.url.as_str())
    }
    pub fn router_url(&self) -> Option<&str> {
        self.url(&self.router)
    }
    /// The URL of the service playing `role`, if the stack has one.
    pub fn url_of(&self, role: role::Role) -> Option<&str> {
        self.roles.get(&role).and_then(|n| self.url(n))
    }
    pub fn has(&self, service: &str) -> bool {
        self.services.contains_key(service)
    }
}
