//! A fast path for reading one YAML document into a `serde_json::Value`: the value built straight
//! from granit-parser's events, the parser serde-saphyr itself runs. An audit of many documents
//! spent about half of serde-saphyr's time in its serde layer, not in the parser.
//!
//! It accepts only what it resolves exactly as serde-saphyr does (with the options of
//! `yaml_options`); `None` means "ask serde-saphyr", which then gives the value or the error as
//! before. So it declines any parse error, anchor, alias, tag, merge key, non-string key,
//! duplicate key, more than one document, an empty document, and every plain scalar that could
//! be anything but a string, a plain decimal integer, or the exact `true`/`false`/`null`/`~`/empty
//! (the resolution rules are serde-saphyr 2.2.0's `deserialize_any` and `parse_scalars`).

use std::borrow::Cow;

use granit_parser::{Event, Options, Parser, ScalarStyle, StrInput};
use serde_json::{Map, Value};

// Well under serde-saphyr's default budget (depth 64, 250,000 nodes, 1,000,000 events, 64 MiB
// of scalar text), so a document it would reject for its size is never accepted here.
const MAX_DEPTH: usize = 48;
const MAX_NODES: usize = 100_000;
const MAX_SCALAR_BYTES: usize = 16 << 20;

/// The document in `text` as serde-saphyr would read it, or `None` to let serde-saphyr read it.
pub(super) fn parse(text: &str) -> Option<Value> {
    // serde-saphyr's parser options with its default budget are granit's defaults, without
    // comment events (its `comments` feature is off).
    let mut options = Options::default();
    options.set_emit_comments(false);
    let mut reader = Reader {
        parser: Parser::new_from_str_with_options(text, options),
        nodes: 0,
        scalar_bytes: 0,
    };
    let Event::StreamStart = reader.next()? else {
        return None;
    };
    // A `%YAML` directive might change how serde-saphyr resolves scalars: decline it.
    let Event::DocumentStart(_, None) = reader.next()? else {
        return None;
    };
    let root = reader.next()?;
    let value = reader.node(root, 0)?;
    // An empty document: serde-saphyr decides what it is, as before.
    if value.is_null() {
        return None;
    }
    let Event::DocumentEnd = reader.next()? else {
        return None;
    };
    // A second document is serde-saphyr's error to report.
    let Event::StreamEnd = reader.next()? else {
        return None;
    };
    Some(value)
}

struct Reader<'a> {
    parser: Parser<'a, StrInput<'a>>,
    nodes: usize,
    scalar_bytes: usize,
}

impl<'a> Reader<'a> {
    /// The next event; `None` at the end or on a parse error (serde-saphyr words the error).
    fn next(&mut self) -> Option<Event<'a>> {
        match self.parser.next_event()? {
            Ok((event, _span)) => Some(event),
            Err(_) => None,
        }
    }

    fn node(&mut self, event: Event<'a>, depth: usize) -> Option<Value> {
        self.nodes += 1;
        if self.nodes > MAX_NODES || depth > MAX_DEPTH {
            return None;
        }
        match event {
            // Anchor id 0 and no tag: anchored or tagged nodes are declined.
            Event::Scalar(text, style, 0, None) => {
                self.scalar_bytes += text.len();
                if self.scalar_bytes > MAX_SCALAR_BYTES {
                    return None;
                }
                value_scalar(text, style)
            }
            Event::SequenceStart(_, 0, None) => {
                let mut items = Vec::new();
                loop {
                    match self.next()? {
                        Event::SequenceEnd => return Some(Value::Array(items)),
                        item => items.push(self.node(item, depth + 1)?),
                    }
                }
            }
            Event::MappingStart(_, 0, None) => {
                let mut map = Map::new();
                loop {
                    let key = match self.next()? {
                        Event::MappingEnd => return Some(Value::Object(map)),
                        Event::Scalar(text, style, 0, None) => key(text, style)?,
                        _ => return None,
                    };
                    self.nodes += 1;
                    let value = self.next()?;
                    let value = self.node(value, depth + 1)?;
                    // serde-saphyr rejects a duplicate key; it words the error.
                    if map.contains_key(&key) {
                        return None;
                    }
                    map.insert(key, value);
                }
            }
            // Aliases, anchored or tagged collections, and anything unexpected.
            _ => None,
        }
    }
}

/// A mapping key as serde-saphyr gives serde_json's map visitor: only keys that are strings
/// under any reading (`scalar`, not `value_scalar`: a `null:` or `true:` key is declined).
/// `<<` (a merge key when plain) is declined in every style.
fn key(text: Cow<'_, str>, style: ScalarStyle) -> Option<String> {
    if text == "<<" {
        return None;
    }
    match scalar(text, style)? {
        Value::String(key) => Some(key),
        _ => None,
    }
}

/// A scalar without tag or anchor: quoted and block scalars are strings; a plain scalar is a
/// string or a decimal integer only when nothing else could read it differently.
fn scalar(text: Cow<'_, str>, style: ScalarStyle) -> Option<Value> {
    match style {
        ScalarStyle::SingleQuoted
        | ScalarStyle::DoubleQuoted
        | ScalarStyle::Literal
        | ScalarStyle::Folded => Some(Value::String(text.into_owned())),
        ScalarStyle::Plain => plain(text),
    }
}

/// A value (not a key) scalar. Beyond `scalar`, the common spellings whose resolution
/// serde-saphyr's `deserialize_any` fixes before anything else: an empty plain scalar, `~` and
/// `null` are null (`scalar_is_null`), `true` and `false` booleans (`parse_yaml11_bool`).
/// Without them most real manifests (`readOnly: true`, `creationTimestamp: null`) would never
/// take this path.
fn value_scalar(text: Cow<'_, str>, style: ScalarStyle) -> Option<Value> {
    if style == ScalarStyle::Plain {
        match text.as_ref() {
            // granit-parser gives an empty node (`k:`) as a plain `~`.
            "" | "~" | "null" => return Some(Value::Null),
            "true" => return Some(Value::Bool(true)),
            "false" => return Some(Value::Bool(false)),
            _ => {}
        }
    }
    scalar(text, style)
}

fn plain(text: Cow<'_, str>) -> Option<Value> {
    let bytes = text.as_bytes();
    let (&first, &last) = (bytes.first()?, bytes.last()?); // empty: null
    // serde-saphyr trims these before resolving; the parser never leaves them on a plain scalar,
    // but if it did the resolution would not be this function's.
    if matches!(first, b' ' | b'\t' | b'\r' | b'\n') || matches!(last, b' ' | b'\t' | b'\r' | b'\n')
    {
        return None;
    }
    if first.is_ascii_digit() {
        return integer(&text).or_else(|| digit_string(&text));
    }
    // A sign then a letter (`-c`, `-ec`) is no number: serde-saphyr's signed non-finite floats
    // and NaNs are `-.inf` and `-.nan`, and it keeps Rust's `-inf` and `-nan` as strings;
    // those alone are declined anyway.
    if matches!(first, b'+' | b'-') {
        let rest = &text[1..];
        let starts_with_letter = rest.as_bytes().first().is_some_and(u8::is_ascii_alphabetic);
        let non_finite = ["inf", "infinity", "nan"]
            .iter()
            .any(|word| rest.eq_ignore_ascii_case(word));
        return (starts_with_letter && !non_finite).then(|| Value::String(text.into_owned()));
    }
    // `.` starts numbers (`.5`, `.inf`, `.nan`); `~` is null.
    if matches!(first, b'.' | b'~') {
        return None;
    }
    // Null and the YAML 1.1 booleans serde-saphyr reads (ASCII case-insensitive). Every other
    // numeric form starts with a digit, a sign or `.`; alphabetic spellings Rust's float parser
    // takes (`inf`, `nan`) serde-saphyr keeps as strings.
    if matches!(text.as_ref(), "null" | "Null" | "NULL")
        || ["true", "false", "yes", "no", "y", "n", "on", "off"]
            .iter()
            .any(|word| text.eq_ignore_ascii_case(word))
    {
        return None;
    }
    Some(Value::String(text.into_owned()))
}

/// A plain scalar starting with a digit that neither serde-saphyr's integer reading (decimal
/// with `_`, `0x`/`0o`/`0b`, legacy octal) nor Rust's float parser (digits, `.`, `e`, signs)
/// can take: a quantity (`500m`, `2Gi`: a letter no number has) or a version (`8.0.13`: two
/// dots). Anything else is declined.
fn digit_string(text: &str) -> Option<Value> {
    let numeric_letter = |b: &u8| b.is_ascii_hexdigit() || matches!(b, b'x' | b'X' | b'o' | b'O');
    let bytes = text.as_bytes();
    let foreign_letter = bytes
        .iter()
        .any(|b| b.is_ascii_alphabetic() && !numeric_letter(b));
    let version = bytes.iter().all(|b| b.is_ascii_digit() || *b == b'.')
        && bytes.iter().filter(|b| **b == b'.').count() >= 2;
    (foreign_letter || version).then(|| Value::String(text.to_owned()))
}

/// Plain ASCII digits without a leading zero (a leading zero is octal with
/// `legacy_octal_numbers`), fitting an i64. serde-saphyr reads them as a u64: the same
/// `serde_json::Number`.
fn integer(text: &str) -> Option<Value> {
    let bytes = text.as_bytes();
    if !bytes.iter().all(u8::is_ascii_digit) || (bytes.len() > 1 && bytes[0] == b'0') {
        return None;
    }
    text.parse::<i64>().ok().map(Value::from)
}

#[cfg(test)]
mod tests;
