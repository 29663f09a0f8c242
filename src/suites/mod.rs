//! suites (in progress)
