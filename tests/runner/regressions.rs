//! Runner bugs found by this binary and fixed since, each pinned by the test that failed
//! before the fix: `--test-threads 0` used to start the stack and hang, and an embedded
//! router with another health path used to be probed again for all of HEALTH_TIMEOUT.

use std::time::Duration;

use crate::util::{PASSING, Scratch};

/// `--test-threads 0` is accepted, the stack started, and then libtest-mimic 0.8 waits
/// forever for results no worker thread will send (zero workers, `receiver.iter().take(n)`).
/// libtest itself refuses 0; gauntlet should too, as a usage error, before starting anything.
#[test]
fn zero_test_threads_is_a_usage_error() {
    let s = Scratch::new("known-test-threads-0");
    s.stack("sim-router.toml");
    let out = s
        .gauntlet()
        .args(&["--test-threads", "0"])
        .args(PASSING)
        .timeout(Duration::from_secs(10))
        .run();
    out.assert_code(2);
    assert!(s.started("router").is_none(), "{}", out.show());
}

/// The embedded router was just found healthy by its manifest health check, yet the runner
/// probes `<router>/health/readiness` again (`check_router`, documented as being for an
/// attached or external router) and waits all of `HEALTH_TIMEOUT` for it when the router's
/// health path is another: 60 s by default, then a warning, for cases that take 10 ms.
#[test]
fn an_embedded_router_is_not_probed_again_for_health_timeout() {
    let s = Scratch::new("known-reprobe");
    s.stack("sim-router.toml");
    let out = s.gauntlet().args(PASSING).env("HEALTH_TIMEOUT", "12").run();
    out.assert_code(0);
    assert!(out.took < Duration::from_secs(6), "took {:?}\n{}", out.took, out.show());
}
