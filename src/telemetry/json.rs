//! JSON log lines, written straight into the line buffer.
//!
//! The same lines as tracing-subscriber's `.json().flatten_event(true).with_current_span(true)`
//! (a test compares them field for field), for less than half its cost per line: its formatter
//! drives serde_json through a `fmt::Write` adaptor for every field and parses the current span's
//! fields back from their JSON for every line in a span, where this one writes each value once
//! and copies the span's fields as they are stored. One review line each is most of what the
//! webhook logs, so this was a measurable part of its CPU per review (BENCHMARKS.md).

use std::fmt::{self, Write as _};

use tracing::{Event, Subscriber, field::Field};
use tracing_subscriber::{
    field::Visit,
    fmt::{
        FmtContext, FormatEvent, FormatFields, FormattedFields,
        format::Writer,
        time::{FormatTime, SystemTime},
    },
    registry::LookupSpan,
};

/// The event formatter for `--log-format json`; span fields must be formatted by `JsonFields`.
pub(super) struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Built in a `String` and handed over in one piece: `writer` is a `dyn fmt::Write`, and
        // a call through it per piece cost more than the copy.
        let mut line = String::with_capacity(512);
        line.push_str("{\"timestamp\":\"");
        SystemTime.format_time(&mut Writer::new(&mut line))?;
        line.push_str("\",\"level\":\"");
        line.push_str(event.metadata().level().as_str());
        line.push('"');
        let mut fields = Fields {
            line: &mut line,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        let span = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(span) = span {
            line.push_str(",\"span\":{");
            let extensions = span.extensions();
            // Stored by `JsonFields` as one JSON object; its members are copied as they are.
            if let Some(stored) = extensions.get::<FormattedFields<N>>() {
                let members = stored
                    .trim()
                    .strip_prefix('{')
                    .and_then(|s| s.strip_suffix('}'))
                    .unwrap_or("")
                    .trim();
                if !members.is_empty() {
                    line.push_str(members);
                    line.push(',');
                }
            }
            line.push_str("\"name\":");
            string(&mut line, span.name());
            line.push('}');
        }
        line.push_str("}\n");
        writer.write_str(&line)
    }
}

/// Writes each field as `,"name":value`, as serde_json would write the value.
struct Fields<'a> {
    line: &'a mut String,
    /// Only a `Debug` or `Display` impl can fail.
    result: fmt::Result,
}

impl Fields<'_> {
    fn member(&mut self, field: &Field) -> &mut String {
        self.line.push(',');
        string(self.line, field.name());
        self.line.push(':');
        self.line
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        string(self.member(field), value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field)
            .push_str(if value { "true" } else { "false" });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        let line = self.member(field);
        let _ = write!(line, "{value}");
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        let line = self.member(field);
        let _ = write!(line, "{value}");
    }

    // Rare in this codebase, and serde_json's float format (shortest round trip, `null` for what
    // JSON cannot hold) is not Rust's.
    fn record_f64(&mut self, field: &Field, value: f64) {
        let number = serde_json::to_string(&value).unwrap_or_else(|_| "null".to_owned());
        self.member(field).push_str(&number);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let line = self.member(field);
        line.push('"');
        let written = write!(Escaped(line), "{value:?}");
        line.push('"');
        if self.result.is_ok() {
            self.result = written;
        }
    }
}

fn string(line: &mut String, value: &str) {
    line.push('"');
    Escaped(line).push(value);
    line.push('"');
}

/// Writes what it is given as the inside of a JSON string, escaped as serde_json escapes it.
struct Escaped<'a>(&'a mut String);

impl Escaped<'_> {
    fn push(&mut self, s: &str) {
        let mut start = 0;
        for (i, byte) in s.bytes().enumerate() {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..=0x1f => "",
                _ => continue,
            };
            self.0.push_str(&s[start..i]);
            if escape.is_empty() {
                let _ = write!(self.0, "\\u{byte:04x}");
            } else {
                self.0.push_str(escape);
            }
            start = i + 1;
        }
        self.0.push_str(&s[start..]);
    }
}

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::capture::Capture;
    use std::io;
    use tracing_subscriber::fmt::format::JsonFields;

    fn events() {
        let error = io::Error::other("disk \"full\"\n");
        tracing::info!(
            uid = "a\"b\\c\nd\te\u{1}\u{1f}\u{7f}/é🚀",
            n = 5u64,
            i = -3i64,
            big = u64::MAX,
            f = 1.5f64,
            tiny = 1e-7f64,
            nan = f64::NAN,
            yes = true,
            list = ?vec![1, 2],
            shown = %"x<y>\r\u{8}\u{c}",
            wide = 1i128,
            error = &error as &(dyn std::error::Error + 'static),
            "message with \"quotes\" and {}", "arguments"
        );
        tracing::warn!(k = "v");
        tracing::error!("");
        let outer = tracing::info_span!("outer", uid = "u1", n = 3, text = "a\"b");
        outer.in_scope(|| {
            tracing::info!(inner = false, "in one span");
            let empty = tracing::info_span!("empty");
            empty.in_scope(|| tracing::info!("in a span without fields"));
            let recorded = tracing::info_span!("recorded", late = tracing::field::Empty);
            recorded.record("late", "set \"later\"");
            recorded.in_scope(|| tracing::info!("in a span with a field recorded later"));
        });
    }

    /// The lines a subscriber writes for [`events`], each timestamp replaced by `T`.
    fn lines(subscriber: impl Subscriber + Send + Sync, out: &Capture) -> Vec<String> {
        tracing::subscriber::with_default(subscriber, events);
        let text = out.text();
        text.lines()
            .map(|line| {
                let value: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                let stamp = value["timestamp"].as_str().unwrap();
                assert!(stamp.ends_with('Z') && stamp.len() == 27, "{stamp}");
                line.replacen(stamp, "T", 1)
            })
            .collect()
    }

    #[test]
    fn lines_are_tracing_subscribers_json_lines_byte_for_byte() {
        let theirs = Capture::default();
        let reference = tracing_subscriber::fmt()
            .with_writer(theirs.clone())
            .with_target(false)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .finish();
        let ours = Capture::default();
        let candidate = tracing_subscriber::fmt()
            .with_writer(ours.clone())
            .with_target(false)
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .finish();
        let (expected, got) = (lines(reference, &theirs), lines(candidate, &ours));
        assert_eq!(expected.len(), 6);
        for (expected, got) in expected.iter().zip(&got) {
            assert_eq!(got, expected);
        }
        assert_eq!(got.len(), expected.len());
    }
}
