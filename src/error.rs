//! Errors that end a run, each mapped to an exit code (as nextest does), so scripts and CI
//! can tell "you called it wrong" from "the stack would not come up" from "tests failed".

use std::process::ExitCode;

/// Exit codes, documented in README.md.
pub mod exit {
    /// Every selected case passed.
    pub const OK: u8 = 0;
    /// `gauntlet load`: a point stopped past its error budget, or the regression gate
    /// found the run slower than its baseline.
    pub const LOAD_FAILED: u8 = 1;
    /// At least one case failed (libtest's own code).
    pub const TEST_FAILED: u8 = 101;
    /// Bad command line, environment variable, manifest or router config.
    pub const USAGE: u8 = 2;
    /// The stack could not be brought up or reached (a service missing, unhealthy, unreachable).
    pub const STACK: u8 = 3;
    /// Interrupted by SIGINT/SIGTERM (128 + SIGINT, as shells report it).
    pub const INTERRUPTED: u8 = 130;
}

/// An error that ends the run before or around the cases, with what to do about it. The
/// variants with a cause keep it as the error's source; the exit code follows the variant.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The user asked for something that cannot work: fix the input.
    #[error("{0}")]
    Usage(String),
    /// The router config (or a file it includes) is wrong, at a known file and line.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A service of the stack is missing, would not start or is unreachable.
    #[error("{0}")]
    Stack(String),
    /// A service started but never became ready (the cause says which, why, and its log).
    #[error(transparent)]
    Unhealthy(Box<dyn std::error::Error + Send + Sync>),
    /// A load run measured what it was told to fail on (error budget, regression gate).
    #[error("{0}")]
    Failed(String),
    /// SIGINT or SIGTERM stopped it.
    #[error("interrupted")]
    Interrupted,
}

impl RunError {
    pub fn usage(msg: impl Into<String>) -> Self {
        Self::Usage(msg.into())
    }
    pub fn stack(msg: impl Into<String>) -> Self {
        Self::Stack(msg.into())
    }
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) | Self::Config(_) => exit::USAGE,
            Self::Stack(_) | Self::Unhealthy(_) => exit::STACK,
            Self::Failed(_) => exit::LOAD_FAILED,
            Self::Interrupted => exit::INTERRUPTED,
        }
    }
}

/// Maps any error to the exit code of the first [`RunError`] in its chain (stack by default:
/// an unclassified failure happened while running things, not while reading input).
pub fn exit_code_of(err: &anyhow::Error) -> ExitCode {
    let code = err
        .chain()
        .find_map(|e| e.downcast_ref::<RunError>())
        .map_or(exit::STACK, RunError::exit_code);
    ExitCode::from(code)
}
