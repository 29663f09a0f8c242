//! `gauntlet --list` (README: "list the cases; starts nothing"): with or without a filter or
//! `--ignored`, no service is spawned (the fixture's service writes a marker the moment it
//! starts), no process of the fixture exists, and nothing is written: no artifacts, no stack
//! state, nothing in TMPDIR.

use crate::util::{FAILING, NEEDS_SINK, PASSING_NAMES, Scratch};

#[test]
fn list_starts_nothing_and_writes_nothing() {
    let s = Scratch::new("list");
    s.stack("sim-router.toml");
    for args in [&["--list"][..], &["smoke::", "--list"], &["--list", "--ignored"]] {
        let out = s.gauntlet().args(args).run();
        out.assert_code(0);
        assert!(!out.listed().is_empty(), "nothing listed\n{}", out.show());
        assert!(
            s.started("router").is_none(),
            "--list spawned the router\n{}",
            out.show()
        );
        assert!(s.survivors().is_empty(), "{:?}\n{}", s.survivors(), out.show());
        assert!(
            !s.artifacts().exists(),
            "--list wrote {:?}\n{}",
            Scratch::files_under(&s.artifacts()),
            out.show()
        );
        assert!(
            s.tmp_entries().is_empty(),
            "--list wrote {:?} into TMPDIR\n{}",
            s.tmp_entries(),
            out.show()
        );
        assert!(!out.stderr.contains("starting the stack"), "{}", out.show());
    }
}

#[test]
fn list_shows_the_cases_derived_from_the_fixture_config() {
    let s = Scratch::new("list-cases");
    s.stack("sim-router.toml");
    let out = s.gauntlet().args(&["--list"]).run();
    let listed = out.listed();
    for name in PASSING_NAMES.iter().chain(&[FAILING, NEEDS_SINK]) {
        assert!(listed.iter().any(|l| l == name), "{name} not listed\n{}", out.show());
    }
    // One group in the config, so one chat completion case.
    let chat: Vec<&String> = listed
        .iter()
        .filter(|l| l.starts_with("smoke::chat_completion::"))
        .collect();
    assert_eq!(chat, ["smoke::chat_completion::default"], "{}", out.show());
}
