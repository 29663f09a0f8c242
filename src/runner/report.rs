//! What a run leaves behind: the terminal summary, `junit.xml`, `summary.json` (schema in
//! docs/reports.md), all in the artifacts folder. libtest-mimic only counts, so every trial
//! is wrapped to record its outcome, duration, message and captured output here.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// Bumped when a field changes meaning or goes away (adding fields keeps the version).
pub const SUMMARY_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Passed,
    Failed,
    Ignored,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaseRecord {
    pub name: String,
    pub suite: String,
    pub status: Status,
    pub duration_s: f64,
    /// Of `duration_s`, the time spent waiting for other cases to let go of its model groups
    /// (`runner::locks`): the rest is what the case itself took (`runner::schedule` reads it).
    #[serde(skip_serializing_if = "is_zero")]
    pub lock_wait_s: f64,
    /// When it started, from the run's start (absent for a case that never ran).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_s: Option<f64>,
    /// What it held to itself while it ran: model groups it broke, `@service:<name>` for a
    /// service it hurt. Cases holding the same thing run one after another.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub output: Vec<String>,
    /// Measurements the case reported (`Ctx::observe`), e.g. the latency a fallback adds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub observations: Vec<Observation>,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

#[derive(Debug, Clone, Serialize)]
pub struct Observation {
    pub name: String,
    pub value: f64,
}

/// What the trial threads report, in one place the reports read: each case's record and
/// the requests it billed.
#[derive(Default)]
pub struct Recorder {
    cases: Mutex<Vec<CaseRecord>>,
    ledger: Mutex<Vec<crate::ledger::book::Entry>>,
}

impl Recorder {
    pub fn push(&self, r: CaseRecord, billed: Vec<crate::ledger::book::Entry>) {
        self.cases.lock().unwrap_or_else(|e| e.into_inner()).push(r);
        self.ledger.lock().unwrap_or_else(|e| e.into_inner()).extend(billed);
    }
    /// Every case record and billed request so far, emptied.
    pub fn take(&self) -> (Vec<CaseRecord>, Vec<crate::ledger::book::Entry>) {
        (
            std::mem::take(&mut *self.cases.lock().unwrap_or_else(|e| e.into_inner())),
            std::mem::take(&mut *self.ledger.lock().unwrap_or_else(|e| e.into_inner())),
        )
    }
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub schema_version: u32,
    pub gauntlet_version: &'static str,
    pub started_at: String,
    pub wall_time_s: f64,
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_version: Option<String>,
    pub stack_digest: String,
    pub boot: Vec<BootTime>,
    pub totals: Totals,
    /// The longest run of cases that had to go one after another: the least the cases could
    /// take, whatever the threads (see [`Chain`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub longest_chain: Option<Chain>,
    pub cases: Vec<CaseRecord>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<PathBuf>,
}

/// Cases that held the same thing to themselves (a model group they broke, a service they
/// hurt) and so ran one after another: their time together bounds the run's from below, so a
/// run much longer than its boot plus its longest chain is waiting on something else.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chain {
    pub holds: String,
    pub cases: usize,
    /// Their own time added up (lock waits left out).
    pub seconds: f64,
}

impl Chain {
    /// The longest chain among `cases` that ran; `None` when no two cases held the same thing.
    pub fn longest(cases: &[CaseRecord]) -> Option<Chain> {
        let mut chains: std::collections::BTreeMap<&str, (usize, f64)> = Default::default();
        for c in cases.iter().filter(|c| c.status != Status::Ignored) {
            for h in &c.holds {
                let e = chains.entry(h.as_str()).or_default();
                e.0 += 1;
                e.1 += (c.duration_s - c.lock_wait_s).max(0.0);
            }
        }
        chains
            .into_iter()
            .filter(|(_, (n, _))| *n > 1)
            .max_by(|a, b| a.1.1.total_cmp(&b.1.1))
            .map(|(h, (n, secs))| Chain {
                holds: h.to_owned(),
                cases: n,
                seconds: secs,
            })
    }
}

#[derive(Debug, Serialize)]
pub struct BootTime {
    pub service: String,
    pub seconds: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub ignored: usize,
    pub filtered_out: u64,
}

impl Summary {
    pub fn totals_of(cases: &[CaseRecord], filtered_out: u64) -> Totals {
        let n = |s| cases.iter().filter(|c| c.status == s).count();
        Totals {
            passed: n(Status::Passed),
            failed: n(Status::Failed),
            ignored: n(Status::Ignored),
            filtered_out,
        }
    }
}

/// Writes `summary.json` and `junit.xml` into `dir`; returns their paths.
pub fn write_files(dir: &Path, s: &Summary) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let json_path = dir.join("summary.json");
    std::fs::write(&json_path, crate::redact::redact(&serde_json::to_string_pretty(s)?))?;
    let junit_path = dir.join("junit.xml");
    std::fs::write(&junit_path, crate::redact::redact(&junit(s)?))?;
    Ok(vec![json_path, junit_path])
}

/// JUnit XML: one testsuite per suite, one testcase per case, failures with their message
/// and the captured output, properties for the router version and stack digest.
pub fn junit(s: &Summary) -> anyhow::Result<String> {
    use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};
    let mut report = Report::new("gauntlet");
    let mut suites: Vec<TestSuite> = Vec::new();
    for c in &s.cases {
        let idx = match suites.iter().position(|t| t.name.as_str() == c.suite) {
            Some(i) => i,
            None => {
                let mut t = TestSuite::new(c.suite.clone());
                t.add_property(Property::new(
                    "router_version",
                    s.router_version.clone().unwrap_or_default(),
                ));
                t.add_property(Property::new("stack_digest", s.stack_digest.clone()));
                t.add_property(Property::new("target", s.target.clone()));
                suites.push(t);
                suites.len() - 1
            }
        };
        let status = match c.status {
            Status::Passed => TestCaseStatus::success(),
            Status::Ignored => {
                let mut st = TestCaseStatus::skipped();
                // As text, not a `message` attribute: Jenkins' junit-10 schema allows none on <skipped>.
                if let Some(m) = &c.message {
                    st.set_description(m.clone());
                }
                st
            }
            Status::Failed => {
                let mut st = TestCaseStatus::non_success(NonSuccessKind::Failure);
                let msg = c.message.clone().unwrap_or_else(|| "failed".into());
                // One line for CI annotations, long enough to say what failed; the whole text follows.
                let line: Vec<&str> = msg.lines().map(str::trim).filter(|l| !l.is_empty()).take(3).collect();
                st.set_message(excerpt_line(&line.join(" ")));
                st.set_description(msg);
                st
            }
        };
        let mut tc = TestCase::new(c.name.clone(), status);
        tc.set_classname(c.suite.clone());
        tc.set_time(Duration::from_secs_f64(c.duration_s));
        if !c.output.is_empty() {
            tc.set_system_out(c.output.join("\n"));
        }
        suites[idx].add_test_case(tc);
    }
    report.add_test_suites(suites);
    report.set_time(Duration::from_secs_f64(s.wall_time_s));
    Ok(strip_root_skipped(&report.to_string()?))
}

fn excerpt_line(s: &str) -> String {
    if s.chars().count() <= 300 {
        s.to_owned()
    } else {
        format!("{}…", s.chars().take(300).collect::<String>())
    }
}

/// quick-junit puts a `skipped` count on <testsuites>, which Jenkins' junit-10 schema (the one
/// GitLab and the GitHub report actions follow) does not allow; the per-suite count stays.
fn strip_root_skipped(xml: &str) -> String {
    let Some(start) = xml.find("<testsuites") else {
        return xml.to_owned();
    };
    let end = start + xml[start..].find('>').unwrap_or(0);
    let head = &xml[start..end];
    match head.find(" skipped=\"") {
        Some(i) => {
            let attr_end = head[i + 10..].find('"').map_or(head.len(), |j| i + 10 + j + 1);
            format!("{}{}{}", &xml[..start + i], &head[attr_end..], &xml[end..])
        }
        None => xml.to_owned(),
    }
}

/// A measurement, readable whether it is 1200 ms or 0.00004 USD.
fn number(v: f64) -> String {
    match v.abs() {
        0.0 => "0".into(),
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 0.1 => format!("{v:.2}"),
        _ => format!("{v:.3e}"),
    }
}

/// The terminal summary: failures first with their first lines, then the slowest cases,
/// totals and wall time, and where the artifacts are.
pub fn print_terminal(s: &Summary, artifacts: &Path, color: bool) {
    let paint = |code: &str, t: &str| {
        if color {
            format!("\x1b[{code}m{t}\x1b[0m")
        } else {
            t.to_owned()
        }
    };
    let mut out = String::new();
    out.push_str("\n── gauntlet summary ──\n");
    let failed: Vec<&CaseRecord> = s.cases.iter().filter(|c| c.status == Status::Failed).collect();
    if !failed.is_empty() {
        out.push_str(&format!("{}\n", paint("1;31", &format!("{} failed:", failed.len()))));
        for c in &failed {
            out.push_str(&format!("  {} ({:.2}s)\n", paint("31", &c.name), c.duration_s));
            let msg = c.message.as_deref().unwrap_or("");
            for l in msg.lines().take(4) {
                out.push_str(&format!("      {l}\n"));
            }
        }
    }
    let ignored: Vec<&CaseRecord> = s
        .cases
        .iter()
        .filter(|c| c.status == Status::Ignored && c.message.is_some())
        .collect();
    if !ignored.is_empty() {
        out.push_str(&format!("{} ignored:\n", ignored.len()));
        for c in ignored.iter().take(10) {
            out.push_str(&format!("  {}: {}\n", c.name, c.message.as_deref().unwrap_or("")));
        }
    }
    let mut ran: Vec<&CaseRecord> = s.cases.iter().filter(|c| c.status != Status::Ignored).collect();
    ran.sort_by(|a, b| b.duration_s.total_cmp(&a.duration_s));
    if !ran.is_empty() {
        out.push_str("slowest:\n");
        for c in ran.iter().take(5) {
            out.push_str(&format!("  {:>7.2}s  {}\n", c.duration_s, c.name));
        }
    }
    let observed: Vec<&CaseRecord> = s.cases.iter().filter(|c| !c.observations.is_empty()).collect();
    if !observed.is_empty() {
        out.push_str("observations:\n");
        for c in observed {
            let obs: Vec<String> = c
                .observations
                .iter()
                .map(|o| format!("{} {}", o.name, number(o.value)))
                .collect();
            out.push_str(&format!("  {}: {}\n", c.name, obs.join(", ")));
        }
    }
    if !s.boot.is_empty() {
        let boot: Vec<String> = s
            .boot
            .iter()
            .map(|b| format!("{} {:.1}s", b.service, b.seconds))
            .collect();
        out.push_str(&format!("stack ready: {}\n", boot.join(", ")));
    }
    if let Some(c) = &s.longest_chain {
        out.push_str(&format!(
            "longest chain: {} cases holding {} one after another, {:.1}s of the {:.1}s run\n",
            c.cases, c.holds, c.seconds, s.wall_time_s
        ));
    }
    let t = &s.totals;
    let line = format!(
        "{} passed, {} failed, {} ignored, {} filtered out in {:.1}s ({})",
        t.passed, t.failed, t.ignored, t.filtered_out, s.wall_time_s, s.target
    );
    out.push_str(&format!(
        "{}\n",
        if t.failed > 0 {
            paint("1;31", &line)
        } else {
            paint("1;32", &line)
        }
    ));
    out.push_str(&format!("artifacts: {}\n", artifacts.display()));
    if !s.logs.is_empty() {
        out.push_str(&format!("service logs: {}\n", artifacts.join("logs").display()));
    }
    eprint!("{}", crate::redact::redact(&out));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        let case = |name: &str, status, message: Option<&str>| CaseRecord {
            name: name.into(),
            suite: name.split("::").next().unwrap().into(),
            status,
            duration_s: 0.5,
            lock_wait_s: 0.0,
            started_s: None,
            holds: vec![],
            message: message.map(Into::into),
            output: vec!["INFO hello".into()],
            observations: vec![],
        };
        let cases = vec![
            case("smoke::a", Status::Passed, None),
            case("smoke::b", Status::Failed, Some("boom <&>\nline 2")),
            case("fallbacks::c", Status::Ignored, Some("needs sim")),
        ];
        Summary {
            schema_version: SUMMARY_SCHEMA_VERSION,
            gauntlet_version: "0",
            started_at: "now".into(),
            wall_time_s: 1.0,
            target: "embedded".into(),
            router_version: Some("1.100.5".into()),
            stack_digest: "abc".into(),
            boot: vec![],
            totals: Summary::totals_of(&cases, 0),
            longest_chain: None,
            cases,
            logs: vec![],
        }
    }

    #[test]
    fn the_longest_chain_adds_up_the_own_time_of_the_cases_holding_one_thing() {
        let case = |name: &str, holds: &[&str], d: f64, wait: f64, status| CaseRecord {
            name: name.into(),
            suite: "s".into(),
            status,
            duration_s: d,
            lock_wait_s: wait,
            started_s: None,
            holds: holds.iter().map(|h| h.to_string()).collect(),
            message: None,
            output: vec![],
            observations: vec![],
        };
        let cases = vec![
            case("a", &["g1"], 5.0, 0.0, Status::Passed),
            case("b", &["g1", "@service:x"], 4.0, 3.0, Status::Failed),
            case("c", &["g2"], 9.0, 0.0, Status::Passed),
            case("d", &["@service:x"], 2.0, 0.0, Status::Passed),
            case("e", &["g2"], 0.0, 0.0, Status::Ignored),
        ];
        // g1: 5 + (4-3); g2 is one case that ran (no chain); @service:x: 1 + 2.
        assert_eq!(
            Chain::longest(&cases),
            Some(Chain {
                holds: "g1".into(),
                cases: 2,
                seconds: 6.0
            })
        );
        assert_eq!(Chain::longest(&cases[2..3]), None);
    }

    #[test]
    fn junit_has_one_testcase_per_case_and_the_failure_message() {
        let xml = junit(&summary()).unwrap();
        assert_eq!(xml.matches("<testcase ").count(), 3, "{xml}");
        assert_eq!(xml.matches("<testsuite ").count(), 2, "{xml}");
        assert!(xml.contains("boom &lt;&amp;&gt;"), "{xml}");
        assert!(xml.contains("<skipped>needs sim</skipped>"), "{xml}");
        let root = xml.lines().find(|l| l.contains("<testsuites")).unwrap();
        assert!(!root.contains("skipped="), "{root}");
        assert!(
            root.contains("tests=\"3\"") && root.contains("failures=\"1\""),
            "{root}"
        );
        assert!(xml.contains("router_version"), "{xml}");
    }

    #[test]
    fn a_planted_secret_never_reaches_the_report_files() {
        let key = "sk-planted-secret-for-report-test-42";
        crate::redact::register(key);
        let mut s = summary();
        s.cases[1].message = Some(format!("router said: invalid key {key}"));
        s.cases[0].output.push(format!("Authorization: Bearer {key}"));
        let dir = std::env::temp_dir().join(format!("gauntlet-report-{}", std::process::id()));
        let files = write_files(&dir, &s).unwrap();
        assert_eq!(files.len(), 2);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(!text.contains(key), "{} holds the planted key", f.display());
            assert!(
                text.contains(crate::redact::MASK),
                "{} lost the redacted line",
                f.display()
            );
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
