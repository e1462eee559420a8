//! The in-cluster reports over 10,000 Services and 2,000 StatefulSets in 100 namespaces, from
//! the test suite's fake API server (with the PolicyReport CRD's schema checked on every write),
//! side by side in one run with the one-shot `stsguard audit --cluster` over the same objects
//! (the same chain) and with `stsguard serve` without reports:
//!
//! - time from start to the end of the first full pass, and to every namespace's report written;
//! - report writes for it, and the write rate;
//! - resident memory once settled, with and without `--reports`.
//!
//! `cargo bench --bench reports`

#[path = "../tests/support/apiserver.rs"]
#[allow(dead_code)]
mod apiserver;

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use apiserver::{FakeApiServer, Kind};
use serde_json::{Value, json};

const NAMESPACES: usize = 100;

fn service(i: usize) -> Value {
    let name = format!("svc-{i}");
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": format!("team-{}", i % NAMESPACES),
                        "uid": format!("00000000-0000-0000-0000-{i:012}"),
                        "labels": {"app.kubernetes.io/name": name}},
           "spec": {"clusterIP": if i.is_multiple_of(10) { "10.96.0.1" } else { "None" },
                    "type": "ClusterIP", "selector": {"app.kubernetes.io/name": name},
                    "ports": [{"name": "pg", "port": 5432, "protocol": "TCP", "targetPort": 5432}]}})
}

/// Every fifth Service has a StatefulSet; half of those have a Service that is not headless.
fn statefulset(i: usize) -> Value {
    let name = format!("svc-{}", i * 5);
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": name, "namespace": format!("team-{}", (i * 5) % NAMESPACES),
                        "uid": format!("10000000-0000-0000-0000-{i:012}")},
           "spec": {"serviceName": name, "replicas": 3,
                    "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                    "template": {"metadata": {"labels": {"app.kubernetes.io/name": name}},
                                 "spec": {"containers": [{"name": "postgres", "image": "postgres:17",
                                          "readinessProbe": {"exec": {"command": ["pg_isready"]}},
                                          "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
                    "volumeClaimTemplates": [{"metadata": {"name": "data"},
                        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "10Gi"}}}}]}})
}

/// VmRSS of a process, in KiB.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `stsguard serve` against the fake, with its stderr lines on a channel.
fn serve(
    dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    extra: &[&str],
) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stsguard"))
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--probe-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .arg("--dev-cert-dir")
        .arg(dir.join("certs"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(extra)
        .env("RUST_LOG", "info")
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
    (child, rx)
}

fn wait_for(rx: &mpsc::Receiver<String>, needle: &str, count: usize) {
    let mut seen = 0;
    while seen < count {
        let line = rx.recv_timeout(Duration::from_secs(120)).expect(needle);
        if line.contains(needle) {
            seen += 1;
        }
    }
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakeApiServer::start());
    fake.install_crd(
        Kind::PolicyReport,
        "wgpolicyk8s.io_policyreports.yaml",
        "v1alpha2",
    );
    for i in 0..10_000 {
        fake.apply(service(i));
    }
    for i in 0..2_000 {
        fake.apply(statefulset(i));
    }
    println!("API server holds 10,000 Services and 2,000 StatefulSets in {NAMESPACES} namespaces");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());

    // Reference 1: the one-shot audit of the same objects.
    let started = Instant::now();
    let audit = Command::new(env!("CARGO_BIN_EXE_stsguard"))
        .args([
            "audit",
            "--cluster",
            "-o",
            "json",
            "-q",
            "--fail-on",
            "never",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    println!(
        "stsguard audit --cluster:                  {:.2} s",
        started.elapsed().as_secs_f64()
    );

    // Reference 2: serve without reports, for memory.
    let (mut plain, rx) = serve(dir.path(), &kubeconfig, &[]);
    wait_for(&rx, "cache synced", 2);
    std::thread::sleep(Duration::from_secs(3));
    let plain_rss = rss(plain.id());
    let _ = plain.kill();
    let _ = plain.wait();

    let started = Instant::now();
    let (mut reporting, rx) = serve(
        dir.path(),
        &kubeconfig,
        &["--reports", "--reports-write-rate", "50"],
    );
    wait_for(&rx, "full pass done", 1);
    let pass = started.elapsed();
    let reports = || fake.objects(Kind::PolicyReport).len();
    while reports() < NAMESPACES {
        std::thread::sleep(Duration::from_millis(10));
    }
    let written = started.elapsed();
    let writes = fake.report_writes();
    let (first, last) = (writes.first().unwrap().at, writes.last().unwrap().at);
    println!(
        "serve --reports: first full pass done:     {:.2} s after start",
        pass.as_secs_f64()
    );
    println!(
        "serve --reports: {NAMESPACES} reports written:      {:.2} s after start ({} writes in {:.2} s, at most 50/s)",
        written.as_secs_f64(),
        writes.len(),
        last.duration_since(first).as_secs_f64()
    );
    let results: usize = fake
        .objects(Kind::PolicyReport)
        .iter()
        .map(|r| r["results"].as_array().map_or(0, Vec::len))
        .sum();
    println!("results in the reports: {results}");
    std::thread::sleep(Duration::from_secs(3));
    println!(
        "resident once settled: serve {:.1} MB, serve --reports {:.1} MB",
        plain_rss as f64 / 1024.0,
        rss(reporting.id()) as f64 / 1024.0
    );
    let _ = reporting.kill();
    let _ = reporting.wait();
    drop(runtime);
}
