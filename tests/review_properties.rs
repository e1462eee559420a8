//! Properties of the review path over generated inputs: arbitrary bytes, and captured reviews
//! mutated byte by byte and structurally, are refused or answered with their uid; the lean object
//! reader reads objects as k8s-openapi does; and mutation fills what was taken out of a
//! StatefulSet with a patch that applies.
//!
//! The checks themselves are `fuzz/src/lib.rs`, the same code the cargo-fuzz targets run, so
//! what the fuzzer finds and what this file asserts cannot drift apart. Each case runs on its
//! own thread with the webhook's 2 MiB stack and a deadline, so a hang fails the case instead of
//! the whole run. Failures print the shrunk input; nothing is written to disk.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz_checks;
mod support;

use fuzz_checks::{Reviewed, check_review, reviewers};
use proptest::{prelude::*, sample::Index};
use serde_json::{Value, json};
use stsguard::review::Endpoint;
use support::{
    json_mutations::{INTERESTING, SUBTREES, apply, edit},
    properties::{config, endpoint_of, fixtures, within},
    text_mutations::{apply_bytes, byte_edit, json_soup},
};

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
