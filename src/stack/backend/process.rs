//! Local process backend: each service is a child in its own process group, its output in a
//! log file; the builtins (simulator, ledger sink) run inside this process. Every pgid
//! started is recorded in the run's [`Teardown`] so that teardown — normal, on panic, or from
//! the signal handler — can kill what is left without owning the `Child`.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::net::SocketAddr;

use super::super::endpoints::Endpoint;
use super::super::manifest::Builtin;
use super::super::teardown::{Teardown, stop_group};
use super::{Chaos, Launch, Launched};
use crate::error::RunError;

/// A started service process.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    teardown: Teardown,
}

/// How a start treats the service's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStart {
    /// The first start of this run: a log left by an earlier run is replaced.
    Fresh,
    /// A restart (chaos): what the service said before it is kept, a line marks the restart.
    Restart,
}

/// Starts `argv` with `env`, stdout and stderr written to `log`.
pub fn spawn(
    name: &str,
    argv: &[String],
    env: &[(String, String)],
    log: &Path,
    start: LogStart,
    teardown: &Teardown,
) -> std::io::Result<Proc> {
    let out = match start {
        LogStart::Fresh => File::create(log)?,
        LogStart::Restart => {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().append(true).create(true).open(log)?;
            writeln!(f, "--- gauntlet: {name} restarted ---")?;
            f
        }
    };
    let err = out.try_clone()?;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Own group: a terminal's Ctrl-C reaches only us, and we can kill the service with
        // everything it forked in one killpg.
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; it makes the kernel kill the service if gauntlet
    // dies without running teardown (SIGKILL, OOM), so no orphan outlives us.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    teardown.started(name, child.id() as i32);
    Ok(Proc {
        name: name.to_owned(),
        child,
        log: log.to_owned(),
        teardown: teardown.clone(),
    })
}

impl Proc {
    /// `Some(status)` if the process has already exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM to the group, SIGKILL after a grace period, then reap.
    pub fn stop(&mut self) {
        let pgid = self.child.id() as i32;
        stop_group(pgid);
        let _ = self.child.wait();
        self.teardown.stopped(pgid);
    }
}

/// The last `lines` lines of a log file (for error messages).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    crate::redact::redact(&all[start..].join("\n"))
}

/// Looks a program up on PATH (absolute or relative paths are taken as they are).
pub fn which(program: &str) -> Option<PathBuf> {
    if program.contains('/') {
        let p = PathBuf::from(program);
        return p.is_file().then_some(p);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    })
}

/// A child's argv and environment, as it was started.
#[derive(Clone)]
struct Started {
    argv: Vec<String>,
    env: Vec<(String, String)>,
}

/// The process backend: the children it started, and the builtins it runs in-process.
pub struct Processes {
    procs: Vec<Proc>,
    /// What each child was started with, so `restart` can start it again as it was.
    launches: BTreeMap<String, Started>,
    sim: Option<crate::sim::SimHandle>,
    sink: Option<crate::ledger::sink::SinkHandle>,
    teardown: Teardown,
    /// How the children this backend reaped itself (a chaos kill) ended: `waitid` can no
    /// longer tell.
    reaped: BTreeMap<String, String>,
}

impl Processes {
    pub fn new(teardown: Teardown) -> Self {
        Self {
            procs: Vec::new(),
            launches: BTreeMap::new(),
            sim: None,
            sink: None,
            teardown,
            reaped: Default::default(),
        }
    }

    pub fn launch(&mut self, l: &Launch, log: &Path) -> Result<Launched, RunError> {
        let name = &l.service;
        if which(&l.argv[0]).is_none() {
            return Err(RunError::stack(missing_program(name, &l.argv[0])));
        }
        let proc = spawn(name, &l.argv, &l.env, log, LogStart::Fresh, &self.teardown)
            .map_err(|e| RunError::stack(format!("service '{name}': cannot start {}: {e}", l.argv[0])))?;
        let url = format!("{}://127.0.0.1:{}", l.scheme, l.port);
        let endpoint = Endpoint {
            url: url.clone(),
            host: "127.0.0.1".into(),
            port: l.port,
            pid: Some(proc.child.id()),
            container: None,
        };
        self.launches.insert(
            name.clone(),
            Started {
                argv: l.argv.clone(),
                env: l.env.clone(),
            },
        );
        self.procs.push(proc);
        Ok(Launched {
            internal_url: url,
            endpoint,
            log: Some(log.to_owned()),
        })
    }

    pub async fn builtin(&mut self, kind: Builtin, sim: &crate::sim::SimConfig) -> anyhow::Result<Launched> {
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let url = match kind {
            Builtin::Sim => {
                let h = crate::sim::start(sim.clone(), any).await?;
                let url = h.url();
                self.sim = Some(h);
                url
            }
            Builtin::LedgerSink => {
                let h = crate::ledger::sink::start(any).await?;
                let url = h.url();
                self.sink = Some(h);
                url
            }
        };
        let (host, port) = super::host_port(&url)?;
        Ok(Launched {
            internal_url: url.clone(),
            endpoint: Endpoint {
                url,
                host,
                port,
                pid: None,
                container: None,
            },
            log: None,
        })
    }

    /// How `name` ended ("exit status 7"), if it has.
    pub fn exited(&self, name: &str) -> Option<String> {
        if let Some(how) = self.reaped.get(name) {
            return Some(how.clone());
        }
        let p = self.procs.iter().find(|p| p.name == name)?;
        // waitid with WNOWAIT peeks without reaping, so `Proc::stop` can still wait on it; the
        // health wait holds only shared borrows of the backend.
        // SAFETY: plain syscall on our own child; siginfo is zeroed and only read after success.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(
                libc::P_PID,
                p.child.id(),
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            (r == 0 && info.si_pid() != 0).then(|| describe_end(info.si_code, info.si_status()))
        }
    }

    /// Signals, kill and respawn; a process has no network of its own to leave.
    pub fn chaos(&mut self, name: &str, what: Chaos, log: &Path) -> Result<Option<Endpoint>, RunError> {
        let unsupported = |why: &str| {
            RunError::usage(format!(
                "chaos {what} on '{name}': {why}; GAUNTLET_BACKEND=docker can do it"
            ))
        };
        let Some(i) = self.procs.iter().position(|p| p.name == name) else {
            return Err(unsupported(
                "not a process this run started (builtins run inside gauntlet)",
            ));
        };
        let pgid = self.procs[i].child.id() as i32;
        let signal = |sig| {
            // SAFETY: signalling a group we created.
            unsafe { libc::killpg(pgid, sig) };
        };
        match what {
            Chaos::Pause => signal(libc::SIGSTOP),
            Chaos::Unpause => signal(libc::SIGCONT),
            Chaos::Kill => {
                signal(libc::SIGKILL);
                let how = match self.procs[i].child.wait() {
                    Ok(status) => status.to_string(),
                    Err(e) => format!("killed; not reaped: {e}"),
                };
                self.reaped.insert(name.to_owned(), how);
            }
            Chaos::Restart => {
                let mut old = self.procs.remove(i);
                signal(libc::SIGCONT);
                old.stop();
                let Started { argv, env } = self.launches[name].clone();
                let proc = spawn(name, &argv, &env, log, LogStart::Restart, &self.teardown)
                    .map_err(|e| RunError::stack(format!("service '{name}': cannot restart: {e}")))?;
                let pid = proc.child.id();
                self.procs.push(proc);
                self.reaped.remove(name);
                // Same argv, same port: only the pid changes.
                return Ok(Some(Endpoint {
                    url: String::new(),
                    host: String::new(),
                    port: 0,
                    pid: Some(pid),
                    container: None,
                }));
            }
            Chaos::Disconnect | Chaos::Connect => {
                return Err(unsupported("a local process shares the host's network"));
            }
        }
        Ok(None)
    }

    /// Stops everything, last started first. Safe to call twice.
    pub async fn stop(&mut self) {
        self.stop_children();
        if let Some(s) = self.sim.take() {
            s.shutdown().await;
        }
        if let Some(s) = self.sink.take() {
            s.shutdown().await;
        }
    }

    pub fn stop_children(&mut self) {
        for p in self.procs.iter_mut().rev() {
            p.stop();
        }
        self.procs.clear();
    }
}

fn missing_program(service: &str, program: &str) -> String {
    let how = match program {
        "redis-server" => {
            "install it (Debian/Ubuntu: apt-get install -y redis-server; macOS: brew install redis) or use `nix develop`"
        }
        _ => "install it or fix the command in the stack manifest",
    };
    format!("service '{service}' needs '{program}', which is not on PATH: {how}")
}

/// How a child ended, from `waitid`'s `si_code` and `si_status`: a signal number is not an
/// exit status ("exit status 9" for a SIGKILL misleads whoever reads the failure).
fn describe_end(code: i32, status: i32) -> String {
    match code {
        libc::CLD_KILLED => format!("killed by signal {status}"),
        libc::CLD_DUMPED => format!("killed by signal {status} (core dumped)"),
        _ => format!("exit status {status}"),
    }
}

#[cfg(test)]
mod tests {

    /// A SIGKILLed child is reported as killed by signal 9, not as "exit status 9".
    #[test]
    // waitid without WNOWAIT below reaps it: clippy cannot see that.
    #[allow(clippy::zombie_processes)]
    fn a_signal_death_is_named_as_one() {
        let child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        // SAFETY: signalling and peeking at our own child.
        let how = unsafe {
            libc::kill(child.id() as i32, libc::SIGKILL);
            let mut info: libc::siginfo_t = std::mem::zeroed();
            assert_eq!(libc::waitid(libc::P_PID, child.id(), &mut info, libc::WEXITED), 0);
            super::describe_end(info.si_code, info.si_status())
        };
        assert_eq!(how, "killed by signal 9");
        assert_eq!(super::describe_end(libc::CLD_EXITED, 3), "exit status 3");
    }
    use std::time::{Duration, Instant};

    use super::*;

    #[test]
    fn stop_kills_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("gauntlet-proc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("sh.log");
        // A shell that forks a grandchild: both must die with the group.
        let argv: Vec<String> = ["sh", "-c", "sleep 300 & echo started; wait"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let teardown = Teardown::default();
        std::fs::write(&log, "an earlier run's line\n").unwrap();
        let mut p = spawn("sh", &argv, &[], &log, LogStart::Fresh, &teardown).unwrap();
        let pgid = p.child.id() as i32;
        let t = Instant::now();
        while !std::fs::read_to_string(&log).unwrap().contains("started") {
            assert!(t.elapsed() < Duration::from_secs(5), "shell never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        p.stop();
        assert_ne!(
            unsafe { libc::killpg(pgid, 0) },
            0,
            "process group {pgid} survived stop"
        );
        assert!(teardown.running().is_empty());
        let first = std::fs::read_to_string(&log).unwrap();
        assert!(
            !first.contains("an earlier run's line"),
            "a first start replaces an old log: {first}"
        );

        // A restart keeps what the service said before it.
        let mut again = spawn("sh", &argv, &[], &log, LogStart::Restart, &teardown).unwrap();
        let t = Instant::now();
        while std::fs::read_to_string(&log).unwrap().matches("started").count() < 2 {
            assert!(t.elapsed() < Duration::from_secs(5), "restarted shell never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        again.stop();
        let both = std::fs::read_to_string(&log).unwrap();
        assert!(
            both.starts_with(&first) && both.contains("--- gauntlet: sh restarted ---"),
            "{both}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
