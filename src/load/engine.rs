//! Runs one point: offers the profile's load for its bounds, measures every answer, and
//! stops early past the error budget. Closed-loop workers keep their own tallies (no shared
//! state on their path); open-loop requests are tasks spawned at their intended times that
//! hand their samples to one collector.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, mpsc};

use super::profile::{Arrivals, Profile};
use super::prompt::Prompt;
use super::report::{PointReport, Slo};
use super::sample::Sample;
use super::transport::Transport;

/// Errors are not judged before this many answers: one early 503 is not a 100 % error rate.
const MIN_FOR_ABORT: u64 = 20;

/// How one point runs.
#[derive(Debug, Clone)]
pub struct PointPlan {
    pub label: String,
    /// Never a sweep: a sweep is expanded into points before it gets here.
    pub profile: Profile,
    /// Measured time (after the warm-up); with `requests`, whichever ends first.
    pub duration: Option<Duration>,
    /// Measured requests (after the warm-up).
    pub requests: Option<u64>,
    /// Sent but not measured: connections, caches and JITs settle.
    pub warmup: Duration,
    pub stream: bool,
    /// Above this fraction of errors the point stops (1.0: never).
    pub max_error_rate: f64,
    /// Open loop: requests in flight at most; past it, requests wait (and that wait counts
    /// in their latency, as the schedule says they were due).
    pub max_inflight: usize,
    pub seed: u64,
    pub slo: Slo,
}

/// Counters the progress line and the abort rule read while the point runs.
#[derive(Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub measured: AtomicU64,
    stop: AtomicBool,
    aborted: std::sync::Mutex<Option<String>>,
}

impl Live {
    fn tally(&self, s: &Sample) {
        match s.outcome {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.errors.fetch_add(1, Ordering::Relaxed),
        };
    }
    /// Stops the point when the error rate passes the budget.
    fn judge(&self, max_error_rate: f64) {
        let (ok, err) = (self.ok.load(Ordering::Relaxed), self.errors.load(Ordering::Relaxed));
        let done = ok + err;
        if max_error_rate < 1.0 && done >= MIN_FOR_ABORT && err as f64 > max_error_rate * done as f64 {
            if let Ok(mut a) = self.aborted.lock() {
                a.get_or_insert_with(|| {
                    format!(
                        "{err} of {done} requests failed ({:.0} %), past --max-error-rate {:.0} %",
                        100.0 * err as f64 / done as f64,
                        100.0 * max_error_rate
                    )
                });
            }
            self.stop.store(true, Ordering::Relaxed);
        }
    }
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    /// Stops the point from outside (Ctrl-C).
    pub fn interrupt(&self, why: &str) {
        if let Ok(mut a) = self.aborted.lock() {
            a.get_or_insert_with(|| why.to_owned());
        }
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whether the point may send one more measured request (counting it if so).
fn admit(plan: &PointPlan, live: &Live, measure_start: Instant, intended: Instant) -> bool {
    if live.stopped() {
        return false;
    }
    if intended < measure_start {
        return true;
    }
    if plan
        .duration
        .is_some_and(|d| intended.duration_since(measure_start) >= d)
    {
        return false;
    }
    let n = live.measured.fetch_add(1, Ordering::Relaxed);
    plan.requests.is_none_or(|max| n < max)
}

pub async fn run_point(t: Arc<Transport>, prompts: Arc<[Prompt]>, plan: &PointPlan, live: Arc<Live>) -> PointReport {
    let start = Instant::now();
    let measure_start = start + plan.warmup;
    let mut report = match Arrivals::of(&plan.profile, plan.seed) {
        Some(arrivals) => open_loop(&t, &prompts, plan, &live, arrivals, start, measure_start).await,
        None => closed_loop(&t, &prompts, plan, &live, measure_start).await,
    };
    report.duration = Instant::now().saturating_duration_since(measure_start).as_secs_f64();
    report.aborted = live.aborted.lock().ok().and_then(|a| a.clone());
    report
}

/// The sample as the report sees it: its intended time from the end of the warm-up, or
/// `None` for a warm-up request.
fn measured(mut s: Sample, warmup: Duration) -> Option<Sample> {
    s.intended = s.intended.checked_sub(warmup)?;
    Some(s)
}

async fn closed_loop(
    t: &Arc<Transport>,
    prompts: &Arc<[Prompt]>,
    plan: &PointPlan,
    live: &Arc<Live>,
    measure_start: Instant,
) -> PointReport {
    let workers = plan.profile.workers().unwrap_or(1);
    let start = measure_start - plan.warmup;
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (t, prompts, plan, live) = (t.clone(), prompts.clone(), plan.clone(), live.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = PointReport::new(&plan.label, plan.profile.clone());
            let mut i = w as usize;
            loop {
                let intended = Instant::now();
                if !admit(&plan, &live, measure_start, intended) {
                    break;
                }
                live.sent.fetch_add(1, Ordering::Relaxed);
                let p = &prompts[i % prompts.len()];
                i += workers as usize;
                let outcome = t.exchange(&p.body, intended, plan.stream).await.map(|mut s| {
                    if s.input_tokens == 0 {
                        s.input_tokens = p.input_tokens;
                    }
                    s
                });
                let s = Sample {
                    intended: intended - start,
                    lag: Duration::ZERO,
                    outcome,
                };
                live.tally(&s);
                live.judge(plan.max_error_rate);
                if let Some(s) = measured(s, plan.warmup) {
                    mine.record(&s, &plan.slo);
                }
            }
            mine
        }));
    }
    let mut all = PointReport::new(&plan.label, plan.profile.clone());
    for task in tasks {
        if let Ok(r) = task.await {
            all.merge(&r);
        }
    }
    all
}

async fn open_loop(
    t: &Arc<Transport>,
    prompts: &Arc<[Prompt]>,
    plan: &PointPlan,
    live: &Arc<Live>,
    arrivals: Arrivals,
    start: Instant,
    measure_start: Instant,
) -> PointReport {
    let (tx, mut rx) = mpsc::unbounded_channel::<Sample>();
    let collector = {
        let (plan, live) = (plan.clone(), live.clone());
        tokio::spawn(async move {
            let mut r = PointReport::new(&plan.label, plan.profile.clone());
            while let Some(s) = rx.recv().await {
                live.tally(&s);
                live.judge(plan.max_error_rate);
                if let Some(s) = measured(s, plan.warmup) {
                    r.record(&s, &plan.slo);
                }
            }
            r
        })
    };
    // The schedule is kept by a thread of its own that sleeps with the OS timer (tens of µs
    // late), not by tokio's timer wheel (1 ms ticks): a request due at 4.2 ms must leave
    // then, or the generator's own lateness is counted as the server's latency.
    let (t, prompts, plan2, live2) = (t.clone(), prompts.clone(), plan.clone(), live.clone());
    let handle = tokio::runtime::Handle::current();
    let dispatcher = tokio::task::spawn_blocking(move || {
        let slots = Arc::new(Semaphore::new(plan2.max_inflight.max(1)));
        for (i, at) in arrivals.enumerate() {
            let intended = start + at;
            if !admit(&plan2, &live2, measure_start, intended) {
                break;
            }
            let now = Instant::now();
            if intended > now {
                std::thread::sleep(intended - now);
            }
            let lag = Instant::now().saturating_duration_since(intended);
            // Past the in-flight bound the schedule is not moved: this request is late, and
            // its latency, counted from `intended`, says so.
            let slot = match slots.clone().try_acquire_owned() {
                Ok(s) => s,
                Err(_) => match handle.block_on(slots.clone().acquire_owned()) {
                    Ok(s) => s,
                    Err(_) => break,
                },
            };
            if live2.stopped() {
                break;
            }
            live2.sent.fetch_add(1, Ordering::Relaxed);
            let (t, prompts, tx, stream) = (t.clone(), prompts.clone(), tx.clone(), plan2.stream);
            handle.spawn(async move {
                let p = &prompts[i % prompts.len()];
                let outcome = t.exchange(&p.body, intended, stream).await.map(|mut s| {
                    if s.input_tokens == 0 {
                        s.input_tokens = p.input_tokens;
                    }
                    s
                });
                drop(slot);
                let _ = tx.send(Sample {
                    intended: at,
                    lag,
                    outcome,
                });
            });
        }
    });
    let _ = dispatcher.await;
    collector
        .await
        .unwrap_or_else(|_| PointReport::new(&plan.label, plan.profile.clone()))
}
