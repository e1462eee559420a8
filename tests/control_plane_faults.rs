//! The control plane's faults, driven through the real `stsguard serve` process against the
//! fake API server: a restart with a new resourceVersion epoch, compaction, a refused
//! connection, a hanging list, a slow list, a watch dropped without a close, and 429 with
//! Retry-After. Each test follows one timeline: reviews keep being answered during the fault,
//! the caches are current within a (generous) bound after it ends, and the log tells one story
//! per outage (one WARN and one INFO per watch that lost the API server, never an ERROR, never
//! a line without its component). The times to current are printed (`--nocapture`) and written
//! down in BENCHMARKS.md, not asserted tightly.

mod support;

use std::time::{Duration, Instant};

use support::{
    apiserver::{FakeApiServer, Kind, eventually},
    cluster::{service, statefulset},
    process::{metric, probe_get, probe_metrics},
    timeline::{leads, objects, one_story, webhook, webhook_with},
};

#[tokio::test]
async fn a_restart_with_a_new_resource_version_epoch_lists_again_at_once() {
    let fake = FakeApiServer::start().await;
    objects(&fake);
    let webhook = webhook(&fake, true).await;
    let from = webhook.log_len();

    fake.stop_for_a_new_epoch();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let readyz = probe_get(&webhook.probe, "/readyz").await;
    assert!(readyz.starts_with("HTTP/1.1 200"), "{readyz}");
    assert!(
        readyz.contains("\r\n\r\nready; cross-object facts stale for"),
        "{readyz}"
    );
    assert!(readyz.contains("API server lost for"), "{readyz}");
    let metrics = probe_metrics(&webhook.probe).await;
    let stale = r#"stsguard_cache_stale_since_timestamp_seconds{kind="services",namespace=""} "#;
    assert!(
        metric(&metrics, stale).is_some_and(|t| t > 0.0),
        "{metrics}"
    );
    // Made while it was down, and at its return: both must be in the caches.
    fake.apply(statefulset("during", "web"));
    fake.restart().await;
    fake.apply(service("after", "None", "after"));
    webhook
        .time_to_current(&fake, "a restart with a new epoch", Duration::from_secs(10))
        .await;

    webhook.reviews.all_answered().await;
    one_story(&webhook.lines_since(from), &fake, 1);
}

#[tokio::test]
async fn compaction_lists_again_at_once_and_is_no_outage() {
    let fake = FakeApiServer::start().await;
    objects(&fake);
    let webhook = webhook(&fake, true).await;
    let from = webhook.log_len();
    let lists = fake.lists_of("/apis/apps/v1/statefulsets");

    fake.compact();
    fake.drop_watches();
    fake.apply(statefulset("after", "web"));
    webhook
        .time_to_current(&fake, "compaction", Duration::from_secs(5))
        .await;
    assert!(fake.lists_of("/apis/apps/v1/statefulsets") > lists);

    webhook.reviews.all_answered().await;
    one_story(&webhook.lines_since(from), &fake, 0);
}

#[tokio::test]
async fn a_refused_connection_is_one_story_and_its_end_is_seen_within_seconds() {
    let fake = FakeApiServer::start().await;
    objects(&fake);
    let webhook = webhook(&fake, true).await;
    let from = webhook.log_len();

    // Long enough for the back-off to grow past 6 s: the return is noticed anyway.
    fake.stop();
    tokio::time::sleep(Duration::from_secs(12)).await;
    fake.apply(statefulset("during", "web"));
    fake.restart().await;
    webhook
        .time_to_current(&fake, "a refused connection (12 s)", Duration::from_secs(5))
        .await;

    webhook.reviews.all_answered().await;
    one_story(&webhook.lines_since(from), &fake, 1);
}

#[tokio::test]
async fn a_hanging_list_is_cut_and_tried_again() {
    let fake = FakeApiServer::start().await;
    objects(&fake);
    let webhook = webhook(&fake, true).await;
    let from = webhook.log_len();

    fake.hang_lists(true);
    fake.compact();
    fake.drop_watches();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Listing again (the list hangs): still ready, and saying the facts are stale.
    let readyz = probe_get(&webhook.probe, "/readyz").await;
    assert!(readyz.starts_with("HTTP/1.1 200"), "{readyz}");
    assert!(
        readyz.contains("listing again; cross-object facts stale"),
        "{readyz}"
    );
    // The governing Service stopped being headless, and the stale cache cannot know: an allow
    // that rests on it is confirmed with the API server, which denies.
    fake.apply_unannounced(service("web", "10.96.0.10", "web"));
    let review = webhook
        .review("validate-StatefulSet-CREATE-cap-web-1")
        .await;
    assert_eq!(review["response"]["allowed"], false, "{review}");
    fake.hang_lists(false);
    fake.apply(statefulset("after", "web"));
    webhook
        .time_to_current(&fake, "a hanging list", Duration::from_secs(20))
        .await;

    webhook.reviews.all_answered().await;
    one_story(&webhook.lines_since(from), &fake, 1);
}

#[tokio::test]
async fn a_list_slower_than_the_deadline_is_waited_for() {
    let fake = FakeApiServer::start().await;
    objects(&fake);
    let webhook = webhook(&fake, true).await;
    let from = webhook.log_len();

    // Slower than the 10 s a request gets, well inside the real API server's own 60 s: a list
    // that would succeed, which a deadline cut every time would never let the caches see.
    fake.slow_lists(Some(Duration::from_secs(14)));
    fake.compact();
    fake.drop_watches();
    fake.apply(statefulset("after", "web"));
    let started = Instant::now();
    eventually("current with slow lists", Duration::from_secs(45), || {
        webhook.current(&fake)
    })
    .await;
    println!(
        "time to current with lists that take 14 s: {:?}",
        started.elapsed()
    );
    fake.slow_lists(None);
    // Cut once at 10 s, then given 20 s and answered: not tried on and on.
    let lists = fake.lists_of("/apis/apps/v1/statefulsets");
    assert!((2..=3).contains(&lists), "{lists} lists of StatefulSets");

    webhook.reviews.all_answered().await;
    one_story(&webhook.lines_since(from), &fake, 1);
}

#[tokio::test]
async fn a_watch_dropped_without_a_close_is_noticed() {
    let fake = FakeApiServer::start().await;
    objects(&fake);
    let webhook = webhook(&fake, true).await;
    let from = webhook.log_len();

    fake.stall_watches();
    fake.apply(statefulset("unseen", "web"));
    webhook
        .time_to_current(
            &fake,
            "a watch dropped without a close",
            Duration::from_secs(45),
        )
        .await;

    webhook.reviews.all_answered().await;
    one_story(&webhook.lines_since(from), &fake, 0);
}

#[tokio::test]
async fn too_many_requests_waits_as_long_as_the_api_server_asks() {
    let fake = FakeApiServer::start().await;
    objects(&fake);
    let webhook = webhook(&fake, true).await;
    let from = webhook.log_len();
    let watches = |fake: &FakeApiServer| {
        fake.requests()
            .iter()
            .filter(|r| {
                r.starts_with("GET /api/v1/services?")
                    || r.starts_with("GET /apis/apps/v1/statefulsets?")
            })
            .count()
    };
    let before = watches(&fake);

    // Longer than a request's deadline (10 s): kube's client waits out each Retry-After, then
    // the watch says it cannot reach the API server, and that its facts are stale.
    fake.throttle(Some(3));
    fake.compact();
    fake.drop_watches();
    fake.apply(statefulset("after", "web"));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(11_500)).await;
    let readyz = probe_get(&webhook.probe, "/readyz").await;
    assert!(readyz.starts_with("HTTP/1.1 200"), "{readyz}");
    assert!(readyz.contains("cross-object facts stale for"), "{readyz}");
    let asked = watches(&fake) - before;
    fake.throttle(None);
    webhook
        .time_to_current(
            &fake,
            "429 with Retry-After: 3 (12 s)",
            Duration::from_secs(6),
        )
        .await;

    // About one request every 3 s per watch, as asked, not a back-off of its own.
    let most = 2 * (started.elapsed().as_secs() as usize / 3 + 3);
    assert!(asked <= most, "{asked} requests in 11.5 s, most {most}");
    webhook.reviews.all_answered().await;
    one_story(&webhook.lines_since(from), &fake, 1);
}

#[tokio::test]
async fn a_leader_that_loses_the_api_server_stops_before_its_lease_runs_out() {
    let fake = FakeApiServer::start().await;
    objects(&fake);
    // A leader duty: without one a replica stays out of the election.
    let lease = [
        "--backstop",
        "stsguard-backstop",
        "--leader-lease-duration",
        "3s",
    ];
    let a = webhook_with(&fake, true, &lease).await;
    let b = webhook_with(&fake, true, &lease).await;
    eventually("one replica leads", Duration::from_secs(15), || async {
        leads(&a).await || leads(&b).await
    })
    .await;
    let (from_a, from_b) = (a.log_len(), b.log_len());

    // Longer than the lease: the leader must stop within the 3 s its last renewal is good for.
    fake.stop();
    let stopped = Instant::now();
    eventually("no replica leads", Duration::from_secs(3), || async {
        !leads(&a).await && !leads(&b).await
    })
    .await;
    println!(
        "leader duties stopped {:?} into the outage",
        stopped.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(6).saturating_sub(stopped.elapsed())).await;
    fake.restart().await;
    let back = Instant::now();
    eventually(
        "one replica leads again",
        Duration::from_secs(10),
        || async { leads(&a).await || leads(&b).await },
    )
    .await;
    println!(
        "a leader again {:?} after the API server's return",
        back.elapsed()
    );
    for _ in 0..20 {
        assert!(!(leads(&a).await && leads(&b).await), "two leaders");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lease = r#"stsguard_api_disconnected_since_timestamp_seconds{component="lease"} "#;
    for replica in [&a, &b] {
        eventually("the lease back", Duration::from_secs(10), || async {
            metric(&probe_metrics(&replica.probe).await, lease) == Some(0.0)
        })
        .await;
    }

    a.reviews.all_answered().await;
    b.reviews.all_answered().await;
    one_story(&a.lines_since(from_a), &fake, 1);
    one_story(&b.lines_since(from_b), &fake, 1);
}

#[tokio::test]
async fn reports_are_current_within_seconds_of_a_restart_with_a_new_epoch() {
    let fake = FakeApiServer::start().await;
    fake.install_crd(
        Kind::PolicyReport,
        "wgpolicyk8s.io_policyreports.yaml",
        "v1alpha2",
    );
    objects(&fake);
    let webhook = webhook_with(
        &fake,
        true,
        &[
            "--reports",
            "--reports-debounce",
            "100ms",
            "--leader-lease-duration",
            "3s",
        ],
    )
    .await;
    eventually("leading", Duration::from_secs(15), || leads(&webhook)).await;
    let from = webhook.log_len();

    fake.stop_for_a_new_epoch();
    tokio::time::sleep(Duration::from_secs(5)).await;
    fake.restart().await;
    let back = Instant::now();
    // A namespace with a violation, made right after the return: a ClusterIP Service that
    // governs a StatefulSet.
    let mut svc = service("late", "10.96.0.20", "late");
    svc["metadata"]["namespace"] = "late".into();
    let mut sts = statefulset("late", "late");
    sts["metadata"]["namespace"] = "late".into();
    fake.apply(svc);
    fake.apply(sts);
    eventually(
        "the new namespace's report",
        Duration::from_secs(15),
        || async {
            fake.get(Kind::PolicyReport, "late", "stsguard-late")
                .is_some()
        },
    )
    .await;
    println!(
        "time to a report after a restart with a new epoch: {:?}",
        back.elapsed()
    );
    webhook
        .time_to_current(
            &fake,
            "a restart with a new epoch (reports on)",
            Duration::from_secs(5),
        )
        .await;

    webhook.reviews.all_answered().await;
    one_story(&webhook.lines_since(from), &fake, 1);
}
