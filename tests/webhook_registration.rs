//! Registration after ready and self-managed certificates, between real `stsguard serve`
//! processes and the fake API server: the first replica creates the certificate Secret and
//! registers the webhook configurations only once it is ready (its caches synced), with the
//! Secret's CA as caBundle; a second replica serves the same certificate and writes nothing;
//! `stsguard webhooks remove` deletes the registration source first, then the configurations;
//! a replica that is shutting down does not register again.

mod support;

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde_json::{Value, json};
use support::{
    apiserver::{FakeApiServer, Kind, eventually},
    process::{Running, probe_get, sigterm, start_with_env, stsguard, wait},
};

#[path = "support/served.rs"]
mod served;

const CONFIGMAP: &str = "stsguard-webhooks";
const SECRET: &str = "stsguard-certs";

/// The two configurations as the chart renders them into the registration ConfigMap.
fn registration_configmap() -> Value {
    let hook = |name: &str, path: &str| {
        format!(
            "  - name: {name}\n    admissionReviewVersions: [v1]\n    sideEffects: None\n    \
             timeoutSeconds: 3\n    failurePolicy: Ignore\n    clientConfig:\n      service:\n        \
             name: stsguard\n        namespace: default\n        path: {path}\n    rules:\n      \
             - apiGroups: [apps]\n        apiVersions: [v1]\n        resources: [statefulsets]\n        \
             operations: [CREATE]\n"
        )
    };
    // The chart renders the default policy's condition; `true` stands for one the leader must
    // replace with the condition of the policy in force.
    let condition = "    matchConditions:\n      - name: stsguard-mutators-could-act\n        \
                     expression: 'true'\n";
    let object = |kind: &str, hook: String| {
        format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: {kind}\nmetadata:\n  name: stsguard\n  \
             labels:\n    app.kubernetes.io/name: stsguard\nwebhooks:\n{hook}"
        )
    };
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP, "namespace": "default"},
        "data": {
            "validating.yaml": object("ValidatingWebhookConfiguration", hook("validate.stsguard.io", "/validate")),
            "mutating.yaml": object("MutatingWebhookConfiguration", hook("mutate.stsguard.io", "/mutate") + condition),
        }
    })
}

/// The chart's ClusterRole, which owns the registered configurations.
fn owner() -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "stsguard", "uid": "0b5c3d4e-owner"},
        "rules": []
    })
}

/// The webhook Service's endpoints, as the EndpointSlice controller writes them.
fn endpoints(ready: bool) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "stsguard-x7k2p", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "stsguard"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.7"], "conditions": {"ready": ready}}],
        "ports": [{"port": 8443, "protocol": "TCP"}]
    })
}

fn replica(dir: &std::path::Path, kubeconfig: &str, name: &str, extra: &[&str]) -> Running {
    let mut args = vec![
        "--kubeconfig",
        kubeconfig,
        "--leader-lease-duration",
        "3s",
        "--cert-secret",
        SECRET,
        "--cert-dns-name",
        "localhost",
        "--register-webhooks",
        CONFIGMAP,
        "--registration-resync",
        "1s",
        "--webhook-owner-cluster-role",
        "stsguard",
        "--webhook-service",
        "stsguard",
    ];
    args.extend_from_slice(extra);
    start_with_env(dir, &args, &[("POD_NAME", name)])
}

/// The CA bundle (PEM) a webhook configuration carries, if it is registered.
fn registered_bundle(fake: &FakeApiServer, kind: Kind) -> Option<String> {
    let object = fake.get(kind, "", "stsguard")?;
    let b64 = object["webhooks"][0]["clientConfig"]["caBundle"].as_str()?;
    String::from_utf8(BASE64.decode(b64).ok()?).ok()
}

fn secret_key(fake: &FakeApiServer, key: &str) -> Option<String> {
    let secret = fake.get(Kind::Secret, "default", SECRET)?;
    String::from_utf8(BASE64.decode(secret["data"][key].as_str()?).ok()?).ok()
}

/// Writes (anything but GET) to the Secret and the webhook configurations so far.
fn writes(fake: &FakeApiServer) -> Vec<String> {
    fake.requests()
        .into_iter()
        .filter(|r| !r.starts_with("GET "))
        .filter(|r| r.contains("/secrets") || r.contains("webhookconfigurations"))
        .collect()
}

#[tokio::test]
async fn registration_waits_for_ready_and_a_second_replica_only_reads() {
    let fake = FakeApiServer::start().await;
    fake.apply(registration_configmap());
    fake.apply(owner());
    // The pod is not Ready for the kubelet yet: the Service has no ready endpoint.
    fake.apply(endpoints(false));
    // Lists wait: the caches cannot sync, so the replica cannot be ready.
    fake.open_lists(false);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let kubeconfig = kubeconfig.to_str().unwrap();
    let a = replica(
        dir.path(),
        kubeconfig,
        "replica-a",
        &["--drain-delay", "0s"],
    );

    // Not ready: the certificate is made (it is needed to become ready), nothing registered.
    eventually(
        "the leader creates the Secret",
        Duration::from_secs(20),
        || async { secret_key(&fake, "tls.crt").is_some() },
    )
    .await;
    let ca = secret_key(&fake, "ca.crt").unwrap();
    eventually(
        "replica a serves the Secret's certificate",
        Duration::from_secs(10),
        || async {
            served::certificate(&a.addr, &ca).await
                == secret_key(&fake, "tls.crt").and_then(|p| served::der(&p))
        },
    )
    .await;
    let readyz = probe_get(&a.probe, "/readyz").await;
    assert!(readyz.contains("503"), "{readyz}");
    // Several registration passes (every 250 ms, resync 1 s) go by with the replica unready.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        registered_bundle(&fake, Kind::ValidatingWebhookConfiguration),
        None
    );
    assert!(
        fake.objects(Kind::ValidatingWebhookConfiguration)
            .is_empty()
    );
    assert!(fake.objects(Kind::MutatingWebhookConfiguration).is_empty());

    fake.open_lists(true);
    eventually("replica a is ready", Duration::from_secs(20), || async {
        probe_get(&a.probe, "/readyz").await.contains("200")
    })
    .await;
    // Ready itself, but the API server could not reach it through the Service yet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        fake.objects(Kind::ValidatingWebhookConfiguration)
            .is_empty()
    );
    fake.apply(endpoints(true));
    eventually(
        "both configurations are registered",
        Duration::from_secs(20),
        || async {
            registered_bundle(&fake, Kind::ValidatingWebhookConfiguration).is_some()
                && registered_bundle(&fake, Kind::MutatingWebhookConfiguration).is_some()
        },
    )
    .await;
    assert!(probe_get(&a.probe, "/readyz").await.contains("200"));
    for kind in [
        Kind::ValidatingWebhookConfiguration,
        Kind::MutatingWebhookConfiguration,
    ] {
        assert_eq!(
            registered_bundle(&fake, kind).as_deref(),
            Some(ca.as_str()),
            "{kind:?}"
        );
        let object = fake.get(kind, "", "stsguard").unwrap();
        // Everything else is as the ConfigMap says.
        assert_eq!(object["webhooks"][0]["timeoutSeconds"], 3);
        assert_eq!(
            object["webhooks"][0]["clientConfig"]["service"]["name"],
            "stsguard"
        );
        // Garbage-collected with the ClusterRole if an uninstall skips the pre-delete hook.
        assert_eq!(
            object["metadata"]["ownerReferences"],
            json!([{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                    "name": "stsguard", "uid": "0b5c3d4e-owner"}])
        );
        // The mutating webhook is called only where a mutator of the policy in force (here
        // the built-in one) could act, whatever condition the ConfigMap carried.
        let condition =
            stsguard::backstop::mutators_could_act(&stsguard::policy::Policy::builtin());
        let expected = match kind {
            Kind::MutatingWebhookConfiguration => json!([condition]),
            _ => Value::Null,
        };
        assert_eq!(
            object["webhooks"][0]["matchConditions"], expected,
            "{kind:?}"
        );
    }

    // A second replica serves the same certificate, and neither writes anything more.
    let before = writes(&fake);
    let b = replica(
        dir.path(),
        kubeconfig,
        "replica-b",
        &["--drain-delay", "0s"],
    );
    eventually(
        "replica b serves the Secret's certificate",
        Duration::from_secs(10),
        || async {
            served::certificate(&b.addr, &ca).await
                == secret_key(&fake, "tls.crt").and_then(|p| served::der(&p))
        },
    )
    .await;
    eventually("replica b is ready", Duration::from_secs(10), || async {
        probe_get(&b.probe, "/readyz").await.contains("200")
    })
    .await;
    // Several resyncs of the leader and reads of the follower.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        writes(&fake),
        before,
        "nothing was due, and the follower never writes"
    );

    // Drift: a configuration deleted by hand is registered again by the leader.
    fake.delete(Kind::MutatingWebhookConfiguration, "", "stsguard");
    eventually(
        "the deleted configuration comes back",
        Duration::from_secs(10),
        || async { registered_bundle(&fake, Kind::MutatingWebhookConfiguration).is_some() },
    )
    .await;

    // An uninstall that skips the hook: the owner goes (and the garbage collector takes the
    // configurations); the leader, still running for a moment, registers nothing again.
    fake.delete(Kind::ClusterRole, "", "stsguard");
    fake.delete(Kind::ValidatingWebhookConfiguration, "", "stsguard");
    fake.delete(Kind::MutatingWebhookConfiguration, "", "stsguard");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        fake.objects(Kind::ValidatingWebhookConfiguration)
            .is_empty()
    );
    assert!(fake.objects(Kind::MutatingWebhookConfiguration).is_empty());
    drop(b);
    drop(a);
}

// The removal runs as a child process while this test's runtime serves the fake API server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_deletes_the_source_then_the_configurations_and_stopping_replicas_stay_away() {
    let fake = FakeApiServer::start().await;
    fake.apply(registration_configmap());
    fake.apply(owner());
    fake.apply(endpoints(true));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let kubeconfig = kubeconfig.to_str().unwrap();
    let mut a = replica(
        dir.path(),
        kubeconfig,
        "replica-a",
        &["--drain-delay", "3s"],
    );
    eventually("registered", Duration::from_secs(20), || async {
        registered_bundle(&fake, Kind::ValidatingWebhookConfiguration).is_some()
            && registered_bundle(&fake, Kind::MutatingWebhookConfiguration).is_some()
    })
    .await;

    // An uninstall: SIGTERM first here (the pod is draining), then the hook's removal; a
    // draining leader must not put them back.
    sigterm(&a.child);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = stsguard()
        .args([
            "webhooks",
            "remove",
            "--kubeconfig",
            kubeconfig,
            "--configmap",
            CONFIGMAP,
        ])
        .args([
            "--namespace",
            "default",
            "--validating",
            "stsguard",
            "--mutating",
            "stsguard",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let order: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("DELETE "))
        .collect();
    let position = |what: &str| order.iter().position(|r| r.contains(what)).unwrap();
    assert!(
        position("/configmaps/") < position("validatingwebhookconfigurations")
            && position("/configmaps/") < position("mutatingwebhookconfigurations"),
        "the source goes first: {order:#?}"
    );
    assert!(fake.get(Kind::ConfigMap, "default", CONFIGMAP).is_none());
    assert!(
        fake.objects(Kind::ValidatingWebhookConfiguration)
            .is_empty()
    );
    assert!(fake.objects(Kind::MutatingWebhookConfiguration).is_empty());
    // The draining replica had the ConfigMap back for a moment: it still registers nothing.
    fake.apply(registration_configmap());
    wait(&mut a.child, Duration::from_secs(15)).await;
    assert!(
        fake.objects(Kind::ValidatingWebhookConfiguration)
            .is_empty()
    );
    assert!(fake.objects(Kind::MutatingWebhookConfiguration).is_empty());

    // Removing what is already gone is fine.
    let again = stsguard()
        .args([
            "webhooks",
            "remove",
            "--kubeconfig",
            kubeconfig,
            "--configmap",
            CONFIGMAP,
        ])
        .args(["--validating", "stsguard"])
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}

/// The mutating webhook's matchCondition is the policy in force's: a hot reload that switches
/// a mutator off narrows the registered condition, with no Helm upgrade.
#[tokio::test]
async fn the_mutating_condition_follows_a_policy_reload() {
    let fake = FakeApiServer::start().await;
    fake.apply(registration_configmap());
    fake.apply(owner());
    fake.apply(endpoints(true));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "mode: enforce\n").unwrap();
    let policy_arg = policy.to_str().unwrap();
    let _a = replica(
        dir.path(),
        kubeconfig.to_str().unwrap(),
        "replica-a",
        &[
            "--drain-delay",
            "0s",
            "--policy",
            policy_arg,
            "--watch-policy",
            "--policy-reload-interval",
            "200ms",
        ],
    );
    let registered = || {
        fake.get(Kind::MutatingWebhookConfiguration, "", "stsguard")
            .map(|o| o["webhooks"][0]["matchConditions"].clone())
    };
    let condition = |text: &str| {
        let policy = stsguard::policy::Policy::from_yaml(text, "test").unwrap();
        json!([stsguard::backstop::mutators_could_act(&policy)])
    };
    let before = condition("mode: enforce\n");
    eventually(
        "registered with the policy's condition",
        Duration::from_secs(30),
        || async { registered() == Some(before.clone()) },
    )
    .await;

    let narrower = "mutators: {sts-complete-volume-claim-templates: false}\n";
    std::fs::write(&policy, narrower).unwrap();
    let after = condition(narrower);
    assert_ne!(before, after);
    eventually(
        "the reloaded policy's condition",
        Duration::from_secs(20),
        || async { registered() == Some(after.clone()) },
    )
    .await;
}
