//! `gauntlet bench sim`: the simulator's throughput for non-streaming chat completions on
//! loopback, next to a bare handler that returns a constant body of the same size, both
//! loaded by the same closed-loop client in the same run. Prints numbers; asserts nothing.

use std::time::{Duration, Instant};

use axum::routing::post;
use hdrhistogram::Histogram;
use serde_json::json;

use super::config::{DeploymentSpec, SimConfig};
use super::handle::start;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Seconds of load per target.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Rounds, alternating bare and simulator, to even out drift on a noisy machine.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
}

struct Result {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
}

impl Result {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
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
    let mut r = Result {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
    };
    for t in tasks {
        let (ok, err, h) = t.await?;
        r.requests += ok;
        r.errors += err;
        r.latency.add(h)?;
    }
    r.elapsed = start.elapsed();
    Ok(r)
}

fn line(name: &str, r: &Result) -> String {
    format!(
        "{name:<10} {:>10.0} req/s  p50 {:>7.3} ms  p99 {:>7.3} ms  ({} requests, {} errors)",
        r.rps(),
        r.latency.value_at_quantile(0.5) as f64 / 1000.0,
        r.latency.value_at_quantile(0.99) as f64 / 1000.0,
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
    println!(
        "gauntlet bench sim: non-streaming chat completions, {} connections, {}s per target, {} rounds",
        args.connections, args.seconds, args.rounds
    );
    let mut ratios = Vec::new();
    for round in 1..=args.rounds.max(1) {
        let b = load(&bare_url, &body, args.seconds, args.connections).await?;
        let s = load(&sim_url, &body, args.seconds, args.connections).await?;
        println!("round {round}\n  {}\n  {}", line("bare", &b), line("simulator", &s));
        ratios.push(s.rps() / b.rps());
    }
    ratios.sort_by(f64::total_cmp);
    let median = ratios[ratios.len() / 2];
    println!(
        "simulator / bare throughput: median {median:.2} over {} rounds (target >= 0.60)",
        ratios.len()
    );
    bare.abort();
    sim.shutdown().await;
    Ok(())
}
