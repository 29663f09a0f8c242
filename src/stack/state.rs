//! The state file of a detached stack (`gauntlet up --detach`): its endpoints, pids and key,
//! written 0600 because it holds the master key. `GAUNTLET_STACK=<file>` attaches to it.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::Endpoints;
use crate::error::RunError;

/// Default location: `target/gauntlet/stack.json` under the artifacts folder.
pub fn default_path(artifacts: &Path) -> PathBuf {
    artifacts.join("stack.json")
}

pub fn write(path: &Path, endpoints: &Endpoints) -> Result<(), RunError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| RunError::stack(format!("cannot create {}: {e}", dir.display())))?;
    }
    let text = serde_json::to_string_pretty(endpoints).expect("endpoints serialize");
    let tmp = path.with_extension("json.tmp");
    super::write_private(&tmp, &text)?;
    std::fs::rename(&tmp, path).map_err(|e| RunError::stack(format!("cannot write {}: {e}", path.display())))
}

/// Reads a state file and checks that its supervisor still runs.
pub fn attach(path: &Path) -> Result<Endpoints, RunError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        RunError::usage(format!(
            "GAUNTLET_STACK={}: cannot read the stack state file ({e}); start one with `gauntlet up --detach`",
            path.display()
        ))
    })?;
    let ep: Endpoints = serde_json::from_str(&text).map_err(|e| {
        RunError::usage(format!(
            "GAUNTLET_STACK={}: not a gauntlet stack state file: {e}",
            path.display()
        ))
    })?;
    if !alive(ep.supervisor_pid) {
        return Err(RunError::stack(format!(
            "GAUNTLET_STACK={}: the stack is gone (its supervisor, pid {}, is not running); \
             start it again with `gauntlet up --detach`",
            path.display(),
            ep.supervisor_pid
        )));
    }
    for s in &ep.secrets {
        crate::redact::register(s);
    }
    if let Some(k) = &ep.master_key {
        crate::redact::register(k);
    }
    touch(path);
    Ok(ep)
}

/// Marks the stack as in use (the supervisor's idle timer reads the file's mtime).
pub fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Whether a process exists. EPERM means it does, under another user: such a run is not
/// dead, and `down --all` must not sweep it.
pub fn alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid != 0
        && (unsafe { libc::kill(pid as i32, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}
