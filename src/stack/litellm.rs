//! The pinned LiteLLM: installed by gauntlet itself from the hash-locked requirements
//! (`stack/litellm/requirements.lock`, compiled in) into a cache folder keyed by that lock, so
//! a changed lock gets a fresh venv and an unchanged one is installed once per machine.
//! `GAUNTLET_LITELLM_BIN` points at an existing `litellm` instead (Nix, or your own venv).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::error::RunError;

/// The lock, hashes and all. Its digest names the cache folder.
pub const LOCK: &str = include_str!("../../stack/litellm/requirements.lock");

/// The pinned version, read from the lock so the two can never disagree.
pub fn pinned_version() -> &'static str {
    LOCK.lines()
        .find_map(|l| {
            l.strip_prefix("litellm==")
                .or_else(|| l.strip_prefix("litellm[proxy]=="))
        })
        .map(|v| v.split([' ', '\\', ';']).next().unwrap_or(v))
        .unwrap_or("unknown")
}

/// Whole installs are bounded: a stuck index must not hang a CI job for hours.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// Where gauntlet keeps what it provisions: `GAUNTLET_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/gauntlet`, else `~/.cache/gauntlet`.
pub fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("GAUNTLET_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("gauntlet");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("gauntlet")
}

pub fn lock_digest() -> String {
    hex::encode(Sha256::digest(LOCK.as_bytes()))[..16].to_owned()
}

/// The pinned `litellm` executable if it is already there (`GAUNTLET_LITELLM_BIN`, or a
/// finished install in the cache); never installs.
pub fn installed() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("GAUNTLET_LITELLM_BIN").filter(|b| !b.is_empty()) {
        return Some(PathBuf::from(bin)).filter(|b| b.is_file());
    }
    cached()
}

/// The cached install of the pinned version, if it completed.
fn cached() -> Option<PathBuf> {
    let dir = install_dir();
    let bin = dir.join("venv/bin/litellm");
    (dir.join(".complete").is_file() && bin.is_file()).then_some(bin)
}

/// Where the pinned version is installed: its version and the lock's digest in the name, so
/// a changed lock installs afresh.
fn install_dir() -> PathBuf {
    cache_root().join(format!("litellm-{}-{}", pinned_version(), lock_digest()))
}

/// The `litellm` executable to run, provisioning it first if needed.
pub fn resolve() -> Result<PathBuf, RunError> {
    if let Some(bin) = std::env::var_os("GAUNTLET_LITELLM_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(RunError::usage(format!(
                "GAUNTLET_LITELLM_BIN={} does not exist; unset it to let gauntlet install LiteLLM {} itself",
                bin.display(),
                pinned_version()
            )))
        };
    }
    if let Some(bin) = cached() {
        return Ok(bin);
    }
    let dir = install_dir();
    let bin = dir.join("venv/bin/litellm");
    std::fs::create_dir_all(cache_root())
        .map_err(|e| RunError::stack(format!("cannot create cache folder {}: {e}", cache_root().display())))?;
    // Parallel runners (nextest starts one process per case) must not install twice into
    // the same folder: one installs, the others wait for its lock.
    let lock_path = cache_root().join(format!("litellm-{}.lock", lock_digest()));
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| RunError::stack(format!("cannot create {}: {e}", lock_path.display())))?;
    let waited = Instant::now();
    loop {
        match lock.try_lock() {
            Ok(()) => break,
            Err(std::fs::TryLockError::WouldBlock) if waited.elapsed() < INSTALL_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => {
                return Err(RunError::stack(format!(
                    "waited {}s for another gauntlet installing LiteLLM ({}): {e}",
                    waited.elapsed().as_secs(),
                    lock_path.display()
                )));
            }
        }
    }
    if dir.join(".complete").is_file() && bin.is_file() {
        return Ok(bin);
    }
    let result = install(&dir);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result.map(|()| bin)
}

fn python() -> Result<String, RunError> {
    let py = std::env::var("GAUNTLET_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let out = Command::new(&py)
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .map_err(|e| {
            RunError::stack(format!(
                "LiteLLM needs Python 3.9+ but '{py}' could not be run ({e}): install it \
                 (apt-get install -y python3 python3-venv), set GAUNTLET_PYTHON, or set \
                 GAUNTLET_LITELLM_BIN to an installed litellm"
            ))
        })?;
    let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let minor = v.strip_prefix("3.").and_then(|m| m.parse::<u32>().ok()).unwrap_or(0);
    if minor < 9 {
        return Err(RunError::stack(format!("LiteLLM needs Python 3.9+, '{py}' is {v:?}")));
    }
    Ok(py)
}

fn install(dir: &Path) -> Result<(), RunError> {
    let py = python()?;
    std::fs::create_dir_all(dir).map_err(|e| RunError::stack(format!("cannot create {}: {e}", dir.display())))?;
    let lock_file = dir.join("requirements.lock");
    std::fs::write(&lock_file, LOCK)
        .map_err(|e| RunError::stack(format!("cannot write {}: {e}", lock_file.display())))?;
    let venv = dir.join("venv");
    let out = Command::new(&py)
        .arg("-m")
        .arg("venv")
        .arg(&venv)
        .output()
        .map_err(|e| RunError::stack(format!("{py} -m venv failed to start: {e}")))?;
    if !out.status.success() {
        return Err(RunError::stack(format!(
            "{py} -m venv {} failed (on Debian: apt-get install -y python3-venv): {}",
            venv.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let progress = crate::runner::progress::spinner(&format!(
        "installing LiteLLM {} from the hash-locked requirements into {}",
        pinned_version(),
        dir.display()
    ));
    let mut child = Command::new(venv.join("bin/pip"))
        .args([
            "install",
            "--require-hashes",
            "--no-deps",
            "--disable-pip-version-check",
            "--no-input",
            "-r",
        ])
        .arg(&lock_file)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| RunError::stack(format!("pip failed to start: {e}")))?;
    let started = Instant::now();
    let stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            s.push_str(&l);
            s.push('\n');
        }
        s
    });
    let stdout = child.stdout.take().expect("piped");
    let mut tail: Vec<String> = Vec::new();
    let mut count = 0usize;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if line.starts_with("Collecting") || line.starts_with("Downloading") || line.contains("Using cached") {
            count += 1;
            progress.set_message(format!("{count} packages fetched, {}", line.trim()));
        }
        tail.push(line);
        if tail.len() > 20 {
            tail.remove(0);
        }
        if started.elapsed() > INSTALL_TIMEOUT {
            let _ = child.kill();
            break;
        }
    }
    let status = child.wait().map_err(|e| RunError::stack(format!("pip: {e}")))?;
    let errs = err_reader.join().unwrap_or_default();
    progress.finish_and_clear();
    if !status.success() {
        let last: Vec<&str> = errs
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(RunError::stack(format!(
            "installing LiteLLM {} failed after {:.0}s (pip {status}); the package index must be \
             reachable on first use. pip said:\n{}\n{}",
            pinned_version(),
            started.elapsed().as_secs_f64(),
            tail.join("\n"),
            last.join("\n")
        )));
    }
    std::fs::write(dir.join(".complete"), pinned_version())
        .map_err(|e| RunError::stack(format!("cannot mark {} complete: {e}", dir.display())))?;
    eprintln!(
        "gauntlet: installed LiteLLM {} in {:.0}s ({})",
        pinned_version(),
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_pins_one_safe_version_with_hashes() {
        let v = pinned_version();
        assert_ne!(v, "unknown", "no litellm== line in the lock");
        for bad in ["1.82.7", "1.82.8"] {
            assert_ne!(v, bad, "compromised LiteLLM release pinned");
        }
        assert!(!v.starts_with("1.107."), "the 1.107 line is reported compromised");
        let pins = LOCK
            .lines()
            .filter(|l| l.contains("==") && !l.trim_start().starts_with('#'))
            .count();
        let hashes = LOCK.matches("--hash=sha256:").count();
        assert!(pins > 50 && hashes >= pins, "{pins} pins, {hashes} hashes");
    }

    /// `name==version` → its hashes, per requirement of the pip lock (names normalised as
    /// PEP 503 does; a name locked twice under different markers has two versions).
    fn pip_lock() -> std::collections::BTreeMap<(String, String), Vec<String>> {
        let mut out = std::collections::BTreeMap::new();
        let mut cur: Option<(String, String)> = None;
        for line in LOCK.lines() {
            let t = line.trim();
            if t.starts_with('#') || t.is_empty() {
                continue;
            }
            if let Some((name, rest)) = t.split_once("==")
                && !t.starts_with("--")
            {
                let version: String = rest
                    .chars()
                    .take_while(|c| !c.is_whitespace() && *c != ';' && *c != '\\')
                    .collect();
                let name = name.to_lowercase().replace(['_', '.'], "-");
                cur = Some((name, version));
                out.insert(cur.clone().unwrap(), Vec::new());
            } else if let (Some(h), Some(k)) = (t.strip_prefix("--hash=sha256:"), &cur) {
                let h = h.trim_end_matches('\\').trim().to_owned();
                out.get_mut(k).unwrap().push(h);
            }
        }
        out
    }

    /// The Nix LiteLLM (nix/litellm.nix) installs the files nix/litellm-lock.json picks; this is
    /// the check that they are the pip lock's packages, versions and files: nothing added,
    /// nothing left out, no file the pip lock does not hash. Regenerate with
    /// `nix/update-litellm-lock` after changing the pip lock.
    #[test]
    fn the_nix_lock_holds_the_pip_locks_packages_versions_and_files() {
        use sha2::Digest;
        let nix: serde_json::Value =
            serde_json::from_str(include_str!("../../nix/litellm-lock.json")).expect("nix/litellm-lock.json is JSON");
        let digest = format!("{:x}", sha2::Sha256::digest(LOCK.as_bytes()));
        assert_eq!(
            nix["source_sha256"].as_str(),
            Some(digest.as_str()),
            "stack/litellm/requirements.lock changed since nix/litellm-lock.json was written: run nix/update-litellm-lock"
        );
        let pip = pip_lock();
        let mut seen = std::collections::BTreeSet::new();
        for p in nix["packages"].as_array().expect("packages") {
            let key = (
                p["name"].as_str().unwrap().to_owned(),
                p["version"].as_str().unwrap().to_owned(),
            );
            let hashes = pip
                .get(&key)
                .unwrap_or_else(|| panic!("{}=={} is in the Nix lock, not in the pip lock", key.0, key.1));
            for (system, f) in p["systems"].as_object().unwrap() {
                if let Some(h) = f["sha256"].as_str() {
                    assert!(
                        hashes.iter().any(|x| x == h),
                        "{}=={} for {system}: {} is not a file the pip lock hashes",
                        key.0,
                        key.1,
                        f["file"]
                    );
                }
            }
            seen.insert(key);
        }
        let missing: Vec<_> = pip.keys().filter(|k| !seen.contains(*k)).collect();
        assert!(missing.is_empty(), "in the pip lock, not in the Nix lock: {missing:?}");
        assert!(
            nix["packages"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "litellm" && p["version"] == pinned_version()),
            "the Nix lock does not carry LiteLLM {}",
            pinned_version()
        );
    }
}
