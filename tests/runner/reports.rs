//! Reports (docs/reports.md): after a run with passing, failing and ignored cases
//! (`scenarios::failing`),
//! summary.json has every schema field with the values that happened — statuses, the failing
//! case's message, the reasons of the ignored ones, totals, boot times, saved logs — and
//! junit.xml has one `<testcase>` per case `--list` shows for the same filter, the failure as
//! `<failure message=…>` and the reasons as `<skipped>`. Secrets: the keys a stack generates
//! are pushed toward every file gauntlet writes (a service prints the master key into its log,
//! the rendered router config holds both keys) and must come out masked, for the embedded
//! stack (no key known to the test: anything shaped like a generated key is a leak) and for a
//! detached one (whose key the test reads from the state file, the only place it may be).

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use crate::scenarios;
use crate::util::{FAILING, FAILING_SAYS, NEEDS_SINK, PASSING_NAMES, Scratch, case, junit_cases, keys_like};

const LITELLM_GAP: &str = "smoke::metadata::user_reaches_upstream";

#[test]
fn summary_json_has_the_schema_fields() {
    let m = scenarios::failing();
    let s = m.summary();
    let ctx = || format!("{s:#}\n{}", m.out.show());
    assert_eq!(s["schema_version"], 1, "{}", ctx());
    assert_eq!(s["gauntlet_version"], env!("CARGO_PKG_VERSION"), "{}", ctx());
    let started = s["started_at"].as_str().expect("started_at");
    let t = chrono::DateTime::parse_from_rfc3339(started).unwrap_or_else(|e| panic!("started_at {started:?}: {e}"));
    assert_eq!(t.offset().local_minus_utc(), 0, "started_at is not UTC: {started}");
    let wall = s["wall_time_s"].as_f64().expect("wall_time_s");
    assert!(
        wall > 0.0 && wall <= m.out.took.as_secs_f64() + 0.5,
        "wall_time_s {wall}\n{}",
        ctx()
    );
    assert_eq!(s["target"], "embedded stack", "{}", ctx());
    if let Some(v) = s.get("router_version") {
        assert!(v.is_string(), "router_version {v}");
    }
    let digest = s["stack_digest"].as_str().expect("stack_digest");
    assert!(
        digest.len() == 16 && digest.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
        "stack_digest {digest:?}"
    );
    let boot = s["boot"].as_array().expect("boot");
    assert_eq!(boot.len(), 1, "one service started, so one boot time: {boot:?}");
    assert_eq!(boot[0]["service"], "router");
    assert!(
        boot[0]["seconds"].as_f64().is_some_and(|x| x >= 0.0 && x <= wall),
        "{boot:?}"
    );
    for key in ["passed", "failed", "ignored", "filtered_out"] {
        assert!(s["totals"][key].is_u64(), "totals.{key}\n{}", ctx());
    }
    let cases = s["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    for c in cases {
        let name = c["name"].as_str().expect("case name");
        assert_eq!(c["suite"].as_str(), name.split("::").next(), "{c:#}");
        assert!(
            matches!(c["status"].as_str(), Some("passed" | "failed" | "ignored")),
            "{c:#}"
        );
        assert!(c["duration_s"].as_f64().is_some_and(|d| d >= 0.0 && d <= wall), "{c:#}");
        if let Some(msg) = c.get("message") {
            assert!(msg.is_string(), "{c:#}");
        }
        if let Some(out) = c.get("output") {
            assert!(out.as_array().is_some_and(|o| o.iter().all(Value::is_string)), "{c:#}");
        }
        if let Some(obs) = c.get("observations") {
            assert!(
                obs.as_array()
                    .is_some_and(|o| o.iter().all(|x| x["name"].is_string() && x["value"].is_number())),
                "{c:#}"
            );
        }
    }
    // A case failed, so the service logs were saved, into the artifacts folder.
    let logs = s["logs"].as_array().expect("logs on a failed run");
    assert!(
        !logs.is_empty() && m.logs_found.len() == logs.len(),
        "logs {logs:?} found {:?}",
        m.logs_found
    );
    assert!(
        m.logs_found.iter().all(|p| p.starts_with(m.artifacts.join("logs"))),
        "{:?}",
        m.logs_found
    );
    assert!(
        m.logs_found.iter().any(|p| p.ends_with("router.log")),
        "{:?}",
        m.logs_found
    );
}

#[test]
fn summary_statuses_and_messages_match_what_happened() {
    let m = scenarios::failing();
    let s = m.summary();
    let failing = case(s, FAILING);
    assert_eq!(failing["status"], "failed", "{failing:#}");
    let msg = failing["message"].as_str().unwrap_or_default();
    assert!(msg.contains(FAILING_SAYS), "{failing:#}");
    m.out.assert_outcome(FAILING, "FAILED");
    for name in PASSING_NAMES {
        let c = case(s, name);
        assert_eq!(c["status"], "passed", "{c:#}");
        assert!(c.get("message").is_none(), "a passed case with a message: {c:#}");
    }
    let sink = case(s, NEEDS_SINK);
    assert_eq!(sink["status"], "ignored", "{sink:#}");
    assert!(sink["message"].as_str().is_some_and(|m| m.contains("sink")), "{sink:#}");
    let gap = case(s, LITELLM_GAP);
    assert_eq!(gap["status"], "ignored", "{gap:#}");
    assert!(
        gap["message"].as_str().is_some_and(|m| m.contains("LiteLLM")),
        "{gap:#}"
    );

    // Every listed case is in the summary, and only those.
    let names: BTreeSet<&str> = s["cases"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    let listed: BTreeSet<&str> = m.listed.iter().map(String::as_str).collect();
    assert_eq!(names, listed);
    let totals = &s["totals"];
    let count = |status: &str| {
        s["cases"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == status)
            .count() as u64
    };
    assert_eq!(
        (
            totals["passed"].as_u64(),
            totals["failed"].as_u64(),
            totals["ignored"].as_u64()
        ),
        (Some(3), Some(1), Some(2)),
        "{totals}"
    );
    assert_eq!(
        (count("passed"), count("failed"), count("ignored")),
        (3, 1, 2),
        "totals and cases disagree"
    );
    assert_eq!(
        totals["filtered_out"].as_u64(),
        Some((m.all - m.listed.len()) as u64),
        "{totals}"
    );
}

#[test]
fn junit_has_a_testcase_per_listed_case_and_the_failure_message() {
    let m = scenarios::failing();
    let cases = junit_cases(m.junit());
    assert_eq!(
        cases.len(),
        m.listed.len(),
        "junit.xml testcases vs --list with the same filter\n{}",
        m.junit()
    );
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, m.listed.iter().map(String::as_str).collect::<BTreeSet<_>>());
    for c in &cases {
        assert_eq!(c.classname, "smoke", "{c:?}");
        let summary = case(m.summary(), &c.name);
        match summary["status"].as_str() {
            Some("passed") => assert!(c.failure.is_none() && c.skipped.is_none(), "{c:?}"),
            Some("ignored") => assert_eq!(c.skipped.as_deref(), summary["message"].as_str(), "{c:?}"),
            _ => {
                let full = summary["message"].as_str().unwrap_or_default();
                let short = c
                    .failure
                    .as_deref()
                    .unwrap_or_else(|| panic!("no <failure message=…>: {c:?}"));
                assert!(short.contains(FAILING_SAYS), "{c:?}");
                assert!(
                    full.starts_with(short.trim_end_matches('…')),
                    "{short:?} is not the start of {full:?}"
                );
            }
        }
    }
    let failing = cases
        .iter()
        .find(|c| c.name == FAILING)
        .expect("failing case in junit.xml");
    assert!(failing.failure.is_some(), "{failing:?}");
    let root = m
        .junit()
        .lines()
        .find(|l| l.contains("<testsuites"))
        .expect("<testsuites>");
    assert!(
        root.contains(&format!("tests=\"{}\"", m.listed.len())) && root.contains("failures=\"1\""),
        "{root}"
    );
}

/// Every file under the scratch folder (artifacts, TMPDIR, gauntlet's own stdout/stderr).
fn written(s: &Scratch) -> Vec<(PathBuf, String)> {
    Scratch::files_under(s.root())
        .into_iter()
        .filter_map(|p| {
            std::fs::read(&p)
                .ok()
                .map(|b| (p, String::from_utf8_lossy(&b).into_owned()))
        })
        .collect()
}

/// What gauntlet saved of the fixture's secret-carrying lines, as a positive control: the
/// keys did reach what it writes, masked.
fn assert_masked_in_saved_log(s: &Scratch) {
    let log = std::fs::read_to_string(s.artifacts().join("logs/router.log")).expect("router.log saved");
    assert!(
        log.lines()
            .any(|l| l == format!("master key from env: {}", gauntlet::redact::MASK)),
        "the saved router log lacks the masked key line:\n{log}"
    );
}

#[test]
fn generated_keys_never_reach_a_written_file() {
    let s = Scratch::new("reports-secrets-embedded");
    s.stack("secret-stack.toml");
    let out = s.gauntlet().args(&["--exact", FAILING]).run();
    out.assert_code(101);
    assert_masked_in_saved_log(&s);
    let rendered =
        std::fs::read_to_string(s.artifacts().join("logs/router.rendered.yaml")).expect("rendered config saved");
    let mask = gauntlet::redact::MASK;
    assert!(
        rendered.contains(&format!("master_key: \"{mask}\"")) && rendered.contains(&format!("api_key: \"{mask}\"")),
        "the saved rendered config does not show both keys masked:\n{rendered}"
    );
    s.assert_torn_down(&out);
    let files = written(&s);
    assert!(files.len() > 5, "{files:?}");
    for (path, text) in files {
        for prefix in ["sk-gauntlet-", "sk-provider-"] {
            let leaked = keys_like(&text, prefix);
            assert!(leaked.is_empty(), "{} holds {leaked:?}", path.display());
        }
    }
}

#[test]
fn a_detached_stacks_key_never_reaches_a_written_file() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new("reports-secrets-detached");
    s.stack("secret-stack.toml");
    let state = s.artifacts().join("stack.json");
    let state_arg = state.to_str().unwrap();
    s.gauntlet()
        .args(&["up", "--detach", "--state", state_arg, "--idle-timeout", "120"])
        .run()
        .assert_code(0);
    let mode = std::fs::metadata(&state).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the state file holds the master key: owner-only");
    let ep: Value = serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    let key = ep["master_key"]
        .as_str()
        .expect("master_key in the state file")
        .to_owned();
    let supervisor = ep["supervisor_pid"].as_u64().expect("supervisor_pid") as u32;
    assert!(key.len() >= 16);

    let run = s
        .gauntlet()
        .args(&["--exact", FAILING])
        .env("GAUNTLET_STACK", state_arg)
        .run();
    run.assert_code(101);
    assert_eq!(s.summary()["target"], format!("stack {state_arg}"));
    assert_masked_in_saved_log(&s);
    s.gauntlet().args(&["down", "--state", state_arg]).run().assert_code(0);
    s.assert_torn_down_pid(supervisor, &run.show());

    // The state file went with `down`; nothing else may ever have held the key.
    assert!(!state.exists());
    for (path, text) in written(&s) {
        assert!(!text.contains(&key), "{} holds the master key", path.display());
    }
}
