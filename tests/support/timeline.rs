//! A timeline through a control-plane fault, as the fault tests follow it: `stsguard serve`
//! on the fake API server with its JSON log, reviews sent every 50 ms all along (each must get
//! a verdict), the time until the caches are current again, and the log's story of the outage.

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

use super::{
    Http,
    apiserver::{FakeApiServer, Kind, eventually},
    cluster::{service, statefulset},
    fixture,
    process::{metric, probe_get, probe_metrics, serve_logged},
};

pub const KINDS: [&str; 2] = ["services", "statefulsets"];

/// `stsguard serve` following `fake`, with its JSON log and reviews sent all along.
pub struct Webhook {
    child: Child,
    log: PathBuf,
    pub probe: String,
    client: super::TestClient,
    url: String,
    pub reviews: Reviewer,
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
pub struct Reviewer {
    stop: Arc<AtomicBool>,
    sent: Arc<Mutex<usize>>,
    failed: Arc<Mutex<Vec<String>>>,
}

impl Reviewer {
    fn start(ca: &str, addr: &str) -> Reviewer {
        let client = super::client_trusting(ca, Http::Two);
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

    /// Stops sending; every review sent was answered with a verdict.
    /// A few more are sent first, so that each kind of live read has met the API server as
    /// it is now (the story's INFO line for a live read comes with the first that succeeds).
    pub async fn all_answered(&self) {
        let now = *self.sent.lock().unwrap();
        eventually("a few reviews", Duration::from_secs(20), || async {
            *self.sent.lock().unwrap() >= (now + 4).max(11)
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
pub async fn webhook(fake: &FakeApiServer, ready: bool) -> Webhook {
    webhook_with(fake, ready, &[]).await
}

pub async fn webhook_with(fake: &FakeApiServer, ready: bool, extra: &[&str]) -> Webhook {
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
        client: super::client_trusting(&ca, Http::Two),
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
    pub async fn review(&self, name: &str) -> Value {
        self.client.post(&self.url, fixture(name)).await.json()
    }

    /// Whether both caches hold what the API server holds and say they are current.
    pub async fn current(&self, fake: &FakeApiServer) -> bool {
        let metrics = probe_metrics(&self.probe).await;
        let counts = [
            fake.objects(Kind::Service).len(),
            fake.objects(Kind::StatefulSet).len(),
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
    pub async fn time_to_current(&self, fake: &FakeApiServer, fault: &str, bound: Duration) {
        let ended = Instant::now();
        eventually(&format!("current after {fault}"), bound, || {
            self.current(fake)
        })
        .await;
        println!("time to current after {fault}: {:?}", ended.elapsed());
    }

    /// The log lines from byte `from` on, parsed, once what was logged until now is written
    /// (the log is written out in batches, every 20 ms).
    pub fn lines_since(&self, from: usize) -> Vec<Value> {
        std::thread::sleep(Duration::from_millis(500));
        let text = std::fs::read_to_string(&self.log).unwrap();
        text[from..]
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    pub fn log_len(&self) -> usize {
        std::fs::metadata(&self.log).unwrap().len() as usize
    }
}

/// The outage's story from `lines`: no ERROR, every WARN names its component and the server,
/// per watched kind `lost` WARN lines that it lost the API server and as many INFO lines that
/// it is back (with how long it was out); every other component (the lease, the live reads)
/// at most one WARN, and an INFO that it is back for it.
pub fn one_story(lines: &[Value], fake: &FakeApiServer, lost: usize) {
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

pub fn objects(fake: &FakeApiServer) {
    fake.apply(service("web", "None", "web"));
    fake.apply(statefulset("web", "web"));
}

pub async fn leads(webhook: &Webhook) -> bool {
    metric(&probe_metrics(&webhook.probe).await, "stsguard_leader ") == Some(1.0)
}
