//! [`Teardown`]: what must go when a run stops, however it stops — the process groups it
//! started and the private folders it made. The stack records into it as it starts things;
//! the Docker runs (by label), the signal handler, which cannot wait for the stack's owner (trial threads may be blocked
//! in requests), kills from it directly. One value shared by both, created by the run before
//! anything starts, so an interrupt during start-up finds what was started so far.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a service gets to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Default)]
pub struct Teardown(Arc<Mutex<Recorded>>);

#[derive(Default)]
struct Recorded {
    /// (service, pgid) of every group started and not yet stopped.
    groups: Vec<(String, i32)>,
    dirs: Vec<PathBuf>,
    /// Docker runs (labels) whose containers and network may still exist.
    docker_runs: Vec<String>,
}

impl Teardown {
    fn with<T>(&self, f: impl FnOnce(&mut Recorded) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn started(&self, service: &str, pgid: i32) {
        self.with(|r| r.groups.push((service.to_owned(), pgid)));
    }

    pub fn stopped(&self, pgid: i32) {
        self.with(|r| r.groups.retain(|(_, p)| *p != pgid));
    }

    pub fn made_dir(&self, dir: &Path) {
        self.with(|r| r.dirs.push(dir.to_owned()));
    }

    pub fn removed_dir(&self, dir: &Path) {
        self.with(|r| r.dirs.retain(|d| d != dir));
    }

    pub fn docker_run(&self, run: &str) {
        self.with(|r| r.docker_runs.push(run.to_owned()));
    }

    pub fn docker_done(&self, run: &str) {
        self.with(|r| r.docker_runs.retain(|x| x != run));
    }

    /// Services still running (for diagnostics and tests).
    pub fn running(&self) -> Vec<String> {
        self.with(|r| r.groups.iter().map(|(n, _)| n.clone()).collect())
    }

    /// Kills every group still recorded, last started first, and removes the folders.
    pub fn now(&self) {
        let (groups, dirs, runs) = self.with(|r| {
            (
                std::mem::take(&mut r.groups),
                std::mem::take(&mut r.dirs),
                std::mem::take(&mut r.docker_runs),
            )
        });
        for (_, pgid) in groups.iter().rev() {
            stop_group(*pgid);
        }
        for run in runs {
            super::engine::blocking(move |d| Box::pin(async move { super::engine::sweep_run(&d, &run).await }));
        }
        for d in dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Terminates a process group, bounded by [`GRACE`].
pub fn stop_group(pgid: i32) {
    // SAFETY: plain syscalls on a pgid we created.
    unsafe {
        if libc::killpg(pgid, libc::SIGTERM) != 0 {
            return; // already gone
        }
    }
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        // Signal 0 probes whether any member of the group still exists.
        if unsafe { libc::killpg(pgid, 0) } != 0 {
            return;
        }
        reap_group(pgid);
        std::thread::sleep(Duration::from_millis(25));
    }
    unsafe {
        libc::killpg(pgid, libc::SIGKILL);
    }
}

/// Reaps the group's exited children so a stopped group leader does not linger as a zombie
/// (which `killpg(_, 0)` would still see). Only that group's: reaping any child would take
/// the exit status another part of gauntlet is waiting for (a `Command::output()` then fails
/// with ECHILD) and hide another service's death from its health witness.
fn reap_group(pgid: i32) {
    loop {
        // SAFETY: waits only on children in the group we created, without blocking.
        let r = unsafe { libc::waitpid(-pgid, std::ptr::null_mut(), libc::WNOHANG) };
        if r <= 0 {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    use super::stop_group;

    /// Stopping a group leaves the exit status of gauntlet's other children to their owners.
    #[test]
    fn stopping_a_group_reaps_only_that_group() {
        let mut other = Command::new("true").spawn().unwrap();
        // Wait until `other` has exited, without reaping it (WNOWAIT).
        // SAFETY: plain syscall on our own child; siginfo is zeroed and only read after success.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(libc::P_PID, other.id(), &mut info, libc::WEXITED | libc::WNOWAIT);
            assert_eq!(r, 0);
        }
        let mut group = Command::new("sleep").arg("30").process_group(0).spawn().unwrap();
        stop_group(group.id() as i32);
        let status = other
            .wait()
            .expect("the other child's exit status was taken by the group's teardown");
        assert!(status.success());
        // The group's own leader was reaped by the teardown, or can still be.
        let _ = group.wait();
    }
}
