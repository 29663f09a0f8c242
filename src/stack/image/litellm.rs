//! The LiteLLM image: the Debian base plus a venv at `/opt/litellm` installed from the same
//! hash-locked requirements the process backend uses (`stack::litellm::LOCK`), so both
//! backends run the same pinned proxy.

use bollard::Docker;

use super::build::{Context, ensure_recipe, exists};
use super::spec::Recipe;
use crate::error::RunError;
use crate::stack::litellm::LOCK;

/// Where `litellm` is in [`Recipe::Litellm`]'s image.
pub const LITELLM_BIN: &str = "/opt/litellm/bin/litellm";

/// Bumped when this recipe changes what it makes of the same inputs outside its context.
const RECIPE: &str = "litellm-venv-1";

const DEFAULT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

pub(super) async fn ensure(docker: &Docker) -> Result<(String, bool), RunError> {
    let base = super::debian::plan().await?;
    let context = context(&base.tag)?;
    // A warm image needs no base: ensure_recipe would find it too, but only after the base
    // had been made, which on a machine that pruned it means a debootstrap for nothing.
    let (tag, _) = super::build::planned_tag(Recipe::Litellm, RECIPE, &base.tag, &context)?;
    if exists(docker, &tag).await? {
        return Ok((tag, false));
    }
    super::debian::ensure(docker, &base).await?;
    ensure_recipe(docker, Recipe::Litellm, RECIPE, &base.tag, &context).await
}

/// The proxy's host CA bundle goes into the build, for pip only: HTTPS here passes a proxy
/// that re-signs TLS, which the base's own bundle does not trust.
fn ca_bundle() -> Result<Vec<u8>, RunError> {
    let (path, from_env) = match std::env::var("SSL_CERT_FILE").ok().filter(|p| !p.is_empty()) {
        Some(p) => (p, true),
        None => (DEFAULT_CA_BUNDLE.to_owned(), false),
    };
    std::fs::read(&path).map_err(|e| {
        let fix = if from_env {
            "fix SSL_CERT_FILE"
        } else {
            "apt-get install ca-certificates, or set SSL_CERT_FILE to your CA bundle"
        };
        RunError::stack(format!(
            "the LiteLLM image build needs the CA bundle {path} for pip ({e}): {fix}"
        ))
    })
}

fn context(base: &str) -> Result<Context, RunError> {
    let mut c = Context::default();
    c.file("Dockerfile", dockerfile(base).into_bytes(), 0o644);
    c.file("requirements.lock", LOCK.as_bytes().to_vec(), 0o644);
    c.file("ca.crt", ca_bundle()?, 0o644);
    Ok(c)
}

/// The stack runs offline, so the image never fetches LiteLLM's model cost map (it would wait
/// on GitHub at every start); the import check at the end fails the build, not a later run,
/// when a wheel is broken.
fn dockerfile(base: &str) -> String {
    format!(
        "FROM {base}\n\
         ENV LITELLM_LOCAL_MODEL_COST_MAP=True PYTHONUNBUFFERED=1\n\
         COPY requirements.lock ca.crt /build/\n\
         RUN export PIP_CERT=/build/ca.crt SSL_CERT_FILE=/build/ca.crt REQUESTS_CA_BUNDLE=/build/ca.crt \\\n \
         && python3 -m venv /opt/litellm \\\n \
         && /opt/litellm/bin/pip install --no-cache-dir --disable-pip-version-check --no-input \\\n    \
         --progress-bar off --require-hashes --no-deps -r /build/requirements.lock \\\n \
         && /opt/litellm/bin/python -c 'import litellm, litellm.proxy.proxy_server' \\\n \
         && test -x {LITELLM_BIN}\n\
         ENV PATH=/opt/litellm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_uses_the_lock_with_hashes_and_the_bundle_only_while_installing() {
        let d = dockerfile("gauntlet/debian-base:0123456789abcdef");
        assert!(d.starts_with("FROM gauntlet/debian-base:0123456789abcdef\n"));
        assert!(d.contains("--require-hashes --no-deps -r /build/requirements.lock"));
        let run = d.lines().position(|l| l.starts_with("RUN export PIP_CERT=")).unwrap();
        assert!(!d.lines().any(|l| l.starts_with("ENV") && l.contains("CERT")), "{d}");
        assert!(d.lines().skip(run).any(|l| l.contains(LITELLM_BIN)));
    }
}
