//! The proof behind the mutating webhook's matchCondition (`stsguard-mutators-could-act`,
//! `backstop::mutators_could_act`): the API server does not call `/mutate` where it is false,
//! which is safe only if the webhook would have answered "allowed, no patch" there.
//!
//! The condition is evaluated with the `cel` crate as the API server binds it (`object`,
//! `oldObject`, `request`), and the webhook answers through its own entry point
//! (`Reviewer::parse` and `answer`, as in `fuzz/src/lib.rs`), under policies that enable every
//! mutator, some, or none, with cluster facts in which every Service is named by a StatefulSet
//! (so `svc-make-headless` acts wherever it can). Over every StatefulSet and Service of the
//! manifest corpus created, every captured review as captured, and generated StatefulSets:
//!
//! 1. the condition evaluates (no error) to a bool;
//! 2. where it is false, the answer is allowed with no patch;
//! 3. where no exemption applies, it is false wherever there is no patch (it costs no needless
//!    call), so it is exactly as permissive as the mutators;
//! 4. a condition generated as if a mutator looked at another field lets some object that
//!    would be mutated skip: the proof notices a form that drifts from its mutator.
//!
//! And the chart's copy of the condition is the default policy's (`STSGUARD_BLESS=1` rewrites
//! it); `calls_per_request_class` prints the table of BENCHMARKS.md.

#[allow(dead_code)]
#[path = "backstop_equivalence/cel_env.rs"]
mod cel_env;
#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod fuzz_checks;
#[allow(dead_code)]
#[path = "backstop_equivalence/generated.rs"]
mod generated;
mod support;

use std::sync::{Arc, OnceLock};

use cel::Program;
use fuzz_checks::{Reviewed, check_review, everything_on};
use k8s_openapi::api::{admissionregistration::v1::MatchCondition, apps::v1::StatefulSet};
use proptest::prelude::*;
use serde_json::{Value, json};
use stsguard::{
    admit::{Classified, classify},
    backstop::{self, MUTATORS_COULD_ACT},
    exemption::EXEMPT,
    lookup::{Fact, Lookup, ServiceFacts, StatefulSetFacts},
    manifest::{Loaded, parse_into},
    mutate::Mutator,
    policy::Policy,
    review::{Endpoint, Reviewer, admission_review},
    subject::Operation,
};
use support::properties::{config, corpus, fixtures, repo, within};

/// A cluster in which every Service is named by a StatefulSet and no Service exists.
struct EveryServiceNamed;

impl Lookup for EveryServiceNamed {
    fn service(&self, _: &str, _: &str) -> Fact<Arc<ServiceFacts>> {
        Fact::Absent
    }
    fn statefulsets_naming(&self, _: &str, service: &str) -> Fact<Vec<Arc<StatefulSetFacts>>> {
        let sts: StatefulSet = serde_json::from_value(json!({
            "metadata": {"name": "named", "namespace": "cap"},
            "spec": {"serviceName": service, "selector": {}, "template": {}}
        }))
        .unwrap();
        Fact::Found(vec![Arc::new(StatefulSetFacts::of(&sts))])
    }
}

/// The policies, by name: a mutator off narrows the condition, an exemption does not.
fn policies() -> &'static [(&'static str, Policy)] {
    static POLICIES: OnceLock<Vec<(&str, Policy)>> = OnceLock::new();
    POLICIES.get_or_init(|| {
        let yaml = |name, text| Policy::from_yaml(text, name).unwrap();
        vec![
            ("built-in", Policy::builtin()),
            ("everything on", everything_on()),
            (
                "inject only",
                yaml(
                    "inject only",
                    "mutators: {sts-complete-volume-claim-templates: false}",
                ),
            ),
            (
                "complete only",
                yaml(
                    "complete only",
                    "mutators: {sts-inject-volume-claim-templates: false}",
                ),
            ),
            (
                "none",
                yaml(
                    "none",
                    "mutators: {sts-inject-volume-claim-templates: false, \
                     sts-complete-volume-claim-templates: false}",
                ),
            ),
            (
                "exempting",
                yaml(
                    "exempting",
                    "mutators: {svc-make-headless: true}\nexemptions:\n- {namespaces: [cap], \
                     rules: [sts-inject-volume-claim-templates, svc-make-headless], reason: byo}",
                ),
            ),
        ]
    })
}

fn reviewers() -> &'static [Reviewer] {
    static REVIEWERS: OnceLock<Vec<Reviewer>> = OnceLock::new();
    REVIEWERS.get_or_init(|| {
        policies()
            .iter()
            .map(|(_, p)| Reviewer::new(Arc::new(p.clone()), Arc::new(EveryServiceNamed)))
            .collect()
    })
}

/// Each policy's condition, compiled; `forms` gives each mutator's CEL (altered in a mutant).
fn conditions(forms: &dyn Fn(&Mutator) -> Option<String>) -> Vec<Program> {
    let env = cel_env::env();
    policies()
        .iter()
        .map(|(_, policy)| {
            let condition: MatchCondition = backstop::mutators_could_act_with(policy, forms);
            assert_eq!(condition.name, MUTATORS_COULD_ACT);
            cel_env::compile(&env, &condition.expression)
        })
        .collect()
}

fn real() -> &'static [Program] {
    static REAL: OnceLock<Vec<Program>> = OnceLock::new();
    REAL.get_or_init(|| conditions(&backstop::mutator_could_act))
}

/// The mutating webhook's answer: `Some(patched)` when allowed, `None` when refused or denied
/// (an object that does not read as its type: `/validate` refuses it the same way).
fn answer(reviewer: &'static Reviewer, review: &Value) -> Option<bool> {
    let body = serde_json::to_vec(review).unwrap();
    within("mutate", move || {
        match check_review(reviewer, Endpoint::Mutate, &body) {
            Reviewed::Answered(a) if a["response"]["allowed"] == json!(true) => {
                Some(a["response"].get("patch").is_some())
            }
            _ => None,
        }
    })
}

/// Whether an exemption could keep a mutator off this request (the condition ignores them).
fn exempted(policy: &str, review: &Value) -> bool {
    let request = &review["request"];
    policy == "exempting" && request["namespace"] == "cap"
        || request["object"]["metadata"]["annotations"]
            .get(EXEMPT)
            .is_some()
}

#[derive(Debug, Default)]
struct Tally {
    checked: usize,
    skipped: usize,
    patched: usize,
}

/// Checks properties 1-3 on one review under every policy; `Err` names the first violation.
fn check(programs: &[Program], review: &Value, tally: &mut Tally) -> Result<(), String> {
    for (((name, _), reviewer), program) in policies().iter().zip(reviewers()).zip(programs) {
        let sent = cel_env::match_condition(program, review);
        let Some(patched) = answer(reviewer, review) else {
            continue;
        };
        tally.checked += 1;
        tally.skipped += usize::from(!sent);
        tally.patched += usize::from(patched);
        if !sent && patched {
            return Err(format!("skipped under {name} but patched: {review}"));
        }
        if sent && !patched && !exempted(name, review) {
            return Err(format!("sent under {name} but nothing to patch: {review}"));
        }
    }
    Ok(())
}

/// The corpus's StatefulSets and Services created in `cap`, and every captured review, with its
/// object also created where it has one.
fn reviews() -> &'static [Value] {
    static REVIEWS: OnceLock<Vec<Value>> = OnceLock::new();
    REVIEWS.get_or_init(|| {
        let mut out = Vec::new();
        let create =
            |object: &Value| admission_review("c-1", Operation::Create, object, None, "cap");
        for (path, text) in corpus() {
            let mut loaded = Loaded::default();
            parse_into(&mut loaded, path, text, path.ends_with(".json"));
            for doc in loaded.documents {
                if matches!(classify(&doc.value), Classified::Object(_)) {
                    out.push(create(&doc.value));
                }
            }
        }
        for (_, _, review) in fixtures() {
            out.push(review.clone());
            let request = &review["request"];
            for side in ["object", "oldObject"] {
                if matches!(classify(&request[side]), Classified::Object(_)) {
                    out.push(create(&request[side]));
                }
            }
        }
        assert!(out.len() >= 100, "{} reviews", out.len());
        out
    })
}

#[test]
fn skipped_requests_are_left_unchanged_over_corpus_and_captured_reviews() {
    let mut tally = Tally::default();
    for review in reviews() {
        check(real(), review, &mut tally).unwrap();
    }
    println!("corpus and captured reviews: {tally:?}");
    // Not vacuous: both sides of the condition are reached.
    assert!(tally.skipped >= 100, "{tally:?}");
    assert!(tally.patched >= 20, "{tally:?}");
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn skipped_generated_statefulsets_are_left_unchanged(sts in generated::statefulset()) {
        let review = admission_review("g-1", Operation::Create, &sts, None, "cap");
        let mut tally = Tally::default();
        if let Err(e) = check(real(), &review, &mut tally) {
            prop_assert!(false, "{}", e);
        }
    }
}

/// Past a size the condition no longer looks at the mounts and sends the request (its cost
/// stays bounded); below it, the same object with nothing to do is skipped.
#[test]
fn a_statefulset_too_large_to_read_cheaply_is_sent() {
    let builtin = &real()[0];
    let with = |containers: usize, mounts: usize, volumes: usize| {
        let mount = |i: usize| json!({"name": format!("v{i}"), "mountPath": format!("/v{i}")});
        let container = json!({"name": "c", "image": "x",
                               "volumeMounts": (0..mounts).map(mount).collect::<Vec<_>>()});
        let volume = |i: usize| json!({"name": format!("v{i}"), "emptyDir": {}});
        let sts = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "big"},
            "spec": {"serviceName": "big", "selector": {"matchLabels": {"app": "big"}},
                     "template": {"metadata": {"labels": {"app": "big"}},
                                  "spec": {"containers": vec![container; containers],
                                           "volumes": (0..volumes.max(mounts)).map(volume)
                                               .collect::<Vec<_>>()}},
                     "volumeClaimTemplates": []}});
        let review = admission_review("b-1", Operation::Create, &sts, None, "cap");
        let patched = answer(&reviewers()[0], &review);
        assert_eq!(patched, Some(false), "every mount resolves");
        cel_env::match_condition(builtin, &review)
    };
    assert!(!with(32, 64, 128));
    assert!(with(33, 1, 1));
    assert!(with(1, 65, 1));
    assert!(with(1, 1, 129));
}

/// A form altered as if its mutator looked at another field.
fn mutant(id: &'static str, from: &'static str, to: &'static str) -> Vec<Program> {
    conditions(&move |m: &Mutator| {
        let form = backstop::mutator_could_act(m)?;
        if m.id != id {
            return Some(form);
        }
        assert!(form.contains(from), "{id}: {form}");
        Some(form.replace(from, to))
    })
}

/// Each mutant fails the property it breaks: a form that misses what its mutator reads lets a
/// mutated object skip (property 2); one that reads too much sends needless calls (property 3).
#[test]
fn a_form_that_looks_at_another_field_fails_the_proof() {
    let skips = "skipped under";
    let sends = "sent under";
    let mutants = [
        (
            "sts-inject-volume-claim-templates",
            "c.volumeMounts",
            "c.volumeDevices",
            skips,
        ),
        (
            "sts-inject-volume-claim-templates",
            ".initContainers",
            ".ephemeralContainers",
            skips,
        ),
        (
            "sts-inject-volume-claim-templates",
            "t.metadata.name",
            "t.metadata.generateName",
            sends,
        ),
        (
            "sts-complete-volume-claim-templates",
            "spec.volumeClaimTemplates",
            "spec.volumeClaimTemplate",
            skips,
        ),
        (
            "sts-complete-volume-claim-templates",
            "'storage'",
            "'cpu'",
            sends,
        ),
        (
            "sts-complete-volume-claim-templates",
            ".accessModes",
            ".dataSource",
            sends,
        ),
        (
            "svc-make-headless",
            "spec.clusterIP",
            "spec.clusterIPs",
            sends,
        ),
        (
            "svc-make-headless",
            "metadata.name",
            "metadata.generateName",
            skips,
        ),
    ];
    let generated = generated_sample();
    for (id, from, to, breaks) in mutants {
        let programs = mutant(id, from, to);
        let mut tally = Tally::default();
        let failure = reviews()
            .iter()
            .chain(&generated)
            .find_map(|review| check(&programs, review, &mut tally).err());
        match failure {
            Some(message) => assert!(
                message.starts_with(breaks),
                "{id} looking at {to} instead of {from}: {message}"
            ),
            None => panic!("{id} looking at {to} instead of {from} passes: {tally:?}"),
        }
    }
}

/// A fixed sample of generated StatefulSets, created.
fn generated_sample() -> Vec<Value> {
    use proptest::{strategy::ValueTree, test_runner::TestRunner};
    let mut runner = TestRunner::deterministic();
    (0..64)
        .map(|_| {
            let sts = generated::statefulset()
                .new_tree(&mut runner)
                .unwrap()
                .current();
            admission_review("g-1", Operation::Create, &sts, None, "cap")
        })
        .collect()
}

/// The chart's copy of the condition is what `stsguard policy export --format match-condition
/// --policy charts/stsguard/files/default-policy.yaml` prints; `STSGUARD_BLESS=1` writes it.
#[test]
fn the_charts_condition_is_the_default_policys() {
    let policy_file = "charts/stsguard/files/default-policy.yaml";
    let policy = Policy::load(&repo(policy_file)).unwrap();
    let expected = backstop::match_condition_yaml(&policy, policy_file);
    let path = repo("charts/stsguard/files/mutators-match-condition.yaml");
    if std::env::var_os("STSGUARD_BLESS").is_some() {
        std::fs::write(&path, &expected).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == expected,
        "{} is stale; run `STSGUARD_BLESS=1 cargo test --test mutate_skip_properties`",
        path.display()
    );
    let parsed: Vec<MatchCondition> = serde_saphyr::from_str(&committed).unwrap();
    assert_eq!(parsed, [backstop::mutators_could_act(&policy)]);
    // The command its header names prints it.
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_stsguard"))
        .current_dir(repo(""))
        .args([
            "policy",
            "export",
            "--format",
            "match-condition",
            "--policy",
            policy_file,
        ])
        .output()
        .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    assert_eq!(String::from_utf8(printed.stdout).unwrap(), committed);
}
