//! Secrets stay secret: the master key and provider keys never show up in what the stack
//! writes or exposes — service logs as saved to the artifacts, the simulator's journal
//! (which sees the router's provider Authorization header), the router's logging payloads.

use crate::runner::context::Ctx;
use crate::runner::registry::{Case, Plan};
use crate::stack::role::Role;

pub fn cases(plan: &Plan) -> Vec<Case> {
    let cases = vec![
        Case::new("secrets::not_in_saved_service_logs", saved_logs).needs(&[Role::Simulator]),
        Case::new("secrets::not_in_simulator_journal", journal).needs(&[Role::Simulator]),
        Case::new("secrets::not_in_router_log_payloads", payloads).needs(&[Role::LedgerSink]),
    ];
    crate::suites::support::on_probe_group(plan, cases)
}

/// The secrets this stack holds: the master key, and the provider-key prefix gauntlet uses.
fn leaks(c: &Ctx, text: &str) -> Vec<&'static str> {
    let mut found = Vec::new();
    if c.endpoints.master_key.as_deref().is_some_and(|k| text.contains(k)) {
        found.push("the master key");
    }
    if text.contains("sk-provider-") {
        found.push("a provider key");
    }
    found
}

async fn exercise(c: &Ctx) -> anyhow::Result<()> {
    let group = c.probe_group()?;
    c.router
        .chat(&c.chat_body(&group, c.tag(), "secret check"))
        .await?
        .expect_status(200)?;
    // A refused request puts a wrong key in front of the router too.
    let _ = c
        .router
        .with_key(Some("sk-wrong-key-planted-0000".into()))
        .chat(&c.chat_body(&group, c.tag(), "x"))
        .await?;
    Ok(())
}

async fn saved_logs(c: Ctx) -> anyhow::Result<()> {
    anyhow::ensure!(
        !c.endpoints.logs.is_empty(),
        "this target has no service logs to check (attached without logs?)"
    );
    exercise(&c).await?;
    let dir = std::env::temp_dir().join(format!("gauntlet-secrets-{}", c.tag()));
    let written = crate::stack::save_logs(&c.endpoints, &dir);
    anyhow::ensure!(!written.is_empty(), "no service log could be saved");
    let mut bad = Vec::new();
    for f in &written {
        let text = std::fs::read_to_string(f)?;
        for what in leaks(&c, &text) {
            bad.push(format!("{what} in {}", f.display()));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    anyhow::ensure!(bad.is_empty(), "secrets in saved logs: {}", bad.join(", "));
    Ok(())
}

async fn journal(c: Ctx) -> anyhow::Result<()> {
    exercise(&c).await?;
    let text = c.sim()?.journal_text(c.tag()).await?;
    anyhow::ensure!(
        text.contains(c.tag().as_str()),
        "the journal has no entry for this case"
    );
    let found = leaks(&c, &text);
    anyhow::ensure!(
        found.is_empty(),
        "the simulator journal exposes {}",
        found.join(" and ")
    );
    Ok(())
}

async fn payloads(c: Ctx) -> anyhow::Result<()> {
    exercise(&c).await?;
    let records = c
        .sink()?
        .wait_for(c.tag(), 1, std::time::Duration::from_secs(30))
        .await?;
    let raw: Vec<&serde_json::Value> = records.iter().map(|r| &r.raw).collect();
    let text = serde_json::to_string(&raw)?;
    let found = leaks(&c, &text);
    anyhow::ensure!(
        found.is_empty(),
        "the router's logging payloads carry {}",
        found.join(" and ")
    );
    Ok(())
}
