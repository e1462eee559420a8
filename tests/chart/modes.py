"""The chart's render modes, shared by test_chart.py and render.py.

Each mode is a set of values for charts/stsguard; render.py writes one multi-document YAML
file per mode (OUTDIR/<mode>.yaml), test_chart.py checks the same renders.
"""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
CHART_DIR = REPO / "charts" / "stsguard"
DEFAULT_POLICY = REPO / "policies" / "default.yaml"

RELEASE = "guard"
NAMESPACE = "stsguard-system"
# The chart's fullname for RELEASE (release name + chart name).
FULLNAME = "guard-stsguard"
# The ConfigMap stsguard registers the webhook configurations from.
REGISTRATION_CONFIGMAP = f"{FULLNAME}-webhooks"

# A CA certificate (no key is kept anywhere) standing in for a user-provided caBundle.
TEST_CA_PEM = (HERE / "test-ca.crt").read_text()
TEST_CA_B64 = base64.b64encode(TEST_CA_PEM.encode()).decode()

CUSTOM_POLICY = """\
apiVersion: stsguard.io/v1alpha1
kind: Policy
mode: enforce
rules:
  sts-service-name: deny
  sts-readiness-probe: deny
"""

MODES: dict[str, dict[str, Any]] = {
    # stsguard makes and renews the CA and serving certificate, and registers the webhook
    # configurations once a pod is Ready.
    "default": {},
    # Helm generates the CA and the serving certificate at render time.
    "generated": {"certificates": {"mode": "generated"}},
    # Helm creates the webhook configurations with the release (the generated certificate).
    "helm-registration": {
        "certificates": {"mode": "generated"},
        "webhook": {"registration": "helm"},
    },
    # cert-manager issues them and injects the CA.
    "cert-manager": {"certManager": {"enabled": True}},
    # A Secret managed outside the chart, with its CA given as caBundle.
    "existing-secret": {"existingSecret": "stsguard-serving-cert", "caBundle": TEST_CA_B64},
    # The webhook runs outside the cluster (development).
    "url": {"webhook": {"url": "https://10.0.0.5:8443"}, "caBundle": TEST_CA_B64},
    # Audit mode: --mode audit.
    "audit": {"mode": "audit"},
    # Most other values away from their defaults.
    "custom": {
        "replicaCount": 3,
        "clientCA": TEST_CA_PEM,
        "policy": CUSTOM_POLICY,
        # The backstop off (the webhook then fails closed).
        "backstop": {"enabled": False},
        "logFormat": "text",
        "logLevel": "stsguard=debug",
        "shutdownGrace": "25s",
        "terminationGracePeriodSeconds": 40,
        "maxBodyBytes": 1048576,
        "requestTimeout": "8s",
        "headerReadTimeout": "3s",
        "imagePullSecrets": [{"name": "registry-creds"}],
        "priorityClassName": "system-cluster-critical",
        "podAnnotations": {"example.com/team": "platform"},
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}
        ],
        "podDisruptionBudget": {"enabled": True, "minAvailable": 2},
        "certValidityDays": 30,
        "certificates": {"mode": "generated"},
        "webhook": {
            "timeoutSeconds": 10,
            "mutateServices": True,
            "failurePolicy": {"validating": "Ignore", "mutating": "Fail"},
            "namespaceSelector": {"excludeNamespaces": ["legacy-db", "monitoring"]},
            "objectSelector": {
                "matchExpressions": [{"key": "stsguard.io/skip", "operator": "DoesNotExist"}]
            },
        },
    },
}


def values_for(mode: str) -> dict[str, Any]:
    """A copy of a mode's values, safe to modify."""
    return copy.deepcopy(MODES[mode])


def render_files(chart: Any, values: dict[str, Any]) -> dict[str, str]:
    """Renders the chart (a helm_python Chart) as RELEASE in NAMESPACE; path -> text."""
    return chart.render(values, name=RELEASE, namespace=NAMESPACE)


def manifests(files: dict[str, str]) -> str:
    """The rendered objects as one multi-document YAML text, ordered by template path."""
    parts = []
    for path in sorted(files):
        if path.endswith("NOTES.txt"):
            continue
        for doc in split_documents(files[path]):
            # Only leading newlines go: trailing ones may belong to a block scalar (|+).
            doc = doc.lstrip("\n")
            parts.append(f"# Source: {path}\n{doc}" + ("" if doc.endswith("\n") else "\n"))
    return "---\n".join(parts)


def split_documents(text: str) -> list[str]:
    """The non-empty YAML documents of one rendered template, as Helm wrote them (split on
    `---` lines, as Helm splits a manifest; documents holding only comments are dropped)."""
    docs = []
    for doc in re.split(r"(?m)^---[ \t]*$", text):
        if yaml.safe_load(doc) is not None:
            docs.append(doc)
    return docs


# The APIs of the Prometheus Operator, which the ServiceMonitor and PrometheusRule templates
# need the cluster to serve (.Capabilities.APIVersions).
OPERATOR_API_VERSIONS = [
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
]
# Scraping, alerts and the dashboard all on: the "done when" command line.
MONITORING_VALUES: dict[str, Any] = {
    "metrics": {
        "serviceMonitor": {"enabled": True},
        "prometheusRule": {"enabled": True},
        "dashboard": {"enabled": True},
    }
}
# The job and namespace labels the Prometheus Operator gives the targets of the chart's
# ServiceMonitor, which the alerts select.
METRICS_JOB = f"{FULLNAME}-metrics"


def render_with_api_versions(
    chart: Any, values: dict[str, Any], api_versions: list[str]
) -> dict[str, str]:
    """Like render_files, on a cluster that also serves `api_versions` (as `helm template
    --api-versions` does). helm_python's Chart.render has no parameter for it, but its native
    render call takes the option (api_versions in the helm-c-sdk's render options)."""
    import json  # noqa: PLC0415

    from helm_python import _native  # noqa: PLC0415

    options = {"name": RELEASE, "namespace": NAMESPACE, "api_versions": api_versions}
    rendered = _native.call_string(
        "helm_render", chart._raw(), json.dumps(values), json.dumps(options)
    )
    return json.loads(rendered)


def prometheus_rules(chart: Any, values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The PrometheusRule's spec rendered with MONITORING_VALUES (merged with `values`): a
    Prometheus rule file ({groups: [...]}) that promtool and Prometheus load as is."""
    merged = copy.deepcopy(MONITORING_VALUES)
    for key, value in (values or {}).get("metrics", {}).get("prometheusRule", {}).items():
        merged["metrics"]["prometheusRule"][key] = value
    files = render_with_api_versions(chart, merged, OPERATOR_API_VERSIONS)
    text = files["stsguard/templates/prometheusrule.yaml"]
    docs = [yaml.safe_load(d) for d in split_documents(text)]
    assert len(docs) == 1 and docs[0]["kind"] == "PrometheusRule", docs
    return docs[0]["spec"]
