//! The Docker backend end to end (README: "GAUNTLET_BACKEND=docker"): the fixture router is
//! gauntlet's simulator in the gauntlet image, built from the binary under test. Cases pass
//! through containers; after a passing run, SIGINT mid-run and every start-up failure (no
//! engine, an image nobody can give, a container that exits at start, a GPU where there is
//! none) the run exits as documented with one message naming the service, and `docker ps -a`
//! and `docker network ls` show nothing of that run. Checked with the docker CLI, not with
//! gauntlet's own engine client.
//!
//! Needs a Docker Engine: without one these tests say so and pass, unless
//! `GAUNTLET_REQUIRE=all` (CI), which makes a missing engine a failure.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{BIN, FAILING, Output, PASSING, Scratch};

const SIM: &str =
    r#"["/gauntlet", "sim", "--listen", "${bind}:${port}", "--deployment", "default", "--deployment", "@TOKEN@"]"#;

/// A cold gauntlet image build strips and packs the binary: allow for it.
const DOCKER_RUN_TIMEOUT: Duration = Duration::from_secs(240);

pub fn engine() -> bool {
    let up = Command::new("docker")
        .args(["version", "--format", "{{.Server.APIVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    let required = std::env::var("GAUNTLET_REQUIRE").is_ok_and(|v| v.split(',').any(|w| w == "all"));
    assert!(
        up || !required,
        "GAUNTLET_REQUIRE=all: no Docker Engine answers `docker version`"
    );
    if !up {
        eprintln!("no Docker Engine here: the Docker backend tests did not run");
    }
    up
}

fn stack(name: &str, command: &str, extra: &str) -> Scratch {
    let s = Scratch::new(name);
    s.stack_with(
        "docker-sim-router.toml",
        &[("@ROUTER_COMMAND@", command), ("@ROUTER_EXTRA@", extra)],
    );
    s
}

fn run(s: &Scratch, args: &[&str], env: &[(&str, &str)]) -> crate::util::Running {
    let mut cmd = s
        .gauntlet()
        .args(args)
        // ldd and strip build the image; the docker socket is the engine's default.
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GAUNTLET_BIN", BIN)
        .env("HEALTH_TIMEOUT", "30")
        .timeout(DOCKER_RUN_TIMEOUT);
    for (k, v) in env {
        cmd = cmd.env(k, v);
    }
    cmd.spawn()
}

/// Containers and networks the gauntlet process `pid` made that still exist.
fn docker_leftovers(pid: u32) -> Vec<String> {
    let filter = format!("label=dev.gauntlet.owner-pid={pid}");
    let mut found = Vec::new();
    for what in [&["ps", "-a"][..], &["network", "ls"][..]] {
        let out = Command::new("docker")
            .args(what)
            .args(["--filter", &filter, "--format", "{{.Names}}"])
            .output()
            .expect("docker CLI");
        found.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| format!("{} {l}", what[0])),
        );
    }
    found
}

fn assert_nothing_left(s: &Scratch, out: &Output) {
    let left = docker_leftovers(out.pid);
    assert!(left.is_empty(), "left in Docker: {left:?}\n{}", out.show());
    s.assert_torn_down(out);
}

#[test]
fn cases_pass_through_containers_and_nothing_is_left() {
    if !engine() {
        return;
    }
    let s = stack("docker-pass", SIM, "");
    let out = run(&s, PASSING, &[]).wait();
    out.assert_code(0);
    out.assert_stdout_has("3 passed");
    assert_nothing_left(&s, &out);
}

#[test]
fn a_failing_run_leaves_nothing_and_keeps_the_container_logs() {
    if !engine() {
        return;
    }
    let s = stack("docker-fail", SIM, "");
    let out = run(&s, &["--exact", FAILING], &[]).wait();
    out.assert_code(101);
    out.assert_outcome(FAILING, "FAILED");
    // The container's output, followed into the run's logs, saved on failure.
    let log = std::fs::read_to_string(s.artifacts().join("logs/router.log")).unwrap_or_default();
    assert!(
        log.contains("gauntlet sim listening on"),
        "router.log: {log:?}\n{}",
        out.show()
    );
    assert_nothing_left(&s, &out);
}

#[test]
fn sigint_mid_run_removes_every_container_and_the_network() {
    if !engine() {
        return;
    }
    let s = stack("docker-sigint", SIM, "");
    let mut running = run(&s, PASSING, &[]);
    let pid = running.pid();
    running.wait_for("the router container to run", || {
        let out = Command::new("docker")
            .args([
                "ps",
                "--filter",
                &format!("label=dev.gauntlet.owner-pid={pid}"),
                "--format",
                "{{.Status}}",
            ])
            .output()
            .expect("docker CLI");
        String::from_utf8_lossy(&out.stdout).contains("Up")
    });
    running.signal(libc::SIGINT);
    let out = running.wait();
    out.assert_code(130);
    assert_nothing_left(&s, &out);
}

#[test]
fn an_unreachable_engine_is_one_clear_error() {
    if !engine() {
        return;
    }
    let s = stack("docker-no-engine", SIM, "");
    let out = run(&s, PASSING, &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")]).wait();
    out.assert_code(3);
    out.assert_stderr_has("cannot reach the Docker Engine at unix:///nonexistent/docker.sock");
    s.assert_torn_down(&out);
}

#[test]
fn an_image_nobody_can_give_names_the_service() {
    if !engine() {
        return;
    }
    let s = stack("docker-no-image", SIM, "");
    let manifest = s.path("gauntlet.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace(
        "image = \"gauntlet\"",
        &format!("image = \"gauntlet.invalid/nothing@sha256:{}\"", "0".repeat(64)),
    );
    std::fs::write(&manifest, text).unwrap();
    let out = run(&s, PASSING, &[]).wait();
    out.assert_code(3);
    out.assert_stderr_has("service 'router'");
    out.assert_stderr_has("gauntlet.invalid/nothing@sha256:");
    assert_nothing_left(&s, &out);
}

#[test]
fn a_container_that_exits_at_start_shows_its_last_lines() {
    if !engine() {
        return;
    }
    let s = stack(
        "docker-exits",
        r#"["/gauntlet", "sim", "--listen", "not-an-address"]"#,
        "",
    );
    let started = Instant::now();
    let out = run(&s, PASSING, &[]).wait();
    out.assert_code(3);
    out.assert_stderr_has("service 'router' exited during start-up (exit status 2)");
    // clap's own complaint, read back from the container's log.
    out.assert_stderr_has("invalid value 'not-an-address'");
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "waited for the health timeout instead of seeing the exit\n{}",
        out.show()
    );
    assert_nothing_left(&s, &out);
}

#[test]
fn a_gpu_where_there_is_none_is_refused_before_anything_starts() {
    if !engine() || gauntlet::stack::gpu::nvidia_driver_present() {
        return;
    }
    let s = stack("docker-no-gpu", SIM, "gpu = \"all\"");
    let out = run(&s, PASSING, &[]).wait();
    out.assert_code(3);
    out.assert_stderr_has("service 'router' asks for a GPU");
    assert_nothing_left(&s, &out);
}

#[test]
fn down_all_removes_what_a_killed_run_left() {
    if !engine() {
        return;
    }
    let s = stack("docker-killed", SIM, "");
    let mut up = run(&s, &["up"], &[]);
    let pid = up.pid();
    up.wait_for("the router container to run", || {
        docker_leftovers(pid).iter().any(|l| l.starts_with("ps "))
    });
    // SIGKILL: no teardown path runs; the containers outlive their owner.
    up.signal(libc::SIGKILL);
    let _ = up.wait();
    assert!(
        !docker_leftovers(pid).is_empty(),
        "nothing was left to sweep: the test proves nothing"
    );
    let out = run(&s, &["down", "--all"], &[]).wait();
    out.assert_code(0);
    out.assert_stdout_has("left by earlier runs");
    let left = docker_leftovers(pid);
    assert!(left.is_empty(), "down --all left {left:?}\n{}", out.show());
}

/// The newest-listed image of `repository`, as `name:tag`.
fn newest(repository: &str) -> String {
    let out = Command::new("docker")
        .args(["images", repository, "--format", "{{.Repository}}:{{.Tag}}"])
        .output()
        .expect("docker CLI");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no {repository} image after a passing run"))
        .to_owned()
}

#[test]
fn an_image_named_by_the_environment_is_the_one_used_and_a_missing_one_says_how_to_load_it() {
    if !engine() {
        return;
    }
    let s = stack("docker-given", SIM, "");
    // A passing run with the gauntlet recipe's image named by the environment.
    let with_image = |reference: &str| run(&s, PASSING, &[("GAUNTLET_IMAGE_GAUNTLET", reference)]).wait();
    let missing = with_image("gauntlet-given/none:missing");
    missing.assert_code(3);
    missing.assert_stderr_has("GAUNTLET_IMAGE_GAUNTLET=gauntlet-given/none:missing");
    missing.assert_stderr_has("nix run .#load-images");
    assert_nothing_left(&s, &missing);

    // The recipe's own image under another name passes; the Redis image under that name (no
    // /gauntlet in it) fails at start: the variable's image is the one containers run.
    let built = run(&s, PASSING, &[]).wait();
    built.assert_code(0);
    let tag = |from: &str, to: &str| {
        assert!(
            Command::new("docker")
                .args(["tag", from, to])
                .status()
                .unwrap()
                .success()
        );
    };
    tag(&newest("gauntlet/gauntlet"), "gauntlet-given/gauntlet:test");
    let given = with_image("gauntlet-given/gauntlet:test");
    given.assert_code(0);
    assert_nothing_left(&s, &given);
    let _ = run(&s, &["images", "build", "redis"], &[]).wait();
    tag(&newest("gauntlet/redis"), "gauntlet-given/wrong:test");
    let wrong = with_image("gauntlet-given/wrong:test");
    assert_ne!(
        wrong.code,
        Some(0),
        "a stack ran from an image without /gauntlet\n{}",
        wrong.show()
    );
    assert_nothing_left(&s, &wrong);
    let _ = Command::new("docker")
        .args(["rmi", "gauntlet-given/gauntlet:test", "gauntlet-given/wrong:test"])
        .output();
}
