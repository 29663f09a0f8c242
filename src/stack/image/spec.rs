//! What a manifest service names as `image = "..."`: one of gauntlet's own recipes, built on
//! this machine, or an image pinned by digest. A bare tag is refused because it moves: the
//! same manifest would run different code on different days.

use std::fmt;

use crate::error::RunError;

/// What a manifest service names as `image = "..."`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSpec {
    Recipe(Recipe),
    Pinned(Pinned),
}

/// The built-in local recipes: each builds from what is on this machine (and, for LiteLLM,
/// a Debian mirror and the package index), never from a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Recipe {
    /// gauntlet itself (`/gauntlet`), for the builtins (simulator, ledger sink) in a container.
    Gauntlet,
    /// The host's `redis-server` and `redis-cli`.
    Redis,
    /// The hash-locked LiteLLM proxy in a venv at `/opt/litellm`.
    Litellm,
}

/// An image named by content: `name@sha256:<64 hex>` (a `name:tag@sha256:...` keeps its tag
/// for the reader; the engine goes by the digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub reference: String,
}

const ACCEPTED: &str = "accepted: \"gauntlet\", \"redis\" or \"litellm\" (images gauntlet builds \
                        locally), or \"<name>@sha256:<64 hex digits>\" (an image pinned by digest)";

impl Recipe {
    pub const ALL: [Recipe; 3] = [Recipe::Gauntlet, Recipe::Redis, Recipe::Litellm];

    pub fn name(self) -> &'static str {
        match self {
            Recipe::Gauntlet => "gauntlet",
            Recipe::Redis => "redis",
            Recipe::Litellm => "litellm",
        }
    }

    pub fn from_name(name: &str) -> Option<Recipe> {
        Recipe::ALL.into_iter().find(|r| r.name() == name)
    }

    /// The repository its images are tagged in; the tag is the digest of its inputs.
    pub fn repository(self) -> String {
        format!("gauntlet/{}", self.name())
    }
}

impl ImageSpec {
    /// Reads `text` as written at `origin` (a manifest file and service, say); a usage error
    /// names both and the accepted forms.
    pub fn parse(origin: &str, text: &str) -> Result<ImageSpec, RunError> {
        let bad = |why: &str| RunError::usage(format!("{origin}: image {text:?}: {why}; {ACCEPTED}"));
        let t = text.trim();
        if t.is_empty() {
            return Err(bad("empty"));
        }
        if let Some(r) = Recipe::from_name(t) {
            return Ok(ImageSpec::Recipe(r));
        }
        if t.chars().any(char::is_whitespace) {
            return Err(bad("contains whitespace"));
        }
        let Some((name, digest)) = t.rsplit_once('@') else {
            return Err(if Recipe::from_name(t.split(':').next().unwrap_or("")).is_some() {
                bad(
                    "a bare name is gauntlet's local recipe, which takes no tag (its tag is the \
                     digest of its inputs); an image from elsewhere must be pinned by digest",
                )
            } else {
                bad("no digest: a tag can move to other content, so pin the digest")
            });
        };
        let Some(hex) = digest.strip_prefix("sha256:") else {
            return Err(bad("the digest must be sha256:<64 hex digits>"));
        };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(bad("the digest must be sha256: and 64 lowercase hex digits"));
        }
        check_name(name).map_err(|why| bad(&why))?;
        Ok(ImageSpec::Pinned(Pinned {
            reference: t.to_owned(),
        }))
    }
}

/// Docker's reference grammar, loosely: an optional registry host (which may have a port and
/// capitals), lowercase path components, an optional tag. Loose on purpose: the engine has the
/// last word, this only catches what is plainly not a name before a run starts.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("no name before the digest".into());
    }
    let (path, tag) = match name.rsplit_once(':') {
        // A colon after the last slash is a tag; before it, a registry port.
        Some((p, t)) if !t.contains('/') => (p, Some(t)),
        _ => (name, None),
    };
    if let Some(tag) = tag
        && (tag.is_empty() || tag.len() > 128 || !tag.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
    {
        return Err(format!("bad tag {tag:?}"));
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    let host_like = |p: &str| p.contains('.') || p.contains(':') || p == "localhost";
    if parts.len() > 1 && host_like(parts[0]) {
        let host = parts.remove(0);
        if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b)) {
            return Err(format!("bad registry host {host:?}"));
        }
    }
    for p in parts {
        let ok = !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
            && p.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && p.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
        if !ok {
            return Err(format!(
                "bad name component {p:?} (lowercase letters, digits and . _ - only)"
            ));
        }
    }
    Ok(())
}

impl fmt::Display for Recipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for ImageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageSpec::Recipe(r) => write!(f, "{r} (local recipe)"),
            ImageSpec::Pinned(p) => f.write_str(&p.reference),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn ok(text: &str) -> ImageSpec {
        ImageSpec::parse("stack/gauntlet.toml [redis]", text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn err(text: &str) -> String {
        match ImageSpec::parse("stack/gauntlet.toml [redis]", text) {
            Ok(s) => panic!("{text:?} accepted as {s:?}"),
            Err(e) => {
                assert_eq!(e.exit_code(), crate::error::exit::USAGE);
                e.to_string()
            }
        }
    }

    #[test]
    fn recipes_by_name() {
        assert_eq!(ok("gauntlet"), ImageSpec::Recipe(Recipe::Gauntlet));
        assert_eq!(ok("redis"), ImageSpec::Recipe(Recipe::Redis));
        assert_eq!(ok(" litellm "), ImageSpec::Recipe(Recipe::Litellm));
        for r in Recipe::ALL {
            assert_eq!(Recipe::from_name(r.name()), Some(r));
        }
    }

    #[test]
    fn pinned_forms() {
        for text in [
            format!("redis@{D}"),
            format!("library/redis@{D}"),
            format!("redis:7.2@{D}"),
            format!("registry.example.com:5000/team/litellm-proxy@{D}"),
            format!("localhost/x_y.z@{D}"),
        ] {
            assert_eq!(
                ok(&text),
                ImageSpec::Pinned(Pinned {
                    reference: text.clone()
                })
            );
        }
    }

    #[test]
    fn refusals_name_origin_and_forms() {
        let e = err("redis:7");
        assert!(e.contains("stack/gauntlet.toml [redis]") && e.contains("no tag"), "{e}");
        assert!(
            e.contains("<name>@sha256:<64 hex digits>") && e.contains("\"litellm\""),
            "{e}"
        );
        assert!(err("python:3.11").contains("pin the digest"));
        assert!(err("ubuntu").contains("pin the digest"));
        assert!(err("").contains("empty"));
        assert!(err("redis @sha256:00").contains("whitespace"));
        assert!(err("redis@sha256:abc").contains("64"));
        assert!(err(&format!("redis@{}", D.to_uppercase().replace("SHA256", "sha256"))).contains("lowercase"));
        assert!(err(&format!("redis@md5:{}", &D[7..])).contains("sha256"));
        assert!(err(&format!("@{D}")).contains("no name"));
        assert!(err(&format!("Redis@{D}")).contains("component"));
        assert!(err(&format!("team//redis@{D}")).contains("component"));
        assert!(err(&format!("redis:@{D}")).contains("tag"));
    }
}
