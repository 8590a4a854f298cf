//! Log lines: JSON formatting, and the buffer a thread of its own writes.
//!
//! Every request writes an audit line, so a line's cost is part of every
//! request's. [`JsonLines`] writes a line straight into one string:
//! no intermediate JSON tree, span fields kept as ready-to-copy JSON
//! ([`SpanFields`]) rather than parsed back on every line, the timestamp's
//! date and time formatted once a second. [`LineWriter`] appends lines to a
//! shared buffer that its thread writes out a little later
//! ([`LINGER`]) in one write(2): a request never waits on stderr, and under
//! load the thread wakes once per batch, not once per line (which costs
//! the scheduler more than the write itself on a busy machine).

use std::fmt::{self, Write as _};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use opentelemetry::trace::TraceContextExt as _;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// How long the writer thread gathers lines after the first of a batch
/// before writing them all.
pub const LINGER: Duration = Duration::from_millis(20);

/// Bytes waiting to be written beyond which logging waits for the writer:
/// nothing is dropped, and memory stays bounded.
const MAX_PENDING: usize = 8 << 20;

/// Lines waiting for the writer thread.
struct Pending {
    buffer: Vec<u8>,
    /// Set by [`LinesGuard`]'s drop: write what is left and stop.
    closing: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer: the buffer got its first line, or closing.
    wake: Condvar,
    /// Wakes loggers waiting for room.
    drained: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves bytes, never a broken state.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The subscriber's writer: appends each line to the shared buffer.
#[derive(Clone)]
pub struct LineWriter {
    shared: Arc<Shared>,
}

/// Writes what is still buffered and stops the writer thread when dropped.
pub struct LinesGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl LineWriter {
    /// A writer whose lines a new thread writes to `out`.
    pub fn spawn(out: impl std::io::Write + Send + 'static) -> std::io::Result<(Self, LinesGuard)> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                buffer: Vec::with_capacity(64 * 1024),
                closing: false,
            }),
            wake: Condvar::new(),
            drained: Condvar::new(),
        });
        let thread = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn({
                let shared = Arc::clone(&shared);
                move || write_out(&shared, out)
            })?;
        let guard = LinesGuard {
            shared: Arc::clone(&shared),
            thread: Some(thread),
        };
        Ok((Self { shared }, guard))
    }
}

/// The writer thread: waits for a first line, lets more gather for
/// [`LINGER`], then writes the lot at once.
fn write_out(shared: &Shared, mut out: impl std::io::Write) {
    let mut spare = Vec::with_capacity(64 * 1024);
    loop {
        let mut pending = shared.lock();
        while pending.buffer.is_empty() && !pending.closing {
            pending = shared
                .wake
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if pending.buffer.is_empty() {
            return; // closing, and everything written
        }
        if !pending.closing {
            drop(pending);
            std::thread::sleep(LINGER);
            pending = shared.lock();
        }
        std::mem::swap(&mut pending.buffer, &mut spare);
        drop(pending);
        shared.drained.notify_all();
        // Nowhere to report a failed write to: the line is lost, as with
        // any logger writing to a closed stderr.
        let _ = out.write_all(&spare).and_then(|()| out.flush());
        spare.clear();
        if spare.capacity() > 1 << 20 {
            spare.shrink_to(64 * 1024); // after a burst
        }
    }
}

impl Drop for LinesGuard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl std::io::Write for LineWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.shared.lock();
        while pending.buffer.len() >= MAX_PENDING && !pending.closing {
            pending = self
                .shared
                .drained
                .wait(pending)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let first = pending.buffer.is_empty();
        pending.buffer.extend_from_slice(line);
        drop(pending);
        if first {
            self.shared.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LineWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A JSON object per line: `timestamp`, `level`, `target`, `message`, the
/// event's `fields`, the `span` it was written in and all enclosing `spans`
/// (each with its `name` and fields), and `trace_id` / `span_id` inside a
/// traced span.
pub struct JsonLines;

impl<S> FormatEvent<S, SpanFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, SpanFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = String::with_capacity(512);
        line.push_str("{\"timestamp\":\"");
        timestamp(&mut line);
        line.push_str("\",\"level\":\"");
        line.push_str(meta.level().as_str());
        line.push_str("\",\"target\":");
        json_str(&mut line, meta.target())?;

        let mut message = String::new();
        let mut fields = String::new();
        let mut visitor = JsonFields {
            out: &mut fields,
            first: true,
            message: Some(&mut message),
            result: Ok(()),
        };
        event.record(&mut visitor);
        visitor.result?;
        if !message.is_empty() {
            line.push_str(",\"message\":");
            line.push_str(&message);
        }
        if !fields.is_empty() {
            line.push_str(",\"fields\":{");
            line.push_str(&fields);
            line.push('}');
        }

        if let Some(scope) = ctx.event_scope() {
            let mut spans = String::from("[");
            let mut current = 0..0;
            for span in scope.from_root() {
                if spans.len() > 1 {
                    spans.push(',');
                }
                let start = spans.len();
                spans.push_str("{\"name\":");
                json_str(&mut spans, span.name())?;
                if let Some(recorded) = span.extensions().get::<FormattedFields<SpanFields>>()
                    && !recorded.fields.is_empty()
                {
                    spans.push(',');
                    spans.push_str(&recorded.fields);
                }
                spans.push('}');
                current = start..spans.len();
            }
            spans.push(']');
            if !current.is_empty() {
                line.push_str(",\"span\":");
                line.push_str(&spans[current]);
            }
            line.push_str(",\"spans\":");
            line.push_str(&spans);
        }

        // The ids of the innermost span that has them: from `TraceIds`
        // when no span is exported, else from the OpenTelemetry context of
        // the innermost span its layer follows (entering a span activates
        // its context).
        let ids = ctx
            .event_scope()
            .and_then(super::ids::innermost)
            .or_else(|| {
                let context = opentelemetry::Context::current();
                let span = context.span();
                let span_context = span.span_context();
                span_context.is_valid().then(|| super::ids::Ids {
                    trace: span_context.trace_id().to_bytes(),
                    span: span_context.span_id().to_bytes(),
                })
            });
        if let Some(ids) = ids {
            line.push_str(",\"trace_id\":\"");
            hex(&mut line, &ids.trace);
            line.push_str("\",\"span_id\":\"");
            hex(&mut line, &ids.span);
            line.push('"');
        }
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// Span fields, kept as the inside of a JSON object (`"a":1,"b":"x"`) so
/// that a line copies them as they are. A field recorded after the span was
/// created is appended; should one be recorded twice, it appears twice and
/// JSON readers take the last.
pub struct SpanFields;

impl<'w> FormatFields<'w> for SpanFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut visitor = JsonFields {
            out: &mut writer,
            first: true,
            message: None,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }

    fn add_fields(
        &self,
        current: &'w mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let first = current.fields.is_empty();
        let mut visitor = JsonFields {
            out: &mut current.fields,
            first,
            message: None,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes fields as `"name":value` pairs, comma-separated; an event's
/// `message` goes to `message` (as a JSON value) when given.
struct JsonFields<'a, W: fmt::Write> {
    out: W,
    first: bool,
    message: Option<&'a mut String>,
    result: fmt::Result,
}

impl<W: fmt::Write> JsonFields<'_, W> {
    /// Writes the key of `field` and then the value `write` writes, to
    /// `message` for an event's message.
    fn field(&mut self, field: &Field, write: impl FnOnce(&mut dyn fmt::Write) -> fmt::Result) {
        if self.result.is_err() {
            return;
        }
        if field.name() == "message"
            && let Some(message) = self.message.as_deref_mut()
        {
            message.clear();
            self.result = write(message);
            return;
        }
        let out = &mut self.out;
        self.result = (|| {
            if !std::mem::take(&mut self.first) {
                out.write_char(',')?;
            }
            json_str(out, field.name())?;
            out.write_char(':')?;
            write(out)
        })();
    }
}

impl<W: fmt::Write> Visit for JsonFields<'_, W> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.field(field, |out| match value.is_finite() {
            // Rust writes a finite f64 in plain decimal: valid JSON.
            true => write!(out, "{value}"),
            false => out.write_str("null"),
        });
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |out| {
            out.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |out| {
            out.write_str(itoa::Buffer::new().format(value))
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |out| json_str(out, value));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, |out| json_display(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |out| {
            out.write_char('"')?;
            write!(Escaped(&mut *out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// `value`'s `Display` as a JSON string.
fn json_display(out: &mut dyn fmt::Write, value: &dyn fmt::Display) -> fmt::Result {
    out.write_char('"')?;
    write!(Escaped(&mut *out), "{value}")?;
    out.write_char('"')
}

/// `s` as a JSON string, escaped as serde_json escapes it.
fn json_str(out: &mut (impl fmt::Write + ?Sized), s: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(&mut *out).write_str(s)?;
    out.write_char('"')
}

/// Escapes what is written through it for the inside of a JSON string:
/// `"`, `\` and control characters, as serde_json does.
struct Escaped<'a, W: fmt::Write + ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !crate::escape::needs_escape(s.as_bytes()) {
            return self.0.write_str(s);
        }
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..0x20 => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            plain = i + 1;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
        }
        self.0.write_str(&s[plain..])
    }
}

/// `bytes` in lowercase hex.
fn hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
}

thread_local! {
    /// The second last formatted on this thread, and its text.
    static SECOND: std::cell::RefCell<(i64, String)> = const {
        std::cell::RefCell::new((i64::MIN, String::new()))
    };
}

/// Now, as `2026-11-28T08:12:16.123456Z`: the part up to the second is
/// formatted once a second per thread.
fn timestamp(out: &mut String) {
    let now = chrono::Utc::now();
    let second = now.timestamp();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != second {
            text.clear();
            let _ = write!(text, "{}", now.format("%Y-%m-%dT%H:%M:%S"));
            *cached = second;
        }
        out.push_str(text);
    });
    // A leap second's fraction reads as its last microsecond.
    let micros = now.timestamp_subsec_micros().min(999_999);
    let _ = write!(out, ".{micros:06}Z");
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use proptest::prelude::*;

    fn escaped(s: &str) -> String {
        let mut out = String::new();
        json_str(&mut out, s).unwrap();
        out
    }

    proptest! {
        #[test]
        fn strings_are_escaped_as_serde_json_escapes_them(s in any::<String>()) {
            prop_assert_eq!(escaped(&s), serde_json::to_string(&s).unwrap());
        }

        #[test]
        fn controls_quotes_and_backslashes_too(
            s in proptest::collection::vec(
                prop_oneof![
                    Just('"'),
                    Just('\\'),
                    proptest::char::range('\u{0}', '\u{20}'),
                    Just('é'),
                    Just('a'),
                ],
                0..30,
            ).prop_map(|chars| chars.into_iter().collect::<String>()),
        ) {
            prop_assert_eq!(escaped(&s), serde_json::to_string(&s).unwrap());
        }
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let mut out = String::new();
        timestamp(&mut out);
        timestamp(&mut out); // the second from the cache
        let (first, second) = out.split_at(out.len() / 2);
        for text in [first, second] {
            assert_eq!(text.len(), "2026-11-28T08:12:16.123456Z".len(), "{text}");
            let parsed = chrono::DateTime::parse_from_rfc3339(text).unwrap();
            let age = chrono::Utc::now() - parsed.to_utc();
            assert!(age >= chrono::TimeDelta::zero() && age < chrono::TimeDelta::seconds(5));
        }
    }

    #[test]
    fn lines_are_all_written_by_the_time_the_guard_is_dropped() {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let (writer, guard) = LineWriter::spawn(sink.clone()).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        writer.write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        drop(guard);
        let written = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 4000);
        for t in 0..4 {
            // Each thread's lines whole and in its order.
            let mine: Vec<&str> = lines
                .iter()
                .filter(|l| l.starts_with(&format!("{t} ")))
                .copied()
                .collect();
            let expected: Vec<String> = (0..1000).map(|i| format!("{t} {i}")).collect();
            assert_eq!(mine, expected);
        }
    }
}
