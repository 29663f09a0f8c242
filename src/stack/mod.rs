//! The stack under test: the manifest, start order, health, backends (processes or Docker
//! containers, [`backend`]), images ([`image`]), and the endpoints the
//! suites talk to. [`Stack::start`] brings services up level by level; [`Stack::stop`] (and,
//! as a last resort, [`Teardown::now`]) tears down everything it started.

pub mod backend;
pub mod compose;
pub mod control;
pub mod endpoints;
pub mod engine;
pub mod gpu;
pub mod health;
pub mod image;
pub mod litellm;
pub mod manifest;
pub mod order;
pub mod redis;
pub mod role;
pub mod start;
pub mod state;
pub mod teardown;
pub mod template;

pub use backend::{BackendKind, Chaos};
pub use control::Control;
pub use endpoints::{Endpoint, Endpoints};
pub use start::{Stack, StartOptions, Unhealthy, free_port, save_logs, write_private};
pub use teardown::Teardown;
