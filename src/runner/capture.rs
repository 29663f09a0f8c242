//! Per-case output capture. libtest-mimic captures nothing, so each case runs inside a
//! `case` span and this layer appends the case's tracing events to that span's buffer; the
//! report shows them under the case. Events outside any case go to stderr as usual.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

/// A case's captured lines.
#[derive(Clone, Default)]
pub struct Buffer(pub Arc<Mutex<Vec<String>>>);

impl Buffer {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

pub struct CaptureLayer;

// The buffer the next `case` span created on this thread should use.
thread_local! {
    static NEXT: std::cell::RefCell<Option<Buffer>> = const { std::cell::RefCell::new(None) };
}

/// Creates the `case` span that captures into `buf`.
pub fn case_span(name: &str, buf: &Buffer) -> tracing::Span {
    NEXT.with(|n| *n.borrow_mut() = Some(buf.clone()));
    let span = tracing::info_span!("case", name = %name);
    NEXT.with(|n| n.borrow_mut().take());
    span
}

impl<S> Layer<S> for CaptureLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "case" {
            return;
        }
        if let (Some(buf), Some(span)) = (NEXT.with(|n| n.borrow().clone()), ctx.span(id)) {
            span.extensions_mut().insert(buf);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let Some(scope) = ctx.event_scope(event) else {
            return;
        };
        for span in scope {
            if let Some(buf) = span.extensions().get::<Buffer>() {
                let mut line = format!("{:>5} ", event.metadata().level());
                event.record(&mut Fields(&mut line));
                buf.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(crate::redact::redact(&line));
                return;
            }
        }
    }
}

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

/// Installs the global subscriber: the capture layer, plus stderr output of events outside
/// cases filtered by `GAUNTLET_LOG` (default `warn`).
pub fn install() {
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_from_env("GAUNTLET_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let capture = CaptureLayer.with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    let _ = tracing_subscriber::registry().with(capture).with(stderr).try_init();
}
