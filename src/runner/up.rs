//! `gauntlet up` / `gauntlet down`: a stack that outlives one run, for nextest (one process
//! per case) and for poking at the stack by hand. The foreground `up` owns the stack (the
//! simulator and sink run inside it) and writes the state file; `--detach` starts that
//! foreground process in the background and returns once the state file is written.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::error::RunError;
use crate::stack::{self, Stack, state};

#[derive(Debug, Clone, clap::Args)]
pub struct UpArgs {
    /// Start in the background and return once the stack is healthy.
    #[arg(long)]
    pub detach: bool,
    /// Where to write the state file (default: target/gauntlet/stack.json).
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Stop by itself after this many seconds without any `GAUNTLET_STACK` attach (0: never),
    /// so a stack a CI job forgot to `down` does not live forever.
    #[arg(long, default_value_t = 1800)]
    pub idle_timeout: u64,
    /// Services to start (default: all, on-demand ones included).
    #[arg(long, value_delimiter = ',')]
    pub services: Vec<String>,
}

pub fn up(a: UpArgs) -> anyhow::Result<()> {
    let state_path = a
        .state
        .clone()
        .unwrap_or_else(|| state::default_path(&super::run::artifacts_base()));
    if a.detach {
        return detach(&a, &state_path);
    }
    let (manifest, config, _prices) = super::run::load_config()?;
    let services = if a.services.is_empty() {
        every_service(&manifest)?
    } else {
        a.services.clone()
    };
    for s in &services {
        if !manifest.services.contains_key(s) {
            return Err(RunError::usage(format!("--services: no service named '{s}' in {}", manifest.origin)).into());
        }
    }
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut s = start(&manifest, &config, services).await?;
        state::write(&state_path, &s.endpoints)?;
        let router = s.endpoints.router_url().unwrap_or_default().to_owned();
        println!("gauntlet: stack up; router {router}; state {}", state_path.display());
        println!("export GAUNTLET_STACK={}", state_path.display());
        let reason = wait_for_stop(&state_path, a.idle_timeout).await;
        eprintln!("gauntlet: {reason}: stopping the stack");
        s.stop().await;
        let _ = std::fs::remove_file(&state_path);
        Ok(())
    })
}

/// Starts `services` of the stack (a spinner while they come up) for a command that keeps it
/// until it is done: `up`, `load`.
pub async fn start(
    manifest: &stack::manifest::Manifest,
    config: &crate::config::RouterConfig,
    services: Vec<String>,
) -> anyhow::Result<Stack> {
    let pb = super::progress::spinner("starting the stack");
    let started = Stack::start(stack::StartOptions {
        manifest,
        router_config: config,
        services,
        health_timeout: stack::health::health_timeout()?,
        teardown: stack::Teardown::default(),
    })
    .await;
    pb.finish_and_clear();
    started
}

/// Every service of the manifest, but a GPU service only where a GPU can be given:
/// elsewhere the simulator stands in for it, as in a run.
pub fn every_service(manifest: &stack::manifest::Manifest) -> anyhow::Result<Vec<String>> {
    let backend = stack::BackendKind::select(manifest.stack.backend)?;
    let mut all = Vec::new();
    for (name, spec) in &manifest.services {
        match spec.gpu.as_deref().and_then(|g| stack::gpu::unavailable(backend, g)) {
            Some(why) => eprintln!("gauntlet: leaving out '{name}': {why}"),
            None => all.push(name.clone()),
        }
    }
    Ok(all)
}

/// Returns why the foreground stack should stop: a signal, or idle for too long.
async fn wait_for_stop(state_path: &Path, idle_timeout: u64) -> String {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return "cannot listen for signals".into();
    };
    let idle = async {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            if idle_timeout == 0 {
                continue;
            }
            let last = std::fs::metadata(state_path)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if last.elapsed().unwrap_or_default() > Duration::from_secs(idle_timeout) {
                return;
            }
        }
    };
    tokio::select! {
        _ = int.recv() => "SIGINT".into(),
        _ = term.recv() => "SIGTERM".into(),
        _ = idle => format!("idle for {idle_timeout}s"),
    }
}

fn detach(a: &UpArgs, state_path: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(state_path);
    let log_dir = state_path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(log_dir)?;
    let log_path = log_dir.join("up.log");
    let log = std::fs::File::create(&log_path)?;
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg("up")
        .arg("--state")
        .arg(state_path)
        .arg("--idle-timeout")
        .arg(a.idle_timeout.to_string());
    if !a.services.is_empty() {
        cmd.arg("--services").arg(a.services.join(","));
    }
    // setsid: the supervisor must survive this process and the terminal.
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?;
    // Installing LiteLLM on first use can take minutes; health waits have their own bound.
    let bound = stack::health::health_timeout()? + Duration::from_secs(20 * 60);
    let start = Instant::now();
    loop {
        if state_path.is_file() {
            println!(
                "gauntlet: stack up (supervisor pid {}); state {}",
                child.id(),
                state_path.display()
            );
            println!("export GAUNTLET_STACK={}", state_path.display());
            if let Some(env_file) = std::env::var_os("NEXTEST_ENV") {
                // A nextest setup script: hand the stack to every test process.
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new().append(true).open(env_file)?;
                writeln!(f, "GAUNTLET_STACK={}", std::fs::canonicalize(state_path)?.display())?;
            }
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            return Err(RunError::stack(format!(
                "the stack failed to start ({status}); its log {}:\n{}",
                log_path.display(),
                stack::backend::tail(&log_path, 30)
            ))
            .into());
        }
        if start.elapsed() > bound {
            // SAFETY: signalling the group we created.
            unsafe { libc::killpg(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
            return Err(RunError::stack(format!(
                "the stack was not up within {}s; see {}",
                bound.as_secs(),
                log_path.display()
            ))
            .into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn down(state: Option<PathBuf>, all: bool) -> anyhow::Result<()> {
    down_state(state)?;
    if all {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (containers, networks) = rt.block_on(async {
            let docker = stack::engine::connect().await?;
            anyhow::Ok(stack::engine::sweep(&docker, false).await)
        })?;
        println!("gauntlet: removed {containers} container(s) and {networks} network(s) left by earlier runs");
    }
    Ok(())
}

fn down_state(state: Option<PathBuf>) -> anyhow::Result<()> {
    let path = state.unwrap_or_else(|| state::default_path(&super::run::artifacts_base()));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(_) => {
            println!("gauntlet: no stack state at {}; nothing to stop", path.display());
            return Ok(());
        }
    };
    let ep: stack::Endpoints = serde_json::from_str(&text)
        .map_err(|e| RunError::usage(format!("{}: not a gauntlet stack state file: {e}", path.display())))?;
    let pid = ep.supervisor_pid as i32;
    if state::alive(ep.supervisor_pid) {
        // SAFETY: plain signal to the supervisor we started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let start = Instant::now();
        while state::alive(ep.supervisor_pid) && start.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Whatever survived the supervisor (it was SIGKILLed, say) is stopped here.
    for e in ep.services.values() {
        if let Some(p) = e.pid.filter(|p| state::alive(*p)) {
            stack::teardown::stop_group(p as i32);
        }
    }
    let containers: Vec<String> = ep.services.values().filter_map(|e| e.container.clone()).collect();
    if !containers.is_empty() {
        stack::engine::blocking(move |d| {
            Box::pin(async move {
                for id in containers {
                    let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .build();
                    let _ = d.remove_container(&id, Some(opts)).await;
                }
            })
        });
    }
    let _ = std::fs::remove_file(&path);
    println!("gauntlet: stack stopped");
    Ok(())
}
