//! `stsguard serve` stopping and changing as a process: every review logged through shutdown,
//! graceful shutdown with a review in flight, SIGTERM under load, and a watched policy reloaded
//! (and a bad one rejected).

mod support;

use std::time::Duration;

use stsguard::policy::Policy;
use support::{
    Http, TestServer, client_trusting, fixture,
    process::{probe_get, probe_metrics, serve_logged, sigterm, start_with, wait},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Log lines are written by a background thread in bursts: none is lost, neither under a burst
/// of reviews nor at shutdown, and each review has its line.
#[tokio::test]
async fn every_review_is_logged_through_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("stderr.log");
    let (mut child, serving) = serve_logged(dir.path(), &[], &log_path).await;
    let addr = serving["addr"].as_str().unwrap().to_owned();
    let ca = std::fs::read_to_string(dir.path().join("dev/ca.crt")).unwrap();
    let url = format!("https://{addr}/validate?timeout=5s");

    const REVIEWS: usize = 400;
    let client = client_trusting(&ca, Http::Two);
    let mut review: serde_json::Value =
        serde_json::from_slice(&fixture("validate-StatefulSet-CREATE-cap-web-1")).unwrap();
    let mut answers = tokio::task::JoinSet::new();
    for i in 0..REVIEWS {
        review["request"]["uid"] = serde_json::json!(format!("burst-{i}"));
        let (client, url, body) = (
            client.clone(),
            url.clone(),
            serde_json::to_vec(&review).unwrap(),
        );
        answers.spawn(async move { client.post(&url, body).await.status });
    }
    while let Some(status) = answers.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    // A review whose object does not read: the warning logged inside the review carries its uid.
    review["request"]["uid"] = serde_json::json!("broken");
    review["request"]["object"]["spec"]["replicas"] = serde_json::json!("three");
    let broken = client
        .post(&url, serde_json::to_vec(&review).unwrap())
        .await;
    assert_eq!(broken.status, 200);
    sigterm(&child);
    assert_eq!(
        wait(&mut child, Duration::from_secs(25)).await.code(),
        Some(0)
    );

    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    let mut uids: Vec<&str> = lines
        .iter()
        .filter(|l| l["message"] == "review" && l["uid"] != "broken")
        .map(|l| {
            assert_eq!(l["verdict"], "allowed", "{l}");
            assert_eq!(l["kind"], "StatefulSet", "{l}");
            l["uid"].as_str().unwrap()
        })
        .collect();
    uids.sort_unstable();
    let mut expected: Vec<String> = (0..REVIEWS).map(|i| format!("burst-{i}")).collect();
    expected.sort_unstable();
    assert_eq!(uids, expected);
    // The warning carries the review's uid and names the object itself.
    assert!(
        lines.iter().any(|l| l["message"] == "invalid review"
            && l["level"] == "WARN"
            && l["uid"] == "broken"
            && l["object"] == "web"),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l["message"] == "review"
            && l["uid"] == "broken"
            && l["verdict"] == "invalid"
            && l["object"] == "web"),
        "{log}"
    );
    assert_eq!(
        lines.last().unwrap()["message"],
        "all connections closed",
        "the last line before exit is written too: {log}"
    );
}

#[tokio::test]
async fn shutdown_finishes_the_review_in_flight_and_refuses_new_connections() {
    let mut server = TestServer::start(Policy::builtin()).await;
    let body = fixture("validate-StatefulSet-CREATE-cap-web-1");
    let (head, tail) = body.split_at(body.len() / 2);

    let mut tls = support::raw_tls(&server).await;
    let request = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    tls.write_all(head).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    server.signal_stop();
    // The listener closes: new connections are refused.
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(server.addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "new connections should be refused after the shutdown signal"
    );

    // The review already in flight still gets its answer.
    tls.write_all(tail).await.unwrap();
    tls.flush().await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response))
        .await
        .expect("answered within the grace period")
        .unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"allowed\":true"), "{response}");
    server.stop().await;
}

#[tokio::test]
async fn a_watched_policy_is_reloaded_and_a_bad_one_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "rules: {sts-service-name: deny}\n").unwrap();
    let running = start_with(
        dir.path(),
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--watch-policy",
            "--policy-reload-interval",
            "100ms",
        ],
    );
    let ca = std::fs::read_to_string(dir.path().join("dev/ca.crt")).unwrap();
    let client = client_trusting(&ca, Http::One);
    let url = format!("https://{}/validate", running.addr);
    let allowed = || async {
        client
            .post(&url, fixture("validate-StatefulSet-CREATE-cap-nosvc-1"))
            .await
            .json()["response"]["allowed"]
            .as_bool()
            .unwrap()
    };
    assert!(!allowed().await);

    std::fs::write(&policy, "rules: {sts-service-name: warn}\n").unwrap();
    let mut reloaded = false;
    for _ in 0..100 {
        if allowed().await {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "the changed policy is in force");

    // A broken policy is rejected: the last good one stays, and the metric says so.
    std::fs::write(&policy, "rules: {sts-service-name: maybe}\n").unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(allowed().await, "the last good policy stays in force");
    let metrics = probe_metrics(&running.probe).await;
    assert!(
        metrics.contains(r#"stsguard_policy_reloads_total{result="success"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stsguard_policy_reloads_total{result="failure"} 1"#),
        "{metrics}"
    );
}

/// SIGTERM under load: `/readyz` turns 503 at once, yet for the drain delay every review is
/// still answered, on old connections and new ones (the API server keeps calling until the
/// EndpointSlice drops the pod); then new connections are refused, what was accepted is
/// answered, and the process exits within the drain delay and the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_drains_then_answers_what_was_accepted_and_exits_in_time() {
    const DRAIN: Duration = Duration::from_millis(1500);
    let dir = tempfile::tempdir().unwrap();
    let mut running = start_with(
        dir.path(),
        &["--shutdown-grace", "5s", "--drain-delay", "1500ms"],
    );
    let ca = std::fs::read_to_string(dir.path().join("dev/ca.crt")).unwrap();
    let url = format!("https://{}/validate", running.addr);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signalled = std::sync::Arc::new(std::sync::OnceLock::<std::time::Instant>::new());

    // Eight clients on their own connections, sending reviews back to back; each refusal is
    // timed against the signal.
    let mut load = Vec::new();
    for i in 0..8 {
        let (ca, url, stop, signalled) = (ca.clone(), url.clone(), stop.clone(), signalled.clone());
        load.push(tokio::spawn(async move {
            let client = client_trusting(&ca, if i % 2 == 0 { Http::One } else { Http::Two });
            let (mut answered, mut refused_in_drain) = (0u32, 0u32);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                match client
                    .try_post(&url, fixture("validate-StatefulSet-CREATE-cap-nosvc-1"))
                    .await
                {
                    Ok(reply) => {
                        // Whatever was answered was answered completely and correctly.
                        assert_eq!(reply.status, 200);
                        assert_eq!(reply.json()["response"]["allowed"], false);
                        answered += 1;
                    }
                    // Not accepted: the connection was closing or the listener gone.
                    Err(_) => {
                        if signalled
                            .get()
                            .is_some_and(|at| at.elapsed() < DRAIN - Duration::from_millis(200))
                        {
                            refused_in_drain += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            (answered, refused_in_drain)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    signalled.set(std::time::Instant::now()).unwrap();
    sigterm(&running.child);
    // Not ready at once...
    let mut readyz = String::new();
    for _ in 0..40 {
        readyz = probe_get(&running.probe, "/readyz").await;
        if readyz.starts_with("HTTP/1.1 503") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    // ...while a new connection is still answered.
    let fresh = client_trusting(&ca, Http::Two)
        .try_post(&url, fixture("validate-StatefulSet-CREATE-cap-nosvc-1"))
        .await
        .expect("a new connection during the drain delay is answered");
    assert_eq!(fresh.status, 200);
    assert!(signalled.get().unwrap().elapsed() < DRAIN);

    let status = wait(&mut running.child, Duration::from_secs(10)).await;
    let took = signalled.get().unwrap().elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (mut answered, mut refused_in_drain) = (0, 0);
    for task in load {
        let (a, r) = task.await.unwrap();
        answered += a;
        refused_in_drain += r;
    }
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= DRAIN,
        "exited {took:?} after SIGTERM, before the drain delay"
    );
    assert!(
        took < DRAIN + Duration::from_secs(5),
        "exited {took:?} after SIGTERM, beyond the drain delay and the grace period"
    );
    assert_eq!(refused_in_drain, 0, "nothing is refused while draining");
    assert!(answered > 50, "the load was running: {answered} answers");
    assert!(
        tokio::net::TcpStream::connect(&running.addr).await.is_err(),
        "new connections are refused"
    );
}
