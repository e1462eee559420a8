//! `stsguard audit`, `mutate` and `rules` as a user runs them: golden verdicts over real-world
//! manifests, exit codes, stdin, and every report format validated against its official schema.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use serde_json::Value;
use stsguard::{audit::audit, manifest, policy::Policy};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn corpus(file: &str) -> PathBuf {
    root().join("tests/fixtures/corpus").join(file)
}

fn stsguard(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stsguard"))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default()).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// `file kind name allowed rules` rows of tests/fixtures/corpus/GOLDEN.tsv.
fn golden() -> Vec<[String; 5]> {
    std::fs::read_to_string(corpus("GOLDEN.tsv"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("file\t"))
        .map(|l| {
            let cols: Vec<String> = l.split('\t').map(str::to_owned).collect();
            cols.try_into().unwrap()
        })
        .collect()
}

/// The rows `audit` gives one corpus file today, in GOLDEN.tsv's form.
fn audit_rows(file: &str) -> Vec<[String; 5]> {
    let loaded = manifest::load(&[corpus(file)], &mut std::io::empty());
    let report = audit(
        &loaded,
        &Policy::builtin(),
        "default",
        stsguard::time::today(),
    );
    assert!(report.errors.is_empty(), "{file}: {:?}", report.errors);
    report
        .results
        .iter()
        .map(|r| {
            let mut rules: Vec<String> = r
                .verdict
                .violations
                .iter()
                .map(|v| {
                    let denied = v.outcome == stsguard::evaluate::Outcome::Denied;
                    format!("{}{}", v.rule.id, if denied { "!" } else { "" })
                })
                .collect();
            rules.sort();
            rules.dedup();
            let rules = if rules.is_empty() {
                "-".to_owned()
            } else {
                rules.join(",")
            };
            let allowed = if r.verdict.allowed() { "yes" } else { "no" };
            [
                file.to_owned(),
                r.target.kind().to_owned(),
                r.name.clone(),
                allowed.to_owned(),
                rules,
            ]
        })
        .collect()
}

#[test]
fn corpus_verdicts_match_the_golden_file() {
    let expected = golden();
    let mut files: Vec<&str> = expected.iter().map(|r| r[0].as_str()).collect();
    files.dedup();
    assert!(files.len() >= 50, "the golden file covers the corpus");
    let actual: Vec<[String; 5]> = files.iter().flat_map(|f| audit_rows(f)).collect();
    let differing: Vec<String> = actual
        .iter()
        .zip(&expected)
        .filter(|(a, e)| a != e)
        .map(|(a, e)| format!("now {}\nwas {}", a.join("\t"), e.join("\t")))
        .collect();
    assert!(differing.is_empty(), "{}", differing.join("\n"));
    assert_eq!(actual.len(), expected.len());
}

/// INDEX.tsv records facts about each StatefulSet independently of stsguard; the rules that
/// look at those facts must agree with it.
#[test]
fn corpus_verdicts_agree_with_the_corpus_index() {
    let index = std::fs::read_to_string(corpus("INDEX.tsv")).unwrap();
    let mut lines = index.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let golden = golden();
    let mut checked = 0;
    for line in lines {
        let row: Vec<&str> = line.split('\t').collect();
        let (file, name) = (row[col("file")], row[col("statefulset")]);
        let Some(g) = golden
            .iter()
            .find(|g| g[0] == file && g[1] == "StatefulSet" && g[2] == name)
        else {
            panic!("{file} {name} is not in GOLDEN.tsv");
        };
        let rules: Vec<&str> = g[4].split(',').map(|r| r.trim_end_matches('!')).collect();
        let has = |rule: &str| rules.contains(&rule);
        let context = format!("{file} {name}: {}", g[4]);
        assert_eq!(
            has("sts-service-name"),
            row[col("serviceName")] == "-",
            "{context}"
        );
        assert_eq!(
            has("sts-readiness-probe"),
            row[col("all_containers_readinessProbe")] == "no",
            "{context}"
        );
        assert_eq!(
            has("sts-volume-claim-templates"),
            row[col("volumeClaimTemplates")] == "0",
            "{context}"
        );
        assert_eq!(
            has("sts-selector-labels"),
            matches!(row[col("selector_matches_template")], "no" | "missing"),
            "{context}"
        );
        let governing_not_headless =
            row[col("service_in_file")] == "yes" && row[col("service_clusterIP")] != "None";
        assert_eq!(
            has("sts-governing-service-headless"),
            governing_not_headless,
            "{context}"
        );
        assert_eq!(
            has("sts-update-strategy"),
            row[col("updateStrategy")] == "OnDelete",
            "{context}"
        );
        checked += 1;
    }
    assert!(checked >= 50);
}

#[test]
fn exit_codes_follow_the_contract() {
    let clean = stsguard(
        &[
            "audit",
            "-f",
            corpus("k8s-website/zookeeper.yaml").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(clean.status.code(), Some(0), "{}", stdout(&clean));

    let warned = corpus("k8s-website/web.yaml");
    let warned = warned.to_str().unwrap();
    assert_eq!(
        stsguard(&["audit", "-f", warned], None).status.code(),
        Some(0)
    );
    assert_eq!(
        stsguard(&["audit", "-f", warned, "--fail-on", "warn"], None)
            .status
            .code(),
        Some(1)
    );

    let denied = corpus("k8s-website/rabbitmq-job-queue.yaml");
    let denied = denied.to_str().unwrap();
    let out = stsguard(&["audit", "-f", denied], None);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("rabbitmq-job-queue.yaml:"), "{text}");
    assert!(
        text.contains("deny  sts-governing-service-headless"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("0 input errors"), "{text}");
    assert_eq!(
        stsguard(&["audit", "-f", denied, "--fail-on", "never"], None)
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        stsguard(&["audit", "-f", denied, "--mode", "audit"], None)
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        stsguard(
            &[
                "audit",
                "-f",
                denied,
                "--rule",
                "sts-governing-service-headless=warn",
                "--rule",
                "svc-headless-for-statefulset=off"
            ],
            None
        )
        .status
        .code(),
        Some(0)
    );

    // A bad document is reported with file, line and column; the good ones are still audited.
    let bad = stsguard(
        &["audit", "-f", "-"],
        Some(b"apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {clusterIP: None}\n---\nkind: [\n"),
    );
    assert_eq!(bad.status.code(), Some(2));
    let text = stdout(&bad);
    assert!(
        text.contains("error: -:6:") && text.contains("invalid YAML"),
        "{text}"
    );
    assert!(text.contains("Service default/a  [ok]"), "{text}");

    let usage = stsguard(&["audit"], None);
    assert_eq!(usage.status.code(), Some(2), "missing -f is a usage error");
    let policy = stsguard(
        &["audit", "-f", warned, "--policy", "/nonexistent.yaml"],
        None,
    );
    assert_eq!(policy.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&policy.stderr).contains("/nonexistent.yaml"));
}

#[test]
fn helm_template_output_piped_in_is_audited() {
    let rendered = std::fs::read(corpus("bitnami/memcached-ha.yaml")).unwrap();
    let out = stsguard(&["audit", "-f", "-", "-o", "json"], Some(&rendered));
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["kind"], "AuditReport");
    assert_eq!(report["summary"]["denied"], 2);
    let sts = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "StatefulSet")
        .unwrap();
    assert_eq!(sts["file"], "-");
    assert!(sts["line"].as_u64().unwrap() > 1);
    let violation = &sts["violations"][0];
    for key in [
        "rule", "case", "action", "outcome", "path", "message", "fix",
    ] {
        assert!(violation.get(key).is_some(), "json violations carry {key}");
    }
}

fn schema_from_yaml_crd(file: &str, version: &str) -> Value {
    let text = std::fs::read_to_string(root().join("tests/schemas").join(file)).unwrap();
    let crd: Value = serde_saphyr::from_str(&text).unwrap();
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == version)
        .unwrap()["schema"]["openAPIV3Schema"]
        .clone()
}

fn assert_valid(schema: &Value, instance: &Value, what: &str) {
    let validator = jsonschema::validator_for(schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{what} does not validate: {errors:#?}");
}

/// All corpus files at once: many objects, violations of many rules, several namespaces.
fn corpus_args(extra: &[&str]) -> Vec<String> {
    let mut args = vec!["audit".to_owned()];
    for dir in ["kube-score", "k8s-website", "bitnami"] {
        args.push("-f".into());
        args.push(corpus(dir).display().to_string());
    }
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

fn run_corpus(extra: &[&str]) -> Output {
    let args = corpus_args(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = stsguard(&args, None);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn sarif_validates_against_the_sarif_2_1_0_schema() {
    let out = run_corpus(&["-o", "sarif"]);
    let sarif: Value = serde_json::from_slice(&out.stdout).unwrap();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/schemas/sarif-schema-2.1.0.json")).unwrap(),
    )
    .unwrap();
    assert_valid(&schema, &sarif, "SARIF");
    let run = &sarif["runs"][0];
    let rules = run["tool"]["driver"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), stsguard::rules::RULES.len());
    let results = run["results"].as_array().unwrap();
    assert!(results.len() > 50);
    for result in results {
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[index]["id"], result["ruleId"]);
        let location = &result["locations"][0]["physicalLocation"];
        assert!(
            location["artifactLocation"]["uri"]
                .as_str()
                .unwrap()
                .ends_with(".yaml")
        );
        assert!(location["region"]["startLine"].as_u64().unwrap() >= 1);
    }
}

#[test]
fn policy_reports_validate_against_their_crds() {
    for (flags, crd, version, kind) in [
        (
            &["-o", "policy-report"][..],
            "wgpolicyk8s.io_policyreports.yaml",
            "v1alpha2",
            "PolicyReport",
        ),
        (
            &["-o", "policy-report", "--openreports"][..],
            "openreports.io_reports.yaml",
            "v1alpha1",
            "Report",
        ),
    ] {
        let out = run_corpus(flags);
        let schema = schema_from_yaml_crd(crd, version);
        let text = stdout(&out);
        let mut reports = 0;
        for doc in text.split("---\n").filter(|d| !d.trim().is_empty()) {
            let report: Value = serde_saphyr::from_str(doc).unwrap();
            assert_eq!(report["kind"], kind);
            assert_valid(&schema, &report, kind);
            let results = report["results"].as_array().unwrap();
            let summary = &report["summary"];
            let total: u64 = ["pass", "fail", "warn", "error", "skip"]
                .iter()
                .map(|k| summary[k].as_u64().unwrap())
                .sum();
            assert_eq!(total as usize, results.len());
            reports += 1;
        }
        // kube-score's files use the default namespace and ns-test-1, testspace, trivy-staging.
        assert!(reports >= 3, "{reports} {kind}s");
    }
}

#[test]
fn junit_validates_against_the_jenkins_schema() {
    let out = run_corpus(&["-o", "junit"]);
    let dir = tempfile::tempdir().unwrap();
    let xml = dir.path().join("report.xml");
    std::fs::write(&xml, &out.stdout).unwrap();
    let xsd = root().join("tests/schemas/junit-10.xsd");
    let text = stdout(&out);
    assert!(
        text.contains("<failure type=\"sts-service-name\""),
        "{text}"
    );
    assert!(text.contains(
        "<testcase classname=\"StatefulSet/default/my-mongodb-rs\" name=\"sts-readiness-probe\""
    ));

    // No XML Schema validator is written in Rust; use libxml2 through xmllint or lxml.
    let xmllint = Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(&xsd)
        .arg(&xml)
        .output();
    let outcome = match xmllint {
        Ok(out) => Some((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )),
        Err(_) => Command::new("python3")
            .args([
                "-c",
                "import sys; from lxml import etree; \
                 s = etree.XMLSchema(etree.parse(sys.argv[1])); d = etree.parse(sys.argv[2]); \
                 ok = s.validate(d); print(s.error_log); sys.exit(0 if ok else 1)",
            ])
            .arg(&xsd)
            .arg(&xml)
            .output()
            .ok()
            .filter(|o| !String::from_utf8_lossy(&o.stderr).contains("No module named"))
            .map(|o| {
                (
                    o.status.success(),
                    String::from_utf8_lossy(&o.stdout).into_owned(),
                )
            }),
    };
    match outcome {
        Some((valid, log)) => assert!(valid, "JUnit report does not validate: {log}"),
        None if std::env::var_os("STSGUARD_REQUIRE_VALIDATORS").is_some() => {
            panic!("neither xmllint nor python3 lxml is installed")
        }
        None => eprintln!("skipped: install xmllint (libxml2-utils) or lxml to validate JUnit"),
    }
}

#[test]
fn mutate_applies_the_webhook_changes_and_keeps_the_rest() {
    // The captured `db` StatefulSet mounts `data` and `wal` with no template.
    let review: Value = serde_json::from_slice(
        &std::fs::read(
            root().join("tests/fixtures/admission/mutate-StatefulSet-CREATE-cap-db-1.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut db = review["request"]["object"].clone();
    db.as_object_mut().unwrap().remove("status");
    let config = "# a comment that must survive\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: db-config   # inline\n";
    let input = format!("{config}---\n{}", serde_saphyr::to_string(&db).unwrap());

    let out = stsguard(&["mutate", "-f", "-"], Some(input.as_bytes()));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = stdout(&out);
    assert!(
        text.starts_with(config),
        "untouched documents are kept byte for byte:\n{text}"
    );
    let docs: Vec<Value> = text
        .split("---\n")
        .map(|d| serde_saphyr::from_str(d).unwrap())
        .collect();
    let sts: k8s_openapi::api::apps::v1::StatefulSet =
        serde_json::from_value(docs[1].clone()).unwrap();
    let names: Vec<_> = sts
        .spec
        .unwrap()
        .volume_claim_templates
        .unwrap()
        .iter()
        .map(|t| t.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["data", "wal"]);

    // Mutating the output again changes nothing: safe as a post-renderer run twice.
    let again = stsguard(&["mutate", "-f", "-"], Some(text.as_bytes()));
    assert_eq!(stdout(&again), text);

    let diff = stdout(&stsguard(
        &["mutate", "-f", "-", "--diff"],
        Some(input.as_bytes()),
    ));
    assert!(diff.starts_with("--- -\n+++ -\n"), "{diff}");
    assert!(
        diff.contains("+  volumeClaimTemplates:") || diff.contains("+  - metadata:"),
        "{diff}"
    );
    assert!(
        diff.contains("+    stsguard.io/mutated: sts-inject-volume-claim-templates"),
        "{diff}"
    );

    // With svc-make-headless on, a Service the input's StatefulSet names becomes headless.
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "mutators: {svc-make-headless: true}\n").unwrap();
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: cap}\nspec:\n  selector: {app: db}\n";
    let with_service = format!("{service}---\n{input}");
    let out = stsguard(
        &["mutate", "-f", "-", "--policy", policy.to_str().unwrap()],
        Some(with_service.as_bytes()),
    );
    let text = stdout(&out);
    let first: Value = serde_saphyr::from_str(text.split("---\n").next().unwrap()).unwrap();
    assert_eq!(first["spec"]["clusterIP"], "None", "{text}");
    let default_policy = stdout(&stsguard(
        &["mutate", "-f", "-"],
        Some(with_service.as_bytes()),
    ));
    assert!(default_policy.starts_with(service), "off by default");

    let bad = stsguard(&["mutate", "-f", "-"], Some(b"kind: [\n"));
    assert_eq!(bad.status.code(), Some(2));
    assert!(bad.stdout.is_empty(), "nothing half-done on stdout");

    // What audit refuses, mutate refuses too: a document that is no valid StatefulSet.
    let invalid = format!(
        "{config}---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: x}}\nspec: {{replicas: three}}\n"
    );
    let out = stsguard(&["mutate", "-f", "-"], Some(invalid.as_bytes()));
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("-:10: not a valid apps/v1 StatefulSet: spec.replicas"),
        "{stderr}"
    );

    // A changed document keeps the comments that lead it, such as Helm's `# Source:` line.
    let rendered = format!(
        "---\n# Source: db/templates/statefulset.yaml\n{}",
        serde_saphyr::to_string(&db).unwrap()
    );
    let text = stdout(&stsguard(&["mutate", "-f", "-"], Some(rendered.as_bytes())));
    assert!(
        text.starts_with("---\n# Source: db/templates/statefulset.yaml\n") && text.contains("wal"),
        "{text}"
    );
}

#[test]
fn rules_lists_every_rule_and_matches_the_book() {
    let out = stsguard(&["rules"], None);
    let text = stdout(&out);
    for rule in stsguard::rules::RULES {
        assert!(text.contains(&format!("{}  [", rule.id)), "{}", rule.id);
    }
    for m in stsguard::mutate::MUTATORS {
        assert!(text.contains(m.id));
    }
    let markdown = stdout(&stsguard(&["rules", "-o", "markdown"], None));
    let page = std::fs::read_to_string(root().join("docs/src/rules.md")).unwrap();
    for table_line in markdown.lines().filter(|l| l.starts_with("| `")) {
        assert!(
            page.contains(table_line),
            "docs/src/rules.md lacks: {table_line}"
        );
    }
}

/// A directory of unrelated apps gives every file the verdict it gets when audited alone, even
/// where the apps share Service names in the one namespace their manifests leave implicit.
#[test]
fn a_directory_of_unrelated_apps_keeps_each_files_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let sts = |name: &str| {
        format!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: {name}}}\nspec:\n  \
             serviceName: web\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    \
             metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n        - name: \
             app\n          image: nginx\n          readinessProbe: {{tcpSocket: {{port: 80}}}}\n  \
             volumeClaimTemplates:\n    - metadata: {{name: data}}\n      spec: {{accessModes: \
             [ReadWriteOnce], resources: {{requests: {{storage: 1Gi}}}}}}\n"
        )
    };
    let service = |app: &str, ip: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec: {{clusterIP: {ip}, \
             selector: {{app: {app}}}}}\n"
        )
    };
    let files = [
        (
            "a-cache/app.yaml",
            format!("{}---\n{}", sts("cache"), service("cache", "10.0.0.7")),
        ),
        (
            "b-db/app.yaml",
            format!("{}---\n{}", sts("db"), service("db", "None")),
        ),
        ("c-front/svc.yaml", service("front", "10.0.0.9")),
    ];
    let verdicts = |paths: &[&Path]| -> Vec<(String, String, Vec<String>)> {
        let mut args = vec!["audit", "-o", "json", "--fail-on", "never"];
        for p in paths {
            args.extend(["-f", p.to_str().unwrap()]);
        }
        let report: Value = serde_json::from_str(&stdout(&stsguard(&args, None))).unwrap();
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let rules = r["violations"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v["rule"].as_str().unwrap().to_owned())
                    .collect();
                let file = Path::new(r["file"].as_str().unwrap())
                    .strip_prefix(dir.path())
                    .unwrap()
                    .display()
                    .to_string();
                (file, r["name"].as_str().unwrap().to_owned(), rules)
            })
            .collect()
    };
    let mut alone = Vec::new();
    for (file, text) in &files {
        let path = dir.path().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        alone.extend(verdicts(&[&path]));
    }
    let together = verdicts(&[dir.path()]);
    assert_eq!(together, alone);
    // The comparison covers a real deny: cache's ClusterIP Service is not shadowed by db's.
    assert!(
        alone.iter().any(|(_, name, rules)| name == "cache"
            && rules.contains(&"sts-governing-service-headless".to_owned())),
        "{alone:?}"
    );
}
