//! What a load run measured, per point: counts and HDR histograms (the source of truth,
//! serialized into the JSON so shards can be merged and baselines compared on samples), and
//! the derived numbers under vLLM bench's field names (`request_throughput`,
//! `mean_ttft_ms`, `p99_itl_ms`, …) so existing dashboards read it.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::profile::{Profile, Shard};
use super::sample::{Sample, Success};

/// Microseconds, up to an hour: no request outlives its timeout, which is less.
const MAX_US: u64 = 3_600_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("static bounds are valid")
}

fn us(d: Duration) -> u64 {
    (d.as_micros() as u64).clamp(1, MAX_US)
}

/// Service-level objectives for goodput, in milliseconds (`--slo ttft:200,e2el:1000`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2el: Option<f64>,
}

impl Slo {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
    /// Whether a success met every objective set (vLLM's goodput rule).
    fn met(&self, s: &Success) -> bool {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        self.ttft.is_none_or(|l| s.ttft.is_some_and(|t| ms(t) <= l))
            && self.tpot.is_none_or(|l| s.tpot().is_none_or(|t| ms(t) <= l))
            && self.e2el.is_none_or(|l| ms(s.e2el) <= l)
    }
}

impl std::str::FromStr for Slo {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut slo = Slo::default();
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (k, v) = part
                .split_once(':')
                .ok_or_else(|| format!("--slo {part:?}: write metric:milliseconds, e.g. ttft:200"))?;
            let v: f64 = v
                .trim()
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v > 0.0)
                .ok_or_else(|| format!("--slo {part:?}: {v:?} is not a number of milliseconds above 0"))?;
            match k.trim() {
                "ttft" => slo.ttft = Some(v),
                "tpot" => slo.tpot = Some(v),
                "e2el" => slo.e2el = Some(v),
                other => return Err(format!("--slo: unknown metric {other:?}: ttft, tpot or e2el")),
            }
        }
        Ok(slo)
    }
}

/// The histograms of one point.
#[derive(Debug, Clone)]
pub struct Histograms {
    pub e2el: Histogram<u64>,
    pub ttft: Histogram<u64>,
    pub itl: Histogram<u64>,
    pub tpot: Histogram<u64>,
    /// The router's own claim of its overhead, per request that carried it.
    pub claimed_overhead: Histogram<u64>,
    /// How late the generator sent each open-loop request.
    pub send_lag: Histogram<u64>,
}

impl Default for Histograms {
    fn default() -> Self {
        Self {
            e2el: histogram(),
            ttft: histogram(),
            itl: histogram(),
            tpot: histogram(),
            claimed_overhead: histogram(),
            send_lag: histogram(),
        }
    }
}

impl Histograms {
    fn add(&mut self, o: &Self) {
        for (a, b) in self.each_mut().into_iter().zip(o.each()) {
            a.add(b).expect("same bounds");
        }
    }
    fn each(&self) -> [&Histogram<u64>; 6] {
        [
            &self.e2el,
            &self.ttft,
            &self.itl,
            &self.tpot,
            &self.claimed_overhead,
            &self.send_lag,
        ]
    }
    fn each_mut(&mut self) -> [&mut Histogram<u64>; 6] {
        [
            &mut self.e2el,
            &mut self.ttft,
            &mut self.itl,
            &mut self.tpot,
            &mut self.claimed_overhead,
            &mut self.send_lag,
        ]
    }
    const NAMES: [&'static str; 6] = ["e2el", "ttft", "itl", "tpot", "claimed_overhead", "send_lag"];
}

/// One second of the run, by intended send time.
#[derive(Debug, Clone)]
pub struct Second {
    pub ok: u64,
    pub errors: u64,
    pub e2el: Histogram<u64>,
}

impl Default for Second {
    fn default() -> Self {
        Self {
            ok: 0,
            errors: 0,
            e2el: histogram(),
        }
    }
}

/// Everything measured at one point (one profile, one target).
#[derive(Debug, Clone)]
pub struct PointReport {
    /// `router`, `direct`, or empty when the run compares nothing.
    pub label: String,
    pub profile: Profile,
    /// Seconds from the end of the warm-up to the last measured answer.
    pub duration: f64,
    pub completed: u64,
    pub errors: BTreeMap<String, u64>,
    pub good: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub hist: Histograms,
    pub timeline: Vec<Second>,
    /// Why the point stopped early, if it did.
    pub aborted: Option<String>,
}

impl PointReport {
    pub fn new(label: &str, profile: Profile) -> Self {
        Self {
            label: label.to_owned(),
            profile,
            duration: 0.0,
            completed: 0,
            errors: BTreeMap::new(),
            good: 0,
            input_tokens: 0,
            output_tokens: 0,
            hist: Histograms::default(),
            timeline: Vec::new(),
            aborted: None,
        }
    }

    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn record(&mut self, s: &Sample, slo: &Slo) {
        let sec = s.intended.as_secs() as usize;
        if self.timeline.len() <= sec {
            self.timeline.resize_with(sec + 1, Second::default);
        }
        if self.profile.workers().is_none() {
            let _ = self.hist.send_lag.record(us(s.lag));
        }
        match &s.outcome {
            Ok(ok) => {
                self.completed += 1;
                self.good += u64::from(slo.met(ok));
                self.input_tokens += ok.input_tokens;
                self.output_tokens += ok.output_tokens;
                let h = &mut self.hist;
                let _ = h.e2el.record(us(ok.e2el));
                let _ = self.timeline[sec].e2el.record(us(ok.e2el));
                self.timeline[sec].ok += 1;
                if let Some(t) = ok.ttft {
                    let _ = h.ttft.record(us(t));
                }
                for gap in &ok.itl {
                    let _ = h.itl.record(us(*gap));
                }
                if let Some(t) = ok.tpot() {
                    let _ = h.tpot.record(us(t));
                }
                if let Some(ms) = ok.claimed_overhead_ms {
                    let _ = h.claimed_overhead.record(((ms * 1e3) as u64).clamp(1, MAX_US));
                }
            }
            Err(class) => {
                *self.errors.entry(class.key()).or_default() += 1;
                self.timeline[sec].errors += 1;
            }
        }
    }

    /// Adds another shard's point: counts and histograms add, seconds align by index, and the
    /// duration is the longer one (shards start together and run side by side).
    pub fn merge(&mut self, o: &PointReport) {
        self.duration = self.duration.max(o.duration);
        self.completed += o.completed;
        self.good += o.good;
        self.input_tokens += o.input_tokens;
        self.output_tokens += o.output_tokens;
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.hist.add(&o.hist);
        if self.timeline.len() < o.timeline.len() {
            self.timeline.resize_with(o.timeline.len(), Second::default);
        }
        for (a, b) in self.timeline.iter_mut().zip(&o.timeline) {
            a.ok += b.ok;
            a.errors += b.errors;
            a.e2el.add(&b.e2el).expect("same bounds");
        }
        if self.aborted.is_none() {
            self.aborted.clone_from(&o.aborted);
        }
    }

    fn per_s(&self, n: u64) -> f64 {
        if self.duration > 0.0 {
            n as f64 / self.duration
        } else {
            0.0
        }
    }

    /// The point as JSON: vLLM bench's names first, gauntlet's extras after.
    pub fn to_json(&self, slo: &Slo) -> Value {
        let mut m = Map::new();
        m.insert("label".into(), json!(self.label));
        m.insert("profile".into(), json!(self.profile.name()));
        m.insert("profile_spec".into(), json!(self.profile));
        m.insert("duration".into(), json!(self.duration));
        m.insert("completed".into(), json!(self.completed));
        m.insert("failed".into(), json!(self.failed()));
        m.insert("errors".into(), json!(self.errors));
        m.insert("total_input_tokens".into(), json!(self.input_tokens));
        m.insert("total_output_tokens".into(), json!(self.output_tokens));
        m.insert("request_throughput".into(), json!(self.per_s(self.completed)));
        if !slo.is_empty() {
            m.insert("request_goodput".into(), json!(self.per_s(self.good)));
        }
        m.insert("output_throughput".into(), json!(self.per_s(self.output_tokens)));
        m.insert(
            "total_token_throughput".into(),
            json!(self.per_s(self.input_tokens + self.output_tokens)),
        );
        for (name, h) in [
            ("ttft", &self.hist.ttft),
            ("tpot", &self.hist.tpot),
            ("itl", &self.hist.itl),
            ("e2el", &self.hist.e2el),
        ] {
            if h.is_empty() {
                continue;
            }
            m.insert(format!("mean_{name}_ms"), json!(h.mean() / 1e3));
            m.insert(format!("median_{name}_ms"), json!(ms(h, 0.5)));
            m.insert(format!("std_{name}_ms"), json!(h.stdev() / 1e3));
            for p in PERCENTILES {
                m.insert(format!("p{p}_{name}_ms"), json!(ms(h, p / 100.0)));
            }
        }
        if !self.hist.claimed_overhead.is_empty() {
            let h = &self.hist.claimed_overhead;
            for p in [50.0, 90.0, 99.0] {
                m.insert(format!("p{p}_claimed_overhead_ms"), json!(ms(h, p / 100.0)));
            }
        }
        if !self.hist.send_lag.is_empty() {
            m.insert("p50_send_lag_ms".into(), json!(ms(&self.hist.send_lag, 0.5)));
            m.insert("p99_send_lag_ms".into(), json!(ms(&self.hist.send_lag, 0.99)));
        }
        if let Some(a) = &self.aborted {
            m.insert("aborted".into(), json!(a));
        }
        let hist: Map<String, Value> = Histograms::NAMES
            .iter()
            .zip(self.hist.each())
            .filter(|(_, h)| !h.is_empty())
            .map(|(n, h)| ((*n).to_owned(), json!(encode(h))))
            .collect();
        m.insert("histograms".into(), Value::Object(hist));
        let timeline: Vec<Value> = self
            .timeline
            .iter()
            .map(|s| json!({"ok": s.ok, "errors": s.errors, "e2el": encode(&s.e2el)}))
            .collect();
        m.insert("timeline".into(), json!(timeline));
        Value::Object(m)
    }

    /// Reads a point back from [`Self::to_json`]; the derived numbers are recomputed.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        let profile: Profile =
            serde_json::from_value(v["profile_spec"].clone()).map_err(|e| format!("profile_spec: {e}"))?;
        let mut p = PointReport::new(v["label"].as_str().unwrap_or(""), profile);
        let num = |k: &str| v[k].as_u64().ok_or_else(|| format!("{k}: missing or not a count"));
        p.duration = v["duration"].as_f64().ok_or("duration: missing")?;
        p.completed = num("completed")?;
        p.input_tokens = num("total_input_tokens")?;
        p.output_tokens = num("total_output_tokens")?;
        p.errors = serde_json::from_value(v["errors"].clone()).map_err(|e| format!("errors: {e}"))?;
        p.good = match v.get("request_goodput").and_then(Value::as_f64) {
            Some(g) => (g * p.duration).round() as u64,
            None => p.completed,
        };
        p.aborted = v["aborted"].as_str().map(str::to_owned);
        for (name, h) in Histograms::NAMES.iter().zip(p.hist.each_mut()) {
            if let Some(s) = v["histograms"][*name].as_str() {
                *h = decode(s).map_err(|e| format!("histograms.{name}: {e}"))?;
            }
        }
        for (i, s) in v["timeline"].as_array().into_iter().flatten().enumerate() {
            p.timeline.push(Second {
                ok: s["ok"].as_u64().unwrap_or(0),
                errors: s["errors"].as_u64().unwrap_or(0),
                e2el: decode(s["e2el"].as_str().unwrap_or("")).map_err(|e| format!("timeline[{i}]: {e}"))?,
            });
        }
        Ok(p)
    }
}

pub const PERCENTILES: [f64; 4] = [50.0, 90.0, 95.0, 99.0];

pub fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1e3
}

fn encode(h: &Histogram<u64>) -> String {
    let mut buf = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut buf)
        .expect("serializing into memory does not fail");
    base64::engine::general_purpose::STANDARD.encode(buf)
}

fn decode(s: &str) -> Result<Histogram<u64>, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| format!("not base64: {e}"))?;
    let h: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("not an HDR histogram: {e:?}"))?;
    // Re-bound as ours, so histograms of any origin add.
    let mut out = histogram();
    out.add(&h).map_err(|e| format!("{e:?}"))?;
    Ok(out)
}

/// A whole run: where it went, how, and its points.
#[derive(Debug, Clone)]
pub struct Report {
    pub url: String,
    pub model: String,
    pub stream: bool,
    pub shard: Shard,
    pub slo: Slo,
    pub points: Vec<PointReport>,
}

impl Report {
    pub fn to_json(&self) -> Value {
        let points: Vec<Value> = self.points.iter().map(|p| p.to_json(&self.slo)).collect();
        json!({
            "gauntlet_load": 1,
            "url": crate::redact::redact(&self.url),
            "model": self.model,
            "stream": self.stream,
            "shard": self.shard,
            "slo": self.slo,
            "overhead": self.overhead(),
            "points": points,
        })
    }

    pub fn from_json(origin: &str, v: &Value) -> Result<Self, String> {
        if v["gauntlet_load"].as_u64() != Some(1) {
            return Err(format!(
                "{origin}: not a `gauntlet load --json` report (no \"gauntlet_load\": 1)"
            ));
        }
        let points = v["points"]
            .as_array()
            .ok_or_else(|| format!("{origin}: no points"))?
            .iter()
            .enumerate()
            .map(|(i, p)| PointReport::from_json(p).map_err(|e| format!("{origin}: points[{i}].{e}")))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            url: v["url"].as_str().unwrap_or("").to_owned(),
            model: v["model"].as_str().unwrap_or("").to_owned(),
            stream: v["stream"].as_bool().unwrap_or(false),
            shard: serde_json::from_value(v["shard"].clone()).unwrap_or(Shard::ONE),
            slo: serde_json::from_value(v["slo"].clone()).unwrap_or_default(),
            points,
        })
    }

    /// Shards of one run into one report: points pair up by position.
    pub fn merge(reports: &[Report]) -> Result<Report, String> {
        let first = reports.first().ok_or("nothing to merge")?;
        let mut out = first.clone();
        out.shard = Shard::ONE;
        for r in &reports[1..] {
            if r.points.len() != first.points.len() || r.stream != first.stream {
                return Err("the reports are not shards of one run: their points or stream setting differ".into());
            }
            for (a, b) in out.points.iter_mut().zip(&r.points) {
                if a.label != b.label {
                    return Err(format!(
                        "point {:?} paired with {:?}: not shards of one run",
                        a.label, b.label
                    ));
                }
                a.merge(b);
            }
        }
        Ok(out)
    }

    /// Router overhead per profile where the run measured both paths: the router's
    /// percentiles minus the direct ones, and what the router claimed.
    pub fn overhead(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for r in self.points.iter().filter(|p| p.label == "router") {
            let Some(d) = self
                .points
                .iter()
                .find(|p| p.label == "direct" && p.profile == r.profile)
            else {
                continue;
            };
            let mut m = Map::new();
            m.insert("profile".into(), json!(r.profile.name()));
            for q in [50.0, 90.0, 99.0] {
                let (rh, dh) = (&r.hist.e2el, &d.hist.e2el);
                if rh.is_empty() || dh.is_empty() {
                    continue;
                }
                m.insert(format!("direct_p{q}_ms"), json!(ms(dh, q / 100.0)));
                m.insert(format!("router_p{q}_ms"), json!(ms(rh, q / 100.0)));
                m.insert(format!("added_p{q}_ms"), json!(ms(rh, q / 100.0) - ms(dh, q / 100.0)));
                if !r.hist.claimed_overhead.is_empty() {
                    m.insert(
                        format!("claimed_p{q}_ms"),
                        json!(ms(&r.hist.claimed_overhead, q / 100.0)),
                    );
                }
            }
            out.push(Value::Object(m));
        }
        out
    }

    /// The readable summary.
    pub fn text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "gauntlet load: {} ({}{})",
            crate::redact::redact(&self.url),
            self.model,
            if self.stream { ", streaming" } else { "" }
        );
        let streams = self.stream;
        let _ = writeln!(
            s,
            "{:<8} {:<18} {:>8} {:>7} {:>9} {:>9}  {:>27}{}",
            "path",
            "profile",
            "ok",
            "errors",
            "req/s",
            "tok/s",
            "e2el ms p50 / p90 / p99",
            if streams {
                "   ttft ms p50 / p99   itl ms p50 / p99"
            } else {
                ""
            }
        );
        for p in &self.points {
            let e = &p.hist.e2el;
            let _ = write!(
                s,
                "{:<8} {:<18} {:>8} {:>7} {:>9.1} {:>9.1}  {:>27}",
                if p.label.is_empty() { "-" } else { &p.label },
                p.profile.name(),
                p.completed,
                p.failed(),
                p.per_s(p.completed),
                p.per_s(p.output_tokens),
                if e.is_empty() {
                    "-".into()
                } else {
                    format!("{:.2} / {:.2} / {:.2}", ms(e, 0.5), ms(e, 0.9), ms(e, 0.99))
                }
            );
            if streams && !p.hist.ttft.is_empty() {
                let (t, i) = (&p.hist.ttft, &p.hist.itl);
                let _ = write!(
                    s,
                    "   {:>8.2} / {:<8.2}  {:>6.2} / {:<6.2}",
                    ms(t, 0.5),
                    ms(t, 0.99),
                    ms(i, 0.5),
                    ms(i, 0.99)
                );
            }
            let _ = writeln!(s);
            if !p.errors.is_empty() {
                let list: Vec<String> = p.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
                let _ = writeln!(s, "         errors: {}", list.join(", "));
            }
            if !self.slo.is_empty() {
                let _ = writeln!(s, "         goodput: {:.1} req/s meet the SLO", p.per_s(p.good));
            }
            let lag = &p.hist.send_lag;
            if !lag.is_empty() && ms(lag, 0.99) >= 1.0 {
                let _ = writeln!(
                    s,
                    "         sent P99 {:.2} ms late (max {:.2}): the generator could not keep the schedule (the \
                     machine, or --max-inflight reached); the wait is in the latencies above, as those requests were due",
                    ms(lag, 0.99),
                    lag.max() as f64 / 1e3
                );
            }
            if let Some(a) = &p.aborted {
                let _ = writeln!(s, "         aborted: {a}");
            }
        }
        for o in self.overhead() {
            let f = |k: &str| o[k].as_f64().map_or("-".into(), |v| format!("{v:.2}"));
            let _ = writeln!(
                s,
                "router overhead at {}: +{} / +{} / +{} ms (P50/P90/P99; direct {} / {} / {}); the router's header claims {} / {} / {} ms",
                o["profile"].as_str().unwrap_or(""),
                f("added_p50_ms"),
                f("added_p90_ms"),
                f("added_p99_ms"),
                f("direct_p50_ms"),
                f("direct_p90_ms"),
                f("direct_p99_ms"),
                f("claimed_p50_ms"),
                f("claimed_p90_ms"),
                f("claimed_p99_ms"),
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::profile::Rate;
    use crate::load::sample::ErrorClass;

    fn ok(ms: u64, at: u64) -> Sample {
        Sample {
            intended: Duration::from_millis(at),
            lag: Duration::ZERO,
            outcome: Ok(Success {
                e2el: Duration::from_millis(ms),
                ttft: Some(Duration::from_millis(ms / 2)),
                itl: vec![Duration::from_millis(1); 3],
                input_tokens: 10,
                output_tokens: 4,
                claimed_overhead_ms: Some(2.5),
            }),
        }
    }

    #[test]
    fn a_point_survives_json_and_merging_adds_it_up() {
        let slo: Slo = "e2el:15".parse().unwrap();
        let mut p = PointReport::new(
            "router",
            Profile::Constant {
                rate: Rate::new(10.0).unwrap(),
            },
        );
        for i in 0..20 {
            p.record(&ok(10 + i, i * 100), &slo);
        }
        p.record(
            &Sample {
                intended: Duration::from_millis(50),
                lag: Duration::ZERO,
                outcome: Err(ErrorClass::Status(503)),
            },
            &slo,
        );
        p.duration = 2.0;
        let v = p.to_json(&slo);
        assert_eq!(v["completed"], 20);
        assert_eq!(v["errors"]["http_503"], 1);
        assert_eq!(v["request_throughput"], 10.0);
        assert_eq!(v["request_goodput"], 3.0, "10, 11 … 15 ms meet e2el:15");
        assert!(v["p99_e2el_ms"].as_f64().unwrap() >= 29.0);
        let back = PointReport::from_json(&v).unwrap();
        assert_eq!(back.hist.e2el.len(), 20);
        assert_eq!(back.to_json(&slo), v, "round trip");
        let mut twice = back.clone();
        twice.merge(&p);
        assert_eq!(twice.completed, 40);
        assert_eq!(twice.errors["http_503"], 2);
        assert_eq!(twice.hist.itl.len(), 120);
        assert_eq!(twice.timeline[0].ok, 20, "ten in each second's first half, twice");
        assert_eq!(twice.to_json(&slo)["p50_e2el_ms"], v["p50_e2el_ms"]);
    }

    #[test]
    fn slo_parsing_names_the_bad_part() {
        assert_eq!("ttft:200,e2el:1000".parse::<Slo>().unwrap().e2el, Some(1000.0));
        assert!("ttft".parse::<Slo>().unwrap_err().contains("metric:milliseconds"));
        assert!("latency:5".parse::<Slo>().unwrap_err().contains("unknown metric"));
        assert!("ttft:-1".parse::<Slo>().unwrap_err().contains("above 0"));
    }
}
