"""The chart's operator view: the metrics Service and its scrape annotations, the ServiceMonitor
and PrometheusRule (only when the cluster serves the Prometheus Operator's API), the Grafana
dashboard ConfigMap, their values and schema, and the alerts checked by promtool (check rules,
and the unit tests in fixtures/alerts.test.yaml). tests/observability.rs runs the same
dashboard and alerts against a real Prometheus scraping a real stsguard.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import helm_python
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modes import (  # noqa: E402
    CHART_DIR,
    FULLNAME,
    METRICS_JOB,
    MONITORING_VALUES,
    NAMESPACE,
    OPERATOR_API_VERSIONS,
    REPO,
    prometheus_rules,
    render_files,
    render_with_api_versions,
    split_documents,
)

HERE = Path(__file__).resolve().parent
DASHBOARD = CHART_DIR / "files" / "dashboard.json"
DOCS = REPO / "docs" / "src" / "metrics.md"
ALERT_TESTS = HERE / "fixtures" / "alerts.test.yaml"
RUNBOOK = "https://stsguard.github.io/stsguard/metrics.html#"


@pytest.fixture(scope="module")
def chart():
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded


def objects(files: dict[str, str]) -> list[dict[str, Any]]:
    return [
        yaml.safe_load(doc)
        for path, text in sorted(files.items())
        if not path.endswith("NOTES.txt")
        for doc in split_documents(text)
    ]


def of_kind(files: dict[str, str], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects(files) if o["kind"] == kind]


def dashboard_configmaps(files: dict[str, str]) -> list[dict[str, Any]]:
    return [
        c for c in of_kind(files, "ConfigMap") if c["metadata"]["name"] == f"{FULLNAME}-dashboard"
    ]


def with_operator(chart: Any, values: dict[str, Any]) -> dict[str, str]:
    return render_with_api_versions(chart, values, OPERATOR_API_VERSIONS)


def monitoring(**sections: dict[str, Any]) -> dict[str, Any]:
    """MONITORING_VALUES with some keys of its sections replaced."""
    values = json.loads(json.dumps(MONITORING_VALUES))
    for section, keys in sections.items():
        values["metrics"].setdefault(section, {}).update(keys)
    return values


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if os.environ.get("STSGUARD_REQUIRE_VALIDATORS"):
            pytest.fail(f"{name} is required in CI (apt-get install prometheus)")
        pytest.skip(f"{name} is not installed (apt-get install prometheus)")
    return found


# ---------------------------------------------------------------------------------------------
# Scraping


def test_metrics_service_selects_the_pods_probe_port_with_scrape_annotations(chart):
    files = render_files(chart, {})
    services = {s["metadata"]["name"]: s for s in of_kind(files, "Service")}
    metrics = services[METRICS_JOB]
    deployment = of_kind(files, "Deployment")[0]
    assert metrics["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert metrics["spec"]["ports"] == [
        {"name": "metrics", "port": 8080, "targetPort": "probes", "protocol": "TCP"}
    ]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    probes = {p["name"]: p["containerPort"] for p in container["ports"]}["probes"]
    assert container["args"][container["args"].index("--probe-addr") + 1] == f"0.0.0.0:{probes}"
    assert metrics["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(probes),
        "prometheus.io/path": "/metrics",
    }
    assert metrics["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics"
    # The webhook's Service stays TLS only.
    assert [p["name"] for p in services[FULLNAME]["spec"]["ports"]] == ["https"]
    off = render_files(chart, {"metrics": {"annotations": False}})
    metrics = [s for s in of_kind(off, "Service") if s["metadata"]["name"] == METRICS_JOB][0]
    assert "annotations" not in metrics["metadata"]


def test_a_long_fullname_still_gives_two_service_names(chart):
    files = render_files(chart, {"fullnameOverride": "s" * 63})
    names = sorted(s["metadata"]["name"] for s in of_kind(files, "Service"))
    assert names == ["s" * 55 + "-metrics", "s" * 63]


def test_monitoring_objects_are_off_by_default(chart):
    files = with_operator(chart, {})
    assert of_kind(files, "ServiceMonitor") == []
    assert of_kind(files, "PrometheusRule") == []
    assert dashboard_configmaps(files) == []


def test_without_the_operator_api_they_are_left_out_and_the_notes_say_so(chart):
    files = render_files(chart, MONITORING_VALUES)
    assert of_kind(files, "ServiceMonitor") == []
    assert of_kind(files, "PrometheusRule") == []
    notes = files["stsguard/templates/NOTES.txt"]
    assert "no ServiceMonitor was\ncreated" in notes
    assert "no alerts were\ncreated" in notes
    with_api = with_operator(chart, MONITORING_VALUES)["stsguard/templates/NOTES.txt"]
    assert "WARNING" not in with_api


def test_service_monitor_scrapes_the_metrics_service_only(chart):
    files = with_operator(chart, MONITORING_VALUES)
    (monitor,) = of_kind(files, "ServiceMonitor")
    assert monitor["metadata"]["namespace"] == NAMESPACE
    selector = monitor["spec"]["selector"]["matchLabels"]
    chosen = [
        s["metadata"]["name"]
        for s in of_kind(files, "Service")
        if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert chosen == [METRICS_JOB]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "scheme": "http", "interval": "30s"}


def test_service_monitor_values_pass_through(chart):
    relabel = [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}]
    drop = [{"sourceLabels": ["__name__"], "regex": "stsguard_build_info", "action": "drop"}]
    values = monitoring(
        serviceMonitor={
            "interval": "",
            "scrapeTimeout": "5s",
            "labels": {"release": "kube-prometheus-stack"},
            "relabelings": relabel,
            "metricRelabelings": drop,
        }
    )
    (monitor,) = of_kind(with_operator(chart, values), "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert "interval" not in endpoint
    assert endpoint["scrapeTimeout"] == "5s"
    assert endpoint["relabelings"] == relabel
    assert endpoint["metricRelabelings"] == drop


# ---------------------------------------------------------------------------------------------
# Alerts


def test_every_alert_has_a_summary_a_cause_and_a_runbook_in_the_docs(chart):
    (rule,) = of_kind(with_operator(chart, MONITORING_VALUES), "PrometheusRule")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"]]
    names = [a["alert"] for a in alerts]
    assert len(names) == len(set(names)) >= 9
    docs = DOCS.read_text()
    headings = re.findall(r"(?m)^### (Stsguard\w+)$", docs)
    assert sorted(headings) == sorted(names), "docs/src/metrics.md: one ### heading per alert"
    for alert in alerts:
        annotations = alert["annotations"]
        assert set(annotations) == {"summary", "description", "runbook_url"}, alert
        assert "Likely cause" in annotations["description"], alert["alert"]
        # mdBook's anchor of "### Name" is the name in lower case.
        assert annotations["runbook_url"] == RUNBOOK + alert["alert"].lower()
        assert alert["labels"]["severity"] in {"critical", "warning"}
        assert re.fullmatch(r"[0-9]+[smh]", alert["for"]), alert
        # Every series the alert reads is the release's own.
        for selector in re.findall(r"stsguard_\w+\{([^}]*)\}", alert["expr"]):
            assert f'job="{METRICS_JOB}",namespace="{NAMESPACE}"' in selector, alert["expr"]


def test_alert_thresholds_labels_and_selector_are_values(chart):
    values = monitoring(
        prometheusRule={
            "labels": {"release": "kube-prometheus-stack"},
            "alertLabels": {"team": "platform"},
            "selector": 'kubernetes_namespace="guard",app="stsguard"',
            "reviewErrorRatio": 0.2,
            "latencyTimeoutRatio": 0.25,
            "certificateExpiryDays": 30,
            "namespaceDenialsPerMinute": 12,
            "reportWriteFailureRatio": 0.3,
            "stateFor": "7m",
            "rateFor": "20m",
        }
    )
    values["webhook"] = {"timeoutSeconds": 8}
    (rule,) = of_kind(with_operator(chart, values), "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    for alert in alerts.values():
        assert alert["labels"]["team"] == "platform"
        assert alert["for"] in {"7m", "20m"}
        selectors = re.findall(r"stsguard_\w+\{([^}]*)\}", alert["expr"])
        assert selectors and all(
            s.startswith('kubernetes_namespace="guard",app="stsguard"') for s in selectors
        )
    expected = {
        "StsguardReviewsFailing": "> 0.2",
        "StsguardReviewLatencyHigh": "> 2",  # 0.25 of 8 s
        "StsguardCertificateExpiringSoon": "< 30 * 86400",
        "StsguardNamespaceDenialsSpike": "> 12",
        "StsguardReportWritesFailing": "> 0.3",
    }
    for name, threshold in expected.items():
        assert threshold in " ".join(alerts[name]["expr"].split()), alerts[name]["expr"]
    assert alerts["StsguardNoReadyReplica"]["for"] == "7m"
    assert alerts["StsguardReviewsFailing"]["for"] == "20m"


def test_a_latency_threshold_past_the_histogram_fails_the_render(chart):
    values = monitoring(prometheusRule={"latencyTimeoutRatio": 0.5})
    values["webhook"] = {"timeoutSeconds": 10}
    with pytest.raises(helm_python.HelmRenderError, match="could never fire"):
        with_operator(chart, values)
    values["metrics"]["prometheusRule"]["latencyTimeoutRatio"] = 0.3
    (rule,) = of_kind(with_operator(chart, values), "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert alerts["StsguardReviewLatencyHigh"]["expr"].rstrip().endswith("> 3")


def test_promtool_checks_the_rendered_rules(chart, tmp_path):
    promtool = tool("promtool")
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(prometheus_rules(chart)))
    done = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout


def run_alert_tests(promtool: str, rules: dict[str, Any], tmp_path: Path):
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    assert tests["rule_files"] == ["rules.yaml"]
    shutil.copy(ALERT_TESTS, tmp_path / "alerts.test.yaml")
    return subprocess.run(
        [promtool, "test", "rules", "alerts.test.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )


def test_every_alert_fires_and_stays_quiet_in_promtool_unit_tests(chart, tmp_path):
    rules = prometheus_rules(chart)
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert fires == names, f"alerts never seen firing: {names - fires}"
    assert quiet == names, f"alerts never seen quiet: {names - quiet}"
    done = run_alert_tests(tool("promtool"), rules, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_alert_unit_tests_fail_when_a_threshold_moves(chart, tmp_path):
    promtool = tool("promtool")
    # The unit tests fail 10% of reviews; at a 20% threshold that alert must stay quiet.
    moved = prometheus_rules(chart, {"metrics": {"prometheusRule": {"reviewErrorRatio": 0.2}}})
    done = run_alert_tests(promtool, moved, tmp_path)
    assert done.returncode != 0
    assert "alertname: StsguardReviewsFailing" in done.stdout + done.stderr


# ---------------------------------------------------------------------------------------------
# Dashboard


def test_dashboard_configmap_carries_the_one_dashboard_file(chart):
    files = render_files(chart, MONITORING_VALUES)
    (configmap,) = dashboard_configmaps(files)
    assert configmap["metadata"]["namespace"] == NAMESPACE
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert "annotations" not in configmap["metadata"]
    assert configmap["data"] == {"stsguard.json": DASHBOARD.read_text().rstrip("\n")}
    values = monitoring(
        dashboard={
            "namespace": "monitoring",
            "folder": "Platform",
            "label": "dash",
            "labelValue": "yes",
        }
    )
    (configmap,) = dashboard_configmaps(render_files(chart, values))
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["dash"] == "yes"
    assert "grafana_dashboard" not in configmap["metadata"]["labels"]
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "Platform"}


def test_dashboard_panels_follow_the_namespace_variable():
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "stsguard"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["query"] == "prometheus"
    query = variables["namespace"]["query"]["query"]
    assert query == "label_values(stsguard_build_info, namespace)"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = {p["title"] for p in panels}
    for wanted in (
        "Reviews by verdict",
        "Violations by rule",
        "Denials by namespace",
        "Review latency",
        "Warnings",
        "Caches synced",
        "Leaders",
        "Certificate days left",
        "Violations in the cluster by rule",
    ):
        assert wanted in titles
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            for selector in re.findall(r"stsguard_\w+\{([^}]*)\}", target["expr"]):
                assert selector.startswith('namespace=~"$namespace"'), target["expr"]
            assert re.search(r"stsguard_\w+\{", target["expr"]), target["expr"]


# ---------------------------------------------------------------------------------------------
# Values


def test_lint_passes_with_everything_on():
    report = helm_python.lint(CHART_DIR, MONITORING_VALUES, namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize(
    "values",
    [
        {"metrics": {"serviceMonitor": {"enable": True}}},
        {"metrics": {"prometheusRule": {"reviewErrorRatio": 2}}},
        {"metrics": {"prometheusRule": {"stateFor": "five minutes"}}},
        {"metrics": {"prometheusRule": {"selector": '{job="x"}'}}},
        {"metrics": {"serviceMonitor": {"interval": "30"}}},
        {"metrics": {"dashboard": {"labels": {}}}},
        {"metrics": {"podMonitor": {}}},
    ],
)
def test_schema_rejects_unknown_or_malformed_metrics_values(chart, values):
    with pytest.raises(helm_python.HelmValuesError):
        render_files(chart, values)
