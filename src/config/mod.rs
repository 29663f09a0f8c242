//! The team's router config, as gauntlet understands it.
//!
//! - [`source`]: the file as LiteLLM reads it (`include:`, merge keys), with the line of every
//!   node, so every complaint names `file:line`;
//! - [`model`]: [`RouterConfig`], what the cases are derived from, combining one rule per
//!   file: [`timeout`] (the effective timeout per attempt), [`fallback`] (the walk LiteLLM
//!   makes through chains of chains), [`routing`] (strategies and the share each deployment
//!   gets), [`pricing`] (the team's prices, for the router and the ledger alike), [`provider`]
//!   (provider dialect and model mode), [`recount`] (the tokenizer the router counts a reply
//!   with when the upstream reported no usage);
//! - [`mirror`]: a team's config turned into a stack on the simulator, changing where
//!   deployments point and nothing about how the router chooses among them.

pub mod fallback;
pub mod mirror;
pub mod model;
pub mod pricing;
pub mod provider;
pub mod recount;
pub mod routing;
pub mod source;
pub mod timeout;

pub use fallback::{Chain, ChainKind};
pub use model::{Deployment, RouterConfig};
pub use source::{ConfigError, Document, Loc};
