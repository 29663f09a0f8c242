//! vLLM's metrics, so the simulator can stand in for a vLLM server in anything that scrapes
//! it: OpenMetrics text encoded by `prometheus-client` from the deployments' atomics, read at
//! scrape time by a [`Collector`] (the request path only bumps atomics; a scrape never makes
//! it wait). Every vLLM series carries `deployment` and `model_name` labels, the faults counter
//! `deployment` and `kind`; label values are escaped by the encoder.
//!
//! Sample names are vLLM's: a counter family `vllm:prompt_tokens` has the sample
//! `vllm:prompt_tokens_total`, as in vLLM's own Prometheus text (whose `# TYPE` line names it
//! `vllm:prompt_tokens_total`). [`parse`] reads both formats back.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

use super::state::{BUCKETS, Deployment, Histogram, Shared};

/// What `/metrics` answers with: OpenMetrics 1.0 text, the encoder's format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

pub async fn all(State(s): State<Shared>) -> Response {
    let deps: Vec<_> = s.deployments().values().cloned().collect();
    respond(deps)
}

pub async fn one(State(s): State<Shared>, Path(d): Path<String>) -> Response {
    match s.deployment(&d) {
        Some(dep) => respond(vec![dep]),
        None => (StatusCode::NOT_FOUND, format!("unknown deployment '{d}'\n")).into_response(),
    }
}

fn respond(deps: Vec<Arc<Deployment>>) -> Response {
    match text(deps) {
        Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
        Err(fmt::Error) => (StatusCode::INTERNAL_SERVER_ERROR, "the metrics did not encode\n").into_response(),
    }
}

/// The OpenMetrics text (ending `# EOF`) of these deployments' metrics as they are now.
pub fn text(deps: Vec<Arc<Deployment>>) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot(deps)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The deployments a scrape reports; their atomics are loaded when the registry encodes it.
struct Snapshot(Vec<Arc<Deployment>>);

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|d| &d.spec.name)).finish()
    }
}

/// A label set: `deployment` and `model_name` (vLLM's series), or `deployment` and `kind`.
type Labels = [(&'static str, String); 2];

fn vllm_labels(d: &Deployment) -> Labels {
    let model = d.spec.served_models().swap_remove(0);
    [("deployment", d.spec.name.clone()), ("model_name", model)]
}

impl Collector for Snapshot {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let deps = &self.0;
        let gauge = |f: fn(&Deployment) -> i64| deps.iter().map(move |d| (vllm_labels(d), ConstGauge::new(f(d))));
        let counter = |f: fn(&Deployment) -> &AtomicU64| {
            deps.iter()
                .map(move |d| (vllm_labels(d), ConstCounter::new(f(d).load(Ordering::Relaxed))))
        };
        let histogram =
            |f: fn(&Deployment) -> &Histogram| deps.iter().map(move |d| (vllm_labels(d), ConstHistogram::of(f(d))));
        let running = gauge(|d| d.metrics.running.load(Ordering::Relaxed));
        family(
            &mut e,
            "vllm:num_requests_running",
            "Requests being answered.",
            None,
            running,
        )?;
        let waiting = gauge(|_| 0);
        let help = "Requests waiting (the simulator never queues).";
        family(&mut e, "vllm:num_requests_waiting", help, None, waiting)?;
        let prompt = counter(|d| &d.metrics.prompt_tokens);
        family(&mut e, "vllm:prompt_tokens", "Prompt tokens processed.", None, prompt)?;
        let generation = counter(|d| &d.metrics.generation_tokens);
        family(&mut e, "vllm:generation_tokens", "Tokens generated.", None, generation)?;
        let success = counter(|d| &d.metrics.success);
        family(
            &mut e,
            "vllm:request_success",
            "Requests answered successfully.",
            None,
            success,
        )?;
        let seconds = Some(&Unit::Seconds);
        let ttft = histogram(|d| &d.metrics.ttft);
        family(
            &mut e,
            "vllm:time_to_first_token",
            "Time to first token.",
            seconds,
            ttft,
        )?;
        let e2e = histogram(|d| &d.metrics.e2e);
        family(
            &mut e,
            "vllm:e2e_request_latency",
            "End-to-end request latency.",
            seconds,
            e2e,
        )?;
        let faults: Vec<_> = self
            .0
            .iter()
            .flat_map(|d| {
                // A copy, so the lock is held only for it.
                let counts = d.metrics.faults.lock().unwrap_or_else(|e| e.into_inner()).clone();
                counts.into_iter().map(|(kind, n)| {
                    let labels: Labels = [("deployment", d.spec.name.clone()), ("kind", kind.to_owned())];
                    (labels, ConstCounter::new(n))
                })
            })
            .collect();
        family(&mut e, "gauntlet_sim_faults", "Faults injected.", None, faults)
    }
}

/// One metric family: its descriptor (a counter's name without `_total`, which the encoder
/// adds to the sample; a `unit` is appended to the name) and a series per label set.
fn family<L: EncodeLabelSet, M: EncodeMetric + TypedMetric>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    series: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut family = e.encode_descriptor(name, help, unit, M::TYPE)?;
    for (labels, metric) in series {
        metric.encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A histogram's values as read once (prometheus-client's `Histogram` takes a lock to
/// observe; this one is read from the simulator's atomics).
#[derive(Debug)]
struct ConstHistogram {
    sum: f64,
    count: u64,
    /// (upper bound, observations in this bucket alone), the last `+Inf`'s; the encoder
    /// makes them cumulative.
    buckets: [(f64, u64); BUCKETS.len() + 1],
}

impl ConstHistogram {
    fn of(h: &Histogram) -> Self {
        let buckets: [(f64, u64); BUCKETS.len() + 1] = std::array::from_fn(|i| {
            let bound = BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
            (bound, h.counts[i].load(Ordering::Relaxed))
        });
        Self {
            sum: h.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
            // The count is the buckets' total, so `+Inf` equals it whatever a scrape races.
            count: buckets.iter().map(|(_, n)| n).sum(),
            buckets,
        }
    }
}

impl TypedMetric for ConstHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for ConstHistogram {
    fn encode(&self, mut e: MetricEncoder) -> fmt::Result {
        e.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;
    use crate::client::exposition::{Exposition, Kind, ParseError, VLLM_PROMETHEUS_TEXT, parse};
    use crate::sim::DeploymentSpec;
    use crate::sim::state::State as SimState;
    use crate::sim::testkit::{send, sim};

    /// A deployment name with everything a label value must escape, and what naive parsers
    /// split at.
    const ODD: &str = "odd \"quoted\" back\\slash\nnew line},x=\"y\"";

    /// (family, type, its sample names), as vLLM names them.
    const FAMILIES: [(&str, Kind, &[&str]); 8] = [
        ("vllm:num_requests_running", Kind::Gauge, &["vllm:num_requests_running"]),
        ("vllm:num_requests_waiting", Kind::Gauge, &["vllm:num_requests_waiting"]),
        ("vllm:prompt_tokens", Kind::Counter, &["vllm:prompt_tokens_total"]),
        (
            "vllm:generation_tokens",
            Kind::Counter,
            &["vllm:generation_tokens_total"],
        ),
        ("vllm:request_success", Kind::Counter, &["vllm:request_success_total"]),
        (
            "vllm:time_to_first_token_seconds",
            Kind::Histogram,
            &[
                "vllm:time_to_first_token_seconds_bucket",
                "vllm:time_to_first_token_seconds_sum",
                "vllm:time_to_first_token_seconds_count",
            ],
        ),
        (
            "vllm:e2e_request_latency_seconds",
            Kind::Histogram,
            &[
                "vllm:e2e_request_latency_seconds_bucket",
                "vllm:e2e_request_latency_seconds_sum",
                "vllm:e2e_request_latency_seconds_count",
            ],
        ),
        ("gauntlet_sim_faults", Kind::Counter, &["gauntlet_sim_faults_total"]),
    ];

    fn chat(stream: bool) -> Value {
        json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hello there"}],
            "max_tokens": 5,
            "stream": stream,
            "stream_options": {"include_usage": true},
        })
    }

    /// Every byte but unreserved ones percent-encoded: a path segment for any name.
    fn segment(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    async fn call(base: &str, deployment: &str, stream: bool, headers: &[(&str, &str)]) -> u16 {
        let url = format!("{base}/d/{}/v1/chat/completions", segment(deployment));
        let r = send(&url, &chat(stream), headers).await.unwrap();
        let status = r.status().as_u16();
        // Read streams to their end, as a client does.
        r.bytes().await.unwrap();
        status
    }

    async fn scrape(base: &str) -> (Exposition, String) {
        let r = reqwest::get(format!("{base}/metrics")).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], CONTENT_TYPE);
        let text = r.text().await.unwrap();
        let parsed = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        (parsed, text)
    }

    /// Prometheus's own parser (Go, `promtool check metrics`, from Debian's `prometheus`
    /// package) reads what the simulator serves. promtool also lints: exit 3 with style
    /// remarks (vLLM's colon names, which Prometheus reserves for recording rules) is a parse
    /// that succeeded; a parse error is exit 1 and says "error while linting".
    #[tokio::test]
    async fn prometheus_own_parser_reads_the_exposition() {
        use std::io::Write as _;
        if std::process::Command::new("promtool")
            .arg("--version")
            .output()
            .is_err()
        {
            assert!(
                std::env::var("GAUNTLET_REQUIRE").is_err(),
                "promtool (Prometheus's parser) is missing: apt-get install prometheus"
            );
            eprintln!("promtool not installed (apt-get install prometheus): Prometheus's own parse not checked");
            return;
        }
        let s = sim(&["default", ODD]).await;
        let base = s.url();
        assert_eq!(call(&base, "default", true, &[]).await, 200);
        assert_eq!(call(&base, ODD, false, &[("x-sim-fault", "429")]).await, 429);
        let (_, text) = scrape(&base).await;
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            matches!(out.status.code(), Some(0 | 3)) && !said.contains("error while linting"),
            "promtool could not parse the exposition ({:?}): {said}\n{text}",
            out.status
        );
    }

    /// Every sample's value by (name, labels).
    fn values(e: &Exposition) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
        e.families
            .iter()
            .flat_map(|f| &f.samples)
            .map(|s| ((s.name.clone(), s.labels.clone()), s.value))
            .collect()
    }

    /// The checks every scrape must pass: families, types, labels, histogram shape.
    fn check(e: &Exposition, text: &str) {
        assert!(e.eof, "no # EOF:\n{text}");
        let names: Vec<&str> = e.families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, FAMILIES.map(|f| f.0), "{text}");
        for (name, kind, samples) in FAMILIES {
            let f = e.family(name).unwrap();
            assert_eq!(f.kind, kind, "{name}");
            let seen: BTreeSet<&str> = f.samples.iter().map(|s| s.name.as_str()).collect();
            if name != "gauntlet_sim_faults" {
                assert_eq!(seen, samples.iter().copied().collect(), "{name}");
            }
            for s in &f.samples {
                let keys: Vec<&str> = s.labels.keys().map(String::as_str).collect();
                let want: &[&str] = match (name, s.name.ends_with("_bucket")) {
                    ("gauntlet_sim_faults", _) => &["deployment", "kind"],
                    (_, true) => &["deployment", "le", "model_name"],
                    _ => &["deployment", "model_name"],
                };
                assert_eq!(keys, want, "{s:?}");
            }
            if kind == Kind::Histogram {
                assert_eq!(f.unit.as_deref(), Some("seconds"));
                for h in f.histograms() {
                    let bounds: Vec<f64> = h.buckets.iter().map(|b| b.0).collect();
                    let want: Vec<f64> = BUCKETS.iter().copied().chain([f64::INFINITY]).collect();
                    assert_eq!(bounds, want, "{name} {h:?}");
                    assert!(h.buckets.windows(2).all(|w| w[0].1 <= w[1].1), "not cumulative: {h:?}");
                    assert_eq!(
                        Some(h.buckets.last().unwrap().1),
                        h.count,
                        "+Inf is not the count: {h:?}"
                    );
                    assert!(h.sum.is_some_and(|s| s >= 0.0), "{h:?}");
                }
            }
        }
    }

    #[tokio::test]
    async fn scrapes_parse_with_vllm_names_and_types_and_only_grow() {
        let s = sim(&["default", ODD]).await;
        let base = s.url();
        assert_eq!(call(&base, "default", false, &[]).await, 200);
        assert_eq!(call(&base, "default", true, &[]).await, 200);
        assert_eq!(call(&base, ODD, false, &[]).await, 200);
        assert_eq!(call(&base, "default", false, &[("x-sim-fault", "429")]).await, 429);
        let (first, text) = scrape(&base).await;
        check(&first, &text);
        for stream in [false, true] {
            assert_eq!(call(&base, "default", stream, &[]).await, 200);
            assert_eq!(call(&base, ODD, stream, &[]).await, 200);
        }
        // A stream's latency is observed once its last event is sent: let that happen.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (second, text) = scrape(&base).await;
        check(&second, &text);

        // The odd name comes back as itself, on every vLLM family, as both labels.
        for (name, _, samples) in &FAMILIES[..7] {
            // A family's last sample name is one per series (a histogram's `_count`).
            let odd = second
                .samples(samples[samples.len() - 1])
                .filter(|s| s.labels["deployment"] == ODD);
            assert_eq!(
                odd.filter(|s| s.labels["model_name"] == ODD).count(),
                1,
                "{name}\n{text}"
            );
        }
        let one = |e: &Exposition, sample: &str, deployment: &str| {
            let mut found = e.samples(sample).filter(|s| s.labels["deployment"] == deployment);
            let v = found
                .next()
                .unwrap_or_else(|| panic!("no {sample} for {deployment:?}"))
                .value;
            assert!(found.next().is_none());
            v
        };
        assert_eq!(one(&first, "vllm:request_success_total", "default"), 2.0);
        assert_eq!(one(&second, "vllm:request_success_total", ODD), 3.0);
        assert_eq!(one(&first, "vllm:generation_tokens_total", ODD), 5.0);
        assert_eq!(one(&second, "vllm:num_requests_running", "default"), 0.0);
        let faults: Vec<_> = second.samples("gauntlet_sim_faults_total").collect();
        assert_eq!(faults.len(), 1, "{faults:?}");
        assert_eq!(
            (
                faults[0].labels["deployment"].as_str(),
                faults[0].labels["kind"].as_str()
            ),
            ("default", "error")
        );
        assert_eq!(faults[0].value, 1.0);
        assert_eq!(one(&second, "vllm:time_to_first_token_seconds_count", ODD), 3.0);
        assert_eq!(one(&second, "vllm:e2e_request_latency_seconds_count", "default"), 4.0);

        // Counters and histograms only grow between scrapes, and the requests moved them.
        let (before, after) = (values(&first), values(&second));
        let mut grew = BTreeSet::new();
        for ((name, labels), v) in &before {
            let family = first.family_of(name).unwrap();
            if matches!(family.kind, Kind::Counter | Kind::Histogram) {
                let later = after[&(name.clone(), labels.clone())];
                assert!(later >= *v, "{name}{labels:?} went from {v} to {later}");
                if later > *v {
                    grew.insert(name.as_str());
                }
            }
        }
        for (_, kind, samples) in &FAMILIES[2..7] {
            for sample in *samples {
                assert!(grew.contains(sample), "{sample} ({kind:?}) did not move");
            }
        }
        // The per-deployment route reports that deployment only.
        let r = reqwest::get(format!("{base}/d/{}/metrics", segment(ODD)))
            .await
            .unwrap();
        assert_eq!(r.headers()["content-type"], CONTENT_TYPE);
        let one_dep = parse(&r.text().await.unwrap()).unwrap();
        let deployments: BTreeSet<&str> = one_dep
            .families
            .iter()
            .flat_map(|f| &f.samples)
            .map(|s| s.labels["deployment"].as_str())
            .collect();
        assert_eq!(deployments, BTreeSet::from([ODD]));
        s.shutdown().await;
    }

    #[test]
    fn label_values_are_escaped_as_the_format_says() {
        let state = SimState::new(0, vec![DeploymentSpec::named(ODD)]);
        let text = text(vec![state.deployment(ODD).unwrap()]).unwrap();
        let escaped = r#"deployment="odd \"quoted\" back\\slash\nnew line},x=\"y\"""#;
        assert!(text.contains(escaped), "{text}");
        // Every line is one sample or comment: the newline did not end one.
        assert!(
            text.lines().all(|l| l.starts_with('#') || l.starts_with("vllm:")),
            "{text}"
        );
    }

    /// Scrapes taken while threads observe still have cumulative buckets whose `+Inf` is the
    /// count, and never see a count go down.
    #[test]
    fn histograms_stay_whole_while_requests_observe() {
        let state = SimState::new(0, vec![DeploymentSpec::named("a")]);
        let d = state.deployment("a").unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        /// Stops the observers however the scope ends: a failed check must not leave it
        /// waiting for them forever.
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        std::thread::scope(|scope| {
            let _stop = Stop(&stop);
            for t in 0..4 {
                let (d, stop) = (&d, &stop);
                scope.spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        // Spread over every bucket, +Inf's included.
                        d.metrics.ttft.observe(((i * 7 + t) % 13) as f64 * 0.9);
                        i += 1;
                    }
                });
            }
            let mut last = 0.0;
            for _ in 0..200 {
                let text = text(vec![d.clone()]).unwrap();
                let e = parse(&text).unwrap();
                check_shape(&e);
                let count = e
                    .samples("vllm:time_to_first_token_seconds_count")
                    .next()
                    .unwrap()
                    .value;
                assert!(count >= last, "{count} < {last}");
                last = count;
            }
            assert!(last > 0.0);
        });
    }

    fn check_shape(e: &Exposition) {
        for h in e.family("vllm:time_to_first_token_seconds").unwrap().histograms() {
            assert!(h.buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{h:?}");
            assert_eq!(Some(h.buckets.last().unwrap().1), h.count, "{h:?}");
        }
    }

    #[test]
    fn parser_reads_prometheus_text_and_refuses_what_a_scraper_refuses() {
        let e = parse(VLLM_PROMETHEUS_TEXT).unwrap();
        assert!(!e.eof);
        assert_eq!(e.family_of("vllm:prompt_tokens_total").unwrap().kind, Kind::Counter);
        assert_eq!(e.family_of("vllm:prompt_tokens_created").unwrap().kind, Kind::Gauge);
        let successes: Vec<f64> = e.samples("vllm:request_success_total").map(|s| s.value).collect();
        assert_eq!(successes, [3.0, 2.0]);
        let h = e.family("vllm:time_to_first_token_seconds").unwrap().histograms();
        let counts: Vec<f64> = h[0].buckets.iter().map(|b| b.1).collect();
        assert_eq!(counts, [0.0, 2.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(h[0].buckets[5].0, f64::INFINITY);
        assert_eq!((h[0].count, h[0].sum), (Some(5.0), Some(0.249)));
        assert_eq!(h[0].labels["model_name"], "Qwen/Qwen2.5-0.5B-Instruct");
        // Untyped samples, blank lines, other comments, timestamps, exemplars, odd values.
        let e = parse(
            "# a comment\n\nfoo 1 1700000000000\nbar{a=\"x\",} -Inf\n# TYPE c counter\nc_total 2 # {t=\"1\"} 1.0\nd NaN\n",
        )
        .unwrap();
        assert_eq!(e.family("foo").unwrap().samples[0].timestamp, Some(1.7e12));
        assert_eq!(e.family("bar").unwrap().samples[0].value, f64::NEG_INFINITY);
        assert_eq!(e.family_of("c_total").unwrap().kind, Kind::Counter);
        assert!(e.family("d").unwrap().samples[0].value.is_nan());
        let refused = |text: &str| parse(text).err().unwrap_or_else(|| panic!("parsed {text:?}"));
        let cases = [
            ("a{b=\"c\\x\"} 1\n", "invalid escape"),
            ("a{b=\"c} 1\n", "unterminated"),
            ("a{b=\"c\",b=\"d\"} 1\n", "a second label b"),
            ("a{b=c} 1\n", "quoted value"),
            ("a 1\na 2\n", "a second sample"),
            ("a one\n", "not a number"),
            ("9a 1\n", "metric name"),
            ("a 1\n# TYPE a gauge\n", "after its samples"),
            ("# TYPE a gauge\n# TYPE a counter\n", "a second TYPE"),
            ("# TYPE a histogram\na_bucket 1\n", "numeric le"),
            ("# TYPE a histogram\na 1\n", "not a sample name"),
            ("# TYPE a bogus\n", "unknown type"),
            ("a 1\n# EOF\nb 2\n", "after # EOF"),
            ("a{b=\"c\"}1\n", "blank before the value"),
        ];
        for (text, why) in cases {
            let e: ParseError = refused(text);
            assert!(e.why.contains(why), "{text:?}: {e}");
        }
        assert_eq!(refused("a 1\n\nb{ 2\n").line, 3);
    }
}
