//! [`Toxic`]: one fault on one direction of the proxied connections, in Toxiproxy's JSON shape
//! (`{"name","type","stream","toxicity","attributes"}`), and the [`Plan`] through which each
//! kind says what it does to a chunk. One file per kind owns its attributes, their validation
//! and its effect ([`Effect`]); the lane (`lane.rs`) only carries a plan out.
//!
//! Kinds combine: every toxic that affects a direction shapes the same plan, so their order
//! does not matter (two latencies add, the smallest bandwidth wins, the first slicer slices).

use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

mod bandwidth;
mod latency;
mod limit_data;
mod reset_peer;
mod slicer;
mod slow_close;
mod timeout;

pub use bandwidth::Bandwidth;
pub use latency::Latency;
pub use limit_data::LimitData;
pub use reset_peer::ResetPeer;
pub use slicer::Slicer;
pub use slow_close::SlowClose;
pub use timeout::Timeout;

/// Which way the bytes a toxic affects flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stream {
    /// Client to server (the request).
    Upstream,
    /// Server to client (the response): Toxiproxy's default, and ours.
    #[default]
    Downstream,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Upstream => "upstream",
            Stream::Downstream => "downstream",
        }
    }
}

/// A named fault on one direction, applied to a connection with probability `toxicity`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Wire", into = "Wire")]
pub struct Toxic {
    /// Unique among the proxy's toxics; how it is removed.
    pub name: String,
    pub stream: Stream,
    /// In [0, 1]: the chance a given connection is affected, decided once per connection (from
    /// the proxy's seed and the connection's number), so 0 never and 1 always applies.
    pub toxicity: f64,
    pub kind: ToxicKind,
}

macro_rules! kinds {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// What a toxic does; each variant's type is in its own file.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub enum ToxicKind {
            $($variant($variant),)*
        }

        impl ToxicKind {
            /// The wire name (`"type"` in JSON).
            pub fn type_name(&self) -> &'static str {
                match self {
                    $(ToxicKind::$variant(_) => $name,)*
                }
            }

            fn parse(type_name: &str, attributes: Value) -> Result<Self, String> {
                match type_name {
                    $($name => serde_json::from_value(attributes)
                        .map(ToxicKind::$variant)
                        .map_err(|e| format!("{} attributes: {e}", $name)),)*
                    other => Err(format!(
                        "unknown toxic type {other:?} (known: {})",
                        [$($name),*].join(", ")
                    )),
                }
            }

            fn attributes(&self) -> Value {
                let v = match self {
                    $(ToxicKind::$variant(a) => serde_json::to_value(a),)*
                };
                v.expect("toxic attributes are plain numbers")
            }

            fn effect(&self) -> &dyn Effect {
                match self {
                    $(ToxicKind::$variant(a) => a,)*
                }
            }
        }

        $(impl From<$variant> for ToxicKind {
            fn from(a: $variant) -> Self {
                ToxicKind::$variant(a)
            }
        })*
    };
}

kinds! {
    Latency => "latency",
    Bandwidth => "bandwidth",
    SlowClose => "slow_close",
    Timeout => "timeout",
    ResetPeer => "reset_peer",
    Slicer => "slicer",
    LimitData => "limit_data",
}

impl Toxic {
    /// A toxic on the downstream, affecting every connection.
    pub fn new(name: impl Into<String>, kind: impl Into<ToxicKind>) -> Self {
        Self {
            name: name.into(),
            stream: Stream::Downstream,
            toxicity: 1.0,
            kind: kind.into(),
        }
    }
    /// Each chunk delayed by `latency_ms` ± a uniform `jitter_ms`.
    pub fn latency(name: impl Into<String>, latency_ms: u64, jitter_ms: u64) -> Self {
        Self::new(name, Latency { latency_ms, jitter_ms })
    }
    /// Throughput held to `rate_kbps` KB/s (1 KB = 1000 bytes).
    pub fn bandwidth(name: impl Into<String>, rate_kbps: u64) -> Self {
        Self::new(name, Bandwidth { rate_kbps })
    }
    /// The FIN sent `delay_ms` after the data ends.
    pub fn slow_close(name: impl Into<String>, delay_ms: u64) -> Self {
        Self::new(name, SlowClose { delay_ms })
    }
    /// No data passes; the connection is closed `timeout_ms` after the first held chunk, or
    /// (0) held until the toxic is removed.
    pub fn timeout(name: impl Into<String>, timeout_ms: u64) -> Self {
        Self::new(name, Timeout { timeout_ms })
    }
    /// The connection reset (RST) `timeout_ms` after the first chunk.
    pub fn reset_peer(name: impl Into<String>, timeout_ms: u64) -> Self {
        Self::new(name, ResetPeer { timeout_ms })
    }
    /// Data cut into slices of `average_size` ± `size_variation` bytes, `delay_us` apart.
    pub fn slicer(name: impl Into<String>, average_size: u64, size_variation: u64, delay_us: u64) -> Self {
        Self::new(
            name,
            Slicer {
                average_size,
                size_variation,
                delay_us,
            },
        )
    }
    /// The connection closed once `bytes` have passed.
    pub fn limit_data(name: impl Into<String>, bytes: u64) -> Self {
        Self::new(name, LimitData { bytes })
    }

    /// On the client-to-server direction instead.
    #[must_use]
    pub fn upstream(self) -> Self {
        self.stream(Stream::Upstream)
    }
    #[must_use]
    pub fn downstream(self) -> Self {
        self.stream(Stream::Downstream)
    }
    #[must_use]
    pub fn stream(mut self, stream: Stream) -> Self {
        self.stream = stream;
        self
    }
    #[must_use]
    pub fn with_toxicity(mut self, toxicity: f64) -> Self {
        self.toxicity = toxicity;
        self
    }

    /// What is wrong with this toxic, in one line, if anything.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.name.contains(['/', '?', '#', '%']) || self.name.chars().any(char::is_control) {
            return Err(format!(
                "invalid toxic name {:?}: it must be non-empty, without '/', '?', '#', '%' or control characters",
                self.name
            ));
        }
        if !(0.0..=1.0).contains(&self.toxicity) {
            return Err(format!(
                "toxic {:?}: toxicity {} is not in [0, 1]",
                self.name, self.toxicity
            ));
        }
        self.kind
            .effect()
            .validate()
            .map_err(|e| format!("toxic {:?} ({}): {e}", self.name, self.kind.type_name()))
    }

    pub(crate) fn shape(&self, id: u64, plan: &mut Plan, slot: &mut Slot, rng: &mut ChaCha8Rng) {
        self.kind.effect().shape(id, plan, slot, rng);
    }
}

/// Toxiproxy's JSON shape, through which [`Toxic`] is read (and validated) and written.
#[derive(Serialize, Deserialize)]
struct Wire {
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    #[serde(default)]
    stream: Stream,
    #[serde(default = "always")]
    toxicity: f64,
    #[serde(default)]
    attributes: Value,
}

fn always() -> f64 {
    1.0
}

impl TryFrom<Wire> for Toxic {
    type Error = String;
    fn try_from(w: Wire) -> Result<Self, String> {
        // No attributes at all reads as `{}`, so a missing one is named rather than "null".
        let attributes = match w.attributes {
            Value::Null => Value::Object(serde_json::Map::new()),
            v => v,
        };
        let kind = ToxicKind::parse(&w.type_name, attributes).map_err(|e| format!("toxic {:?}: {e}", w.name))?;
        let t = Toxic {
            name: w.name,
            stream: w.stream,
            toxicity: w.toxicity,
            kind,
        };
        t.validate()?;
        Ok(t)
    }
}

impl From<Toxic> for Wire {
    fn from(t: Toxic) -> Self {
        Wire {
            attributes: t.kind.attributes(),
            type_name: t.kind.type_name().to_owned(),
            name: t.name,
            stream: t.stream,
            toxicity: t.toxicity,
        }
    }
}

/// One kind's part: check its attributes, and shape the plan for a chunk (or the end of the
/// stream) of a connection it affects.
pub(crate) trait Effect {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
    /// `id` names this toxic (unique for the proxy's life, unlike its name, which a later
    /// toxic may reuse), `slot` is its state on this connection and direction.
    fn shape(&self, id: u64, plan: &mut Plan, slot: &mut Slot, rng: &mut ChaCha8Rng);
}

/// A toxic's state on one direction of one connection, kept from chunk to chunk.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// When it first applied to a chunk here (the clock of `timeout` and `reset_peer`).
    pub since: Option<Instant>,
    /// Bytes delivered while it applied (`limit_data`).
    pub passed: u64,
}

/// Whether a chunk may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gate {
    Pass,
    /// Not yet: wait until the toxics change, or close at `until`.
    Hold {
        until: Option<Instant>,
    },
    /// Close the connection (FIN both ways) instead.
    Close,
    /// Reset the connection (RST both ways) instead.
    Reset,
}

impl Gate {
    fn severity(self) -> u8 {
        match self {
            Gate::Pass => 0,
            Gate::Hold { .. } => 1,
            Gate::Close => 2,
            Gate::Reset => 3,
        }
    }
}

/// How one chunk (or the end of the stream, `eof`) is to be delivered.
#[derive(Debug)]
pub(crate) struct Plan {
    pub now: Instant,
    pub eof: bool,
    pub gate: Gate,
    /// Deliver no earlier than this long after the chunk arrived.
    pub delay: Duration,
    /// Bytes per second, paced.
    pub rate: Option<u64>,
    pub slicer: Option<Slicer>,
    /// At most this many bytes of the chunk go; the connection closes once they have.
    pub cap: Option<u64>,
    /// Toxics counting the bytes delivered (`limit_data`).
    pub counting: Vec<u64>,
    /// Reset the connection at this instant, for this toxic, unless it is gone by then.
    pub reset_at: Option<(Instant, u64)>,
    /// After the data and before the FIN.
    pub close_delay: Duration,
}

impl Plan {
    pub fn new(now: Instant, eof: bool) -> Self {
        Self {
            now,
            eof,
            gate: Gate::Pass,
            delay: Duration::ZERO,
            rate: None,
            slicer: None,
            cap: None,
            counting: Vec::new(),
            reset_at: None,
            close_delay: Duration::ZERO,
        }
    }

    /// The stricter gate wins; of two holds, the earlier close.
    pub fn gate(&mut self, g: Gate) {
        self.gate = match (self.gate, g) {
            (Gate::Hold { until: a }, Gate::Hold { until: b }) => Gate::Hold {
                until: match (a, b) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
            },
            (a, b) if b.severity() > a.severity() => b,
            (a, _) => a,
        };
    }

    pub fn reset_at(&mut self, at: Instant, id: u64) {
        if self.reset_at.is_none_or(|(t, _)| at < t) {
            self.reset_at = Some((at, id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_toxiproxy_json_and_writes_it_back() {
        let text = r#"{"name":"lag","type":"latency","stream":"downstream","toxicity":1.0,"attributes":{"latency_ms":500,"jitter_ms":50}}"#;
        let t: Toxic = serde_json::from_str(text).unwrap();
        assert_eq!(t, Toxic::latency("lag", 500, 50));
        let back: Value = serde_json::to_value(&t).unwrap();
        assert_eq!(back, serde_json::from_str::<Value>(text).unwrap());
        // Toxiproxy's own attribute names are read too; stream and toxicity default.
        let t: Toxic =
            serde_json::from_str(r#"{"name":"s","type":"slicer","attributes":{"average_size":10,"delay":5}}"#).unwrap();
        assert_eq!(t, Toxic::slicer("s", 10, 0, 5));
        let t: Toxic = serde_json::from_str(
            r#"{"name":"u","type":"limit_data","stream":"upstream","toxicity":0.25,"attributes":{"bytes":7}}"#,
        )
        .unwrap();
        assert_eq!(t, Toxic::limit_data("u", 7).upstream().with_toxicity(0.25));
    }

    fn refusal(text: &str) -> String {
        serde_json::from_str::<Toxic>(text).unwrap_err().to_string()
    }

    #[test]
    fn a_bad_toxic_is_refused_naming_what_is_wrong() {
        let e = refusal(r#"{"name":"x","type":"lag","attributes":{}}"#);
        assert!(
            e.contains(r#"unknown toxic type "lag""#) && e.contains("latency, bandwidth"),
            "{e}"
        );
        let e = refusal(r#"{"name":"x","type":"latency","attributes":{"jitter_ms":3}}"#);
        assert!(e.contains("latency attributes") && e.contains("latency_ms"), "{e}");
        let e = refusal(r#"{"name":"x","type":"latency","attributes":{"latency_ms":3,"jiter_ms":1}}"#);
        assert!(e.contains("jiter_ms"), "{e}");
        let e = refusal(r#"{"name":"x","type":"timeout","toxicity":1.5,"attributes":{"timeout_ms":3}}"#);
        assert!(e.contains("toxicity 1.5"), "{e}");
        let e = refusal(r#"{"name":"x","type":"bandwidth","attributes":{"rate_kbps":0}}"#);
        assert!(e.contains("rate_kbps"), "{e}");
        let e = refusal(r#"{"name":"x","type":"slicer","attributes":{"average_size":4,"size_variation":4}}"#);
        assert!(e.contains("size_variation"), "{e}");
        let e = refusal(r#"{"name":"a/b","type":"timeout","attributes":{"timeout_ms":0}}"#);
        assert!(e.contains("invalid toxic name"), "{e}");
        let e = refusal(r#"{"name":"x","type":"timeout","stream":"sideways","attributes":{"timeout_ms":0}}"#);
        assert!(e.contains("sideways"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }

    #[test]
    fn the_stricter_gate_wins() {
        let t0 = Instant::now();
        let mut p = Plan::new(t0, false);
        p.gate(Gate::Hold { until: None });
        p.gate(Gate::Hold {
            until: Some(t0 + Duration::from_secs(2)),
        });
        p.gate(Gate::Hold {
            until: Some(t0 + Duration::from_secs(1)),
        });
        assert_eq!(
            p.gate,
            Gate::Hold {
                until: Some(t0 + Duration::from_secs(1))
            }
        );
        p.gate(Gate::Reset);
        p.gate(Gate::Close);
        p.gate(Gate::Pass);
        assert_eq!(p.gate, Gate::Reset);
    }
}
