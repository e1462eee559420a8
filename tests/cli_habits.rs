//! The command line as a CI pipeline and a person use it: empty input, directories, colour,
//! quiet output, `mutate --diff` as `diff` does it, `rules <id>`, `review`, completions.

use std::{
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
};

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stsguard"));
    command
        .args(args)
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const WEB: &str = "tests/fixtures/corpus/k8s-website/web.yaml";

#[test]
fn empty_input_is_an_error_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("empty.yaml"), "").unwrap();
    std::fs::write(dir.path().join("README.md"), "no manifests here").unwrap();
    let cases: [(&[&str], &[u8]); 3] = [
        (&["audit", "-f", "-"], b""),
        (&["audit", "-f", "EMPTY"], b""),
        (&["audit", "-f", "DIR"], b"# only a comment\n"),
    ];
    for (args, stdin) in cases {
        let empty = dir.path().join("empty.yaml");
        let args: Vec<&str> = args
            .iter()
            .map(|a| match *a {
                "EMPTY" => empty.to_str().unwrap(),
                "DIR" => dir.path().to_str().unwrap(),
                a => a,
            })
            .collect();
        let out = run(&args, stdin, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains("no Kubernetes objects in"),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let mut allowed = args.clone();
        allowed.push("--allow-empty");
        assert_eq!(run(&allowed, stdin, &[]).status.code(), Some(0), "{args:?}");
    }
    let out = run(&["mutate", "-f", "-"], b"", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no Kubernetes objects in stdin"));
}

#[test]
fn an_unrendered_chart_is_named_and_its_templates_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let chart = dir.path().join("mychart");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: mychart\nversion: 1.0.0\n",
    )
    .unwrap();
    let template = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: {{ .Release.Name }}\n  labels:\n    {{- include \"x\" . | nindent 4 }}\nspec:\n  replicas: {{ .Values.replicas }}\n";
    std::fs::write(chart.join("templates/sts.yaml"), template).unwrap();
    let out = run(
        &["audit", "-f", dir.path().to_str().unwrap(), "--allow-empty"],
        b"",
        &[],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("a Helm chart; its templates/ were not read"),
        "{}",
        text(&out.stdout)
    );
    // Given the template itself: one error that says what it is, not a dozen YAML errors.
    let file = chart.join("templates/sts.yaml");
    let out = run(&["audit", "-f", file.to_str().unwrap()], b"", &[]);
    assert_eq!(out.status.code(), Some(2));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.matches("error:").count(), 1, "{stdout}");
    assert!(stdout.contains("unrendered Helm template"), "{stdout}");
}

#[test]
fn directories_follow_links_once_and_honour_excludes() {
    let dir = tempfile::tempdir().unwrap();
    let apps = dir.path().join("apps");
    std::fs::create_dir_all(apps.join("vendor")).unwrap();
    std::fs::copy(root().join(WEB), apps.join("web.yaml")).unwrap();
    std::fs::copy(root().join(WEB), apps.join("vendor/web.yaml")).unwrap();
    std::os::unix::fs::symlink(&apps, apps.join("vendor/loop")).unwrap();
    let audit = |extra: &[&str]| -> Value {
        let mut args = vec!["audit", "-o", "json", "--fail-on", "never", "-f"];
        args.push(apps.to_str().unwrap());
        args.extend(extra);
        serde_json::from_slice(&run(&args, b"", &[]).stdout).unwrap()
    };
    let all = audit(&[]);
    // web.yaml and vendor/web.yaml, each once, however the link loops.
    assert_eq!(all["summary"]["objects"], 4, "{all}");
    let excluded = audit(&["--exclude", "vendor/"]);
    assert_eq!(excluded["summary"]["objects"], 2, "{excluded}");
}

#[test]
fn errors_name_the_field_and_its_line() {
    let manifest = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: x\nspec:\n  serviceName: x\n  replicas: three\n";
    let out = run(&["audit", "-f", "-"], manifest.as_bytes(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout).contains("-:7: not a valid apps/v1 StatefulSet: spec.replicas:"),
        "{}",
        text(&out.stdout)
    );
    let out = run(&["audit", "-f", "-"], b"a: [1, 2\nb: 3\n", &[]);
    assert!(
        text(&out.stdout).contains("-:1:4: invalid YAML: this '[' is never closed"),
        "{}",
        text(&out.stdout)
    );
    let out = run(
        &["audit", "-f", WEB, "--rule", "sts-readines-probe=deny"],
        b"",
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("did you mean \"sts-readiness-probe\"?"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn an_unreachable_cluster_is_named_without_stray_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:9\"}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\nusers: [{name: u, user: {token: x}}]\n",
    )
    .unwrap();
    let out = run(
        &[
            "audit",
            "--cluster",
            "--kubeconfig",
            kubeconfig.to_str().unwrap(),
        ],
        b"",
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("API server https://127.0.0.1:9/") && stderr.contains("reachable"),
        "{stderr}"
    );
}

#[test]
fn quiet_lists_only_findings_and_colour_follows_the_conventions() {
    let clean =
        root().join("tests/fixtures/corpus/kube-score/statefulset-host-antiaffinity-required.yaml");
    let both = [WEB, clean.to_str().unwrap()];
    let plain = run(&["audit", "-f", both[0], "-f", both[1]], b"", &[]);
    let quiet = run(&["audit", "-q", "-f", both[0], "-f", both[1]], b"", &[]);
    let lines = |o: &Output| text(&o.stdout).lines().count();
    assert!(lines(&quiet) < lines(&plain), "{}", text(&quiet.stdout));
    assert!(
        text(&quiet.stdout).contains("objects:"),
        "the summary counts every object"
    );
    assert!(!text(&quiet.stdout).contains("[ok]"));

    let red = "\x1b[31m";
    // Piped: no colour unless forced.
    assert!(!text(&plain.stdout).contains(red));
    let forced = run(&["audit", "-f", WEB], b"", &[("CLICOLOR_FORCE", "1")]);
    assert!(text(&forced.stdout).contains('\x1b'));
    let always = run(
        &["audit", "-f", WEB, "--color", "always"],
        b"",
        &[("NO_COLOR", "1")],
    );
    assert!(
        text(&always.stdout).contains('\x1b'),
        "--color beats the environment"
    );
    let never = run(
        &["audit", "-f", WEB, "--color", "never"],
        b"",
        &[("CLICOLOR_FORCE", "1")],
    );
    assert!(!text(&never.stdout).contains('\x1b'));
}

/// `mutate --diff` exits 1 when something would change, and `git apply -p0` (or `patch -p0`)
/// applies its diff.
#[test]
fn mutate_diff_is_a_patch_and_its_exit_code_says_whether_anything_changes() {
    let dir = tempfile::tempdir().unwrap();
    let db = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  serviceName: db\n  selector:\n    matchLabels: {app: db}\n  template:\n    metadata:\n      labels: {app: db}\n    spec:\n      containers:\n        - name: db\n          image: postgres\n          volumeMounts: [{name: data, mountPath: /data}]\n";
    std::fs::write(dir.path().join("db.yaml"), db).unwrap();
    let diff = Command::new(env!("CARGO_BIN_EXE_stsguard"))
        .args(["mutate", "--diff", "-f", "db.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(diff.status.code(), Some(1), "{}", text(&diff.stderr));
    let patch = text(&diff.stdout);
    assert!(patch.starts_with("--- db.yaml\n+++ db.yaml\n"), "{patch}");
    // git is there wherever this repository was cloned; `git apply -p0` works outside a repository.
    let mut apply = Command::new("git")
        .args(["apply", "-p0", "-"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    apply
        .stdin
        .take()
        .unwrap()
        .write_all(patch.as_bytes())
        .unwrap();
    let applied = apply.wait_with_output().unwrap();
    assert!(applied.status.success(), "{}", text(&applied.stderr));
    let mutated = std::fs::read_to_string(dir.path().join("db.yaml")).unwrap();
    assert!(mutated.contains("volumeClaimTemplates"), "{mutated}");
    // Nothing left to change: exit 0 and no output.
    let again = Command::new(env!("CARGO_BIN_EXE_stsguard"))
        .args(["mutate", "--diff", "-f", "db.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(again.stdout.is_empty());
}

#[test]
fn rules_explain_one_rule_and_speak_json_and_yaml() {
    let out = run(&["rules", "sts-volume-claim-templates"], b"", &[]);
    let shown = text(&out.stdout);
    for part in [
        "checks:",
        "why:",
        "fix:",
        "missing: warn by default",
        "incomplete: deny by default",
        "example that violates it:",
        "gets: sts-volume-claim-templates",
    ] {
        assert!(shown.contains(part), "{part} missing in\n{shown}");
    }
    let all: Value =
        serde_json::from_slice(&run(&["rules", "-o", "json"], b"", &[]).stdout).unwrap();
    assert_eq!(
        all["rules"].as_array().unwrap().len(),
        stsguard::rules::RULES.len()
    );
    let one: Value = serde_saphyr::from_str(&text(
        &run(
            &["rules", "svc-headless-for-statefulset", "--output", "yaml"],
            b"",
            &[],
        )
        .stdout,
    ))
    .unwrap();
    assert_eq!(one["id"], "svc-headless-for-statefulset");
    assert!(
        one["example"]["violations"][0]["message"].is_string(),
        "{one}"
    );
    let unknown = run(&["rules", "sts-nope-probe"], b"", &[]);
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn review_wraps_a_manifest_the_webhook_answers() {
    let out = run(&["review", "-f", WEB, "--kind", "StatefulSet"], b"", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let body = out.stdout;
    let review: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(review["request"]["operation"], "CREATE");
    assert_eq!(review["request"]["kind"]["kind"], "StatefulSet");
    let policy = stsguard::policy::Policy::builtin();
    let reviewer = stsguard::review::Reviewer::new(
        std::sync::Arc::new(policy),
        std::sync::Arc::new(stsguard::lookup::NoLookup),
    );
    let answer = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(reviewer.review(stsguard::review::Endpoint::Validate, &body))
        .unwrap();
    assert_eq!(answer.summary.rules, ["sts-readiness-probe"]);

    let ambiguous = run(&["review", "-f", WEB], b"", &[]);
    assert_eq!(ambiguous.status.code(), Some(2));
    assert!(text(&ambiguous.stderr).contains("--kind and --name"));
    let update = run(
        &[
            "review",
            "-f",
            WEB,
            "--kind",
            "Service",
            "--operation",
            "update",
        ],
        b"",
        &[],
    );
    assert!(text(&update.stderr).contains("needs --old"));
}

#[test]
fn completions_and_version() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell], b"", &[]);
        assert_eq!(out.status.code(), Some(0));
        assert!(text(&out.stdout).contains("stsguard"), "{shell}");
    }
    let version = text(&run(&["--version"], b"", &[]).stdout);
    assert!(
        version.starts_with(&format!("stsguard {} (commit ", env!("CARGO_PKG_VERSION")))
            && version.contains("Kubernetes API 1."),
        "{version}"
    );
    assert_eq!(version, text(&run(&["version"], b"", &[]).stdout));
}
