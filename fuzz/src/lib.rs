//! The checks behind the fuzz targets, as plain functions that panic when a property fails.
//!
//! `fuzz_targets/*.rs` hand libFuzzer's bytes to [`review`], [`policy`] and [`manifest`].
//! `tests/review_properties.rs` and `tests/document_properties.rs` include this file as a module
//! and run the same checks on proptest's inputs, so stable `cargo test` exercises exactly what the fuzzer does.
//!
//! Only the stsguard crate and its own dependencies (serde_json, base64, json-patch) are used,
//! so the file compiles in both places.

use std::{
    future::Future,
    pin::pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll, Waker},
};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde_json::{Value, json};
use stsguard::{
    admit::{Classified, classify},
    audit::{AuditReport, audit},
    lookup::{InMemory, NoLookup},
    manifest::{Loaded, parse_into},
    policy::Policy,
    review::{Endpoint, Reviewer},
    subject::Object,
    time::today,
};

/// The origin fuzzed policy text is loaded under; every error must name it.
pub const POLICY_ORIGIN: &str = "fuzzed-policy.yaml";
/// The file names fuzzed manifests are read as.
pub const MANIFEST_YAML: &str = "fuzzed.yaml";
pub const MANIFEST_JSON: &str = "fuzzed.json";

/// What a rule panic turns into (evaluate catches it); never expected.
const RULE_PANIC: &str = "failed internally";

/// Captured reviews a policy that loads must be able to answer.
const SAMPLES: &[(Endpoint, &[u8])] = &[
    (
        Endpoint::Validate,
        include_bytes!(
            "../../tests/fixtures/admission/validate-StatefulSet-CREATE-cap-nosvc-1.json"
        ),
    ),
    (
        Endpoint::Validate,
        include_bytes!(
            "../../tests/fixtures/admission/validate-StatefulSet-UPDATE-cap-nosvc-1.json"
        ),
    ),
    (
        Endpoint::Validate,
        include_bytes!("../../tests/fixtures/admission/validate-Service-CREATE-cap-cache-1.json"),
    ),
    (
        Endpoint::Mutate,
        include_bytes!("../../tests/fixtures/admission/mutate-StatefulSet-CREATE-cap-db-1.json"),
    ),
    (
        Endpoint::Mutate,
        include_bytes!("../../tests/fixtures/admission/mutate-Service-CREATE-cap-web-1.json"),
    ),
];

/// A manifest a policy that loads must be able to audit.
const SAMPLE_MANIFEST: &str = include_str!("../../tests/fixtures/corpus/k8s-website/web.yaml");

/// Bytes → both endpoints, under three reviewers (see [`reviewers`]).
pub fn review(data: &[u8]) {
    for reviewer in reviewers() {
        for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
            check_review(reviewer, endpoint, data);
        }
    }
}

/// Bytes → `Policy::from_yaml`.
pub fn policy(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = check_policy(text);
    }
}

/// Bytes → `parse_into` (as YAML and as JSON) → `audit`.
pub fn manifest(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        for json in [false, true] {
            check_manifest(text, json);
        }
    }
}

/// The built-in policy without cluster facts; the built-in policy with a few cluster facts (so
/// the cross-object rules run); and every rule and mutator on, with the same facts.
pub fn reviewers() -> &'static [Reviewer] {
    static REVIEWERS: OnceLock<Vec<Reviewer>> = OnceLock::new();
    REVIEWERS.get_or_init(|| {
        let [builtin, everything] = policies().clone().map(Arc::new);
        let facts = Arc::new(facts());
        vec![
            Reviewer::new(builtin.clone(), Arc::new(NoLookup)),
            Reviewer::new(builtin, facts.clone()),
            Reviewer::new(everything, facts),
        ]
    })
}

/// Every rule and mutator enabled.
pub fn everything_on() -> Policy {
    Policy::from_yaml(
        "rules: {sts-pod-management-policy: warn, sts-pod-anti-affinity: deny, \
         svc-publish-not-ready: warn}\nmutators: {svc-make-headless: true}",
        "everything on",
    )
    .expect("the policy with every rule on loads")
}

/// Namespace `cap` (the captured reviews' namespace): headless Service `web`, Service `cache`
/// with a cluster IP, and StatefulSet `cache` naming it.
fn facts() -> InMemory {
    let mut facts = InMemory::new();
    let objects = [
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "web", "namespace": "cap"},
               "spec": {"clusterIP": "None", "selector": {"app": "web"}}}),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "cache", "namespace": "cap"},
               "spec": {"clusterIP": "10.0.0.7", "selector": {"app": "other"}}}),
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
               "metadata": {"name": "cache", "namespace": "cap"},
               "spec": {"serviceName": "cache", "selector": {"matchLabels": {"app": "cache"}},
                        "template": {"metadata": {"labels": {"app": "cache"}},
                                     "spec": {"containers": [{"name": "c", "image": "x"}]}}}}),
    ];
    for object in objects {
        match classify(&object) {
            Classified::Object(Object::Service(svc)) => facts.add_service("cap", svc),
            Classified::Object(Object::StatefulSet(sts)) => facts.add_statefulset("cap", sts),
            _ => panic!("a fact does not read: {object}"),
        }
    }
    facts
}

/// What a body came to: refused as not a review (the server's HTTP 400, with this text), or
/// answered with this AdmissionReview.
#[derive(Debug)]
pub enum Reviewed {
    Refused(String),
    Answered(Value),
}

/// Parses and answers one body, checking every property of the answer; see [`check_answer`].
pub fn check_review(reviewer: &Reviewer, endpoint: Endpoint, body: &[u8]) -> Reviewed {
    let parsed = match reviewer.parse(endpoint, body) {
        Ok(parsed) => parsed,
        Err(e) => {
            let message = e.to_string();
            assert!(!message.is_empty(), "an empty error for {:?}", lossy(body));
            return Reviewed::Refused(message);
        }
    };
    let answer = block_on(reviewer.answer(endpoint, parsed, today()));
    let bytes = answer.to_json().expect("every answer serializes");
    let out: Value = serde_json::from_slice(&bytes).expect("every answer is JSON");
    check_answer(reviewer, endpoint, body, &out);
    Reviewed::Answered(out)
}

/// The properties of an answer:
/// - it is an `admission.k8s.io/v1` AdmissionReview with a response;
/// - it carries the request's uid (whenever the body reads as JSON at all);
/// - allowed goes with status Success; a refusal has status Failure, code 403 (Forbidden, only
///   from /validate) or 400 (BadRequest) and a message;
/// - no rule failed internally (a caught panic);
/// - a patch comes only from /mutate with an allowed answer, is base64 of a JSON Patch, applies
///   to the request's object, and mutating the patched object again changes nothing.
pub fn check_answer(reviewer: &Reviewer, endpoint: Endpoint, body: &[u8], out: &Value) {
    let context = || format!("{:?} {:.1000}\n-> {out:.1000}", endpoint, lossy(body));
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1", "{}", context());
    assert_eq!(out["kind"], "AdmissionReview", "{}", context());
    let response = &out["response"];
    let uid = response["uid"]
        .as_str()
        .unwrap_or_else(|| panic!("no uid: {}", context()));
    let request: Option<Value> = serde_json::from_slice(body).ok();
    if let Some(request) = &request {
        assert_eq!(
            request["request"]["uid"].as_str(),
            Some(uid),
            "the uid is not echoed: {}",
            context()
        );
    }
    let allowed = response["allowed"].as_bool().expect("allowed is a bool");
    let status = &response["status"];
    if allowed {
        assert_eq!(status["status"], "Success", "{}", context());
    } else {
        assert_eq!(status["status"], "Failure", "{}", context());
        let message = status["message"].as_str().unwrap_or_default();
        assert!(
            !message.is_empty(),
            "a refusal without a message: {}",
            context()
        );
        match (status["code"].as_u64(), endpoint) {
            (Some(400), _) => assert_eq!(status["reason"], "BadRequest", "{}", context()),
            (Some(403), Endpoint::Validate) => {
                assert_eq!(status["reason"], "Forbidden", "{}", context())
            }
            _ => panic!("unexpected refusal: {}", context()),
        }
    }
    if !lossy(body).contains(RULE_PANIC) {
        assert!(
            !out.to_string().contains(RULE_PANIC),
            "a rule panicked: {}",
            context()
        );
    }

    let Some(encoded) = response.get("patch") else {
        assert!(response.get("patchType").is_none(), "{}", context());
        return;
    };
    assert_eq!(endpoint, Endpoint::Mutate, "{}", context());
    assert!(allowed, "{}", context());
    assert_eq!(response["patchType"], "JSONPatch", "{}", context());
    let decoded = BASE64
        .decode(encoded.as_str().expect("the patch is a string"))
        .expect("the patch is base64");
    let patch: json_patch::Patch =
        serde_json::from_slice(&decoded).expect("the patch is a JSON Patch");
    // A body stsguard answered with a patch reads as JSON unless it hides something in places
    // serde_json skips without checking (deep nesting, invalid UTF-8 in an ignored field).
    let Some(mut request) = request else {
        return;
    };
    let mut object = request["request"]["object"].clone();
    if let Err(e) = json_patch::patch(&mut object, &patch) {
        panic!(
            "the patch does not apply to the object it was made for ({e}): {:?}\n{}",
            patch,
            context()
        );
    }
    // Mutating the result again changes nothing.
    request["request"]["object"] = object;
    let again = serde_json::to_vec(&request).unwrap();
    match check_review(reviewer, endpoint, &again) {
        Reviewed::Answered(second) => {
            assert_eq!(second["response"]["allowed"], true, "{second}");
            assert!(
                second["response"].get("patch").is_none(),
                "mutating the patched object again patches it again: {second}\nfirst: {}",
                context()
            );
        }
        Reviewed::Refused(e) => panic!("the patched review is refused ({e}): {}", context()),
    }
}

/// Loads policy text; an error must name the origin, and a policy that loads must answer the
/// captured reviews and audit a manifest (with every property [`check_answer`] checks).
pub fn check_policy(text: &str) -> Result<(), String> {
    let policy = match Policy::from_yaml(text, POLICY_ORIGIN) {
        Ok(policy) => policy,
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.contains(POLICY_ORIGIN),
                "the error does not name its origin: {message}\n{text:.2000}"
            );
            return Err(message);
        }
    };
    let mut loaded = Loaded::default();
    parse_into(&mut loaded, MANIFEST_YAML, SAMPLE_MANIFEST, false);
    check_audit(&loaded, &policy, SAMPLE_MANIFEST);
    let reviewer = Reviewer::new(Arc::new(policy), Arc::new(facts()));
    for (endpoint, body) in SAMPLES {
        match check_review(&reviewer, *endpoint, body) {
            Reviewed::Answered(_) => {}
            Reviewed::Refused(e) => panic!("a captured review is refused ({e}) under {text}"),
        }
    }
    Ok(())
}

/// Reads manifest text and audits it (built-in policy and every rule on); see [`check_audit`].
pub fn check_manifest(text: &str, json: bool) -> AuditReport {
    let file = if json { MANIFEST_JSON } else { MANIFEST_YAML };
    let mut loaded = Loaded::default();
    parse_into(&mut loaded, file, text, json);
    let [builtin, everything] = policies();
    check_audit(&loaded, everything, text);
    check_audit(&loaded, builtin, text)
}

/// The built-in policy and [`everything_on`], loaded once.
fn policies() -> &'static [Policy; 2] {
    static POLICIES: OnceLock<[Policy; 2]> = OnceLock::new();
    POLICIES.get_or_init(|| [Policy::builtin(), everything_on()])
}

/// The properties of reading and auditing manifests:
/// - every document and error names the file, and a line within it;
/// - the audit keeps the input's errors and accounts for every document exactly once: as a
///   result, as an error (an object that does not read as its kind) or as a skipped document of
///   another kind; results come in input order;
/// - no rule failed internally.
pub fn check_audit(loaded: &Loaded, policy: &Policy, text: &str) -> AuditReport {
    let lines = line_count(text);
    let file = loaded
        .documents
        .first()
        .map(|d| d.source.file.clone())
        .or_else(|| loaded.errors.first().map(|e| e.file.clone()));
    for doc in &loaded.documents {
        assert_eq!(Some(&doc.source.file), file.as_ref());
        assert!(
            (1..=lines).contains(&doc.source.line),
            "document at line {} of {lines}: {text:.2000}",
            doc.source.line
        );
    }
    for e in &loaded.errors {
        assert_eq!(Some(&e.file), file.as_ref());
        assert!(
            e.line.is_none_or(|l| (1..=lines + 1).contains(&l)),
            "error at line {:?} of {lines} ({e}): {text:.2000}",
            e.line
        );
    }

    let report = audit(loaded, policy, "default", today());
    assert!(report.errors.len() >= loaded.errors.len());
    assert_eq!(
        report.errors[..loaded.errors.len()],
        loaded.errors[..],
        "the audit lost or changed an input error"
    );
    let invalid = report.errors.len() - loaded.errors.len();
    assert_eq!(
        report.results.len() + invalid + report.skipped_documents,
        loaded.documents.len(),
        "documents unaccounted for: {} results, {invalid} invalid, {} skipped of {} documents: \
         {text:.2000}",
        report.results.len(),
        report.skipped_documents,
        loaded.documents.len()
    );
    // Results and invalid objects, in input order, are a subsequence of the documents.
    let mut sources = loaded.documents.iter().map(|d| &d.source);
    for result in &report.results {
        assert!(
            sources.any(|s| *s == result.source),
            "result {} out of order",
            result.source
        );
        for v in &result.verdict.violations {
            if !text.contains(RULE_PANIC) {
                assert!(
                    !v.finding.message.contains(RULE_PANIC),
                    "a rule panicked: {}",
                    v.finding.message
                );
            }
        }
    }
    report
}

/// Lines as YAML counts them: `\n`, `\r\n` and a lone `\r` each end one.
fn line_count(text: &str) -> usize {
    let breaks =
        text.matches('\n').count() + text.matches('\r').count() - text.matches("\r\n").count();
    breaks + 1
}

/// Runs a future that never waits on I/O (the lookups here answer at once).
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("a review waited on I/O without a cluster"),
    }
}

fn lossy(body: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(body)
}
