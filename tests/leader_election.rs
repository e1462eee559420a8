//! Leader election between real `stsguard serve` processes over the fake API server's Lease
//! (server-side apply with field managers, as the real one): exactly one replica leads, never
//! two at once; a leader that is killed is replaced once its lease expires; a leader that stops
//! cleanly releases its lease; a replica that starts while the API server is away serves
//! admission anyway and joins the election when it comes back. A replica asked for no leader
//! duty, or given no cluster by name, never takes the Lease.

mod support;

use std::time::Duration;

use support::{
    apiserver::{FakeApiServer, Kind, eventually},
    process::{Running, probe_get, probe_metrics, sigterm, start_with_env, wait},
};

/// A replica named as the chart names it (POD_NAME, its identity in the election).
fn replica(dir: &std::path::Path, kubeconfig: &str, name: &str, lease: &str) -> Running {
    start_with_env(
        dir,
        &[
            "--kubeconfig",
            kubeconfig,
            // A leader duty: without one a replica stays out of the election.
            "--backstop",
            "stsguard-backstop",
            "--leader-lease-duration",
            lease,
            "--drain-delay",
            "0s",
        ],
        &[("POD_NAME", name)],
    )
}

async fn leads(replica: &Running) -> Option<bool> {
    let metrics = probe_metrics(&replica.probe).await;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("stsguard_leader "))
        .map(|v| v.trim() == "1")
}

fn holder(fake: &FakeApiServer) -> Option<String> {
    fake.get(Kind::Lease, "default", "stsguard")?["spec"]["holderIdentity"]
        .as_str()
        .map(str::to_owned)
}

#[tokio::test]
async fn one_replica_leads_and_a_killed_leader_is_replaced() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let kubeconfig = kubeconfig.to_str().unwrap();
    let a = replica(dir.path(), kubeconfig, "replica-a", "3s");
    let b = replica(dir.path(), kubeconfig, "replica-b", "3s");

    eventually("one replica leads", Duration::from_secs(15), || async {
        holder(&fake).is_some() && (leads(&a).await == Some(true) || leads(&b).await == Some(true))
    })
    .await;
    // Over several renewals (every 2 s for a 3 s lease), exactly one leads, and it is the
    // holder the Lease names.
    for _ in 0..40 {
        let (la, lb) = (leads(&a).await, leads(&b).await);
        assert_ne!(la, lb, "both or neither lead: a={la:?} b={lb:?}");
        let expected = if la == Some(true) {
            "replica-a"
        } else {
            "replica-b"
        };
        let named = holder(&fake);
        // The metric follows the lease a moment later; the holder may only be ahead of it.
        if named.as_deref() != Some(expected) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(holder(&fake).as_deref(), Some(expected));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let (mut leader, follower, follower_name) = if leads(&a).await == Some(true) {
        (a, b, "replica-b")
    } else {
        (b, a, "replica-a")
    };
    // SIGKILL: no release; the follower must wait for the lease to expire, then take it.
    leader.child.kill().unwrap();
    leader.child.wait().unwrap();
    eventually("the follower leads", Duration::from_secs(15), || async {
        leads(&follower).await == Some(true) && holder(&fake).as_deref() == Some(follower_name)
    })
    .await;
}

#[tokio::test]
async fn a_leader_that_stops_cleanly_releases_its_lease() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let kubeconfig = kubeconfig.to_str().unwrap();
    let mut a = replica(dir.path(), kubeconfig, "replica-a", "4s");
    eventually("replica-a leads", Duration::from_secs(15), || async {
        leads(&a).await == Some(true)
    })
    .await;
    let b = replica(dir.path(), kubeconfig, "replica-b", "4s");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        leads(&b).await,
        Some(false),
        "a second replica must not lead"
    );

    sigterm(&a.child);
    assert!(wait(&mut a.child, Duration::from_secs(20)).await.success());
    // Released on the way out: the Lease names no holder until the next one takes it (the
    // follower only looks again when the lease it saw would have expired).
    let lease = fake.get(Kind::Lease, "default", "stsguard").unwrap();
    assert!(
        lease["spec"]["holderIdentity"].is_null() || lease["spec"]["holderIdentity"] == "replica-b",
        "not released: {lease}"
    );
    eventually("replica-b leads", Duration::from_secs(15), || async {
        leads(&b).await == Some(true) && holder(&fake).as_deref() == Some("replica-b")
    })
    .await;
}

#[tokio::test]
async fn a_replica_started_while_the_api_server_is_away_serves_and_joins_later() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let kubeconfig = kubeconfig.to_str().unwrap();
    fake.stop();
    let a = replica(dir.path(), kubeconfig, "replica-a", "3s");
    // Serving (start_with returned on the serving line) but not leading.
    assert_eq!(leads(&a).await, Some(false));
    fake.restart().await;
    eventually(
        "replica-a leads once the API server is back",
        Duration::from_secs(40),
        || async { leads(&a).await == Some(true) && holder(&fake).as_deref() == Some("replica-a") },
    )
    .await;
}

/// A `serve` started by hand with a kubeconfig but no leader duty watches the cluster for its
/// lookups and never takes the Lease: reports, certificates and registration stay with the
/// installation's own replicas.
#[tokio::test]
async fn a_replica_without_leader_duties_never_takes_the_lease() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let plain = start_with_env(
        dir.path(),
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--leader-lease-duration",
            "2s",
            "--drain-delay",
            "0s",
        ],
        &[("POD_NAME", "laptop")],
    );
    eventually("its caches sync", Duration::from_secs(15), || async {
        probe_get(&plain.probe, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    })
    .await;
    // Longer than a lease: an elected replica would hold it by now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(leads(&plain).await, Some(false));
    assert_eq!(holder(&fake), None);
}

/// `~/.kube/config` is not read unless named: with a working one in HOME and neither
/// `--kubeconfig` nor KUBECONFIG, `serve` runs without cluster lookups.
#[tokio::test]
async fn serve_reads_no_unnamed_kubeconfig() {
    let fake = FakeApiServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir_all(home.join(".kube")).unwrap();
    std::fs::copy(fake.kubeconfig(dir.path()), home.join(".kube/config")).unwrap();
    let server = start_with_env(
        dir.path(),
        &["--drain-delay", "0s"],
        &[("HOME", home.to_str().unwrap()), ("KUBECONFIG", "")],
    );
    let readyz = probe_get(&server.probe, "/readyz").await;
    assert!(readyz.contains("cluster lookups: off"), "{readyz}");
}
