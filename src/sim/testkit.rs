//! What the simulator's HTTP tests share: a tag, a running simulator, a request.

use std::time::Duration;

use serde_json::Value;

use super::{DeploymentSpec, SimConfig, SimHandle, start};
use crate::tag::Tag;

pub fn tag(s: &str) -> Tag {
    s.parse().unwrap()
}

/// A simulator on a free port, seeded, with these deployments.
pub async fn sim(names: &[&str]) -> SimHandle {
    let cfg = SimConfig {
        seed: 7,
        deployments: names.iter().map(|n| DeploymentSpec::named(n)).collect(),
        ..SimConfig::default()
    };
    sim_with(cfg).await
}

/// A simulator on a free port with this config.
pub async fn sim_with(cfg: SimConfig) -> SimHandle {
    start(cfg, "127.0.0.1:0".parse().unwrap()).await.unwrap()
}

/// POSTs `body` with `headers`, bounded by 5 s.
pub async fn send(url: &str, body: &Value, headers: &[(&str, &str)]) -> reqwest::Result<reqwest::Response> {
    let mut rb = reqwest::Client::new()
        .post(url)
        .json(body)
        .timeout(Duration::from_secs(5));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await
}
