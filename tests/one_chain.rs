//! One admission chain: every captured review and every corpus manifest gets the same verdict,
//! the same rule ids and the same patch through the webhook (`/mutate`, the patch applied as the
//! API server applies it, then `/validate`) as through `stsguard audit`, under the default,
//! strict and audit policies and under a policy with every mutator on.

use std::{path::Path, sync::Arc};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde_json::{Value, json};
use stsguard::{
    admit::{self, Chain, Classified},
    audit::audit,
    lookup::{InMemory, Lookup, NoLookup},
    manifest::{self, Loaded},
    mutate::MUTATORS,
    policy::{Lookups, Policy},
    review::{Endpoint, Reviewer, admission_review},
    subject::{Object, Operation},
    time::today,
};

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

fn policies() -> Vec<(&'static str, Policy)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let mut policies: Vec<(&str, Policy)> = ["default", "strict", "audit"]
        .into_iter()
        .map(|name| {
            let path = root.join(format!("{name}.yaml"));
            (name, Policy::load(&path).unwrap())
        })
        .collect();
    let every: String = MUTATORS
        .iter()
        .map(|m| format!("{}: true, ", m.id))
        .collect();
    policies.push((
        "every mutator on",
        Policy::from_yaml(&format!("mutators: {{{every}}}"), "every-mutator").unwrap(),
    ));
    policies
}

/// What an answer comes to: allowed, the rule ids, the patch.
#[derive(Debug, PartialEq)]
struct Outcome {
    allowed: bool,
    rules: Vec<&'static str>,
    patch: Value,
}

/// The webhook's answer to `/mutate`: the patch, decoded.
fn mutate(reviewer: &Reviewer, review: &Value) -> Value {
    let body = serde_json::to_vec(review).unwrap();
    let answer = block_on(reviewer.review(Endpoint::Mutate, &body)).unwrap();
    let wire: Value = serde_json::from_slice(&answer.to_json().unwrap()).unwrap();
    match wire["response"]["patch"].as_str() {
        Some(patch) => serde_json::from_slice(&BASE64.decode(patch).unwrap()).unwrap(),
        None => json!([]),
    }
}

/// `/validate` on the review.
fn validate(reviewer: &Reviewer, review: &Value) -> (bool, Vec<&'static str>) {
    let body = serde_json::to_vec(review).unwrap();
    let answer = block_on(reviewer.review(Endpoint::Validate, &body)).unwrap();
    (answer.response.allowed, answer.summary.rules)
}

/// The object as the API server stores it after the mutating webhook: the patch applied.
fn patched(object: &Value, patch: &Value) -> Value {
    let mut object = object.clone();
    let patch: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
    json_patch::patch(&mut object, &patch).unwrap();
    object
}

/// The webhook path for the objects of one input, in order, as a cluster sees them: each is
/// created through `/mutate` with the facts of the objects as written, then, with the objects
/// stored as mutated, judged through `/validate`.
fn webhook(policy: &Policy, objects: &[Value]) -> Vec<Outcome> {
    let lookups = policy.lookups == Lookups::Auto;
    let facts = |objects: &[Value]| -> Arc<dyn Lookup> {
        if !lookups {
            return Arc::new(NoLookup);
        }
        let mut facts = InMemory::new();
        for object in objects {
            match admit::classify(object) {
                Classified::Object(Object::StatefulSet(s))
                | Classified::Legacy(Object::StatefulSet(s), _) => {
                    facts.add_statefulset("default", s)
                }
                Classified::Object(Object::Service(s)) => facts.add_service("default", s),
                _ => {}
            }
        }
        Arc::new(facts)
    };
    let written = Reviewer::new(Arc::new(policy.clone()), facts(objects));
    let review = |i: usize, object: &Value| {
        admission_review(
            &format!("u-{i}"),
            Operation::Create,
            object,
            None,
            "default",
        )
    };
    let patches: Vec<Value> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| mutate(&written, &review(i, o)))
        .collect();
    let stored: Vec<Value> = objects
        .iter()
        .zip(&patches)
        .map(|(o, p)| patched(&review(0, o)["request"]["object"], p))
        .collect();
    let judged = Reviewer::new(Arc::new(policy.clone()), facts(&stored));
    stored
        .iter()
        .zip(patches)
        .enumerate()
        .map(|(i, (object, patch))| {
            let (allowed, rules) = validate(&judged, &review(i, object));
            Outcome {
                allowed,
                rules,
                patch,
            }
        })
        .collect()
}

/// The audit path for one input: `stsguard audit` over its text.
fn audited(policy: &Policy, file: &str, text: &str) -> (Vec<Value>, Vec<Outcome>) {
    let mut loaded = Loaded::default();
    manifest::parse_into(&mut loaded, file, text, file.ends_with(".json"));
    let report = audit(&loaded, policy, "default", today());
    assert!(report.errors.is_empty(), "{file}: {:?}", report.errors);
    let objects = loaded
        .documents
        .iter()
        .map(|d| d.value.clone())
        .filter(admit::judges)
        .collect();
    let outcomes = report
        .results
        .iter()
        .map(|r| Outcome {
            allowed: r.verdict.allowed(),
            rules: r.verdict.rule_ids(),
            patch: serde_json::to_value(&r.patch).unwrap(),
        })
        .collect();
    (objects, outcomes)
}

fn corpus_files(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            corpus_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            found.push(path);
        }
    }
}

#[test]
fn every_corpus_manifest_gets_the_same_answer_from_the_webhook_and_the_audit() {
    let mut files = Vec::new();
    corpus_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus"),
        &mut files,
    );
    files.sort();
    assert!(
        files.len() >= 40,
        "the corpus went missing: {}",
        files.len()
    );
    let mut compared = 0;
    let mut denied = 0;
    let mut mutated = 0;
    for (name, policy) in policies() {
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            let shown = file.display().to_string();
            let (objects, audit) = audited(&policy, &shown, &text);
            let webhook = webhook(&policy, &objects);
            assert_eq!(webhook.len(), audit.len(), "{name}: {shown}");
            for (i, (w, a)) in webhook.iter().zip(&audit).enumerate() {
                assert_eq!(w, a, "{name}: {shown}, object {i}: webhook vs audit");
                compared += 1;
                denied += usize::from(!a.allowed);
                mutated += usize::from(a.patch != json!([]));
            }
        }
    }
    // The comparison means something only if both kinds of answer occur.
    assert!(
        compared > 400 && denied > 100 && mutated >= 3,
        "{compared} {denied} {mutated}"
    );
}

/// The captured reviews, through the webhook as the API server calls it (mutate, apply, then
/// validate) and through the chain the audit uses: `stsguard audit` for creations, the chain with
/// the old object for updates and deletions.
#[test]
fn every_captured_review_gets_the_same_answer_from_the_webhook_and_the_chain() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/admission");
    let mut fixtures: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() >= 19);
    let mut compared = 0;
    for (name, mut policy) in policies() {
        // Captured one by one: no other object exists, on either path.
        policy.lookups = Lookups::Off;
        let reviewer = Reviewer::new(Arc::new(policy.clone()), Arc::new(NoLookup));
        for fixture in &fixtures {
            let shown = fixture.file_name().unwrap().to_string_lossy().into_owned();
            let review: Value = serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
            let request = &review["request"];
            if !request["subResource"].is_null() {
                continue;
            }
            let operation = match request["operation"].as_str().unwrap() {
                "CREATE" => Operation::Create,
                "UPDATE" => Operation::Update,
                _ => Operation::Delete,
            };
            let object = &request["object"];
            let old = &request["oldObject"];

            // The webhook path.
            let patch = mutate(&reviewer, &review);
            let mut stored = review.clone();
            if operation != Operation::Delete {
                stored["request"]["object"] = patched(object, &patch);
            }
            let (allowed, rules) = validate(&reviewer, &stored);
            let webhook = Outcome {
                allowed,
                rules,
                patch,
            };

            // The chain, as the audit calls it.
            let chain_path = if operation == Operation::Create {
                let (_, mut outcomes) =
                    audited(&policy, &shown, &serde_json::to_string(object).unwrap());
                outcomes.remove(0)
            } else {
                let read = |v: &Value| match admit::classify(v) {
                    Classified::Object(o) => Some(o),
                    _ => None,
                };
                let chain = Chain {
                    policy: &policy,
                    lookup: &NoLookup,
                    today: today(),
                };
                let (object, old) = match operation {
                    Operation::Delete => (read(old).unwrap(), None),
                    _ => (read(object).unwrap(), read(old)),
                };
                let namespace = request["namespace"].as_str().unwrap();
                let admitted = chain.admit(operation, namespace, object, old);
                Outcome {
                    allowed: admitted.verdict.allowed(),
                    rules: admitted.verdict.rule_ids(),
                    patch: serde_json::to_value(&admitted.mutation.patch).unwrap(),
                }
            };
            assert_eq!(webhook, chain_path, "{name}: {shown}");
            compared += 1;
        }
    }
    assert!(compared >= 4 * 15, "{compared}");
}
