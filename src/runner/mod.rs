//! Runner: libtest-mimic glue, the case registry, per-case capture, reports, signals.

pub mod capture;
pub mod cli;
pub mod context;
pub mod load;
pub mod locks;
pub mod progress;
pub mod registry;
pub mod report;
pub mod run;
pub mod schedule;
pub mod signals;
pub mod target;
pub mod trial;
pub mod up;

pub use run::main as run_tests;
