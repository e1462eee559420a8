//! The control plane's faults, driven through the real `stsguard serve` process against the
//! fake API server: a restart with a new resourceVersion epoch, compaction, a refused
//! connection, a hanging list, a watch dropped without a close, and 429 with Retry-After. Each
//! test follows one timeline: reviews keep being answered during the fault, the caches are
//! current within a (generous) bound after it ends, and the log tells one story per outage
//! (one WARN and one INFO per watch that lost the API server, never an ERROR, never a line
//! without its component). The times to current are printed (`--nocapture`) and written down in
//! BENCHMARKS.md, not asserted tightly.

mod support;

use std::{
    path::PathBuf,
    process::Child,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use support::{
    Http,
    apiserver::{FakeApiServer, eventually},
    cluster::{service, statefulset},
    fixture,
    process::{metric, probe_get, probe_metrics, serve_logged},
};

const KINDS: [&str; 2] = ["services", "statefulsets"];

/// `stsguard serve` following `fake`, with its JSON log and reviews sent all along.
struct Webhook {
    child: Child,
    log: PathBuf,
    probe: String,
    client: support::TestClient,
    url: String,
    reviews: Reviewer,
    _dir: tempfile::TempDir,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a review every 50 ms (a StatefulSet CREATE answered from the cache, a Service CREATE
/// that reads the API server live) and keeps every failure.
struct Reviewer {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<usize>>,
    failed: Arc<Mutex<Vec<String>>>,
}

impl Reviewer {
    fn start(ca: &str, addr: &str) -> Reviewer {
        let client = support::client_trusting(ca, Http::Two);
        let url = format!("https://{addr}/validate");
        let (stop, sent, failed) = (Arc::default(), Arc::default(), Arc::default());
        let reviewer = Reviewer { stop, sent, failed };
        let (stop, sent, failed) = (
            reviewer.stop.clone(),
            reviewer.sent.clone(),
            reviewer.failed.clone(),
        );
        tokio::spawn(async move {
            let fixtures = [
                fixture("validate-StatefulSet-CREATE-cap-web-1"),
                fixture("validate-Service-CREATE-cap-cache-1"),
            ];
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let body = fixtures[n % 2].clone();
                let outcome = match client.try_post(&url, body).await {
                    Ok(reply) if reply.status == 200 => {
                        let review = reply.json();
                        if review["response"]["allowed"].is_boolean() {
                            Ok(())
                        } else {
                            Err(format!("no verdict: {review}"))
                        }
                    }
                    Ok(reply) => Err(format!("{}: {}", reply.status, reply.text())),
                    Err(e) => Err(e),
                };
                *sent.lock().unwrap() += 1;
                if let Err(e) = outcome {
                    failed.lock().unwrap().push(e);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        reviewer
    }

    /// Stops sending (once it has sent a few); every review sent was answered with a verdict.
    async fn all_answered(&self) {
        eventually("a few reviews", Duration::from_secs(10), || async {
            *self.sent.lock().unwrap() > 10
        })
        .await;
        self.stop.store(true, Ordering::Relaxed);
        let sent = *self.sent.lock().unwrap();
        let failed = self.failed.lock().unwrap();
        assert!(sent > 10, "only {sent} reviews sent");
        assert!(
            failed.is_empty(),
            "{} of {sent} failed: {failed:?}",
            failed.len()
        );
    }
}

/// Starts `stsguard serve` on `fake`; `ready`: wait for the first sync.
async fn webhook(fake: &FakeApiServer, ready: bool) -> Webhook {
    webhook_with(fake, ready, &[]).await
}

async fn webhook_with(fake: &FakeApiServer, ready: bool, extra: &[&str]) -> Webhook {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let log = dir.path().join("stderr.log");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "--kubeconfig".as_ref(),
        kubeconfig.as_os_str(),
        "--drain-delay".as_ref(),
        "0s".as_ref(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let (child, serving) = serve_logged(dir.path(), &args, &log).await;
    let probe = serving["probe_addr"].as_str().unwrap().to_owned();
    let addr = serving["addr"].as_str().unwrap().to_owned();
    let ca = std::fs::read_to_string(dir.path().join("dev/ca.crt")).unwrap();
    let webhook = Webhook {
        child,
        log,
        probe,
        client: support::client_trusting(&ca, Http::Two),
        url: format!("https://{addr}/validate"),
        reviews: Reviewer::start(&ca, &addr),
        _dir: dir,
    };
    if ready {
        eventually("the first sync", Duration::from_secs(20), || async {
            probe_get(&webhook.probe, "/readyz")
                .await
                .starts_with("HTTP/1.1 200")
        })
        .await;
    }
    webhook
}

impl Webhook {
    async fn review(&self, name: &str) -> Value {
        self.client.post(&self.url, fixture(name)).await.json()
    }

    /// Whether both caches hold what the API server holds and say they are current.
    async fn current(&self, fake: &FakeApiServer) -> bool {
        let metrics = probe_metrics(&self.probe).await;
        let counts = [
            fake.objects(support::apiserver::Kind::Service).len(),
            fake.objects(support::apiserver::Kind::StatefulSet).len(),
        ];
        KINDS.iter().zip(counts).all(|(kind, count)| {
            let labels = format!(r#"{{kind="{kind}",namespace=""}} "#);
            let value = |name: &str| metric(&metrics, &format!("stsguard_{name}{labels}"));
            // The stale and disconnected metrics are checked where the fault is on; here only
            // that they do not say "behind" (so that the object counts decide on any build).
            value("cache_objects") == Some(count as f64)
                && value("cache_stale_since_timestamp_seconds").unwrap_or(0.0) == 0.0
                && value("cache_disconnected_since_timestamp_seconds").unwrap_or(0.0) == 0.0
        })
    }

    /// How long after now the caches are current (at most `bound`), printed for BENCHMARKS.md.
    async fn time_to_current(&self, fake: &FakeApiServer, fault: &str, bound: Duration) {
        let ended = Instant::now();
        eventually(&format!("current after {fault}"), bound, || {
            self.current(fake)
        })
        .await;
        println!("time to current after {fault}: {:?}", ended.elapsed());
    }

    /// The log lines from byte `from` on, parsed, once what was logged until now is written
    /// (the log is written out in batches, every 20 ms).
    fn lines_since(&self, from: usize) -> Vec<Value> {
        std::thread::sleep(Duration::from_millis(500));
        let text = std::fs::read_to_string(&self.log).unwrap();
        text[from..]
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    fn log_len(&self) -> usize {
        std::fs::metadata(&self.log).unwrap().len() as usize
    }
}

/// The outage's story from `lines`: no ERROR, every WARN names its component and the server,
/// per watched kind `lost` WARN lines that it lost the API server and as many INFO lines that
/// it is back (with how long it was out); every other component (the lease, the live reads)
/// at most one WARN, and an INFO that it is back for it.
fn one_story(lines: &[Value], fake: &FakeApiServer, lost: usize) {
    let at = |level: &'static str| lines.iter().filter(move |l| l["level"] == level);
    let errors: Vec<_> = at("ERROR").collect();
    assert!(errors.is_empty(), "ERROR lines: {errors:#?}");
    for warn in at("WARN") {
        assert!(warn["component"].is_string(), "no component: {warn}");
    }
    for kind in KINDS {
        let of = |l: &&Value| l["kind"] == kind && l["component"] == "watch";
        let warns: Vec<_> = at("WARN").filter(of).collect();
        assert_eq!(warns.len(), lost, "{kind} WARN lines: {warns:#?}");
        for warn in &warns {
            assert!(warn["error"].as_str().is_some_and(|e| !e.is_empty()));
        }
        let backs: Vec<_> = at("INFO")
            .filter(of)
            .filter(|l| l["message"] == "watch reached the API server again")
            .collect();
        assert_eq!(backs.len(), lost, "{kind} INFO lines: {lines:#?}");
        assert!(backs.iter().all(|l| l["out_for"].is_string()));
    }
    for warn in at("WARN") {
        let server = warn["server"].as_str().unwrap_or_default();
        assert!(server.starts_with(&fake.url()), "{warn}");
        if warn["component"] == "watch" {
            continue;
        }
        let of = |l: &&Value| l["component"] == warn["component"];
        let back = format!(
            "{} reached the API server again",
            warn["component"].as_str().unwrap()
        );
        assert_eq!(at("WARN").filter(of).count(), 1, "{lines:#?}");
        assert_eq!(
            at("INFO")
                .filter(of)
                .filter(|l| l["message"] == *back)
                .count(),
            1,
            "{lines:#?}"
        );
    }
}

fn objects(fake: &FakeApiServer) {
    fake.apply(service("web", "None", "web"));
    fake.apply(statefulset("web", "web"));
}

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
    assert!(readyz.contains("API server lost for"), "{readyz}");
    assert!(readyz.contains("cross-object facts stale for"), "{readyz}");
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

async fn leads(webhook: &Webhook) -> bool {
    metric(&probe_metrics(&webhook.probe).await, "stsguard_leader ") == Some(1.0)
}

#[tokio::test]
async fn a_leader_that_loses_the_api_server_stops_before_its_lease_runs_out() {
    let fake = FakeApiServer::start().await;
    objects(&fake);
    let lease = ["--leader-lease-duration", "3s"];
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
        support::apiserver::Kind::PolicyReport,
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
            fake.get(
                support::apiserver::Kind::PolicyReport,
                "late",
                "stsguard-late",
            )
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
