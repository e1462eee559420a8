//! Byte and line mutations, and YAML-ish and JSON-ish token soup, for the property tests of
//! review bodies, policies and manifests.

use proptest::{prelude::*, sample::Index};

#[derive(Clone, Debug)]
pub enum ByteEdit {
    Truncate(Index),
    Delete(Index, u8),
    Overwrite(Index, u8),
    Insert(Index, Vec<u8>),
    Repeat(Index, u8, u8),
}

pub fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    let snippet = prop_oneof![
        prop::collection::vec(any::<u8>(), 1..8),
        prop::sample::select(
            &[
                "{",
                "}",
                "[",
                "]",
                ",",
                ":",
                "\"",
                "\\",
                "\\u",
                "null",
                "-0",
                "1e999",
                "\u{7f}",
                "\"uid\":",
                "\"object\":null,",
                "\"kind\":",
            ][..]
        )
        .prop_map(|s| s.as_bytes().to_vec()),
    ];
    prop_oneof![
        any::<Index>().prop_map(ByteEdit::Truncate),
        (any::<Index>(), any::<u8>()).prop_map(|(at, n)| ByteEdit::Delete(at, n)),
        (any::<Index>(), any::<u8>()).prop_map(|(at, b)| ByteEdit::Overwrite(at, b)),
        (any::<Index>(), snippet).prop_map(|(at, s)| ByteEdit::Insert(at, s)),
        (any::<Index>(), any::<u8>(), any::<u8>())
            .prop_map(|(at, n, k)| ByteEdit::Repeat(at, n, k)),
    ]
}

pub fn apply_bytes(bytes: &mut Vec<u8>, edits: &[ByteEdit]) {
    for edit in edits {
        if bytes.is_empty() {
            return;
        }
        let len = bytes.len();
        match edit {
            ByteEdit::Truncate(at) => bytes.truncate(at.index(len)),
            ByteEdit::Delete(at, n) => {
                let start = at.index(len);
                let end = (start + usize::from(*n) + 1).min(len);
                bytes.drain(start..end);
            }
            ByteEdit::Overwrite(at, b) => bytes[at.index(len)] = *b,
            ByteEdit::Insert(at, s) => {
                let at = at.index(len);
                bytes.splice(at..at, s.iter().copied());
            }
            ByteEdit::Repeat(at, n, k) => {
                let start = at.index(len);
                let end = (start + usize::from(*n) + 1).min(len);
                let slice = bytes[start..end].to_vec();
                for _ in 0..usize::from(*k % 16) {
                    bytes.splice(end..end, slice.iter().copied());
                }
            }
        }
    }
}

/// YAML lines worth inserting into manifests and policies.
pub const YAML_LINES: &[&str] = &[
    "---",
    "--- # c",
    "--- {kind: Service}",
    "...",
    "kind: StatefulSet",
    "apiVersion: apps/v1",
    "apiVersion: apps/v1beta1",
    "kind: List",
    "kind: ServiceList",
    "items:",
    "- kind: Service",
    "items: [{apiVersion: v1, kind: Service, metadata: {name: x}}]",
    "spec: null",
    "spec: []",
    "metadata: {name: web, annotations: {stsguard.io/exempt: '*'}}",
    "  serviceName: 42",
    "  replicas: many",
    "  containers: {}",
    "  - name: x",
    "anchor: &a [1, 2]",
    "alias: *a",
    "alias: *nowhere",
    "<<: *a",
    "merged: {<<: {a: 1}}",
    "binary: !!binary aGVsbG8=",
    "tagged: !custom x",
    "key: [",
    "key: {",
    "'unterminated",
    "\"unterminated",
    "\t",
    "%YAML 1.2",
    "%TAG ! tag:example.com,2000:",
    "? complex",
    ": value",
    "|",
    ">-",
    "- - - x",
    "mode: audit",
    "mode: loud",
    "rules: {sts-service-name: off}",
    "rules: {sts-nope: deny}",
    "mutators: {svc-make-headless: true}",
    "exemptions: [{namespaces: [cap], reason: r}]",
    "defaults: {volumeClaimTemplate: {storage: 0}}",
    "settings: {volatileLabels: [app]}",
    "lookups: off",
    "failureAction: allow",
    "\u{feff}kind: Service",
    "kind: Service\r",
    "a: b\rc: d",
];

#[derive(Clone, Debug)]
pub enum LineEdit {
    Delete(Index),
    Duplicate(Index),
    Swap(Index, Index),
    Insert(Index, String),
    Indent(Index, u8),
    Dedent(Index),
    Truncate(Index),
}

pub fn line_edit() -> impl Strategy<Value = LineEdit> {
    let line = prop_oneof![
        4 => prop::sample::select(YAML_LINES).prop_map(str::to_owned),
        1 => "\\PC{0,24}",
    ];
    prop_oneof![
        1 => any::<Index>().prop_map(LineEdit::Delete),
        1 => any::<Index>().prop_map(LineEdit::Duplicate),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| LineEdit::Swap(a, b)),
        2 => (any::<Index>(), line).prop_map(|(at, l)| LineEdit::Insert(at, l)),
        1 => (any::<Index>(), 1..5u8).prop_map(|(at, n)| LineEdit::Indent(at, n)),
        1 => any::<Index>().prop_map(LineEdit::Dedent),
        1 => any::<Index>().prop_map(LineEdit::Truncate),
    ]
}

pub fn apply_lines(text: &str, edits: &[LineEdit]) -> String {
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    for edit in edits {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let len = lines.len();
        match edit {
            LineEdit::Delete(at) => {
                lines.remove(at.index(len));
            }
            LineEdit::Duplicate(at) => {
                let line = lines[at.index(len)].clone();
                lines.insert(at.index(len), line);
            }
            LineEdit::Swap(a, b) => lines.swap(a.index(len), b.index(len)),
            LineEdit::Insert(at, line) => lines.insert(at.index(len + 1), format!("{line}\n")),
            LineEdit::Indent(at, n) => {
                let at = at.index(len);
                lines[at] = format!("{}{}", " ".repeat(usize::from(*n)), lines[at]);
            }
            LineEdit::Dedent(at) => {
                let at = at.index(len);
                lines[at] = lines[at].trim_start().to_owned();
            }
            LineEdit::Truncate(at) => {
                let at = at.index(len);
                let line = &lines[at];
                let cut = line
                    .char_indices()
                    .map(|(i, _)| i)
                    .nth(line.chars().count() / 2)
                    .unwrap_or(0);
                lines[at] = line[..cut].to_owned();
            }
        }
    }
    lines.concat()
}

/// Text made of YAML-ish tokens, to get past the first byte more often than random text does.
pub fn yaml_soup() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        prop::sample::select(YAML_LINES).prop_map(|l| format!("{l}\n")),
        prop::sample::select(
            &[
                "\n",
                " ",
                "  ",
                "- ",
                ": ",
                "{",
                "}",
                "[",
                "]",
                ",",
                "&a ",
                "*a",
                "!!str ",
                "~",
                "null",
                "true",
                "off",
                "0x1F",
                ".inf",
                "1e9",
                "#",
                "'",
                "\"",
                "\\",
                "|\n",
                ">\n",
                "rules",
                "sts-service-name",
                "deny",
                "warn",
                "apiVersion",
                "kind",
                "Service",
                "StatefulSet",
                "spec",
                "metadata",
                "name",
            ][..]
        )
        .prop_map(str::to_owned),
    ];
    prop::collection::vec(token, 0..48).prop_map(|t| t.concat())
}

/// JSON-ish byte soup: the envelope's keys and values, brackets and separators.
pub fn json_soup() -> impl Strategy<Value = Vec<u8>> {
    let token = prop::sample::select(
        &[
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"apiVersion\"",
            "\"admission.k8s.io/v1\"",
            "\"kind\"",
            "\"AdmissionReview\"",
            "\"request\"",
            "\"uid\"",
            "\"u\"",
            "\"operation\"",
            "\"CREATE\"",
            "\"DELETE\"",
            "\"group\"",
            "\"apps\"",
            "\"\"",
            "\"version\"",
            "\"v1\"",
            "\"StatefulSet\"",
            "\"Service\"",
            "\"object\"",
            "\"oldObject\"",
            "\"subResource\"",
            "\"spec\"",
            "\"metadata\"",
            "null",
            "true",
            "0",
            "-1",
            "1e400",
            "\"\\u0000\"",
            "\"\\ud800\"",
            " ",
        ][..],
    );
    prop::collection::vec(token, 0..64).prop_map(|t| t.concat().into_bytes())
}
