//! What a user reads, in each state of the webhook: the API server's admission chain played in
//! its order (k8s.io/apiserver: mutating admission policies, then mutating webhooks, then
//! validating admission policies, then validating webhooks; the first denial ends the request),
//! with the generated backstop evaluated by the `cel` crate and the webhook answered by the same
//! `Reviewer` the server runs, and printed as `kubectl` prints it.
//!
//! - Webhook ready (an endpoint of its Service is ready): the backstop says nothing and mutates
//!   nothing, so the user reads exactly what the webhook alone says.
//! - Webhook gone: the webhook is not reached (failurePolicy Ignore), and the backstop names each
//!   violated rule case exactly once; it denies exactly when the webhook's in-object rules would.
//! - After a policy reload (the leader applies the backstop from the new policy): both hold for
//!   the new policy.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use cel::{Env, Program, Value as Cel};
use serde_json::{Value, json};
use stsguard::{
    admit::{self, Chain, Classified},
    backstop::{self, Coverage, Kinds},
    evaluate::Outcome,
    lookup::{InMemory, NoLookup},
    manifest,
    policy::Policy,
    review::{Endpoint, Reviewer},
    subject::Operation,
};

#[allow(dead_code)]
#[path = "backstop_equivalence/cel_env.rs"]
mod cel_env;
#[path = "backstop_mutating/map.rs"]
mod map;

/// The compiled validating backstop.
struct Validating {
    env: Arc<Env>,
    policies: Vec<CompiledPolicy>,
}

/// One policy: its name (its binding's too), its binding's actions, its variables and
/// validations.
type CompiledPolicy = (String, Vec<String>, Vec<(String, Program)>, Vec<Validation>);

struct Validation {
    expression: Program,
    message: Option<Program>,
    fixed: String,
}

impl Validating {
    fn of(policy: &Policy) -> Validating {
        let env = cel_env::env();
        let documents = cel_env::documents(policy, Kinds::Validating);
        let policies = documents
            .iter()
            .filter(|d| d["kind"] == "ValidatingAdmissionPolicy")
            .map(|vap| {
                let name = vap["metadata"]["name"].as_str().unwrap().to_owned();
                let binding = documents
                    .iter()
                    .find(|d| {
                        d["kind"] == "ValidatingAdmissionPolicyBinding"
                            && d["spec"]["policyName"] == name.as_str()
                    })
                    .unwrap();
                let actions = binding["spec"]["validationActions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().to_owned())
                    .collect();
                let validations = vap["spec"]["validations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| Validation {
                        expression: cel_env::compile(&env, v["expression"].as_str().unwrap()),
                        message: v["messageExpression"]
                            .as_str()
                            .map(|m| cel_env::compile(&env, m)),
                        fixed: v["message"].as_str().unwrap_or_default().to_owned(),
                    })
                    .collect();
                (
                    name,
                    actions,
                    cel_env::variables(&env, &vap["spec"]),
                    validations,
                )
            })
            .collect();
        Validating { env, policies }
    }

    /// The validating admission policy plugin: warnings, and the first denial if any (as
    /// `admission.NewForbidden` words it; the binding is named like its policy).
    fn admit(&self, object: &Value, namespace: &str, params: &Value, shown: &mut Shown) {
        let request = cel_env::Request {
            operation: "CREATE",
            namespace,
            object,
            old: None,
            params,
        };
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        for (policy, actions, variables, validations) in &self.policies {
            let ctx = cel_env::context(&self.env, variables, &request);
            for v in validations {
                if v.expression.execute(&ctx).unwrap() == Cel::Bool(true) {
                    continue;
                }
                let message = match v.message.as_ref().map(|m| m.execute(&ctx)) {
                    Some(Ok(Cel::String(text))) => text.to_string(),
                    _ => v.fixed.clone(),
                };
                for action in actions {
                    match action.as_str() {
                        "Deny" if shown.error.is_none() => {
                            shown.error = Some(format!(
                                "statefulsets.apps {name:?} is forbidden: ValidatingAdmissionPolicy \
                                 '{policy}' with binding '{policy}' denied request: {message}"
                            ))
                        }
                        "Warn" => shown.warnings.push(format!(
                            "Validation failed for ValidatingAdmissionPolicy '{policy}' with \
                             binding '{policy}': {message}"
                        )),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// What `kubectl create` prints: its warnings, then the error if the request was refused.
#[derive(Debug, Default, PartialEq)]
struct Shown {
    warnings: Vec<String>,
    error: Option<String>,
}

impl Shown {
    fn lines(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .warnings
            .iter()
            .map(|w| format!("Warning: {w}"))
            .collect();
        if let Some(error) = &self.error {
            lines.push(format!("Error from server (Forbidden): {error}"));
        }
        lines
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Ready,
    Gone,
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(future)
}

/// The webhook's answer to a review of `object`: its patch and response. Its cluster facts are
/// an empty cluster's, as a webhook with synced caches in a cluster with nothing else in it.
fn webhook(reviewer: &Reviewer, endpoint: Endpoint, object: &Value, namespace: &str) -> Value {
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "0f1c", "kind": {"group": "apps", "version": "v1", "kind": "StatefulSet"},
            "resource": {"group": "apps", "version": "v1", "resource": "statefulsets"},
            "requestKind": {"group": "apps", "version": "v1", "kind": "StatefulSet"},
            "requestResource": {"group": "apps", "version": "v1", "resource": "statefulsets"},
            "name": object["metadata"]["name"], "namespace": namespace, "operation": "CREATE",
            "userInfo": {"username": "alice"}, "object": object, "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    });
    let body = serde_json::to_vec(&review).unwrap();
    let answer = block_on(reviewer.review(endpoint, &body)).unwrap();
    serde_json::from_slice::<Value>(&answer.to_json().unwrap()).unwrap()["response"].clone()
}

/// A CREATE of `object` through the whole chain, with the webhook in `state`.
fn create(policy: &Policy, object: &Value, namespace: &str, state: State) -> Shown {
    let params = cel_env::slice(Some(state == State::Ready));
    let reviewer = Reviewer::new(Arc::new(policy.clone()), Arc::new(InMemory::new()));
    let mut shown = Shown::default();
    // Mutating admission policies, then mutating webhooks.
    let mut object = object.clone();
    if let Some(map) = map::Map::of(policy, str::to_owned) {
        let ops = map.ops(namespace, &object, &params);
        if state == State::Ready {
            assert_eq!(
                ops,
                Vec::<Value>::new(),
                "the mutating policy acted beside the webhook"
            );
        }
        object = map::patched(&object, ops).unwrap();
    }
    if state == State::Ready {
        let response = webhook(&reviewer, Endpoint::Mutate, &object, namespace);
        if let Some(patch) = response["patch"].as_str() {
            let ops: Vec<Value> = serde_json::from_slice(&BASE64.decode(patch).unwrap()).unwrap();
            object = map::patched(&object, ops).unwrap();
        }
    }
    // Validating admission policies, then validating webhooks; the first denial ends it.
    Validating::of(policy).admit(&object, namespace, &params, &mut shown);
    if state == State::Ready {
        assert_eq!(
            shown,
            Shown::default(),
            "the backstop spoke beside the webhook"
        );
        let response = webhook(&reviewer, Endpoint::Validate, &object, namespace);
        for warning in response["warnings"].as_array().into_iter().flatten() {
            shown.warnings.push(warning.as_str().unwrap().to_owned());
        }
        if response["allowed"] == false {
            shown.error = Some(format!(
                "admission webhook \"validate.stsguard.io\" denied the request: {}",
                response["status"]["message"].as_str().unwrap()
            ));
        }
    }
    shown
}

/// The webhook's own output for the request, with no backstop at all.
fn webhook_alone(policy: &Policy, object: &Value, namespace: &str) -> Shown {
    let reviewer = Reviewer::new(Arc::new(policy.clone()), Arc::new(InMemory::new()));
    let mut object = object.clone();
    let response = webhook(&reviewer, Endpoint::Mutate, &object, namespace);
    if let Some(patch) = response["patch"].as_str() {
        let ops: Vec<Value> = serde_json::from_slice(&BASE64.decode(patch).unwrap()).unwrap();
        object = map::patched(&object, ops).unwrap();
    }
    let response = webhook(&reviewer, Endpoint::Validate, &object, namespace);
    Shown {
        warnings: response["warnings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|w| w.as_str().unwrap().to_owned())
            .collect(),
        error: (response["allowed"] == false).then(|| {
            format!(
                "admission webhook \"validate.stsguard.io\" denied the request: {}",
                response["status"]["message"].as_str().unwrap()
            )
        }),
    }
}

/// The in-object rule cases the webhook finds after its own mutation, with whether any denies.
fn in_object(policy: &Policy, object: &Value, namespace: &str) -> (Vec<String>, bool) {
    let Classified::Object(sts) = admit::classify(object) else {
        panic!("not a StatefulSet: {object}")
    };
    let chain = Chain {
        policy,
        lookup: &NoLookup,
        today: "2000-01-01".parse().unwrap(),
    };
    let admitted = chain.admit(Operation::Create, namespace, sts, None);
    let mut cases = Vec::new();
    let mut denied = false;
    for v in &admitted.verdict.violations {
        if backstop::coverage(v.rule) != Coverage::Cel {
            continue;
        }
        match v.outcome {
            Outcome::Denied => denied = true,
            Outcome::Warned | Outcome::Audited => {}
            Outcome::Exempted { .. } | Outcome::Grandfathered => continue,
        }
        let rule = stsguard::rules::find(v.rule.id).unwrap();
        let case = if rule.cases.len() > 1 {
            format!("{} ({})", v.rule.id, v.finding.case)
        } else {
            v.rule.id.to_owned()
        };
        if !cases.contains(&case) {
            cases.push(case);
        }
    }
    (cases, denied)
}

fn repo(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Every StatefulSet CREATE to play: the corpus and the captured reviews, as the API server
/// holds them (typed and defaulted), with their namespaces.
fn creates() -> Vec<(String, Value, String)> {
    let stored = |value: &Value| cel_env::stored(value).map(|(_, json)| json);
    let mut out = Vec::new();
    let loaded = manifest::load(&[repo("tests/fixtures/corpus")], &mut std::io::empty());
    for doc in &loaded.documents {
        for item in manifest::items(&doc.value) {
            if let Some(object) = stored(item) {
                let ns = item["metadata"]["namespace"].as_str().unwrap_or("default");
                let what = format!("{}:{}", doc.source.file, doc.source.line);
                out.push((what, object, ns.to_owned()));
            }
        }
    }
    for entry in std::fs::read_dir(repo("tests/fixtures/admission")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.contains("StatefulSet-CREATE") {
            continue;
        }
        let review: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let request = &review["request"];
        if let Some(object) = stored(&request["object"]) {
            out.push((
                name,
                object,
                request["namespace"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert!(out.len() >= 50, "{} creates", out.len());
    out
}

fn policies() -> Vec<(&'static str, Policy)> {
    vec![
        ("built-in", Policy::builtin()),
        (
            "strict",
            Policy::load(&repo("policies/strict.yaml")).unwrap(),
        ),
        ("audit", Policy::load(&repo("policies/audit.yaml")).unwrap()),
    ]
}

/// How often the printed output names each rule case: `<rule>[ (<case>)] at <path>` (the
/// backstop, and the webhook's denial) or `<rule> <path>` (the webhook's warnings).
fn mentions(shown: &Shown) -> Vec<String> {
    let text = shown.lines().join("\n");
    let mut found = Vec::new();
    for rule in stsguard::rules::RULES {
        for case in rule.cases {
            let named = if rule.cases.len() > 1 {
                format!("{} ({})", rule.id, case.name)
            } else {
                rule.id.to_owned()
            };
            let times = text.matches(&format!("{named} at ")).count()
                + text.matches(&format!("{named} spec.")).count();
            found.extend(std::iter::repeat_n(named.clone(), times));
        }
    }
    found.sort();
    found
}

#[test]
fn with_the_webhook_ready_the_user_reads_the_webhook_alone() {
    let creates = creates();
    let mut spoke = 0;
    for (policy_name, policy) in policies() {
        for (what, object, ns) in &creates {
            let shown = create(&policy, object, ns, State::Ready);
            assert_eq!(
                shown,
                webhook_alone(&policy, object, ns),
                "{policy_name}: {what}"
            );
            spoke += usize::from(shown != Shown::default());
        }
    }
    assert!(spoke > 50, "the webhook said something {spoke} times");
}

#[test]
fn with_the_webhook_gone_each_violated_case_is_named_once() {
    let creates = creates();
    let (mut denied, mut named) = (0, 0);
    for (policy_name, policy) in policies() {
        for (what, object, ns) in &creates {
            let shown = create(&policy, object, ns, State::Gone);
            let (mut cases, deny) = in_object(&policy, object, ns);
            cases.sort();
            let context = format!("{policy_name}: {what}: {:#?}", shown.lines());
            // One voice: the backstop's, each case once, denying as the webhook would.
            assert_eq!(mentions(&shown), cases, "{context}");
            assert_eq!(shown.error.is_some(), deny, "{context}");
            for line in shown.lines() {
                assert!(
                    line.contains("ValidatingAdmissionPolicy 'stsguard-backstop-"),
                    "{context}"
                );
            }
            denied += usize::from(deny);
            named += cases.len();
        }
    }
    assert!(
        denied > 10 && named > 100,
        "{denied} denied, {named} cases named"
    );
}

/// A reload that turns `sts-service-name` from deny to warn reaches both voices: the webhook
/// and the backstop the leader applies from the new policy. What a user reads for a
/// StatefulSet without `serviceName` (the captured `nosvc` review), before and after.
#[test]
fn a_policy_reload_changes_what_both_voices_say() {
    let review: Value = serde_json::from_str(
        &std::fs::read_to_string(repo(
            "tests/fixtures/admission/validate-StatefulSet-CREATE-cap-nosvc-1.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let object = &review["request"]["object"];
    let ns = review["request"]["namespace"].as_str().unwrap();
    let before = Policy::builtin();
    let after = Policy::from_yaml("rules: {sts-service-name: warn}", "reloaded").unwrap();

    let ready = create(&before, object, ns, State::Ready).lines();
    assert_eq!(ready.len(), 1, "{ready:#?}");
    assert!(
        ready[0].starts_with(
            "Error from server (Forbidden): admission webhook \"validate.stsguard.io\" denied \
             the request: stsguard denied StatefulSet \"nosvc\": 1 violation\n- sts-service-name \
             at spec.serviceName: "
        ),
        "{ready:#?}"
    );
    let gone = create(&before, object, ns, State::Gone).lines();
    assert_eq!(gone.len(), 1, "{gone:#?}");
    assert!(
        gone[0].starts_with(
            "Error from server (Forbidden): statefulsets.apps \"nosvc\" is forbidden: \
             ValidatingAdmissionPolicy 'stsguard-backstop-deny' with binding \
             'stsguard-backstop-deny' denied request: stsguard backstop (the webhook is not \
             answering): 1 violation: sts-service-name at spec.serviceName: "
        ),
        "{gone:#?}"
    );

    for state in [State::Ready, State::Gone] {
        let shown = create(&after, object, ns, state);
        assert_eq!(shown.error, None, "{state:?}: {shown:#?}");
        assert_eq!(
            mentions(&shown),
            ["sts-service-name"],
            "{state:?}: {shown:#?}"
        );
    }
    let gone = create(&after, object, ns, State::Gone);
    assert!(
        gone.warnings[0].starts_with(
            "Validation failed for ValidatingAdmissionPolicy 'stsguard-backstop-warn' with \
             binding 'stsguard-backstop-warn': sts-service-name at spec.serviceName: "
        ),
        "{gone:#?}"
    );
}
