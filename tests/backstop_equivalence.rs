//! The backstop decides what the webhook decides: the generated ValidatingAdmissionPolicy CEL,
//! evaluated by the `cel` crate, against the Rust rules through `evaluate`, case by case, over
//! every StatefulSet in the corpus, the captured admission reviews and generated objects.
//!
//! For each object and policy the webhook's verdict gives the expected backstop answer per rule
//! case: Denied or Audited → the deny-level policy's validation fails, Warned → the warn-level
//! one fails, Exempted or Grandfathered → neither. The backstop's answer is the set of failing
//! validations. They must be equal, with one documented exception: on UPDATE, a rule case that
//! reports one path per list element is grandfathered by case, so the backstop may pass an
//! update the webhook denies (never the reverse).
//!
//! The objects are what the API server would hold: typed (k8s-openapi), defaulted by
//! `admit::default`, and serialized back, so absent and null read the same on both sides.
//!
//! The params are an EndpointSlice of the webhook's Service with no ready endpoint: the webhook
//! is gone and the backstop speaks. With a ready one, every validation passes whatever the
//! object (`the_backstop_is_silent_while_the_webhook_is_ready`).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use cel::Value as Cel;
use cel_env::{Request, slice};
use generated::{pick, statefulset};
use jiff::civil::Date;
use k8s_openapi::api::apps::v1::StatefulSet;
use proptest::{prelude::*, test_runner::Config};
use serde_json::{Value, json};
#[allow(dead_code)]
#[path = "backstop_equivalence/cel_env.rs"]
mod cel_env;
#[path = "backstop_equivalence/compiled.rs"]
mod compiled;
#[path = "backstop_equivalence/generated.rs"]
mod generated;

use compiled::{Answer, Compiled, Level, backstop_answer, compile};

use stsguard::{
    backstop::{self, Coverage},
    evaluate::{Input, Outcome, evaluate},
    lookup::NoLookup,
    manifest,
    policy::Policy,
    rules,
    subject::{Operation, Subject},
};

/// Long before any `exempt-until` date used here: the backstop has no clock and honours every
/// exemption annotation whatever its date, so the webhook is compared while the dates hold.
fn today() -> Date {
    "2000-01-01".parse().unwrap()
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The policies compared: the shipped ones, and one with namespace exemptions, other volatile
/// labels and everything else on.
fn policies() -> Vec<(String, Policy)> {
    let mut out: Vec<(String, Policy)> = ["default", "strict", "audit"]
        .iter()
        .map(|name| {
            let path = repo(&format!("policies/{name}.yaml"));
            (name.to_string(), Policy::load(&path).unwrap())
        })
        .collect();
    out.push((
        "custom".into(),
        Policy::from_yaml(
            "rules: {sts-pod-anti-affinity: deny, sts-pod-management-policy: warn, \
             sts-readiness-probe: deny, sts-volume-claim-templates: {missing: deny, incomplete: warn}}\n\
             exemptions:\n\
             - {namespaces: [legacy], rules: ['*'], reason: old}\n\
             - {namespaces: [other, legacy], rules: [sts-readiness-probe, sts-service-name], reason: x}\n\
             settings: {volatileLabels: [app, version]}",
            "custom",
        )
        .unwrap(),
    ));
    out
}

/// The answer the backstop should give, from the webhook's verdict.
fn webhook_answer(
    policy: &Policy,
    operation: Operation,
    namespace: &str,
    new: &StatefulSet,
    old: Option<&StatefulSet>,
) -> Answer {
    let input = Input {
        subject: Subject::StatefulSet(new),
        old: old.map(Subject::StatefulSet),
        namespace,
        operation,
    };
    let verdict = evaluate(&input, &NoLookup, policy, today());
    verdict
        .violations
        .iter()
        .filter(|v| backstop::coverage(v.rule) == Coverage::Cel)
        .filter_map(|v| {
            let level = match v.outcome {
                Outcome::Denied => Level::Deny,
                Outcome::Audited => Level::Audit,
                Outcome::Warned => Level::Warn,
                Outcome::Exempted { .. } | Outcome::Grandfathered => return None,
            };
            Some((level, v.rule.id, v.finding.case))
        })
        .collect()
}

#[derive(Default)]
struct Tally {
    compared: usize,
    violations: usize,
    /// UPDATEs where a per-element case was grandfathered by case.
    by_case: usize,
}

/// Compares one request under one policy.
fn compare(
    compiled: &Compiled,
    policy: &(String, Policy),
    what: &str,
    new: &Value,
    old: Option<&Value>,
    namespace: &str,
    tally: &mut Tally,
) -> Result<(), String> {
    let Some((new_sts, new_json)) = cel_env::stored(new) else {
        return Ok(());
    };
    let old = old.and_then(cel_env::stored);
    let operation = if old.is_some() {
        Operation::Update
    } else {
        Operation::Create
    };
    let expected = webhook_answer(
        &policy.1,
        operation,
        namespace,
        &new_sts,
        old.as_ref().map(|(s, _)| s),
    );
    let got = backstop_answer(
        compiled,
        operation,
        namespace,
        &new_json,
        old.as_ref().map(|(_, j)| j),
    );
    tally.compared += 1;
    tally.violations += expected.len();
    if got == expected {
        return Ok(());
    }
    // The one allowed difference: per-element cases grandfathered by case on UPDATE.
    let extra: Vec<_> = got.difference(&expected).collect();
    let missing: Vec<_> = expected.difference(&got).collect();
    // The old object must have had a violation of that case somewhere (what the backstop
    // grandfathers by), whatever became of it.
    let old_cases: BTreeSet<(&str, &str)> = old
        .as_ref()
        .map(|(old_sts, _)| {
            let input = Input {
                subject: Subject::StatefulSet(old_sts),
                old: None,
                namespace,
                operation: Operation::Create,
            };
            evaluate(&input, &NoLookup, &policy.1, today())
                .violations
                .iter()
                .map(|v| (v.rule.id, v.finding.case))
                .collect()
        })
        .unwrap_or_default();
    let allowed = extra.is_empty()
        && operation == Operation::Update
        && missing.iter().all(|(level, rule, case)| {
            *level != Level::Warn
                && backstop::grandfathered_by_case(rule, case)
                && old_cases.contains(&(*rule, *case))
        });
    if allowed {
        tally.by_case += 1;
        return Ok(());
    }
    Err(format!(
        "{what} under policy {}: the backstop says {got:?}, the webhook {expected:?}\n\
         backstop only: {extra:?}\nwebhook only: {missing:?}\nobject: {new_json}",
        policy.0
    ))
}

fn corpus() -> Vec<(String, Value)> {
    let loaded = manifest::load(&[repo("tests/fixtures/corpus")], &mut std::io::empty());
    let mut out = Vec::new();
    for doc in &loaded.documents {
        for item in manifest::items(&doc.value) {
            if item["kind"] == "StatefulSet" {
                out.push((
                    format!("{}:{}", doc.source.file, doc.source.line),
                    item.clone(),
                ));
            }
        }
    }
    out
}

fn namespace_of(value: &Value) -> &str {
    value["metadata"]["namespace"].as_str().unwrap_or("default")
}

#[test]
fn every_corpus_statefulset_gets_the_webhooks_answer() {
    let corpus = corpus();
    assert!(
        corpus.len() >= 40,
        "the corpus has {} StatefulSets",
        corpus.len()
    );
    let clean = rules_baseline();
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    for policy in policies() {
        let compiled = compile(&policy.1);
        for (what, value) in &corpus {
            let ns = namespace_of(value);
            // CREATE; UPDATE from itself (everything grandfathered); UPDATE from a clean one.
            for old in [None, Some(value), Some(&clean)] {
                if let Err(e) = compare(&compiled, &policy, what, value, old, ns, &mut tally) {
                    failures.push(e);
                }
            }
            // And the other way round: a clean StatefulSet replacing this one.
            if let Err(e) = compare(
                &compiled,
                &policy,
                what,
                &clean,
                Some(value),
                ns,
                &mut tally,
            ) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    eprintln!(
        "corpus: {} StatefulSets, {} requests compared, {} violations agreed, {} updates \
         grandfathered by case",
        corpus.len(),
        tally.compared,
        tally.violations,
        tally.by_case
    );
    assert!(tally.violations > 100);
}

#[test]
fn every_captured_review_gets_the_webhooks_answer() {
    let mut tally = Tally::default();
    let mut failures = Vec::new();
    let mut reviews = 0;
    for policy in policies() {
        let compiled = compile(&policy.1);
        for entry in std::fs::read_dir(repo("tests/fixtures/admission")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let review: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let request = &review["request"];
            let judged = request["kind"]["kind"] == "StatefulSet"
                && request["subResource"].is_null()
                && matches!(request["operation"].as_str(), Some("CREATE" | "UPDATE"));
            if !judged {
                continue;
            }
            reviews += 1;
            let old = (request["operation"] == "UPDATE").then(|| &request["oldObject"]);
            let ns = request["namespace"].as_str().unwrap();
            let what = path.file_name().unwrap().to_string_lossy().into_owned();
            if let Err(e) = compare(
                &compiled,
                &policy,
                &what,
                &request["object"],
                old,
                ns,
                &mut tally,
            ) {
                failures.push(e);
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(reviews >= 4 * 4, "{reviews} reviews");
    eprintln!(
        "captured reviews: {reviews} compared, {} violations agreed",
        tally.violations
    );
}

/// A StatefulSet every default rule passes (the rules' own test baseline).
fn rules_baseline() -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": "ns"},
        "spec": {
            "serviceName": "web",
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{
                    "name": "app", "image": "nginx",
                    "readinessProbe": {"httpGet": {"path": "/", "port": 80}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}]
                }]}
            },
            "volumeClaimTemplates": [{
                "metadata": {"name": "data"},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
            }]
        }
    })
}

fn compiled_policies() -> &'static [((String, Policy), Compiled)] {
    static COMPILED: std::sync::OnceLock<Vec<((String, Policy), Compiled)>> =
        std::sync::OnceLock::new();
    COMPILED.get_or_init(|| {
        policies()
            .into_iter()
            .map(|p| {
                let compiled = compile(&p.1);
                (p, compiled)
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(Config { cases: 400, failure_persistence: None, ..Config::default() })]

    #[test]
    fn generated_statefulsets_get_the_webhooks_answer(
        new in statefulset(),
        old in statefulset(),
        update in any::<bool>(),
        namespace in pick(vec!["ns", "legacy", "other"]),
    ) {
        for (policy, compiled) in compiled_policies() {
            let mut tally = Tally::default();
            let old = update.then_some(&old);
            compare(compiled, policy, "generated", &new, old, namespace, &mut tally)
                .map_err(TestCaseError::fail)?;
        }
    }
}

/// What the backstop knowingly does differently, in the safe direction.
#[test]
fn the_backstop_honours_exemptions_whatever_their_date() {
    let (policy_name, policy) = policies().remove(0);
    let compiled = compile(&policy);
    let mut expired = rules_baseline();
    expired["spec"]["serviceName"] = json!("");
    expired["metadata"]["annotations"] = json!({
        "stsguard.io/exempt": "sts-service-name",
        "stsguard.io/exempt-until": "1999-12-31",
    });
    let (sts, json) = cel_env::stored(&expired).unwrap();
    let webhook = webhook_answer(&policy, Operation::Create, "ns", &sts, None);
    assert!(
        webhook.contains(&(Level::Deny, "sts-service-name", "default")),
        "{policy_name}"
    );
    let got = backstop_answer(&compiled, Operation::Create, "ns", &json, None);
    assert!(
        !got.iter().any(|(_, rule, _)| *rule == "sts-service-name"),
        "{got:?}"
    );
}

#[test]
fn rules_needing_lookups_are_not_in_the_backstop() {
    for rule in rules::RULES {
        if rule.needs_lookup {
            assert_eq!(backstop::coverage(rule), Coverage::Lookup);
        }
    }
}

/// The other knowing difference: a list element that starts violating next to one that already
/// did is denied by the webhook (a new field path), admitted by the backstop (the case was
/// already violated).
#[test]
fn the_backstop_grandfathers_list_elements_by_case() {
    let strict = Policy::load(&repo("policies/strict.yaml")).unwrap();
    let compiled = compile(&strict);
    let mut old = rules_baseline();
    old["spec"]["template"]["spec"]["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("readinessProbe");
    let mut new = old.clone();
    new["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "sidecar", "image": "x"}));
    let (old_sts, old_json) = cel_env::stored(&old).unwrap();
    let (new_sts, new_json) = cel_env::stored(&new).unwrap();
    let webhook = webhook_answer(&strict, Operation::Update, "ns", &new_sts, Some(&old_sts));
    assert!(webhook.contains(&(Level::Deny, "sts-readiness-probe", "default")));
    let got = backstop_answer(
        &compiled,
        Operation::Update,
        "ns",
        &new_json,
        Some(&old_json),
    );
    assert!(
        !got.iter()
            .any(|(_, rule, _)| *rule == "sts-readiness-probe"),
        "{got:?}"
    );
    // On CREATE both deny it.
    let got = backstop_answer(&compiled, Operation::Create, "ns", &new_json, None);
    assert!(got.contains(&(Level::Deny, "sts-readiness-probe", "default")));
}

/// One voice: while an endpoint of the webhook's Service is ready (or its readiness unknown, as
/// the EndpointSlice API says to read it), every validation passes, whatever the object, so the
/// user reads the webhook alone.
#[test]
fn the_backstop_is_silent_while_the_webhook_is_ready() {
    let mut unknown = slice(Some(true));
    unknown["endpoints"][0]
        .as_object_mut()
        .unwrap()
        .remove("conditions");
    let corpus = corpus();
    let mut spoke_when_gone = 0;
    for (_, policy) in policies() {
        let compiled = compile(&policy);
        for (_, value) in &corpus {
            let Some((_, json)) = cel_env::stored(value) else {
                continue;
            };
            for (params, ready) in [
                (slice(Some(true)), true),
                (unknown.clone(), true),
                (slice(None), false),
            ] {
                let request = Request {
                    operation: "CREATE",
                    namespace: namespace_of(value),
                    object: &json,
                    old: None,
                    params: &params,
                };
                for policy in &compiled.policies {
                    let ctx = cel_env::context(&compiled.env, &policy.variables, &request);
                    let failed = policy
                        .validations
                        .iter()
                        .filter(|(v, _)| v.execute(&ctx).unwrap() == Cel::Bool(false))
                        .count();
                    if ready {
                        assert_eq!(failed, 0, "the backstop spoke beside the webhook: {json}");
                    } else {
                        spoke_when_gone += failed;
                    }
                }
            }
        }
    }
    assert!(spoke_when_gone > 50, "{spoke_when_gone}");
}
