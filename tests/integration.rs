//! The suites as a `harness = false` test, so `cargo test` and `cargo nextest run` run them
//! through the same entry as `gauntlet test`.

fn main() -> std::process::ExitCode {
    gauntlet::runner::run_tests(std::env::args().collect())
}
