//! The base of the LiteLLM image: a minimal Debian 12 root made here with debootstrap (from a
//! Debian mirror, which this machine reaches, where no registry is), or a root filesystem tar
//! given in `GAUNTLET_BASE_TARBALL`, imported as `gauntlet/debian-base:<digest>`.

use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use super::build::{BUILD_TIMEOUT, exists, input_digest, lock, recipe_label, tag_for};
use crate::error::RunError;
use crate::stack::engine::RECIPE_LABEL;

pub const REPOSITORY: &str = "gauntlet/debian-base";
/// Bumped when this recipe changes what it makes of the same inputs.
const RECIPE: &str = "debian-base-1";
const SUITE: &str = "bookworm";
const VARIANT: &str = "minbase";
const INCLUDE: &str = "python3,python3-venv,ca-certificates";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
/// An imported root has no config; these are what Debian's own images set.
const CHANGES: [&str; 3] = [
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    "CMD [\"/bin/bash\"]",
];

/// Where the base's root filesystem comes from.
#[derive(Debug, Clone)]
enum Source {
    Debootstrap { mirror: String },
    Tarball(PathBuf),
}

/// The base as planned: its tag is known before anything is made, so a warm LiteLLM image
/// needs no base at all (and no debootstrap just to name it).
#[derive(Debug, Clone)]
pub(super) struct Base {
    pub tag: String,
    digest: String,
    source: Source,
}

/// Names the base from its inputs. The mirror is not one of them: any Debian mirror serves
/// the same suite, and switching to a nearer one should not rebuild everything.
pub(super) async fn plan() -> Result<Base, RunError> {
    let digest;
    let source = match std::env::var_os("GAUNTLET_BASE_TARBALL").filter(|p| !p.is_empty()) {
        Some(path) => {
            let path = PathBuf::from(path);
            let p = path.clone();
            digest = tokio::task::spawn_blocking(move || hash_file(&p))
                .await
                .map_err(|e| RunError::stack(format!("hashing the base tarball panicked: {e}")))??;
            Source::Tarball(path)
        }
        None => {
            let inputs = format!("{SUITE} {VARIANT} {INCLUDE} {}", std::env::consts::ARCH);
            digest = input_digest(RECIPE, "debootstrap", inputs.as_bytes());
            let mirror = std::env::var("GAUNTLET_DEBIAN_MIRROR")
                .ok()
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| DEFAULT_MIRROR.to_owned());
            Source::Debootstrap { mirror }
        }
    };
    Ok(Base {
        tag: tag_for(REPOSITORY, &digest),
        digest,
        source,
    })
}

fn hash_file(path: &Path) -> Result<String, RunError> {
    let fail =
        |e: std::io::Error| RunError::usage(format!("GAUNTLET_BASE_TARBALL={}: cannot read it: {e}", path.display()));
    let mut f = std::fs::File::open(path).map_err(fail)?;
    let mut h = Sha256::new();
    h.update(RECIPE.as_bytes());
    h.update(b"\0tarball\0");
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(fail)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Makes `base` exist: inspect, else (under the build lock) debootstrap or the given tarball,
/// imported. True when this call made it.
pub(super) async fn ensure(docker: &Docker, base: &Base) -> Result<bool, RunError> {
    if exists(docker, &base.tag).await? {
        return Ok(false);
    }
    let _lock = lock(&base.tag).await?;
    if exists(docker, &base.tag).await? {
        return Ok(false);
    }
    match &base.source {
        Source::Tarball(path) => {
            let p = path.clone();
            let saved = tokio::task::spawn_blocking(move || is_docker_save(&p))
                .await
                .unwrap_or(false);
            tracing::info!("importing {} as {}", path.display(), base.tag);
            if saved {
                load(docker, base, path).await?;
            } else {
                import(docker, base, path).await?;
            }
        }
        Source::Debootstrap { mirror } => {
            let work = crate::stack::litellm::cache_root().join("images").join(format!(
                "debian-base-{}-{}",
                &base.digest[..16],
                std::process::id()
            ));
            let result = async {
                let root = work.join("root");
                debootstrap(mirror, &root).await?;
                let tar = work.join("root.tar");
                let (r, t) = (root.clone(), tar.clone());
                tokio::task::spawn_blocking(move || tar_root(&r, &t))
                    .await
                    .map_err(|e| RunError::stack(format!("tarring the Debian root panicked: {e}")))??;
                import(docker, base, &tar).await
            }
            .await;
            let w = work.clone();
            let _ = tokio::task::spawn_blocking(move || remove_work(&w)).await;
            result?;
        }
    }
    if !exists(docker, &base.tag).await? {
        return Err(RunError::stack(format!(
            "importing {} ended without the image",
            base.tag
        )));
    }
    Ok(true)
}

async fn debootstrap(mirror: &str, root: &Path) -> Result<(), RunError> {
    let Some(bin) = super::scratch::on_path("debootstrap") else {
        return Err(RunError::stack(
            "the LiteLLM image is built on a Debian root made with debootstrap, which is not \
             installed: apt-get install debootstrap (or set GAUNTLET_BASE_TARBALL to a Debian 12 \
             root filesystem tar with python3, python3-venv and ca-certificates)",
        ));
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(RunError::stack(
            "debootstrap needs root to make the LiteLLM image's Debian base: run \
             `sudo gauntlet images build litellm` once, or set GAUNTLET_BASE_TARBALL to a \
             Debian 12 root filesystem tar",
        ));
    }
    std::fs::create_dir_all(root).map_err(|e| RunError::stack(format!("cannot create {}: {e}", root.display())))?;
    tracing::info!(
        "debootstrap --variant={VARIANT} --include={INCLUDE} {SUITE} {} {mirror}",
        root.display()
    );
    let mut child = tokio::process::Command::new(&bin)
        .arg(format!("--variant={VARIANT}"))
        .arg(format!("--include={INCLUDE}"))
        .arg(SUITE)
        .arg(root)
        .arg(mirror)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a timeout kills the dpkg and chroot children with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| RunError::stack(format!("debootstrap failed to start: {e}")))?;
    let pid = child.id();
    let mut output = futures_util::stream::select(
        lines(child.stdout.take().expect("piped")),
        lines(child.stderr.take().expect("piped")),
    );
    let mut tail: Vec<String> = Vec::new();
    let run = async {
        while let Some(l) = output.next().await {
            tracing::info!("debian-base: {l}");
            tail.push(l);
            if tail.len() > 30 {
                tail.remove(0);
            }
        }
        child.wait().await
    };
    let status = match tokio::time::timeout(BUILD_TIMEOUT, run).await {
        Ok(s) => s.map_err(|e| RunError::stack(format!("debootstrap: {e}")))?,
        Err(_) => {
            if let Some(pid) = pid {
                // SAFETY: signalling the process group we created; no memory is involved.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
            return Err(RunError::stack(format!(
                "debootstrap took over {} minutes (is the mirror {mirror} reachable?); last lines:\n{}",
                BUILD_TIMEOUT.as_secs() / 60,
                tail.join("\n")
            )));
        }
    };
    if !status.success() {
        return Err(RunError::stack(format!(
            "debootstrap {SUITE} from {mirror} failed ({status}); set GAUNTLET_DEBIAN_MIRROR to a \
             reachable mirror or GAUNTLET_BASE_TARBALL to a root filesystem tar. Last lines:\n{}",
            tail.join("\n")
        )));
    }
    Ok(())
}

fn lines(r: impl AsyncRead + Unpin + Send + 'static) -> impl futures_util::Stream<Item = String> + Send + Unpin {
    Box::pin(futures_util::stream::unfold(
        BufReader::new(r).lines(),
        |mut l| async move { l.next_line().await.ok().flatten().map(|line| (line, l)) },
    ))
}

/// Folders whose contents the engine supplies at run time, and package caches the image does
/// not need: kept as empty folders.
const NOT_THEIR_CONTENTS: [&str; 5] = ["dev", "proc", "sys", "var/cache/apt/archives", "var/lib/apt/lists"];

/// Tars `root` to `out`: owners, modes and symlinks as they are, sparse headers off (Docker
/// 20.10 rejects them), never crossing into another filesystem (a mount debootstrap left).
fn tar_root(root: &Path, out: &Path) -> Result<(), RunError> {
    let fail = |e: std::io::Error| RunError::stack(format!("cannot tar the Debian root into {}: {e}", out.display()));
    let file = std::fs::File::create(out).map_err(fail)?;
    let mut b = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, file));
    b.sparse(false);
    b.follow_symlinks(false);
    b.mode(tar::HeaderMode::Complete);
    let dev = std::fs::symlink_metadata(root).map_err(fail)?.dev();
    walk(&mut b, root, Path::new(""), dev).map_err(fail)?;
    b.into_inner()
        .map_err(fail)?
        .into_inner()
        .map_err(|e| fail(e.into_error()))?;
    Ok(())
}

fn walk<W: std::io::Write>(b: &mut tar::Builder<W>, root: &Path, rel: &Path, dev: u64) -> std::io::Result<()> {
    let dir = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let full = root.join(&rel);
        let meta = std::fs::symlink_metadata(&full)?;
        let kind = meta.file_type();
        if kind.is_socket() || meta.dev() != dev {
            continue;
        }
        b.append_path_with_name(&full, &rel)?;
        if kind.is_dir() && !NOT_THEIR_CONTENTS.iter().any(|p| rel == Path::new(p)) {
            walk(b, root, &rel, dev)?;
        }
    }
    Ok(())
}

/// A `docker save` (or Nix `dockerTools`) archive has a `manifest.json` at its top; a root
/// filesystem tar does not. Compressed archives are taken as roots (the engine unpacks those).
fn is_docker_save(path: &Path) -> bool {
    let Ok(f) = std::fs::File::open(path) else {
        return false;
    };
    let mut archive = tar::Archive::new(std::io::BufReader::new(f));
    let Ok(entries) = archive.entries() else {
        return false;
    };
    entries
        .take(10_000)
        .filter_map(Result::ok)
        .any(|e| e.path().is_ok_and(|p| p.as_os_str() == "manifest.json"))
}

/// Loads a saved image archive and tags what it held as the base.
async fn load(docker: &Docker, base: &Base, archive: &Path) -> Result<(), RunError> {
    let bytes = tokio::fs::read(archive)
        .await
        .map_err(|e| RunError::stack(format!("cannot read {}: {e}", archive.display())))?;
    let options = bollard::query_parameters::ImportImageOptionsBuilder::new()
        .quiet(true)
        .build();
    let long = docker.clone().with_timeout(BUILD_TIMEOUT);
    let mut stream = long.import_image(options, bollard::body_full(bytes.into()), None);
    let mut loaded = None;
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| RunError::stack(format!("docker load of {} failed: {e}", archive.display())))?;
        for line in info.stream.iter().chain(info.status.iter()) {
            if let Some(name) = line
                .trim()
                .strip_prefix("Loaded image ID: ")
                .or_else(|| line.trim().strip_prefix("Loaded image: "))
            {
                loaded = Some(name.trim().to_owned());
            }
        }
    }
    let loaded =
        loaded.ok_or_else(|| RunError::stack(format!("docker load of {} named no image", archive.display())))?;
    let (repo, tag) = base.tag.split_once(':').expect("tag_for puts a colon");
    let options = bollard::query_parameters::TagImageOptionsBuilder::new()
        .repo(repo)
        .tag(tag)
        .build();
    docker
        .tag_image(&loaded, Some(options))
        .await
        .map_err(|e| RunError::stack(format!("cannot tag {loaded} as {}: {e}", base.tag)))
}

/// Imports a root filesystem tar (plain or compressed: the engine tells) as the base image,
/// streamed from disk rather than held in memory.
async fn import(docker: &Docker, base: &Base, tar: &Path) -> Result<(), RunError> {
    let file = tokio::fs::File::open(tar)
        .await
        .map_err(|e| RunError::stack(format!("cannot open {}: {e}", tar.display())))?;
    let body = futures_util::stream::unfold(Some(file), |state| async move {
        let mut file = state?;
        let mut buf = vec![0u8; 1 << 20];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let (repo, tag) = base.tag.split_once(':').expect("tag_for puts a colon");
    let mut changes: Vec<String> = CHANGES.iter().map(|c| (*c).to_owned()).collect();
    changes.push(format!(
        "LABEL {RECIPE_LABEL}=\"{}\"",
        recipe_label("debian-base", &base.digest)
    ));
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(changes)
        .build();
    // The engine answers an import only after reading the whole root.
    let long = docker.clone().with_timeout(BUILD_TIMEOUT);
    let run = async {
        let mut stream = long.create_image(Some(options), Some(bollard::body_try_stream(body)), None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| e.to_string())?;
            if let Some(s) = info.status.filter(|s| !s.is_empty()) {
                tracing::info!("debian-base: import: {s}");
            }
        }
        Ok::<(), String>(())
    };
    match tokio::time::timeout(BUILD_TIMEOUT, run).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RunError::stack(format!(
            "importing {} as {} failed: {e}",
            tar.display(),
            base.tag
        ))),
        Err(_) => Err(RunError::stack(format!(
            "importing {} as {} took over {} minutes",
            tar.display(),
            base.tag,
            BUILD_TIMEOUT.as_secs() / 60
        ))),
    }
}

/// Removes the debootstrap work folder. A debootstrap killed mid-way can leave /proc or /sys
/// mounted inside it: those are unmounted first, and removal never crosses into another
/// filesystem, so a leftover mount is skipped rather than emptied.
fn remove_work(work: &Path) {
    if let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") {
        let mut mounts: Vec<&str> = info
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| Path::new(m).starts_with(work))
            .collect();
        mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in mounts {
            let _ = std::process::Command::new("umount").arg("-l").arg(m).status();
        }
    }
    let Ok(meta) = std::fs::symlink_metadata(work) else {
        return;
    };
    if let Err(e) = remove_same_fs(work, meta.dev()) {
        tracing::warn!("could not remove {} entirely: {e}", work.display());
    }
}

fn remove_same_fs(path: &Path, dev: u64) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.dev() != dev {
        return Ok(());
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            remove_same_fs(&entry?.path(), dev)?;
        }
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(path: &Path, names: &[&str]) {
        let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
        b.sparse(false);
        for n in names {
            let mut h = tar::Header::new_gnu();
            h.set_size(2);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, n, &b"{}"[..]).unwrap();
        }
        b.finish().unwrap();
    }

    #[test]
    fn a_saved_image_is_told_from_a_root_filesystem() {
        let dir = std::env::temp_dir().join(format!("gauntlet-debian-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let saved = dir.join("saved.tar");
        tar_with(&saved, &["abc123/layer.tar", "manifest.json", "repositories"]);
        let root = dir.join("root.tar");
        tar_with(&root, &["etc/os-release", "usr/bin/python3", "etc/manifest.json"]);
        assert!(is_docker_save(&saved));
        assert!(
            !is_docker_save(&root),
            "a manifest.json below the top is not docker save's"
        );
        assert!(!is_docker_save(&dir.join("absent.tar")));
        let _ = std::fs::remove_dir_all(dir);
    }
}
