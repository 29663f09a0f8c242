//! What every recipe shares: the build context made in memory, the tag named by the digest of
//! its inputs, one builder at a time per tag (across processes), the legacy builder's output
//! streamed to tracing, and [`ensure`], which dispatches a spec to its recipe or to a pull.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::spec::Recipe;
use crate::error::RunError;
use crate::stack::engine::RECIPE_LABEL;

/// A build (debootstrap and pip included) that takes longer has hung on a mirror or an index.
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(20 * 60);
/// Pulls of large images over a slow link are slow, but not this slow.
pub const PULL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

pub(super) async fn size_of(docker: &Docker, reference: &str) -> Result<u64, RunError> {
    let info = docker
        .inspect_image(reference)
        .await
        .map_err(|e| RunError::stack(format!("image {reference} vanished after it was made: {e}")))?;
    Ok(info.size.unwrap_or(0).max(0) as u64)
}

/// Whether the engine has `reference`; an engine error other than "no such image" is an error.
pub(super) async fn exists(docker: &Docker, reference: &str) -> Result<bool, RunError> {
    match docker.inspect_image(reference).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(false),
        Err(e) => Err(RunError::stack(format!("cannot inspect image {reference}: {e}"))),
    }
}

/// A file tree for a build context or a root filesystem, held in memory. Its tar is the same
/// bytes for the same tree whatever order things were added in: sorted paths, owner root,
/// mtime 0, no user or group names, so its digest names its content.
#[derive(Debug, Default, Clone)]
pub struct Context {
    entries: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File { data: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
}

impl Context {
    /// Adds a file at `path` (relative; a leading `/` is dropped), its parent folders (0755
    /// unless added otherwise) with it.
    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        let path = path.trim_start_matches('/').to_owned();
        self.parents(&path);
        self.entries.insert(path, Entry::File { data, mode });
    }

    pub fn dir(&mut self, path: &str, mode: u32) {
        let path = path.trim_matches('/').to_owned();
        self.parents(&path);
        self.entries.insert(path, Entry::Dir { mode });
    }

    fn parents(&mut self, path: &str) {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let parent = &path[..at + i];
            self.entries
                .entry(parent.to_owned())
                .or_insert(Entry::Dir { mode: 0o755 });
            at += i + 1;
        }
    }

    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path.trim_start_matches('/'))
    }

    /// The tree as a tar. Sparse headers are off: Docker 20.10 rejects them ("unhandled tar
    /// header type 83").
    pub fn tar(&self) -> Result<Vec<u8>, RunError> {
        let fail = |e: std::io::Error| RunError::stack(format!("cannot write the build context: {e}"));
        let mut b = tar::Builder::new(Vec::new());
        b.sparse(false);
        for (path, entry) in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match entry {
                Entry::File { data, mode } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, path, data.as_slice()).map_err(fail)?;
                }
                Entry::Dir { mode } => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    b.append_data(&mut h, format!("{path}/"), std::io::empty())
                        .map_err(fail)?;
                }
            }
        }
        b.into_inner().map_err(fail)
    }
}

/// The digest of everything that goes into a recipe's image: the recipe's version string
/// (bumped when the recipe changes what it does with the same inputs), the base image it
/// builds on, and the context's bytes. Length-prefixed, so no two input sets run together.
pub fn input_digest(version: &str, base: &str, context_tar: &[u8]) -> String {
    let mut h = Sha256::new();
    for part in [version.as_bytes(), base.as_bytes(), context_tar] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

/// `<repository>:<first 16 hex of the input digest>`.
pub fn tag_for(repository: &str, digest: &str) -> String {
    format!("{repository}:{}", &digest[..16])
}

/// Holds the build of `tag` against other gauntlet processes (nextest runs one per case) so
/// one builds and the others wait and find it built. Released when dropped.
pub(super) struct BuildLock {
    _file: std::fs::File,
}

/// The lock files live in the temporary folder, not the cache: the engine's images are the
/// machine's, and runs with different `GAUNTLET_CACHE_DIR`s still share them.
pub(super) async fn lock(tag: &str) -> Result<BuildLock, RunError> {
    let dir = std::env::temp_dir().join("gauntlet-image-locks");
    std::fs::create_dir_all(&dir).map_err(|e| RunError::stack(format!("cannot create {}: {e}", dir.display())))?;
    let path = dir.join(format!("{}.lock", tag.replace(['/', ':'], "_")));
    let file =
        std::fs::File::create(&path).map_err(|e| RunError::stack(format!("cannot create {}: {e}", path.display())))?;
    let waited = Instant::now();
    let mut said = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(BuildLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) if waited.elapsed() < BUILD_TIMEOUT => {
                if !said {
                    tracing::info!("waiting for another gauntlet building {tag}");
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => {
                return Err(RunError::stack(format!(
                    "waited {}s for another gauntlet building {tag} ({}): {e}",
                    waited.elapsed().as_secs(),
                    path.display()
                )));
            }
        }
    }
}

/// The tag and input digest `context` will have, without building anything.
pub(super) fn planned_tag(
    recipe: Recipe,
    version: &str,
    base: &str,
    context: &Context,
) -> Result<(String, String), RunError> {
    let digest = input_digest(version, base, &context.tar()?);
    Ok((tag_for(&recipe.repository(), &digest), digest))
}

/// Tags `context` by the digest of its inputs, then inspects, else builds under the lock
/// (inspecting again once it is held: the holder may have built it meanwhile). The tag, and
/// whether this call built it.
pub(super) async fn ensure_recipe(
    docker: &Docker,
    recipe: Recipe,
    version: &str,
    base: &str,
    context: &Context,
) -> Result<(String, bool), RunError> {
    let tar = context.tar()?;
    let digest = input_digest(version, base, &tar);
    let tag = tag_for(&recipe.repository(), &digest);
    if exists(docker, &tag).await? {
        return Ok((tag, false));
    }
    let _lock = lock(&tag).await?;
    if exists(docker, &tag).await? {
        return Ok((tag, false));
    }
    build(docker, recipe.name(), &tag, &digest, tar).await?;
    Ok((tag, true))
}

/// Lines of build output kept for the error when a build fails.
const TAIL: usize = 40;

/// Runs the legacy builder on an in-memory context (Dockerfile at its root), streaming each
/// output line to tracing, and labels the image with the recipe and its input digest.
pub(super) async fn build(
    docker: &Docker,
    recipe: &str,
    tag: &str,
    digest: &str,
    context_tar: Vec<u8>,
) -> Result<(), RunError> {
    tracing::info!(
        "building {tag} ({recipe} recipe, {:.1} MB context)",
        context_tar.len() as f64 / 1e6
    );
    let labels = HashMap::from([(RECIPE_LABEL, recipe_label(recipe, digest))]);
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .rm(true)
        .forcerm(true)
        .labels(&labels)
        .build();
    // The engine answers a build only once it has read the whole context, and a pull-free
    // build can still run for many minutes: the connection's short call timeout does not fit.
    let long = docker.clone().with_timeout(BUILD_TIMEOUT);
    let mut tail: Vec<String> = Vec::new();
    let run = async {
        let mut stream = long.build_image(options, None, Some(bollard::body_full(context_tar.into())));
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    let text = info.stream.or(info.status).unwrap_or_default();
                    let text = without_colour(&text);
                    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
                        tracing::info!("{recipe}: {line}");
                        tail.push(line.to_owned());
                        if tail.len() > TAIL {
                            tail.remove(0);
                        }
                    }
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    };
    let outcome = match tokio::time::timeout(BUILD_TIMEOUT, run).await {
        Ok(r) => r,
        Err(_) => Err(format!("no result within {} minutes", BUILD_TIMEOUT.as_secs() / 60)),
    };
    let failed = |why: String| {
        RunError::stack(format!(
            "building image {tag} ({recipe} recipe) failed: {why}\nlast lines of the build:\n{}",
            tail.join("\n")
        ))
    };
    outcome.map_err(failed)?;
    if !exists(docker, tag).await? {
        return Err(failed("the build ended without an image".into()));
    }
    Ok(())
}

/// The engine wraps a RUN step's stderr in terminal colour codes; logs and errors want text.
/// Every ANSI sequence goes (CSI with any final byte, OSC titles and hyperlinks), not only SGR,
/// and the text's own tabs and line ends stay.
fn without_colour(text: &str) -> String {
    anstream::adapter::strip_str(text).to_string()
}

/// The value of [`RECIPE_LABEL`]: which recipe, and the full digest of its inputs.
pub fn recipe_label(recipe: &str, digest: &str) -> String {
    format!("{recipe}@sha256:{digest}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(order: &[usize]) -> Context {
        let mut c = Context::default();
        for &i in order {
            match i {
                0 => c.file("Dockerfile", b"FROM scratch\nCOPY rootfs/ /\n".to_vec(), 0o644),
                1 => c.file("/rootfs/lib/x86_64-linux-gnu/libc.so.6", vec![7; 1000], 0o755),
                2 => c.dir("rootfs/tmp", 0o1777),
                _ => c.file("rootfs/gauntlet", vec![1, 2, 3], 0o755),
            }
        }
        c
    }

    #[test]
    fn same_inputs_same_tag_whatever_the_order() {
        let a = sample(&[0, 1, 2, 3]).tar().unwrap();
        let b = sample(&[3, 2, 1, 0]).tar().unwrap();
        assert_eq!(a, b);
        let da = input_digest("v1", "scratch", &a);
        assert_eq!(da, input_digest("v1", "scratch", &b));
        let tag = tag_for("gauntlet/gauntlet", &da);
        assert!(tag.starts_with("gauntlet/gauntlet:") && tag.len() == "gauntlet/gauntlet:".len() + 16);
    }

    #[test]
    fn a_changed_input_changes_the_tag() {
        let base = sample(&[0, 1, 2, 3]);
        let tar = base.tar().unwrap();
        let tag = tag_for("r", &input_digest("v1", "scratch", &tar));
        let mut byte = base.clone();
        byte.file("rootfs/gauntlet", vec![1, 2, 4], 0o755);
        let mut mode = base.clone();
        mode.file("rootfs/gauntlet", vec![1, 2, 3], 0o700);
        let mut added = base.clone();
        added.file("rootfs/etc/passwd", b"root:x:0:0::/:/gauntlet\n".to_vec(), 0o644);
        for other in [byte, mode, added] {
            let t = other.tar().unwrap();
            assert_ne!(tag, tag_for("r", &input_digest("v1", "scratch", &t)));
        }
        assert_ne!(tag, tag_for("r", &input_digest("v2", "scratch", &tar)));
        assert_ne!(tag, tag_for("r", &input_digest("v1", "gauntlet/debian-base:0", &tar)));
        // Moving bytes between the parts must not collide.
        assert_ne!(input_digest("v1", "ab", b"c"), input_digest("v1", "a", b"bc"));
    }

    #[test]
    fn colour_codes_are_dropped() {
        assert_eq!(without_colour("\u{1b}[91mERROR: no\n\u{1b}[0m"), "ERROR: no\n");
        assert_eq!(without_colour("plain"), "plain");
    }

    /// The old stripper ended a CSI sequence at its first letter: `ESC[2~` (final byte `~`)
    /// swallowed the `H` of the text after it; an OSC sequence (a title, a hyperlink) was
    /// left in but for its ESC.
    #[test]
    fn without_colour_strips_every_ansi_sequence() {
        assert_eq!(without_colour("\u{1b}[2~Hello"), "Hello");
        assert_eq!(
            without_colour("\u{1b}]0;title\u{7}step \u{1b}]8;;http://x\u{1b}\\link\u{1b}]8;;\u{1b}\\ done"),
            "step link done"
        );
        assert_eq!(without_colour("\u{1b}[1;31mred\u{1b}[0m é"), "red é");
        assert_eq!(without_colour("a\u{1b}[?25lb\u{1b}[38;2;1;2;3mc\td\r\n"), "abc\td\r\n");
    }

    #[test]
    fn tar_has_parents_first_plain_headers_and_modes() {
        let tar = sample(&[3, 1, 2, 0]).tar().unwrap();
        let mut a = tar::Archive::new(tar.as_slice());
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let e = e.unwrap();
            let h = e.header();
            assert!(
                matches!(h.entry_type(), tar::EntryType::Regular | tar::EntryType::Directory),
                "{:?}",
                h.entry_type()
            );
            assert_eq!((h.mtime().unwrap(), h.uid().unwrap()), (0, 0));
            seen.push((e.path().unwrap().display().to_string(), h.mode().unwrap()));
        }
        let pos = |p: &str| seen.iter().position(|(s, _)| s.trim_end_matches('/') == p).unwrap();
        assert!(pos("rootfs") < pos("rootfs/lib") && pos("rootfs/lib") < pos("rootfs/lib/x86_64-linux-gnu"));
        assert_eq!(seen[pos("rootfs/tmp")].1, 0o1777);
    }
}
