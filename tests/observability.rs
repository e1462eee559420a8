//! The operator's view checked against the real things: a real `stsguard serve` over the fake
//! API server (caches, leader lease, in-cluster reports, live reads, reloads) under a little
//! load, scraped by a real Prometheus that loads the chart's rendered alerts. Every dashboard
//! query and every alert expression must parse and evaluate there, every panel must return
//! data, and on this healthy webhook only the denials alert may be true (the load denies in
//! namespace `cap` far above its threshold). Every metric name the dashboard, the alerts and
//! docs/src/metrics.md use must be one the binary exports, and the docs must list each metric
//! it exports, so a renamed metric fails here. On the way, `stsguard_ready` follows `/readyz`.

#[path = "observability/prometheus.rs"]
mod prometheus;
mod support;

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use serde_json::{Value, json};
use support::{
    Http,
    apiserver::{FakeApiServer, Kind, eventually},
    client_trusting, fixture,
    process::{probe_get, probe_metrics, start_with_env},
};

/// The job and namespace labels the chart's ServiceMonitor gives the series and its alerts
/// select (tests/chart/modes.py renders the chart as release guard in stsguard-system).
const JOB: &str = "guard-stsguard-metrics";
const NAMESPACE: &str = "stsguard-system";
const WAIT: Duration = Duration::from_secs(30);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn required() -> bool {
    std::env::var_os("STSGUARD_REQUIRE_VALIDATORS").is_some()
}

/// The series names in a /metrics text, and the names users query: a histogram's base name
/// besides its _bucket, _sum and _count.
fn exported(metrics: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let samples: BTreeSet<String> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect();
    let mut families = BTreeSet::new();
    for line in metrics.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            families.insert(match kind {
                "counter" if !name.ends_with("_total") => format!("{name}_total"),
                _ => name.to_owned(),
            });
        }
    }
    (samples, families)
}

/// Every `stsguard_*` name in a text.
fn names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("stsguard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        // `stsguard_*`, the prefix alone, names no metric.
        if end > "stsguard_".len() {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

/// The metrics docs/src/metrics.md lists in its table (rows starting with | `stsguard_...`).
fn documented(docs: &str) -> BTreeSet<String> {
    docs.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|name| name.starts_with("stsguard_"))
        .map(str::to_owned)
        .collect()
}

/// Every query of the dashboard's panels (rows hold their own when collapsed).
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let title = panel["title"].as_str().unwrap_or_default().to_owned();
                out.push((title, target["expr"].as_str().unwrap().to_owned()));
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The chart's alerts rendered by the Helm SDK (tests/chart/render_rules.py), or None when
/// Python or its packages are missing on this machine.
fn rendered_rules(dir: &Path) -> Option<PathBuf> {
    let path = dir.join("rules.yaml");
    let out = Command::new("python3")
        .arg(root().join("tests/chart/render_rules.py"))
        .arg(&path)
        .output();
    match out {
        Ok(out) if out.status.success() => Some(path),
        Ok(out) if !required() && String::from_utf8_lossy(&out.stderr).contains("No module") => {
            None
        }
        Err(_) if !required() => None,
        other => panic!("rendering the chart's alerts failed: {other:?}"),
    }
}

/// A StatefulSet whose governing Service is not headless: violations already in the cluster.
fn violating(fake: &FakeApiServer) {
    fake.apply(json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "db", "namespace": "shop", "uid": "uid-svc-db"},
        "spec": {"clusterIP": "10.0.0.1", "selector": {"app": "db"}, "ports": [{"port": 80}]}}));
    fake.apply(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": "shop", "uid": "uid-sts-db"},
        "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}},
                              "spec": {"containers": [{"name": "c", "image": "x"}]}}}}));
}

/// Reviews of every captured fixture, and a body that is no review, until `stop`.
fn load(addr: String, ca: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<usize> {
    let mut files: Vec<String> = std::fs::read_dir(root().join("tests/fixtures/admission"))
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".json").map(str::to_owned))
        .collect();
    files.sort();
    tokio::spawn(async move {
        let client = client_trusting(&ca, Http::Two);
        let mut sent = 0;
        while !stop.load(Ordering::SeqCst) {
            for file in &files {
                let endpoint = file.split('-').next().unwrap();
                let url = format!("https://{addr}/{endpoint}");
                let reply = client.post(&url, fixture(file)).await;
                assert_eq!(reply.status, 200, "{file}: {}", reply.text());
                sent += 1;
            }
            let garbage = client.post(&format!("https://{addr}/validate"), "{").await;
            assert_eq!(garbage.status, 400);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sent
    })
}

#[tokio::test]
async fn dashboard_alerts_and_docs_hold_against_a_real_prometheus() {
    let fake = FakeApiServer::start().await;
    fake.install_crd(
        Kind::PolicyReport,
        "wgpolicyk8s.io_policyreports.yaml",
        "v1alpha2",
    );
    violating(&fake);
    // Lists held: the caches cannot sync, so the replica is not ready, and says so.
    fake.open_lists(false);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let policy = dir.path().join("policy.yaml");
    std::fs::copy(root().join("policies/default.yaml"), &policy).unwrap();
    let server = start_with_env(
        dir.path(),
        &[
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
            "--reports",
            "--reports-interval",
            "1s",
            "--reports-debounce",
            "100ms",
            "--leader-lease-duration",
            "2s",
            "--drain-delay",
            "0s",
            "--policy",
            policy.to_str().unwrap(),
            "--watch-policy",
            "--policy-reload-interval",
            "200ms",
            "--cert-reload-interval",
            "200ms",
        ],
        &[("POD_NAME", "guard-stsguard-0")],
    );
    let metric = support::process::metric;
    let not_ready = probe_metrics(&server.probe).await;
    assert_eq!(
        metric(&not_ready, "stsguard_ready "),
        Some(0.0),
        "{not_ready}"
    );
    assert!(probe_get(&server.probe, "/readyz").await.contains(" 503 "));
    fake.open_lists(true);
    eventually("readiness after the caches' first sync", WAIT, || async {
        probe_get(&server.probe, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    })
    .await;
    // One policy reload that succeeds and one certificate reload that fails (the old
    // certificate keeps serving), so that every metric family has a series.
    let ready = probe_metrics(&server.probe).await;
    assert_eq!(metric(&ready, "stsguard_ready "), Some(1.0), "{ready}");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, format!("{text}\n# reloaded\n")).unwrap();
    std::fs::write(dir.path().join("dev/tls.key"), "not a key").unwrap();
    let ca = std::fs::read_to_string(dir.path().join("dev/ca.crt")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let load = load(server.addr.clone(), ca, stop.clone());

    // The docs list exactly the metrics the binary exports (once each has a series).
    let docs = std::fs::read_to_string(root().join("docs/src/metrics.md")).unwrap();
    let listed = documented(&docs);
    assert!(
        listed.len() > 10,
        "no metrics table in the docs: {listed:?}"
    );
    let mut metrics = String::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while exported(&metrics).1 != listed && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        metrics = probe_metrics(&server.probe).await;
    }
    let (samples, families) = exported(&metrics);
    assert_eq!(
        families, listed,
        "docs/src/metrics.md's table vs /metrics:\n{metrics}"
    );

    // Every name used anywhere is one the binary exports.
    let dashboard_text =
        std::fs::read_to_string(root().join("charts/stsguard/files/dashboard.json")).unwrap();
    let rules_template =
        std::fs::read_to_string(root().join("charts/stsguard/templates/prometheusrule.yaml"))
            .unwrap();
    for (what, text) in [
        ("files/dashboard.json", &dashboard_text),
        ("templates/prometheusrule.yaml", &rules_template),
        ("docs/src/metrics.md", &docs),
    ] {
        let used = names_in(text);
        assert!(!used.is_empty(), "{what} names no metric");
        let unknown: Vec<_> = used
            .iter()
            .filter(|n| !samples.contains(*n) && !families.contains(*n))
            .collect();
        assert!(
            unknown.is_empty(),
            "{what} uses {unknown:?}, not in\n{metrics}"
        );
    }

    let rules = rendered_rules(dir.path());
    let binary = prometheus::binary();
    let (Some(rules), Some(binary)) = (rules, binary) else {
        assert!(
            !required(),
            "STSGUARD_REQUIRE_VALIDATORS: the prometheus binary and the chart render are needed"
        );
        eprintln!(
            "skipped the Prometheus half: apt-get install prometheus, pip install helm-python-sdk pyyaml"
        );
        return;
    };
    let prom = prometheus::Prometheus::start(
        &binary,
        dir.path(),
        &server.probe,
        JOB,
        &[("namespace", NAMESPACE), ("pod", "guard-stsguard-0")],
        &rules,
    )
    .await;

    // Every panel returns data, its variables as Grafana would fill them.
    let dashboard: Value = serde_json::from_str(&dashboard_text).unwrap();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() >= 15, "{queries:?}");
    let deadline = tokio::time::Instant::now() + WAIT;
    for (panel, expr) in &queries {
        let promql = expr
            .replace("$__rate_interval", "10s")
            .replace("$namespace", NAMESPACE);
        assert!(
            !promql.contains('$'),
            "{panel}: unfilled variable in {promql}"
        );
        loop {
            let result = prom.query(&promql).await;
            let result = result.unwrap_or_else(|e| panic!("{panel}: {promql}: {e}"));
            if prometheus::has_data(&result) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "panel {panel} has no data: {promql} -> {result:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // The namespace variable offers the scraped namespace.
    let values = prom
        .api("/api/v1/label/namespace/values?match[]=stsguard_build_info")
        .await;
    assert_eq!(values["data"], json!([NAMESPACE]), "{values}");

    // Every alert expression parses and evaluates; on this healthy webhook only the denials
    // alert is true, for the namespace the load is denied in.
    let rule_file: Value = serde_saphyr::from_str(&std::fs::read_to_string(&rules).unwrap())
        .expect("rendered rules are YAML");
    let alerts: Vec<&Value> = rule_file["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert!(alerts.len() >= 9, "{alerts:?}");
    for alert in &alerts {
        let name = alert["alert"].as_str().unwrap();
        let expr = alert["expr"].as_str().unwrap();
        let result = prom
            .query(expr)
            .await
            .unwrap_or_else(|e| panic!("{name}: {expr}: {e}"));
        if name == "StsguardNamespaceDenialsSpike" {
            let namespaces: Vec<&Value> = result
                .iter()
                .map(|s| &s["metric"]["resource_namespace"])
                .collect();
            assert_eq!(namespaces, [&json!("cap")], "{name}: {result:?}");
            assert_eq!(result[0]["metric"]["job"], JOB);
        } else {
            assert!(
                result.is_empty(),
                "{name} is true on a healthy webhook: {result:?}"
            );
        }
    }
    // Prometheus loaded the same rules and evaluates them without error; the denials alert
    // waits out its `for`.
    eventually("every rule evaluated", WAIT, || async {
        let loaded = prom.api("/api/v1/rules").await;
        let rules: Vec<Value> = loaded["data"]["groups"][0]["rules"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        rules.len() == alerts.len()
            && rules.iter().all(|r| r["health"] == "ok")
            && rules
                .iter()
                .any(|r| r["name"] == "StsguardNamespaceDenialsSpike" && r["state"] == "pending")
    })
    .await;

    stop.store(true, Ordering::SeqCst);
    assert!(load.await.unwrap() > 0);
}
