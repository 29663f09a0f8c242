//! How LiteLLM chooses a deployment inside a group, so cases assert what holds for the
//! strategy in use instead of assuming `order`.
//!
//! From the pinned LiteLLM (1.100.5): deployments that set `order` are filtered to the lowest
//! order level first (`utils._get_order_filtered_deployments`; a deployment without `order`
//! is then never picked while a lower level is healthy); `simple-shuffle` (the default) then
//! picks at random, weighted by `weight`, else `rpm`, else `tpm` — whichever the *first*
//! candidate sets, missing values counting 0 (`router_strategy/simple_shuffle.py`). The other
//! strategies depend on live state (latency, usage, in-flight requests), so no share is
//! predicted for them.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    SimpleShuffle,
    LeastBusy,
    UsageBased,
    UsageBasedV2,
    LatencyBased,
    CostBased,
    /// A strategy this version of gauntlet does not model (named as configured).
    Other(String),
}

impl Strategy {
    /// Every strategy name the pinned LiteLLM accepts (it refuses to start with another).
    pub const ACCEPTED: [&'static str; 7] = [
        "simple-shuffle",
        "least-busy",
        "usage-based-routing",
        "usage-based-routing-v2",
        "latency-based-routing",
        "cost-based-routing",
        "lar1",
    ];

    pub fn parse(s: Option<&str>) -> Self {
        match s.map(str::trim) {
            None | Some("") | Some("simple-shuffle") => Self::SimpleShuffle,
            Some("least-busy") => Self::LeastBusy,
            Some("usage-based-routing") => Self::UsageBased,
            Some("usage-based-routing-v2") => Self::UsageBasedV2,
            Some("latency-based-routing") => Self::LatencyBased,
            Some("cost-based-routing") => Self::CostBased,
            Some(other) => Self::Other(other.to_owned()),
        }
    }

    /// Whether a share per deployment can be predicted from the config alone.
    pub fn predictable_share(&self) -> bool {
        *self == Self::SimpleShuffle
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SimpleShuffle => "simple-shuffle",
            Self::LeastBusy => "least-busy",
            Self::UsageBased => "usage-based-routing",
            Self::UsageBasedV2 => "usage-based-routing-v2",
            Self::LatencyBased => "latency-based-routing",
            Self::CostBased => "cost-based-routing",
            Self::Other(s) => s,
        })
    }
}

/// What one deployment tells the router about choosing it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Knobs {
    pub order: Option<i64>,
    pub weight: Option<f64>,
    pub rpm: Option<f64>,
    pub tpm: Option<f64>,
}

/// Indices (into `deps`) of the deployments a healthy group sends traffic to: the lowest
/// `order` level if any deployment sets one, else all.
pub fn first_level(deps: &[Knobs]) -> Vec<usize> {
    match deps.iter().filter_map(|d| d.order).min() {
        Some(min) => (0..deps.len()).filter(|i| deps[*i].order == Some(min)).collect(),
        None => (0..deps.len()).collect(),
    }
}

/// The distinct `order` levels of a group, lowest first (LiteLLM walks them as fallbacks
/// inside the group when there are two or more).
pub fn order_levels(deps: &[Knobs]) -> Vec<i64> {
    let mut v: Vec<i64> = deps.iter().filter_map(|d| d.order).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Under simple-shuffle, the share of a healthy group's traffic each deployment gets
/// (indices into `deps`, summing to 1; 0 for deployments never picked).
pub fn shuffle_shares(deps: &[Knobs]) -> Vec<f64> {
    let mut out = vec![0.0; deps.len()];
    let level = first_level(deps);
    let Some(&first) = level.first() else {
        return out;
    };
    let pick: [fn(&Knobs) -> Option<f64>; 3] = [|k| k.weight, |k| k.rpm, |k| k.tpm];
    for get in pick {
        if get(&deps[first]).is_some() {
            let w: Vec<f64> = level.iter().map(|i| get(&deps[*i]).unwrap_or(0.0).max(0.0)).collect();
            let total: f64 = w.iter().sum();
            if total > 0.0 {
                for (i, wi) in level.iter().zip(w) {
                    out[*i] = wi / total;
                }
                return out;
            }
        }
    }
    let n = level.len() as f64;
    for i in level {
        out[i] = 1.0 / n;
    }
    out
}

/// The largest deviation from `expected` a count of `n` independent picks may show before a
/// case calls the distribution wrong: 4.5 standard deviations of the binomial, plus one for
/// rounding. A healthy router fails this less than once in 100 000 runs per deployment.
pub fn allowed_deviation(n: u64, p: f64) -> f64 {
    4.5 * (n as f64 * p * (1.0 - p)).sqrt() + 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(order: Option<i64>, weight: Option<f64>, rpm: Option<f64>) -> Knobs {
        Knobs {
            order,
            weight,
            rpm,
            tpm: None,
        }
    }

    #[test]
    fn shares_follow_litellms_pick() {
        assert_eq!(shuffle_shares(&[k(None, None, None), k(None, None, None)]), [0.5, 0.5]);
        assert_eq!(
            shuffle_shares(&[k(None, Some(3.0), None), k(None, Some(1.0), None)]),
            [0.75, 0.25]
        );
        // The first candidate decides the key: rpm on the second alone means uniform.
        assert_eq!(
            shuffle_shares(&[k(None, None, None), k(None, None, Some(100.0))]),
            [0.5, 0.5]
        );
        // rpm weights when weight is absent; a missing value counts 0.
        assert_eq!(
            shuffle_shares(&[k(None, None, Some(60.0)), k(None, None, None)]),
            [1.0, 0.0]
        );
        // Only the lowest order level gets traffic, and a deployment without order none.
        assert_eq!(
            shuffle_shares(&[k(Some(2), None, None), k(Some(1), None, None), k(None, None, None)]),
            [0.0, 1.0, 0.0]
        );
        assert_eq!(order_levels(&[k(Some(2), None, None), k(Some(1), None, None)]), [1, 2]);
    }

    #[test]
    fn strategies_parse_and_print_as_configured() {
        for s in Strategy::ACCEPTED {
            assert_eq!(Strategy::parse(Some(s)).to_string(), s);
        }
        assert_eq!(Strategy::parse(None), Strategy::SimpleShuffle);
        assert!(!Strategy::parse(Some("latency-based-routing")).predictable_share());
    }
}
