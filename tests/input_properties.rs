//! Properties of every parser of untrusted input, over generated inputs: AdmissionReview bodies
//! (arbitrary bytes, and captured reviews mutated byte by byte and structurally), policy text
//! (arbitrary, and `policies/default.yaml` mutated), and manifests (arbitrary, and the corpus
//! mutated). Nothing panics, nothing hangs, and every answer has the shape the API server and
//! the CLI's users rely on.
//!
//! The checks themselves are `fuzz/src/lib.rs`, the same code the cargo-fuzz targets run, so
//! what the fuzzer finds and what this file asserts cannot drift apart. Each case runs on its
//! own thread with the webhook's 2 MiB stack and a deadline, so a hang fails the case instead of
//! the whole run. Failures print the shrunk input; nothing is written to disk.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz_checks;

use std::{
    path::{Path, PathBuf},
    sync::{OnceLock, mpsc},
    thread,
    time::Duration,
};

use fuzz_checks::{Reviewed, check_manifest, check_policy, check_review, reviewers};
use proptest::{prelude::*, sample::Index, test_runner::Config};
use serde_json::{Value, json};
use stsguard::{
    manifest::{Loaded, parse_into},
    policy::DEFAULT_POLICY,
    review::Endpoint,
};

/// Longest any one case may take (debug build, busy machine) before it counts as a hang.
const DEADLINE: Duration = Duration::from_secs(20);

/// The stack of a tokio worker or blocking thread, where the server parses reviews.
const SERVER_STACK: usize = 2 * 1024 * 1024;

/// Runs `f` on a fresh thread with the server's stack size; panics (with the thread's panic)
/// if it panics, and fails if it has not returned within [`DEADLINE`].
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    let worker = thread::Builder::new()
        .name(what.to_owned())
        .stack_size(SERVER_STACK)
        .spawn(move || {
            let _ = done.send(f());
        })
        .unwrap();
    match result.recv_timeout(DEADLINE) {
        Ok(value) => {
            worker.join().unwrap();
            value
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker returned without a result"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no result within {DEADLINE:?}"),
    }
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The captured reviews, as bytes and as JSON, in name order.
fn fixtures() -> &'static [(String, Vec<u8>, Value)] {
    static FIXTURES: OnceLock<Vec<(String, Vec<u8>, Value)>> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(repo("tests/fixtures/admission"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        paths.sort();
        assert!(paths.len() >= 19, "{paths:?}");
        paths
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                let value = serde_json::from_slice(&bytes).unwrap();
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                (name, bytes, value)
            })
            .collect()
    })
}

fn endpoint_of(name: &str) -> Endpoint {
    if name.starts_with("mutate-") {
        Endpoint::Mutate
    } else {
        Endpoint::Validate
    }
}

/// The manifest corpus, as (path, text).
fn corpus() -> &'static [(String, String)] {
    static CORPUS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let files = stsguard::manifest::manifest_files(&repo("tests/fixtures/corpus"), &[])
            .unwrap()
            .files;
        assert!(files.len() >= 40, "{files:?}");
        files
            .into_iter()
            .map(|p| {
                (
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// Generated JSON and structural mutations

/// Strings the rules, the exemption parser and the envelope give meaning to.
const INTERESTING: &[&str] = &[
    "",
    " ",
    "None",
    "web",
    "cache",
    "data",
    "www",
    "cap",
    "Retain",
    "Delete",
    "OnDelete",
    "RollingUpdate",
    "Parallel",
    "OrderedReady",
    "ClusterIP",
    "ExternalName",
    "LoadBalancer",
    "apps/v1",
    "apps/v1beta1",
    "v1",
    "admission.k8s.io/v1",
    "AdmissionReview",
    "StatefulSet",
    "Service",
    "CREATE",
    "UPDATE",
    "DELETE",
    "CONNECT",
    "scale",
    "*",
    "sts-service-name",
    "sts-readiness-probe, *",
    "sts-inject-volume-claim-templates",
    "svc-make-headless",
    "x,,y, ,",
    "2000-01-01",
    "2999-12-31",
    "2026-02-30",
    "1Gi",
    "0",
    "-1",
    "1e3",
    "ReadWriteOnce",
    "Filesystem",
    "app",
    "stsguard.io/exempt",
    "stsguard.io/exempt-until",
    "stsguard.io/mutated",
    "helm.sh/chart",
    "a/b~c",
    "~1",
    "é\u{0}\u{2028}😀",
];

/// Keys the objects and the envelope have, so that generated objects land on real fields.
const KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "name",
    "generateName",
    "namespace",
    "annotations",
    "labels",
    "spec",
    "serviceName",
    "replicas",
    "selector",
    "matchLabels",
    "matchExpressions",
    "key",
    "operator",
    "values",
    "template",
    "containers",
    "initContainers",
    "volumes",
    "volumeMounts",
    "readinessProbe",
    "tcpSocket",
    "port",
    "terminationGracePeriodSeconds",
    "affinity",
    "podAntiAffinity",
    "topologySpreadConstraints",
    "volumeClaimTemplates",
    "accessModes",
    "resources",
    "requests",
    "storage",
    "updateStrategy",
    "type",
    "rollingUpdate",
    "partition",
    "podManagementPolicy",
    "persistentVolumeClaimRetentionPolicy",
    "whenDeleted",
    "whenScaled",
    "clusterIP",
    "publishNotReadyAddresses",
    "ports",
    "stsguard.io/exempt",
    "stsguard.io/exempt-reason",
    "stsguard.io/exempt-until",
    "stsguard.io/mutated",
    "uid",
    "object",
    "oldObject",
    "operation",
    "subResource",
    "dryRun",
    "request",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(str::to_owned),
        1 => "\\PC{0,8}",
    ]
}

/// Numbers at the edges of the fields' types (i32 replicas and partitions, i64 seconds).
const NUMBERS: &[i64] = &[0, 1, 2, 3, -1, 30, 2_147_483_647, 2_147_483_648, i64::MIN];

fn json_value() -> impl Strategy<Value = Value> {
    let finite = |f: f64| serde_json::Number::from_f64(f).map(Value::Number);
    let leaf = prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
        1 => prop::sample::select(NUMBERS).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter_map("finite", finite),
        3 => prop::sample::select(INTERESTING).prop_map(Value::from),
        1 => "\\PC{0,16}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..4)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// One structural change at a node chosen by `at`.
#[derive(Clone, Debug)]
enum Edit {
    /// A change that keeps the node's JSON type, so the object still reads and the rules and
    /// mutators see it: another interesting string or number, a flipped bool, an element or
    /// key removed.
    Tweak(Index, Index),
    Replace(Index, Value),
    Delete(Index),
    Retype(Index),
    Duplicate(Index),
    Insert(Index, String, Value),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<Index>(), any::<Index>()).prop_map(|(at, pick)| Edit::Tweak(at, pick)),
        2 => (any::<Index>(), json_value()).prop_map(|(at, v)| Edit::Replace(at, v)),
        1 => any::<Index>().prop_map(Edit::Delete),
        2 => any::<Index>().prop_map(Edit::Retype),
        1 => any::<Index>().prop_map(Edit::Duplicate),
        1 => (any::<Index>(), key(), json_value()).prop_map(|(at, k, v)| Edit::Insert(at, k, v)),
    ]
}

/// Every JSON pointer at or below `under` (which must exist).
fn pointers(root: &Value, under: &str) -> Vec<String> {
    fn walk(value: &Value, at: String, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    walk(
                        v,
                        format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                        out,
                    );
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        out.push(at);
    }
    let mut out = Vec::new();
    if let Some(start) = root.pointer(under) {
        walk(start, under.to_owned(), &mut out);
    }
    out
}

fn tweak(node: &mut Value, pick: &Index) {
    match node {
        Value::Null => *node = Value::Object(serde_json::Map::new()),
        Value::Bool(b) => *b = !*b,
        Value::Number(_) => *node = Value::from(*pick.get(NUMBERS)),
        Value::String(s) => *s = (*pick.get(INTERESTING)).to_owned(),
        Value::Array(items) if !items.is_empty() => {
            items.remove(pick.index(items.len()));
        }
        Value::Object(map) if !map.is_empty() => {
            let key = map.keys().nth(pick.index(map.len())).unwrap().clone();
            map.shift_remove(&key);
        }
        Value::Array(_) | Value::Object(_) => {}
    }
}

fn retype(value: &Value) -> Value {
    match value {
        Value::Null => json!({}),
        Value::Bool(b) => json!(b.to_string()),
        Value::Number(n) => json!(n.to_string()),
        Value::String(s) => s
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| json!([s])),
        Value::Array(items) => Value::Object(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v.clone()))
                .collect(),
        ),
        Value::Object(map) => Value::Array(map.values().cloned().collect()),
    }
}

/// Parts of an object the rules and mutators read.
const SUBTREES: &[&str] = &[
    "",
    "/metadata",
    "/metadata/annotations",
    "/spec",
    "/spec/selector",
    "/spec/template/metadata",
    "/spec/template/spec",
    "/spec/template/spec/containers",
    "/spec/volumeClaimTemplates",
    "/spec/updateStrategy",
    "/spec/persistentVolumeClaimRetentionPolicy",
];

/// Applies edits to nodes at or below `under`.
fn apply(root: &mut Value, under: &str, edits: &[Edit]) {
    for edit in edits {
        let paths = pointers(root, under);
        if paths.is_empty() {
            return;
        }
        let (Edit::Tweak(at, _)
        | Edit::Replace(at, _)
        | Edit::Delete(at)
        | Edit::Retype(at)
        | Edit::Duplicate(at)
        | Edit::Insert(at, _, _)) = edit;
        let path = at.get(&paths).clone();
        match edit {
            Edit::Tweak(_, pick) => tweak(root.pointer_mut(&path).unwrap(), pick),
            Edit::Replace(_, value) => *root.pointer_mut(&path).unwrap() = value.clone(),
            Edit::Retype(_) => {
                let node = root.pointer_mut(&path).unwrap();
                *node = retype(node);
            }
            Edit::Delete(_) => {
                let Some((parent, last)) = path.rsplit_once('/') else {
                    continue;
                };
                if path == under {
                    *root.pointer_mut(&path).unwrap() = Value::Null;
                    continue;
                }
                let last = last.replace("~1", "/").replace("~0", "~");
                match root.pointer_mut(parent).unwrap() {
                    Value::Object(map) => {
                        map.shift_remove(&last);
                    }
                    Value::Array(items) => {
                        items.remove(last.parse::<usize>().unwrap());
                    }
                    _ => unreachable!(),
                }
            }
            Edit::Duplicate(_) => match root.pointer_mut(&path).unwrap() {
                Value::Array(items) if !items.is_empty() => {
                    let first = items[0].clone();
                    items.push(first);
                }
                Value::Object(map) => {
                    if let Some((k, v)) = map.iter().next().map(|(k, v)| (k.clone(), v.clone())) {
                        map.insert(format!("{k}-2"), v);
                    }
                }
                other => *other = json!([other.clone(), other.clone()]),
            },
            Edit::Insert(_, k, v) => match root.pointer_mut(&path).unwrap() {
                Value::Object(map) => {
                    map.insert(k.clone(), v.clone());
                }
                Value::Array(items) => items.push(v.clone()),
                _ => {}
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Byte and text mutations

#[derive(Clone, Debug)]
enum ByteEdit {
    Truncate(Index),
    Delete(Index, u8),
    Overwrite(Index, u8),
    Insert(Index, Vec<u8>),
    Repeat(Index, u8, u8),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
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

fn apply_bytes(bytes: &mut Vec<u8>, edits: &[ByteEdit]) {
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
const YAML_LINES: &[&str] = &[
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
enum LineEdit {
    Delete(Index),
    Duplicate(Index),
    Swap(Index, Index),
    Insert(Index, String),
    Indent(Index, u8),
    Dedent(Index),
    Truncate(Index),
}

fn line_edit() -> impl Strategy<Value = LineEdit> {
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

fn apply_lines(text: &str, edits: &[LineEdit]) -> String {
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
fn yaml_soup() -> impl Strategy<Value = String> {
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
fn json_soup() -> impl Strategy<Value = Vec<u8>> {
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

// ---------------------------------------------------------------------------------------------
// Reviews

/// Runs a body through every reviewer and both endpoints; returns what each made of it.
fn review_all(body: Vec<u8>) -> Vec<Reviewed> {
    within("review", move || {
        let mut out = Vec::new();
        for reviewer in reviewers() {
            for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
                out.push(check_review(reviewer, endpoint, &body));
            }
        }
        out
    })
}

proptest! {
    #![proptest_config(config(256))]

    /// Arbitrary bytes, JSON-ish token soup, and captured reviews with bytes cut, changed,
    /// inserted and repeated: refused with a message (HTTP 400) or answered with a well-formed
    /// AdmissionReview carrying the request's uid; never a panic or a hang.
    #[test]
    fn arbitrary_bytes_are_refused_or_answered(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            json_soup(),
            (any::<Index>(), prop::collection::vec(byte_edit(), 1..6)).prop_map(|(pick, edits)| {
                let mut bytes = pick.get(fixtures()).1.clone();
                apply_bytes(&mut bytes, &edits);
                bytes
            }),
        ]
    ) {
        review_all(body);
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// Captured reviews with random structural edits anywhere (values replaced by arbitrary
    /// JSON, keys deleted or added, types changed): whatever is answered carries the uid the
    /// request carried.
    #[test]
    fn structurally_mutated_reviews_keep_their_uid(
        pick in any::<Index>(),
        edits in prop::collection::vec(edit(), 1..5),
    ) {
        let mut review = pick.get(fixtures()).2.clone();
        apply(&mut review, "", &edits);
        let body = serde_json::to_vec(&review).unwrap();
        let uid = review["request"]["uid"].as_str().map(str::to_owned);
        for reviewed in review_all(body) {
            if let Reviewed::Answered(answer) = reviewed {
                prop_assert_eq!(answer["response"]["uid"].as_str(), uid.as_deref());
            }
        }
    }

    /// Edits confined to the object and old object leave the envelope intact, so the review is
    /// never refused as a whole: it is answered, with its uid, and an object that does not read
    /// as its kind is a 400 inside the AdmissionReview that says so.
    #[test]
    fn broken_objects_are_answered_never_refused(
        pick in any::<Index>(),
        edits in prop::collection::vec(edit(), 1..5),
        old in any::<bool>(),
        subtree in prop::sample::select(SUBTREES),
    ) {
        let (name, _, original) = pick.get(fixtures());
        let mut review = original.clone();
        let object = if old { "/request/oldObject" } else { "/request/object" };
        // Aim at what the rules and mutators read (managedFields would otherwise take most of
        // the edits); fall back to the whole object where the fixture lacks the subtree.
        let under = format!("{object}{subtree}");
        let under = if review.pointer(&under).is_some() { under } else { object.to_owned() };
        apply(&mut review, &under, &edits);
        let uid = original["request"]["uid"].as_str().unwrap().to_owned();
        let body = serde_json::to_vec(&review).unwrap();
        for reviewed in review_all(body) {
            let answer = match reviewed {
                Reviewed::Answered(answer) => answer,
                Reviewed::Refused(e) => {
                    return Err(TestCaseError::fail(format!("{name}: refused: {e}")));
                }
            };
            let response = &answer["response"];
            prop_assert_eq!(response["uid"].as_str(), Some(uid.as_str()));
            if response["status"]["code"] == 400 {
                let message = response["status"]["message"].as_str().unwrap();
                prop_assert!(
                    message.starts_with("cannot read the review as a ")
                        || message == "request.object is missing",
                    "{}: {}", name, message
                );
            }
        }
    }
}

/// What `object_read` makes of an object, against k8s-openapi's own `Deserialize` with
/// `managedFields` taken out afterwards: both read it or both refuse it, and what they read is
/// equal.
fn lean_agrees<K>(object: &Value) -> Result<(), TestCaseError>
where
    K: stsguard::object_read::ReadLean
        + serde::de::DeserializeOwned
        + PartialEq
        + std::fmt::Debug
        + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
{
    let lean = stsguard::object_read::from_json::<K>(&object.to_string());
    let theirs = serde_json::from_value::<K>(object.clone()).map(|mut k| {
        k.metadata_mut().managed_fields = None;
        k
    });
    match (lean, theirs) {
        (Ok(lean), Ok(theirs)) => prop_assert_eq!(lean, theirs),
        (Err(_), Err(_)) => {}
        (lean, theirs) => {
            return Err(TestCaseError::fail(format!(
                "lean read {lean:?} but k8s-openapi read {theirs:?}"
            )));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(512))]

    /// The objects of the captured reviews with random structural edits outside
    /// `managedFields` (which the lean reader does not read at all).
    #[test]
    fn the_lean_reader_reads_objects_as_k8s_openapi_does(
        pick in any::<Index>(),
        edits in prop::collection::vec(edit(), 0..5),
        subtree in prop::sample::select(SUBTREES),
    ) {
        let (_, _, review) = pick.get(fixtures());
        let Some(original) = review["request"]["object"].as_object() else {
            return Ok(());
        };
        let mut object = Value::Object(original.clone());
        let under = if object.pointer(subtree).is_some() { subtree } else { "" };
        apply(&mut object, under, &edits);
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.shift_remove("managedFields");
        }
        match review["request"]["kind"]["kind"].as_str() {
            Some("StatefulSet") => lean_agrees::<k8s_openapi::api::apps::v1::StatefulSet>(&object)?,
            Some("Service") => lean_agrees::<k8s_openapi::api::core::v1::Service>(&object)?,
            // Scale reviews: the webhook does not read their object.
            _ => {}
        }
    }
}

/// What to take out of a StatefulSet before mutating it, and mounts to add.
#[derive(Clone, Debug)]
struct Strip {
    templates: bool,
    access_modes: bool,
    storage: bool,
    /// 0: keep; 1: remove the retention policy; 2, 3: remove whenDeleted, whenScaled.
    retention: u8,
    mounts: Vec<String>,
}

fn strip() -> impl Strategy<Value = Strip> {
    let mount = prop_oneof![
        prop::sample::select(INTERESTING).prop_map(str::to_owned),
        "[a-z]{1,8}",
    ];
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        0..4u8,
        prop::collection::vec(mount, 0..4),
    )
        .prop_map(
            |(templates, access_modes, storage, retention, mounts)| Strip {
                templates,
                access_modes,
                storage,
                retention,
                mounts,
            },
        )
}

fn strip_object(object: &mut Value, strip: &Strip) {
    let spec = &mut object["spec"];
    if strip.templates {
        spec.as_object_mut()
            .unwrap()
            .shift_remove("volumeClaimTemplates");
    }
    if let Some(templates) = spec["volumeClaimTemplates"].as_array_mut() {
        for template in templates {
            let Some(tspec) = template["spec"].as_object_mut() else {
                continue;
            };
            if strip.access_modes {
                tspec.shift_remove("accessModes");
            }
            if strip.storage {
                tspec.shift_remove("resources");
            }
        }
    }
    let policy = "persistentVolumeClaimRetentionPolicy";
    match strip.retention {
        1 => {
            spec.as_object_mut().unwrap().shift_remove(policy);
        }
        2 | 3 => {
            let half = if strip.retention == 2 {
                "whenDeleted"
            } else {
                "whenScaled"
            };
            if let Some(p) = spec[policy].as_object_mut() {
                p.shift_remove(half);
            }
        }
        _ => {}
    }
    let container = &mut spec["template"]["spec"]["containers"][0];
    if container.is_object() {
        for name in &strip.mounts {
            let mounts = &mut container["volumeMounts"];
            if !mounts.is_array() {
                *mounts = json!([]);
            }
            mounts
                .as_array_mut()
                .unwrap()
                .push(json!({"name": name, "mountPath": format!("/m/{}", name.len())}));
        }
    }
}

/// What the enabled mutators guarantee about a StatefulSet they were given on CREATE: every
/// mount resolves and every template can be bound. (The retention policy is the API server's to
/// default, before any webhook.)
fn assert_mutated_postconditions(object: &Value, create: bool) -> Result<(), TestCaseError> {
    let spec = &object["spec"];
    let pod = &spec["template"]["spec"];
    let empty = Vec::new();
    let templates = spec["volumeClaimTemplates"].as_array().unwrap_or(&empty);
    if !create {
        return Ok(());
    }
    let mut known: Vec<&str> = templates
        .iter()
        .filter_map(|t| t["metadata"]["name"].as_str())
        .collect();
    known.extend(
        pod["volumes"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter_map(|v| v["name"].as_str()),
    );
    for group in ["initContainers", "containers"] {
        for container in pod[group].as_array().unwrap_or(&empty) {
            for mount in container["volumeMounts"].as_array().unwrap_or(&empty) {
                let name = mount["name"].as_str().unwrap_or_default();
                prop_assert!(
                    known.contains(&name),
                    "mount {:?} unresolved: {}",
                    name,
                    spec
                );
            }
        }
    }
    for template in templates {
        let t = &template["spec"];
        prop_assert!(
            t["accessModes"].as_array().is_some_and(|m| !m.is_empty()),
            "{}",
            template
        );
        prop_assert!(
            t["resources"]["requests"]["storage"].is_string(),
            "{}",
            template
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    /// StatefulSets with templates, access modes, storage requests or retention taken out and
    /// mounts added: /mutate answers with a patch that applies, leaves nothing for a second
    /// pass (both checked for every answer), and leaves the object as the mutators promise.
    #[test]
    fn mutation_fills_what_was_taken_out(pick in any::<Index>(), strip in strip()) {
        let writes: Vec<&(String, Vec<u8>, Value)> = fixtures()
            .iter()
            .filter(|(name, _, review)| {
                review["request"]["kind"]["kind"] == "StatefulSet"
                    && review["request"]["subResource"].is_null()
                    && !name.contains("DELETE")
                    && review["request"]["object"]["metadata"]["annotations"]
                        .get("stsguard.io/exempt")
                        .is_none()
            })
            .collect();
        prop_assert!(writes.len() >= 8);
        let (name, _, original) = *pick.get(&writes);
        let create = original["request"]["operation"] == "CREATE";
        let mut review = original.clone();
        strip_object(&mut review["request"]["object"], &strip);
        let object = review["request"]["object"].clone();
        let body = serde_json::to_vec(&review).unwrap();
        let answer = within("mutate", move || {
            check_review(&reviewers()[0], Endpoint::Mutate, &body)
        });
        let Reviewed::Answered(answer) = answer else {
            return Err(TestCaseError::fail(format!("{name}: {answer:?}")));
        };
        prop_assert_eq!(&answer["response"]["allowed"], true);
        let mut patched = object;
        if let Some(encoded) = answer["response"]["patch"].as_str() {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD.decode(encoded).unwrap();
            let patch: json_patch::Patch = serde_json::from_slice(&decoded).unwrap();
            json_patch::patch(&mut patched, &patch).unwrap();
        }
        assert_mutated_postconditions(&patched, create)?;
    }
}

/// The API server always sends metadata, but the webhook must not answer any object it accepts
/// with a patch that cannot be applied to it: with metadata absent or null (which k8s-openapi
/// reads as empty metadata), the annotation that records the mutation needs `/metadata` first.
#[test]
fn a_patch_applies_to_an_object_without_metadata() {
    let (_, _, review) = fixtures()
        .iter()
        .find(|(name, _, _)| name == "mutate-StatefulSet-CREATE-cap-db-1")
        .unwrap();
    for metadata in [None, Some(Value::Null), Some(json!({}))] {
        let mut review = review.clone();
        let object = review["request"]["object"].as_object_mut().unwrap();
        match metadata {
            None => {
                object.shift_remove("metadata");
            }
            Some(value) => {
                object.insert("metadata".into(), value);
            }
        }
        let body = serde_json::to_vec(&review).unwrap();
        // check_review applies the patch to the object and mutates the result again.
        let reviewed = within("no metadata", move || {
            check_review(&reviewers()[0], Endpoint::Mutate, &body)
        });
        let Reviewed::Answered(answer) = reviewed else {
            panic!("{reviewed:?}");
        };
        assert!(answer["response"]["patch"].is_string(), "{answer}");
    }
}

/// The endpoint a captured review was taken from answers it as the fixtures' README says when
/// nothing is changed; the mutation properties above start from answers that are right.
#[test]
fn unmutated_fixtures_are_answered() {
    for (name, bytes, _) in fixtures() {
        let body = bytes.clone();
        let endpoint = endpoint_of(name);
        let reviewed = within(name, move || check_review(&reviewers()[0], endpoint, &body));
        let Reviewed::Answered(answer) = reviewed else {
            panic!("{name}: {reviewed:?}");
        };
        let denied = answer["response"]["allowed"] == false;
        assert_eq!(
            denied,
            name.contains("nosvc-1") && name.starts_with("validate-StatefulSet-CREATE")
                || name.contains("emptysvc-1") && name.contains("CREATE")
                || name.contains("nosvc-dry"),
            "{name}: {answer}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Policies

fn default_policy_value() -> &'static Value {
    static VALUE: OnceLock<Value> = OnceLock::new();
    VALUE.get_or_init(|| serde_saphyr::from_str(DEFAULT_POLICY).unwrap())
}

fn policy_case(text: String) -> Result<(), String> {
    within("policy", move || check_policy(&text))
}

proptest! {
    #![proptest_config(config(256))]

    /// Arbitrary text, YAML-ish token soup, and policies/default.yaml with lines deleted,
    /// duplicated, swapped, inserted, re-indented and cut: loads, or fails with an error that
    /// names the origin; a policy that loads answers the captured reviews.
    #[test]
    fn policy_text_loads_or_names_its_origin(
        text in prop_oneof![
            1 => "\\PC{0,200}",
            1 => any::<String>(),
            1 => yaml_soup(),
            4 => prop::collection::vec(line_edit(), 1..6)
                .prop_map(|edits| apply_lines(DEFAULT_POLICY, &edits)),
        ]
    ) {
        let _ = policy_case(text);
    }

    /// The default policy with structural edits, written back as JSON or YAML.
    #[test]
    fn structurally_mutated_policies_load_or_name_their_origin(
        edits in prop::collection::vec(edit(), 1..5),
        as_json in any::<bool>(),
    ) {
        let mut policy = default_policy_value().clone();
        apply(&mut policy, "", &edits);
        let text = if as_json {
            serde_json::to_string_pretty(&policy).unwrap()
        } else {
            serde_saphyr::to_string(&policy).unwrap()
        };
        let _ = policy_case(text);
    }
}

#[test]
fn the_default_policy_loads_as_yaml_and_as_json() {
    policy_case(DEFAULT_POLICY.to_owned()).unwrap();
    policy_case(serde_json::to_string(default_policy_value()).unwrap()).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Manifests

fn manifest_case(text: String, json: bool) {
    within("manifest", move || {
        check_manifest(&text, json);
    });
}

/// Reads text as one YAML input and returns its documents' values.
fn documents(text: &str) -> (Vec<Value>, usize) {
    let mut loaded = Loaded::default();
    parse_into(&mut loaded, "x.yaml", text, false);
    (
        loaded.documents.into_iter().map(|d| d.value).collect(),
        loaded.errors.len(),
    )
}

proptest! {
    #![proptest_config(config(128))]

    /// Arbitrary text and token soup as YAML and as JSON.
    #[test]
    fn arbitrary_manifests_are_read_and_audited(
        text in prop_oneof!["\\PC{0,300}", any::<String>(), yaml_soup()],
        json in any::<bool>(),
    ) {
        manifest_case(text, json);
    }

    /// Corpus files with lines deleted, duplicated, swapped, inserted, re-indented and cut:
    /// every document is a result, an error or a skipped document; nothing panics or hangs.
    #[test]
    fn mutated_corpus_files_are_read_and_audited(
        pick in any::<Index>(),
        edits in prop::collection::vec(line_edit(), 1..8),
    ) {
        let text = apply_lines(&pick.get(corpus()).1, &edits);
        manifest_case(text, false);
    }

    /// Corpus documents with structural edits, written back as YAML documents: they are read
    /// back as exactly those documents (so `stsguard mutate`'s output round-trips), and audited.
    #[test]
    fn structurally_mutated_corpus_documents_round_trip_and_are_audited(
        pick in any::<Index>(),
        doc in any::<Index>(),
        edits in prop::collection::vec(edit(), 1..5),
    ) {
        let (path, text) = pick.get(corpus());
        let (mut values, errors) = documents(text);
        prop_assert_eq!(errors, 0, "{}", path);
        prop_assume!(!values.is_empty());
        let at = doc.index(values.len());
        let mut root = json!({ "doc": values[at].take() });
        apply(&mut root, "/doc", &edits);
        values[at] = root["doc"].take();
        // A null document or an empty stream reads as nothing, and a List as its items.
        let written: Vec<&Value> = values
            .iter()
            .filter(|v| !v.is_null() && !is_list(v))
            .collect();
        let text: String = written
            .iter()
            .map(|v| {
                let yaml = serde_saphyr::to_string(v).unwrap();
                let end = if yaml.ends_with('\n') { "" } else { "\n" };
                format!("---\n{yaml}{end}")
            })
            .collect();
        let (read, errors) = documents(&text);
        prop_assert_eq!(errors, 0, "{}", text);
        prop_assert_eq!(read.len(), written.len(), "{}", text);
        for (read, written) in read.iter().zip(&written) {
            prop_assert_eq!(read, *written, "{}", text);
        }
        manifest_case(text, false);
        let list = json!({"apiVersion": "v1", "kind": "List", "items": written});
        manifest_case(serde_json::to_string_pretty(&list).unwrap(), true);
    }
}

fn is_list(value: &Value) -> bool {
    value
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k.ends_with("List"))
        && value.get("items").is_some_and(Value::is_array)
}

#[test]
fn the_whole_corpus_is_read_and_audited() {
    for (path, text) in corpus() {
        let report = within(path, {
            let text = text.clone();
            move || check_manifest(&text, false)
        });
        assert!(report.errors.is_empty(), "{path}: {:?}", report.errors);
        assert!(!report.results.is_empty(), "{path}");
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile YAML and JSON, by hand

/// Ten levels of aliases, each doubling: a billion leaves if expanded.
fn billion_laughs() -> String {
    let mut text = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    text
}

#[test]
fn alias_bombs_are_refused_in_time() {
    // `rules` is read as a map of arbitrary values, so aliases there would be expanded.
    let bomb = billion_laughs();
    let nested: String = bomb.lines().map(|l| format!("  {l}\n")).collect();
    let e = policy_case(format!("rules:\n{nested}")).unwrap_err();
    assert!(
        e.starts_with("policy fuzzed-policy.yaml")
            && e.contains(" is not valid: ")
            && e.contains("budget breached"),
        "{e}"
    );
    let manifest = format!("apiVersion: v1\nkind: Service\nmetadata: {{name: x}}\n{bomb}");
    let report = within("manifest bomb", move || check_manifest(&manifest, false));
    assert!(report.results.is_empty());
    assert_eq!(report.errors.len(), 1);
    assert!(
        report.errors[0].message.contains("budget breached"),
        "{:?}",
        report.errors
    );
}

/// Too deep to read: refused for its depth (a recursion limit or the YAML reader's budget).
fn too_deep(message: &str) -> bool {
    message.contains("recursion limit exceeded") || message.contains("budget breached: Depth")
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    const DEPTH: usize = 100_000;
    let flow = "[".repeat(DEPTH);
    let closed = format!("{flow}{}", "]".repeat(DEPTH));
    let maps = format!("{}1{}", "{a: ".repeat(DEPTH), "}".repeat(DEPTH));
    // Block sequences, each entry one space deeper than the last.
    let block = |indent: usize| -> String {
        (0..5_000)
            .map(|i| format!("{}-\n", " ".repeat(indent + i)))
            .collect()
    };
    let policies = [&flow, &closed, &maps]
        .map(|t| format!("rules: {{sts-service-name: {t}}}\n"))
        .into_iter()
        .chain([format!("rules:\n  sts-service-name:\n{}", block(3))]);
    for text in policies {
        let e = policy_case(text).unwrap_err();
        assert!(
            e.starts_with("policy fuzzed-policy.yaml")
                && e.contains(" is not valid: ")
                && too_deep(&e),
            "{e:.300}"
        );
    }
    let object = "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n";
    let manifests = [&flow, &closed, &maps]
        .map(|t| format!("{object}spec: {t}\n"))
        .into_iter()
        .chain([format!("{object}spec:\n{}", block(1))]);
    for text in manifests {
        let report = within("deep manifest", move || check_manifest(&text, false));
        assert!(report.results.is_empty());
        assert_eq!(report.errors.len(), 1);
        assert!(too_deep(&report.errors[0].message), "{:?}", report.errors);
    }
    for text in [flow, closed] {
        let report = within("deep JSON", move || check_manifest(&text, true));
        assert_eq!(report.errors.len(), 1);
        assert!(too_deep(&report.errors[0].message), "{:?}", report.errors);
    }
}

#[test]
fn self_referencing_and_odd_yaml_is_read_or_refused() {
    for text in [
        "a: &a [*a]\n",
        "a: &a {b: *a}\n",
        "<<: *a\n",
        "a: &a {x: 1}\nb: {<<: [*a, *a, *a]}\n",
        "!!binary aGVsbG8=\n",
        "kind: !!binary aGVsbG8=\n",
        "apiVersion: !!int 1\nkind: Service\n",
        "%YAML 1.1\n---\nkind: Service\n",
        "? [a, b]\n: c\n",
        "\u{feff}apiVersion: v1\nkind: Service\nmetadata: {name: x}\n",
        "apiVersion: v1\r\nkind: Service\r\nmetadata: {name: x}\r\n",
        "apiVersion: v1\rkind: Service\rmetadata: {name: x}\r",
        "---\n---\n---\n...\n...\n",
        "--- !!map\n--- !!seq\n--- !!str\n",
        "kind: List\nitems: [1, null, [], {kind: Service, apiVersion: v1}]\n",
        "kind: List\nitems: {}\n",
    ] {
        manifest_case(text.to_owned(), false);
        let _ = policy_case(text.to_owned());
    }
}

#[test]
fn many_documents_are_all_accounted_for() {
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {clusterIP: None}\n";
    let other = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n";
    let broken =
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: b}\nspec: {replicas: x}\n";
    let text: Vec<&str> = (0..3_000)
        .map(|i| [service, other, broken][i % 3])
        .collect();
    let text = text.join("---\n");
    let report = within("3,000 documents", move || check_manifest(&text, false));
    assert_eq!(report.results.len(), 1_000);
    assert_eq!(report.skipped_documents, 1_000);
    assert_eq!(report.errors.len(), 1_000);
    assert_eq!(
        report.notes.len(),
        999,
        "Service default/s is defined 1,000 times"
    );
}
