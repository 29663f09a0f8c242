//! Reads Prometheus text exposition: version 0.0.4 (what vLLM's Python client serves unless
//! asked for OpenMetrics) and OpenMetrics 1.0 text (what the simulator serves). Strict where a
//! scraper is: a line that does not parse is an error naming it, not skipped.
//!
//! Written here because `prometheus-parse` 0.2 cannot read this text: it matches names with
//! `\w+`, so it drops every line of a colon name (all of vLLM's), it does not unescape label
//! values (and splits them at `,` and `=`), and it types OpenMetrics counters as untyped.

use std::collections::{BTreeMap, HashMap, HashSet};

/// A family's type, from its `# TYPE` line (`Unknown` without one; `untyped` is 0.0.4's
/// name for it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    Unknown,
}

impl Kind {
    fn named(s: &str) -> Option<Self> {
        Some(match s {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" => Self::Histogram,
            "gaugehistogram" => Self::GaugeHistogram,
            "summary" => Self::Summary,
            "info" => Self::Info,
            "stateset" => Self::StateSet,
            "unknown" | "untyped" => Self::Unknown,
            _ => return None,
        })
    }

    /// What a sample's name may add to its family's name.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            // "": Prometheus text names a counter's family as its sample, `x_total`.
            Self::Counter => &["_total", "_created", ""],
            Self::Histogram => &["_bucket", "_sum", "_count", "_created"],
            Self::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
            Self::Summary => &["", "_sum", "_count", "_created"],
            Self::Info => &["_info"],
            Self::Gauge | Self::StateSet | Self::Unknown => &[""],
        }
    }
}

const SUFFIXES: [&str; 8] = [
    "_total", "_created", "_bucket", "_sum", "_count", "_gsum", "_gcount", "_info",
];

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    /// Unescaped.
    pub labels: BTreeMap<String, String>,
    pub value: f64,
    /// As written: milliseconds in Prometheus text, seconds in OpenMetrics.
    pub timestamp: Option<f64>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub help: Option<String>,
    pub unit: Option<String>,
    pub samples: Vec<Sample>,
    typed: bool,
}

/// One histogram series: its labels but `le`, and its buckets (upper bound, cumulative
/// count) in the order written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramSeries {
    pub labels: BTreeMap<String, String>,
    pub buckets: Vec<(f64, f64)>,
    pub sum: Option<f64>,
    pub count: Option<f64>,
}

impl Family {
    /// The series of a histogram family.
    pub fn histograms(&self) -> Vec<HistogramSeries> {
        let mut by: BTreeMap<BTreeMap<String, String>, HistogramSeries> = BTreeMap::new();
        for s in &self.samples {
            let mut labels = s.labels.clone();
            let le = labels.remove("le");
            let h = by.entry(labels.clone()).or_insert_with(|| HistogramSeries {
                labels,
                ..HistogramSeries::default()
            });
            match &s.name[self.name.len()..] {
                "_bucket" => h
                    .buckets
                    .push((le.and_then(|v| v.parse().ok()).unwrap_or(f64::NAN), s.value)),
                "_sum" | "_gsum" => h.sum = Some(s.value),
                "_count" | "_gcount" => h.count = Some(s.value),
                _ => {}
            }
        }
        by.into_values().collect()
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Exposition {
    /// In the order they first appear.
    pub families: Vec<Family>,
    /// Whether it ended with OpenMetrics' `# EOF`.
    pub eof: bool,
}

impl Exposition {
    pub fn family(&self, name: &str) -> Option<&Family> {
        self.families.iter().find(|f| f.name == name)
    }

    /// The family that has samples named `sample`.
    pub fn family_of(&self, sample: &str) -> Option<&Family> {
        self.families
            .iter()
            .find(|f| f.samples.iter().any(|s| s.name == sample))
    }

    /// Every sample named `name`, whichever family it is in.
    pub fn samples<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> {
        self.families
            .iter()
            .flat_map(|f| &f.samples)
            .filter(move |s| s.name == name)
    }
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("line {line}: {why}: {text:?}")]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub why: String,
    pub text: String,
}

pub fn parse(text: &str) -> Result<Exposition, ParseError> {
    let mut p = Parser::default();
    for (n, raw) in text.split('\n').enumerate() {
        p.line(raw.trim()).map_err(|why| ParseError {
            line: n + 1,
            why,
            text: raw.to_owned(),
        })?;
    }
    Ok(p.out)
}

#[derive(Default)]
struct Parser {
    out: Exposition,
    index: HashMap<String, usize>,
    series: HashSet<(String, BTreeMap<String, String>)>,
}

impl Parser {
    fn line(&mut self, line: &str) -> Result<(), String> {
        if line.is_empty() {
            return Ok(());
        }
        if self.out.eof {
            return Err("text after # EOF".into());
        }
        match line.strip_prefix('#') {
            Some(comment) => self.comment(comment),
            None => self.sample(line),
        }
    }

    fn family(&mut self, name: &str) -> &mut Family {
        let i = *self.index.entry(name.to_owned()).or_insert_with(|| {
            self.out.families.push(Family {
                name: name.to_owned(),
                kind: Kind::Unknown,
                help: None,
                unit: None,
                samples: Vec::new(),
                typed: false,
            });
            self.out.families.len() - 1
        });
        &mut self.out.families[i]
    }

    fn comment(&mut self, comment: &str) -> Result<(), String> {
        let mut c = Cursor(comment);
        c.blanks();
        let keyword = c.token();
        if !matches!(keyword, "HELP" | "TYPE" | "UNIT") {
            if keyword == "EOF" && c.0.is_empty() {
                self.out.eof = true;
            }
            // Prometheus text allows any other comment.
            return Ok(());
        }
        if c.blanks() == 0 {
            return Err(format!("# {keyword} needs a metric name"));
        }
        let name = c.name(true).ok_or("expected a metric name")?;
        if !c.0.is_empty() && c.blanks() == 0 {
            return Err("expected a blank after the metric name".into());
        }
        match keyword {
            "HELP" => {
                let help = unescape(c.0, None)?;
                let f = self.family(name);
                if f.help.replace(help).is_some() {
                    return Err(format!("a second HELP for {name}"));
                }
            }
            "TYPE" => {
                let kind = c.token();
                let kind = Kind::named(kind).ok_or_else(|| format!("unknown type {kind:?}"))?;
                if !c.0.is_empty() {
                    return Err("text after the type".into());
                }
                let f = self.family(name);
                if f.typed {
                    return Err(format!("a second TYPE for {name}"));
                }
                if !f.samples.is_empty() {
                    return Err(format!("TYPE for {name} after its samples"));
                }
                f.kind = kind;
                f.typed = true;
            }
            _ => {
                let unit = c.token().to_owned();
                if !c.0.is_empty() {
                    return Err("text after the unit".into());
                }
                self.family(name).unit = Some(unit);
            }
        }
        Ok(())
    }

    /// The family a sample of this name belongs to: the one of its name if its type
    /// allows that, else the one its name is with a suffix its type allows.
    fn owner(&self, sample: &str) -> Option<usize> {
        [""].iter().chain(&SUFFIXES).find_map(|suffix| {
            let base = sample.strip_suffix(suffix)?;
            let i = *self.index.get(base)?;
            self.out.families[i].kind.suffixes().contains(suffix).then_some(i)
        })
    }

    fn sample(&mut self, line: &str) -> Result<(), String> {
        let mut c = Cursor(line);
        let name = c.name(true).ok_or("expected a metric name")?;
        let labels = if c.0.starts_with('{') {
            c.labels()?
        } else {
            BTreeMap::new()
        };
        if c.blanks() == 0 {
            return Err("expected a blank before the value".into());
        }
        let value = number(c.token())?;
        c.blanks();
        let timestamp = match c.0.starts_with('#') || c.0.is_empty() {
            true => None,
            false => Some(number(c.token())?),
        };
        c.blanks();
        if let Some(rest) = c.0.strip_prefix('#') {
            // An OpenMetrics exemplar: ` # {labels} value [timestamp]`.
            c = Cursor(rest);
            c.blanks();
            if !c.0.starts_with('{') {
                return Err("expected an exemplar's labels after #".into());
            }
            c.labels()?;
            c.blanks();
            number(c.token())?;
            c.blanks();
            if !c.0.is_empty() {
                number(c.token())?;
            }
        }
        if !c.0.is_empty() {
            return Err("text after the sample".into());
        }
        let i = match self.owner(name) {
            Some(i) => i,
            None if self.index.contains_key(name) => {
                return Err(format!("{name} is not a sample name its family's type has"));
            }
            // A sample without a TYPE: a family of its own, untyped.
            None => {
                self.family(name);
                self.index[name]
            }
        };
        let family = &mut self.out.families[i];
        let suffix = &name[family.name.len()..];
        let needs = match (family.kind, suffix) {
            (Kind::Histogram | Kind::GaugeHistogram, "_bucket") => Some("le"),
            (Kind::Summary, "") => Some("quantile"),
            _ => None,
        };
        if let Some(label) = needs
            && labels.get(label).is_none_or(|v| number(v).is_err())
        {
            return Err(format!("{name} needs a numeric {label} label"));
        }
        if !self.series.insert((name.to_owned(), labels.clone())) {
            return Err(format!("a second sample of the series {name}{labels:?}"));
        }
        family.samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
            timestamp,
        });
        Ok(())
    }
}

/// A number as Prometheus writes one (`1`, `-2.5e-3`, `+Inf`, `NaN`, …).
fn number(t: &str) -> Result<f64, String> {
    t.parse().map_err(|_| format!("{t:?} is not a number"))
}

/// `s` with `\\`, `\n` and `\"` undone; up to `end` (unescaped) if given, which must come.
/// Returns the text and what follows `end`.
fn unescape_until(s: &str, end: Option<char>) -> Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, ch)) = chars.next() {
        match ch {
            '\\' => match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, '"')) => out.push('"'),
                Some((_, other)) => return Err(format!("invalid escape \\{other}")),
                None => return Err("a lone \\ at the end".into()),
            },
            c if Some(c) == end => return Ok((out, &s[i + c.len_utf8()..])),
            c => out.push(c),
        }
    }
    match end {
        Some(_) => Err("unterminated label value".into()),
        None => Ok((out, "")),
    }
}

fn unescape(s: &str, end: Option<char>) -> Result<String, String> {
    unescape_until(s, end).map(|(text, _)| text)
}

/// What is left of a line to read.
struct Cursor<'a>(&'a str);

impl<'a> Cursor<'a> {
    /// Skips spaces and tabs; how many.
    fn blanks(&mut self) -> usize {
        let rest = self.0.trim_start_matches([' ', '\t']);
        let n = self.0.len() - rest.len();
        self.0 = rest;
        n
    }

    /// Up to the next blank.
    fn token(&mut self) -> &'a str {
        let end = self.0.find([' ', '\t']).unwrap_or(self.0.len());
        let (t, rest) = self.0.split_at(end);
        self.0 = rest;
        t
    }

    /// A metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`) or, without colons, a label name.
    fn name(&mut self, colons: bool) -> Option<&'a str> {
        let ok = |c: char, first: bool| {
            c.is_ascii_alphabetic() || c == '_' || (colons && c == ':') || (!first && c.is_ascii_digit())
        };
        let end = self
            .0
            .char_indices()
            .find(|&(i, c)| !ok(c, i == 0))
            .map_or(self.0.len(), |(i, _)| i);
        if end == 0 {
            return None;
        }
        let (name, rest) = self.0.split_at(end);
        self.0 = rest;
        Some(name)
    }

    fn eat(&mut self, c: char) -> bool {
        match self.0.strip_prefix(c) {
            Some(rest) => {
                self.0 = rest;
                true
            }
            None => false,
        }
    }

    /// `{name="value",...}` (a trailing comma allowed), unescaped.
    fn labels(&mut self) -> Result<BTreeMap<String, String>, String> {
        let mut out = BTreeMap::new();
        self.eat('{');
        loop {
            self.blanks();
            if self.eat('}') {
                return Ok(out);
            }
            let key = self.name(false).ok_or("expected a label name")?;
            self.blanks();
            if !self.eat('=') {
                return Err(format!("expected = after the label {key}"));
            }
            self.blanks();
            if !self.eat('"') {
                return Err(format!("expected a quoted value for the label {key}"));
            }
            let (value, rest) = unescape_until(self.0, Some('"'))?;
            self.0 = rest;
            if out.insert(key.to_owned(), value).is_some() {
                return Err(format!("a second label {key}"));
            }
            self.blanks();
            if !self.eat(',') {
                self.blanks();
                return match self.eat('}') {
                    true => Ok(out),
                    false => Err("expected , or } after a label value".into()),
                };
            }
        }
    }
}

/// vLLM's `/metrics` as it serves it by default: Prometheus text 0.0.4, as Python's
/// prometheus_client 0.26 `generate_latest` writes metrics declared as vLLM declares them (a
/// few of them, with fewer buckets).
#[cfg(test)]
pub(crate) const VLLM_PROMETHEUS_TEXT: &str = r#"# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 0.0
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 120.0
# HELP vllm:prompt_tokens_created Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_created gauge
vllm:prompt_tokens_created{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 1.7955411787438316e+09
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 40.0
# HELP vllm:generation_tokens_created Number of generation tokens processed.
# TYPE vllm:generation_tokens_created gauge
vllm:generation_tokens_created{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 1.795541178743844e+09
# HELP vllm:request_success_total Count of successfully processed requests.
# TYPE vllm:request_success_total counter
vllm:request_success_total{engine="0",finished_reason="stop",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 3.0
vllm:request_success_total{engine="0",finished_reason="length",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 2.0
# HELP vllm:request_success_created Count of successfully processed requests.
# TYPE vllm:request_success_created gauge
vllm:request_success_created{engine="0",finished_reason="stop",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 1.7955411787438536e+09
vllm:request_success_created{engine="0",finished_reason="length",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 1.7955411787438595e+09
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.005",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 2.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.01",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 2.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.02",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 3.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.04",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 4.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 5.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 5.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 0.249
# HELP vllm:time_to_first_token_seconds_created Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds_created gauge
vllm:time_to_first_token_seconds_created{engine="0",model_name="Qwen/Qwen2.5-0.5B-Instruct"} 1.795541178743869e+09
"#;
