//! [`BackendKind`]: which backend a run uses — `GAUNTLET_BACKEND`, else the manifest's
//! `stack.backend`, else processes.

use serde::{Deserialize, Serialize};

use crate::error::RunError;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    #[default]
    Process,
    Docker,
}

impl BackendKind {
    /// `GAUNTLET_BACKEND` wins over the manifest's choice.
    pub fn select(manifest: Option<BackendKind>) -> Result<Self, RunError> {
        match std::env::var("GAUNTLET_BACKEND") {
            Ok(v) if !v.is_empty() => {
                Self::parse(&v).map_err(|e| RunError::usage(format!("GAUNTLET_BACKEND={v}: {e}")))
            }
            _ => Ok(manifest.unwrap_or_default()),
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "process" | "processes" | "local" => Ok(Self::Process),
            "docker" => Ok(Self::Docker),
            other => Err(format!("unknown backend '{other}' (known: process, docker)")),
        }
    }
}

impl std::fmt::Display for BackendKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Process => "process",
            Self::Docker => "docker",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_ones_are_refused() {
        assert_eq!(BackendKind::parse("docker"), Ok(BackendKind::Docker));
        assert_eq!(BackendKind::parse("process"), Ok(BackendKind::Process));
        assert!(
            BackendKind::parse("podman")
                .unwrap_err()
                .contains("known: process, docker")
        );
    }
}
