//! Team configs in the shapes public LiteLLM deployments take (tests/fixtures/configs/, each
//! file saying which shape it reproduces): every one mirrors; the mirror changes where
//! deployments point and nothing about how the router chooses among them; the cases derived
//! from it ignore — with the reason — what the config cannot support instead of failing; and
//! broken configs get one error naming the file and line, with exit code 2.

use std::path::{Path, PathBuf};
use std::process::Command;

use gauntlet::config::mirror::{self, routing_view};
use gauntlet::config::{Document, RouterConfig};
use gauntlet::runner::registry::{Case, Plan};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/configs")
}

/// Every fixture config (an `include:` set counts once, by its main file).
fn all() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.push(fixtures().join("includes/main.yaml"));
    v.sort();
    v
}

fn mirrored(path: &Path) -> (Document, mirror::Mirrored, Document) {
    let original = Document::load(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let m = mirror::mirror(&original).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc = Document::parse("mirrored", &m.router_yaml).unwrap();
    (original, m, doc)
}

#[test]
fn there_are_enough_shapes() {
    assert!(all().len() >= 6, "{:?}", all());
}

#[test]
fn mirroring_changes_where_deployments_point_not_how_the_router_chooses() {
    for path in all() {
        let (original, m, doc) = mirrored(&path);
        let (before, after) = (routing_view(&original), routing_view(&doc));
        assert_eq!(
            before.groups,
            after.groups,
            "{}: groups or deployment knobs changed",
            path.display()
        );
        assert_eq!(
            before.distinct_ids,
            after.distinct_ids,
            "{}: distinct deployments changed",
            path.display()
        );
        assert_eq!(
            before.settings,
            after.settings,
            "{}: routing settings changed",
            path.display()
        );
        let cfg = RouterConfig::from_document(&doc).unwrap();
        for d in &cfg.deployments {
            assert!(
                d.sim.is_some(),
                "{}: {} does not point at the simulator",
                path.display(),
                d.id
            );
            assert!(
                !cfg.groups().contains(&d.id) || d.id == d.group,
                "{}: id {} is a group name",
                path.display(),
                d.id
            );
        }
        for secret in ["os.environ/", "https://", "sk-", "database_url"] {
            assert!(
                !m.router_yaml.contains(secret),
                "{}: {secret} survived the mirror",
                path.display()
            );
        }
    }
}

#[test]
fn what_the_simulator_cannot_stand_in_for_is_removed_and_listed() {
    let (_, m, doc) = mirrored(&fixtures().join("python_hooks.yaml"));
    for gone in [
        "custom_auth",
        "billing_callback",
        "custom_guardrail",
        "custom_provider_map",
        "mock_response",
        "aws_secret_manager",
    ] {
        assert!(!m.router_yaml.contains(gone), "{gone} survived:\n{}", m.router_yaml);
        assert!(
            m.warnings.iter().any(|w| w.what.contains(gone) || w.at.contains(gone)) || m.mirror_md.contains(gone),
            "{gone} removed without a word: {:?}",
            m.warnings
        );
    }
    // Each warning names the user's file and line.
    assert!(
        m.warnings.iter().all(|w| w.at.contains("python_hooks.yaml:")),
        "{:?}",
        m.warnings
    );
    let cfg = RouterConfig::from_document(&doc).unwrap();
    // Providers the simulator speaks keep their dialect; the others are mirrored to openai/.
    assert!(cfg.deployments.iter().all(|d| d.provider.simulated()));
    let (_, m, doc) = mirrored(&fixtures().join("azure_anthropic.yaml"));
    let cfg = RouterConfig::from_document(&doc).unwrap();
    let provider = |g: &str| cfg.deployments_of(g)[0].provider.to_string();
    assert_eq!(provider("gpt-4o"), "azure");
    assert_eq!(provider("claude-sonnet"), "anthropic");
    assert!(m.mirror_md.contains("research") || m.warnings.iter().any(|w| w.what.contains("default_team_settings")));
    assert_eq!(cfg.teams, ["research", "support"]);
}

/// The cases gauntlet derives from a mirrored fixture.
fn cases(path: &Path) -> Vec<Case> {
    let (_, m, _) = mirrored(path);
    let dir = std::env::temp_dir()
        .join(format!("gauntlet-configs-{}", std::process::id()))
        .join(path.file_stem().unwrap());
    mirror::write(&m, &dir).unwrap();
    let manifest = gauntlet::stack::manifest::Manifest::from_path(&dir.join("gauntlet.toml")).unwrap();
    let config = RouterConfig::from_document(&manifest.router_config.doc).unwrap();
    let available = manifest.roles().into_keys().collect();
    let plan = Plan {
        manifest,
        config,
        available,
        require_all: false,
        embedded: true,
    };
    gauntlet::suites::all(&plan)
}

fn reason<'a>(cases: &'a [Case], name: &str) -> Option<&'a str> {
    cases
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| {
            panic!(
                "no case {name} in {:?}",
                cases.iter().map(|c| &c.name).collect::<Vec<_>>()
            )
        })
        .ignored
        .as_deref()
}

#[test]
fn derived_cases_say_why_they_cannot_run_instead_of_failing() {
    let c = cases(&fixtures().join("load_balanced_no_ids.yaml"));
    // No prices anywhere: ledger cases are ignored with the lines to add, never billed at $0.
    let r = reason(&c, "ledger::cost_per_request::default").unwrap();
    assert!(r.contains("no price") && r.contains("input_cost_per_token"), "{r}");
    // A chain of chains: the exhausted case breaks every group LiteLLM walks to.
    let ex = c
        .iter()
        .find(|c| c.name == "fallbacks::default/backup::exhausted")
        .unwrap();
    assert_eq!(ex.claims.breaks, ["default", "backup", "last-resort"]);
    assert!(reason(&c, "routing::distribution::coder").is_none());

    let c = cases(&fixtures().join("usage_limits.yaml"));
    // rpm: 1 is the config working: cases that would exceed it say so.
    let r = reason(&c, "fallbacks::o3-preview/gpt-4.1::server_error_500").unwrap();
    assert!(r.contains("o3-preview") && r.contains("requests a minute"), "{r}");
    // No timeout configured: LiteLLM's 6000 s default makes the timeout case opt-in.
    let r = reason(&c, "fallbacks::mini/nano::timeout").unwrap();
    assert!(
        r.contains("6000s (LiteLLM's default)") && r.contains("--ignored"),
        "{r}"
    );
    // An explicitly zero price is a price: the local group's ledger case runs.
    assert!(reason(&c, "ledger::cost_per_request::local").is_none());

    let c = cases(&fixtures().join("python_hooks.yaml"));
    let r = reason(&c, "ledger::cost_per_request::video").unwrap();
    assert!(
        r.contains("image_generation") || r.contains("input_cost_per_second"),
        "{r}"
    );
    let r = reason(&c, "smoke::chat_completion::video").unwrap();
    assert!(r.contains("image_generation"), "{r}");

    let c = cases(&fixtures().join("azure_anthropic.yaml"));
    assert!(c.iter().any(|c| c.name == "smoke::embedding::text-embedding-3-small"));
    assert!(c.iter().any(|c| c.name == "ledger::tenant::research"));
    assert!(
        c.iter()
            .any(|c| c.name == "fallbacks::context_window::gpt-4o-mini/gpt-4o::context_length")
    );
}

#[test]
fn broken_configs_get_one_error_with_file_and_line_and_exit_2() {
    let out_dir = std::env::temp_dir().join(format!("gauntlet-bad-{}", std::process::id()));
    for (file, line, what) in [
        ("yaml_error.yaml", 2, "invalid YAML"),
        ("no_model_list.yaml", 2, "no model_list"),
        ("unknown_group.yaml", 6, "names model group 'b'"),
        ("unreadable_include.yaml", 2, "cannot read included file"),
        ("duplicate_keys.yaml", 6, "appears twice"),
    ] {
        let path = fixtures().join("bad").join(file);
        let out = Command::new(env!("CARGO_BIN_EXE_gauntlet"))
            .arg("mirror")
            .arg(&path)
            .arg("--out")
            .arg(&out_dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{file}: {stderr}");
        let want = format!("{}:{line}: ", path.display());
        assert!(
            stderr.contains(&want) && stderr.contains(what),
            "{file}: want {want}…{what} in {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(stderr.lines().filter(|l| l.contains("error")).count(), 1, "{stderr}");
    }
    let _ = std::fs::remove_dir_all(out_dir);
}
