//! `/metrics` on the probe listener, after real traffic to the real server.

mod support;

use std::{sync::Arc, time::Duration};

use stsguard::{lookup::NoLookup, policy::Policy, server::Limits};
use support::{Http, TestServer, client, fixture, probe};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn reviews_violations_rejections_and_latency_are_counted() {
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        request_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = TestServer::start_with(Policy::builtin(), Arc::new(NoLookup), limits).await;
    let http = client(&server, Http::Two);
    for file in [
        "validate-StatefulSet-CREATE-cap-nosvc-1",
        "validate-StatefulSet-CREATE-cap-nosvc-dry-dryrun-1",
        "validate-StatefulSet-CREATE-cap-weak-1",
        "validate-Scale-UPDATE-cap-web-scale-1",
    ] {
        http.post(&server.url("/validate"), fixture(file)).await;
    }
    http.post(
        &server.url("/mutate"),
        fixture("mutate-StatefulSet-CREATE-cap-db-1"),
    )
    .await;
    // Kinds no webhook configuration sends stsguard share one series, whatever the body says.
    for n in 0..50 {
        let mut review: serde_json::Value =
            serde_json::from_slice(&fixture("validate-StatefulSet-CREATE-cap-web-1")).unwrap();
        review["request"]["kind"]["kind"] = serde_json::json!(format!("Made{n}Up"));
        http.post(
            &server.url("/validate"),
            serde_json::to_vec(&review).unwrap(),
        )
        .await;
    }
    http.post(&server.url("/validate"), b"not json".to_vec())
        .await;
    http.post(&server.url("/validate"), vec![b' '; 100_000])
        .await;
    // A body that never finishes: 408 from the request timeout.
    let mut slow = support::raw_tls(&server).await;
    slow.write_all(b"POST /mutate HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{")
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut sink)).await;

    let (code, text) = probe(&server, "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        r#"stsguard_reviews_total{endpoint="validate",kind="StatefulSet",operation="CREATE",verdict="denied"} 2"#,
        r#"stsguard_reviews_total{endpoint="validate",kind="StatefulSet",operation="CREATE",verdict="warned"} 1"#,
        r#"stsguard_reviews_total{endpoint="validate",kind="Scale",operation="UPDATE",verdict="skipped"} 1"#,
        r#"stsguard_reviews_total{endpoint="mutate",kind="StatefulSet",operation="CREATE",verdict="mutated"} 1"#,
        r#"stsguard_reviews_total{endpoint="validate",kind="other",operation="CREATE",verdict="skipped"} 50"#,
        r#"stsguard_violations_total{rule="sts-service-name",action="deny"} 2"#,
        r#"stsguard_violations_total{rule="sts-update-strategy",action="warn"} 1"#,
        r#"stsguard_rejected_requests_total{endpoint="validate",status="400"} 1"#,
        r#"stsguard_rejected_requests_total{endpoint="validate",status="413"} 1"#,
        r#"stsguard_rejected_requests_total{endpoint="mutate",status="408"} 1"#,
        r#"stsguard_review_duration_seconds_count{endpoint="validate"} 56"#,
        "stsguard_reviews_in_flight 0",
        "# TYPE stsguard_review_duration_seconds histogram",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    assert!(!text.contains("Made0Up"), "{text}");
    server.stop().await;
}
