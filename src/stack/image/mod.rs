//! Container images for the Docker backend, made on this machine and named by content.
//!
//! A manifest service says `image = "..."` ([`ImageSpec`]): one of gauntlet's recipes
//! ([`Recipe`]: `gauntlet`, `redis`, `litellm`) or an image pinned by digest ([`Pinned`]).
//! [`ensure`] makes it available: an inspect when it is there, else a build (recipes) or a
//! pull (pinned). `gauntlet images build|list` ([`images_cli`]) does the same ahead of a run.
//!
//! - `spec`: the accepted forms of `image = "..."`.
//! - `build`: the in-memory context, the digest tag, the build lock, the legacy builder's
//!   output, [`ensure`].
//! - `scratch`: `FROM scratch` images of a host binary and the libraries `ldd` lists
//!   (gauntlet itself, Redis).
//! - `debian`: the Debian 12 base, from debootstrap or `GAUNTLET_BASE_TARBALL`.
//! - `litellm`: the base plus a venv from the hash-locked requirements.
//! - `pull`: pinned images.
//! - `given`: a recipe's image made elsewhere (the flake's Nix-built images), named by
//!   `GAUNTLET_IMAGE_<RECIPE>`.
//!
//! ## Design note: why build locally, and why tags are digests
//!
//! These machines reach no registry, only package mirrors, and the engine is Docker 20.10
//! without BuildKit. So every image is made from what is here: host binaries copied with their
//! libraries (the same code the process backend runs, no distribution needed), and a Debian
//! root from debootstrap (a mirror, not a registry) for LiteLLM, which needs a Python. Each
//! recipe image is tagged `gauntlet/<recipe>:<16 hex>`, the digest of everything that goes in
//! (context bytes, base reference, recipe version), with the context tarred in memory in a
//! fixed order with fixed owners and mtimes. A warm run is then one inspect per image, and a
//! changed input (a rebuilt gauntlet, a new lock) is a new tag rather than a stale image reused:
//! there is no cache to invalidate. Old tags stay until removed (`gauntlet images list`).
//! Pinned images must carry a digest because a tag moves; with no registry, `docker load` is
//! how one arrives, and a loaded image answers to its ID, so a reference pinned to that ID is
//! found by the digest alone.

mod build;
mod cli;
mod debian;
mod ensure;
mod given;
mod litellm;
mod pull;
mod scratch;
mod spec;

pub use build::{BUILD_TIMEOUT, PULL_TIMEOUT};
pub use cli::{ImagesArgs, ImagesCommand, images_cli};
pub use ensure::{Ready, ensure};
pub use litellm::LITELLM_BIN;
pub use scratch::{GAUNTLET_BIN, gauntlet_binary};
pub use spec::{ImageSpec, Pinned, Recipe};
