//! `stsguard serve` with cluster lookups at two sizes: 10,000 Services and 2,000 StatefulSets in
//! 100 namespaces, and 100,000 Services and 20,000 StatefulSets in 5,000 namespaces (objects as a
//! real API server returns them: managedFields, the last-applied annotation, status; lists paged
//! as each binary asks). For each size and each binary (this build, and `STSGUARD_REFERENCE`
//! when set, side by side in one run): the time to the first sync of both caches, resident
//! memory (VmRSS, VmHWM), and the latency of reviews that read the caches. `bench/cache-memory.sh` builds the
//! reference from a git revision and runs this; `cargo bench --bench cache_memory` alone runs
//! this build only. Targets: < 40 MB at the small size, < 150 MB and sync < 10 s at the large.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{
    Http,
    apiserver::{FakeApiServer, Kind},
    process::metric,
};

fn managed_fields(kind: &str) -> Value {
    json!([{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": kind,
            "time": "2026-11-24T16:29:49Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
                                        "f:labels": {".": {}, "f:app.kubernetes.io/name": {}, "f:app.kubernetes.io/instance": {}}},
                         "f:spec": {"f:ports": {".": {}, "k:{\"port\":5432,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}},
                                    "f:selector": {}, "f:sessionAffinity": {}, "f:type": {}}}}])
}

fn service(i: usize, namespaces: usize) -> Value {
    let name = format!("svc-{i}");
    let mut svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": format!("team-{}", i % namespaces), "uid": format!("00000000-0000-0000-0000-{i:012}"),
                     "labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": "prod"},
                     "managedFields": managed_fields("v1"), "creationTimestamp": "2026-11-24T16:29:49Z"},
        "spec": {"clusterIP": if i.is_multiple_of(5) { "None".to_owned() } else { format!("10.96.{}.{}", i / 250, i % 250) },
                 "clusterIPs": ["10.96.0.1"], "type": "ClusterIP", "sessionAffinity": "None",
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "internalTrafficPolicy": "Cluster",
                 "selector": {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": "prod"},
                 "ports": [{"name": "pg", "port": 5432, "protocol": "TCP", "targetPort": 5432}]},
        "status": {"loadBalancer": {}}
    });
    let applied = svc.to_string();
    svc["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/last-applied-configuration": applied});
    svc
}

/// The StatefulSet governed by Service `5 i` (a headless one), in its namespace.
fn statefulset(i: usize, namespaces: usize) -> Value {
    let name = format!("svc-{}", i * 5);
    let mut sts = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": format!("team-{}", (i * 5) % namespaces), "uid": format!("10000000-0000-0000-0000-{i:012}"),
                     "labels": {"app.kubernetes.io/name": name}, "generation": 3,
                     "managedFields": managed_fields("apps/v1"), "creationTimestamp": "2026-11-24T16:29:49Z"},
        "spec": {"serviceName": name, "replicas": 3, "podManagementPolicy": "OrderedReady", "revisionHistoryLimit": 10,
                 "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                 "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
                 "template": {"metadata": {"labels": {"app.kubernetes.io/name": name, "app.kubernetes.io/instance": "prod"}},
                              "spec": {"terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst", "restartPolicy": "Always",
                                       "containers": [{"name": "postgres", "image": "postgres:17", "imagePullPolicy": "IfNotPresent",
                                                       "ports": [{"name": "pg", "containerPort": 5432, "protocol": "TCP"}],
                                                       "env": [{"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"}],
                                                       "resources": {"requests": {"cpu": "250m", "memory": "256Mi"}},
                                                       "readinessProbe": {"exec": {"command": ["pg_isready", "-U", "postgres"]}, "periodSeconds": 10},
                                                       "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}]}]}},
                 "volumeClaimTemplates": [{"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
                                           "spec": {"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem",
                                                    "resources": {"requests": {"storage": "10Gi"}}},
                                           "status": {"phase": "Pending"}}]},
        "status": {"replicas": 3, "readyReplicas": 3, "currentReplicas": 3, "updatedReplicas": 3, "availableReplicas": 3,
                   "currentRevision": format!("{name}-5d8c7b9f4"), "updateRevision": format!("{name}-5d8c7b9f4"),
                   "observedGeneration": 3, "collisionCount": 0}
    });
    if i % 7 == 6 {
        // Something for the in-cluster reports to say, in every namespace with StatefulSets.
        sts["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("readinessProbe");
    }
    let applied = sts.to_string();
    sts["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/last-applied-configuration": applied});
    sts
}

/// The namespaces whose report says something: those of the StatefulSets without a readiness
/// probe.
fn reported_namespaces(size: &Size) -> usize {
    (0..size.statefulsets)
        .filter(|i| i % 7 == 6)
        .map(|i| (i * 5) % size.namespaces)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
}

/// VmRSS and VmHWM (peak) of a process, in KiB.
fn memory(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Size {
    services: usize,
    statefulsets: usize,
    namespaces: usize,
}

/// What one binary measured at one size.
struct Measured {
    sync: Duration,
    rss_kib: u64,
    peak_kib: u64,
    /// p50 and p99 of each review, in ms.
    latency: Vec<(f64, f64)>,
}

/// The fake API server holding `size`'s objects; prints how much JSON that is.
fn fill(fake: &FakeApiServer, size: &Size) {
    let mut bytes = 0;
    for i in 0..size.services {
        let svc = service(i, size.namespaces);
        bytes += svc.to_string().len();
        fake.apply(svc);
    }
    for i in 0..size.statefulsets {
        let sts = statefulset(i, size.namespaces);
        bytes += sts.to_string().len();
        fake.apply(sts);
    }
    println!(
        "API server holds {} Services and {} StatefulSets in {} namespaces: {} MB as JSON",
        size.services,
        size.statefulsets,
        size.namespaces,
        bytes / 1_000_000
    );
}

/// How long the fake takes to serve every page of both kinds, both lists at once as the
/// webhook asks for them, read but not parsed: the floor under any sync time.
async fn serve_time(fake: &FakeApiServer) -> Duration {
    let client = kube::Client::try_from(fake.config()).unwrap();
    let list_all = |path: &'static str| {
        let client = client.clone();
        async move {
            let mut token = String::new();
            loop {
                let uri = format!("{path}?limit=100&continue={token}");
                let request = http::Request::get(uri).body(Vec::new()).unwrap();
                let text = client.request_text(request).await.unwrap();
                // The list's metadata comes before its items.
                let Some(at) = text.find("\"continue\":\"") else {
                    return;
                };
                let rest = &text[at + "\"continue\":\"".len()..];
                token = rest[..rest.find('"').unwrap()].to_owned();
            }
        }
    };
    let started = Instant::now();
    tokio::join!(
        list_all("/api/v1/services"),
        list_all("/apis/apps/v1/statefulsets")
    );
    started.elapsed()
}

/// Reviews that read the caches without a live read: a StatefulSet CREATE whose governing
/// Service is headless and selects its pods, and an UPDATE of a governing Service that leaves
/// its spec as it was (which looks up the StatefulSets naming it).
fn reviews() -> Vec<(&'static str, Vec<u8>)> {
    let fixture =
        |name: &str| -> Value { serde_json::from_slice(&support::fixture(name)).unwrap() };
    let mut sts = fixture("validate-StatefulSet-CREATE-cap-web-1");
    let mut object = statefulset(0, 1);
    object["metadata"]["name"] = json!("bench");
    object["metadata"]["namespace"] = json!("team-0");
    object.as_object_mut().unwrap().remove("status");
    sts["request"]["namespace"] = json!("team-0");
    sts["request"]["name"] = json!("bench");
    sts["request"]["object"] = object;
    let mut svc = fixture("validate-Service-UPDATE-cap-web-1");
    let mut object = service(5, 100);
    object["metadata"]["namespace"] = json!("team-5");
    object["metadata"]["resourceVersion"] = json!("7");
    svc["request"]["namespace"] = json!("team-5");
    svc["request"]["name"] = json!("svc-5");
    svc["request"]["object"] = object.clone();
    svc["request"]["oldObject"] = object;
    vec![
        (
            "StatefulSet CREATE (reads its governing Service)",
            sts.to_string().into_bytes(),
        ),
        (
            "Service UPDATE (reads the StatefulSets naming it)",
            svc.to_string().into_bytes(),
        ),
    ]
}

const WARMUP: usize = 200;
const REQUESTS: usize = 3_000;

/// p50 and p99 of `REQUESTS` reviews sent one after another on one connection, in ms.
async fn latency(client: &support::TestClient, url: &str, body: &[u8]) -> (f64, f64) {
    let mut times = Vec::with_capacity(REQUESTS);
    for i in 0..WARMUP + REQUESTS {
        let started = Instant::now();
        let reply = client.post(url, body.to_vec()).await;
        let elapsed = started.elapsed();
        assert_eq!(reply.status, 200, "{}", reply.text());
        let answer = reply.json();
        let skipped = support::all_warnings(&answer)
            .iter()
            .any(|w| w.starts_with(stsguard::review::SKIPPED_NOTE));
        assert!(!skipped, "the review must read the caches: {answer}");
        if i >= WARMUP {
            times.push(elapsed.as_secs_f64() * 1000.0);
        }
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    (at(0.50), at(0.99))
}

/// Starts `binary` against `kubeconfig`; returns it, its webhook address, the time until both
/// caches said they synced, and the channel its log lines keep arriving on (drained, so that
/// the pipe never blocks it).
fn start(
    binary: &Path,
    kubeconfig: &Path,
    dir: &Path,
    extra: &[&str],
) -> (Child, Serving, Duration) {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--probe-addr",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "json", "--dev-cert-dir"])
        .arg(dir.join("certs"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(extra)
        .env("RUST_LOG", "info")
        .env("POD_NAME", "stsguard-bench")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut serving = None;
    let mut synced = 0;
    while synced < 2 || serving.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("stsguard syncs its caches");
        if line.contains("cache synced") {
            synced += 1;
        }
        if line.contains("stsguard is serving") {
            let line: Value = serde_json::from_str(&line).unwrap();
            let field = |key: &str| line[key].as_str().unwrap().to_owned();
            serving = Some(Serving {
                addr: field("addr"),
                probe: field("probe_addr"),
            });
        }
    }
    let sync = started.elapsed();
    // Keep draining the log.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    (child, serving.unwrap(), sync)
}

/// Where a started binary listens: its webhook and its probes (health, metrics).
struct Serving {
    addr: String,
    probe: String,
}

fn measure(runtime: &tokio::runtime::Runtime, binary: &Path, kubeconfig: &Path) -> Measured {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, Serving { addr, .. }, sync) = start(binary, kubeconfig, dir.path(), &[]);
    // Let the allocator and the watches settle, then sample.
    std::thread::sleep(Duration::from_secs(2));
    let (rss_kib, peak_kib) = memory(child.id());
    let ca = std::fs::read_to_string(dir.path().join("certs/ca.crt")).unwrap();
    let client = support::client_trusting(&ca, Http::One);
    let url = format!("https://{addr}/validate");
    let latency = reviews()
        .iter()
        .map(|(_, body)| runtime.block_on(latency(&client, &url, body)))
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    Measured {
        sync,
        rss_kib,
        peak_kib,
        latency,
    }
}

/// What one binary measured at one size with the in-cluster reports on.
struct Reported {
    /// From start to the end of the first full pass, and to the last report's write.
    pass: Duration,
    written: Duration,
    rss_kib: u64,
    peak_kib: u64,
}

/// `binary` with `--reports`: how long until its first full pass over every object ends and
/// until every namespace's report is written, and its memory then.
fn measure_reports(
    runtime: &tokio::runtime::Runtime,
    binary: &Path,
    kubeconfig: &Path,
    reports: usize,
) -> Reported {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    // Writes paced at 1,000/s, so that the write budget does not hide what a pass costs; the
    // production default is 5/s.
    let args = [
        "--reports",
        "--reports-write-rate",
        "1000",
        "--reports-debounce",
        "100ms",
    ];
    let (mut child, Serving { probe, .. }, _) = start(binary, kubeconfig, dir.path(), &args);
    let mut pass = None;
    let written = loop {
        let text = runtime.block_on(support::process::probe_metrics(&probe));
        if pass.is_none()
            && metric(&text, "stsguard_report_last_full_pass_timestamp_seconds ")
                .is_some_and(|t| t > 0.0)
        {
            pass = Some(started.elapsed());
        }
        let applied = metric(
            &text,
            r#"stsguard_report_writes_total{operation="apply",result="success"} "#,
        )
        .unwrap_or(0.0);
        if pass.is_some() && applied >= reports as f64 {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no full pass and {reports} reports within 10 minutes: {text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_secs(2));
    let (rss_kib, peak_kib) = memory(child.id());
    let _ = child.kill();
    let _ = child.wait();
    Reported {
        pass: pass.unwrap(),
        written,
        rss_kib,
        peak_kib,
    }
}

fn mb(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let current = Path::new(env!("CARGO_BIN_EXE_stsguard")).to_path_buf();
    let mut binaries = vec![("this build", current)];
    if let Some(reference) = std::env::var_os("STSGUARD_REFERENCE") {
        binaries.insert(0, ("reference", reference.into()));
    }
    let sizes = [
        Size {
            services: 10_000,
            statefulsets: 2_000,
            namespaces: 100,
        },
        Size {
            services: 100_000,
            statefulsets: 20_000,
            namespaces: 5_000,
        },
    ];
    let mut rows = Vec::new();
    let mut reported = Vec::new();
    for size in &sizes {
        let fake = runtime.block_on(FakeApiServer::start());
        fill(&fake, size);
        fake.install_crd(
            Kind::PolicyReport,
            "wgpolicyk8s.io_policyreports.yaml",
            "v1alpha2",
        );
        let serving = runtime.block_on(serve_time(&fake));
        println!(
            "the fake API server serves every page of both lists in {:.2} s",
            serving.as_secs_f64()
        );
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = fake.kubeconfig(dir.path());
        for (label, binary) in &binaries {
            let m = measure(&runtime, binary, &kubeconfig);
            let objects = size.services + size.statefulsets;
            println!(
                "{label}, {objects} objects: synced {:.2} s, resident {} MB (peak {} MB), \
                 latency {:?}",
                m.sync.as_secs_f64(),
                mb(m.rss_kib),
                mb(m.peak_kib),
                m.latency
            );
            let r = measure_reports(&runtime, binary, &kubeconfig, reported_namespaces(size));
            println!(
                "{label}, {objects} objects, --reports: full pass ended {:.2} s after start, \
                 all reports written {:.2} s, resident {} MB (peak {} MB)",
                r.pass.as_secs_f64(),
                r.written.as_secs_f64(),
                mb(r.rss_kib),
                mb(r.peak_kib),
            );
            reported.push((size, *label, r, m.rss_kib));
            rows.push((size, *label, m, serving));
            // The next binary writes its own reports, not learns these.
            let written = fake.objects(Kind::PolicyReport);
            assert_eq!(
                written.len(),
                reported_namespaces(size),
                "one report per namespace"
            );
            for report in written {
                let at = |key: &str| report["metadata"][key].as_str().unwrap().to_owned();
                fake.delete(Kind::PolicyReport, &at("namespace"), &at("name"));
            }
        }
        drop(fake);
    }
    let names: Vec<&str> = reviews().iter().map(|(name, _)| *name).collect();
    println!(
        "\n| objects | binary | fake serves all pages | first sync | VmRSS MB | VmHWM MB | {} p50 / p99 ms | {} p50 / p99 ms |",
        names[0], names[1]
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (size, label, m, serving) in &rows {
        println!(
            "| {} Services + {} StatefulSets, {} namespaces | {label} | {:.2} s | {:.2} s | {} | {} | {:.2} / {:.2} | {:.2} / {:.2} |",
            size.services,
            size.statefulsets,
            size.namespaces,
            serving.as_secs_f64(),
            m.sync.as_secs_f64(),
            mb(m.rss_kib),
            mb(m.peak_kib),
            m.latency[0].0,
            m.latency[0].1,
            m.latency[1].0,
            m.latency[1].1,
        );
    }
    println!(
        "\n| objects | binary | reports | first full pass ended | all reports written | VmRSS MB | VmHWM MB | VmRSS without --reports |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (size, label, r, plain_kib) in &reported {
        println!(
            "| {} Services + {} StatefulSets, {} namespaces | {label} | {} | {:.2} s | {:.2} s | {} | {} | {} |",
            size.services,
            size.statefulsets,
            size.namespaces,
            reported_namespaces(size),
            r.pass.as_secs_f64(),
            r.written.as_secs_f64(),
            mb(r.rss_kib),
            mb(r.peak_kib),
            mb(*plain_kib),
        );
    }
    // Memory per object: the growth from the small size to the large, per object added.
    for (label, _) in &binaries {
        let of = |i: usize| {
            rows.iter()
                .filter(|r| r.1 == *label)
                .nth(i)
                .map(|r| (r.0, r.2.rss_kib))
        };
        if let (Some((small, a)), Some((large, b))) = (of(0), of(1)) {
            let added =
                (large.services + large.statefulsets) - (small.services + small.statefulsets);
            println!(
                "{label}: {:.0} bytes resident per object added (VmRSS growth / objects added)",
                (b.saturating_sub(a) * 1024) as f64 / added as f64
            );
        }
    }
    drop(runtime);
}
