//! The proof behind the chart's UPDATE skip (`update-changes-spec-or-stsguard-annotations` in
//! `charts/stsguard/templates/_helpers.tpl`): the API server does not call the webhooks for an
//! UPDATE whose `spec` and stsguard annotations are unchanged, which is safe only if
//!
//! 1. nothing outside `spec` and those annotations (labels, other annotations, finalizers,
//!    ownerReferences, managedFields, status, generation, resourceVersion, uid, timestamps) in
//!    the object or the old object changes the answer: allowed or not, message, warnings, audit
//!    annotations, patch; and
//! 2. so an UPDATE that changes nothing else is allowed with no patch, which is what skipping
//!    the webhook amounts to: whatever it would be denied for was already in the old object and
//!    is grandfathered.
//!
//! Both go through the webhook's own entry point (`Reviewer::parse` and `answer`, as in
//! `fuzz/src/lib.rs`) under the fuzz targets' three reviewers (built-in policy with and without
//! cluster facts, every rule and mutator on), over every StatefulSet and Service of the manifest
//! corpus and the captured reviews' old objects. The name and namespace are left alone: an UPDATE
//! cannot change them. A third test checks that the annotation keys the chart compares are every
//! annotation the code reads.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz_checks;
mod support;

use std::sync::OnceLock;

use fuzz_checks::{Reviewed, check_review, reviewers};
use proptest::{prelude::*, sample::Index};
use serde_json::{Value, json};
use stsguard::{
    admit::{Classified, classify},
    exemption::{EXEMPT, EXEMPT_REASON, EXEMPT_UNTIL},
    manifest::{Loaded, parse_into},
    mutate::MUTATED,
    review::{Endpoint, admission_review},
    subject::Operation,
};
use support::{
    json_mutations::{apply, edit},
    properties::{config, corpus, fixtures, repo, within},
};

/// The annotations the chart's condition compares, as the code names them.
const STSGUARD_ANNOTATIONS: [&str; 4] = [EXEMPT, EXEMPT_REASON, EXEMPT_UNTIL, MUTATED];

/// Objects to update: every StatefulSet and Service of the corpus that reads as one, in
/// namespace `cap` (where the reviewers' cluster facts are), also renamed `web` and `cache` (a
/// StatefulSet's serviceName too) so that the cross-object rules find those facts; and the old
/// objects of the captured UPDATE reviews, which carry what a stored object carries.
fn seeds() -> &'static [Value] {
    static SEEDS: OnceLock<Vec<Value>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut seeds = Vec::new();
        for (path, text) in corpus() {
            let mut loaded = Loaded::default();
            parse_into(&mut loaded, path, text, path.ends_with(".json"));
            for doc in loaded.documents {
                if !matches!(classify(&doc.value), Classified::Object(_)) {
                    continue;
                }
                let mut object = doc.value;
                if object["metadata"]["name"]
                    .as_str()
                    .is_none_or(str::is_empty)
                {
                    continue;
                }
                object["metadata"]["namespace"] = json!("cap");
                seeds.push(object.clone());
                for name in ["web", "cache"] {
                    let mut renamed = object.clone();
                    renamed["metadata"]["name"] = json!(name);
                    if renamed["kind"] == "StatefulSet" {
                        renamed["spec"]["serviceName"] = json!(name);
                    }
                    seeds.push(renamed);
                }
            }
        }
        for (_, _, review) in fixtures() {
            let old = &review["request"]["oldObject"];
            if review["request"]["operation"] == "UPDATE"
                && matches!(classify(old), Classified::Object(_))
            {
                seeds.push(old.clone());
            }
        }
        assert!(seeds.len() >= 100, "{} seeds", seeds.len());
        seeds
    })
}

/// A change outside `spec` and stsguard's annotations, shaped as the API server would store
/// it (so that the object still reads as its type).
#[derive(Clone, Debug)]
enum Outside {
    Labels(Option<Vec<(String, String)>>),
    /// Sets these annotations (other than stsguard's own), or with `None` removes every other.
    Annotations(Option<Vec<(String, String)>>),
    Finalizers(Vec<String>),
    OwnerReference(String),
    ManagedFields(String),
    Status(i32),
    Generation(i64),
    ResourceVersion(u64),
    Uid(String),
    CreationTimestamp,
    Deleting(i64),
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(&["web", "db", "app", "", "x.io/y", "team-a", "*"][..])
            .prop_map(str::to_owned),
        "[a-z0-9]{1,12}",
    ]
}

/// Annotation keys others write, and stsguard.io keys that stsguard does not read.
fn other_annotation() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "kubectl.kubernetes.io/last-applied-configuration",
                "kubectl.kubernetes.io/restartedAt",
                "argocd.argoproj.io/tracking-id",
                "meta.helm.sh/release-name",
                "stsguard.io/exempt-by",
                "stsguard.io/note",
                "stsguard.io/exemptions",
                "exempt",
            ][..]
        )
        .prop_map(str::to_owned),
        "[a-z]{1,8}(\\.io/[a-z]{1,8})?",
    ]
}

fn outside() -> impl Strategy<Value = Outside> {
    let pairs =
        |key: BoxedStrategy<String>| prop::option::of(prop::collection::vec((key, word()), 0..4));
    prop_oneof![
        pairs(word().boxed()).prop_map(Outside::Labels),
        pairs(other_annotation().boxed()).prop_map(Outside::Annotations),
        prop::collection::vec(word(), 0..3).prop_map(Outside::Finalizers),
        word().prop_map(Outside::OwnerReference),
        word().prop_map(Outside::ManagedFields),
        (0..5i32).prop_map(Outside::Status),
        (0..1_000i64).prop_map(Outside::Generation),
        (1..u64::MAX).prop_map(Outside::ResourceVersion),
        "[a-f0-9-]{1,36}".prop_map(Outside::Uid),
        Just(Outside::CreationTimestamp),
        (0..60i64).prop_map(Outside::Deleting),
    ]
}

fn apply_outside(object: &mut Value, change: &Outside) {
    let statefulset = object["kind"] == "StatefulSet";
    let Some(metadata) = object["metadata"].as_object_mut() else {
        return;
    };
    let map = |pairs: &[(String, String)]| {
        Value::Object(pairs.iter().map(|(k, v)| (k.clone(), json!(v))).collect())
    };
    match change {
        Outside::Labels(Some(pairs)) => {
            metadata.insert("labels".into(), map(pairs));
        }
        Outside::Labels(None) => {
            metadata.shift_remove("labels");
        }
        Outside::Annotations(set) => {
            let own: Vec<(String, Value)> = metadata
                .get("annotations")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter(|(k, _)| STSGUARD_ANNOTATIONS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let mut annotations = match set {
                Some(_) => metadata
                    .get("annotations")
                    .cloned()
                    .unwrap_or_else(|| json!({})),
                None => json!({}),
            };
            for (k, v) in set.iter().flatten() {
                annotations[k] = json!(v);
            }
            for (k, v) in own {
                annotations[&k] = v;
            }
            metadata.insert("annotations".into(), annotations);
        }
        Outside::Finalizers(names) => {
            metadata.insert("finalizers".into(), json!(names));
        }
        Outside::OwnerReference(name) => {
            metadata.insert(
                "ownerReferences".into(),
                json!([{"apiVersion": "example.io/v1", "kind": "Database", "name": name,
                        "uid": "0f1e2d3c", "controller": true}]),
            );
        }
        Outside::ManagedFields(manager) => {
            metadata.insert(
                "managedFields".into(),
                json!([{"manager": manager, "operation": "Update", "apiVersion": "v1",
                        "time": "2026-01-02T03:04:05Z", "fieldsType": "FieldsV1",
                        "fieldsV1": {"f:metadata": {"f:labels": {}}}}]),
            );
        }
        Outside::Generation(n) => {
            metadata.insert("generation".into(), json!(n));
        }
        Outside::ResourceVersion(n) => {
            metadata.insert("resourceVersion".into(), json!(n.to_string()));
        }
        Outside::Uid(uid) => {
            metadata.insert("uid".into(), json!(uid));
        }
        Outside::CreationTimestamp => {
            metadata.insert("creationTimestamp".into(), json!("2026-01-02T03:04:05Z"));
        }
        Outside::Deleting(grace) => {
            metadata.insert("deletionTimestamp".into(), json!("2026-03-04T05:06:07Z"));
            metadata.insert("deletionGracePeriodSeconds".into(), json!(grace));
        }
        Outside::Status(n) => {
            object["status"] = if statefulset {
                json!({"replicas": n, "readyReplicas": n, "observedGeneration": n,
                       "currentRevision": format!("web-{n}"), "collisionCount": 0})
            } else {
                json!({"loadBalancer": {}})
            };
        }
    }
}

/// A stored object carries a resourceVersion; the Service fixes word themselves by it ("replace"
/// a stored Service rather than "apply"), so it is set before the changes, which keep it set.
fn stored(mut object: Value) -> Value {
    if object["metadata"]["resourceVersion"]
        .as_str()
        .is_none_or(str::is_empty)
    {
        object["metadata"]["resourceVersion"] = json!("1");
    }
    object
}

/// The answers of every reviewer and endpoint to the UPDATE of `old` into `object`.
fn answers(old: &Value, object: &Value) -> Vec<Value> {
    let review = admission_review("u-1", Operation::Update, object, Some(old), "cap");
    let body = serde_json::to_vec(&review).unwrap();
    within("update", move || {
        let mut out = Vec::new();
        for reviewer in reviewers() {
            for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
                match check_review(reviewer, endpoint, &body) {
                    Reviewed::Answered(answer) => out.push(answer["response"].clone()),
                    Reviewed::Refused(message) => panic!("refused: {message}"),
                }
            }
        }
        out
    })
}

fn changed(seed: &Value, changes: &[Outside]) -> Value {
    let mut object = seed.clone();
    for change in changes {
        apply_outside(&mut object, change);
    }
    object
}

proptest! {
    #![proptest_config(config(128))]

    /// Property 1: an UPDATE (with or without a change to the spec) gets the same answer,
    /// warnings and patch whatever changes outside spec and stsguard's annotations, in the
    /// object, the old object or both.
    #[test]
    fn nothing_outside_spec_and_stsguard_annotations_changes_the_answer(
        pick in any::<Index>(),
        spec_edits in prop::collection::vec(edit(), 0..3),
        on_old in prop::collection::vec(outside(), 0..4),
        on_new in prop::collection::vec(outside(), 0..4),
    ) {
        let old = stored(pick.get(seeds()).clone());
        let mut object = old.clone();
        apply(&mut object, "/spec", &spec_edits);
        prop_assume!(matches!(classify(&object), Classified::Object(_)));
        let before = answers(&old, &object);
        let after = answers(&changed(&old, &on_old), &changed(&object, &on_new));
        prop_assert_eq!(before, after);
    }

    /// Property 2: an UPDATE that leaves spec and stsguard's annotations as they were is allowed
    /// with no patch by every reviewer, whatever the object is denied for on CREATE.
    #[test]
    fn an_update_of_nothing_but_the_rest_is_allowed_unpatched(
        pick in any::<Index>(),
        on_old in prop::collection::vec(outside(), 0..4),
        on_new in prop::collection::vec(outside(), 0..4),
    ) {
        let seed = pick.get(seeds());
        let old = changed(seed, &on_old);
        let object = changed(seed, &on_new);
        for response in answers(&old, &object) {
            prop_assert_eq!(&response["allowed"], &json!(true), "{}", response);
            prop_assert!(response.get("patch").is_none(), "{}", response);
        }
    }
}

/// The seeds include objects that the built-in policy denies on CREATE, so property 2 is not
/// vacuous: their UPDATE is allowed only because every violation was already there.
#[test]
fn some_seeds_are_denied_when_created() {
    let denied = seeds()
        .iter()
        .filter(|seed| {
            let review = admission_review("u-1", Operation::Create, seed, None, "cap");
            let body = serde_json::to_vec(&review).unwrap();
            within("create", move || {
                reviewers().iter().any(|reviewer| {
                    matches!(check_review(reviewer, Endpoint::Validate, &body),
                             Reviewed::Answered(a) if a["response"]["allowed"] == json!(false))
                })
            })
        })
        .count();
    assert!(denied >= 10, "only {denied} seeds are denied on CREATE");
}

/// An object sent without a resourceVersion (an unconditional PUT) gets the same verdict; only
/// the wording of a Service fix ("apply" rather than "delete and re-create") tells it from a
/// stored one. So property 1 keeps a resourceVersion on both sides, and the verdict, which is
/// all the skip relies on, is checked here without one.
#[test]
fn a_missing_resource_version_changes_no_verdict() {
    for seed in seeds() {
        let old = stored(seed.clone());
        let mut object = old.clone();
        object["metadata"]
            .as_object_mut()
            .unwrap()
            .shift_remove("resourceVersion");
        let verdicts = |answers: Vec<Value>| -> Vec<(Value, Value)> {
            answers
                .into_iter()
                .map(|r| (r["allowed"].clone(), r["status"]["code"].clone()))
                .collect()
        };
        assert_eq!(
            verdicts(answers(&old, &old)),
            verdicts(answers(&old, &object)),
            "{}",
            seed["metadata"]["name"]
        );
    }
}

/// The chart's condition compares exactly the annotations the code reads: every
/// `.annotation(KEY)` in `src/` names one of them, and the chart lists each of them.
#[test]
fn the_chart_compares_every_annotation_stsguard_reads() {
    let helpers = std::fs::read_to_string(repo("charts/stsguard/templates/_helpers.tpl")).unwrap();
    let condition = helpers
        .split("- name: update-changes-spec-or-stsguard-annotations")
        .nth(1)
        .expect("the chart has the UPDATE skip")
        .split("{{- end }}")
        .next()
        .unwrap();
    let listed: Vec<&str> = condition
        .split('\'')
        .filter(|s| s.starts_with("stsguard.io/"))
        .collect();
    let mut expected = STSGUARD_ANNOTATIONS.to_vec();
    expected.sort_unstable();
    let mut sorted = listed.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted, expected, "the chart compares {listed:?}");

    let mut reads = Vec::new();
    let mut files = vec![repo("src")];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            for call in text.split(".annotation(").skip(1) {
                let argument = call.split(')').next().unwrap().trim().to_owned();
                reads.push((path.display().to_string(), argument));
            }
        }
    }
    assert!(reads.len() >= 4, "{reads:?}");
    for (file, argument) in reads {
        assert!(
            ["EXEMPT", "EXEMPT_REASON", "EXEMPT_UNTIL", "MUTATED"].contains(&argument.as_str()),
            "{file} reads annotation {argument}, which the chart's UPDATE skip does not compare"
        );
    }
}
