//! A load run from its checked settings to its report: each point against each target in
//! turn (the direct path first when the router's overhead is measured, so both see the same
//! machine minutes apart at most), a sweep expanded from what its first two points measured,
//! a progress line while it runs, and the files written after.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::args::LoadArgs;
use super::engine::{Live, PointPlan, run_point};
use super::profile::{Profile, Rate, Shard};
use super::prompt::{Prompt, PromptSource};
use super::report::{PointReport, Report, Slo};
use super::sample::ErrorClass;
use super::transport::Transport;
use crate::error::RunError;

/// Where one path of the run goes.
#[derive(Debug, Clone)]
pub struct Target {
    /// `router`, `direct`, or empty when only one path is loaded.
    pub label: String,
    pub url: String,
    pub key: Option<String>,
    pub model: String,
}

/// The run's settings, checked once.
#[derive(Debug, Clone)]
pub struct Settings {
    pub profiles: Vec<Profile>,
    pub duration: Option<Duration>,
    pub requests: Option<u64>,
    pub warmup: Duration,
    pub stream: bool,
    pub prompts: PromptSource,
    pub timeout: Duration,
    pub max_error_rate: f64,
    pub slo: Slo,
    pub max_inflight: usize,
    pub shard: Shard,
    pub seed: u64,
    pub threads: usize,
    /// A progress line on stderr and Ctrl-C handled (the command); off inside a case.
    pub interactive: bool,
}

fn seconds(flag: &str, v: f64, allow_zero: bool) -> Result<Duration, RunError> {
    if v.is_finite() && (v > 0.0 || (allow_zero && v == 0.0)) && v <= 7.0 * 86_400.0 {
        Ok(Duration::from_secs_f64(v))
    } else {
        Err(RunError::usage(format!(
            "{flag} {v}: seconds, {} and at most a week",
            if allow_zero { "0 or more" } else { "above 0" }
        )))
    }
}

impl Settings {
    pub fn from_args(a: &LoadArgs) -> Result<Self, RunError> {
        let shard = a.shard.unwrap_or(Shard::ONE);
        let profiles = a
            .profile
            .0
            .iter()
            .map(|p| p.shard(shard))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| RunError::usage(format!("--shard {shard}: {e}")))?;
        let duration = a.duration.map(|d| seconds("--duration", d, false)).transpose()?;
        let requests = match a.requests {
            Some(0) => return Err(RunError::usage("--requests 0: at least 1")),
            Some(n) => {
                Some((n / u64::from(shard.count)) + u64::from(u64::from(shard.index) < n % u64::from(shard.count)))
            }
            None => None,
        };
        // Bounded by something, always: ten seconds unless told.
        let duration = if duration.is_none() && requests.is_none() {
            Some(Duration::from_secs(10))
        } else {
            duration
        };
        if !(a.max_error_rate >= 0.0 && a.max_error_rate <= 1.0) {
            return Err(RunError::usage(format!(
                "--max-error-rate {}: a fraction from 0 to 1",
                a.max_error_rate
            )));
        }
        if a.threads == 0 || a.threads > 256 {
            return Err(RunError::usage(format!("--threads {}: from 1 to 256", a.threads)));
        }
        if a.input_tokens == 0 || a.output_tokens == 0 {
            return Err(RunError::usage("--input-tokens and --output-tokens: at least 1"));
        }
        let prompts = match &a.prompts {
            Some(p) => PromptSource::jsonl(p, a.output_tokens)?,
            None => PromptSource::Synthetic {
                input_tokens: a.input_tokens,
                output_tokens: a.output_tokens,
                seed: a.seed,
            },
        };
        Ok(Self {
            profiles,
            duration,
            requests,
            warmup: seconds("--warmup", a.warmup, true)?,
            stream: a.stream,
            prompts,
            timeout: seconds("--timeout", a.timeout, false)?,
            max_error_rate: a.max_error_rate,
            slo: a.slo.clone().unwrap_or_default(),
            max_inflight: a.max_inflight.max(1),
            shard,
            seed: a.seed ^ u64::from(shard.index).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            threads: a.threads,
            interactive: !a.json,
        })
    }
}

/// The first model `GET /v1/models` lists, for a --url run without --model.
pub async fn discover_model(base: &str, key: Option<&str>) -> Result<String, RunError> {
    let url = super::transport::completions_url(base).replace("/chat/completions", "/models");
    let mut req = reqwest::Client::new().get(&url).timeout(Duration::from_secs(10));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.map_err(|e| {
        RunError::stack(format!(
            "cannot reach {url}: {}",
            crate::client::router::error_chain(&e)
        ))
    })?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|_| {
        RunError::stack(format!(
            "{url} answered {status} with something that is not an OpenAI model list: {}; pass --model",
            crate::client::router::excerpt(&text)
        ))
    })?;
    v["data"][0]["id"].as_str().map(str::to_owned).ok_or_else(|| {
        RunError::stack(format!(
            "{url} ({status}) lists no model: {}; pass --model",
            crate::client::router::excerpt(&text)
        ))
    })
}

/// One request to `t` before measuring: an unreachable server, a refused key or model, or an
/// answer that is not an OpenAI chat completion ends the run here, with what came back.
async fn preflight(t: &Transport, target: &Target, prompt: &Prompt, stream: bool) -> Result<(), RunError> {
    let url = crate::redact::redact(&t.url);
    let (reading, at) = match t.exchange_reading(&prompt.body, Instant::now(), stream).await {
        Ok(r) => r,
        Err(ErrorClass::Timeout) => {
            return Err(RunError::stack(format!(
                "{url}: no answer to a first request within --timeout"
            )));
        }
        Err(_) => return Err(RunError::stack(format!("cannot reach {url}: connection failed"))),
    };
    let excerpt = crate::redact::redact(&reading.excerpt());
    match reading.finish(at) {
        Ok(_) => Ok(()),
        Err(ErrorClass::Status(s @ (400 | 401 | 403 | 404 | 422))) => Err(RunError::usage(format!(
            "{url} refused a first request for model {:?} with {s}: {excerpt}",
            target.model
        ))),
        // A 429 or a 5xx is the server under load saying something worth measuring: the
        // run goes on and counts it (and stops at the error budget).
        Err(ErrorClass::Status(s)) if s == 429 || s >= 500 => Ok(()),
        Err(ErrorClass::Status(s)) => Err(RunError::stack(format!(
            "{url} answered a first request with {s}: {excerpt}"
        ))),
        Err(ErrorClass::Malformed) => Err(RunError::stack(format!(
            "{url} answered a first request with something that is not an OpenAI chat completion{}: {excerpt}",
            if stream { " stream" } else { "" }
        ))),
        Err(c) => Err(RunError::stack(format!("{url}: a first request failed ({})", c.key()))),
    }
}

/// Runs every point against every target, on a runtime of its own (`threads` workers), so
/// the generator does not share threads with a stack served in this process.
pub fn run_blocking(s: &Settings, targets: &[Target]) -> Result<Report, RunError> {
    // One thread (the default, like `wrk -t1`): a current-thread runtime, no hand-offs.
    let mut builder = if s.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(s.threads);
        b
    };
    let rt = builder
        .enable_all()
        .build()
        .map_err(|e| RunError::stack(format!("cannot start the load generator's runtime: {e}")))?;
    rt.block_on(run(s, targets))
}

pub async fn run(s: &Settings, targets: &[Target]) -> Result<Report, RunError> {
    let last = targets.last().ok_or_else(|| RunError::usage("nothing to load"))?;
    let mut paths = Vec::new();
    for t in targets {
        let transport = Arc::new(Transport::new(&t.url, t.key.as_deref(), s.timeout).await?);
        let prompts: Arc<[Prompt]> = s.prompts.bodies(&t.model, s.stream, s.shard.index).into();
        preflight(&transport, t, &prompts[0], s.stream).await?;
        paths.push((t, transport, prompts));
    }
    let interrupted = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let current: Arc<std::sync::Mutex<Option<Arc<Live>>>> = Arc::default();
    let watcher = s.interactive.then(|| {
        let (interrupted, current) = (interrupted.clone(), current.clone());
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                interrupted.store(true, Ordering::Relaxed);
                if let Some(l) = current.lock().ok().and_then(|c| c.clone()) {
                    l.interrupt("interrupted (SIGINT)");
                }
            }
        })
    });
    let mut points: Vec<PointReport> = Vec::new();
    let mut queue: Vec<Profile> = s.profiles.clone();
    queue.reverse();
    let mut sweep: Option<(u32, Vec<f64>)> = None;
    'points: while let Some(profile) = queue.pop() {
        if let Profile::Sweep { points: n, max } = profile {
            // Synchronous, then the ceiling; the rates between follow once both are measured.
            sweep = Some((n, Vec::new()));
            queue.push(Profile::Concurrent { n: max });
            queue.push(Profile::Synchronous);
            continue;
        }
        for (t, transport, prompts) in &paths {
            let plan = PointPlan {
                label: t.label.clone(),
                profile: profile.clone(),
                duration: s.duration,
                requests: s.requests,
                warmup: s.warmup,
                stream: s.stream,
                max_error_rate: s.max_error_rate,
                max_inflight: s.max_inflight,
                seed: s.seed,
                slo: s.slo.clone(),
            };
            let live = Arc::new(Live::default());
            if let Ok(mut c) = current.lock() {
                *c = Some(live.clone());
            }
            let ticker = s.interactive.then(|| progress(&plan, live.clone()));
            let point = run_point(transport.clone(), prompts.clone(), &plan, live).await;
            if let Some((bar, task)) = ticker {
                task.abort();
                bar.finish_and_clear();
            }
            let stop = point.aborted.is_some();
            if std::ptr::eq(*t, last)
                && let Some((_, measured)) = sweep.as_mut()
                && matches!(point.profile, Profile::Synchronous | Profile::Concurrent { .. })
                && point.duration > 0.0
            {
                measured.push(point.completed as f64 / point.duration);
            }
            points.push(point);
            if stop || interrupted.load(Ordering::Relaxed) {
                break 'points;
            }
        }
        if let Some((n, measured)) = &sweep
            && measured.len() == 2
            && queue.is_empty()
        {
            let (lo, hi) = (measured[0], measured[1].max(measured[0]));
            for k in (1..=*n).rev() {
                // Rounded to 0.1 request/s: a rate a person can type again.
                let r = ((lo + (hi - lo) * f64::from(k) / f64::from(n + 1)) * 10.0).round() / 10.0;
                if let Ok(rate) = Rate::new(r) {
                    queue.push(Profile::Constant { rate });
                }
            }
            sweep = None;
        }
    }
    if let Some(w) = watcher {
        w.abort();
    }
    if interrupted.load(Ordering::Relaxed) {
        return Err(RunError::Interrupted);
    }
    Ok(Report {
        url: last.url.clone(),
        model: last.model.clone(),
        stream: s.stream,
        shard: s.shard,
        slo: s.slo.clone(),
        points,
    })
}

fn progress(plan: &PointPlan, live: Arc<Live>) -> (indicatif::ProgressBar, tokio::task::JoinHandle<()>) {
    let bar = indicatif::ProgressBar::new_spinner();
    let name = format!(
        "{}{}",
        if plan.label.is_empty() {
            String::new()
        } else {
            format!("{} ", plan.label)
        },
        plan.profile.name()
    );
    let b = bar.clone();
    let task = tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tick.tick().await;
            let (ok, err) = (live.ok.load(Ordering::Relaxed), live.errors.load(Ordering::Relaxed));
            let t = start.elapsed().as_secs_f64();
            b.set_message(format!(
                "{name}: {t:.0} s, sent {}, ok {ok}, errors {err}, {:.0} answers/s",
                live.sent.load(Ordering::Relaxed),
                (ok + err) as f64 / t.max(0.001)
            ));
            b.tick();
        }
    });
    (bar, task)
}

/// Writes report.json, summary.txt and the plots into `dir`.
pub fn write(report: &Report, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let json = dir.join("report.json");
    std::fs::write(&json, serde_json::to_vec_pretty(&report.to_json())?)?;
    let summary = dir.join("summary.txt");
    std::fs::write(&summary, report.text())?;
    let mut out = vec![json, summary];
    out.extend(super::plot::write(report, dir)?);
    Ok(out)
}

/// Reads a report.json, with the file named in any error.
pub fn read(path: &Path) -> Result<Report, RunError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| RunError::usage(format!("cannot read {}: {e}", path.display())))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| RunError::usage(format!("{}:{}: not JSON: {e}", path.display(), e.line())))?;
    Report::from_json(&path.display().to_string(), &v).map_err(RunError::usage)
}

/// After a run: the files, the summary, the JSON on stdout if asked, then the verdicts: a
/// point stopped past its error budget, or a regression against `--baseline`, is exit 1.
pub fn conclude(a: &LoadArgs, report: &Report) -> anyhow::Result<()> {
    let files = write(report, &a.out)?;
    let text = report.text();
    if a.json {
        eprint!("{text}");
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{text}");
    }
    let listed: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    eprintln!("gauntlet load: wrote {}", listed.join(", "));
    if let Some(p) = report.points.iter().find(|p| p.aborted.is_some()) {
        return Err(RunError::Failed(format!(
            "{} {}: stopped: {}",
            p.label,
            p.profile.name(),
            p.aborted.as_deref().unwrap_or("")
        ))
        .into());
    }
    if let Some(base) = &a.baseline {
        let rule = a.rule.rule().map_err(RunError::usage)?;
        gate(&read(base)?, report, rule)?;
    }
    Ok(())
}

fn gate(base: &Report, new: &Report, rule: super::gate::Rule) -> anyhow::Result<()> {
    let verdicts = super::gate::compare(base, new, rule).map_err(RunError::usage)?;
    println!(
        "regression gate (one-sided Mann-Whitney p < {}, median +{} ms and +{} %):",
        rule.alpha, rule.min_effect_ms, rule.min_effect_pct
    );
    for v in &verdicts {
        println!("  {}", v.line());
    }
    let bad: Vec<String> = verdicts
        .iter()
        .filter(|v| v.regression)
        .map(|v| format!("{} {}", v.point, v.metric))
        .collect();
    if bad.is_empty() {
        Ok(())
    } else {
        Err(RunError::Failed(format!("slower than the baseline: {}", bad.join(", "))).into())
    }
}

/// `gauntlet load merge`.
pub fn merge_cli(reports: &[PathBuf], out: &Path) -> anyhow::Result<()> {
    let read: Vec<Report> = reports.iter().map(|p| read(p)).collect::<Result<_, _>>()?;
    let merged = Report::merge(&read).map_err(RunError::usage)?;
    let files = write(&merged, out)?;
    print!("{}", merged.text());
    eprintln!(
        "gauntlet load merge: {} shards into {}",
        reports.len(),
        files[0].display()
    );
    Ok(())
}

/// `gauntlet load compare`.
pub fn compare_cli(baseline: &Path, report: &Path, rule: super::args::RuleArgs) -> anyhow::Result<()> {
    let rule = rule.rule().map_err(RunError::usage)?;
    gate(&read(baseline)?, &read(report)?, rule)
}
