//! Runner: libtest-mimic glue, registry, reports.
pub mod cli;
