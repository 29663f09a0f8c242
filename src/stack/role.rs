//! [`Role`]: what a service is to the cases, whatever the manifest names it. Cases ask for
//! roles (`Case::needs(&[Role::Simulator])`, `Ctx::sim()`), the manifest says which service
//! plays each — explicitly (`role = "simulator"`) or by what it is (a builtin simulator, a
//! Redis health check, `stack.router`) — so a manifest that calls its simulator `simulator`
//! still gets every fallback and ledger case.

use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The router under test (`stack.router`).
    Router,
    /// Another router on the same Redis, for shared-state cases.
    SecondRouter,
    /// The fault-injecting provider simulator.
    Simulator,
    /// Receives the router's logging payloads.
    LedgerSink,
    /// The router's Redis (cache, cooldowns).
    Redis,
    /// A vLLM server on an NVIDIA GPU (the GPU lane): the real model server the simulator
    /// stands in for everywhere else.
    Vllm,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Self::Router,
        Self::SecondRouter,
        Self::Simulator,
        Self::LedgerSink,
        Self::Redis,
        Self::Vllm,
    ];
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Router => "router",
            Self::SecondRouter => "second-router",
            Self::Simulator => "simulator",
            Self::LedgerSink => "ledger-sink",
            Self::Redis => "redis",
            Self::Vllm => "vllm",
        })
    }
}
