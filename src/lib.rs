//! gauntlet: runs an LLM gateway stack through its paces.
//!
//! The binary is a thin CLI (`src/main.rs`) over this library; see ARCHITECTURE.md for how a
//! test case and a request flow through the modules below.

pub mod client;
pub mod config;
pub mod error;
pub mod ledger;
pub mod load;
pub mod proxy;
pub mod random;
pub mod redact;
pub mod runner;
pub mod sim;
pub mod stack;
pub mod suites;
pub mod tag;
