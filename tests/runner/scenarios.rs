//! Runs several topics check, each made once per test binary (the first test to ask runs
//! it, the others wait for it): a passing run, a failing run with ignored cases, and a run
//! interrupted by SIGINT while a case runs. Each records, right after gauntlet exits, what a
//! test may want to look at later — its output, its reports, and what teardown left — so
//! `exit_codes`, `teardown` and `reports` each assert their own part of the same run. (Every
//! run that starts a stack costs `HEALTH_TIMEOUT`: see `known_issues`.)

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

use crate::util::{Leftovers, Output, PASSING, Scratch, http_get};

/// The filter of [`failing`]: one failing case, three passing, two ignored (one for the
/// missing sink, one for a known LiteLLM gap); the rest of smoke:: is skipped.
pub const MIXED: &[&str] = &[
    "smoke::",
    "--skip",
    "auth",
    "--skip",
    "streaming",
    "--skip",
    "readiness",
    "--skip",
    "charset",
];

/// A finished run of the fixture stack and what it left.
pub struct Finished {
    pub out: Output,
    /// summary.json and junit.xml, if written.
    pub summary: Option<Value>,
    pub junit: Option<String>,
    /// The fixture's router was spawned.
    pub router_started: bool,
    /// The run's private folders seen while the stack was up (interrupted run only).
    pub private_while_running: Vec<String>,
    pub leftovers: Leftovers,
    /// `--list` with the same filter, and without a filter (the count).
    pub listed: Vec<String>,
    pub all: usize,
    /// The files of `summary.logs` that exist.
    pub logs_found: Vec<PathBuf>,
    pub artifacts: PathBuf,
}

impl Finished {
    pub fn summary(&self) -> &Value {
        self.summary
            .as_ref()
            .unwrap_or_else(|| panic!("no summary.json\n{}", self.out.show()))
    }
    pub fn junit(&self) -> &str {
        self.junit
            .as_deref()
            .unwrap_or_else(|| panic!("no junit.xml\n{}", self.out.show()))
    }
}

fn finish(s: &Scratch, filter: &[&str], out: Output, private_while_running: Vec<String>) -> Finished {
    let leftovers = s.leftovers(out.pid);
    let read = |name: &str| std::fs::read_to_string(s.artifacts().join(name)).ok();
    let summary: Option<Value> = read("summary.json").map(|t| serde_json::from_str(&t).expect("summary.json is JSON"));
    let logs_found = summary
        .as_ref()
        .and_then(|v| v["logs"].as_array())
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(PathBuf::from)
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    Finished {
        junit: read("junit.xml"),
        summary,
        router_started: s.started("router").is_some(),
        private_while_running,
        leftovers,
        listed: s.gauntlet().args(filter).args(&["--list"]).run().listed(),
        all: s.gauntlet().args(&["--list"]).run().listed().len(),
        logs_found,
        artifacts: s.artifacts(),
        out,
    }
}

/// [`PASSING`]: three cases that pass against the simulator.
pub fn passing() -> &'static Finished {
    static RUN: OnceLock<Finished> = OnceLock::new();
    RUN.get_or_init(|| {
        let s = Scratch::new("scenario-passing");
        s.stack("sim-router.toml");
        let out = s.gauntlet().args(PASSING).run();
        finish(&s, PASSING, out, vec![])
    })
}

/// [`MIXED`]: `util::FAILING` fails, three pass, two are ignored.
pub fn failing() -> &'static Finished {
    static RUN: OnceLock<Finished> = OnceLock::new();
    RUN.get_or_init(|| {
        let s = Scratch::new("scenario-failing");
        s.stack("sim-router.toml");
        let out = s.gauntlet().args(MIXED).run();
        finish(&s, MIXED, out, vec![])
    })
}

/// A chat completion case whose request the simulator never answers, and SIGINT sent to
/// gauntlet once that request is in the simulator's journal (the case is running).
pub fn interrupted() -> &'static Finished {
    static RUN: OnceLock<Finished> = OnceLock::new();
    const FILTER: &[&str] = &["--exact", "smoke::chat_completion::default"];
    RUN.get_or_init(|| {
        let s = Scratch::new("scenario-interrupted");
        s.stack_with(
            "sim-router.toml",
            &[(
                "@SIM_ARGS@",
                &format!("--config '{}'", s.path("sim-hang.yaml").display()),
            )],
        );
        let mut run = s.gauntlet().args(FILTER).spawn();
        let port = s.wait_service_up(&mut run, "router");
        run.wait_for("the case's request in the router's journal (outcome hang)", || {
            http_get(port, "/admin/journal?deployment=default")
                .is_some_and(|(status, body)| status == 200 && body.contains("\"hang\""))
        });
        let private = s.private_dirs(run.pid());
        run.signal(libc::SIGINT);
        let out = run.wait();
        finish(&s, FILTER, out, private)
    })
}
