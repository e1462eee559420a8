//! Properties of the policy and manifest readers: policy text (arbitrary, and
//! `policies/default.yaml` mutated) loads or names its origin, manifests (arbitrary, and the
//! corpus mutated) are read and audited; and hostile YAML and JSON by hand (alias bombs, deep
//! nesting, self-references, thousands of documents) is refused in time or read.
//!
//! The checks themselves are `fuzz/src/lib.rs`, the same code the cargo-fuzz targets run. Each
//! case runs on its own thread with the webhook's 2 MiB stack and a deadline, so a hang fails the
//! case instead of the whole run. Failures print the shrunk input; nothing is written to disk.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz_checks;
mod support;

use std::sync::OnceLock;

use fuzz_checks::{check_manifest, check_policy};
use proptest::{prelude::*, sample::Index};
use serde_json::{Value, json};
use stsguard::{
    manifest::{Loaded, parse_into},
    policy::DEFAULT_POLICY,
};
use support::{
    json_mutations::{apply, edit},
    properties::{config, corpus, within},
    text_mutations::{apply_lines, line_edit, yaml_soup},
};

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
