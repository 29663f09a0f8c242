//! OpenAI-compatible client for the router under test: chat (plain and SSE), models, raw GETs,
//! and the router's own response headers; the SSE decoder and a Prometheus text reader. Every failure says which URL answered what.

pub mod bench;
pub mod exposition;
pub mod headers;
pub mod shape;
pub mod sse;

pub mod router;

pub use headers::RouterHeaders;
pub use router::{DEFAULT_TIMEOUT, Reply, RouterClient, StreamReply, error_chain, excerpt};
