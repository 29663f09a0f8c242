//! Pinned images: used when the engine has them, pulled otherwise. This project's machines
//! reach no registry, so the failure says what does work: a local recipe, or `docker load`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures_util::StreamExt;

use super::build::{PULL_TIMEOUT, exists};
use super::spec::Pinned;
use crate::error::RunError;

/// Progress lines for one layer's download are this far apart at least.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

pub(super) async fn ensure(docker: &Docker, pinned: &Pinned) -> Result<(String, bool), RunError> {
    let reference = pinned.reference.as_str();
    if exists(docker, reference).await? {
        return Ok((reference.to_owned(), false));
    }
    // `docker load` keeps no repository digest, so a loaded image answers only to its ID: a
    // reference pinned to that ID is the same content, found by the digest alone.
    let id = format!("sha256:{}", digest_hex(reference));
    if id.len() > "sha256:".len() && exists(docker, &id).await? {
        return Ok((id, false));
    }
    tracing::info!("pulling {reference}");
    let started = Instant::now();
    let outcome = match tokio::time::timeout(PULL_TIMEOUT, pull(docker, reference)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no result within {} minutes", PULL_TIMEOUT.as_secs() / 60)),
    };
    if let Err(e) = outcome {
        return Err(RunError::stack(format!(
            "image {reference} is not on this machine and pulling it failed after {:.0}s: {e}. \
             No registry answered (this project's machines reach none). Use a local recipe \
             instead (image = \"gauntlet\", \"redis\" or \"litellm\"), or `docker load -i` an \
             image saved elsewhere with `docker save` and pin it as <name>@sha256:<its image ID> \
             (docker images --no-trunc shows the ID)",
            started.elapsed().as_secs_f64()
        )));
    }
    if !exists(docker, reference).await? {
        return Err(RunError::stack(format!(
            "the pull of {reference} finished but the engine has no such image"
        )));
    }
    tracing::info!("pulled {reference} in {:.0}s", started.elapsed().as_secs_f64());
    Ok((reference.to_owned(), true))
}

fn digest_hex(reference: &str) -> &str {
    reference.rsplit_once("@sha256:").map_or("", |(_, hex)| hex)
}

async fn pull(docker: &Docker, reference: &str) -> Result<(), String> {
    let options = CreateImageOptionsBuilder::default().from_image(reference).build();
    let long = docker.clone().with_timeout(PULL_TIMEOUT);
    let mut stream = long.create_image(Some(options), None, None);
    let mut last: HashMap<String, (String, Instant)> = HashMap::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| e.to_string())?;
        let Some(status) = info.status.filter(|s| !s.is_empty()) else {
            continue;
        };
        let id = info.id.unwrap_or_default();
        let now = Instant::now();
        let due = match last.get(&id) {
            Some((s, at)) => *s != status || now.duration_since(*at) >= PROGRESS_EVERY,
            None => true,
        };
        if !due {
            continue;
        }
        let progress = info
            .progress_detail
            .and_then(|p| Some((p.current?, p.total?)))
            .filter(|(_, total)| *total > 0)
            .map(|(c, t)| format!(" {:.1}/{:.1} MB", c as f64 / 1e6, t as f64 / 1e6))
            .unwrap_or_default();
        let who = if id.is_empty() {
            String::new()
        } else {
            format!("{id}: ")
        };
        tracing::info!("pull {reference}: {who}{status}{progress}");
        last.insert(id, (status, now));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_of_a_reference() {
        let hex = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(digest_hex(&format!("redis:7@sha256:{hex}")), hex);
        assert_eq!(digest_hex("redis"), "");
    }
}
