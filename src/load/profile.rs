//! How requests are offered: closed loop (`synchronous`, `concurrent:N`: a worker sends its next
//! request when the last one is answered) or open loop (`constant:R`, `poisson:R`: requests
//! leave on a schedule fixed before the run, whatever the server does), and `sweep`, which
//! measures both ends and then fills the rates between.
//!
//! Design note: open-loop latency is measured from the *intended* send time of the schedule,
//! not from when the request actually left. A server that stalls for a second delays every
//! request due in that second; a closed-loop client simply stops sending and so records only
//! the few requests that were in flight (coordinated omission, after wrk2). Closed loops stay
//! useful for throughput; their latency is what one user waiting on the previous reply sees.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Requests per second: finite and above zero, checked once where it is parsed.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "f64", into = "f64")]
pub struct Rate(f64);

impl Rate {
    /// Above this, one generator's schedule is finer than its timer can honour.
    pub const MAX: f64 = 1_000_000.0;

    pub fn new(per_second: f64) -> Result<Self, String> {
        if per_second.is_finite() && per_second > 0.0 && per_second <= Self::MAX {
            Ok(Self(per_second))
        } else {
            Err(format!(
                "a rate is requests per second, above 0 and at most {}; got {per_second}",
                Self::MAX
            ))
        }
    }
    pub fn per_second(self) -> f64 {
        self.0
    }
}

impl TryFrom<f64> for Rate {
    type Error = String;
    fn try_from(v: f64) -> Result<Self, String> {
        Self::new(v)
    }
}

impl From<Rate> for f64 {
    fn from(r: Rate) -> f64 {
        r.0
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One load shape. A profile with several points (`constant:5,20,50`, `sweep`) is run point
/// by point, each with the run's bounds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Profile {
    /// One request at a time (`concurrent:1`): latency without queueing.
    Synchronous,
    /// `n` workers, each waiting for its reply before sending again: throughput at that
    /// concurrency.
    Concurrent { n: u32 },
    /// Open loop: one request every 1/R s.
    Constant { rate: Rate },
    /// Open loop: exponential gaps of mean 1/R s (seeded), the arrivals of many independent
    /// users.
    Poisson { rate: Rate },
    /// Synchronous, then `concurrent:max` for the ceiling, then `points` constant rates
    /// evenly between the two measured rates (GuideLLM's sweep).
    Sweep { points: u32, max: u32 },
}

impl Profile {
    pub fn name(&self) -> String {
        match self {
            Self::Synchronous => "synchronous".into(),
            Self::Concurrent { n } => format!("concurrent:{n}"),
            Self::Constant { rate } => format!("constant:{rate}"),
            Self::Poisson { rate } => format!("poisson:{rate}"),
            Self::Sweep { points, max } => format!("sweep:{points}:{max}"),
        }
    }

    /// Workers of a closed loop; `None` for an open one.
    pub fn workers(&self) -> Option<u32> {
        match self {
            Self::Synchronous => Some(1),
            Self::Concurrent { n } => Some(*n),
            _ => None,
        }
    }

    /// This profile for shard `i` of `n` identical generators: the offered load divided so
    /// that the shards together offer what one generator would.
    pub fn shard(&self, shard: Shard) -> Result<Self, String> {
        let n = shard.count;
        if n == 1 {
            return Ok(self.clone());
        }
        Ok(match self {
            Self::Synchronous => return Err("synchronous is one request at a time: it cannot be sharded".into()),
            Self::Concurrent { n: c } => {
                // Shards 0..(c % n) take one worker more, so the workers add up to c.
                let share = c / n + u32::from(shard.index < c % n);
                if share == 0 {
                    return Err(format!("concurrent:{c} has fewer workers than {n} shards"));
                }
                Self::Concurrent { n: share }
            }
            Self::Constant { rate } => Self::Constant {
                rate: Rate::new(rate.0 / f64::from(n))?,
            },
            Self::Poisson { rate } => Self::Poisson {
                rate: Rate::new(rate.0 / f64::from(n))?,
            },
            Self::Sweep { .. } => return Err("a sweep measures one generator's ceiling: it cannot be sharded".into()),
        })
    }
}

/// `--profile` as written: one profile, or one kind at several rates (`constant:5,20,50`).
#[derive(Debug, Clone, PartialEq)]
pub struct Profiles(pub Vec<Profile>);

impl FromStr for Profiles {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (kind, arg) = s.split_once(':').map_or((s, None), |(k, a)| (k, Some(a)));
        let numbers = |what: &str| -> Result<Vec<f64>, String> {
            let a = arg
                .filter(|a| !a.is_empty())
                .ok_or_else(|| format!("{kind} needs {what}: {kind}:<{what}>"))?;
            a.split(',')
                .map(|x| {
                    x.trim()
                        .parse::<f64>()
                        .map_err(|_| format!("{kind}: {x:?} is not a number"))
                })
                .collect()
        };
        let rates = |make: fn(Rate) -> Profile| -> Result<Vec<Profile>, String> {
            numbers("requests per second")?
                .into_iter()
                .map(|r| Rate::new(r).map(make).map_err(|e| format!("{kind}:{r}: {e}")))
                .collect()
        };
        let list = match kind {
            "synchronous" if arg.is_none() => vec![Profile::Synchronous],
            "concurrent" => numbers("workers")?
                .into_iter()
                .map(|n| {
                    if n >= 1.0 && n.fract() == 0.0 && n <= 100_000.0 {
                        Ok(Profile::Concurrent { n: n as u32 })
                    } else {
                        Err(format!("concurrent:{n}: workers are a whole number from 1 to 100000"))
                    }
                })
                .collect::<Result<_, _>>()?,
            "constant" => rates(|rate| Profile::Constant { rate })?,
            "poisson" => rates(|rate| Profile::Poisson { rate })?,
            "sweep" => {
                let mut parts = arg.unwrap_or("").split(':').filter(|p| !p.is_empty());
                let whole = |p: Option<&str>, default: u32, what: &str| -> Result<u32, String> {
                    match p {
                        None => Ok(default),
                        Some(p) => p
                            .parse::<u32>()
                            .ok()
                            .filter(|n| (1..=1000).contains(n))
                            .ok_or_else(|| format!("sweep: {what} {p:?} is not a whole number from 1 to 1000")),
                    }
                };
                let points = whole(parts.next(), 5, "points")?;
                let max = whole(parts.next(), 64, "max concurrency")?;
                vec![Profile::Sweep { points, max }]
            }
            _ => {
                return Err(format!(
                    "unknown profile {s:?}: synchronous, concurrent:N, constant:R, poisson:R or sweep[:POINTS[:MAX]] \
                     (R and N may be lists: constant:5,20,50)"
                ));
            }
        };
        Ok(Self(list))
    }
}

/// `--shard i/N`: this generator is number `index` (from 0) of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    pub const ONE: Shard = Shard { index: 0, count: 1 };
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("--shard {s:?}: write i/N with 0 <= i < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.parse::<u32>().map_err(|_| bad())?,
            n.parse::<u32>().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The send times of an open loop, as offsets from the start: fixed before the first
/// request leaves, so nothing the server does moves them.
pub struct Arrivals {
    kind: ArrivalKind,
    next: Duration,
    n: u64,
}

enum ArrivalKind {
    Constant(f64),
    Poisson(f64, Box<ChaCha8Rng>),
}

impl Arrivals {
    /// `None` for a closed-loop profile.
    pub fn of(profile: &Profile, seed: u64) -> Option<Self> {
        let kind = match profile {
            Profile::Constant { rate } => ArrivalKind::Constant(rate.0),
            Profile::Poisson { rate } => ArrivalKind::Poisson(rate.0, Box::new(ChaCha8Rng::seed_from_u64(seed))),
            _ => return None,
        };
        Some(Self {
            kind,
            next: Duration::ZERO,
            n: 0,
        })
    }
}

impl Iterator for Arrivals {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let at = self.next;
        self.n += 1;
        self.next = match &mut self.kind {
            // From the count, not by adding gaps, so rounding never drifts the rate.
            ArrivalKind::Constant(r) => Duration::from_secs_f64(self.n as f64 / *r),
            ArrivalKind::Poisson(r, rng) => {
                let u: f64 = rng.random();
                at + Duration::from_secs_f64(-(1.0 - u).ln() / *r)
            }
        };
        Some(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_and_bad_ones_say_what_is_wrong() {
        assert_eq!("synchronous".parse::<Profiles>().unwrap().0, vec![Profile::Synchronous]);
        assert_eq!(
            "constant:5,20".parse::<Profiles>().unwrap().0,
            vec![
                Profile::Constant { rate: Rate(5.0) },
                Profile::Constant { rate: Rate(20.0) }
            ]
        );
        assert_eq!(
            "sweep".parse::<Profiles>().unwrap().0,
            vec![Profile::Sweep { points: 5, max: 64 }]
        );
        for (bad, says) in [
            ("constant:0", "above 0"),
            ("constant:-3", "above 0"),
            ("poisson:nan", "above 0"),
            ("constant", "needs requests per second"),
            ("constant:fast", "not a number"),
            ("concurrent:1.5", "whole number"),
            ("warp:9", "unknown profile"),
            ("sweep:0", "whole number"),
        ] {
            let e = bad.parse::<Profiles>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn constant_arrivals_keep_their_rate_and_poisson_ones_their_mean() {
        let c: Vec<_> = Arrivals::of(&Profile::Constant { rate: Rate(3.0) }, 0)
            .unwrap()
            .take(4)
            .collect();
        assert_eq!(c[3], Duration::from_secs(1));
        let p = Arrivals::of(&Profile::Poisson { rate: Rate(100.0) }, 7).unwrap();
        let last = p.take(20_001).last().unwrap();
        // 20 000 gaps of mean 10 ms: 200 s within a few percent (the sd is 0.7 %).
        assert!((last.as_secs_f64() - 200.0).abs() < 6.0, "{last:?}");
        let again: Vec<_> = Arrivals::of(&Profile::Poisson { rate: Rate(100.0) }, 7)
            .unwrap()
            .take(50)
            .collect();
        let same: Vec<_> = Arrivals::of(&Profile::Poisson { rate: Rate(100.0) }, 7)
            .unwrap()
            .take(50)
            .collect();
        assert_eq!(again, same, "seeded");
    }

    #[test]
    fn shards_divide_the_offered_load() {
        let s = |i, n| Shard { index: i, count: n };
        let c = Profile::Concurrent { n: 5 };
        let shares: u32 = (0..2).map(|i| c.shard(s(i, 2)).unwrap().workers().unwrap()).sum();
        assert_eq!(shares, 5);
        assert_eq!(
            Profile::Constant { rate: Rate(50.0) }.shard(s(1, 2)).unwrap(),
            Profile::Constant { rate: Rate(25.0) }
        );
        assert!(Profile::Synchronous.shard(s(0, 2)).is_err());
        let sweep = Profile::Sweep { points: 3, max: 8 };
        assert_eq!(
            sweep.shard(Shard::ONE).unwrap(),
            sweep,
            "one generator is the whole run"
        );
        assert!(sweep.shard(s(0, 2)).is_err());
        assert!("2/2".parse::<Shard>().is_err());
        assert_eq!("1/4".parse::<Shard>().unwrap(), s(1, 4));
    }
}
