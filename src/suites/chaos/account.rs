//! Every request of a chaos case accounted for: how many were sent, served and lost (by error
//! class) before, during and after the fault, and the two times a case asserts on — how long
//! after the fault traffic was served steadily again (failover), how long after the heal it
//! came back to where it was (recovery).
//!
//! Design note: times are read from the requests' *planned* send times, not from when an
//! answer came: "traffic is served again from t" means every request planned from t on was
//! served, so one slow request cannot make a failover look shorter than it was.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::traffic::Shot;

/// The requests of one phase.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Phase {
    pub sent: usize,
    pub served: usize,
    /// Failed requests by class.
    pub lost: BTreeMap<String, usize>,
}

impl Phase {
    fn of<'a>(shots: impl Iterator<Item = &'a Shot>) -> Self {
        let mut p = Phase::default();
        for s in shots {
            p.sent += 1;
            match &s.outcome {
                super::traffic::Outcome::Served(_) => p.served += 1,
                super::traffic::Outcome::Failed(class) => *p.lost.entry(class.clone()).or_default() += 1,
            }
        }
        p
    }
    pub fn lost(&self) -> usize {
        self.sent - self.served
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} sent, {} served, {} lost", self.sent, self.served, self.lost())?;
        if !self.lost.is_empty() {
            let by: Vec<String> = self.lost.iter().map(|(c, n)| format!("{c} {n}")).collect();
            write!(f, " ({})", by.join(", "))?;
        }
        Ok(())
    }
}

/// A chaos case's traffic, split at the fault and the heal.
#[derive(Debug, Clone)]
pub struct Account {
    pub fault_at: Duration,
    pub heal_at: Duration,
    pub before: Phase,
    pub during: Phase,
    pub after: Phase,
    shots: Vec<Shot>,
}

impl Account {
    /// `shots` in planned-send order (as [`super::traffic::Traffic::stop`] returns them).
    pub fn new(shots: Vec<Shot>, fault_at: Duration, heal_at: Duration) -> Self {
        Self {
            fault_at,
            heal_at,
            before: Phase::of(shots.iter().filter(|s| s.at < fault_at)),
            during: Phase::of(shots.iter().filter(|s| s.at >= fault_at && s.at < heal_at)),
            after: Phase::of(shots.iter().filter(|s| s.at >= heal_at)),
            shots,
        }
    }

    /// How long after the fault every request planned from then until the heal met `ok`;
    /// `None` when the last one before the heal did not (traffic never settled).
    pub fn settled_after_fault(&self, ok: impl Fn(&Shot) -> bool) -> Option<Duration> {
        settle(&self.shots, self.fault_at, self.heal_at, ok)
    }

    /// How long after the heal every request planned from then to the end met `ok`.
    pub fn settled_after_heal(&self, ok: impl Fn(&Shot) -> bool) -> Option<Duration> {
        settle(&self.shots, self.heal_at, Duration::MAX, ok)
    }

    /// The slowest request planned in `[from, to)`.
    pub fn slowest(&self, from: Duration, to: Duration) -> Duration {
        self.between(from, to).map(|s| s.latency).max().unwrap_or_default()
    }

    /// The last `n` requests planned before `to`, each as planned time, latency and outcome:
    /// what a "never settled" failure shows.
    pub fn last_before(&self, to: Duration, n: usize) -> String {
        let mut v: Vec<String> = self
            .shots
            .iter()
            .filter(|s| s.at < to)
            .rev()
            .take(n)
            .map(|s| {
                format!(
                    "+{:.2}s {}ms {:?}",
                    s.at.as_secs_f64(),
                    s.latency.as_millis(),
                    s.outcome
                )
            })
            .collect();
        v.reverse();
        v.join(", ")
    }

    /// The requests planned in `[from, to)`.
    pub fn between(&self, from: Duration, to: Duration) -> impl Iterator<Item = &Shot> {
        self.shots.iter().filter(move |s| s.at >= from && s.at < to)
    }
}

/// Judged on the requests planned in `[from, to)` and answered by `to`: one still in flight
/// when the fault is healed may rightly be served by the healed region (seen once on a loaded
/// machine: the live check had seen the failover steady, and the request sent 50 ms before the
/// heal, answered after it by the healed region, read as "never settled").
fn settle(shots: &[Shot], from: Duration, to: Duration, ok: impl Fn(&Shot) -> bool) -> Option<Duration> {
    let window: Vec<&Shot> = shots
        .iter()
        .filter(|s| s.at >= from && s.at < to && s.at.checked_add(s.latency).is_none_or(|end| end <= to))
        .collect();
    let last_bad = window.iter().rposition(|s| !ok(s));
    let first_good = match last_bad {
        None => window.first()?,
        Some(i) => window.get(i + 1)?,
    };
    Some(first_good.at.saturating_sub(from))
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "before the fault: {}; during (from {:.2}s to {:.2}s): {}; after: {}",
            self.before,
            self.fault_at.as_secs_f64(),
            self.heal_at.as_secs_f64(),
            self.during,
            self.after
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::traffic::{Outcome, Shot};
    use super::*;

    fn shot(ms: u64, outcome: Outcome) -> Shot {
        Shot {
            seq: (ms / 100) as usize,
            at: Duration::from_millis(ms),
            latency: Duration::from_millis(5),
            outcome,
        }
    }
    fn by(d: &str) -> Outcome {
        Outcome::Served(Some(d.into()))
    }
    fn failed(c: &str) -> Outcome {
        Outcome::Failed(c.into())
    }

    #[test]
    fn phases_split_at_fault_and_heal_and_count_losses_by_class() {
        let shots = vec![
            shot(0, by("a")),
            shot(100, by("a")),
            shot(200, failed("connect")),
            shot(300, failed("timeout")),
            shot(400, by("b")),
            shot(500, by("b")),
            shot(600, by("b")),
            shot(700, by("a")),
        ];
        let a = Account::new(shots, Duration::from_millis(200), Duration::from_millis(600));
        assert_eq!((a.before.sent, a.before.lost()), (2, 0));
        assert_eq!((a.during.sent, a.during.lost()), (4, 2));
        assert_eq!(a.during.lost.get("connect"), Some(&1));
        assert_eq!(a.during.lost.get("timeout"), Some(&1));
        assert_eq!((a.after.sent, a.after.lost()), (2, 0));
        // Failover: served by b steadily from 400 ms, 200 ms after the fault.
        let on_b = |s: &Shot| s.served_by() == Some("b");
        assert_eq!(a.settled_after_fault(on_b), Some(Duration::from_millis(200)));
        // Recovery: back on a from 700 ms, 100 ms after the heal.
        let on_a = |s: &Shot| s.served_by() == Some("a");
        assert_eq!(a.settled_after_heal(on_a), Some(Duration::from_millis(100)));
        assert!(
            a.to_string()
                .contains("4 sent, 2 served, 2 lost (connect 1, timeout 1)"),
            "{a}"
        );
    }

    #[test]
    fn traffic_that_never_settles_has_no_failover_time() {
        let shots = vec![shot(0, by("a")), shot(100, by("b")), shot(200, failed("http_500"))];
        let a = Account::new(shots, Duration::from_millis(50), Duration::from_millis(300));
        assert_eq!(a.settled_after_fault(|s| s.ok()), None);
        // A flap inside the window restarts the clock: settled from the request after it.
        let shots = vec![shot(0, by("b")), shot(100, failed("connect")), shot(200, by("b"))];
        let a = Account::new(shots, Duration::ZERO, Duration::from_millis(300));
        assert_eq!(a.settled_after_fault(|s| s.ok()), Some(Duration::from_millis(200)));
    }

    #[test]
    fn a_request_in_flight_at_the_heal_does_not_unsettle_the_failover() {
        let mut late = shot(250, by("a"));
        late.latency = Duration::from_millis(80);
        let shots = vec![shot(0, by("a")), shot(100, by("b")), shot(200, by("b")), late];
        let a = Account::new(shots, Duration::from_millis(50), Duration::from_millis(300));
        let on_b = |s: &Shot| s.served_by() == Some("b");
        assert_eq!(a.settled_after_fault(on_b), Some(Duration::from_millis(50)));
        // Answered before the heal, it counts: the failover had not settled.
        let mut early = shot(250, by("a"));
        early.latency = Duration::from_millis(10);
        let shots = vec![shot(100, by("b")), shot(200, by("b")), early];
        let a = Account::new(shots, Duration::from_millis(50), Duration::from_millis(300));
        assert_eq!(a.settled_after_fault(on_b), None);
    }
}
