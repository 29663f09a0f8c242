//! Server-sent events as OpenAI and Anthropic stream them: `data: <json>` events (Anthropic's
//! named by `event:`), OpenAI's ended by `data: [DONE]`.
//!
//! [`Parser`] is the event-stream interpretation of the HTML standard (§9.2.6) over *bytes*:
//! lines end in `\n`, `\r\n` or `\r`; a line starting with `:` is a comment; `field: value`
//! drops one space after the colon, a line without a colon is a field with an empty value;
//! `data` lines are joined with `\n`, `event` names the event, `id` sets the last event ID
//! (unless it holds a NUL), `retry` is kept if it is all ASCII digits; other fields are ignored;
//! a blank line dispatches the event, unless it has no `data` line; a leading UTF-8 BOM is
//! dropped; an event the stream ends in the middle of is never dispatched.
//!
//! Text is decoded once per *completed* event, never per network read, so a code point split
//! across two reads arrives whole. Invalid UTF-8 inside a completed event is replaced by U+FFFD
//! in that event only (lossy: the event is complete, so nothing later could have mended it);
//! it never panics and never holds up the events after it.
//!
//! Linear in the stream's length: each byte is scanned once for a line end; only an unfinished
//! line is kept between reads (copied once), and a line's value is copied once, into its
//! event's buffer, which becomes the payload `String` without another copy.

use std::time::Duration;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, or `message` when the event had none (the spec's default type).
    pub event: String,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    /// The last event ID when the event was dispatched (an `id:` holds until the next one).
    pub id: String,
}

/// Decodes an SSE byte stream fed in arbitrary pieces into events (see the module doc).
#[derive(Default)]
pub struct Parser {
    /// The start of a line whose end has not arrived yet: all that is kept between feeds.
    partial: Vec<u8>,
    /// The last byte fed was a `\r` that ended a line: a `\n` first in the next feed is
    /// the rest of that line end (`\r\n`), not a blank line.
    after_cr: bool,
    /// A line has been read: a BOM is only dropped from the first.
    seen_line: bool,
    /// The data buffer of the event being read: each `data` value followed by `\n`.
    data: Vec<u8>,
    /// The event type buffer.
    event_type: Vec<u8>,
    /// The last event ID buffer.
    last_id: Vec<u8>,
    retry: Option<Duration>,
}

const BOM: &[u8] = "\u{feff}".as_bytes();

impl Parser {
    /// Feeds bytes; returns the data payloads of the events completed by them.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        self.run(bytes, &mut |_, _, data| out.push(data));
        out
    }

    /// Feeds bytes; returns the events completed by them, with their names and IDs.
    pub fn feed_events(&mut self, bytes: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        self.run(bytes, &mut |event: &[u8], id: &[u8], data| {
            out.push(Event {
                event: if event.is_empty() {
                    "message".to_owned()
                } else {
                    String::from_utf8_lossy(event).into_owned()
                },
                data,
                id: String::from_utf8_lossy(id).into_owned(),
            })
        });
        out
    }

    /// The reconnection time the stream last asked for with `retry:`, if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Splits `bytes` into lines, completing the one left unfinished by the last feed;
    /// `emit(event type, last event ID, data)` gets each dispatched event.
    fn run<F: FnMut(&[u8], &[u8], String)>(&mut self, mut bytes: &[u8], emit: &mut F) {
        if self.after_cr && !bytes.is_empty() {
            self.after_cr = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
            }
        }
        while let Some(end) = bytes.iter().position(|&b| b == b'\n' || b == b'\r') {
            let line = &bytes[..end];
            if self.partial.is_empty() {
                self.line(line, emit);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole, emit);
                whole.clear();
                self.partial = whole;
            }
            let cr = bytes[end] == b'\r';
            bytes = &bytes[end + 1..];
            if cr {
                match bytes.first() {
                    Some(b'\n') => bytes = &bytes[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.partial.extend_from_slice(bytes);
    }

    /// One complete line, without its line end.
    fn line<F: FnMut(&[u8], &[u8], String)>(&mut self, mut line: &[u8], emit: &mut F) {
        if !self.seen_line {
            self.seen_line = true;
            line = line.strip_prefix(BOM).unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch(emit);
        }
        if line[0] == b':' {
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.event_type.clear();
                self.event_type.extend_from_slice(value);
            }
            b"id" if !value.contains(&0) => {
                self.last_id.clear();
                self.last_id.extend_from_slice(value);
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // All digits, so ASCII; a value past u64 milliseconds is ignored.
                if let Ok(ms) = std::str::from_utf8(value).unwrap_or_default().parse() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
    }

    /// A blank line: the event read so far is dispatched if it has data, and reset.
    fn dispatch<F: FnMut(&[u8], &[u8], String)>(&mut self, emit: &mut F) {
        if !self.data.is_empty() {
            self.data.pop(); // the `\n` after the last data line
            let data = match String::from_utf8(std::mem::take(&mut self.data)) {
                Ok(text) => text,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            };
            emit(&self.event_type, &self.last_id, data);
        }
        self.event_type.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::{Index, select};

    fn payloads(chunks: &[&[u8]]) -> Vec<String> {
        let mut p = Parser::default();
        chunks.iter().flat_map(|c| p.feed(c)).collect()
    }

    #[test]
    fn splits_events_across_reads() {
        let mut p = Parser::default();
        assert!(p.feed(b"data: {\"a\"").is_empty());
        assert_eq!(p.feed(b":1}\n\ndata: [DONE]\r\n\r\n"), vec!["{\"a\":1}", "[DONE]"]);
        assert_eq!(p.feed(b": comment\n\n"), Vec::<String>::new());
    }

    /// The issue's bug: a 4-byte emoji split 1+3 became U+FFFD on both sides.
    #[test]
    fn emoji_split_one_plus_three_arrives_whole() {
        let s = "data: {\"c\":\"😀\"}\n\n".as_bytes();
        let at = s.iter().position(|&b| b == 0xF0).unwrap() + 1;
        assert_eq!(payloads(&[&s[..at], &s[at..]]), vec!["{\"c\":\"😀\"}"]);
    }

    /// The examples of the HTML standard's §9.2.6.
    /// A whole OpenAI stream of emoji, CJK, RTL and combining text fed one byte at a time.
    #[test]
    fn a_stream_fed_one_byte_at_a_time_reassembles_exactly() {
        let pieces = ["路由器は", " 👩🏽\u{200d}💻 🇯🇵", " مرحبا", " e\u{301}te\u{301}。"];
        let mut wire = Vec::new();
        for p in pieces {
            let chunk = serde_json::json!({"choices": [{"delta": {"content": p}}]});
            wire.extend_from_slice(format!("data: {chunk}\r\n\r\n").as_bytes());
        }
        wire.extend_from_slice(b"data: [DONE]\r\n\r\n");
        let one_byte_each: Vec<&[u8]> = wire.chunks(1).collect();
        let events = payloads(&one_byte_each);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        let text: String = events[..events.len() - 1]
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_str(e).unwrap();
                v["choices"][0]["delta"]["content"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(text, pieces.concat());
    }

    #[test]
    fn spec_examples() {
        let one = |s: &str| payloads(&[s.as_bytes()]);
        assert_eq!(one("data: YHOO\ndata: +2\ndata: 10\n\n"), vec!["YHOO\n+2\n10"]);
        assert_eq!(
            one(": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n\n"),
            vec!["first event", "second event", " third event"]
        );
        assert_eq!(one("data\n\ndata\ndata\n\ndata:"), vec!["", "\n"]);
        assert_eq!(one("data:test\n\ndata: test\n\n"), vec!["test", "test"]);
        let mut p = Parser::default();
        let got = p.feed_events(b"event: add\ndata: 73857293\n\nevent: remove\ndata: 2153\n\ndata: 113411\nid: 7\n\n");
        let names: Vec<_> = got
            .iter()
            .map(|e| (e.event.as_str(), e.data.as_str(), e.id.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("add", "73857293", ""),
                ("remove", "2153", ""),
                ("message", "113411", "7")
            ]
        );
    }

    /// A `\r` ending one read and a `\n` starting the next are one line end, not a blank line.
    #[test]
    fn crlf_split_across_reads_is_one_line_end() {
        assert_eq!(payloads(&[b"data: a\r", b"\ndata: b\r\n\r\n"]), vec!["a\nb"]);
        assert_eq!(payloads(&[b"data: a\r", b"", b"\n", b"data: b\r", b"\r"]), vec!["a\nb"]);
        assert_eq!(payloads(&[b"data: a\r\r", b"data: b\r\r"]), vec!["a", "b"]);
    }

    #[test]
    fn invalid_utf8_is_replaced_within_its_event_only() {
        let got = payloads(&[b"data: \xff ok\n\ndata: \xf0\x9f\n\n", b"data: [DONE]\n\n"]);
        assert_eq!(got, vec!["\u{fffd} ok", "\u{fffd}", "[DONE]"]);
    }

    #[test]
    fn bom_is_dropped_from_the_first_line_only() {
        let s = "\u{feff}data: a\n\n\u{feff}data: b\n\n".as_bytes();
        assert_eq!(payloads(&[&s[..1], &s[1..]]), vec!["a"]);
    }

    #[test]
    fn events_without_data_or_unfinished_are_not_dispatched() {
        let mut p = Parser::default();
        assert!(p.feed_events(b"event: ping\nid: 1\nretry: 250\n\n").is_empty());
        assert_eq!(p.retry(), Some(Duration::from_millis(250)));
        // The event type was reset by the blank line; the last event ID was not.
        let got = p.feed_events(b"data: x\n\ndata: never dispatched\n");
        assert_eq!(
            got,
            vec![Event {
                event: "message".into(),
                data: "x".into(),
                id: "1".into()
            }]
        );
    }

    // ---- property: any event stream, serialized any way, split anywhere, decodes to itself ----

    #[derive(Debug, Clone)]
    enum Field {
        Data(String),
        Event(String),
        Id(String),
        Retry(String),
        Comment(String),
        Other(String, String),
    }

    /// A field line: the field, how it is written (0 `name:value`, 1 `name: value`, 2 `name`
    /// alone when the value is empty), and its line end (0 `\n`, 1 `\r\n`, 2 `\r`).
    type Line = (Field, u8, u8);

    #[derive(Debug, Clone)]
    struct Stream {
        bom: bool,
        /// Each event: its lines, then the line end of the blank line that dispatches it.
        events: Vec<(Vec<Line>, u8)>,
        /// Lines of an event the stream ends in the middle of.
        tail: Vec<Line>,
    }

    fn text() -> impl Strategy<Value = String> {
        let ch = prop_oneof![
            4 => select(vec!['a', 'z', 'Q', '0', '9', ' ', ':', '{', '"', '\\', '[', ']', 'é', 'ß', '\t', '\0']),
            2 => prop::char::range('\u{4e00}', '\u{9fff}'),   // CJK
            2 => prop::char::range('\u{1f300}', '\u{1faff}'), // emoji
            1 => select(vec!['\u{200d}', '\u{fe0f}', '\u{1f3fd}']), // ZWJ, variation selector, skin tone
            2 => prop::char::range('\u{0590}', '\u{06ff}'),   // Hebrew, Arabic (RTL)
            1 => select(vec!['\u{200f}', '\u{202e}', '\u{2067}']), // RTL marks and overrides
            2 => prop::char::range('\u{0300}', '\u{036f}'),   // combining marks
            1 => select(vec!['\u{feff}', '\u{fffd}', '\u{85}', '\u{2028}', '\u{10ffff}']),
            1 => any::<char>(),
        ]
        .prop_map(|c| if c == '\r' || c == '\n' { ' ' } else { c });
        prop::collection::vec(ch, 0..10).prop_map(String::from_iter)
    }

    fn field() -> impl Strategy<Value = Field> {
        let name = text()
            .prop_map(|n| n.replace([':', '\u{feff}'], "_"))
            .prop_filter("a field name, not a known one", |n| {
                !n.is_empty() && !["data", "event", "id", "retry"].contains(&n.as_str())
            });
        prop_oneof![
            6 => text().prop_map(Field::Data),
            2 => text().prop_map(Field::Event),
            1 => text().prop_map(Field::Id),
            1 => prop_oneof!["[0-9]{1,7}", "[0-9]{20,22}", "[+-]?[0-9]{1,3}[a-z.]?", text()].prop_map(Field::Retry),
            2 => text().prop_map(Field::Comment),
            1 => (name, text()).prop_map(|(n, v)| Field::Other(n, v)),
        ]
    }

    fn stream() -> impl Strategy<Value = Stream> {
        let line = || (field(), 0..3u8, 0..3u8);
        (
            any::<bool>(),
            prop::collection::vec((prop::collection::vec(line(), 0..6), 0..3u8), 0..8),
            prop::collection::vec(line(), 0..3),
        )
            .prop_map(|(bom, events, tail)| Stream { bom, events, tail })
    }

    const EOL: [&str; 3] = ["\n", "\r\n", "\r"];

    fn serialize(s: &Stream) -> Vec<u8> {
        let mut out = String::new();
        if s.bom {
            out.push('\u{feff}');
        }
        let mut write = |(f, style, eol): &Line| {
            let (name, value) = match f {
                Field::Data(v) => ("data", v),
                Field::Event(v) => ("event", v),
                Field::Id(v) => ("id", v),
                Field::Retry(v) => ("retry", v),
                Field::Comment(v) => ("", v),
                Field::Other(n, v) => (n.as_str(), v),
            };
            out.push_str(name);
            if !(name.is_empty() || *style == 2 && value.is_empty()) || matches!(f, Field::Comment(_)) {
                out.push(':');
                if *style == 1 || value.starts_with(' ') {
                    out.push(' ');
                }
                out.push_str(value);
            }
            out.push_str(EOL[*eol as usize]);
        };
        for (lines, blank) in &s.events {
            lines.iter().for_each(&mut write);
            // A blank line written `\n` after a `\r` would read as one `\r\n`: a writer cannot do that.
            let blank = if *blank == 0 && lines.last().is_some_and(|l| l.2 == 2) {
                1
            } else {
                *blank
            };
            write(&(Field::Other(String::new(), String::new()), 2, blank));
        }
        s.tail.iter().for_each(&mut write);
        out.into_bytes()
    }

    /// What the stream means: its dispatched events and the last valid `retry`.
    fn expected(s: &Stream) -> (Vec<Event>, Option<Duration>) {
        let (mut events, mut id, mut retry) = (Vec::new(), String::new(), None);
        let mut fields = |lines: &[Line]| {
            let (mut data, mut event) = (Vec::new(), String::new());
            for (f, _, _) in lines {
                match f {
                    Field::Data(v) => data.push(v.clone()),
                    Field::Event(v) => event = v.clone(),
                    Field::Id(v) if !v.contains('\0') => id = v.clone(),
                    Field::Retry(v) if v.bytes().all(|b| b.is_ascii_digit()) => {
                        retry = v.parse().ok().map(Duration::from_millis).or(retry)
                    }
                    _ => {}
                }
            }
            (data, event, id.clone())
        };
        for (lines, _) in &s.events {
            let (data, event, id) = fields(lines);
            if !data.is_empty() {
                let event = if event.is_empty() { "message".to_owned() } else { event };
                events.push(Event {
                    event,
                    data: data.join("\n"),
                    id,
                });
            }
        }
        fields(&s.tail);
        (events, retry)
    }

    /// The ways to cut `bytes`: whole, byte by byte, at `cuts`, and (when small) at every point.
    fn chunkings<'a>(bytes: &'a [u8], cuts: &[Index]) -> Vec<Vec<&'a [u8]>> {
        let mut ways = vec![vec![bytes], bytes.chunks(1).collect()];
        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut pieces = Vec::new();
        let mut from = 0;
        for to in at.into_iter().chain([bytes.len()]) {
            pieces.push(&bytes[from..to]);
            from = to;
        }
        ways.push(pieces);
        if bytes.len() <= 1024 {
            ways.extend((0..=bytes.len()).map(|i| vec![&bytes[..i], &bytes[i..]]));
        }
        ways
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn payloads_survive_any_chunking(s in stream(), cuts in prop::collection::vec(any::<Index>(), 0..24)) {
            let bytes = serialize(&s);
            let want: Vec<String> = expected(&s).0.into_iter().map(|e| e.data).collect();
            for chunks in chunkings(&bytes, &cuts) {
                prop_assert_eq!(&payloads(&chunks), &want, "chunks {:?}", chunks);
            }
        }

        #[test]
        fn events_names_ids_and_retry_survive_any_chunking(
            s in stream(),
            cuts in prop::collection::vec(any::<Index>(), 0..24),
        ) {
            let bytes = serialize(&s);
            let (want, want_retry) = expected(&s);
            for chunks in chunkings(&bytes, &cuts) {
                let mut p = Parser::default();
                let got: Vec<Event> = chunks.iter().flat_map(|c| p.feed_events(c)).collect();
                prop_assert_eq!(&got, &want, "chunks {:?}", chunks);
                prop_assert_eq!(p.retry(), want_retry);
            }
        }
    }
}
