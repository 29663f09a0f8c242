//! The suites, one file each, reading like the seed's bullet lists. Each returns its cases
//! from the plan; `all` gates them on what the target offers.

pub mod caching;
mod catalog;
pub mod chaos;
pub mod conformance;
pub mod cooldown;
pub mod fallbacks;
pub mod gpu;
pub mod ledger;
pub mod limits;
pub mod load;
pub mod perf;
pub mod pricing;
pub mod routing;
pub mod secrets;
pub mod security;
pub mod smoke;
pub mod streaming;
pub mod support;
pub mod text;

pub use catalog::all;
