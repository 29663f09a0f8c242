//! `gauntlet load`: load against the embedded stack or any OpenAI-compatible URL, measured
//! honestly (docs/load.md).
//!
//! - `profile`: the load shapes (closed and open loop, sweep) and the open loop's schedule
//! - `prompt`: synthetic prompts of exact token lengths, or a JSONL file; bodies built once
//! - `transport`: one request on the wire, read as it arrives
//! - `wire`: the plain-HTTP/1.1 connection the transport uses (one `writev`, heads parsed in place)
//! - `sample`: what a request came to (timings, or an error class)
//! - `engine`: one point: dispatch, bounds, warm-up, the error budget
//! - `report`: HDR histograms and counts per point; vLLM bench's JSON names; shard merging
//! - `gate`: the regression rule (Mann–Whitney plus an effect floor)
//! - `plot`: latency over time and by percentile, as SVG
//! - `run`: settings checked once, the points run in turn, the files written, the verdicts
//!
//! A request flows: `run` builds a `PointPlan` → `engine` takes the next intended send time
//! (open loop) or the next free worker (closed loop) → `transport` sends a prebuilt body and
//! feeds the answer to a `sample::Reading` → the `Sample` is recorded into the point's
//! `report::PointReport` (or dropped if it was due in the warm-up).

pub mod args;
pub mod engine;
pub mod gate;
pub mod plot;
pub mod profile;
pub mod prompt;
pub mod report;
pub mod run;
pub mod sample;
pub mod transport;
pub mod wire;

pub use args::{LoadArgs, LoadCli, LoadCommand};
pub use report::Report;
pub use run::{Settings, Target};
