//! The leader keeps the backstop applied from the policy in force, between a real `stsguard
//! serve` and the fake API server: scoped by its ConfigMap, policies before bindings, owned by
//! the release's ClusterRole, following a hot reload of the policy file, removed when the
//! ConfigMap goes and by `stsguard webhooks remove`; and no MutatingAdmissionPolicy where the
//! API server does not serve it.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{
    apiserver::{FakeApiServer, Kind, eventually},
    process::{Running, start_with_env, stsguard},
};

const NAME: &str = "stsguard-backstop";

/// Every kind the backstop is made of.
const KINDS: [Kind; 4] = [
    Kind::ValidatingAdmissionPolicy,
    Kind::ValidatingAdmissionPolicyBinding,
    Kind::MutatingAdmissionPolicy,
    Kind::MutatingAdmissionPolicyBinding,
];

fn scope_configmap() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": NAME, "namespace": "default"},
        "data": {"backstop.yaml": "webhookService: {namespace: default, name: stsguard}\n\
            matchResources:\n  namespaceSelector:\n    matchExpressions:\n    \
            - {key: kubernetes.io/metadata.name, operator: NotIn, values: [default, kube-system]}\n"}
    })
}

fn owner() -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "stsguard", "uid": "7d1e-owner"},
        "rules": []
    })
}

fn replica(dir: &std::path::Path, kubeconfig: &str, policy: &str) -> Running {
    start_with_env(
        dir,
        &[
            "--kubeconfig",
            kubeconfig,
            "--leader-lease-duration",
            "3s",
            "--drain-delay",
            "0s",
            "--policy",
            policy,
            "--watch-policy",
            "--policy-reload-interval",
            "200ms",
            "--registration-resync",
            "1s",
            "--backstop",
            NAME,
            "--webhook-owner-cluster-role",
            "stsguard",
        ],
        &[("POD_NAME", "replica-a")],
    )
}

fn variables(object: &Value) -> Vec<String> {
    object["spec"]["variables"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect()
}

fn actions(fake: &FakeApiServer, name: &str) -> Option<Value> {
    fake.get(Kind::ValidatingAdmissionPolicyBinding, "", name)
        .map(|b| b["spec"]["validationActions"].clone())
}

/// The first write to a path containing `what`, as an index into the requests.
fn first_write(fake: &FakeApiServer, what: &str) -> Option<usize> {
    fake.requests()
        .iter()
        .position(|r| !r.starts_with("GET ") && r.contains(what))
}

#[tokio::test]
async fn the_leader_applies_the_backstop_and_follows_the_policy() {
    let fake = FakeApiServer::start().await;
    fake.apply(scope_configmap());
    fake.apply(owner());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "rules: {sts-pod-anti-affinity: warn}\n").unwrap();
    let _a = replica(
        dir.path(),
        kubeconfig.to_str().unwrap(),
        policy.to_str().unwrap(),
    );

    eventually(
        "the backstop is applied",
        Duration::from_secs(20),
        || async { KINDS.iter().all(|kind| !fake.objects(*kind).is_empty()) },
    )
    .await;
    let deny = fake
        .get(Kind::ValidatingAdmissionPolicy, "", &format!("{NAME}-deny"))
        .unwrap();
    let binding = fake
        .get(
            Kind::ValidatingAdmissionPolicyBinding,
            "",
            &format!("{NAME}-deny"),
        )
        .unwrap();
    // Scoped as the ConfigMap says: it steps aside for the webhook's Service, and is bound where
    // the webhooks are.
    assert_eq!(
        binding["spec"]["paramRef"]["selector"]["matchLabels"]["kubernetes.io/service-name"],
        "stsguard"
    );
    assert_eq!(binding["spec"]["paramRef"]["namespace"], "default");
    assert_eq!(
        binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"][0]["values"],
        json!(["default", "kube-system"])
    );
    assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    for object in [&deny, &binding] {
        assert_eq!(
            object["metadata"]["ownerReferences"][0]["uid"],
            "7d1e-owner"
        );
    }
    assert!(variables(&deny).contains(&"sts_service_name_default".to_owned()));
    let warn = fake
        .get(Kind::ValidatingAdmissionPolicy, "", &format!("{NAME}-warn"))
        .unwrap();
    assert!(variables(&warn).contains(&"sts_pod_anti_affinity_default".to_owned()));
    // A binding is checked against its policy's paramKind: the policy goes first.
    let policy_at = first_write(&fake, "/validatingadmissionpolicies/").unwrap();
    let binding_at = first_write(&fake, "/validatingadmissionpolicybindings/").unwrap();
    assert!(policy_at < binding_at, "{:?}", fake.requests());

    // A hot reload reaches the API server's own enforcement, with no Helm upgrade.
    std::fs::write(
        &policy,
        "mode: audit\nrules: {sts-service-name: warn, sts-pod-anti-affinity: warn}\n",
    )
    .unwrap();
    eventually(
        "the reloaded policy is applied",
        Duration::from_secs(20),
        || async {
            let warn = fake.get(Kind::ValidatingAdmissionPolicy, "", &format!("{NAME}-warn"));
            actions(&fake, &format!("{NAME}-deny")) == Some(json!(["Audit", "Warn"]))
                && warn
                    .is_some_and(|w| variables(&w).contains(&"sts_service_name_default".to_owned()))
        },
    )
    .await;
    let deny = fake
        .get(Kind::ValidatingAdmissionPolicy, "", &format!("{NAME}-deny"))
        .unwrap();
    assert!(!variables(&deny).contains(&"sts_service_name_default".to_owned()));

    // A level the policy no longer has is removed, binding and policy.
    std::fs::write(
        &policy,
        "rules: {sts-pod-anti-affinity: deny, sts-readiness-probe: deny, sts-update-strategy: deny, \
         sts-rolling-update-partition: deny, sts-termination-grace: deny, \
         sts-pod-management-policy: deny, sts-vct-volatile-labels: deny, sts-pvc-retention: deny, \
         sts-volume-claim-templates: deny}\n",
    )
    .unwrap();
    eventually(
        "the warn level is removed",
        Duration::from_secs(20),
        || async {
            fake.get(Kind::ValidatingAdmissionPolicy, "", &format!("{NAME}-warn"))
                .is_none()
                && actions(&fake, &format!("{NAME}-warn")).is_none()
        },
    )
    .await;
    assert!(actions(&fake, &format!("{NAME}-deny")).is_some());

    // Without its ConfigMap (switched off by an upgrade) the backstop goes.
    fake.delete(Kind::ConfigMap, "default", NAME);
    eventually(
        "the backstop is removed",
        Duration::from_secs(20),
        || async { KINDS.iter().all(|kind| fake.objects(*kind).is_empty()) },
    )
    .await;
}

#[tokio::test]
async fn webhooks_remove_takes_the_backstop_and_an_old_api_server_gets_no_mutating_policy() {
    let fake = FakeApiServer::start().await;
    fake.before_1_36();
    fake.apply(scope_configmap());
    fake.apply(owner());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "rules: {}\n").unwrap();
    let _a = replica(
        dir.path(),
        kubeconfig.to_str().unwrap(),
        policy.to_str().unwrap(),
    );
    eventually(
        "the validating backstop is applied",
        Duration::from_secs(20),
        || async { fake.objects(Kind::ValidatingAdmissionPolicyBinding).len() == 2 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        first_write(&fake, "mutatingadmissionpolic"),
        None,
        "no MutatingAdmissionPolicy before 1.36: {:?}",
        fake.requests()
    );

    // Off the runtime's thread: the fake API server answers on it.
    let out = tokio::task::spawn_blocking(move || {
        stsguard()
            .args(["webhooks", "remove", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--namespace", "default", "--backstop", NAME])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("deleted ConfigMap default/{NAME}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("deleted ValidatingAdmissionPolicy {NAME}-deny")),
        "{stderr}"
    );
    assert!(fake.objects(Kind::ValidatingAdmissionPolicy).is_empty());
    assert!(
        fake.objects(Kind::ValidatingAdmissionPolicyBinding)
            .is_empty()
    );
    // The leader finds no ConfigMap: it puts nothing back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(fake.objects(Kind::ValidatingAdmissionPolicy).is_empty());
}
