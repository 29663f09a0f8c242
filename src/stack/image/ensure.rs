//! [`ensure`]: one image made available, whichever way its spec says — a recipe built here
//! (or made elsewhere and named by `GAUNTLET_IMAGE_<RECIPE>`) or a pinned reference pulled.
//! The one place that knows every way; each way lives in its own file and shares only the
//! build helpers (`build.rs`).

use std::time::{Duration, Instant};

use bollard::Docker;

use super::build::size_of;
use super::spec::{ImageSpec, Recipe};
use crate::error::RunError;

/// An image that is there now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ready {
    /// What to create containers from: the recipe's digest tag, the pinned reference, or, for
    /// a pinned image loaded with `docker load` (which keeps no repository digest), its ID.
    pub reference: String,
    /// False when it was already there (warm: inspected, nothing built or pulled).
    pub built: bool,
    pub took: Duration,
    pub size_bytes: u64,
}

/// Makes the image available locally: inspect; if absent, build (recipes) or pull (pinned,
/// with progress lines via tracing). Bounded (builds 20 min, pull 30 min).
pub async fn ensure(docker: &Docker, spec: &ImageSpec) -> Result<Ready, RunError> {
    let started = Instant::now();
    let (reference, built) = match spec {
        ImageSpec::Recipe(r) if let Some(given) = super::given::reference(*r) => {
            super::given::ensure(docker, *r, &given).await?
        }
        ImageSpec::Recipe(Recipe::Gauntlet) => super::scratch::ensure_gauntlet(docker).await?,
        ImageSpec::Recipe(Recipe::Redis) => super::scratch::ensure_redis(docker).await?,
        ImageSpec::Recipe(Recipe::Litellm) => super::litellm::ensure(docker).await?,
        ImageSpec::Pinned(p) => super::pull::ensure(docker, p).await?,
    };
    let size_bytes = size_of(docker, &reference).await?;
    Ok(Ready {
        reference,
        built,
        took: started.elapsed(),
        size_bytes,
    })
}
