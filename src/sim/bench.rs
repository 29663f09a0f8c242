//! `gauntlet bench sim`: the simulator's throughput for non-streaming chat completions on
//! loopback, next to a bare axum handler that returns the simulator's own reply bytes, both
//! loaded the same way in the same run, alternating rounds so drift on a shared machine hits
//! both. Prints numbers; asserts nothing.
//!
//! Two load generators. The default is a closed-loop reqwest client in this process: handy,
//! but it shares the runtime and cores with the servers it measures, so its numbers mostly say
//! how fast the client is. `--external` runs `wrk` (a separate process, written in C) against
//! each server instead: the figure the simulator's throughput target is stated in.
//!
//! Next to requests per second, each line has this process's CPU time per request while that
//! server was loaded (user and system; with `--external` that is the server's alone). On a
//! machine other jobs share, throughput swings with their load; CPU per request much less, so
//! it tells whether a change made the simulator cheaper when the rates are too noisy to.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use axum::routing::post;
use hdrhistogram::Histogram;
use serde_json::json;

use super::config::{DeploymentSpec, SimConfig};
use super::handle::start;

/// What `--external` aims for: the simulator at this fraction of the bare handler's rate.
const TARGET: f64 = 0.8;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds of load per target.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent keep-alive connections (default: 16 with --external, else 32).
    #[arg(long)]
    pub connections: Option<usize>,
    /// Rounds, alternating bare and simulator, to even out drift on a noisy machine.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Load both servers with `wrk` (a separate process) instead of the in-process client.
    #[arg(long)]
    pub external: bool,
    /// The wrk to run with --external.
    #[arg(long, default_value = "wrk")]
    pub wrk: PathBuf,
    /// wrk threads with --external.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Start both servers, print their URLs and serve until interrupted, loading neither: to
    /// load and profile them by hand (perf, valgrind) in one process.
    #[arg(long, conflicts_with = "external")]
    pub serve: bool,
}

struct Result {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    /// This process's CPU time (user and system) during the load.
    cpu: Duration,
    /// Microseconds.
    p50: u64,
    p99: u64,
}

impl Result {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn cpu_us_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
}

/// CPU time (user and system) this process has used so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes the struct it is given and nothing else.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// `run`, with the CPU time this process used meanwhile.
async fn timed(run: impl std::future::Future<Output = anyhow::Result<Result>>) -> anyhow::Result<Result> {
    let before = cpu_time();
    let mut r = run.await?;
    r.cpu = cpu_time().saturating_sub(before);
    Ok(r)
}

async fn load(url: &str, body: &serde_json::Value, seconds: u64, connections: usize) -> anyhow::Result<Result> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(10))
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (client, url, body) = (client.clone(), url.to_owned(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let (mut ok, mut err) = (0u64, 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(_) => {
                            ok += 1;
                            let _ = h.record(t.elapsed().as_micros() as u64);
                        }
                        Err(_) => err += 1,
                    },
                    _ => err += 1,
                }
            }
            (ok, err, h)
        }));
    }
    let (mut requests, mut errors) = (0, 0);
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        let (ok, err, h) = t.await?;
        requests += ok;
        errors += err;
        latency.add(h)?;
    }
    Ok(Result {
        requests,
        errors,
        elapsed: start.elapsed(),
        cpu: Duration::ZERO,
        p50: latency.value_at_quantile(0.5),
        p99: latency.value_at_quantile(0.99),
    })
}

/// wrk's script: the POST, and a `done` that prints one line this module parses (wrk's own
/// summary rounds and changes units).
fn wrk_script(body: &str) -> String {
    format!(
        r#"wrk.method = "POST"
wrk.body = [==[{body}]==]
wrk.headers["Content-Type"] = "application/json"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("gauntlet-wrk %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"#
    )
}

/// One wrk run against `url`, off the runtime's threads (it blocks until wrk exits).
async fn wrk(args: &BenchArgs, script: &Path, url: &str, connections: usize) -> anyhow::Result<Result> {
    let mut cmd = Command::new(&args.wrk);
    cmd.arg(format!("-t{}", args.threads.max(1)))
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", args.seconds))
        .arg("-s")
        .arg(script)
        .arg(url);
    let wrk = args.wrk.display().to_string();
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await?
        .map_err(|e| anyhow::anyhow!("cannot run {wrk}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find_map(|l| l.strip_prefix("gauntlet-wrk "));
    let nums: Vec<u64> = line
        .map(|l| l.split_whitespace().filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default();
    let [requests, duration_us, p50, p99, errors] = nums[..] else {
        anyhow::bail!(
            "{} gave no result ({}):\n{stdout}{}",
            args.wrk.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    Ok(Result {
        requests,
        errors,
        elapsed: Duration::from_micros(duration_us.max(1)),
        cpu: Duration::ZERO,
        p50,
        p99,
    })
}

fn line(name: &str, r: &Result) -> String {
    format!(
        "{name:<10} {:>8.0} req/s  {:>6.2} us cpu/req  p50 {:>6.3} ms  p99 {:>6.3} ms  ({} requests, {} errors)",
        r.rps(),
        r.cpu_us_per_request(),
        r.p50 as f64 / 1000.0,
        r.p99 as f64 / 1000.0,
        r.requests,
        r.errors
    )
}

pub async fn bench_cli(args: BenchArgs) -> anyhow::Result<()> {
    let sim = start(
        SimConfig {
            seed: 0,
            deployments: vec![DeploymentSpec::named("default")],
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let body = json!({"model": "bench", "messages": [{"role": "user", "content": "benchmark the simulator please"}], "max_tokens": 16});
    // The bare handler answers with the simulator's own reply, so bodies are the same size.
    let sample = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", sim.url()))
        .json(&body)
        .send()
        .await?
        .bytes()
        .await?;
    let bare_app = axum::Router::new().route(
        "/v1/chat/completions",
        post(move || {
            let b = sample.clone();
            async move { ([("content-type", "application/json")], b) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_url = format!("http://{}/v1/chat/completions", listener.local_addr()?);
    let bare = tokio::spawn(async move {
        let _ = axum::serve(listener, bare_app).await;
    });
    let sim_url = format!("{}/v1/chat/completions", sim.url());
    if args.serve {
        println!("gauntlet bench sim --serve: POST {body} to\n  bare      {bare_url}\n  simulator {sim_url}");
        let _ = tokio::signal::ctrl_c().await;
        bare.abort();
        sim.shutdown().await;
        return Ok(());
    }
    let connections = args.connections.unwrap_or(if args.external { 16 } else { 32 });
    let script = if args.external {
        let path = std::env::temp_dir().join(format!("gauntlet-bench-sim-{}.lua", std::process::id()));
        std::fs::write(&path, wrk_script(&body.to_string()))?;
        Some(path)
    } else {
        None
    };
    println!(
        "gauntlet bench sim: non-streaming chat completions, {} with {connections} connections, {}s per target, {} rounds",
        if args.external {
            format!("{} -t{}", args.wrk.display(), args.threads.max(1))
        } else {
            "the in-process client".to_owned()
        },
        args.seconds,
        args.rounds
    );
    println!("  bare      {bare_url}\n  simulator {sim_url}");
    let run = async {
        let (mut ratios, mut cpu_ratios) = (Vec::new(), Vec::new());
        for round in 1..=args.rounds.max(1) {
            let load_one = |url: &str| {
                let url = url.to_owned();
                let (args, script, body) = (&args, &script, &body);
                timed(async move {
                    match script {
                        Some(script) => wrk(args, script, &url, connections).await,
                        None => load(&url, body, args.seconds, connections).await,
                    }
                })
            };
            let b = load_one(&bare_url).await?;
            let s = load_one(&sim_url).await?;
            let ratio = s.rps() / b.rps();
            let cpu_ratio = b.cpu_us_per_request() / s.cpu_us_per_request();
            println!(
                "round {round}\n  {}\n  {}\n  ratio {ratio:.2} (cpu per request: {cpu_ratio:.2})",
                line("bare", &b),
                line("simulator", &s)
            );
            ratios.push(ratio);
            cpu_ratios.push(cpu_ratio);
        }
        anyhow::Ok((ratios, cpu_ratios))
    };
    let ratios = run.await;
    if let Some(path) = &script {
        let _ = std::fs::remove_file(path);
    }
    let (ratios, cpu_ratios) = ratios?;
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let rounds = ratios.len();
    println!(
        "simulator / bare throughput: median {:.2} over {rounds} rounds (target >= {TARGET:.2} with --external); \
         bare / simulator cpu per request: median {:.2}",
        median(ratios),
        median(cpu_ratios)
    );
    bare.abort();
    sim.shutdown().await;
    Ok(())
}
