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

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
};

use cel::{Context, Program, Value as Cel};
use generated::{pick, statefulset};
use jiff::civil::Date;
use k8s_openapi::api::{
    admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding},
    apps::v1::StatefulSet,
};
use proptest::{prelude::*, test_runner::Config};
use serde_json::{Value, json};
#[path = "backstop_equivalence/generated.rs"]
mod generated;

use stsguard::{
    admit::{self, Classified},
    backstop::{self, Coverage},
    evaluate::{Input, Outcome, evaluate},
    lookup::NoLookup,
    manifest,
    policy::Policy,
    rules,
    subject::{Object, Operation, Subject},
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

/// A compiled backstop: each policy's variables and validations, with the rule case each
/// validation enforces and whether its binding denies.
struct Compiled {
    policies: Vec<CompiledPolicy>,
}

struct CompiledPolicy {
    level: Level,
    variables: Vec<(String, Program)>,
    validations: Vec<((&'static str, &'static str), Program)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Deny,
    Audit,
    Warn,
}

fn compile(policy: &Policy) -> Compiled {
    let generated = backstop::generate(policy, backstop::DEFAULT_NAME);
    // Through YAML and back, so what is compared is what is printed.
    let text = backstop::yaml(&generated, "test").unwrap();
    let mut vaps: Vec<ValidatingAdmissionPolicy> = Vec::new();
    let mut bindings: Vec<ValidatingAdmissionPolicyBinding> = Vec::new();
    for doc in text.split("\n---\n") {
        let value: Value = serde_saphyr::from_str(doc).unwrap();
        match value["kind"].as_str() {
            Some("ValidatingAdmissionPolicy") => vaps.push(serde_json::from_value(value).unwrap()),
            Some("ValidatingAdmissionPolicyBinding") => {
                bindings.push(serde_json::from_value(value).unwrap())
            }
            other => panic!("unexpected document {other:?}"),
        }
    }
    assert_eq!(vaps.len(), generated.objects.len());
    let compile = |expr: &str| {
        Program::compile(expr).unwrap_or_else(|e| panic!("cel cannot parse {expr}: {e:?}"))
    };
    let policies = vaps
        .iter()
        .map(|vap| {
            let name = vap.metadata.name.as_deref().unwrap();
            let binding = bindings
                .iter()
                .find(|b| b.spec.policy_name == name)
                .unwrap();
            let actions = binding.spec.validation_actions.clone();
            let level = match actions.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                ["Deny"] => Level::Deny,
                ["Audit", "Warn"] => Level::Audit,
                ["Warn"] => Level::Warn,
                ref other => panic!("unexpected actions {other:?}"),
            };
            let spec = vap.spec.as_ref().unwrap();
            assert_eq!(spec.failure_policy.as_deref(), Some("Ignore"));
            CompiledPolicy {
                level,
                variables: spec
                    .variables
                    .iter()
                    .flatten()
                    .map(|v| (v.name.clone(), compile(&v.expression)))
                    .collect(),
                validations: spec
                    .validations
                    .iter()
                    .flatten()
                    .map(|v| (backstop::check_of(v).unwrap(), compile(&v.expression)))
                    .collect(),
            }
        })
        .collect();
    Compiled { policies }
}

/// JSON as the API server hands it to CEL: integers as int, no nulls.
fn cel_value(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map_or_else(|| Cel::Float(n.as_f64().unwrap()), Cel::Int),
        Value::String(s) => Cel::String(Arc::new(s.clone())),
        Value::Array(items) => Cel::List(Arc::new(items.iter().map(cel_value).collect())),
        Value::Object(map) => Cel::from(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), cel_value(v)))
                .collect::<HashMap<String, Cel>>(),
        ),
    }
}

type Answer = BTreeSet<(Level, &'static str, &'static str)>;

/// The failing validations of the backstop for one request.
fn backstop_answer(
    compiled: &Compiled,
    operation: Operation,
    namespace: &str,
    new: &Value,
    old: Option<&Value>,
) -> Answer {
    let mut answer = Answer::new();
    for policy in &compiled.policies {
        let mut ctx = Context::default();
        ctx.add_variable_from_value("object", cel_value(new));
        ctx.add_variable_from_value("oldObject", old.map_or(Cel::Null, cel_value));
        ctx.add_variable_from_value(
            "request",
            cel_value(&json!({"operation": operation.as_str(), "namespace": namespace})),
        );
        let mut variables: HashMap<String, Cel> = HashMap::new();
        for (name, program) in &policy.variables {
            ctx.add_variable_from_value("variables", Cel::from(variables.clone()));
            let value = program
                .execute(&ctx)
                .unwrap_or_else(|e| panic!("variable {name} fails: {e:?}"));
            variables.insert(name.clone(), value);
        }
        ctx.add_variable_from_value("variables", Cel::from(variables));
        for ((rule, case), program) in &policy.validations {
            match program.execute(&ctx) {
                Ok(Cel::Bool(true)) => {}
                Ok(Cel::Bool(false)) => {
                    answer.insert((policy.level, *rule, *case));
                }
                other => panic!("{rule} {case}: {other:?} for {new}"),
            }
        }
    }
    answer
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

/// What the API server would hold for this StatefulSet, typed and as JSON; `None` when it is
/// not one.
fn stored(value: &Value) -> Option<(StatefulSet, Value)> {
    let object = match admit::classify(value) {
        Classified::Object(o) | Classified::Legacy(o, _) => admit::default(o),
        _ => return None,
    };
    let Object::StatefulSet(sts) = object else {
        return None;
    };
    let json = serde_json::to_value(sts.as_ref()).unwrap();
    Some((sts.as_ref().clone(), json))
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
    let Some((new_sts, new_json)) = stored(new) else {
        return Ok(());
    };
    let old = old.and_then(stored);
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
    let (sts, json) = stored(&expired).unwrap();
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

/// `stsguard policy export --format vap` prints what `backstop::yaml` writes, for the built-in
/// policy and with the command line's overrides.
#[test]
fn the_command_prints_the_backstop() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stsguard"))
            .args(["policy", "export"])
            .args(args)
            .env_remove("STSGUARD_POLICY")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, stdout, _) = run(&["--format", "vap"]);
    assert_eq!(code, Some(0));
    let expected = backstop::generate(&Policy::builtin(), backstop::DEFAULT_NAME);
    assert_eq!(
        stdout,
        backstop::yaml(&expected, "the built-in policy").unwrap()
    );

    let policy = repo("policies/strict.yaml");
    let (code, stdout, _) = run(&[
        "--policy",
        policy.to_str().unwrap(),
        "--mode",
        "audit",
        "--name",
        "guard",
        "--rule",
        "sts-readiness-probe=off",
        "--exclude-namespace",
        "kube-system",
        "--exclude-namespace",
        "stsguard",
    ]);
    assert_eq!(code, Some(0));
    assert!(stdout.contains("name: guard-deny"), "{stdout}");
    assert!(stdout.contains("- Audit\n  - Warn"), "{stdout}");
    assert!(
        stdout.contains("sts-service-name at spec.serviceName: "),
        "{stdout}"
    );
    assert!(!stdout.contains("sts-readiness-probe at"), "{stdout}");
    assert!(
        !stdout.contains("guard-warn"),
        "strict has no warn-level case: {stdout}"
    );

    let (code, _, stderr) = run(&["--rule", "sts-nope=deny"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("sts-nope"), "{stderr}");
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
    let (old_sts, old_json) = stored(&old).unwrap();
    let (new_sts, new_json) = stored(&new).unwrap();
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
