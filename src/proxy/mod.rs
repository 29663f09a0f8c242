//! A fault-injecting TCP proxy (Toxiproxy's idea, gauntlet's own code): it sits between the
//! router and an upstream deployment, forwards every connection byte for byte, and lets a chaos
//! case inject network faults ([`Toxic`]s: latency, bandwidth, slow close, timeout, reset,
//! slicing, a data limit) into connections already open, mid-traffic. See docs/proxy.md.
//!
//! One port serves both traffic and control: a connection whose first bytes are an HTTP
//! request for a path under `/__gauntlet/proxy/` is a control connection ([`ProxyClient`]
//! speaks to it); any other is forwarded, the bytes read to decide sent upstream first.
//!
//! Files, each importing only those listed before it: `toxic` (the toxics, one file per kind,
//! and the plan they shape), `state` (toxics, change signals, counters), `sniff` (control or
//! traffic), `lane` (one direction of a forwarded connection through the toxics), `client`,
//! `control` (the API), `server` (accept, forward, [`start`], [`ProxyHandle`]), `cli`.

mod cli;
mod client;
mod control;
mod lane;
mod server;
mod sniff;
mod state;
mod toxic;

#[cfg(test)]
mod tests;

pub use cli::{ProxyArgs, serve_cli};
pub use client::ProxyClient;
pub use server::{ProxyHandle, start, start_seeded};
pub use sniff::CONTROL_PREFIX;
pub use state::{AddError, ProxyStats};
pub use toxic::{Bandwidth, Latency, LimitData, ResetPeer, Slicer, SlowClose, Stream, Timeout, Toxic, ToxicKind};
