//! The `FROM scratch` recipes: a host binary and exactly the shared libraries `ldd` says it
//! loads, each at the path the host's loader found it, so the image runs the very code the
//! process backend runs, in a few megabytes, with nothing fetched.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use bollard::Docker;

use super::build::{Context, ensure_recipe};
use super::spec::Recipe;
use crate::error::RunError;

/// Where gauntlet is in [`Recipe::Gauntlet`]'s image.
pub const GAUNTLET_BIN: &str = "/gauntlet";

/// Bumped when a recipe changes what it makes of the same inputs outside its context.
const GAUNTLET_RECIPE: &str = "gauntlet-scratch-1";
const REDIS_RECIPE: &str = "redis-scratch-1";

/// The "base image" that goes into a scratch recipe's digest.
const SCRATCH: &str = "scratch";

pub(super) async fn ensure_gauntlet(docker: &Docker) -> Result<(String, bool), RunError> {
    let bin = gauntlet_binary()?;
    let context = blocking(move || gauntlet_context(&bin)).await?;
    ensure_recipe(docker, Recipe::Gauntlet, GAUNTLET_RECIPE, SCRATCH, &context).await
}

pub(super) async fn ensure_redis(docker: &Docker) -> Result<(String, bool), RunError> {
    let context = blocking(redis_context).await?;
    ensure_recipe(docker, Recipe::Redis, REDIS_RECIPE, SCRATCH, &context).await
}

/// Reading a 150 MB binary and running strip and ldd must not stall the runtime's workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, RunError> + Send + 'static) -> Result<T, RunError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RunError::stack(format!("image context preparation panicked: {e}")))?
}

/// The binary to put in the image: `GAUNTLET_BIN`; else this process when it is gauntlet;
/// else the `gauntlet` next to this process or one folder up (a cargo test binary runs from
/// `target/<profile>/deps/`, gauntlet is in `target/<profile>/`).
pub fn gauntlet_binary() -> Result<PathBuf, RunError> {
    if let Some(bin) = std::env::var_os("GAUNTLET_BIN").filter(|b| !b.is_empty()) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(RunError::usage(format!(
                "GAUNTLET_BIN={} is not a file; point it at a gauntlet binary or unset it",
                bin.display()
            )))
        };
    }
    let exe =
        std::env::current_exe().map_err(|e| RunError::stack(format!("cannot tell which binary is running: {e}")))?;
    if exe.file_name().is_some_and(|n| n == "gauntlet") {
        return Ok(exe);
    }
    let candidates: Vec<PathBuf> = exe.ancestors().skip(1).take(2).map(|d| d.join("gauntlet")).collect();
    candidates.iter().find(|c| c.is_file()).cloned().ok_or_else(|| {
        RunError::stack(format!(
            "no gauntlet binary for the gauntlet image (looked at {}): run `cargo build` first, \
             or set GAUNTLET_BIN to a gauntlet binary",
            candidates
                .iter()
                .map(|c| c.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}

fn gauntlet_context(bin: &Path) -> Result<Context, RunError> {
    let mut c = Context::default();
    c.file(&format!("rootfs{GAUNTLET_BIN}"), stripped(bin)?, 0o755);
    add_libraries(&mut c, &ldd(bin)?)?;
    add_base_files(&mut c);
    c.file(
        "Dockerfile",
        b"FROM scratch\nCOPY rootfs/ /\nENV PATH=/:/usr/local/bin:/usr/bin:/bin\nWORKDIR /tmp\n".to_vec(),
        0o644,
    );
    Ok(c)
}

fn redis_context() -> Result<Context, RunError> {
    let mut c = Context::default();
    let mut libs = Vec::new();
    let mut dirs = vec!["/usr/local/bin".to_owned(), "/usr/bin".to_owned(), "/bin".to_owned()];
    for name in ["redis-server", "redis-cli"] {
        let bin = on_path(name).ok_or_else(|| {
            RunError::stack(format!(
                "{name} is not on PATH, and the redis image is made from the host's: \
                 apt-get install redis-server"
            ))
        })?;
        // Read through symlinks: Debian's redis-server links to redis-check-rdb, which picks
        // its mode from argv[0], so the file must stand at the redis-server name.
        c.file(&format!("rootfs{}", bin.display()), read(&bin)?, 0o755);
        libs.extend(ldd(&bin)?);
        if let Some(dir) = bin.parent().map(|d| d.display().to_string())
            && !dirs.contains(&dir)
        {
            dirs.insert(0, dir);
        }
    }
    add_libraries(&mut c, &libs)?;
    add_base_files(&mut c);
    c.dir("rootfs/data", 0o777);
    c.file(
        "Dockerfile",
        format!(
            "FROM scratch\nCOPY rootfs/ /\nENV PATH={}\nWORKDIR /data\n",
            dirs.join(":")
        )
        .into_bytes(),
        0o644,
    );
    Ok(c)
}

/// What programs expect of any root: a world-writable /tmp, root and nobody by name, and
/// `/etc/hosts` read before DNS (glibc's default without nsswitch.conf asks DNS first, and
/// a container network's DNS need not know `localhost`).
fn add_base_files(c: &mut Context) {
    c.dir("rootfs/tmp", 0o1777);
    c.file(
        "rootfs/etc/passwd",
        b"root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n".to_vec(),
        0o644,
    );
    c.file("rootfs/etc/group", b"root:x:0:\nnogroup:x:65534:\n".to_vec(), 0o644);
    c.file(
        "rootfs/etc/nsswitch.conf",
        b"passwd: files\ngroup: files\nhosts: files dns\n".to_vec(),
        0o644,
    );
}

fn add_libraries(c: &mut Context, libs: &[PathBuf]) -> Result<(), RunError> {
    for lib in libs {
        let at = format!("rootfs{}", lib.display());
        if !c.contains(&at) {
            c.file(&at, read(lib)?, 0o755);
        }
    }
    Ok(())
}

fn read(path: &Path) -> Result<Vec<u8>, RunError> {
    std::fs::read(path).map_err(|e| RunError::stack(format!("cannot read {}: {e}", path.display())))
}

pub(super) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    // sbin folders too: a non-root PATH often lacks them.
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The binary with its debug info stripped (a debug build is ~150 MB, ~90% of it DWARF).
/// Without `strip`, the binary as it is: bigger, still right.
fn stripped(bin: &Path) -> Result<Vec<u8>, RunError> {
    let out = std::env::temp_dir().join(format!(
        "gauntlet-image-{}-{}",
        std::process::id(),
        bin.file_name().and_then(|n| n.to_str()).unwrap_or("bin")
    ));
    let result = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&out)
        .arg(bin)
        .output();
    let bytes = match result {
        Ok(o) if o.status.success() => read(&out),
        Ok(o) => {
            tracing::warn!(
                "strip --strip-debug {} failed ({}), using it unstripped: {}",
                bin.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            );
            read(bin)
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            tracing::warn!(
                "no strip (apt-get install binutils): {} goes in unstripped",
                bin.display()
            );
            read(bin)
        }
        Err(e) => Err(RunError::stack(format!("strip failed to start: {e}"))),
    };
    let _ = std::fs::remove_file(&out);
    bytes
}

/// The shared libraries `bin` loads, the dynamic loader among them, as the host resolves them.
fn ldd(bin: &Path) -> Result<Vec<PathBuf>, RunError> {
    let out = Command::new("ldd").arg(bin).output().map_err(|e| {
        RunError::stack(format!(
            "cannot run ldd to find {}'s libraries ({e}): apt-get install libc-bin",
            bin.display()
        ))
    })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !out.status.success() {
        return Err(RunError::stack(format!(
            "ldd {} failed: {}",
            bin.display(),
            text.trim()
        )));
    }
    parse_ldd(&text).map_err(|e| RunError::stack(format!("ldd {}: {e}", bin.display())))
}

/// Reads ldd's lines: `name => /path (0x...)` (a library), `/path (0x...)` (the loader),
/// `name (0x...)` (the vDSO, which the kernel supplies), `name => not found` (an error).
fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs: Vec<PathBuf> = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let target = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    return Err(format!(
                        "{} is not found on this machine; install the package that has it",
                        name.trim()
                    ));
                }
                rest
            }
            None => line,
        };
        let path = target.split(" (").next().unwrap_or("").trim();
        if path.starts_with('/') {
            let path = PathBuf::from(path);
            if !libs.contains(&path) {
                libs.push(path);
            }
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_lines_give_libraries_and_the_loader() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd4a7f2000)\n\
                    \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f0c1a9e0000)\n\
                    \tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f0c1a900000)\n\
                    \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0c1a71e000)\n\
                    \t/lib64/ld-linux-x86-64.so.2 (0x00007f0c1c129000)\n\
                    \tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f0c1a900000)\n";
        let libs = parse_ldd(text).unwrap();
        let want = [
            "/lib/x86_64-linux-gnu/libgcc_s.so.1",
            "/lib/x86_64-linux-gnu/libm.so.6",
            "/lib/x86_64-linux-gnu/libc.so.6",
            "/lib64/ld-linux-x86-64.so.2",
        ];
        assert_eq!(libs, want.map(PathBuf::from));
    }

    #[test]
    fn ldd_old_vdso_form_and_missing_library() {
        let old = "\tlinux-vdso.so.1 =>  (0x00007fff)\n\tlibz.so.1 => /usr/lib/libz.so.1 (0x1)\n";
        assert_eq!(parse_ldd(old).unwrap(), vec![PathBuf::from("/usr/lib/libz.so.1")]);
        let missing = "\tlibjemalloc.so.2 => not found\n\tlibc.so.6 => /lib/libc.so.6 (0x1)\n";
        let e = parse_ldd(missing).unwrap_err();
        assert!(e.contains("libjemalloc.so.2"), "{e}");
        assert!(parse_ldd("\tstatically linked\n").unwrap().is_empty());
    }
}
