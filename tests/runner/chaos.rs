//! The chaos primitives each backend owns (pause, unpause, kill, restart, disconnect,
//! connect), done to a real Redis through the library's `Stack` and checked from outside:
//! a PING that stops answering and answers again, an exit the stack notices, a restart that
//! answers on the address the stack re-read, and (containers) the engine's own view of the
//! network, read with the docker CLI.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use gauntlet::config::RouterConfig;
use gauntlet::stack::manifest::{Health, Manifest};
use gauntlet::stack::{Chaos, Stack, StartOptions, Teardown, health};

use crate::util::{BIN, Scratch};

async fn ping(stack: &Stack) -> Result<(), String> {
    let ep = &stack.endpoints.services["redis"];
    let redis = Health {
        http: None,
        redis: true,
    };
    let http = reqwest::Client::new();
    tokio::time::timeout(Duration::from_secs(1), health::probe(&redis, &ep.host, ep.port, &http))
        .await
        .unwrap_or_else(|_| Err("no answer within 1 s".into()))
}

async fn eventually(what: &str, mut ok: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !ok().await {
        assert!(start.elapsed() < Duration::from_secs(20), "{what}: not within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn start(s: &Scratch, backend: &str) -> Stack {
    let path = s.stack_with("chaos.toml", &[("@BACKEND@", backend)]);
    // SAFETY (set_var): this test binary's tests never read these variables concurrently.
    unsafe { std::env::set_var("GAUNTLET_BIN", BIN) };
    let manifest = Manifest::from_path(Path::new(&path)).unwrap();
    let config = RouterConfig::from_document(&manifest.router_config.doc).unwrap();
    Stack::start(StartOptions {
        manifest: &manifest,
        router_config: &config,
        services: vec!["router".into(), "redis".into()],
        health_timeout: Duration::from_secs(30),
        teardown: Teardown::default(),
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

/// Pause, unpause, kill, restart: the same on both backends.
async fn hurt_and_heal(stack: &mut Stack) {
    ping(stack).await.expect("healthy at start");
    stack.chaos("redis", Chaos::Pause).await.unwrap();
    let err = ping(stack).await.expect_err("a paused Redis answered PING");
    assert!(err.contains("no answer"), "{err}");
    assert_eq!(stack.exited("redis"), None, "paused is not exited");
    stack.chaos("redis", Chaos::Unpause).await.unwrap();
    ping(stack).await.expect("answers again after unpause");

    stack.chaos("redis", Chaos::Kill).await.unwrap();
    eventually("the stack sees the kill", async || stack.exited("redis").is_some()).await;
    assert!(ping(stack).await.is_err(), "a killed Redis answered");

    stack.chaos("redis", Chaos::Restart).await.unwrap();
    assert_eq!(stack.exited("redis"), None, "restarted, yet reported exited");
    eventually("Redis answers at its re-read address", async || {
        ping(stack).await.is_ok()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_are_paused_killed_and_respawned() {
    let s = Scratch::new("chaos-process");
    if gauntlet::stack::backend::which("redis-server").is_none() {
        assert!(
            std::env::var("GAUNTLET_REQUIRE").is_err(),
            "GAUNTLET_REQUIRE: redis-server is not on PATH"
        );
        eprintln!("no redis-server: the process chaos test did not run");
        return;
    }
    let mut stack = start(&s, "process").await;
    hurt_and_heal(&mut stack).await;
    let err = stack.chaos("redis", Chaos::Disconnect).await.unwrap_err().to_string();
    assert!(err.contains("GAUNTLET_BACKEND=docker"), "{err}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_are_paused_killed_restarted_and_cut_off() {
    let s = Scratch::new("chaos-docker");
    if !crate::docker::engine() {
        return;
    }
    let mut stack = start(&s, "docker").await;
    hurt_and_heal(&mut stack).await;

    let id = stack.endpoints.services["redis"]
        .container
        .clone()
        .expect("a container id");
    let networks = || {
        let out = Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
                &id,
            ])
            .output()
            .expect("docker CLI");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let on = networks();
    assert!(on.starts_with("gauntlet-"), "redis is on {on:?}");
    stack.chaos("redis", Chaos::Disconnect).await.unwrap();
    assert_eq!(networks(), "", "still attached after disconnect");
    stack.chaos("redis", Chaos::Connect).await.unwrap();
    assert_eq!(networks(), on);
    stack.stop().await;
    let left = Command::new("docker")
        .args(["ps", "-aq", "--filter", &format!("id={id}")])
        .output()
        .unwrap();
    assert!(left.stdout.is_empty(), "container {id} survived stop");
}
