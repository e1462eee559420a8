//! The fast YAML path's unit tests, apart from `fast_yaml.rs`: its agreement with serde-saphyr over
//! fixtures and the corpus, and its edge cases.

use super::*;
use crate::manifest::yaml::split_documents;
use std::path::{Path, PathBuf};

fn saphyr(text: &str) -> Result<Value, String> {
    serde_saphyr::from_str_with_options::<Value>(text, super::super::yaml_options())
        .map_err(|e| e.to_string())
}

/// The fast path's answer is serde-saphyr's, or no answer. Returns whether it answered.
fn check(text: &str) -> bool {
    match parse(text) {
        None => false,
        Some(fast) => {
            assert_eq!(
                Ok(&fast),
                saphyr(text).as_ref(),
                "fast path differs from serde-saphyr for {text:?}"
            );
            // Same key order too (Value equality ignores it).
            assert_eq!(
                serde_json::to_string(&fast).unwrap(),
                serde_json::to_string(&saphyr(text).unwrap()).unwrap(),
                "key order differs for {text:?}"
            );
            true
        }
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Every document of every YAML fixture (tests/fixtures/corpus is a copy of the shared
/// corpus): the same value as serde-saphyr's, and the fast path taken for most of them.
#[test]
fn fixtures_read_as_serde_saphyr_reads_them() {
    let mut files = Vec::new();
    yaml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"),
        &mut files,
    );
    assert!(files.len() >= 50, "{} YAML fixtures", files.len());
    let (mut documents, mut fast, mut corpus_documents, mut corpus_fast) = (0, 0, 0, 0);
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        let in_corpus = file.components().any(|c| c.as_os_str() == "corpus");
        for chunk in split_documents(&text) {
            // Comment-only and empty chunks are not documents; serde-saphyr decides those.
            if parse(chunk.text).is_none() && matches!(saphyr(chunk.text), Ok(Value::Null)) {
                continue;
            }
            let took = check(chunk.text);
            documents += 1;
            fast += usize::from(took);
            if in_corpus {
                corpus_documents += 1;
                corpus_fast += usize::from(took);
            }
        }
    }
    eprintln!(
        "fast path: {fast} of {documents} fixture documents, {corpus_fast} of \
             {corpus_documents} corpus documents"
    );
    assert!(
        corpus_documents >= 50,
        "{corpus_documents} corpus documents"
    );
    assert!(
        fast * 10 >= documents * 7,
        "fast path for only {fast} of {documents} documents"
    );
    assert!(
        corpus_fast * 10 >= corpus_documents * 7,
        "fast path for only {corpus_fast} of {corpus_documents} corpus documents"
    );
}

const TRICKY_SCALARS: &[&str] = &[
    "yes",
    "no",
    "on",
    "off",
    "y",
    "n",
    "Y",
    "N",
    "Yes",
    "NO",
    "On",
    "OFF",
    "True",
    "true",
    "TRUE",
    "false",
    "False",
    "tRuE",
    "null",
    "Null",
    "NULL",
    "nULL",
    "~",
    "",
    "0",
    "00",
    "1",
    "0644",
    "0o7",
    "0O7",
    "0x1F",
    "0X1F",
    "0b11",
    "1e3",
    "1E3",
    "1_000",
    "+1",
    "-1",
    "-0",
    "+0",
    ".5",
    "5.",
    "1.5",
    ".inf",
    "-.inf",
    "+.INF",
    ".NaN",
    "-.nan",
    "inf",
    "nan",
    "NaN",
    "Infinity",
    "-inf",
    "12:30",
    "12:30:00",
    "2001-12-14",
    "2001-12-14T21:59:43.10-05:00",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551616",
    "123abc",
    "abc",
    "a b",
    "None",
    "<<",
    "=",
    "!",
    "&a",
    "*a",
    "\"quoted\"",
    "'single'",
    "\"0644\"",
    "'true'",
    "\"\"",
    "''",
    "\"a\\nb\"",
    "'it''s'",
    "é",
    "über",
    "Ⅻ",
    "１２",
    "0.0.0.0",
    "10Gi",
    "500m",
    "1Gi",
    "v1",
    "apps/v1",
    "http://x:80/",
    "a: b",
    "[a]",
    "{a: b}",
    "!!str 1",
    "!!int 1",
    "! 1",
    "!foo bar",
    "&a 1",
    "?",
    "50Mi",
    "500m",
    "8.0.13",
    "1.2",
    "1.2.",
    "1..2",
    "1e5x",
    "1e",
    "1E+5",
    "1x",
    "0x",
    "0xZ",
    "0o9",
    "1_0m",
    "2Gi",
    "3k",
    "-c",
    "-ec",
    "+x",
    "-inf",
    "-Infinity",
    "+nan",
    "-",
    "+",
    "-1m",
    "1.0.0-rc1",
    "1:2:3",
    "12:30m",
    "1.5Gi",
    "0.5",
    "0.0.1",
    "1ee5",
    "1e5e5",
    "0b2",
    "9Ti",
    "1.e5",
];

#[test]
fn tricky_scalars_read_as_serde_saphyr_reads_them() {
    for scalar in TRICKY_SCALARS {
        for text in [
            format!("{scalar}\n"),
            format!("k: {scalar}\n"),
            format!("k: [{scalar}]\n"),
            format!("- {scalar}\n"),
            format!("{scalar}: v\n"),
            format!("{{{scalar}: v}}\n"),
            format!("a:\n  b: {scalar}\n  c: d\n"),
        ] {
            check(&text);
        }
    }
    // Some of them must take the fast path, or this test proves nothing.
    assert!(check("k: abc\n") && check("k: 1\n") && check("k: \"0644\"\n"));
    assert!(check("0\n") && check("k: None\n") && check("'true': x\n"));
    assert!(check("k: 500m\n") && check("k: 8.0.13\n") && check("k: -ec\n"));
    assert!(check("k: true\n") && check("k: false\n") && check("k: null\n") && check("k:\n"));
    for declined in [
        "k: yes\n",
        "k: 0644\n",
        "k: 1e3\n",
        "k: NULL\n",
        "k: True\n",
        "k: 1e5x\n",
        "k: -inf\n",
        "k: 1.2\n",
        "1: v\n",
        "true: v\n",
        "null: v\n",
        "k: -1\n",
        "k: .5\n",
        "k: 9223372036854775808\n",
    ] {
        assert_eq!(parse(declined), None, "{declined:?}");
    }
}

#[test]
fn tricky_documents_read_as_serde_saphyr_reads_them() {
    let documents = [
        // Multi-line plain, folded and literal block scalars, with chomping indicators.
        "k: a\n  b\n\n  c\n",
        "k: >\n  folded\n  text\n\n  more\n",
        "k: >-\n  folded\n",
        "k: |\n  literal\n   text\n",
        "k: |+\n  keep\n\n",
        "k: |2-\n    indented\n",
        "k: \"multi\n  line\"\n",
        "k: 'multi\n\n  line'\n",
        // Duplicate keys: serde-saphyr's error.
        "a: 1\na: 2\n",
        "a: 1\n'a': 2\n",
        "m: {x: 1, x: 1}\n",
        // Anchors, aliases, merge keys, tags.
        "a: &x 1\nb: *x\n",
        "base: &b {x: 1}\nc:\n  <<: *b\n  y: 2\n",
        "c:\n  <<: {x: 1}\n",
        "c:\n  '<<': {x: 1}\n",
        "k: !!str 0644\n",
        "k: !!binary aGk=\n",
        "--- !!map\nk: v\n",
        "!!seq [a]\n",
        // Complex keys, several documents, directives, errors, empty documents.
        "? [a]\n: v\n",
        "? {a: b}\n: v\n",
        "a: 1\n---\nb: 2\n",
        "%YAML 1.1\n---\nk: v\n",
        "k: [a, b\n",
        "k: v\n  bad: indent\n",
        "",
        "# only a comment\n",
        "---\n",
        "k: v\n...\n",
        "---\nk: v\n",
        // Order, nesting, flow collections, empty collections.
        "z: 1\na: 2\nm: 3\n",
        "a: {z: [1, {y: x}], a: []}\nb: {}\n",
        "a: {z: [1, {w: x}], a: []}\nb: {}\n",
        "k: true\nl: false\nm: null\nn:\no: [true, null, ]\n",
        "- - - a\n  - b\n- c\n",
        "k: [a, 'b', \"c\", 1, 0, {d: e}]\n",
    ];
    for text in documents {
        check(text);
    }
    assert!(check("z: 1\na: 2\nm: 3\n"));
    assert!(check("k: >\n  folded\n  text\n\n  more\n"));
    assert!(check("a: {z: [1, {w: x}], a: []}\nb: {}\n"));
}

proptest::proptest! {
    /// Short plain scalars built from the characters that decide a resolution: whatever the
    /// fast path answers is serde-saphyr's value.
    #[test]
    fn plain_scalars_read_as_serde_saphyr_reads_them(
        scalar in "[0-9a-zA-Z+._:~ -]{0,8}",
    ) {
        check(&format!("k: {scalar}\n"));
        check(&format!("{scalar}: v\n"));
        check(&format!("- [{scalar}]\n"));
    }
}
