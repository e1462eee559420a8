//! In-cluster reports from real `stsguard serve --reports` processes over the fake API server,
//! with the PolicyReport CRD "installed" (every write checked against its schema): violations
//! that exist before start-up are reported after the first pass; a fix removes its entries, a
//! Service's fix those of the StatefulSets that name it; the report of a namespace that has
//! nothing left is deleted; unchanged content is not written again; with two replicas only the
//! lease holder ever writes; under a burst of 1,000 changes the write rate holds; a report too
//! large for etcd is cut; and over the whole corpus the reports say what `stsguard audit
//! --cluster` says of the same objects (one chain).

mod support;

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};
use support::{
    apiserver::{FakeApiServer, Kind, eventually},
    process::{Running, metric, probe_metrics, start_with_env},
};

const WAIT: Duration = Duration::from_secs(30);

fn service(namespace: &str, name: &str, cluster_ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-svc-{namespace}-{name}")},
           "spec": {"clusterIP": cluster_ip, "selector": {"app": name}, "ports": [{"port": 80}]}})
}

/// A StatefulSet with two warnings of its own (no volume claim templates, no readiness probe)
/// and whatever its Service brings.
fn statefulset(namespace: &str, name: &str, service: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
           "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-sts-{namespace}-{name}")},
           "spec": {"serviceName": service, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                                 "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
}

fn fake_with_crd(fake: &FakeApiServer) {
    fake.install_crd(
        Kind::PolicyReport,
        "wgpolicyk8s.io_policyreports.yaml",
        "v1alpha2",
    );
    fake.install_crd(Kind::OpenReport, "openreports.io_reports.yaml", "v1alpha1");
}

fn reporter(dir: &std::path::Path, kubeconfig: &str, name: &str, extra: &[&str]) -> Running {
    let mut args = vec![
        "--kubeconfig",
        kubeconfig,
        "--reports",
        "--leader-lease-duration",
        "2s",
        "--drain-delay",
        "0s",
    ];
    if !extra.contains(&"--reports-debounce") {
        args.extend(["--reports-debounce", "100ms"]);
    }
    args.extend_from_slice(extra);
    start_with_env(dir, &args, &[("POD_NAME", name)])
}

fn report(fake: &FakeApiServer, namespace: &str) -> Option<Value> {
    fake.get(
        Kind::PolicyReport,
        namespace,
        &format!("stsguard-{namespace}"),
    )
}

/// The report's entries: (kind/name, rule) → result.
fn entries(report: &Value) -> BTreeMap<(String, String), String> {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let resource = &r["resources"][0];
            (
                (
                    format!(
                        "{}/{}",
                        resource["kind"].as_str().unwrap(),
                        resource["name"].as_str().unwrap()
                    ),
                    r["rule"].as_str().unwrap().to_owned(),
                ),
                r["result"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn entry(kind_name: &str, rule: &str, result: &str) -> ((String, String), String) {
    ((kind_name.to_owned(), rule.to_owned()), result.to_owned())
}

#[tokio::test]
async fn reports_follow_the_cluster_from_before_start_up_to_the_last_fix() {
    let fake = FakeApiServer::start().await;
    fake_with_crd(&fake);
    // Violations before stsguard starts: a StatefulSet whose governing Service is not
    // headless (deny for both), and a second namespace with warnings only.
    fake.apply(service("shop", "db", "10.0.0.1"));
    fake.apply(statefulset("shop", "db", "db"));
    fake.apply(service("blog", "web", "None"));
    fake.apply(statefulset("blog", "web", "web"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let server = reporter(
        dir.path(),
        kubeconfig.to_str().unwrap(),
        "only",
        &["--reports-interval", "1s"],
    );

    let expected_before = BTreeMap::from([
        entry("Service/db", "svc-headless-for-statefulset", "fail"),
        entry("StatefulSet/db", "sts-governing-service-headless", "fail"),
        entry("StatefulSet/db", "sts-readiness-probe", "warn"),
        entry("StatefulSet/db", "sts-volume-claim-templates", "warn"),
    ]);
    eventually("the first pass's report of shop", WAIT, || async {
        report(&fake, "shop").is_some_and(|r| entries(&r) == expected_before)
    })
    .await;
    let shop = report(&fake, "shop").unwrap();
    assert_eq!(
        shop["summary"],
        json!({"pass": 0, "fail": 2, "warn": 2, "error": 0, "skip": 0})
    );
    assert_eq!(
        shop["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "stsguard"
    );
    let sts_result = shop["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["rule"] == "sts-governing-service-headless")
        .unwrap();
    assert_eq!(
        sts_result["resources"][0],
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "namespace": "shop", "name": "db",
               "uid": "uid-sts-shop-db"})
    );
    assert_eq!(sts_result["severity"], "high");
    assert_eq!(sts_result["properties"]["action"], "deny");
    let managers: Vec<&str> = shop["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["manager"].as_str().unwrap())
        .collect();
    assert_eq!(managers, ["stsguard"]);
    eventually("the report of blog", WAIT, || async {
        report(&fake, "blog").is_some_and(|r| {
            entries(&r)
                == BTreeMap::from([
                    entry("StatefulSet/web", "sts-readiness-probe", "warn"),
                    entry("StatefulSet/web", "sts-volume-claim-templates", "warn"),
                ])
        })
    })
    .await;

    // Nothing changes for two full passes: nothing is written again.
    let writes = fake.report_writes().len();
    let passes = |text: &str| metric(text, "stsguard_report_last_full_pass_timestamp_seconds ");
    let first = passes(&probe_metrics(&server.probe).await).unwrap();
    eventually("two more full passes", WAIT, || async {
        passes(&probe_metrics(&server.probe).await).is_some_and(|t| t >= first + 2.0)
    })
    .await;
    assert_eq!(
        fake.report_writes().len(),
        writes,
        "{:#?}",
        fake.report_writes()
    );
    let metrics = probe_metrics(&server.probe).await;
    assert_eq!(
        metric(
            &metrics,
            "stsguard_cluster_violations{rule=\"sts-governing-service-headless\",action=\"deny\"} "
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            "stsguard_report_writes_total{operation=\"apply\",result=\"success\"} "
        )
        .unwrap()
            >= 2.0
    );

    // Fixing the Service fixes the StatefulSet's entry too (only the Service changed).
    fake.apply(service("shop", "db", "None"));
    eventually("the fix in the report", WAIT, || async {
        report(&fake, "shop").is_some_and(|r| {
            entries(&r)
                == BTreeMap::from([
                    entry("StatefulSet/db", "sts-readiness-probe", "warn"),
                    entry("StatefulSet/db", "sts-volume-claim-templates", "warn"),
                ])
        })
    })
    .await;
    // Breaking it again brings both back.
    fake.apply(service("shop", "db", "10.0.0.2"));
    eventually(
        "the Service's change in the StatefulSet's entries",
        WAIT,
        || async { report(&fake, "shop").is_some_and(|r| entries(&r) == expected_before) },
    )
    .await;

    // The last violating object goes: so does the report.
    fake.delete(Kind::StatefulSet, "shop", "db");
    eventually("the report of shop deleted", WAIT, || async {
        report(&fake, "shop").is_none()
    })
    .await;
    assert!(report(&fake, "blog").is_some());
    assert!(
        fake.report_writes()
            .iter()
            .any(|w| w.method == "DELETE" && w.path.ends_with("/stsguard-shop"))
    );
}

#[tokio::test]
async fn openreports_are_written_when_asked_for() {
    let fake = FakeApiServer::start().await;
    fake_with_crd(&fake);
    fake.apply(service("shop", "db", "10.0.0.1"));
    fake.apply(statefulset("shop", "db", "db"));
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let _server = reporter(
        dir.path(),
        kubeconfig.to_str().unwrap(),
        "only",
        &["--reports-api", "openreports"],
    );
    eventually("the Report of shop", WAIT, || async {
        fake.get(Kind::OpenReport, "shop", "stsguard-shop")
            .is_some_and(|r| r["results"].as_array().map(Vec::len) == Some(4))
    })
    .await;
    let report = fake.get(Kind::OpenReport, "shop", "stsguard-shop").unwrap();
    assert_eq!(report["source"], "stsguard");
    assert_eq!(report["summary"]["fail"], 2);
    assert!(fake.objects(Kind::PolicyReport).is_empty());
}

#[tokio::test]
async fn with_two_replicas_only_the_lease_holder_writes() {
    let fake = FakeApiServer::start().await;
    fake_with_crd(&fake);
    for ns in ["a", "b", "c"] {
        fake.apply(service(ns, "db", "10.0.0.1"));
        fake.apply(statefulset(ns, "db", "db"));
    }
    let dir = tempfile::tempdir().unwrap();
    let kc_a = fake.kubeconfig_as(dir.path(), "replica-a");
    let kc_b = fake.kubeconfig_as(dir.path(), "replica-b");
    let a = reporter(dir.path(), kc_a.to_str().unwrap(), "replica-a", &[]);
    let b = reporter(dir.path(), kc_b.to_str().unwrap(), "replica-b", &[]);
    eventually("three reports", WAIT, || async {
        ["a", "b", "c"].iter().all(|ns| report(&fake, ns).is_some())
    })
    .await;
    let first = fake.report_writes()[0].token.clone().unwrap();
    let (mut leader, follower, follower_name) = if first == "replica-a" {
        (a, b, "replica-b")
    } else {
        (b, a, "replica-a")
    };
    // Changes while one leads, then the leader dies and the other takes over and reports the
    // changes made meanwhile.
    fake.apply(service("a", "db", "None"));
    eventually("the fix in a", WAIT, || async {
        report(&fake, "a").is_some_and(|r| entries(&r).len() == 2)
    })
    .await;
    leader.child.kill().unwrap();
    leader.child.wait().unwrap();
    fake.apply(service("b", "db", "None"));
    fake.delete(Kind::StatefulSet, "c", "db");
    eventually("the new leader's reports", WAIT, || async {
        report(&fake, "b").is_some_and(|r| entries(&r).len() == 2) && report(&fake, "c").is_none()
    })
    .await;
    let writes = fake.report_writes();
    for write in &writes {
        assert_eq!(
            write.token, write.holder,
            "written by a replica that did not hold the lease: {write:#?}"
        );
    }
    // The new leader read the reports already there: it rewrote only those of the namespaces
    // that changed after the old leader died.
    let mut by_new: Vec<&str> = writes
        .iter()
        .filter(|w| w.token.as_deref() == Some(follower_name))
        .map(|w| w.path.rsplit('/').next().unwrap())
        .collect();
    by_new.dedup();
    assert_eq!(by_new, ["stsguard-b", "stsguard-c"], "{writes:#?}");
    let metrics = probe_metrics(&follower.probe).await;
    assert_eq!(metric(&metrics, "stsguard_leader "), Some(1.0));
}

#[tokio::test]
async fn the_write_rate_holds_under_a_burst_of_a_thousand_changes() {
    const RATE: f64 = 10.0;
    let fake = FakeApiServer::start().await;
    fake_with_crd(&fake);
    let namespaces: Vec<String> = (0..20).map(|i| format!("ns{i:02}")).collect();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let server = reporter(
        dir.path(),
        kubeconfig.to_str().unwrap(),
        "only",
        &["--reports-write-rate", "10", "--reports-debounce", "50ms"],
    );
    eventually("leading", WAIT, || async {
        metric(&probe_metrics(&server.probe).await, "stsguard_leader ") == Some(1.0)
    })
    .await;
    // 1,000 changes: 50 StatefulSets in each of 20 namespaces, each created and then pointed at
    // a Service that is not headless, as fast as the fake takes them.
    for round in 0..2 {
        for ns in &namespaces {
            if round == 1 {
                fake.apply(service(ns, "shared", "10.0.0.1"));
            }
            for i in 0..25 {
                let service_name = if round == 0 {
                    format!("own{i}")
                } else {
                    "shared".to_owned()
                };
                fake.apply(statefulset(ns, &format!("s{i}"), &service_name));
            }
        }
    }
    // 25 StatefulSets with 4 entries each (two warnings of their own; the shared Service is
    // neither headless nor selecting their pods) and the Service's own two denies.
    let settled = |ns: &String| {
        report(&fake, ns).is_some_and(|r| r["results"].as_array().map(Vec::len) == Some(25 * 4 + 2))
    };
    eventually(
        "every namespace's final report",
        Duration::from_secs(120),
        || async { namespaces.iter().all(settled) },
    )
    .await;
    let writes = fake.report_writes();
    let (first, last) = (writes.first().unwrap().at, writes.last().unwrap().at);
    let span = last.duration_since(first).as_secs_f64();
    // A burst of one second's worth, then RATE a second; one more for the first write's own
    // latency (the limiter counts from when it sent, the fake from when it arrived).
    let bound = RATE + 1.0 + RATE * span;
    assert!(
        (writes.len() as f64) <= bound,
        "{} writes in {span:.2}s exceed {bound} (rate {RATE}/s)",
        writes.len()
    );
    eprintln!(
        "{} report writes in {span:.2}s for 1,000 changes",
        writes.len()
    );
    // Debounced and batched: far fewer writes than changes.
    assert!(writes.len() < 1000 / 4, "{} writes", writes.len());
}

#[tokio::test]
async fn a_report_too_large_for_etcd_is_cut_and_says_so() {
    let fake = FakeApiServer::start().await;
    fake_with_crd(&fake);
    // 3,000 StatefulSets governed by a Service that is neither headless nor selecting their
    // pods: two denies and two warnings each, and the Service's two denies; about 8 MB.
    fake.apply(service("big", "shared", "10.0.0.1"));
    for i in 0..3000 {
        fake.apply(statefulset("big", &format!("s{i:04}"), "shared"));
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    let _server = reporter(dir.path(), kubeconfig.to_str().unwrap(), "only", &[]);
    eventually("the report of big", WAIT, || async {
        report(&fake, "big").is_some()
    })
    .await;
    let big = report(&fake, "big").unwrap();
    let shown = big["results"].as_array().unwrap().len();
    assert!(shown > 100 && shown < 12002, "{shown}");
    assert_eq!(big["summary"]["fail"], 6002);
    assert_eq!(big["summary"]["warn"], 6000);
    // The denies first: they are what must be fixed first.
    assert!(
        big["results"]
            .as_array()
            .unwrap()
            .iter()
            .take(shown.min(6002))
            .all(|r| r["result"] == "fail")
    );
    let note = big["metadata"]["annotations"]["stsguard.io/truncated"]
        .as_str()
        .unwrap();
    assert!(
        note.starts_with(&format!("{shown} of 12002 results shown")),
        "{note}"
    );
}

/// Every StatefulSet and Service of the corpus (tests/fixtures/corpus), each file in a
/// namespace of its own, as the fake API server holds them.
fn corpus_into(fake: &FakeApiServer) -> usize {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/corpus");
    let mut objects = 0;
    for dir in std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()) {
        if !dir.is_dir() {
            continue;
        }
        let loaded = stsguard::manifest::load(std::slice::from_ref(&dir), &mut std::io::empty());
        for doc in loaded.documents {
            let mut value = doc.value;
            if !stsguard::admit::judges(&value)
                || value["apiVersion"] != "apps/v1" && value["kind"] == "StatefulSet"
            {
                continue;
            }
            let file = std::path::Path::new(&doc.source.file);
            let namespace = format!(
                "{}-{}",
                dir.file_name().unwrap().to_str().unwrap(),
                file.file_stem().unwrap().to_str().unwrap()
            )
            .to_lowercase()
            .replace(['_', '.'], "-");
            value["metadata"]["namespace"] = json!(namespace);
            fake.apply(value);
            objects += 1;
        }
    }
    objects
}

/// Findings as (namespace, kind/name) → rule ids.
type ByObject = BTreeMap<(String, String), std::collections::BTreeSet<String>>;

#[tokio::test]
async fn the_reports_say_what_the_audit_of_the_cluster_says() {
    let fake = FakeApiServer::start().await;
    fake_with_crd(&fake);
    let objects = corpus_into(&fake);
    assert!(objects > 50, "{objects}");
    let dir = tempfile::tempdir().unwrap();
    // The mutators off: the audit judges objects as if created anew, mutated first; the reports
    // judge them as stored.
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "mutators:\n  sts-inject-volume-claim-templates: false\n  sts-complete-volume-claim-templates: false\n  svc-make-headless: false\n",
    )
    .unwrap();
    let kubeconfig = fake.kubeconfig(dir.path());
    // Run off the test's runtime thread: the fake API server answers on it.
    let mut command = support::process::stsguard();
    command
        .args([
            "audit",
            "--cluster",
            "-o",
            "json",
            "--fail-on",
            "never",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .arg("--policy")
        .arg(&policy);
    let audit = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
    let audit: Value = serde_json::from_slice(&audit.stdout).unwrap();
    let mut expected = ByObject::new();
    for result in audit["results"].as_array().unwrap() {
        for violation in result["violations"].as_array().unwrap() {
            expected
                .entry((
                    result["namespace"].as_str().unwrap().to_owned(),
                    format!(
                        "{}/{}",
                        result["kind"].as_str().unwrap(),
                        result["name"].as_str().unwrap()
                    ),
                ))
                .or_default()
                .insert(violation["rule"].as_str().unwrap().to_owned());
        }
    }
    assert!(expected.len() > 10, "{expected:#?}");

    let _server = reporter(
        dir.path(),
        kubeconfig.to_str().unwrap(),
        "only",
        &[
            "--policy",
            policy.to_str().unwrap(),
            "--reports-write-rate",
            "100",
        ],
    );
    let reported = || {
        let mut found = ByObject::new();
        for report in fake.objects(Kind::PolicyReport) {
            let namespace = report["metadata"]["namespace"].as_str().unwrap().to_owned();
            for ((object, rule), _) in entries(&report) {
                found
                    .entry((namespace.clone(), object))
                    .or_default()
                    .insert(rule);
            }
        }
        found
    };
    let agreed = tokio::time::timeout(WAIT, async {
        while reported() != expected {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let reported = reported();
    let differences: Vec<_> = expected
        .keys()
        .chain(reported.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|key| expected.get(*key) != reported.get(*key))
        .map(|key| (key, expected.get(key), reported.get(key)))
        .collect();
    assert!(
        agreed.is_ok(),
        "(object, audit, reports) where they differ: {differences:#?}"
    );
}
