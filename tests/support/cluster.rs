//! What the cluster-aware tests share: Services and StatefulSets as the fake API server holds
//! them, a webhook whose caches follow a fake API server, its readiness, and reviews of captured
//! fixtures against it.

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use stsguard::{
    cluster::Cluster,
    metrics::Metrics,
    policy::Policy,
    server::{Limits, Readiness},
};

use super::{
    Http, TestServer,
    apiserver::{FakeApiServer, eventually},
    client, fixture,
};

pub const WAIT: Duration = Duration::from_secs(20);

pub fn service(name: &str, cluster_ip: &str, app: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": "cap",
                        "managedFields": [{"manager": "kubectl", "operation": "Update"}]},
           "spec": {"clusterIP": cluster_ip, "selector": {"app": app},
                    "ports": [{"port": 80}]}})
}

pub fn statefulset(name: &str, service: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": name, "namespace": "cap"},
           "spec": {"serviceName": service, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
}

pub async fn webhook(fake: &FakeApiServer, namespaces: &[&str]) -> TestServer {
    webhook_with(fake, namespaces, Policy::builtin()).await
}

pub async fn webhook_with(fake: &FakeApiServer, namespaces: &[&str], policy: Policy) -> TestServer {
    let namespaces: Vec<String> = namespaces.iter().map(|s| (*s).to_owned()).collect();
    let metrics = Arc::new(Metrics::new());
    let cluster = Cluster::start(fake.config(), &namespaces, Duration::from_secs(1))
        .unwrap()
        .with_live_reads(metrics.live_reads());
    let readiness = Readiness::with_cluster(cluster.health());
    TestServer::start_measured(
        policy,
        Arc::new(cluster),
        Limits::default(),
        readiness,
        metrics,
    )
    .await
}

pub async fn readyz(server: &TestServer) -> (u16, String) {
    super::probe(server, "/readyz").await
}

pub async fn ready(server: &TestServer) {
    eventually("the caches' first sync", WAIT, || async {
        readyz(server).await.0 == 200
    })
    .await;
}

pub async fn review(server: &TestServer, file: &str) -> Value {
    let endpoint = if file.starts_with("mutate-") {
        "/mutate"
    } else {
        "/validate"
    };
    let reply = client(server, Http::One)
        .post(&server.url(endpoint), fixture(file))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

pub fn message(review: &Value) -> String {
    review["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}
