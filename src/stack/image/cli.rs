//! `gauntlet images`: build the recipes' images ahead of a run (a CI cache step, or a first
//! build watched as it goes), and list what gauntlet has built.

use std::collections::HashMap;

use bollard::query_parameters::ListImagesOptionsBuilder;

use super::ensure::ensure;
use super::spec::{ImageSpec, Recipe};
use crate::error::RunError;
use crate::stack::engine::{self, RECIPE_LABEL};

/// `gauntlet images` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ImagesArgs {
    #[command(subcommand)]
    pub command: ImagesCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ImagesCommand {
    /// Build the local recipes' images, or find them already built (tagged by the digest of
    /// their inputs): gauntlet (this binary), redis (the host's), litellm (Debian + the
    /// hash-locked LiteLLM).
    Build {
        /// Which recipes (default: all three).
        #[arg(value_parser = ["gauntlet", "redis", "litellm"])]
        recipes: Vec<String>,
    },
    /// List the images gauntlet has built.
    List,
    /// Remove gauntlet's older images: every rebuilt input (a new gauntlet binary, say) makes
    /// a new tag, and the old ones pile up. Keeps the newest per recipe; an image a container
    /// still uses stays.
    Prune {
        /// How many of each recipe's newest images to keep.
        #[arg(long, default_value_t = 1)]
        keep: usize,
    },
}

pub async fn images_cli(args: ImagesArgs) -> anyhow::Result<()> {
    show_progress();
    let docker = engine::connect().await?;
    match args.command {
        ImagesCommand::Build { recipes } => {
            let mut chosen: Vec<Recipe> = recipes.iter().filter_map(|r| Recipe::from_name(r)).collect();
            if chosen.is_empty() {
                chosen = Recipe::ALL.to_vec();
            }
            chosen.dedup();
            for recipe in chosen {
                let ready = ensure(&docker, &ImageSpec::Recipe(recipe)).await?;
                println!(
                    "{:<9} {:<36} {:<6} {:>7.1} s {:>8.1} MB",
                    recipe.name(),
                    ready.reference,
                    if ready.built { "built" } else { "cached" },
                    ready.took.as_secs_f64(),
                    ready.size_bytes as f64 / 1e6
                );
            }
        }
        ImagesCommand::List => list(&docker).await?,
        ImagesCommand::Prune { keep } => prune(&docker, keep).await?,
    }
    Ok(())
}

async fn list(docker: &bollard::Docker) -> Result<(), RunError> {
    let filters = HashMap::from([("label", vec![RECIPE_LABEL])]);
    let options = ListImagesOptionsBuilder::default().filters(&filters).build();
    let mut images = docker
        .list_images(Some(options))
        .await
        .map_err(|e| RunError::stack(format!("cannot list images: {e}")))?;
    images.sort_by(|a, b| a.repo_tags.cmp(&b.repo_tags));
    if images.is_empty() {
        println!("no gauntlet images (gauntlet images build makes them)");
        return Ok(());
    }
    println!("{:<36} {:<12} {:<20} {:>8}", "IMAGE", "RECIPE", "CREATED", "SIZE");
    for i in images {
        let name = i
            .repo_tags
            .iter()
            .find(|t| t.as_str() != "<none>:<none>")
            .cloned()
            .unwrap_or_else(|| i.id.chars().take(19).collect());
        let recipe = i
            .labels
            .get(RECIPE_LABEL)
            .and_then(|l| l.split('@').next())
            .unwrap_or("?");
        let created = chrono::DateTime::from_timestamp(i.created, 0)
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .unwrap_or_default();
        println!("{name:<36} {recipe:<12} {created:<20} {:>5.1} MB", i.size as f64 / 1e6);
    }
    Ok(())
}

async fn prune(docker: &bollard::Docker, keep: usize) -> Result<(), RunError> {
    let filters = HashMap::from([("label", vec![RECIPE_LABEL])]);
    let options = ListImagesOptionsBuilder::default().filters(&filters).build();
    let images = docker
        .list_images(Some(options))
        .await
        .map_err(|e| RunError::stack(format!("cannot list images: {e}")))?;
    let mut by_recipe: std::collections::BTreeMap<String, Vec<_>> = Default::default();
    for i in images {
        let recipe = i
            .labels
            .get(RECIPE_LABEL)
            .and_then(|l| l.split('@').next())
            .unwrap_or("?")
            .to_owned();
        by_recipe.entry(recipe).or_default().push(i);
    }
    let (mut removed, mut freed, mut kept_in_use) = (0, 0i64, 0);
    for (_, mut images) in by_recipe {
        images.sort_by_key(|i| std::cmp::Reverse(i.created));
        for i in images.into_iter().skip(keep) {
            // Not forced: an image a container uses stays (the engine refuses).
            match docker
                .remove_image(&i.id, None::<bollard::query_parameters::RemoveImageOptions>, None)
                .await
            {
                Ok(_) => {
                    removed += 1;
                    freed += i.size;
                }
                Err(_) => kept_in_use += 1,
            }
        }
    }
    println!(
        "removed {removed} image(s), {:.1} MB; {kept_in_use} still in use",
        freed as f64 / 1e6
    );
    Ok(())
}

/// Build output (debootstrap, pip) is the point of watching a first build: info on stderr
/// unless `GAUNTLET_LOG` says otherwise. A subscriber already installed wins.
fn show_progress() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GAUNTLET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .without_time()
        // CI logs are files: no colour codes in them.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
