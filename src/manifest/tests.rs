//! The manifest reader's unit tests, apart from `manifest.rs` to keep it readable.

use super::*;

fn parse(text: &str) -> Loaded {
    let mut loaded = Loaded::default();
    parse_into(&mut loaded, "x.yaml", text, false);
    loaded
}

#[test]
fn leading_zero_numbers_are_octal_as_kubectl_reads_them() {
    let loaded = parse("kind: A\nmode: 0644\nother: 0755\nplain: 644\nzero: 0\n");
    let value = &loaded.documents[0].value;
    assert_eq!(value["mode"], 420);
    assert_eq!(value["other"], 493);
    assert_eq!(value["plain"], 644);
    assert_eq!(value["zero"], 0);
}

#[test]
fn documents_keep_their_file_line() {
    let loaded = parse("# header\n---\n\n# comment\nkind: A\n---\nkind: B\n...\n---\n# empty\n");
    let found: Vec<_> = loaded
        .documents
        .iter()
        .map(|d| (d.value["kind"].as_str().unwrap(), d.source.line))
        .collect();
    assert_eq!(found, [("A", 5), ("B", 7)]);
    assert!(loaded.errors.is_empty());
    assert_eq!(loaded.documents[1].text, "kind: B\n");
}

#[test]
fn a_bad_document_is_located_and_does_not_hide_the_others() {
    let loaded = parse("kind: A\n---\nkind: B\n  bad: 1\n---\nkind: C\n");
    assert_eq!(loaded.documents.len(), 2);
    assert_eq!(loaded.errors.len(), 1);
    let e = &loaded.errors[0];
    assert_eq!((e.line, e.column), (Some(4), Some(6)));
    assert!(
        e.to_string()
            .starts_with("x.yaml:4:6: invalid YAML: mapping values"),
        "{e}"
    );
}

#[test]
fn lists_are_flattened_and_json_is_read() {
    let mut loaded = Loaded::default();
    parse_into(
        &mut loaded,
        "l.json",
        r#"{"apiVersion":"v1","kind":"List","items":[{"kind":"Service"},{"kind":"StatefulSet"}]}"#,
        true,
    );
    let kinds: Vec<_> = loaded
        .documents
        .iter()
        .map(|d| d.value["kind"].clone())
        .collect();
    assert_eq!(kinds, ["Service", "StatefulSet"]);
    parse_into(&mut loaded, "bad.json", "{\n  \"kind\": ,\n}", true);
    let e = loaded.errors[0].to_string();
    assert!(e.starts_with("bad.json:2:11: invalid JSON"), "{e}");
}

#[test]
fn an_unclosed_bracket_is_reported_at_its_own_line() {
    let loaded = parse("kind: A\nitems: [1, 2\nb: 3\nc: 4\n");
    let error = &loaded.errors[0];
    assert_eq!((error.line, error.column), (Some(2), Some(8)), "{error}");
    assert!(
        error.message.contains("this '[' is never closed"),
        "{error}"
    );
    // Brackets in quotes and comments do not count.
    let fine = parse("a: \"[x\"  # [\nb: [1]\nc: {d: 1}\n");
    assert!(fine.errors.is_empty(), "{:?}", fine.errors);
}

#[test]
fn an_unrendered_helm_template_is_one_error_that_says_so() {
    let loaded = parse(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: {{ .Release.Name }}\n  \
             labels: {{- include \"x\" . | nindent 4 }}\nspec:\n  replicas: {{ .Values.n }}\n",
    );
    assert_eq!(loaded.errors.len(), 1, "{:?}", loaded.errors);
    assert!(
        loaded.errors[0]
            .message
            .contains("unrendered Helm template"),
        "{}",
        loaded.errors[0]
    );
}

#[test]
fn document_markers_with_content() {
    let chunks = split_documents("--- # first\na: 1\n--- {b: 2}\n");
    let texts: Vec<_> = chunks.iter().map(|c| c.text).collect();
    assert_eq!(texts, ["", "a: 1\n", "{b: 2}\n"]);
}

#[test]
fn directories_are_searched_for_manifests_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::fs::write(dir.path().join("b.yml"), "kind: B\n").unwrap();
    std::fs::write(dir.path().join("sub/a.json"), "{\"kind\": \"A\"}").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "kind: X\n").unwrap();
    std::fs::write(dir.path().join("c.yaml"), [0xff, 0xfe]).unwrap();
    let loaded = load(&[dir.path().to_owned()], &mut std::io::empty());
    let kinds: Vec<_> = loaded
        .documents
        .iter()
        .map(|d| d.value["kind"].clone())
        .collect();
    assert_eq!(kinds, ["B", "A"]);
    assert!(
        loaded.errors[0].message.contains("not UTF-8"),
        "{:?}",
        loaded.errors
    );
    let missing = load(&[dir.path().join("nope.yaml")], &mut std::io::empty());
    assert!(missing.errors[0].message.starts_with("cannot read"));
}
