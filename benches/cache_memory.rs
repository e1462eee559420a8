//! Resident memory of `stsguard serve` with cluster lookups over 10,000 Services and 2,000
//! StatefulSets (objects as a real API server returns them: managedFields, the last-applied
//! annotation, status). `cargo bench --bench cache_memory`; target: under 100 MB resident.

#[path = "../tests/support/apiserver.rs"]
#[allow(dead_code)]
mod apiserver;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use apiserver::FakeApiServer;
use serde_json::{Value, json};

fn managed_fields(kind: &str) -> Value {
    json!([{"manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": kind,
            "time": "2026-11-24T16:29:49Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}},
                                        "f:labels": {".": {}, "f:app.kubernetes.io/name": {}, "f:app.kubernetes.io/instance": {}}},
                         "f:spec": {"f:ports": {".": {}, "k:{\"port\":5432,\"protocol\":\"TCP\"}": {".": {}, "f:name": {}, "f:port": {}, "f:protocol": {}, "f:targetPort": {}}},
                                    "f:selector": {}, "f:sessionAffinity": {}, "f:type": {}}}}])
}

fn service(i: usize) -> Value {
    let name = format!("svc-{i}");
    let mut svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": format!("team-{}", i % 100), "uid": format!("00000000-0000-0000-0000-{i:012}"),
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

fn statefulset(i: usize) -> Value {
    let name = format!("svc-{}", i * 5);
    let mut sts = json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": format!("team-{}", (i * 5) % 100), "uid": format!("10000000-0000-0000-0000-{i:012}"),
                     "labels": {"app.kubernetes.io/name": name}, "generation": 3,
                     "managedFields": managed_fields("apps/v1"), "creationTimestamp": "2026-11-24T16:29:49Z"},
        "spec": {"serviceName": name, "replicas": 3, "podManagementPolicy": "OrderedReady", "revisionHistoryLimit": 10,
                 "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
                 "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                 "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Retain", "whenScaled": "Retain"},
                 "template": {"metadata": {"labels": {"app.kubernetes.io/name": name}},
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
    let applied = sts.to_string();
    sts["metadata"]["annotations"] =
        json!({"kubectl.kubernetes.io/last-applied-configuration": applied});
    sts
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

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fake = runtime.block_on(FakeApiServer::start());
    let mut bytes = 0;
    for i in 0..10_000 {
        let svc = service(i);
        bytes += svc.to_string().len();
        fake.apply(svc);
    }
    for i in 0..2_000 {
        let sts = statefulset(i);
        bytes += sts.to_string().len();
        fake.apply(sts);
    }
    println!(
        "API server holds 10,000 Services and 2,000 StatefulSets: {} MB as JSON",
        bytes / 1_000_000
    );

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let started = Instant::now();
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
        .arg(dir.path().join("certs"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut synced = 0;
    for line in BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        if line.contains("cache synced") {
            synced += 1;
            if synced == 2 {
                break;
            }
        }
    }
    println!(
        "both caches synced {:.2} s after start",
        started.elapsed().as_secs_f64()
    );
    // Let allocator and reflector settle, then sample.
    std::thread::sleep(Duration::from_secs(2));
    let (rss, peak) = memory(pid);
    println!(
        "stsguard resident: {:.1} MB (peak {:.1} MB); target < 100 MB",
        rss as f64 / 1024.0,
        peak as f64 / 1024.0
    );
    let _ = child.kill();
    let _ = child.wait();
    drop(runtime);
}
