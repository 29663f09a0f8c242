//! The runner end to end, hermetic: the built `gauntlet` against fixture stacks
//! (tests/fixtures/stacks/) whose router is gauntlet's own simulator run as a command
//! service, so no redis-server, Python or LiteLLM is needed (every run gets an empty PATH).
//! One binary (`cargo test --test runner`), one module per topic:
//!
//! - `chaos`: pause, kill, restart, disconnect done to a real Redis on each backend
//! - `compose`: `gauntlet compose` brought up by Docker Compose, healthy, keys kept in .env
//! - `docker`: the same runs on the Docker backend; nothing left in the engine
//! - `exit_codes`: 0, 101, 2, 3 and 130, each from what the README says causes it
//! - `listing`: `--list` starts nothing and writes nothing
//! - `load`: `gauntlet load` against a simulator process: shards merge to one run, the open
//!   loop counts a stall the closed loop hides, the regression gate, bad input
//! - `gating`: a case needing a service the stack lacks is ignored with the reason, or
//!   failed with it under `GAUNTLET_REQUIRE=all`
//! - `teardown`: after success, failure, SIGINT, a start-up failure and a panic, nothing the
//!   run started survives and its private folder is gone
//! - `reports`: summary.json and junit.xml say what happened; no generated key reaches a file
//! - `known_issues`: what the runner gets wrong today, `#[ignore]`d with the evidence
//!
//! `util` holds what they share (scratch folders, fixture stacks, bounded runs, reports,
//! survivors); `scenarios` the runs several topics check, made once.

mod chaos;
mod compose;
mod docker;
mod exit_codes;
mod gating;
mod listing;
mod load;
mod regressions;
mod reports;
mod scenarios;
mod teardown;
mod util;
