//! Conformance: a client nobody here wrote — the official OpenAI Python SDK — parses every
//! reply of the simulator (plain, streamed, legacy, models) and maps each simulated error to
//! its own exception type, decodes non-ASCII streams whole (CJK, emoji, RTL, combining marks);
//! and the same SDK talks to the real router in front of it.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};
use crate::stack::role::Role;

const SCRIPT: &str = include_str!("openai_sdk.py");

pub fn cases(plan: &Plan) -> Vec<Case> {
    // A Python start-up each (the SDK's import alone takes a second or two of CPU), and on
    // the simulator the SDK's 3 s timeout on a hanging call.
    // It calls the first simulator deployment directly, faults included: that deployment's
    // group is claimed like any traffic's, or a case that owns the group (a cooldown window
    // that must see no calls) counts these (seen on the usage_limits fixture).
    let direct = plan.config.sim_deployments().into_iter().next();
    let group: Vec<String> = direct
        .as_deref()
        .and_then(|d| plan.config.group_of_sim(d))
        .map(str::to_owned)
        .into_iter()
        .collect();
    let mut cases = vec![
        Case::new("conformance::openai_sdk::simulator", simulator)
            .needs(&[Role::Simulator])
            .uses(&group)
            .cost(5.0),
    ];
    cases.extend(crate::suites::support::on_probe_group(
        plan,
        vec![
            Case::new("conformance::openai_sdk::through_router", through_router)
                .needs(&[Role::Simulator])
                .cost(3.0),
        ],
    ));
    cases
}

/// The Python that has the `openai` package: the pinned LiteLLM's venv (LiteLLM depends on it).
fn python() -> anyhow::Result<PathBuf> {
    let litellm = crate::stack::litellm::resolve()?;
    let py = litellm.with_file_name("python");
    anyhow::ensure!(
        py.is_file(),
        "the OpenAI SDK check needs the python next to {} (a venv with the openai package)",
        litellm.display()
    );
    Ok(py)
}

async fn run_sdk(
    base_url: &str,
    key: Option<&str>,
    model: &str,
    faults: bool,
    charset_model: Option<&str>,
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let py = tokio::task::spawn_blocking(python).await??;
    let dir = std::env::temp_dir().join(format!("gauntlet-sdk-{}", crate::random::random_hex(4)));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("openai_sdk.py");
    std::fs::write(&script, SCRIPT)?;
    let mut cmd = tokio::process::Command::new(py);
    cmd.arg(&script)
        // The key travels in the environment, never on a command line others can read.
        .env("SDK_BASE_URL", base_url)
        .env("SDK_API_KEY", key.unwrap_or(""))
        .env("SDK_MODEL", model)
        .env("SDK_FAULTS", if faults { "1" } else { "0" })
        .env("SDK_CHARSET_MODEL", charset_model.unwrap_or(""))
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .map_err(|_| anyhow::anyhow!("the OpenAI SDK check did not finish within 300s"))??;
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).map_err(|e| {
        anyhow::anyhow!(
            "the OpenAI SDK check printed no result ({e}); stderr: {}",
            crate::client::excerpt(&String::from_utf8_lossy(&out.stderr))
        )
    })?;
    v.as_object()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the OpenAI SDK check printed {v}"))
}

fn verdict(results: &serde_json::Map<String, Value>, expected: usize) -> anyhow::Result<()> {
    let failed: Vec<String> = results
        .iter()
        .filter(|(_, v)| v.as_str() != Some("ok"))
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    anyhow::ensure!(
        failed.is_empty(),
        "the OpenAI SDK disagrees:\n  {}",
        failed.join("\n  ")
    );
    anyhow::ensure!(
        results.len() == expected,
        "expected {expected} SDK checks, got {}: {results:?}",
        results.len()
    );
    tracing::info!(checks = ?results.keys().collect::<Vec<_>>(), "the OpenAI SDK accepts every reply");
    Ok(())
}

async fn simulator(c: Ctx) -> anyhow::Result<()> {
    let sim = c
        .endpoints
        .url_of(Role::Simulator)
        .ok_or_else(|| anyhow::anyhow!("no simulator"))?;
    // Every simulator deployment answers on the OpenAI routes too, whatever dialect the
    // router uses for it.
    let d = c
        .config
        .sim_deployments()
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no simulator deployment"))?;
    let results = run_sdk(&format!("{sim}/d/{d}/v1"), None, "sim-model", true, Some("sim-model")).await?;
    verdict(&results, 15)
}

async fn through_router(c: Ctx) -> anyhow::Result<()> {
    let group = c.probe_group()?;
    let base = format!("{}/v1", c.router.base);
    // Non-ASCII streams through the router where a group passes `sim_charset` on.
    let charsets = crate::suites::text::text_group(&c.config, false).ok();
    let results = run_sdk(
        &base,
        c.endpoints.master_key.as_deref(),
        &group,
        false,
        charsets.as_deref(),
    )
    .await?;
    verdict(&results, if charsets.is_some() { 7 } else { 3 })
}
