//! Helpers every topic of the runner tests shares: a scratch folder per test, the fixture
//! stacks of tests/fixtures/stacks/ written into it, the built `gauntlet` run with a bounded
//! wait (killed when it overruns), its reports read back, and the processes a run started
//! looked for afterwards.
//!
//! # The fixture stacks
//!
//! The manifests in tests/fixtures/stacks/ are templates; [`Scratch::stack`] copies one into
//! the scratch folder as `gauntlet.toml` (with every router config and simulator config beside
//! it) and fills in these markers — gauntlet's own `${...}` placeholders are left to gauntlet:
//!
//! | marker | becomes |
//! |---|---|
//! | `@GAUNTLET@` | the built binary, [`BIN`] |
//! | `@DIR@` | the scratch folder |
//! | `@TOKEN@` | a word unique to the test ([`Scratch::token`]): every process a fixture starts carries it on its command line |
//! | `@SIM_ARGS@` | extra `gauntlet sim` arguments (empty unless the test gives some) |
//!
//! Every service is `/bin/sh -c 'trap wait TERM; ...; <gauntlet> sim ... & wait'`: the
//! simulator is a *grandchild* of gauntlet, so it stops only if gauntlet kills the service's
//! whole process group (the kernel's `PR_SET_PDEATHSIG` reaches the shell only, and the shell
//! answers SIGTERM by waiting for the simulator). That trap also makes the shell reap its
//! simulator instead of orphaning it: gauntlet's teardown waits until its process group has no
//! member left, unreaped zombies included, and an orphan is reaped by PID 1 — on the VM these
//! tests were written on, about 2 s later. Before starting the simulator the shell writes
//! `<service>.started` (`<pgid> <port>`) into the scratch folder: proof that the service was
//! spawned, where it listens and which process group it leads.
//!
//! # What a run sees
//!
//! The environment is cleared; a run gets only `PATH` (an empty folder: no redis-server, no
//! Python, no LiteLLM), `HOME`, `TMPDIR` (`<scratch>/tmp`, so gauntlet's private folder
//! `gauntlet-<pid>-…` lands where the test can look for it), `GAUNTLET_MANIFEST`
//! (`<scratch>/gauntlet.toml`), `GAUNTLET_ARTIFACTS` (`<scratch>/artifacts`) and
//! `HEALTH_TIMEOUT`, plus what the test adds. So `ROUTER_URL`, `GAUNTLET_STACK` and
//! `GAUNTLET_REQUIRE` are unset unless a test sets them.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_gauntlet");

/// `HEALTH_TIMEOUT` for every run. The simulator is healthy within milliseconds, but the
/// runner also polls the router's `/health/readiness` (which the simulator does not serve)
/// for this long before the cases start, so it is kept short.
pub const HEALTH_TIMEOUT_S: &str = "2";

/// How long one gauntlet run may take before it is killed and the test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// How long, after gauntlet exited, what it started may take to be gone.
pub const TEARDOWN_GRACE: Duration = Duration::from_secs(2);

/// How often a bounded wait polls.
const POLL: Duration = Duration::from_millis(20);

/// The cases that pass against the simulator as router: a chat completion for the one group,
/// the response format, and `/v1/models` (the simulator lists `default`, the group's name).
pub const PASSING: &[&str] = &[
    "smoke::",
    "--skip",
    "health",
    "--skip",
    "auth",
    "--skip",
    "streaming",
    "--skip",
    "metadata",
    "--skip",
    "charset",
];
/// Their names.
pub const PASSING_NAMES: &[&str] = &[
    "smoke::chat_completion::default",
    "smoke::models::lists_every_group",
    "smoke::response_format",
];

/// A case that fails against the simulator: it asks for `/health/liveliness`, which the
/// simulator answers 404.
pub const FAILING: &str = "smoke::health::liveness";
/// What its failure message says.
pub const FAILING_SAYS: &str = "/health/liveliness answered 404";

/// A case gated on a service the fixture stack lacks (the ledger sink).
pub const NEEDS_SINK: &str = "smoke::metadata::logged_by_router";

/// A scratch folder for one test, and the word that marks every process it starts.
pub struct Scratch {
    root: PathBuf,
    token: String,
    runs: AtomicUsize,
}

impl Scratch {
    /// An empty folder `target/tmp/runner/<name>` (removed again when the test passes).
    pub fn new(name: &str) -> Self {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("runner").join(name);
        let _ = fs::remove_dir_all(&root);
        for sub in ["tmp", "empty-path", "home", ".io"] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        Self {
            token: format!("gauntlet-runner-test-{name}-{}", std::process::id()),
            root,
            runs: AtomicUsize::new(0),
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn token(&self) -> &str {
        &self.token
    }
    pub fn artifacts(&self) -> PathBuf {
        self.path("artifacts")
    }
    /// The `TMPDIR` of every run.
    pub fn tmp(&self) -> PathBuf {
        self.path("tmp")
    }

    /// Writes fixture `manifest` as the stack runs use, with the simulator's extra arguments
    /// empty; see [`Self::stack_with`].
    pub fn stack(&self, manifest: &str) -> PathBuf {
        self.stack_with(manifest, &[])
    }

    /// Writes fixture `manifest` as `<scratch>/gauntlet.toml` and every fixture `.yaml` beside
    /// it, markers filled in (`extra` adds or overrides markers, e.g. `("@SIM_ARGS@", "...")`).
    pub fn stack_with(&self, manifest: &str, extra: &[(&str, &str)]) -> PathBuf {
        let dir = fixtures();
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                let name = p.file_name().unwrap().to_str().unwrap().to_owned();
                fs::write(self.path(&name), self.fill(&p, extra)).unwrap();
            }
        }
        let out = self.path("gauntlet.toml");
        fs::write(&out, self.fill(&dir.join(manifest), extra)).unwrap();
        out
    }

    fn fill(&self, template: &Path, extra: &[(&str, &str)]) -> String {
        let mut text = fs::read_to_string(template).unwrap_or_else(|e| panic!("{}: {e}", template.display()));
        for (k, v) in extra {
            text = text.replace(k, v);
        }
        let root = self.root.display().to_string();
        for (k, v) in [
            ("@GAUNTLET@", BIN),
            ("@DIR@", &root),
            ("@TOKEN@", &self.token),
            ("@SIM_ARGS@", ""),
        ] {
            text = text.replace(k, v);
        }
        let left: Vec<&str> = text
            .split('@')
            .skip(1)
            .step_by(2)
            .filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .collect();
        assert!(left.is_empty(), "{}: unknown markers {left:?}", template.display());
        text
    }

    /// `gauntlet` with this scratch folder's environment (see the module docs).
    pub fn gauntlet(&self) -> Cmd<'_> {
        Cmd {
            s: self,
            args: Vec::new(),
            env: Vec::new(),
            timeout: RUN_TIMEOUT,
        }
    }

    /// `(pgid, port)` from `<service>.started`, if the service was spawned.
    pub fn started(&self, service: &str) -> Option<(i32, u16)> {
        let text = fs::read_to_string(self.path(&format!("{service}.started"))).ok()?;
        let mut words = text.split_whitespace();
        let pgid = words.next()?.parse().ok()?;
        let port = words.next()?.parse().ok()?;
        Some((pgid, port))
    }

    /// Waits (bounded) until `service` of the running gauntlet was spawned and answers
    /// `GET /health`; returns its port. Fails at once if gauntlet exits first.
    pub fn wait_service_up(&self, run: &mut Running, service: &str) -> u16 {
        let mut port = 0;
        run.wait_for(&format!("service '{service}' to answer /health"), || {
            match self.started(service) {
                Some((_, p)) if http_get(p, "/health").is_some_and(|(status, _)| status == 200) => {
                    port = p;
                    true
                }
                _ => false,
            }
        });
        port
    }

    /// Processes alive (zombies aside) that a fixture started in this scratch folder: their
    /// command line has the token or the folder's path, or they are in the process group of
    /// a service recorded in a `.started` file. Each as `pid state cmdline`.
    pub fn survivors(&self) -> Vec<String> {
        let groups: Vec<i32> = fs::read_dir(&self.root)
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let service = name.strip_suffix(".started")?.to_owned();
                self.started(&service).map(|(g, _)| g)
            })
            .collect();
        // With the separator: `runner/a` must not match `runner/a-b/...` of another test.
        let root = format!("{}/", self.root.display());
        let me = std::process::id();
        let mut found = Vec::new();
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me {
                continue;
            }
            let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after the last ')'.
            let after: Vec<&str> = stat
                .rsplit_once(')')
                .map_or("", |(_, r)| r)
                .split_whitespace()
                .collect();
            let (state, pgrp) = (
                after.first().copied().unwrap_or("?"),
                after.get(2).and_then(|g| g.parse::<i32>().ok()),
            );
            if state == "Z" || state == "X" {
                continue;
            }
            let cmdline = fs::read(e.path().join("cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            let ours =
                cmdline.contains(&self.token) || cmdline.contains(&root) || pgrp.is_some_and(|g| groups.contains(&g));
            if ours {
                found.push(format!("{pid} {state} {}", cmdline.trim()));
            }
        }
        found
    }

    /// Everything the run `out` started is gone: no survivor (after [`TEARDOWN_GRACE`]) and
    /// no private folder `gauntlet-<pid>-…` of that gauntlet process under `TMPDIR`.
    pub fn assert_torn_down(&self, out: &Output) {
        self.assert_torn_down_pid(out.pid, &out.show());
    }

    /// Same, for the gauntlet process `pid` (a detached stack's supervisor, say).
    pub fn assert_torn_down_pid(&self, pid: u32, context: &str) {
        self.leftovers(pid).assert_none(context);
    }

    /// What the gauntlet process `pid` left once it exited: processes still running after
    /// [`TEARDOWN_GRACE`] (polled, so a dying process gets its moment) and its private folder.
    pub fn leftovers(&self, pid: u32) -> Leftovers {
        let deadline = Instant::now() + TEARDOWN_GRACE;
        let mut processes = self.survivors();
        while !processes.is_empty() && Instant::now() < deadline {
            std::thread::sleep(POLL);
            processes = self.survivors();
        }
        Leftovers {
            pid,
            processes,
            private: self.private_dirs(pid),
            tmp: self.tmp(),
        }
    }

    /// `gauntlet-<pid>-…` folders under `TMPDIR`.
    pub fn private_dirs(&self, pid: u32) -> Vec<String> {
        let prefix = format!("gauntlet-{pid}-");
        self.tmp_entries()
            .into_iter()
            .filter(|n| n.starts_with(&prefix))
            .collect()
    }

    /// Names of everything directly under `TMPDIR`.
    pub fn tmp_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.tmp())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// `summary.json` of the last run.
    pub fn summary(&self) -> Value {
        let p = self.artifacts().join("summary.json");
        let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", p.display()))
    }

    /// `junit.xml` of the last run.
    pub fn junit(&self) -> String {
        let p = self.artifacts().join("junit.xml");
        fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// Every file under `dir`, recursively.
    pub fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            let Ok(rd) = fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    todo.push(p);
                } else {
                    found.push(p);
                }
            }
        }
        found.sort();
        found
    }
}

/// What a gauntlet run left behind, see [`Scratch::leftovers`].
#[derive(Debug, Clone)]
pub struct Leftovers {
    pub pid: u32,
    /// `pid state cmdline` of each process of the fixture still running.
    pub processes: Vec<String>,
    /// Its `gauntlet-<pid>-…` folders under TMPDIR.
    pub private: Vec<String>,
    tmp: PathBuf,
}

impl Leftovers {
    pub fn assert_none(&self, context: &str) {
        let pid = self.pid;
        assert!(
            self.processes.is_empty(),
            "still running {TEARDOWN_GRACE:?} after gauntlet (pid {pid}) exited:\n  {}\n{context}",
            self.processes.join("\n  ")
        );
        assert!(
            self.private.is_empty(),
            "gauntlet (pid {pid}) left its private folder {:?} in {}\n{context}",
            self.private,
            self.tmp.display()
        );
    }
}

impl Drop for Scratch {
    /// Kills whatever a fixture left running (by pid, and only processes whose command line
    /// names this test: a process-group id alone may have been reused), so a failing test does
    /// not leak simulators into the next; keeps the folder of a failed test for a look.
    fn drop(&mut self) {
        let root = format!("{}/", self.root.display());
        for line in self.survivors() {
            if !line.contains(&self.token) && !line.contains(&root) {
                continue;
            }
            if let Some(pid) = line.split_whitespace().next().and_then(|p| p.parse::<i32>().ok()) {
                // SAFETY: plain signal to a process this test's fixture started.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/stacks")
}

/// A gauntlet command line being put together.
pub struct Cmd<'a> {
    s: &'a Scratch,
    args: Vec<String>,
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl Cmd<'_> {
    pub fn args<S: AsRef<str>>(mut self, args: &[S]) -> Self {
        self.args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }
    pub fn env(mut self, k: &str, v: impl AsRef<str>) -> Self {
        self.env.push((k.to_owned(), v.as_ref().to_owned()));
        self
    }
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    pub fn spawn(self) -> Running {
        let n = self.s.runs.fetch_add(1, Ordering::SeqCst);
        let (out_path, err_path) = (
            self.s.path(&format!(".io/{n}.stdout")),
            self.s.path(&format!(".io/{n}.stderr")),
        );
        let mut cmd = Command::new(BIN);
        cmd.args(&self.args)
            .current_dir(self.s.root())
            .env_clear()
            .env("PATH", self.s.path("empty-path"))
            .env("HOME", self.s.path("home"))
            .env("TMPDIR", self.s.tmp())
            .env("GAUNTLET_MANIFEST", self.s.path("gauntlet.toml"))
            .env("GAUNTLET_ARTIFACTS", self.s.artifacts())
            .env("HEALTH_TIMEOUT", HEALTH_TIMEOUT_S)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap());
        let child = cmd.spawn().unwrap();
        Running {
            argv: self.args,
            env: self.env,
            child: Some(child),
            started: Instant::now(),
            timeout: self.timeout,
            out_path,
            err_path,
        }
    }

    /// Spawns and waits (bounded).
    pub fn run(self) -> Output {
        self.spawn().wait()
    }
}

/// A gauntlet process running.
pub struct Running {
    argv: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    started: Instant,
    timeout: Duration,
    out_path: PathBuf,
    err_path: PathBuf,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `sig` to the gauntlet process (not to its services).
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain signal to our own child, which has not been reaped (we hold it).
        let r = unsafe { libc::kill(self.pid() as i32, sig) };
        assert_eq!(r, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// Polls `ready` until it holds, failing if gauntlet exits first or the run's time is up.
    pub fn wait_for(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        loop {
            if ready() {
                return;
            }
            let status = self.child.as_mut().expect("running").try_wait().unwrap();
            if let Some(status) = status {
                let out = self.collect(status);
                panic!("gauntlet exited while waiting for {what}\n{}", out.show());
            }
            if self.started.elapsed() > self.timeout {
                let out = self.kill();
                panic!("no {what} within {:?}\n{}", self.timeout, out.show());
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits for gauntlet to exit; kills it (and fails) once the run's time is up.
    pub fn wait(mut self) -> Output {
        loop {
            let status = self.child.as_mut().expect("running").try_wait().unwrap();
            if let Some(status) = status {
                return self.collect(status);
            }
            if self.started.elapsed() > self.timeout {
                let out = self.kill();
                panic!(
                    "gauntlet still running after {:?}; killed\n{}",
                    self.timeout,
                    out.show()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// What the process has written to stdout so far.
    pub fn stdout_so_far(&self) -> String {
        fs::read_to_string(&self.out_path).unwrap_or_default()
    }

    fn kill(&mut self) -> Output {
        let child = self.child.as_mut().expect("running");
        let _ = child.kill();
        let status = child.wait().unwrap();
        self.collect(status)
    }

    fn collect(&mut self, status: ExitStatus) -> Output {
        use std::os::unix::process::ExitStatusExt;
        // Reaped already (`status` came from try_wait or wait): only the pid is left to keep.
        let pid = self.pid();
        self.child = None;
        Output {
            argv: self.argv.clone(),
            env: self.env.clone(),
            pid,
            code: status.code(),
            signal: status.signal(),
            took: self.started.elapsed(),
            stdout: fs::read_to_string(&self.out_path).unwrap_or_default(),
            stderr: fs::read_to_string(&self.err_path).unwrap_or_default(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A finished gauntlet run.
#[derive(Debug, Clone)]
pub struct Output {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub pid: u32,
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub took: Duration,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn show(&self) -> String {
        let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(
            "`{} gauntlet {}` (pid {}) exited {:?} (signal {:?}) after {:.1?}\n--- stdout\n{}\n--- stderr\n{}",
            env.join(" "),
            self.argv.join(" "),
            self.pid,
            self.code,
            self.signal,
            self.took,
            self.stdout,
            self.stderr
        )
    }

    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "wrong exit code\n{}", self.show());
        self
    }

    pub fn assert_stderr_has(&self, needle: &str) -> &Self {
        assert!(self.stderr.contains(needle), "stderr lacks {needle:?}\n{}", self.show());
        self
    }

    pub fn assert_stdout_has(&self, needle: &str) -> &Self {
        assert!(self.stdout.contains(needle), "stdout lacks {needle:?}\n{}", self.show());
        self
    }

    /// libtest's line for case `name` says `outcome` (`ok`, `FAILED`, `ignored`); the
    /// names are padded to one width, so the line is `test <name> <spaces>... <outcome>`.
    pub fn assert_outcome(&self, name: &str, outcome: &str) -> &Self {
        let prefix = format!("test {name} ");
        let line = self.stdout.lines().find(|l| l.starts_with(&prefix));
        let seen = line.and_then(|l| l[prefix.len()..].trim_start().strip_prefix("... "));
        assert_eq!(seen, Some(outcome), "libtest's line for {name}\n{}", self.show());
        self
    }

    /// The case names of a `--list` run; every stdout line must be libtest's `name: test`.
    pub fn listed(&self) -> Vec<String> {
        self.stdout
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                l.strip_suffix(": test")
                    .unwrap_or_else(|| panic!("not a listing line: {l:?}\n{}", self.show()))
                    .to_owned()
            })
            .collect()
    }
}

/// `GET path` on `127.0.0.1:port`, every step bounded: `(status, body)`, or `None` when
/// nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// The case called `name` in a summary.
pub fn case<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["cases"]
        .as_array()
        .expect("summary.cases is a list")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name} in summary.json: {summary:#}"))
}

/// One `<testcase>` of a junit.xml.
#[derive(Debug)]
pub struct JunitCase {
    pub name: String,
    pub classname: String,
    /// `<failure message="...">`, unescaped.
    pub failure: Option<String>,
    /// `<skipped>text</skipped>`, unescaped (`Some("")` for a bare `<skipped/>`).
    pub skipped: Option<String>,
}

/// The `<testcase>` elements of a junit.xml, in order. (A scan for the few things checked,
/// not an XML parser: gauntlet writes the file through quick-junit.)
pub fn junit_cases(xml: &str) -> Vec<JunitCase> {
    xml.split("<testcase ")
        .skip(1)
        .map(|chunk| {
            let head_end = chunk.find('>').unwrap_or(chunk.len());
            let head = &chunk[..head_end];
            let body = if head.ends_with('/') {
                ""
            } else {
                chunk[head_end..].split("</testcase>").next().unwrap_or("")
            };
            let failure = body.split_once("<failure ").and_then(|(_, f)| attr(f, "message"));
            let skipped = if body.contains("<skipped/>") {
                Some(String::new())
            } else {
                body.split_once("<skipped>")
                    .and_then(|(_, s)| s.split_once("</skipped>"))
                    .map(|(t, _)| unescape(t))
            };
            JunitCase {
                name: attr(head, "name").unwrap_or_default(),
                classname: attr(head, "classname").unwrap_or_default(),
                failure,
                skipped,
            }
        })
        .collect()
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = format!(" {tag}").find(&key)? + key.len() - 1;
    let rest = &tag[start..];
    rest.find('"').map(|end| unescape(&rest[..end]))
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Every `<prefix><hex…>` (at least 16 hex digits) in `text`: what a generated key looks like.
pub fn keys_like(text: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        let after = &rest[i + prefix.len()..];
        let hex: String = after.chars().take_while(char::is_ascii_hexdigit).collect();
        if hex.len() >= 16 {
            found.push(format!("{prefix}{hex}"));
        }
        rest = after;
    }
    found
}
