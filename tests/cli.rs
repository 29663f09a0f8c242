//! The `gauntlet` command line, run as the built binary: every command line README.md
//! documents (read from the README's ```sh blocks at test time, so a newly documented line is
//! tested without touching this file) must reach the right place — a subcommand's own help for
//! `gauntlet <sub> ... --help`, libtest's listing for `gauntlet <libtest args> --list` — and never
//! "unexpected argument". Then the dispatcher's edges one by one: a subcommand missing its
//! required argument, `--help`/`--version`/`help`, `gauntlet test --help`, a filter that is no
//! subcommand, a mistyped subcommand, and `gauntlet mirror` on a real file.
//!
//! Nothing here starts a stack or needs redis-server or Python: subcommand lines get `--help`,
//! libtest lines `--list`, and each run has its own scratch folder (its working directory and
//! `GAUNTLET_ARTIFACTS`) that is checked to stay empty.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_gauntlet");

/// Environment that would point a run at another stack, router or config.
const CLEARED_ENV: &[&str] = &[
    "GAUNTLET_STACK",
    "ROUTER_URL",
    "ROUTER_API_KEY",
    "GAUNTLET_MANIFEST",
    "GAUNTLET_ROUTER_CONFIG",
    "GAUNTLET_REQUIRE",
    "NEXTEST_RUN_ID",
    "RUST_BACKTRACE",
];

/// A help or listing answers in well under a second; anything slower started something.
const TIMEOUT: Duration = Duration::from_secs(60);

/// An empty folder for one test, under cargo's target/tmp.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cli").join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

struct Run {
    argv: Vec<String>,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn show(&self) -> String {
        format!(
            "`gauntlet {}` exited {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.argv.join(" "),
            self.code,
            self.stdout,
            self.stderr
        )
    }

    fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "{}", self.show());
        self
    }

    fn assert_stdout_has(&self, needle: &str) -> &Self {
        assert!(self.stdout.contains(needle), "stdout lacks {needle:?}: {}", self.show());
        self
    }

    fn assert_stderr_has(&self, needle: &str) -> &Self {
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}: {}", self.show());
        self
    }

    fn assert_not_anywhere(&self, needle: &str) -> &Self {
        assert!(
            !self.stdout.contains(needle) && !self.stderr.contains(needle),
            "output has {needle:?}: {}",
            self.show()
        );
        self
    }

    /// The listed case names; every stdout line must be libtest's `name: test`.
    fn listed(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.strip_suffix(": test")
                    .or_else(|| l.strip_suffix(": bench"))
                    .unwrap_or_else(|| panic!("not a libtest listing line: {l:?}\n{}", self.show()))
            })
            .collect()
    }
}

/// Runs the binary in `dir` with its artifacts going to `dir/artifacts`; output goes through
/// files so a run that hangs can be killed.
fn gauntlet<S: AsRef<str>>(dir: &Path, args: &[S]) -> Run {
    let argv: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    let io = dir.join(".io");
    fs::create_dir_all(&io).unwrap();
    let (out_path, err_path) = (io.join("stdout"), io.join("stderr"));
    let mut cmd = Command::new(BIN);
    cmd.args(&argv)
        .current_dir(dir)
        .env("GAUNTLET_ARTIFACTS", dir.join("artifacts"))
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).unwrap())
        .stderr(fs::File::create(&err_path).unwrap());
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`gauntlet {}` still running after {TIMEOUT:?}", argv.join(" "));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let run = Run {
        argv,
        code: status.code(),
        stdout: fs::read_to_string(&out_path).unwrap(),
        stderr: fs::read_to_string(&err_path).unwrap(),
    };
    fs::remove_dir_all(&io).unwrap();
    run
}

/// Everything in a scratch folder.
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p.clone());
            }
            found.push(p);
        }
    }
    found
}

/// `run` left nothing in its (so far empty) scratch folder: no artifacts, no stack state, no
/// logs; and said nothing about starting a stack.
fn assert_started_nothing(dir: &Path, run: &Run) {
    let left = leftovers(dir);
    assert!(left.is_empty(), "the run wrote {left:?}: {}", run.show());
    run.assert_not_anywhere("starting the stack");
}

/// `(name, about)` of each entry under "Commands:" in a clap help text.
fn commands(help: &str) -> Vec<(String, String)> {
    help.lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| {
            let l = l.trim();
            let (name, about) = l.split_once(char::is_whitespace)?;
            let about = about.trim();
            let about = about.split(" [aliases: ").next().unwrap_or(about);
            Some((name.trim_end_matches(',').to_owned(), about.trim().to_owned()))
        })
        .collect()
}

/// A command line from the README: the line itself, and the words after `gauntlet`.
struct Documented {
    line: String,
    args: Vec<String>,
}

/// Every line of a ```sh block in README.md that runs `gauntlet`, possibly after `VAR=value`
/// assignments; comments dropped. The assignments are not applied: they name files a previous
/// line would have written (`GAUNTLET_MANIFEST=target/gauntlet/mirror/gauntlet.toml gauntlet`),
/// and what is checked here is how the arguments are dispatched.
fn documented_lines() -> Vec<Documented> {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut in_sh = false;
    let mut found = Vec::new();
    for line in readme.lines() {
        let t = line.trim();
        if let Some(lang) = t.strip_prefix("```") {
            in_sh = !in_sh && matches!(lang.trim(), "sh" | "bash" | "shell" | "console");
            continue;
        }
        if !in_sh {
            continue;
        }
        let code = match t.find('#') {
            Some(0) => "",
            Some(i) if t[..i].ends_with(char::is_whitespace) => &t[..i],
            _ => t,
        };
        let mut words = code.split_whitespace().skip_while(|w| is_assignment(w));
        if words.next() != Some("gauntlet") {
            continue;
        }
        let args: Vec<String> = words.map(str::to_owned).collect();
        assert!(
            args.iter()
                .all(|a| !a.contains(['"', '\'', '$', '`', '|', ';', '&', '<', '>'])),
            "README line {t:?}: quoting and shell syntax are not understood by this test"
        );
        found.push(Documented {
            line: t.to_owned(),
            args,
        });
    }
    found
}

fn is_assignment(word: &str) -> bool {
    word.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// The subcommand path `args` starts with (`["bench", "sim"]`), with its `about` as its
/// parent's help lists it; empty when `args` are libtest arguments.
fn subcommand_path(dir: &Path, top_help: &str, args: &[String]) -> (Vec<String>, String) {
    let mut path: Vec<String> = Vec::new();
    let mut about = String::new();
    let mut listed = commands(top_help);
    while let Some(word) = args.get(path.len()) {
        let Some((name, a)) = listed.iter().find(|(n, _)| n == word) else {
            break;
        };
        path.push(name.clone());
        about = a.clone();
        if name == "help" {
            break;
        }
        let help = gauntlet(dir, &[path.clone(), vec!["--help".into()]].concat());
        help.assert_code(0);
        listed = commands(&help.stdout);
    }
    (path, about)
}

fn top_help(dir: &Path) -> String {
    let run = gauntlet(dir, &["--help"]);
    run.assert_code(0);
    assert!(!commands(&run.stdout).is_empty(), "no commands in {}", run.show());
    run.stdout
}

/// Checks one command line: a subcommand's gets `--help` appended and must show that
/// subcommand's help; libtest arguments get `--list` and must list cases.
fn check_line(dir: &Path, top: &str, args: &[String]) -> Result<(), String> {
    let (path, about) = subcommand_path(dir, top, args);
    if path.is_empty() {
        let mut argv = args.to_vec();
        if !argv.iter().any(|a| a == "--list") {
            argv.push("--list".into());
        }
        let run = gauntlet(dir, &argv);
        let ok = run.code == Some(0)
            && !run.stderr.contains("unexpected argument")
            && run
                .stdout
                .lines()
                .all(|l| l.ends_with(": test") || l.ends_with(": bench"))
            && !run.stdout.trim().is_empty();
        return if ok {
            Ok(())
        } else {
            Err(format!(
                "as libtest arguments, expected a non-empty listing:\n{}",
                run.show()
            ))
        };
    }
    let mut argv = args.to_vec();
    argv.push("--help".into());
    let run = gauntlet(dir, &argv);
    let usage = format!("Usage: gauntlet {}", path.join(" "));
    let ok = run.code == Some(0)
        && run.stdout.contains(&about)
        && run.stdout.contains(&usage)
        && !run.stdout.contains("unexpected argument")
        && !run.stderr.contains("unexpected argument");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "expected `{}`'s help (exit 0, {about:?}, {usage:?}):\n{}",
            path.join(" "),
            run.show()
        ))
    }
}

#[test]
fn every_readme_command_line_reaches_its_subcommand_or_the_suites() {
    let dir = scratch("readme");
    let lines = documented_lines();
    assert!(
        lines.len() >= 5,
        "found only {} gauntlet lines in README.md",
        lines.len()
    );
    let top = top_help(&dir);
    let subs: Vec<String> = commands(&top).into_iter().map(|(n, _)| n).collect();
    assert!(
        lines.iter().any(|d| d.args.first().is_some_and(|a| subs.contains(a))),
        "no README line uses a subcommand; is the extraction broken?"
    );
    assert!(
        lines.iter().any(|d| d.args.first().is_none_or(|a| !subs.contains(a))),
        "no README line passes libtest arguments; is the extraction broken?"
    );
    let failures: Vec<String> = lines
        .iter()
        .filter_map(|d| {
            check_line(&dir, &top, &d.args)
                .err()
                .map(|e| format!("README: {}\n{e}", d.line))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_started_nothing(&dir, &gauntlet(&dir, &["--list"]));
}

#[test]
fn every_subcommand_answers_help_with_its_own() {
    let dir = scratch("every-subcommand");
    let top = top_help(&dir);
    let mut todo: Vec<Vec<String>> = commands(&top)
        .into_iter()
        .map(|(n, _)| vec![n])
        .filter(|p| p[0] != "help")
        .collect();
    let mut failures = Vec::new();
    let mut seen = 0;
    while let Some(path) = todo.pop() {
        seen += 1;
        if let Err(e) = check_line(&dir, &top, &path) {
            failures.push(e);
        }
        let help = gauntlet(&dir, &[path.clone(), vec!["--help".into()]].concat());
        for (sub, _) in commands(&help.stdout).into_iter().filter(|(n, _)| n != "help") {
            todo.push([path.clone(), vec![sub]].concat());
        }
    }
    assert!(seen >= 7, "only {seen} subcommands found");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert_started_nothing(&dir, &gauntlet(&dir, &["--version"]));
}

#[test]
fn mirror_without_config_is_a_usage_error() {
    let dir = scratch("mirror-no-args");
    let run = gauntlet(&dir, &["mirror"]);
    run.assert_code(2)
        .assert_stderr_has("required arguments were not provided")
        .assert_stderr_has("<CONFIG>")
        .assert_stderr_has("Usage: gauntlet mirror")
        .assert_not_anywhere("running 0 tests");
    assert_started_nothing(&dir, &run);
}

#[test]
fn mirror_help_is_mirrors() {
    let dir = scratch("mirror-help");
    let run = gauntlet(&dir, &["mirror", "--help"]);
    run.assert_code(0)
        .assert_stdout_has("Usage: gauntlet mirror")
        .assert_stdout_has("<CONFIG>")
        .assert_stdout_has("--out");
    assert_started_nothing(&dir, &run);
}

#[test]
fn mirror_writes_a_stack_from_a_litellm_config() {
    let dir = scratch("mirror-file");
    fs::write(
        dir.join("litellm.yaml"),
        "model_list:\n  - model_name: chat\n    litellm_params:\n      model: openai/x\n    model_info:\n      id: chat-1\n",
    )
    .unwrap();
    let out = dir.join("out");
    let run = gauntlet(&dir, &["mirror", "litellm.yaml", "--out", out.to_str().unwrap()]);
    run.assert_code(0);
    for file in ["gauntlet.toml", "router.yaml"] {
        assert!(
            out.join(file).is_file(),
            "no {file} in {}: {}",
            out.display(),
            run.show()
        );
    }
}

#[test]
fn list_lists_the_cases_and_starts_nothing() {
    let dir = scratch("list");
    let run = gauntlet(&dir, &["--list"]);
    run.assert_code(0);
    let cases = run.listed();
    assert!(
        cases.iter().any(|c| c.starts_with("smoke::")),
        "no smoke:: case: {}",
        run.show()
    );
    assert_started_nothing(&dir, &run);

    let smoke = gauntlet(&dir, &["smoke::", "--list"]);
    smoke.assert_code(0);
    let only = smoke.listed();
    assert!(!only.is_empty() && only.len() < cases.len(), "{}", smoke.show());
    assert!(only.iter().all(|c| c.contains("smoke::")), "{}", smoke.show());
    assert_started_nothing(&dir, &smoke);
}

/// A word that is no subcommand is a test filter, as in libtest: listing with it selects
/// nothing and succeeds. An unknown flag is a usage error.
#[test]
fn unknown_word_is_a_filter_and_unknown_flag_a_usage_error() {
    let dir = scratch("unknown");
    let run = gauntlet(&dir, &["nosuchflag", "--list"]);
    run.assert_code(0);
    assert!(run.listed().is_empty(), "{}", run.show());
    run.assert_not_anywhere("did you mean");
    assert_started_nothing(&dir, &run);

    let run = gauntlet(&dir, &["--nosuchflag", "--list"]);
    run.assert_code(2)
        .assert_stderr_has("unexpected argument '--nosuchflag'")
        .assert_stderr_has("Usage: gauntlet");
    assert_started_nothing(&dir, &run);
}

#[test]
fn mistyped_subcommand_gets_a_note() {
    let dir = scratch("typo");
    let run = gauntlet(&dir, &["mirorr", "--list"]);
    run.assert_code(0).assert_stderr_has("did you mean `gauntlet mirror`");
    assert!(run.listed().is_empty(), "{}", run.show());
    assert_started_nothing(&dir, &run);
}

#[test]
fn version_and_help_flags() {
    let dir = scratch("version-help");
    let version = format!("gauntlet {}", env!("CARGO_PKG_VERSION"));
    for flag in ["--version", "-V"] {
        gauntlet(&dir, &[flag]).assert_code(0).assert_stdout_has(&version);
    }
    for argv in [&["--help"][..], &["-h"], &["help"]] {
        gauntlet(&dir, argv)
            .assert_code(0)
            .assert_stdout_has("Usage: gauntlet <COMMAND>")
            .assert_stdout_has("Commands:")
            .assert_stdout_has("gauntlet test --help");
    }
    gauntlet(&dir, &["help", "mirror"])
        .assert_code(0)
        .assert_stdout_has("Usage: gauntlet mirror");
    assert_started_nothing(&dir, &gauntlet(&dir, &["-V"]));
}

/// `gauntlet test --help` is libtest's help under gauntlet's name; nothing is started.
#[test]
fn test_help_is_libtest_help() {
    let dir = scratch("test-help");
    for flag in ["--help", "-h"] {
        let run = gauntlet(&dir, &["test", flag]);
        run.assert_code(0)
            .assert_stdout_has("Run the suites")
            .assert_stdout_has("Usage: gauntlet test [OPTIONS] [FILTER]")
            .assert_stdout_has("--test-threads")
            .assert_stdout_has("--list")
            .assert_not_anywhere("test result:");
        assert_started_nothing(&dir, &run);
    }
    let run = gauntlet(&dir, &["smoke::", "--help"]);
    run.assert_code(0)
        .assert_stdout_has("Usage: gauntlet [OPTIONS] [FILTER]")
        .assert_stdout_has("--test-threads");
    assert_started_nothing(&dir, &run);
}

#[test]
fn bench_sim_help_is_bench_sims() {
    let dir = scratch("bench-sim-help");
    let run = gauntlet(&dir, &["bench", "sim", "--help"]);
    run.assert_code(0)
        .assert_stdout_has("Usage: gauntlet bench sim")
        .assert_stdout_has("--seconds");
    assert_started_nothing(&dir, &run);
}
