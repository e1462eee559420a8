//! Self-managed certificates over time, with lifetimes of seconds: a real `stsguard serve`
//! renews its serving certificate and rolls its CA through the fake API server's Secret and
//! keeps the registered caBundle current, and at every moment a client that trusts exactly the
//! registered caBundle (as the API server does) completes its handshake with every replica,
//! which swaps certificates without a restart.

mod support;

use std::{collections::BTreeSet, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use serde_json::json;
use support::{
    apiserver::{FakeApiServer, Kind, eventually},
    process::{Running, probe_get, start_with_env},
};

#[path = "support/served.rs"]
mod served;

fn replica(dir: &std::path::Path, kubeconfig: &str, name: &str) -> Running {
    start_with_env(
        dir,
        &[
            "--kubeconfig",
            kubeconfig,
            "--leader-lease-duration",
            "3s",
            "--drain-delay",
            "0s",
            "--cert-secret",
            "certs",
            "--cert-dns-name",
            "localhost",
            "--ca-validity",
            "15s",
            "--cert-validity",
            "9s",
            "--ca-roll-overlap",
            "2s",
            "--register-webhooks",
            "hooks",
        ],
        &[("POD_NAME", name)],
    )
}

fn configmap() -> serde_json::Value {
    let validating = [
        "apiVersion: admissionregistration.k8s.io/v1",
        "kind: ValidatingWebhookConfiguration",
        "metadata: {name: stsguard}",
        "webhooks:",
        "  - name: validate.stsguard.io",
        "    admissionReviewVersions: [v1]",
        "    sideEffects: None",
        "    clientConfig:",
        "      service: {name: stsguard, namespace: default, path: /validate}",
    ]
    .join("\n");
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "hooks", "namespace": "default"},
        "data": {"validating.yaml": validating}
    })
}

fn registered_bundle(fake: &FakeApiServer) -> Option<String> {
    let object = fake.get(Kind::ValidatingWebhookConfiguration, "", "stsguard")?;
    let b64 = object["webhooks"][0]["clientConfig"]["caBundle"].as_str()?;
    String::from_utf8(BASE64.decode(b64).ok()?).ok()
}

#[tokio::test]
async fn renewal_and_a_ca_roll_never_break_a_handshake_against_the_registered_bundle() {
    let fake = FakeApiServer::start().await;
    fake.apply(configmap());
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let kubeconfig = kubeconfig.to_str().unwrap();
    let mut replicas = [
        replica(dir.path(), kubeconfig, "replica-a"),
        replica(dir.path(), kubeconfig, "replica-b"),
    ];
    // The API server calls ready replicas only (the Service's endpoints).
    eventually(
        "registered, and both replicas ready",
        Duration::from_secs(20),
        || async {
            registered_bundle(&fake).is_some()
                && probe_get(&replicas[0].probe, "/readyz")
                    .await
                    .contains("200 OK")
                && probe_get(&replicas[1].probe, "/readyz")
                    .await
                    .contains("200 OK")
        },
    )
    .await;

    // Through one CA's life and a bit (15 s): the registered bundle goes from one CA to two
    // and back to one, the served certificate changes several times, and no handshake that
    // trusts the bundle registered at that moment fails.
    let mut bundles: Vec<usize> = Vec::new();
    let mut served_certs = BTreeSet::new();
    let mut cas = BTreeSet::new();
    let mut handshakes = 0;
    let until = tokio::time::Instant::now() + Duration::from_secs(18);
    while tokio::time::Instant::now() < until {
        let bundle = registered_bundle(&fake).unwrap();
        let count = served::count(&bundle);
        if bundles.last() != Some(&count) {
            bundles.push(count);
        }
        cas.insert(served::der(&bundle).unwrap());
        for replica in &replicas {
            let served = served::certificate(&replica.addr, &bundle).await;
            assert!(
                served.is_some(),
                "{} refused a handshake trusting the registered bundle ({count} CAs)",
                replica.addr
            );
            served_certs.extend(served);
            handshakes += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        bundles.windows(3).any(|w| w == [1, 2, 1]),
        "the CA rolled with both CAs trusted across the switch: {bundles:?}"
    );
    assert!(cas.len() >= 2, "a new CA came first in the bundle");
    assert!(
        served_certs.len() >= 3,
        "renewals and the switch were served ({} certificates over {handshakes} handshakes)",
        served_certs.len()
    );
    // Nobody restarted.
    for replica in &mut replicas {
        assert!(replica.child.try_wait().unwrap().is_none());
    }
}
