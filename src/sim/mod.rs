//! Provider simulator: a deterministic, fault-injecting upstream speaking OpenAI/vLLM, Azure
//! OpenAI and Anthropic Messages. Several named deployments share one listener
//! (`/d/{deployment}/...`); each has a default behaviour and scripted rules, changed at run
//! time through the admin API; every call lands in a journal the tests read. Fault rules and
//! journal queries select requests by [`crate::tag::Tag`], with its one rule. See docs/sim.md.
//!
//! Files, each importing only those listed before it (no file imports one that imports it):
//! `text` (charsets and the word rule), `tokenizer` (word rule or BPE, per model), `model`
//! (plain data), `request` (the common request, reply and hashing), `config`, the
//! dialects `openai`, `anthropic`, `embeddings` and `dialect` over them, `state` (deployments,
//! rules, journal, counters), `metrics` and `admin` (handlers on the state), `server` (the model
//! routes, and the router that mounts everything), `handle` (`start`), `cli` and `bench`.
//!
//! What the simulator spends per request is spent on the cores of the router it stands behind,
//! so a plain model call (no fault, no delay, not streamed) is kept close to a bare handler's
//! cost: at least 0.8 of its requests per second (`gauntlet bench sim --external`). It takes no
//! lock but one short append to the journal, allocates little, and waits for nothing after its
//! body: `server::complete` says what it does and what each step costs.

pub mod admin;
pub mod anthropic;
pub mod bench;
pub mod cli;
pub mod config;
pub mod dialect;
pub mod embeddings;
pub mod handle;
pub mod metrics;
pub mod model;
pub mod openai;
pub mod request;
pub mod server;
pub mod state;
#[cfg(test)]
mod testkit;
pub mod text;
pub mod tokenizer;

pub use admin::AdminClient;
pub use bench::{BenchArgs, bench_cli};
pub use cli::{SimArgs, serve_cli};
pub use config::{DEFAULT_REPLY_TOKENS, DeploymentSpec, SimConfig};
pub use handle::{SimHandle, start};
pub use model::{BadOutcome, Behaviour, Fault, JournalEntry, JournalQuery, Outcome, Rule, When};
pub use request::{SimUsage, UsageDetails, fnv};
pub use text::{Charset, words};
pub use tokenizer::{Tokenizer, TokenizerMap};
