//! The webhook's caches against a fake API server that speaks the real list/watch protocol: both
//! creation orders, a Service turning into a governing Service, a cache that lags, cache sync
//! gating readiness, watched namespaces, the facts a cache keeps and what a re-list drops, paging, and recovery from
//! `410 Gone`, dropped watches and an outage.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use stsguard::cluster::Cluster;
use support::{
    Http,
    apiserver::{FakeApiServer, Kind, eventually},
    client,
    cluster::{WAIT, message, ready, readyz, review, service, statefulset, webhook},
    fixture, warnings,
};

#[tokio::test]
async fn readiness_waits_for_the_first_sync_of_both_caches() {
    let fake = FakeApiServer::start().await;
    fake.open_lists(false);
    let server = webhook(&fake, &[]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, body) = readyz(&server).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("waiting for the first sync"), "{body}");
    assert!(
        body.contains("services (all namespaces): waiting for the first list"),
        "{body}"
    );

    fake.open_lists(true);
    ready(&server).await;
    let (_, body) = readyz(&server).await;
    assert!(
        body.contains("services (all namespaces): synced, 0 objects"),
        "{body}"
    );
    assert!(
        body.contains("statefulsets (all namespaces): synced"),
        "{body}"
    );
    server.stop().await;
}

#[tokio::test]
async fn service_first_then_a_statefulset_naming_it_is_denied() {
    let fake = FakeApiServer::start().await;
    fake.apply(service("web", "10.96.0.10", "web"));
    let server = webhook(&fake, &[]).await;
    ready(&server).await;

    let denied = review(&server, "validate-StatefulSet-CREATE-cap-web-1").await;
    assert_eq!(denied["response"]["allowed"], false, "{denied}");
    let message = message(&denied);
    assert!(
        message.contains("sts-governing-service-headless"),
        "{message}"
    );
    assert!(
        message.contains("clusterIP: None"),
        "the fix is a ready-to-paste Service: {message}"
    );
    // clusterIP is immutable: the fix replaces the Service rather than applying over it.
    assert!(
        message.contains("kubectl delete service web -n cap, then apply this headless Service"),
        "{message}"
    );
    assert!(
        !message.contains("Fix: apply this headless Service"),
        "{message}"
    );
    server.stop().await;
}

#[tokio::test]
async fn statefulset_first_then_a_cluster_ip_service_is_denied_and_its_delete_warned() {
    let fake = FakeApiServer::start().await;
    fake.apply(statefulset("cache", "cache"));
    let server = webhook(&fake, &[]).await;
    ready(&server).await;

    let denied = review(&server, "validate-Service-CREATE-cap-cache-1").await;
    assert_eq!(denied["response"]["allowed"], false, "{denied}");
    assert!(
        message(&denied).contains("svc-headless-for-statefulset"),
        "{denied}"
    );

    let deleted = review(&server, "validate-Service-DELETE-cap-cache-1").await;
    assert_eq!(deleted["response"]["allowed"], true);
    let warned = warnings(&deleted).join("\n");
    assert!(
        warned.contains("leaves StatefulSet \"cache\" without its governing Service"),
        "{warned}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_headless_service_passes_and_a_missing_one_is_a_warning_with_the_fix() {
    let fake = FakeApiServer::start().await;
    let server = webhook(&fake, &[]).await;
    ready(&server).await;

    let missing = review(&server, "validate-StatefulSet-CREATE-cap-web-1").await;
    assert_eq!(missing["response"]["allowed"], true);
    let warned = support::all_warnings(&missing);
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("sts-governing-service-exists"),
        "{warned:?}"
    );

    fake.apply(service("web", "None", "web"));
    eventually("the headless Service in the cache", WAIT, || async {
        support::all_warnings(&review(&server, "validate-StatefulSet-CREATE-cap-web-1").await)
            .is_empty()
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn a_service_turning_into_a_governing_service_is_checked_from_the_watch() {
    let fake = FakeApiServer::start().await;
    let server = webhook(&fake, &[]).await;
    ready(&server).await;
    let before = review(&server, "validate-Service-CREATE-cap-cache-1").await;
    assert_eq!(
        before["response"]["allowed"], true,
        "no StatefulSet names it yet"
    );

    fake.apply(statefulset("cache", "cache"));
    eventually("the StatefulSet from the watch", WAIT, || async {
        review(&server, "validate-Service-CREATE-cap-cache-1").await["response"]["allowed"] == false
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn what_the_cache_says_is_missing_is_confirmed_with_the_api_server() {
    let fake = FakeApiServer::start().await;
    let server = webhook(&fake, &[]).await;
    ready(&server).await;

    // Written a moment ago: the watch has not delivered them yet.
    fake.apply_unannounced(service("web", "10.96.0.10", "web"));
    fake.apply_unannounced(statefulset("cache", "cache"));

    let sts = review(&server, "validate-StatefulSet-CREATE-cap-web-1").await;
    assert_eq!(sts["response"]["allowed"], false, "{sts}");
    assert!(message(&sts).contains("sts-governing-service-headless"));
    let svc = review(&server, "validate-Service-CREATE-cap-cache-1").await;
    assert_eq!(svc["response"]["allowed"], false, "{svc}");

    let requests = fake.requests();
    assert!(
        requests.contains(&"GET /api/v1/namespaces/cap/services/web".to_owned()),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /apis/apps/v1/namespaces/cap/statefulsets")),
        "{requests:#?}"
    );
    server.stop().await;
}

fn lists(fake: &FakeApiServer, path: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.starts_with(&format!("GET {path}")) && !r.contains("watch="))
        .count()
}

#[tokio::test]
async fn watches_relist_after_gone_and_resume_after_a_dropped_connection() {
    let fake = FakeApiServer::start().await;
    let server = webhook(&fake, &[]).await;
    ready(&server).await;
    assert_eq!(lists(&fake, "/api/v1/services"), 1);

    // A dropped watch resumes from its resourceVersion: no new list.
    fake.drop_watches();
    fake.apply(service("web", "10.96.0.10", "web"));
    eventually("the Service after a dropped watch", WAIT, || async {
        review(&server, "validate-StatefulSet-CREATE-cap-web-1").await["response"]["allowed"]
            == false
    })
    .await;

    // History compacted past the client's resourceVersion: 410 Gone, then a fresh list.
    fake.compact();
    fake.drop_watches();
    fake.apply(service("web", "None", "web"));
    eventually("the re-list after 410 Gone", WAIT, || async {
        lists(&fake, "/api/v1/services") >= 2
    })
    .await;
    eventually("the headless Service after the re-list", WAIT, || async {
        review(&server, "validate-StatefulSet-CREATE-cap-web-1").await["response"]["allowed"]
            == true
    })
    .await;
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.contains("allowWatchBookmarks=true"))
    );
    server.stop().await;
}

#[tokio::test]
async fn an_api_server_outage_is_survived_and_reported() {
    let fake = FakeApiServer::start().await;
    fake.apply(service("web", "None", "web"));
    let server = webhook(&fake, &[]).await;
    ready(&server).await;

    fake.stop();
    eventually(
        "/readyz to report the watches that lost the API server",
        WAIT,
        || async { readyz(&server).await.1.contains("API server lost") },
    )
    .await;
    // Still answering, from the cache; the metrics say the watches are down.
    let (code, _) = readyz(&server).await;
    assert_eq!(code, 200);
    let (_, metrics) = support::probe(&server, "/metrics").await;
    assert!(
        metrics.contains(r#"stsguard_cache_watching{kind="services",namespace=""} 0"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stsguard_cache_objects{kind="services",namespace=""} 1"#),
        "{metrics}"
    );
    let answer = review(&server, "validate-StatefulSet-CREATE-cap-web-1").await;
    assert_eq!(answer["response"]["allowed"], true, "{answer}");

    // The API server comes back with a change made meanwhile.
    fake.apply(service("web", "10.96.0.10", "web"));
    fake.restart().await;
    eventually("the watches to reconnect", WAIT, || async {
        let body = readyz(&server).await.1;
        !body.contains("API server lost")
            && !body.contains("stale")
            && body.contains("statefulsets (all namespaces): synced")
    })
    .await;
    eventually("the change made during the outage", WAIT, || async {
        review(&server, "validate-StatefulSet-CREATE-cap-web-1").await["response"]["allowed"]
            == false
    })
    .await;
    server.stop().await;
}

#[tokio::test]
async fn watched_namespaces_limit_what_is_known() {
    let fake = FakeApiServer::start().await;
    fake.apply(service("web", "10.96.0.10", "web"));
    let server = webhook(&fake, &["cap"]).await;
    ready(&server).await;
    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/namespaces/cap/services?")),
        "{requests:#?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.starts_with("GET /api/v1/services")),
        "{requests:#?}"
    );
    let denied = review(&server, "validate-StatefulSet-CREATE-cap-web-1").await;
    assert_eq!(denied["response"]["allowed"], false);

    // A namespace that is not watched is not known: the check is skipped, and said to be.
    let mut other: Value =
        serde_json::from_slice(&fixture("validate-StatefulSet-CREATE-cap-web-1")).unwrap();
    other["request"]["namespace"] = json!("elsewhere");
    other["request"]["object"]["metadata"]["namespace"] = json!("elsewhere");
    let reply = client(&server, Http::One)
        .post(
            &server.url("/validate"),
            serde_json::to_vec(&other).unwrap(),
        )
        .await
        .json();
    assert_eq!(reply["response"]["allowed"], true);
    assert!(
        support::all_warnings(&reply)
            .iter()
            .any(|w| w.starts_with(stsguard::review::SKIPPED_NOTE))
    );
    server.stop().await;
}

#[tokio::test]
async fn the_cache_keeps_the_facts_of_objects_as_served_and_a_relist_drops_the_deleted() {
    use stsguard::lookup::{Fact, Lookup, ServiceFacts, StatefulSetFacts};
    let fake = FakeApiServer::start().await;
    let mut svc = service("web", "None", "web");
    svc["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/last-applied-configuration": "x".repeat(10_000)});
    fake.apply(svc);
    for name in ["web", "web-2"] {
        let mut sts = statefulset(name, "web");
        sts["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Update"}]);
        fake.apply(sts);
    }
    let cluster = Cluster::start(fake.config(), &[], Duration::from_secs(1)).unwrap();
    let health = cluster.health();
    eventually("sync", WAIT, || async { health.synced() }).await;

    // The facts are those of each object exactly as the API server serves it.
    let client = kube::Client::try_from(fake.config()).unwrap();
    let as_served =
        kube::Api::<k8s_openapi::api::core::v1::Service>::namespaced(client.clone(), "cap")
            .get("web")
            .await
            .unwrap();
    assert_eq!(
        cluster.service("cap", "web"),
        Fact::Found(std::sync::Arc::new(ServiceFacts::of(&as_served)))
    );
    let naming = |cluster: &Cluster| match cluster.statefulsets_naming("cap", "web") {
        Fact::Found(list) => {
            let mut names: Vec<String> = list.iter().map(|s| s.name.to_string()).collect();
            names.sort();
            names
        }
        other => panic!("the StatefulSets are known: {other:?}"),
    };
    assert_eq!(naming(&cluster), ["web", "web-2"]);
    let sts = kube::Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(client, "cap")
        .get("web")
        .await
        .unwrap();
    let Fact::Found(list) = cluster.statefulsets_naming("cap", "web") else {
        unreachable!()
    };
    assert!(list.contains(&std::sync::Arc::new(StatefulSetFacts::of(&sts))));

    // Deleted while the watch history was lost: only the re-list after 410 Gone can tell, and
    // what it does not list again is gone.
    fake.compact();
    fake.delete_unannounced(Kind::StatefulSet, "cap", "web-2");
    fake.drop_watches();
    eventually(
        "the re-list drops the deleted StatefulSet",
        WAIT,
        || async { naming(&cluster) == ["web"] },
    )
    .await;
    let states = health.states();
    assert_eq!(states[1].objects, 1, "{states:?}");
    assert!(states.iter().all(|w| w.synced), "{states:?}");
}

#[tokio::test]
async fn lists_are_paged_through_continue_tokens() {
    let fake = FakeApiServer::start().await;
    for i in 0..1_100 {
        fake.apply(service(&format!("svc-{i}"), "None", "x"));
    }
    let cluster = Cluster::start(fake.config(), &[], Duration::from_secs(1)).unwrap();
    let health = cluster.health();
    eventually("sync", WAIT, || async { health.synced() }).await;
    let states = health.states();
    assert_eq!(states[0].objects, 1_100, "{states:?}");
    // 100 a page: eleven requests, each after the first resuming where the last one ended.
    let pages: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /api/v1/services?") && !r.contains("watch="))
        .collect();
    assert_eq!(pages.len(), 11, "{pages:#?}");
    assert!(pages[0].contains("limit=100") && !pages[0].contains("continue="));
    assert!(
        pages[1..].iter().all(|r| r.contains("continue=")),
        "{pages:#?}"
    );
}
