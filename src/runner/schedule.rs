//! The order the trials start in. libtest-mimic hands its trials to its threads in the order
//! it is given them, so that order is the run's schedule.
//!
//! Design note. A run lasts as long as its longest path, and that is rarely one case: the
//! cases holding a model group to themselves (`runner::locks`: a group LiteLLM can cool down,
//! broken on purpose) run one after another, so their chain takes as long as all of them
//! together. A long case or an unfinished chain started late keeps the stack up after
//! everything else is done. So:
//! - Estimates: how long each case ran the last time it passed (the previous `summary.json`
//!   in the same artifacts folder: `duration_s` less `lock_wait_s`, the time it queued for its
//!   groups), as nextest orders by its slow tests; else the hint the case declares
//!   (`Case::cost`, from the waits its config gives it: timeouts, cooldowns, TTLs); else
//!   [`UNKNOWN_S`].
//! - Order: a dry run of the run — its threads, the group locks taken as a trial takes them —
//!   that gives each free thread the case with the most work hanging on it: for a case holding
//!   groups to itself, what is left of their chains from now (itself, the cases after it, the
//!   rest of the one running); for any other case, its own estimate. Ties keep the suites'
//!   order (the cooldown suite orders its chain itself). A thread is never given a case that
//!   would wait, but for the next case of a chain: it queues behind the running one and starts
//!   the moment that ends, whatever the estimates said. For it, a run without `--test-threads`
//!   gets a thread per chain on top of the default (it waits, and loads nothing). The order the
//!   dry run handed the cases out in is the order libtest-mimic gets.
//! - A wrong estimate costs time, never a result: a case started early waits for its groups
//!   as before. Ignored cases go first (they take no time); `--list` keeps the suites' order
//!   and the reports their name order; under nextest, which runs each case in a process of its
//!   own, the order is nextest's.

use std::collections::HashMap;
use std::path::Path;

use libtest_mimic::Trial;

use super::registry::Case;

/// The estimate of a case that declares none and has not run before: most cases send a few
/// requests and are done in well under a second.
pub const UNKNOWN_S: f64 = 0.5;

/// One case as the dry run sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Estimated seconds.
    pub cost: f64,
    /// Groups held exclusively.
    pub owns: Vec<String>,
    /// Groups held shared.
    pub uses: Vec<String>,
}

/// How long each case ran in the run that wrote `summary` (name → seconds), for the cases
/// that passed there; empty when there is no such file or it cannot be read.
pub fn history(summary: &Path) -> HashMap<String, f64> {
    let Ok(text) = std::fs::read_to_string(summary) else {
        return HashMap::new();
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return HashMap::new();
    };
    json["cases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["status"] == "passed")
        .filter_map(|c| {
            let name = c["name"].as_str()?;
            let took = c["duration_s"].as_f64()? - c["lock_wait_s"].as_f64().unwrap_or(0.0);
            Some((name.to_owned(), took.max(0.0)))
        })
        .collect()
}

/// A case's estimate: its last run, else its declared cost, else [`UNKNOWN_S`].
pub fn estimate(name: &str, declared: Option<f64>, history: &HashMap<String, f64>) -> f64 {
    history
        .get(name)
        .copied()
        .or(declared)
        .filter(|s| s.is_finite() && *s >= 0.0)
        .unwrap_or(UNKNOWN_S)
}

/// Groups held exclusively by more than one of `jobs`: each is a chain of cases that run one
/// after another, and keeps one of them queued behind the one running (see [`order`]).
pub fn chains(jobs: &[Job]) -> usize {
    let mut owners: HashMap<&str, usize> = HashMap::new();
    for g in jobs.iter().flat_map(|j| &j.owns) {
        *owners.entry(g.as_str()).or_default() += 1;
    }
    owners.values().filter(|n| **n > 1).count()
}

/// The order to start `jobs` in (indices into `jobs`) on `threads` workers: the dry run
/// described in the module's note. A worker given a case whose groups are taken waits with it,
/// as a trial does; the dry run gives a worker such a case only if it holds a group to itself
/// and is the first to queue for it: the next case of a chain waits behind the running one,
/// ready the moment it ends, and nothing else waits.
pub fn order(jobs: &[Job], threads: usize) -> Vec<usize> {
    let n = jobs.len();
    // What is left of each exclusively held group's chain: the estimates of the cases not
    // yet started that hold it.
    let mut left: HashMap<&str, f64> = HashMap::new();
    for j in jobs {
        for g in &j.owns {
            *left.entry(g.as_str()).or_default() += j.cost;
        }
    }
    let mut locks = Groups::default();
    let mut dispatched = vec![false; n];
    let mut running: Vec<(f64, usize)> = Vec::new();
    let mut waiting: Vec<usize> = Vec::new();
    let mut idle = threads.max(1);
    let mut out = Vec::with_capacity(n);
    let mut now = 0.0;
    loop {
        while idle > 0 {
            // What is left of each chain from now: its cases not yet dispatched, the one queued,
            // and the rest of the one running.
            let mut rest = left.clone();
            let holders = running
                .iter()
                .map(|(end, i)| (end - now, *i))
                .chain(waiting.iter().map(|i| (jobs[*i].cost, *i)));
            for (t, i) in holders {
                for g in &jobs[i].owns {
                    *rest.entry(g.as_str()).or_default() += t;
                }
            }
            // The heaviest case that may start now or queue first for its groups; the first of
            // equals.
            let mut best: Option<(usize, f64)> = None;
            for (i, j) in jobs.iter().enumerate() {
                if dispatched[i] || !(locks.free(j) || locks.may_queue(j)) {
                    continue;
                }
                let w = j
                    .owns
                    .iter()
                    .map(|g| rest.get(g.as_str()).copied().unwrap_or(0.0))
                    .fold(j.cost, f64::max);
                if best.is_none_or(|(_, bw)| w > bw) {
                    best = Some((i, w));
                }
            }
            let Some((i, _)) = best else { break };
            let j = &jobs[i];
            dispatched[i] = true;
            out.push(i);
            idle -= 1;
            for g in &j.owns {
                *left.entry(g.as_str()).or_default() -= j.cost;
            }
            if locks.free(j) {
                locks.take(j);
                running.push((now + j.cost, i));
            } else {
                locks.queue(j, true);
                waiting.push(i);
            }
        }
        if out.len() == n {
            return out;
        }
        // Nothing runs, so nothing holds a group: cannot happen with cases left over, but keep
        // them in their order rather than loop.
        let Some(k) = (0..running.len()).min_by(|a, b| running[*a].0.total_cmp(&running[*b].0)) else {
            out.extend((0..n).filter(|i| !dispatched[*i]));
            return out;
        };
        let (end, i) = running.swap_remove(k);
        now = end;
        locks.give_back(&jobs[i]);
        idle += 1;
        // Queued cases whose groups came free start on the worker they waited on.
        let mut still = Vec::new();
        for w in std::mem::take(&mut waiting) {
            let j = &jobs[w];
            locks.queue(j, false);
            if locks.free(j) {
                locks.take(j);
                running.push((now + j.cost, w));
            } else {
                locks.queue(j, true);
                still.push(w);
            }
        }
        waiting = still;
    }
}

/// The group locks as the dry run holds them (`runner::locks`: exclusive and shared, and a
/// case queued for a group keeps later sharers out, as its gate does).
#[derive(Default)]
struct Groups<'a> {
    exclusive: HashMap<&'a str, bool>,
    shared: HashMap<&'a str, usize>,
    queued: HashMap<&'a str, usize>,
}

impl<'a> Groups<'a> {
    fn n(map: &HashMap<&'a str, usize>, g: &str) -> usize {
        map.get(g).copied().unwrap_or(0)
    }
    fn held(&self, g: &str) -> bool {
        self.exclusive.get(g).copied().unwrap_or(false)
    }
    /// Whether `j` may take its groups now, no case being queued for them ahead of it.
    fn free(&self, j: &Job) -> bool {
        j.owns
            .iter()
            .all(|g| !self.held(g) && Self::n(&self.shared, g) == 0 && Self::n(&self.queued, g) == 0)
            && j.shared().all(|g| !self.held(g) && Self::n(&self.queued, g) == 0)
    }
    /// Whether `j` holds groups to itself and would be the first queued for each, behind a
    /// case holding them to itself (the next case of a chain). Never behind sharers: a case
    /// queued for a group keeps later sharers out, so one queued for what every case shares
    /// (Redis, which `chaos::redis` kills) would stop the whole run until every case then
    /// running ended (seen: a 20 s hole in a 88 s run, the `chat-geo` chain stalled behind it).
    fn may_queue(&self, j: &Job) -> bool {
        !j.owns.is_empty()
            && j.owns
                .iter()
                .all(|g| Self::n(&self.queued, g) == 0 && Self::n(&self.shared, g) == 0)
    }
    fn queue(&mut self, j: &'a Job, on: bool) {
        for g in &j.owns {
            let q = self.queued.entry(g.as_str()).or_default();
            *q = if on { *q + 1 } else { q.saturating_sub(1) };
        }
    }
    fn take(&mut self, j: &'a Job) {
        for g in &j.owns {
            self.exclusive.insert(g.as_str(), true);
        }
        for g in j.shared() {
            *self.shared.entry(g.as_str()).or_default() += 1;
        }
    }
    fn give_back(&mut self, j: &'a Job) {
        for g in &j.owns {
            self.exclusive.insert(g.as_str(), false);
        }
        for g in j.shared() {
            if let Some(r) = self.shared.get_mut(g.as_str()) {
                *r = r.saturating_sub(1);
            }
        }
    }
}

impl Job {
    /// The groups it holds shared (not also exclusively).
    fn shared(&self) -> impl Iterator<Item = &String> {
        self.uses.iter().filter(|g| !self.owns.contains(g))
    }
}

/// `trials` (one per case, in the suites' order) in the order to start them, and the
/// threads to start them on: `requested` (`--test-threads`), else `default` plus one per chain
/// of exclusive cases (a case queued behind its chain's running one holds a thread, no load).
/// The cases that will not run (`runs` false: ignored or filtered out) go first, as they
/// are; then the others as [`order`] puts them, each estimated from `history` or its hint.
pub fn arrange(
    cases: &[Case],
    trials: Vec<Trial>,
    runs: &[bool],
    can_cool_down: impl Fn(&str) -> bool,
    history: &HashMap<String, f64>,
    (requested, default): (Option<usize>, usize),
) -> (Vec<Trial>, usize) {
    let running: Vec<usize> = (0..cases.len()).filter(|i| runs[*i]).collect();
    let jobs: Vec<Job> = running
        .iter()
        .map(|&i| {
            let c = &cases[i];
            let claims = c.claims.resolve(&can_cool_down);
            Job {
                cost: estimate(&c.name, c.cost_s, history),
                owns: claims.owns,
                uses: claims.uses,
            }
        })
        .collect();
    let threads = requested.unwrap_or(default + chains(&jobs));
    let mut first: Vec<usize> = (0..cases.len()).filter(|i| !runs[*i]).collect();
    first.extend(order(&jobs, threads).into_iter().map(|k| running[k]));
    let mut slots: Vec<Option<Trial>> = trials.into_iter().map(Some).collect();
    let trials = first
        .into_iter()
        .filter_map(|i| slots.get_mut(i).and_then(Option::take))
        .collect();
    (trials, threads)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(cost: f64, owns: &[&str], uses: &[&str]) -> Job {
        Job {
            cost,
            owns: owns.iter().map(|s| s.to_string()).collect(),
            uses: uses.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The makespan of `order` on `threads` workers when every estimate is right, the locks
    /// held as the trials hold them: a worker takes the next case and waits for its groups.
    fn makespan(jobs: &[Job], order: &[usize], threads: usize) -> f64 {
        // Replays libtest-mimic: each free worker takes the next case in order; a case starts
        // when its groups are free (exclusive: no holder; shared: no exclusive holder).
        let mut free_at = vec![0.0f64; threads];
        let mut held: Vec<(f64, f64, &Job)> = Vec::new();
        let mut end = 0.0f64;
        for &i in order {
            let w = (0..threads).min_by(|a, b| free_at[*a].total_cmp(&free_at[*b])).unwrap();
            let j = &jobs[i];
            let mut t = free_at[w];
            loop {
                let clash = held.iter().filter(|(s, e, h)| {
                    *s < t + j.cost.max(1e-9) && *e > t && {
                        j.owns.iter().any(|g| h.owns.contains(g) || h.uses.contains(g))
                            || j.uses.iter().any(|g| h.owns.contains(g))
                    }
                });
                match clash.map(|(_, e, _)| *e).reduce(f64::max) {
                    Some(e) if e > t => t = e,
                    _ => break,
                }
            }
            held.push((t, t + j.cost, j));
            free_at[w] = t + j.cost;
            end = end.max(t + j.cost);
        }
        end
    }

    #[test]
    fn longest_first_when_nothing_is_shared() {
        let jobs = [
            job(1.0, &[], &[]),
            job(5.0, &[], &[]),
            job(3.0, &[], &[]),
            job(5.0, &[], &[]),
        ];
        assert_eq!(
            order(&jobs, 2),
            [1, 3, 2, 0],
            "longest first, equals in the suites' order"
        );
    }

    #[test]
    fn an_exclusive_chain_starts_first_and_runs_back_to_back() {
        // Four 3 s cases owning one group (12 s together), eight independent 4 s cases, three
        // short ones using the group, on four workers and one for the chain's queued case.
        // Longest-first alone would start the 4 s cases first and the chain at 4 s at best;
        // the dry run starts the chain at once, its next case queued behind it.
        let mut jobs: Vec<Job> = (0..8).map(|_| job(4.0, &[], &[])).collect();
        jobs.extend((0..3).map(|_| job(0.2, &[], &["g"])));
        jobs.extend((0..4).map(|_| job(3.0, &["g"], &[])));
        assert_eq!(chains(&jobs), 1);
        let threads = 4 + chains(&jobs);
        let o = order(&jobs, threads);
        let mut sorted = o.clone();
        sorted.sort();
        assert_eq!(sorted, (0..jobs.len()).collect::<Vec<_>>(), "every case exactly once");
        assert_eq!(
            o[..2],
            [11, 12],
            "the chain's first case starts first, its second queues: {o:?}"
        );
        let naive: Vec<usize> = {
            let mut v: Vec<usize> = (0..jobs.len()).collect();
            v.sort_by(|a, b| jobs[*b].cost.total_cmp(&jobs[*a].cost));
            v
        };
        let (ours, theirs) = (makespan(&jobs, &o, threads), makespan(&jobs, &naive, threads));
        assert!(ours <= 12.2 + 1e-9, "the chain bounds the run: {ours}s ({o:?})");
        assert!(ours < theirs, "{ours}s is no better than longest-first's {theirs}s");
    }

    #[test]
    fn only_the_next_case_of_a_chain_waits() {
        // One worker free beside the chain: the dry run never hands it a case that would wait
        // behind a queued one, nor a sharer of a group a chain holds.
        let jobs = [
            job(5.0, &["g"], &[]),
            job(5.0, &["g"], &[]),
            job(5.0, &["g"], &[]),
            job(1.0, &[], &["g"]),
            job(1.0, &[], &[]),
        ];
        assert_eq!(order(&jobs, 3), [0, 1, 4, 2, 3]);
    }

    #[test]
    fn a_case_holding_what_every_case_shares_waits_for_the_end_not_in_the_middle() {
        // Redis is shared by every case and held by one (it kills Redis): queued in the middle,
        // it would keep every later case out until the cases then running ended; with nothing
        // else to run, it goes once the others are done, and the chain runs without a hole.
        let mut jobs = vec![job(6.0, &["redis"], &[])];
        jobs.extend((0..4).map(|_| job(10.0, &["g"], &["redis"])));
        jobs.extend((0..6).map(|_| job(4.0, &[], &["redis"])));
        let threads = 2 + chains(&jobs);
        let o = order(&jobs, threads);
        assert_eq!(o.last(), Some(&0), "{o:?}");
        let span = makespan(&jobs, &o, threads);
        assert!(span <= 40.0 + 6.0 + 1e-9, "the chain, then Redis: {span}s ({o:?})");
    }

    #[test]
    fn one_worker_gets_every_case() {
        let jobs = [job(1.0, &["g"], &[]), job(2.0, &[], &["g"]), job(0.5, &["g"], &["h"])];
        let mut o = order(&jobs, 1);
        o.sort();
        assert_eq!(o, [0, 1, 2]);
        assert!(order(&[], 8).is_empty());
    }

    #[test]
    fn history_takes_what_passed_less_its_queueing() {
        let dir = std::env::temp_dir().join(format!("gauntlet-schedule-{}", crate::random::random_hex(4)));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("summary.json");
        assert!(history(&path).is_empty(), "no file, no history");
        std::fs::write(&path, "not json").unwrap();
        assert!(history(&path).is_empty());
        std::fs::write(
            &path,
            r#"{"cases": [
                {"name": "a", "status": "passed", "duration_s": 5.0, "lock_wait_s": 4.0},
                {"name": "b", "status": "passed", "duration_s": 2.0},
                {"name": "c", "status": "failed", "duration_s": 9.0},
                {"name": "d", "status": "ignored", "duration_s": 0.0}
            ]}"#,
        )
        .unwrap();
        let h = history(&path);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h["a"], 1.0);
        assert_eq!(h["b"], 2.0);
        assert_eq!(estimate("a", Some(7.0), &h), 1.0, "the last run wins over the hint");
        assert_eq!(estimate("c", Some(7.0), &h), 7.0, "a failed run is no estimate");
        assert_eq!(estimate("e", None, &h), UNKNOWN_S);
        let _ = std::fs::remove_dir_all(dir);
    }
}
