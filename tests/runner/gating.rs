//! Gating (README: "cases that need the simulator or the sink are ignored with the reason
//! (failed under `GAUNTLET_REQUIRE=all`)"). The fixture stack has a router and nothing else,
//! so a case needing the ledger sink is listed ignored and, run, recorded ignored with the
//! reason; with `GAUNTLET_REQUIRE=all` it is no longer ignored, and fails with that reason
//! (exit 101). A case ignored for a reason of the config (a known LiteLLM gap) stays ignored.

use crate::util::{NEEDS_SINK, PASSING_NAMES, Scratch, case, junit_cases};

#[test]
fn a_case_needing_a_missing_service_is_ignored_with_the_reason() {
    let s = Scratch::new("gating-ignored");
    s.stack("sim-router.toml");
    let ignored = s.gauntlet().args(&["--list", "--ignored"]).run();
    ignored.assert_code(0);
    let listed = ignored.listed();
    assert!(
        listed.iter().any(|l| l == NEEDS_SINK),
        "{NEEDS_SINK} not listed as ignored\n{}",
        ignored.show()
    );
    for name in PASSING_NAMES {
        assert!(
            !listed.iter().any(|l| l == name),
            "{name} listed as ignored\n{}",
            ignored.show()
        );
    }

    let out = s.gauntlet().args(&["--exact", NEEDS_SINK]).run();
    out.assert_code(0).assert_outcome(NEEDS_SINK, "ignored");
    let rec = case(&s.summary(), NEEDS_SINK).clone();
    assert_eq!(rec["status"], "ignored", "{rec:#}");
    let reason = rec["message"].as_str().unwrap_or_default();
    assert!(
        reason.contains("sink"),
        "the reason does not name the missing sink: {reason:?}"
    );
    // The terminal summary gives the same reason.
    out.assert_stderr_has(&format!("{NEEDS_SINK}: {reason}"));
    // Nothing to run, so nothing was started.
    assert!(s.started("router").is_none(), "{}", out.show());
}

#[test]
fn under_require_all_it_fails_with_that_reason() {
    let s = Scratch::new("gating-require-all");
    s.stack("sim-router.toml");
    // The reason it is ignored without GAUNTLET_REQUIRE.
    s.gauntlet().args(&["--exact", NEEDS_SINK]).run().assert_code(0);
    let reason = case(&s.summary(), NEEDS_SINK)["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!reason.is_empty());

    let listed = s
        .gauntlet()
        .args(&["--list", "--ignored"])
        .env("GAUNTLET_REQUIRE", "all")
        .run()
        .listed();
    assert!(
        !listed.iter().any(|l| l == NEEDS_SINK),
        "still ignored under GAUNTLET_REQUIRE=all: {listed:?}"
    );
    // Ignored for what the config (a LiteLLM gap) says, not for a missing service: stays ignored.
    assert!(
        listed.iter().any(|l| l == "smoke::auth::wrong_key_is_401"),
        "{listed:?}"
    );

    let out = s
        .gauntlet()
        .args(&["--exact", NEEDS_SINK])
        .env("GAUNTLET_REQUIRE", "all")
        .run();
    out.assert_code(101).assert_outcome(NEEDS_SINK, "FAILED");
    let want = format!("GAUNTLET_REQUIRE=all: {reason}");
    let rec = case(&s.summary(), NEEDS_SINK).clone();
    assert_eq!(rec["status"], "failed", "{rec:#}");
    assert_eq!(rec["message"], want.as_str(), "{rec:#}");
    let junit = junit_cases(&s.junit());
    let tc = junit
        .iter()
        .find(|c| c.name == NEEDS_SINK)
        .expect("testcase in junit.xml");
    assert_eq!(tc.failure.as_deref(), Some(want.as_str()), "{tc:?}");
}
