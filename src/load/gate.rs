//! The regression gate: is this run slower than the baseline, beyond noise?
//!
//! Rule, per point and per latency metric (end-to-end latency; time to first token too for
//! streams): a **regression** is a shift that is both
//! 1. *significant*: a one-sided Mann–Whitney U test on every measured request says the new
//!    latencies tend to be larger, p < `alpha` (default 0.001), with the normal
//!    approximation and the tie correction (values tie when the HDR histogram cannot tell
//!    them apart: 3 significant digits); and
//! 2. *large enough to matter*: the median moved up by at least `min_effect_ms` (default
//!    1 ms) and by at least `min_effect_pct` % of the baseline median (default 5 %).
//!
//! Why both: latencies within a run are not independent (a GC pause or a noisy neighbour
//! slows a whole stretch), so on tens of thousands of requests the test alone calls a 1 %
//! drift "significant"; the effect floor is the part a team decides on. The false-alarm rate
//! of this rule on A/A runs (same build, same machine, back to back) is measured and written
//! in docs/load.md.

use hdrhistogram::Histogram;

use super::report::{PointReport, Report, ms};

/// The thresholds of the rule (see the module doc).
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub alpha: f64,
    pub min_effect_ms: f64,
    pub min_effect_pct: f64,
}

impl Default for Rule {
    fn default() -> Self {
        Self {
            alpha: 0.001,
            min_effect_ms: 1.0,
            min_effect_pct: 5.0,
        }
    }
}

/// The comparison of one metric at one point.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub point: String,
    pub metric: &'static str,
    pub base_p50_ms: f64,
    pub new_p50_ms: f64,
    pub base_p99_ms: f64,
    pub new_p99_ms: f64,
    /// One-sided: the probability of a shift at least this large upward by chance.
    pub p_value: f64,
    pub regression: bool,
}

impl Verdict {
    pub fn line(&self) -> String {
        format!(
            "{} {}: median {:.2} → {:.2} ms ({:+.2} ms), p99 {:.2} → {:.2} ms, Mann-Whitney p = {:.2e}: {}",
            self.point,
            self.metric,
            self.base_p50_ms,
            self.new_p50_ms,
            self.new_p50_ms - self.base_p50_ms,
            self.base_p99_ms,
            self.new_p99_ms,
            self.p_value,
            if self.regression { "REGRESSION" } else { "ok" }
        )
    }
}

/// Compares every point of `new` with the baseline point of the same label and profile.
pub fn compare(base: &Report, new: &Report, rule: Rule) -> Result<Vec<Verdict>, String> {
    let mut out = Vec::new();
    for p in &new.points {
        let b = base
            .points
            .iter()
            .find(|b| b.label == p.label && b.profile == p.profile)
            .ok_or_else(|| {
                format!(
                    "the baseline has no point {} {}: compare runs of the same profile",
                    p.label,
                    p.profile.name()
                )
            })?;
        out.extend(compare_point(b, p, rule));
    }
    Ok(out)
}

fn compare_point(b: &PointReport, p: &PointReport, rule: Rule) -> Vec<Verdict> {
    let name = if p.label.is_empty() {
        p.profile.name()
    } else {
        format!("{} {}", p.label, p.profile.name())
    };
    [
        ("e2el", &b.hist.e2el, &p.hist.e2el),
        ("ttft", &b.hist.ttft, &p.hist.ttft),
    ]
    .into_iter()
    .filter(|(_, x, y)| !x.is_empty() && !y.is_empty())
    .map(|(metric, x, y)| {
        let p_value = mann_whitney_greater(x, y);
        let (b50, n50) = (ms(x, 0.5), ms(y, 0.5));
        let shift = n50 - b50;
        let big = shift >= rule.min_effect_ms && shift >= b50 * rule.min_effect_pct / 100.0;
        Verdict {
            point: name.clone(),
            metric,
            base_p50_ms: b50,
            new_p50_ms: n50,
            base_p99_ms: ms(x, 0.99),
            new_p99_ms: ms(y, 0.99),
            p_value,
            regression: p_value < rule.alpha && big,
        }
    })
    .collect()
}

/// One-sided p-value that values of `y` tend to exceed those of `x` (Mann–Whitney U, normal
/// approximation with tie correction), computed on the histograms' buckets: O(buckets), not
/// O(samples).
pub fn mann_whitney_greater(x: &Histogram<u64>, y: &Histogram<u64>) -> f64 {
    let (nx, ny) = (x.len() as f64, y.len() as f64);
    if nx == 0.0 || ny == 0.0 {
        return 1.0;
    }
    // Both histograms have the same bounds and precision, so a value's bucket is the same
    // in each: walk the union of buckets in order.
    let mut buckets: std::collections::BTreeMap<u64, (f64, f64)> = std::collections::BTreeMap::new();
    for v in x.iter_recorded() {
        buckets.entry(x.lowest_equivalent(v.value_iterated_to())).or_default().0 += v.count_at_value() as f64;
    }
    for v in y.iter_recorded() {
        buckets.entry(y.lowest_equivalent(v.value_iterated_to())).or_default().1 += v.count_at_value() as f64;
    }
    let (mut rank, mut rank_sum_y, mut ties) = (0.0, 0.0, 0.0);
    for (cx, cy) in buckets.values() {
        let c = cx + cy;
        let mid = rank + (c + 1.0) / 2.0;
        rank_sum_y += cy * mid;
        ties += c * c * c - c;
        rank += c;
    }
    let n = nx + ny;
    let u_y = rank_sum_y - ny * (ny + 1.0) / 2.0;
    let mean = nx * ny / 2.0;
    let var = nx * ny / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)).max(1.0));
    if var <= 0.0 {
        return 1.0;
    }
    // Continuity correction towards the mean.
    let z = (u_y - mean - 0.5) / var.sqrt();
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Numerical Recipes' Chebyshev fit, |error| < 1.2e-7):
/// enough for a p-value compared with 0.001.
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::profile::Profile;
    use crate::load::report::histogram;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn sample(rng: &mut ChaCha8Rng, n: usize, base_us: f64, shift_us: f64) -> Histogram<u64> {
        let mut h = histogram();
        for _ in 0..n {
            // Log-normal-ish latency: a body near base, a long right tail.
            let u: f64 = rng.random::<f64>().max(1e-12);
            let v = base_us * (1.0 + 0.3 * (-u.ln())) + shift_us;
            h.record(v as u64).unwrap();
        }
        h
    }

    fn point(h: Histogram<u64>) -> PointReport {
        let mut p = PointReport::new("", Profile::Synchronous);
        p.hist.e2el = h;
        p
    }

    #[test]
    fn erfc_matches_known_values() {
        for (x, want) in [
            (0.0, 1.0),
            (1.0, 0.157_299_207),
            (2.0, 0.004_677_735),
            (-1.0, 1.842_700_793),
        ] {
            assert!((erfc(x) - want).abs() < 1e-6, "erfc({x}) = {}", erfc(x));
        }
    }

    #[test]
    fn a_planted_20ms_slowdown_is_a_regression_and_equal_runs_are_not() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let base = sample(&mut rng, 2000, 5000.0, 0.0);
        let slow = sample(&mut rng, 2000, 5000.0, 20_000.0);
        let v = compare_point(&point(base.clone()), &point(slow), Rule::default());
        assert!(v[0].regression, "{}", v[0].line());
        let mut alarms = 0;
        for _ in 0..200 {
            let (a, b) = (sample(&mut rng, 500, 5000.0, 0.0), sample(&mut rng, 500, 5000.0, 0.0));
            alarms += usize::from(compare_point(&point(a), &point(b), Rule::default())[0].regression);
        }
        // Independent A/A samples: alpha 0.001 and the effect floor leave ~0 alarms.
        assert!(alarms <= 2, "{alarms} false alarms in 200 A/A comparisons");
    }

    #[test]
    fn significance_alone_is_not_enough_and_a_faster_run_is_never_a_regression() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        // 2 % slower on 50 000 requests: significant, below the 5 % floor.
        let (a, b) = (
            sample(&mut rng, 50_000, 5000.0, 0.0),
            sample(&mut rng, 50_000, 5100.0, 0.0),
        );
        let v = &compare_point(&point(a.clone()), &point(b), Rule::default())[0];
        assert!(v.p_value < 1e-6 && !v.regression, "{}", v.line());
        let fast = sample(&mut rng, 2000, 2000.0, 0.0);
        let v = &compare_point(&point(a), &point(fast), Rule::default())[0];
        assert!(v.p_value > 0.5 && !v.regression, "{}", v.line());
    }
}
