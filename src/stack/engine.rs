//! The Docker Engine as gauntlet talks to it: one connection (`DOCKER_HOST` or the local
//! socket), the API version negotiated down to the engine's (this project's machines run API
//! 1.41; bollard speaks 1.53 unless told), and the labels that mark everything gauntlet
//! creates so `gauntlet down --all` can find what a dead run left.

use std::time::Duration;

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, RemoveContainerOptionsBuilder,
};

use crate::error::RunError;

/// On every container and network: the run that made it.
pub const RUN_LABEL: &str = "dev.gauntlet.run";
/// On every container and network: the process that owns the run (for `down --all` to
/// tell a live run from a dead one's leftovers).
pub const OWNER_LABEL: &str = "dev.gauntlet.owner-pid";
/// On every container: the manifest service it runs.
pub const SERVICE_LABEL: &str = "dev.gauntlet.service";
/// On every image gauntlet builds: the recipe and the digest of its inputs.
pub const RECIPE_LABEL: &str = "dev.gauntlet.recipe";

/// How long one engine call may take before the run gives up on the engine (image builds and
/// pulls have their own, longer bounds).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// Connects to the engine and checks it answers, bounded: an unreachable socket is one clear
/// error, not a hang.
pub async fn connect() -> Result<Docker, RunError> {
    let host = std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
    let unreachable = |e: &dyn std::fmt::Display| {
        RunError::stack(format!(
            "cannot reach the Docker Engine at {host}: {e}; start it (systemctl start docker), \
             fix DOCKER_HOST, or use the process backend (unset GAUNTLET_BACKEND)"
        ))
    };
    let docker = Docker::connect_with_defaults().map_err(|e| unreachable(&e))?;
    let docker = docker.with_timeout(CALL_TIMEOUT);
    let negotiated = tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
        .await
        .map_err(|_| unreachable(&"no answer within 10 s"))?
        .map_err(|e| unreachable(&e))?;
    Ok(negotiated)
}

/// Runs `f` with a fresh engine connection on a thread of its own with its own runtime: for
/// `Drop` and the signal handler, which may run inside (or outside) a Tokio runtime and
/// cannot `.await`.
pub fn blocking<T: Send + 'static>(
    f: impl FnOnce(Docker) -> std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>> + Send + 'static,
) -> Option<T> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        rt.block_on(async move {
            let docker = connect().await.ok()?;
            Some(f(docker).await)
        })
    })
    .join()
    .ok()
    .flatten()
}

/// Removes the containers and networks of one run.
pub async fn sweep_run(docker: &Docker, run: &str) -> (usize, usize) {
    sweep_where(docker, &format!("{RUN_LABEL}={run}"), |_| true).await
}

/// `gauntlet down --all`: removes what runs whose owner is no longer alive left behind (a
/// live run's are its own to stop). Returns (containers, networks) removed.
pub async fn sweep(docker: &Docker, include_live: bool) -> (usize, usize) {
    sweep_where(docker, RUN_LABEL, |labels| {
        include_live
            || !labels
                .get(OWNER_LABEL)
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(super::state::alive)
    })
    .await
}

async fn sweep_where(docker: &Docker, label: &str, take: impl Fn(&HashMap<String, String>) -> bool) -> (usize, usize) {
    let filters = HashMap::from([("label", vec![label])]);
    // Another teardown path may be removing the same containers (the signal handler beside a
    // stack's own stop): the engine then refuses ours ("removal already in progress") and the
    // container is still listed for a moment. So list again until none is left, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut removed = 0;
    loop {
        let containers = docker
            .list_containers(Some(
                ListContainersOptionsBuilder::new().all(true).filters(&filters).build(),
            ))
            .await
            .unwrap_or_default();
        let doomed: Vec<String> = containers
            .into_iter()
            .filter(|c| take(c.labels.as_ref().unwrap_or(&HashMap::new())))
            .filter_map(|c| c.id)
            .collect();
        if doomed.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        let removals = doomed.iter().map(|id| async move {
            let opts = RemoveContainerOptionsBuilder::new().force(true).v(true).build();
            // Bounded: a wedged engine must not hang teardown.
            tokio::time::timeout_at(deadline, docker.remove_container(id, Some(opts)))
                .await
                .is_ok_and(|r| r.is_ok())
        });
        let ok = futures_util::future::join_all(removals)
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count();
        removed += ok;
        if ok < doomed.len() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let networks = docker
        .list_networks(Some(ListNetworksOptionsBuilder::new().filters(&filters).build()))
        .await
        .unwrap_or_default();
    let mut nets = 0;
    for n in networks {
        if !take(n.labels.as_ref().unwrap_or(&HashMap::new())) {
            continue;
        }
        if let Some(name) = n.name
            && tokio::time::timeout(Duration::from_secs(30), docker.remove_network(&name))
                .await
                .is_ok_and(|r| r.is_ok())
        {
            nets += 1;
        }
    }
    (removed, nets)
}
