//! `gauntlet load`'s stack side: with `--url`, the server named; without, gauntlet's own
//! stack started here (as `gauntlet up` starts it), its router loaded on the first simulated
//! chat group and, with `--overhead`, that group's simulator deployment loaded directly too.
//! The stack is stopped however the run ends.

use crate::error::RunError;
use crate::load::{LoadArgs, LoadCli, LoadCommand, Settings, Target, run as load};
use crate::stack::role::Role;

pub fn main(cli: LoadCli) -> anyhow::Result<()> {
    match cli.command {
        Some(LoadCommand::Merge { reports, out }) => load::merge_cli(&reports, &out),
        Some(LoadCommand::Compare { baseline, report, rule }) => load::compare_cli(&baseline, &report, rule),
        None => {
            let a = cli.run;
            let settings = Settings::from_args(&a)?;
            let report = match &a.url {
                Some(url) => against_url(&a, url, &settings)?,
                None => embedded(&a, settings)?,
            };
            load::conclude(&a, &report)
        }
    }
}

fn against_url(a: &LoadArgs, url: &str, s: &Settings) -> anyhow::Result<crate::load::Report> {
    if a.overhead && a.direct_url.is_none() {
        return Err(RunError::usage(
            "--overhead with --url needs --direct-url: the upstream the router sends to, loaded the same way",
        )
        .into());
    }
    let model = match &a.model {
        Some(m) => m.clone(),
        None => tokio::runtime::Runtime::new()?.block_on(load::discover_model(url, a.api_key.as_deref()))?,
    };
    let mut targets = Vec::new();
    if let Some(d) = &a.direct_url {
        targets.push(Target {
            label: "direct".into(),
            url: d.clone(),
            key: a.api_key.clone(),
            model: model.clone(),
        });
    }
    targets.push(Target {
        label: if targets.is_empty() {
            String::new()
        } else {
            "router".into()
        },
        url: url.to_owned(),
        key: a.api_key.clone(),
        model,
    });
    Ok(load::run_blocking(s, &targets)?)
}

/// Requests a minute the run may offer at most, for choosing a group whose rpm allows it.
fn offered_per_minute(s: &Settings) -> f64 {
    s.profiles
        .iter()
        .map(|p| match p {
            crate::load::profile::Profile::Constant { rate } | crate::load::profile::Profile::Poisson { rate } => {
                rate.per_second() * 60.0
            }
            _ => 0.0,
        })
        .fold(0.0, f64::max)
}

fn embedded(a: &LoadArgs, s: Settings) -> anyhow::Result<crate::load::Report> {
    let (manifest, config, _prices) = super::run::load_config()?;
    let group = match &a.model {
        Some(m) if config.deployments_of(m).is_empty() => {
            return Err(RunError::usage(format!(
                "--model {m}: no such group in {}; its groups: {}",
                manifest.origin,
                config.groups().join(", ")
            ))
            .into());
        }
        Some(m) => m.clone(),
        None => config.direct_comparable_group(offered_per_minute(&s)).ok_or_else(|| {
            RunError::usage(format!(
                "{} has no chat group served by the simulator's OpenAI route with room for this load; pass --model",
                manifest.origin
            ))
        })?,
    };
    let direct = config.deployments_of(&group).first().and_then(|d| d.sim.clone());
    if a.overhead && direct.is_none() {
        return Err(RunError::usage(format!(
            "--overhead: {group}'s deployments are not on the simulator, so there is no direct path to compare with"
        ))
        .into());
    }
    let services = super::up::every_service(&manifest)?;
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut stack = super::up::start(&manifest, &config, services).await?;
        let e = &stack.endpoints;
        let router = e
            .router_url()
            .ok_or_else(|| RunError::stack("the stack has no router"))?
            .to_owned();
        let mut targets = Vec::new();
        if a.overhead {
            let sim = e
                .url_of(Role::Simulator)
                .ok_or_else(|| RunError::stack("the stack has no simulator"))?;
            targets.push(Target {
                label: "direct".into(),
                url: format!("{sim}/d/{}", direct.clone().unwrap_or_default()),
                key: None,
                model: group.clone(),
            });
        }
        targets.push(Target {
            label: if a.overhead { "router".into() } else { String::new() },
            url: router,
            key: e.master_key.clone(),
            model: group.clone(),
        });
        eprintln!(
            "gauntlet load: {group} through the router{}",
            if a.overhead {
                ", and its simulator deployment directly"
            } else {
                ""
            }
        );
        let result = tokio::task::spawn_blocking(move || load::run_blocking(&s, &targets)).await;
        stack.stop().await;
        Ok(result??)
    })
}
