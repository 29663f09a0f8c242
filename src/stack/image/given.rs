//! A recipe's image made elsewhere and named by the environment: `GAUNTLET_IMAGE_<RECIPE>`
//! (`GAUNTLET_IMAGE_LITELLM`, `…_REDIS`, `…_GAUNTLET`) holds a reference the engine already
//! has — the flake's `streamLayeredImage` images, loaded by `nix run .#load-images`, which
//! prints these variables. Such an image must keep the recipe's contract: `/gauntlet`,
//! `redis-server` on PATH, `/opt/litellm/bin/litellm`. Nothing is built or pulled for it: an
//! image that is not there is an error that says how to load it, never a silent fallback to
//! the local recipe (which would test another build than the one named).

use bollard::Docker;

use super::build::exists;
use super::spec::Recipe;
use crate::error::RunError;

/// The variable that names `recipe`'s image.
pub fn variable(recipe: Recipe) -> String {
    format!("GAUNTLET_IMAGE_{}", recipe.name().to_uppercase())
}

/// The reference the environment gives for `recipe`, if any.
pub fn reference(recipe: Recipe) -> Option<String> {
    std::env::var(variable(recipe))
        .ok()
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// `reference`, checked to be an image the engine has.
pub(super) async fn ensure(docker: &Docker, recipe: Recipe, reference: &str) -> Result<(String, bool), RunError> {
    if exists(docker, reference).await? {
        return Ok((reference.to_owned(), false));
    }
    Err(RunError::usage(format!(
        "{}={reference}: the engine has no such image; load it first (the flake's: \
         `nix run .#load-images`), or unset the variable to let gauntlet build its own",
        variable(recipe)
    )))
}
