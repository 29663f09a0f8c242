//! Local process backend: each service is a child in its own process group, its output in a
//! log file. Every pgid started is recorded in the run's [`Teardown`] so that teardown —
//! normal, on panic, or from the signal handler — can kill what is left without owning the
//! `Child`.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use super::teardown::{Teardown, stop_group};

/// A started service process.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    teardown: Teardown,
}

/// Starts `argv` with `env`, stdout and stderr appended to `log`.
pub fn spawn(
    name: &str,
    argv: &[String],
    env: &[(String, String)],
    log: &Path,
    teardown: &Teardown,
) -> std::io::Result<Proc> {
    let out = File::create(log)?;
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

#[cfg(test)]
mod tests {
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
        let mut p = spawn("sh", &argv, &[], &log, &teardown).unwrap();
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
        let _ = std::fs::remove_dir_all(dir);
    }
}
