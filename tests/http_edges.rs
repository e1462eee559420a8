//! What the server does with requests that are not well-formed reviews, with limits and
//! timeouts, on unknown paths, and on its probe listener.

mod support;

use std::{sync::Arc, time::Duration};

use serde_json::{Value, json};
use stsguard::{lookup::NoLookup, policy::Policy, server::Limits};
use support::{BOTH, Http, TestServer, client, fixture, keepalive::read_response, warnings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn bodies_that_are_not_reviews_get_400_naming_what_was_expected() {
    let server = TestServer::start(Policy::builtin()).await;
    for http in BOTH {
        let client = client(&server, http);
        let cases: [(&[u8], &str); 5] = [
            (b"not json", "not an admission.k8s.io/v1 AdmissionReview"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1beta1\",\"kind\":\"AdmissionReview\",\"request\":{}}",
             "expected apiVersion \"admission.k8s.io/v1\""),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}", "no `request`"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"kind\":{\"group\":\"apps\",\"version\":\"v1\",\"kind\":\"StatefulSet\"},\"operation\":\"CREATE\"}}",
             "request has no `uid`"),
            (b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"a\",\"uid\":\"b\"}}",
             "duplicate field `uid`"),
        ];
        for (body, says) in cases {
            let reply = client.post(&server.url("/validate"), body.to_vec()).await;
            assert_eq!(reply.status, 400, "{http:?} {}", reply.text());
            assert!(
                reply.text().contains(says),
                "{http:?}: {:?} should say {says:?}",
                reply.text()
            );
        }
    }
    server.stop().await;
}

fn review_with(file: &str, change: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut review: Value = serde_json::from_slice(&fixture(file)).unwrap();
    change(&mut review["request"]);
    serde_json::to_vec(&review).unwrap()
}

#[tokio::test]
async fn reviews_with_unreadable_objects_are_answered_invalid_with_their_uid() {
    let server = TestServer::start(Policy::builtin()).await;
    let client = client(&server, Http::One);
    let wrong_type = review_with("validate-StatefulSet-CREATE-cap-web-1", |r| {
        r["object"]["spec"]["replicas"] = json!("three");
    });
    let null_object = review_with("validate-StatefulSet-CREATE-cap-web-1", |r| {
        r["object"] = Value::Null;
    });
    let sts_in_service_review = review_with("validate-Service-CREATE-cap-web-1", |r| {
        r["object"] =
            serde_json::from_slice::<Value>(&fixture("validate-StatefulSet-CREATE-cap-web-1"))
                .unwrap()["request"]["object"]
                .clone();
    });
    for (body, says) in [
        (
            wrong_type,
            "cannot read the review as a apps/v1 StatefulSet",
        ),
        (null_object, "request.object is missing"),
        (
            sts_in_service_review,
            "cannot read the review as a v1 Service",
        ),
    ] {
        let reply = client.post(&server.url("/validate"), body).await;
        assert_eq!(reply.status, 200);
        let review = reply.json();
        assert_eq!(review["response"]["allowed"], false, "{review}");
        assert_eq!(review["response"]["status"]["code"], 400, "{review}");
        assert!(!review["response"]["uid"].as_str().unwrap().is_empty());
        let message = review["response"]["status"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message:?} should say {says:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn unknown_kinds_are_allowed_with_a_warning() {
    let server = TestServer::start(Policy::builtin()).await;
    let client = client(&server, Http::Two);
    let deployment = review_with("validate-StatefulSet-CREATE-cap-web-1", |r| {
        r["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
        r["object"]["kind"] = json!("Deployment");
    });
    let review = client
        .post(&server.url("/validate"), deployment)
        .await
        .json();
    assert_eq!(review["response"]["allowed"], true);
    assert!(
        warnings(&review)[0].contains("not apps/Deployment"),
        "{review}"
    );
    server.stop().await;
}

#[tokio::test]
async fn bodies_over_the_limit_get_413_with_the_limit() {
    let limits = Limits {
        max_body_bytes: 4096,
        ..Limits::default()
    };
    let server = TestServer::start_with(Policy::builtin(), Arc::new(NoLookup), limits).await;
    for http in BOTH {
        let client = client(&server, http);
        let reply = client
            .post(&server.url("/validate"), vec![b' '; 10_000])
            .await;
        assert_eq!(reply.status, 413, "{http:?}");
        assert!(
            reply.text().contains("limit of 4096 bytes"),
            "{}",
            reply.text()
        );
    }
    server.stop().await;
}

/// An UPDATE review as the API server sends it for server-side apply: the object and its old
/// version, each `size` bytes of JSON (a large annotation, and managedFields as SSA writes them).
fn update_review(size: usize) -> Vec<u8> {
    review_with("validate-StatefulSet-UPDATE-cap-web-1", |r| {
        for side in ["object", "oldObject"] {
            let object = &mut r[side];
            object["metadata"]["managedFields"] = json!([{
                "manager": "argocd-controller", "operation": "Apply", "apiVersion": "apps/v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:annotations": {"f:config": {}}}}
            }]);
            let now = serde_json::to_vec(object).unwrap().len();
            object["metadata"]["annotations"]["config"] = json!("x".repeat(size - now - 20));
        }
    })
}

#[tokio::test]
async fn default_limit_takes_an_update_of_two_maximal_objects() {
    let server = TestServer::start(Policy::builtin()).await;
    for http in BOTH {
        let client = client(&server, http);
        // The reported case: a 1.45 MB StatefulSet, updated by server-side apply.
        let reply = client
            .post(&server.url("/validate"), update_review(1_450_000))
            .await;
        assert_eq!(reply.status, 200, "{http:?}: {}", reply.text());
        assert_eq!(reply.json()["response"]["allowed"], true);
        // The largest a default API server sends: two objects of its 3 MiB request limit.
        let largest = update_review(3 * 1024 * 1024);
        assert!(largest.len() > 6 * 1024 * 1024);
        let reply = client.post(&server.url("/validate"), largest).await;
        assert_eq!(reply.status, 200, "{http:?}: {}", reply.text());
        assert_eq!(reply.json()["response"]["allowed"], true);
    }
    // One byte over the limit is not, and says so in a Status the API server shows.
    let reply = client(&server, Http::Two)
        .post(&server.url("/validate"), vec![b' '; 7 * 1024 * 1024 + 1])
        .await;
    assert_eq!(reply.status, 413);
    let status = reply.json();
    assert_eq!(status["kind"], "Status", "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("limit of 7340032 bytes"),
        "{status}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_body_far_over_the_limit_gets_an_answer_not_a_reset() {
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        ..Limits::default()
    };
    let server = TestServer::start_with(Policy::builtin(), Arc::new(NoLookup), limits).await;
    for http in [Http::Two, Http::One] {
        let client = client(&server, http);
        for _ in 0..2 {
            let reply = client
                .try_post(&server.url("/validate"), update_review(3 * 1024 * 1024))
                .await
                .unwrap_or_else(|e| panic!("{http:?}: no answer: {e}"));
            assert_eq!(reply.status, 413, "{http:?}: {}", reply.text());
            let status = reply.json();
            assert_eq!(status["reason"], "RequestEntityTooLarge", "{status}");
        }
        // The connection is still good for the next review.
        let reply = client
            .post(
                &server.url("/validate"),
                fixture("validate-StatefulSet-CREATE-cap-web-1"),
            )
            .await;
        assert_eq!(reply.status, 200, "{http:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn only_the_webhook_paths_answer() {
    let server = TestServer::start(Policy::builtin()).await;
    let client = client(&server, Http::One);
    for path in [
        "/",
        "/healthz",
        "/metrics",
        "/validate/../etc/passwd",
        "/debug/pprof",
    ] {
        let reply = client.get(&server.url(path)).await;
        assert_eq!(reply.status, 404, "{path}");
    }
    assert_eq!(client.get(&server.url("/validate")).await.status, 405);
    server.stop().await;
}

#[tokio::test]
async fn probes_answer_on_plain_http() {
    let server = TestServer::start(Policy::builtin()).await;
    for (path, expected) in [
        ("/healthz", "ok"),
        ("/readyz", "ready"),
        ("/validate", "not found"),
    ] {
        let (code, body) = support::probe(&server, path).await;
        assert_eq!(code, if path == "/validate" { 404 } else { 200 }, "{path}");
        assert!(body.contains(expected), "{path}: {body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn slow_requests_time_out() {
    let limits = Limits {
        request_timeout: Duration::from_millis(300),
        header_read_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let server = TestServer::start_with(Policy::builtin(), Arc::new(NoLookup), limits).await;

    // A connection that never finishes its TLS handshake (or never sends headers) is closed.
    let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "idle connection should be closed: {read:?}"
    );

    // A body that trickles in slower than the request timeout gets 408.
    let mut tls = support::raw_tls(&server).await;
    tls.write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut response)).await;
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    server.stop().await;
}

/// Over HTTP/2, an over-limit body is answered and the stream ends cleanly: the client can send
/// its whole body and read the whole answer, with no RST_STREAM (which Go's client, the API
/// server's, reports instead of the answer). Seen with a raw HTTP/2 client, since a
/// higher-level one hides a reset that comes after the response.
#[tokio::test]
async fn http2_over_limit_bodies_end_without_a_stream_reset() {
    use bytes::Bytes;
    let limits = Limits {
        max_body_bytes: 64 * 1024,
        ..Limits::default()
    };
    let server = TestServer::start_with(Policy::builtin(), Arc::new(NoLookup), limits).await;
    let tls = support::connections::raw_h2(&server).await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    for declared in [true, false] {
        let mut client = client.clone().ready().await.unwrap();
        let total = 4 * 1024 * 1024;
        let mut request =
            http::Request::post(server.url("/validate")).header("content-type", "application/json");
        if declared {
            request = request.header("content-length", total.to_string());
        }
        let (response, mut body) = client
            .send_request(request.body(()).unwrap(), false)
            .unwrap();
        let sender = tokio::spawn(async move {
            let mut left = total;
            while left > 0 {
                let chunk = left.min(16 * 1024);
                body.reserve_capacity(chunk);
                let granted = std::future::poll_fn(|cx| body.poll_capacity(cx))
                    .await
                    .ok_or("the server closed the stream before the body was sent")?
                    .map_err(|e| e.to_string())?;
                let n = granted.min(left);
                left -= n;
                body.send_data(Bytes::from(vec![b' '; n]), left == 0)
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        });
        let response = tokio::time::timeout(Duration::from_secs(10), response)
            .await
            .expect("answered in time")
            .expect("a response, not a reset");
        assert_eq!(response.status(), 413);
        let mut answer = response.into_body();
        let mut text = Vec::new();
        while let Some(chunk) = answer.data().await {
            let chunk = chunk.expect("the answer's body, not a reset");
            let _ = answer.flow_control().release_capacity(chunk.len());
            text.extend_from_slice(&chunk);
        }
        let status: Value = serde_json::from_slice(&text).unwrap();
        assert_eq!(status["reason"], "RequestEntityTooLarge", "{status}");
        let sent = sender.await.unwrap();
        assert!(
            sent.is_ok(),
            "declared length {declared}: the stream was reset: {sent:?}"
        );
    }
    server.stop().await;
}

/// A connection past `max_connection_age` is closed gracefully: an HTTP/1.1 one by
/// `Connection: close` on its next answer, never while idle (the client may be writing its next
/// request that moment, and would lose it), so the client's next request opens a new
/// connection, possibly to another replica.
#[tokio::test]
async fn connections_are_closed_gracefully_past_their_maximum_age() {
    let limits = Limits {
        max_connection_age: Duration::from_millis(300),
        ..Limits::default()
    };
    let body = fixture("validate-StatefulSet-CREATE-cap-web-1");
    let request = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let request = [request.as_bytes(), &body].concat();
    for (server, aged) in [
        (
            TestServer::start_with(Policy::builtin(), Arc::new(NoLookup), limits).await,
            true,
        ),
        (TestServer::start(Policy::builtin()).await, false),
    ] {
        let mut tls = support::raw_tls(&server).await;
        tls.write_all(&request).await.unwrap();
        let (status, close) = read_response(&mut tls).await.unwrap();
        assert!(status.starts_with("http/1.1 200"), "{status}");
        assert!(!close, "a young connection was asked to close");
        // Idle past its age (300 ms, give or take a tenth): still open.
        let mut byte = [0u8; 1];
        let idle = tokio::time::timeout(Duration::from_millis(600), tls.read(&mut byte)).await;
        assert!(idle.is_err(), "an idle connection was closed: {idle:?}");
        // The next request is answered, and says that the connection ends with it.
        tls.write_all(&request).await.unwrap();
        let (status, close) = read_response(&mut tls).await.unwrap();
        assert!(status.starts_with("http/1.1 200"), "{status}");
        assert_eq!(close, aged, "Connection: close on the answer after the age");
        let mut rest = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(1), tls.read_to_end(&mut rest)).await;
        assert_eq!(ended.is_ok(), aged, "aged {aged}: {ended:?}");
        server.stop().await;
    }
}
