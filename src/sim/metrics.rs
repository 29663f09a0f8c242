//! Prometheus text exposition with vLLM's metric names, so the simulator can stand in for a
//! vLLM server in anything that scrapes it. Every series carries a `deployment` label.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::state::{BUCKETS, Deployment, Histogram, Shared};

pub async fn all(State(s): State<Shared>) -> Response {
    let deps: Vec<_> = s
        .deployments
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .cloned()
        .collect();
    text(&deps)
}

pub async fn one(State(s): State<Shared>, Path(d): Path<String>) -> Response {
    match s.deployment(&d) {
        Some(dep) => text(&[dep]),
        None => (axum::http::StatusCode::NOT_FOUND, format!("unknown deployment '{d}'\n")).into_response(),
    }
}

fn text(deps: &[std::sync::Arc<Deployment>]) -> Response {
    let mut out = String::new();
    let gauge = |out: &mut String, name: &str, help: &str, kind: &str, f: &dyn Fn(&Deployment) -> String| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for d in deps {
            let _ = writeln!(
                out,
                "{name}{{deployment=\"{}\",model_name=\"{}\"}} {}",
                d.spec.name,
                d.spec.served_models()[0],
                f(d)
            );
        }
    };
    gauge(
        &mut out,
        "vllm:num_requests_running",
        "Requests being answered.",
        "gauge",
        &|d| d.metrics.running.load(Ordering::Relaxed).to_string(),
    );
    gauge(
        &mut out,
        "vllm:num_requests_waiting",
        "Requests waiting (the simulator never queues).",
        "gauge",
        &|_| "0".into(),
    );
    gauge(
        &mut out,
        "vllm:prompt_tokens_total",
        "Prompt tokens processed.",
        "counter",
        &|d| d.metrics.prompt_tokens.load(Ordering::Relaxed).to_string(),
    );
    gauge(
        &mut out,
        "vllm:generation_tokens_total",
        "Tokens generated.",
        "counter",
        &|d| d.metrics.generation_tokens.load(Ordering::Relaxed).to_string(),
    );
    gauge(
        &mut out,
        "vllm:request_success_total",
        "Requests answered successfully.",
        "counter",
        &|d| d.metrics.success.load(Ordering::Relaxed).to_string(),
    );
    histogram(
        &mut out,
        deps,
        "vllm:time_to_first_token_seconds",
        "Time to first token.",
        |d| &d.metrics.ttft,
    );
    histogram(
        &mut out,
        deps,
        "vllm:e2e_request_latency_seconds",
        "End-to-end request latency.",
        |d| &d.metrics.e2e,
    );
    let _ = writeln!(
        out,
        "# HELP gauntlet_sim_faults_total Faults injected.\n# TYPE gauntlet_sim_faults_total counter"
    );
    for d in deps {
        for (kind, n) in d.metrics.faults.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(
                out,
                "gauntlet_sim_faults_total{{deployment=\"{}\",kind=\"{kind}\"}} {n}",
                d.spec.name
            );
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

fn histogram(
    out: &mut String,
    deps: &[std::sync::Arc<Deployment>],
    name: &str,
    help: &str,
    h: impl Fn(&Deployment) -> &Histogram,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for d in deps {
        let hist = h(d);
        let label = format!(
            "deployment=\"{}\",model_name=\"{}\"",
            d.spec.name,
            d.spec.served_models()[0]
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{label},le=\"{b}\"}} {}",
                hist.counts[i].load(Ordering::Relaxed)
            );
        }
        let total = hist.total.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{label},le=\"+Inf\"}} {total}");
        let _ = writeln!(
            out,
            "{name}_sum{{{label}}} {}",
            hist.sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{label}}} {total}");
    }
}
