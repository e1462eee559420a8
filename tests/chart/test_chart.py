"""Tests of the Helm chart charts/stsguard, rendered offline with helm-python-sdk (Helm v4).

    pip install helm-python-sdk pytest pyyaml cryptography cel-python
    pytest tests/chart -q
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
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
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modes import (  # noqa: E402
    CHART_DIR,
    CUSTOM_POLICY,
    DEFAULT_POLICY,
    FULLNAME,
    MODES,
    REGISTRATION_CONFIGMAP,
    NAMESPACE,
    RELEASE,
    TEST_CA_B64,
    manifests,
    render_files,
    split_documents,
    values_for,
)

NAMESPACED_KINDS = {
    "ConfigMap",
    "Role",
    "RoleBinding",
    "Deployment",
    "PodDisruptionBudget",
    "Secret",
    "Service",
    "ServiceAccount",
    "Issuer",
    "Certificate",
    "Job",
}
CLUSTER_KINDS = {
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}
SERVICE_DNS_NAMES = [
    FULLNAME,
    f"{FULLNAME}.{NAMESPACE}",
    f"{FULLNAME}.{NAMESPACE}.svc",
    f"{FULLNAME}.{NAMESPACE}.svc.cluster.local",
]


# ---------------------------------------------------------------------------------------------
# Rendering helpers


@pytest.fixture(scope="session")
def chart() -> Any:
    with helm_python.Chart.load(CHART_DIR) as loaded:
        yield loaded


class Rendered:
    """One render of the chart: its objects, NOTES.txt, and the webhook configurations stsguard
    registers from its ConfigMap (`registered`; empty when Helm creates them)."""

    def __init__(self, files: dict[str, str]) -> None:
        self.files = files
        self.notes = next((text for path, text in files.items() if path.endswith("NOTES.txt")), "")
        self.objects: list[dict[str, Any]] = []
        for path in sorted(files):
            if path.endswith("NOTES.txt"):
                continue
            self.objects.extend(yaml.safe_load(doc) for doc in split_documents(files[path]))
        self.registered: list[dict[str, Any]] = []
        for obj in self.objects:
            if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == REGISTRATION_CONFIGMAP:
                assert set(obj["data"]) == {"validating.yaml", "mutating.yaml"}, obj["data"]
                for key in ("validating.yaml", "mutating.yaml"):
                    self.registered.append(yaml.safe_load(obj["data"][key]))

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Objects of a kind, whether Helm or stsguard creates them."""
        return [o for o in self.objects + self.registered if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        found = self.all(kind)
        assert len(found) == 1, f"expected one {kind}, found {len(found)}"
        return found[0]

    @property
    def webhook_service(self) -> dict[str, Any]:
        """The Service the API server calls (the other one, component metrics, is scraped)."""
        found = [
            s
            for s in self.all("Service")
            if s["metadata"]["labels"].get("app.kubernetes.io/component") != "metrics"
        ]
        assert len(found) == 1, f"expected one webhook Service, found {len(found)}"
        return found[0]

    @property
    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment")

    @property
    def container(self) -> dict[str, Any]:
        containers = self.deployment["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        return containers[0]

    @property
    def args(self) -> list[str]:
        return self.container["args"]

    @property
    def validating(self) -> dict[str, Any]:
        hooks = self.one("ValidatingWebhookConfiguration")["webhooks"]
        assert len(hooks) == 1
        return hooks[0]

    @property
    def mutating(self) -> dict[str, Any]:
        hooks = self.one("MutatingWebhookConfiguration")["webhooks"]
        assert len(hooks) == 1
        return hooks[0]

    def webhooks(self) -> list[dict[str, Any]]:
        return [self.validating, self.mutating]

    def annotation(self, kind: str, key: str) -> str | None:
        return (self.one(kind)["metadata"].get("annotations") or {}).get(key)


def render(chart: Any, values: dict[str, Any] | None = None) -> Rendered:
    return Rendered(render_files(chart, values or {}))


_CACHE: dict[str, Rendered] = {}


def render_mode(chart: Any, mode: str) -> Rendered:
    if mode not in _CACHE:
        _CACHE[mode] = render(chart, values_for(mode))
    return _CACHE[mode]


def arg_value(args: list[str], flag: str) -> str | None:
    """The value after `flag` in args, None when the flag is absent."""
    if flag not in args:
        return None
    index = args.index(flag)
    assert args.count(flag) == 1, f"{flag} given twice"
    assert index + 1 < len(args), f"{flag} has no value"
    return args[index + 1]


def load_cert(b64: str) -> x509.Certificate:
    pem = base64.b64decode(b64, validate=True)
    assert pem.startswith(b"-----BEGIN CERTIFICATE-----"), pem[:40]
    return x509.load_pem_x509_certificate(pem)


def is_ca(cert: x509.Certificate) -> bool:
    return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


# ---------------------------------------------------------------------------------------------
# Lint and structure


def test_lint_reports_no_warning_or_error():
    report = helm_python.lint(CHART_DIR, namespace=NAMESPACE)
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


@pytest.mark.parametrize("mode", list(MODES))
def test_lint_passes_for_every_mode(mode):
    report = helm_python.lint(CHART_DIR, values_for(mode), namespace=NAMESPACE)
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_chart_metadata(chart):
    meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "stsguard"
    assert meta["version"] == "0.1.0"
    assert meta["appVersion"] == "0.1.0"
    # matchConditions, which keep the control plane's own writes away from the webhooks, are
    # GA (and always honoured) from 1.30; an older API server would drop them silently.
    assert meta["kubeVersion"] == ">=1.30.0-0"


@pytest.mark.parametrize("mode", list(MODES))
def test_every_object_is_well_formed(chart, mode):
    rendered = render_mode(chart, mode)
    assert len(rendered.objects) >= 9
    seen = set()
    for obj in rendered.objects:
        assert isinstance(obj, dict)
        assert obj.get("apiVersion"), obj
        assert obj.get("kind"), obj
        name = obj.get("metadata", {}).get("name")
        assert name, obj
        assert len(name) <= 63 or obj["kind"] in CLUSTER_KINDS
        kind = obj["kind"]
        if kind in NAMESPACED_KINDS:
            assert obj["metadata"].get("namespace") == NAMESPACE, (kind, name)
        else:
            assert kind in CLUSTER_KINDS, kind
            assert "namespace" not in obj["metadata"], (kind, name)
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        key = (obj["apiVersion"], kind, name)
        assert key not in seen, f"{key} rendered twice"
        seen.add(key)
    kinds = {o["kind"] for o in rendered.objects + rendered.registered}
    assert {
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    } <= kinds


def test_render_script_writes_every_mode(chart, tmp_path):
    script = Path(__file__).resolve().parent / "render.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{m}.yaml" for m in MODES)
    for mode in MODES:
        docs = [d for d in yaml.safe_load_all((tmp_path / f"{mode}.yaml").read_text()) if d]
        assert "Deployment" in {d["kind"] for d in docs}
        # The same objects as a render in the test (the generated certificates aside).
        expected = render_mode(chart, mode).objects
        assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
            (o["kind"], o["metadata"]["name"]) for o in expected
        ]
    default = (tmp_path / "default.yaml").read_text()
    policy = next(
        d for d in yaml.safe_load_all(default)
        if d and d["kind"] == "ConfigMap" and "policy.yaml" in d.get("data", {})
    )["data"]["policy.yaml"]
    assert policy == DEFAULT_POLICY.read_text()


def test_manifests_keep_block_scalars_exact(chart):
    policy = "a: 1\n\n\n"  # trailing blank lines: a |+ block scalar
    text = manifests(render_files(chart, {"policy": policy, "backstop": {"enabled": False}}))
    cm = next(d for d in yaml.safe_load_all(text) if d and d["kind"] == "ConfigMap")
    assert cm["data"]["policy.yaml"] == policy


# ---------------------------------------------------------------------------------------------
# Webhook configurations


@pytest.mark.parametrize("mode", [m for m in MODES if m != "url"])
def test_webhooks_call_the_chart_service(chart, mode):
    rendered = render_mode(chart, mode)
    service = rendered.webhook_service
    assert service["metadata"]["name"] == FULLNAME
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}
    ]
    container_ports = {p["name"]: p["containerPort"] for p in rendered.container["ports"]}
    assert container_ports["https"] == 8443
    assert service["spec"]["selector"] == rendered.deployment["spec"]["selector"]["matchLabels"]
    for hook, path in [(rendered.validating, "/validate"), (rendered.mutating, "/mutate")]:
        assert "url" not in hook["clientConfig"]
        assert hook["clientConfig"]["service"] == {
            "name": FULLNAME,
            "namespace": NAMESPACE,
            "path": path,
            "port": 443,
        }


def test_url_mode_calls_the_url(chart):
    rendered = render_mode(chart, "url")
    assert rendered.validating["clientConfig"]["url"] == "https://10.0.0.5:8443/validate"
    assert rendered.mutating["clientConfig"]["url"] == "https://10.0.0.5:8443/mutate"
    for hook in rendered.webhooks():
        assert "service" not in hook["clientConfig"]
        assert hook["clientConfig"]["caBundle"] == TEST_CA_B64


def test_url_mode_drops_a_trailing_slash(chart):
    values = values_for("url")
    values["webhook"]["url"] = "https://dev.example:9443/"
    rendered = render(chart, values)
    assert rendered.validating["clientConfig"]["url"] == "https://dev.example:9443/validate"


def test_url_mode_needs_a_ca_bundle(chart):
    with pytest.raises(helm_python.HelmRenderError, match="webhook.url needs caBundle"):
        render(chart, {"webhook": {"url": "https://10.0.0.5:8443"}})


def test_generated_mode_ca_bundle_is_the_generated_ca(chart):
    rendered = render_mode(chart, "generated")
    secret = rendered.one("Secret")
    assert secret["metadata"]["name"] == f"{FULLNAME}-tls"
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}
    ca = load_cert(secret["data"]["ca.crt"])
    assert is_ca(ca)
    for hook in rendered.webhooks():
        bundle = hook["clientConfig"]["caBundle"]
        assert bundle == secret["data"]["ca.crt"]
        assert load_cert(bundle) == ca

    serving = load_cert(secret["data"]["tls.crt"])
    serving.verify_directly_issued_by(ca)
    assert not is_ca(serving)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sorted(sans.get_values_for_type(x509.DNSName)) == sorted(SERVICE_DNS_NAMES)
    usages = serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usages
    key = serialization.load_pem_private_key(
        base64.b64decode(secret["data"]["tls.key"]), password=None
    )
    assert key.public_key().public_numbers() == serving.public_key().public_numbers()

    # Long-lived: ten years by default.
    now = dt.datetime.now(dt.timezone.utc)
    for cert in (ca, serving):
        lifetime = cert.not_valid_after_utc - now
        assert dt.timedelta(days=3640) < lifetime <= dt.timedelta(days=3651)

    # The Deployment mounts that Secret.
    volumes = {v["name"]: v for v in rendered.deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["certs"]["secret"]["secretName"] == secret["metadata"]["name"]


def test_cert_validity_days_sets_the_lifetime(chart):
    rendered = render_mode(chart, "custom")  # certValidityDays: 30
    secret = rendered.one("Secret")
    now = dt.datetime.now(dt.timezone.utc)
    for key in ("ca.crt", "tls.crt"):
        lifetime = load_cert(secret["data"][key]).not_valid_after_utc - now
        assert dt.timedelta(days=29) < lifetime <= dt.timedelta(days=31)


def test_render_without_a_cluster_generates_a_new_ca_each_time(chart):
    # lookup finds nothing offline (as under `helm template`), so each render generates.
    generated = {"certificates": {"mode": "generated"}}
    first = render(chart, generated).one("Secret")["data"]["ca.crt"]
    second = render(chart, generated).one("Secret")["data"]["ca.crt"]
    assert first != second


@pytest.mark.parametrize("mode", ["default", "existing-secret", "helm-registration"])
def test_gitops_renders_are_identical_without_generated_material(chart, mode):
    """Argo CD and Flux render with `helm template`: in the default (self-managed) mode two
    renders are byte for byte the same, so a sync shows no diff and rolls no CA."""
    if mode == "helm-registration":
        # The generated mode is the counterexample: a new CA on every render.
        assert render_files(chart, values_for(mode)) != render_files(chart, values_for(mode))
        return
    assert render_files(chart, values_for(mode)) == render_files(chart, values_for(mode))
    rendered = render_mode(chart, mode)
    assert not any("BEGIN" in json.dumps(o) and "PRIVATE KEY" in json.dumps(o) for o in rendered.objects)


def _chart_copy_with_existing_secret(tmp_path: Path, data: dict[str, str]) -> Path:
    """A copy of the chart whose lookup of the TLS Secret returns a Secret with `data`."""
    copy = tmp_path / "stsguard"
    shutil.copytree(CHART_DIR, copy)
    helpers = copy / "templates" / "_helpers.tpl"
    text = helpers.read_text()
    call = 'lookup "v1" "Secret" .Release.Namespace (include "stsguard.tlsSecretName" .)'
    assert text.count(call) == 1, "the chart no longer looks the Secret up this way"
    pairs = " ".join(f'"{k}" "{v}"' for k, v in data.items())
    fake = f'(dict "apiVersion" "v1" "kind" "Secret" "data" (dict {pairs}))'
    helpers.write_text(text.replace(call, fake))
    return copy


def test_upgrade_reuses_the_existing_secret(tmp_path):
    existing = {
        "ca.crt": TEST_CA_B64,
        "tls.crt": base64.b64encode(b"serving certificate").decode(),
        "tls.key": base64.b64encode(b"serving key").decode(),
    }
    with helm_python.Chart.load(_chart_copy_with_existing_secret(tmp_path, existing)) as copy:
        rendered = render(copy, {"certificates": {"mode": "generated"}})
    assert rendered.one("Secret")["data"] == existing
    for hook in rendered.webhooks():
        assert hook["clientConfig"]["caBundle"] == TEST_CA_B64


def test_an_incomplete_existing_secret_is_replaced(tmp_path):
    existing = {"tls.crt": base64.b64encode(b"orphan").decode()}  # no key, no CA
    with helm_python.Chart.load(_chart_copy_with_existing_secret(tmp_path, existing)) as copy:
        rendered = render(copy, {"certificates": {"mode": "generated"}})
    data = rendered.one("Secret")["data"]
    assert data["tls.crt"] != existing["tls.crt"]
    assert is_ca(load_cert(data["ca.crt"]))
    assert rendered.validating["clientConfig"]["caBundle"] == data["ca.crt"]


def test_existing_secret_mode(chart):
    rendered = render_mode(chart, "existing-secret")
    assert rendered.all("Secret") == []
    assert rendered.all("Certificate") == [] and rendered.all("Issuer") == []
    for hook in rendered.webhooks():
        assert hook["clientConfig"]["caBundle"] == TEST_CA_B64
        assert is_ca(load_cert(hook["clientConfig"]["caBundle"]))
    volumes = {v["name"]: v for v in rendered.deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["certs"]["secret"]["secretName"] == "stsguard-serving-cert"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"existingSecret": "mine"}, "existingSecret needs caBundle"),
        (
            {"existingSecret": "mine", "caBundle": base64.b64encode(b"not a cert").decode()},
            "caBundle must be base64 of a PEM certificate",
        ),
        ({"caBundle": TEST_CA_B64}, "caBundle is used only with existingSecret or webhook.url"),
        (
            {"existingSecret": "mine", "caBundle": TEST_CA_B64, "certManager": {"enabled": True}},
            "existingSecret and certManager.enabled are exclusive",
        ),
        (
            {"shutdownGrace": "30s", "terminationGracePeriodSeconds": 30},
            "terminationGracePeriodSeconds",
        ),
        ({"shutdownGrace": "1m"}, "must be above drainDelay \\+ shutdownGrace"),
        # The drain delay counts too: 5s + 25s leaves the kubelet no margin.
        ({"shutdownGrace": "25s"}, "must be above drainDelay \\+ shutdownGrace"),
    ],
)
def test_inconsistent_values_fail_the_render(chart, values, message):
    with pytest.raises(helm_python.HelmRenderError, match=message):
        render(chart, values)


def test_the_pod_drains_and_bounds_its_connections(chart):
    """After SIGTERM the binary keeps answering for drainDelay (the image has no shell for a
    preStop sleep), and closes connections past maxConnectionAge so load spreads."""
    rendered = render_mode(chart, "default")
    args = rendered.container["args"]
    assert arg_value(args, "--drain-delay") == "5s"
    assert arg_value(args, "--max-connection-age") == "2m"
    assert arg_value(args, "--shutdown-grace") == "20s"
    assert rendered.deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 5 + 20


def test_cert_manager_mode(chart):
    rendered = render_mode(chart, "cert-manager")
    assert rendered.all("Secret") == []
    serving_name = f"{FULLNAME}-serving"
    # stsguard registers the configurations with the CA cert-manager writes into the serving
    # Secret (ca.crt, mounted), not cainjector: one writer of the caBundle.
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        assert rendered.annotation(kind, "cert-manager.io/inject-ca-from") is None
    for hook in rendered.webhooks():
        assert "caBundle" not in hook["clientConfig"]
    assert arg_value(rendered.args, "--ca-bundle-file") == "/certs/ca.crt"
    mounted = {
        v["name"]: v for v in rendered.deployment["spec"]["template"]["spec"]["volumes"]
    }["certs"]["secret"]["items"]
    assert {"key": "ca.crt", "path": "ca.crt"} in mounted
    # With Helm registering them, cainjector fills the caBundle in.
    helm = render(chart, {"certManager": {"enabled": True}, "webhook": {"registration": "helm"}})
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        assert (
            helm.annotation(kind, "cert-manager.io/inject-ca-from")
            == f"{NAMESPACE}/{serving_name}"
        )
    assert arg_value(helm.args, "--ca-bundle-file") is None

    issuers = {o["metadata"]["name"]: o for o in rendered.all("Issuer")}
    certs = {o["metadata"]["name"]: o for o in rendered.all("Certificate")}
    assert all(o["apiVersion"] == "cert-manager.io/v1" for o in [*issuers.values(), *certs.values()])
    assert set(issuers) == {f"{FULLNAME}-selfsigned", f"{FULLNAME}-ca"}
    assert set(certs) == {f"{FULLNAME}-ca", serving_name}
    assert issuers[f"{FULLNAME}-selfsigned"]["spec"] == {"selfSigned": {}}

    ca_cert = certs[f"{FULLNAME}-ca"]["spec"]
    assert ca_cert["isCA"] is True
    assert ca_cert["issuerRef"]["name"] == f"{FULLNAME}-selfsigned"
    assert ca_cert["duration"] == f"{3650 * 24}h"
    assert issuers[f"{FULLNAME}-ca"]["spec"] == {"ca": {"secretName": ca_cert["secretName"]}}

    serving = certs[serving_name]["spec"]
    assert serving["issuerRef"]["name"] == f"{FULLNAME}-ca"
    assert serving["issuerRef"]["kind"] == "Issuer"
    assert sorted(serving["dnsNames"]) == sorted(SERVICE_DNS_NAMES)
    assert "server auth" in serving["usages"]
    assert serving.get("isCA", False) is False
    volumes = {v["name"]: v for v in rendered.deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["certs"]["secret"]["secretName"] == serving["secretName"] == f"{FULLNAME}-tls"


def test_url_mode_with_cert_manager_uses_the_given_bundle(chart):
    rendered = render(
        chart,
        {
            "certManager": {"enabled": True},
            "webhook": {"url": "https://10.0.0.5:8443"},
            "caBundle": TEST_CA_B64,
        },
    )
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        assert rendered.annotation(kind, "cert-manager.io/inject-ca-from") is None
    for hook in rendered.webhooks():
        assert hook["clientConfig"]["caBundle"] == TEST_CA_B64


@pytest.mark.parametrize("mode", list(MODES))
def test_namespace_selector_excludes_release_namespace_and_kube_system(chart, mode):
    rendered = render_mode(chart, mode)
    extra = MODES[mode].get("webhook", {}).get("namespaceSelector", {}).get("excludeNamespaces", [])
    for hook in rendered.webhooks():
        selector = hook["namespaceSelector"]
        assert set(selector) == {"matchExpressions"}
        assert selector["matchExpressions"] == [
            {
                "key": "kubernetes.io/metadata.name",
                "operator": "NotIn",
                "values": [NAMESPACE, "kube-system", *extra],
            }
        ]


def test_extra_exclusions_are_added_and_deduplicated(chart):
    rendered = render(
        chart, {"webhook": {"namespaceSelector": {"excludeNamespaces": ["kube-system", "db"]}}}
    )
    for hook in rendered.webhooks():
        values = hook["namespaceSelector"]["matchExpressions"][0]["values"]
        assert values == [NAMESPACE, "kube-system", "db"]


def test_release_namespace_follows_the_release(chart):
    rendered = Rendered(chart.render({}, name=RELEASE, namespace="guards"))
    values = rendered.validating["namespaceSelector"]["matchExpressions"][0]["values"]
    assert values == ["guards", "kube-system"]
    assert rendered.validating["clientConfig"]["service"]["namespace"] == "guards"


def test_object_selector(chart):
    assert all("objectSelector" not in h for h in render_mode(chart, "default").webhooks())
    custom = render_mode(chart, "custom")
    expected = MODES["custom"]["webhook"]["objectSelector"]
    for hook in custom.webhooks():
        assert hook["objectSelector"] == expected


@pytest.mark.parametrize("mode", list(MODES))
def test_rules_never_match_subresources(chart, mode):
    rendered = render_mode(chart, mode)
    for hook in rendered.webhooks():
        for rule in hook["rules"]:
            for resource in rule["resources"]:
                assert "/" not in resource and "*" not in resource, resource
            assert "*" not in rule["apiGroups"] and "*" not in rule["apiVersions"]
            assert "*" not in rule["operations"]
            assert rule["scope"] == "Namespaced"


def _rule_set(hook: dict[str, Any]) -> set[tuple[str, str, str, str]]:
    return {
        (group, version, resource, op)
        for rule in hook["rules"]
        for group in rule["apiGroups"]
        for version in rule["apiVersions"]
        for resource in rule["resources"]
        for op in rule["operations"]
    }


def test_validating_rules(chart):
    hook = render_mode(chart, "default").validating
    # Service DELETE too: the validating webhook warns about the StatefulSets that lose their
    # governing Service (docs/src/cluster-lookups.md).
    assert _rule_set(hook) == {
        ("apps", "v1", "statefulsets", "CREATE"),
        ("apps", "v1", "statefulsets", "UPDATE"),
        ("", "v1", "services", "CREATE"),
        ("", "v1", "services", "UPDATE"),
        ("", "v1", "services", "DELETE"),
    }


# ---------------------------------------------------------------------------------------------
# matchConditions: the control plane's own writes never reach the webhook

FIXTURES = CHART_DIR.parent.parent / "tests" / "fixtures" / "admission"
CONTROL_PLANE_USERS = [
    "system:apiserver",
    "system:kube-controller-manager",
    "system:kube-scheduler",
    "system:serviceaccount:kube-system:statefulset-controller",
    "system:serviceaccount:kube-system:generic-garbage-collector",
]


@pytest.mark.parametrize("mode", list(MODES))
def test_every_webhook_has_the_named_match_conditions(chart, mode):
    rendered = render_mode(chart, mode)
    for hook in rendered.webhooks():
        names = [c["name"] for c in hook["matchConditions"]]
        mutating = hook["name"] == "mutate.stsguard.io"
        own = [MUTATORS_COULD_ACT] if mutating and _has_mutators_condition(MODES[mode]) else []
        assert names == [
            "not-control-plane",
            "not-default-kubernetes-service",
            "update-changes-spec-or-stsguard-annotations",
            *own,
        ], names
        for condition in hook["matchConditions"]:
            assert set(condition) == {"name", "expression"}
            assert "\n" not in condition["expression"]


def _celpy():
    try:
        import celpy  # noqa: PLC0415  (PyPI: cel-python)
    except ImportError:
        if os.environ.get("STSGUARD_REQUIRE_VALIDATORS"):
            raise
        pytest.skip("cel-python is not installed (pip install cel-python)")
    return celpy


MUTATORS_COULD_ACT = "stsguard-mutators-could-act"


def _sent(hook: dict[str, Any], review: dict[str, Any], mutators: bool = False) -> bool:
    """Whether the API server would call `hook` for this review: every matchCondition true.
    The variables are those the API server binds: object, oldObject, and the request without
    them (and without uid). The mutating webhook's own condition (whether a mutator could act)
    is evaluated only with `mutators`: the other tests are about the conditions both share."""
    celpy = _celpy()
    request = {k: v for k, v in review["request"].items() if k not in ("object", "oldObject", "uid")}
    activation = {
        "object": celpy.json_to_cel(review["request"].get("object")),
        "oldObject": celpy.json_to_cel(review["request"].get("oldObject")),
        "request": celpy.json_to_cel(request),
    }
    env = celpy.Environment()
    results = []
    for condition in hook["matchConditions"]:
        if condition["name"] == MUTATORS_COULD_ACT and not mutators:
            continue
        program = env.program(env.compile(condition["expression"]))
        result = program.evaluate(activation)
        assert isinstance(result, celpy.celtypes.BoolType), (condition["name"], result)
        results.append(bool(result))
    return all(results)


def _review(fixture: str, **changes: Any) -> dict[str, Any]:
    review = json.loads((FIXTURES / f"{fixture}.json").read_text())
    request = review["request"]
    for key, value in changes.items():
        if key == "username":
            request["userInfo"]["username"] = value
        elif key == "name":
            request["name"] = value
            for side in ("object", "oldObject"):
                if request.get(side):
                    request[side]["metadata"]["name"] = value
        elif key == "namespace":
            request["namespace"] = value
            for side in ("object", "oldObject"):
                if request.get(side):
                    request[side]["metadata"]["namespace"] = value
    # The captured Service UPDATE changed a label only, which the API server no longer sends
    # (see the UPDATE skip below): its spec is changed so that it stands for an update that is.
    if request.get("operation") == "UPDATE" and request["object"].get("spec") == request[
        "oldObject"
    ].get("spec"):
        request["object"]["spec"]["sessionAffinity"] = "ClientIP"
    return review


REVIEWS = [
    "validate-StatefulSet-CREATE-cap-web-1",
    "validate-StatefulSet-UPDATE-cap-web-1",
    "validate-Service-CREATE-cap-web-1",
    "validate-Service-UPDATE-cap-web-1",
    "validate-Service-DELETE-cap-cache-1",
]


@pytest.mark.parametrize("fixture", REVIEWS)
def test_match_conditions_send_ordinary_writes(chart, fixture):
    for hook in render_mode(chart, "default").webhooks():
        assert _sent(hook, _review(fixture)), fixture
        assert _sent(hook, _review(fixture, username="system:serviceaccount:argocd:argocd"))
        assert _sent(hook, _review(fixture, username="system:serviceaccount:kube-systemx:a"))


@pytest.mark.parametrize("fixture", REVIEWS)
@pytest.mark.parametrize("user", CONTROL_PLANE_USERS)
def test_match_conditions_skip_the_control_plane(chart, fixture, user):
    for hook in render_mode(chart, "default").webhooks():
        assert not _sent(hook, _review(fixture, username=user)), (fixture, user)


@pytest.mark.parametrize(
    "fixture",
    [
        "validate-Service-CREATE-cap-web-1",
        "validate-Service-UPDATE-cap-web-1",
        "validate-Service-DELETE-cap-cache-1",  # object is null: the request names it
    ],
)
def test_match_conditions_skip_the_default_kubernetes_service(chart, fixture):
    for hook in render_mode(chart, "default").webhooks():
        for user in ["system:apiserver", "kubernetes-admin"]:
            review = _review(fixture, name="kubernetes", namespace="default", username=user)
            assert not _sent(hook, review), (fixture, user)
        # Only that one: another Service in default, or `kubernetes` elsewhere, is reviewed.
        assert _sent(hook, _review(fixture, name="kubernetes", namespace="cap"))
        assert _sent(hook, _review(fixture, name="web", namespace="default"))
    # A StatefulSet that happens to be called kubernetes is still reviewed.
    sts = _review("validate-StatefulSet-CREATE-cap-web-1", name="kubernetes", namespace="default")
    assert _sent(render_mode(chart, "default").validating, sts)


# The UPDATE skip: an UPDATE that leaves spec and stsguard's annotations alone never reaches the
# webhook (tests/update_skip_properties.rs proves the verdict would be "allowed").

STSGUARD_ANNOTATIONS = [
    "stsguard.io/exempt",
    "stsguard.io/exempt-reason",
    "stsguard.io/exempt-until",
    "stsguard.io/mutated",
]
UPDATES = [
    "validate-StatefulSet-UPDATE-cap-web-1",
    "validate-Service-UPDATE-cap-web-1",
    "mutate-StatefulSet-UPDATE-cap-weak-1",
]


def _unchanged_update(fixture: str) -> dict[str, Any]:
    """The fixture's UPDATE with object made a copy of oldObject, as a re-apply of the same
    manifest arrives (the resourceVersion differs)."""
    review = _review(fixture)
    request = review["request"]
    request["object"] = json.loads(json.dumps(request["oldObject"]))
    request["object"]["metadata"]["resourceVersion"] = "999999"
    return review


def _metadata(review: dict[str, Any], side: str = "object") -> dict[str, Any]:
    return review["request"][side]["metadata"]


def _annotations(review: dict[str, Any], side: str = "object") -> dict[str, Any]:
    return _metadata(review, side).setdefault("annotations", {})


OUTSIDE_EDITS = {
    "identical re-apply": lambda r: None,
    "label added": lambda r: _metadata(r).setdefault("labels", {}).update({"team": "db"}),
    "labels removed": lambda r: _metadata(r).pop("labels", None),
    "finalizer added": lambda r: _metadata(r).setdefault("finalizers", []).append("x.io/keep"),
    "other annotation": lambda r: _annotations(r).update({"kubectl.kubernetes.io/restartedAt": "now"}),
    "another stsguard.io key": lambda r: _annotations(r).update({"stsguard.io/note": "x"}),
    "annotations on the old object only": lambda r: _annotations(r, "oldObject").update({"a": "b"}),
    "ownerReference": lambda r: _metadata(r).update(
        {"ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "u"}]}
    ),
    "managedFields and generation": lambda r: _metadata(r).update(
        {"managedFields": [{"manager": "argocd", "operation": "Apply"}], "generation": 7}
    ),
    "status": lambda r: r["request"]["object"].update({"status": {"replicas": 0}}),
    "deletionTimestamp": lambda r: _metadata(r).update({"deletionTimestamp": "2026-01-01T00:00:00Z"}),
    "dry run": lambda r: r["request"].update({"dryRun": True}),
}


@pytest.mark.parametrize("fixture", UPDATES)
@pytest.mark.parametrize("edit", list(OUTSIDE_EDITS))
def test_updates_outside_spec_and_stsguard_annotations_are_skipped(chart, fixture, edit):
    review = _unchanged_update(fixture)
    OUTSIDE_EDITS[edit](review)
    for hook in render_mode(chart, "default").webhooks():
        assert not _sent(hook, review), (fixture, edit)


def _replicas(review: dict[str, Any]) -> None:
    spec = review["request"]["object"]["spec"]
    spec["replicas"] = spec.get("replicas", 1) + 1


SPEC_EDITS = {
    "a spec field": lambda r: r["request"]["object"]["spec"].update({"x": 1}),
    "spec removed": lambda r: r["request"]["object"].pop("spec"),
    "spec added to an object without one": lambda r: r["request"]["oldObject"].pop("spec"),
}


@pytest.mark.parametrize("fixture", UPDATES)
@pytest.mark.parametrize("edit", list(SPEC_EDITS))
def test_updates_of_spec_are_sent(chart, fixture, edit):
    review = _unchanged_update(fixture)
    SPEC_EDITS[edit](review)
    for hook in render_mode(chart, "default").webhooks():
        assert _sent(hook, review), (fixture, edit)


@pytest.mark.parametrize("fixture", UPDATES)
@pytest.mark.parametrize("key", STSGUARD_ANNOTATIONS)
def test_updates_of_stsguard_annotations_are_sent(chart, fixture, key):
    hooks = render_mode(chart, "default").webhooks()
    cases = []
    added = _unchanged_update(fixture)
    _annotations(added)[key] = "*"
    cases.append(added)
    removed = _unchanged_update(fixture)
    _annotations(removed, "oldObject")[key] = "*"
    cases.append(removed)
    changed = _unchanged_update(fixture)
    _annotations(changed)[key] = "sts-readiness-probe"
    _annotations(changed, "oldObject")[key] = "*"
    cases.append(changed)
    # An object without metadata.annotations on either side at all.
    bare = _unchanged_update(fixture)
    _metadata(bare, "oldObject").pop("annotations", None)
    _annotations(bare)[key] = ""
    cases.append(bare)
    for review in cases:
        for hook in hooks:
            assert _sent(hook, review), (fixture, key)
    same = _unchanged_update(fixture)
    _annotations(same)[key] = "*"
    _annotations(same, "oldObject")[key] = "*"
    for hook in hooks:
        assert not _sent(hook, same), (fixture, key)


def test_scale_updates_are_sent_when_replicas_change(chart):
    hooks = render_mode(chart, "default").webhooks()
    scale = _review("validate-Scale-UPDATE-cap-web-scale-1")
    request = scale["request"]
    assert request["object"]["kind"] == "Scale"
    assert request["object"]["spec"] != request["oldObject"]["spec"]
    for hook in hooks:
        assert _sent(hook, scale)
    request["object"]["spec"] = dict(request["oldObject"]["spec"])
    for hook in hooks:
        assert not _sent(hook, scale)


@pytest.mark.parametrize(
    "fixture",
    sorted(p.stem for p in FIXTURES.glob("*.json") if "-UPDATE-" not in p.name),
)
def test_creates_and_deletes_are_sent(chart, fixture):
    for hook in render_mode(chart, "default").webhooks():
        assert _sent(hook, _review(fixture)), fixture


def _captured_updates() -> list[Path]:
    """Every captured UPDATE review: the repository's and, when present, the shared set."""
    dirs = [FIXTURES, Path("/work/shared/fixtures/admission")]
    found: dict[str, Path] = {}
    for d in dirs:
        if d.is_dir():
            for path in sorted(d.glob("*.json")):
                if json.loads(path.read_text())["request"].get("operation") == "UPDATE":
                    found.setdefault(path.read_text(), path)
    return list(found.values())


def test_captured_updates_skipped_are_those_with_unchanged_spec_and_annotations(chart):
    """The captured UPDATEs: skipped exactly when spec and stsguard's annotations are equal on
    both sides. Prints the fraction skipped (BENCHMARKS.md, "Fewer calls")."""
    hook = render_mode(chart, "default").validating
    updates = _captured_updates()
    assert len(updates) >= 4, updates
    skipped = []
    for path in updates:
        review = json.loads(path.read_text())
        request = review["request"]
        same = request["object"].get("spec") == request["oldObject"].get("spec") and all(
            (request[s]["metadata"].get("annotations") or {}).get(k)
            == (request["oldObject"]["metadata"].get("annotations") or {}).get(k)
            for s in ["object"]
            for k in STSGUARD_ANNOTATIONS
        )
        sent = _sent(hook, review)
        assert sent != same, path.name
        if not sent:
            skipped.append(path.name)
    # The chart's rules send no subresource (status, scale) writes in the first place.
    objects = [p for p in updates if "subResource" not in json.loads(p.read_text())["request"]]
    skipped_objects = [n for n in skipped if n in {p.name for p in objects}]
    print(
        f"\ncaptured UPDATE reviews skipped: {len(skipped)}/{len(updates)} {skipped}; "
        f"of those without a subresource: {len(skipped_objects)}/{len(objects)}"
    )


# ---------------------------------------------------------------------------------------------
# The mutating webhook's own condition: /mutate only where an enabled mutator could act
# (tests/mutate_skip_properties.rs proves the webhook would change nothing it skips).

MUTATORS_CONDITION_FILE = CHART_DIR / "files" / "mutators-match-condition.yaml"


def _has_mutators_condition(values: dict[str, Any]) -> bool:
    """The chart carries the default policy's condition unless a custom policy is registered by
    Helm (then nothing could replace it with the policy's own)."""
    webhook = values.get("webhook", {})
    by_stsguard = not webhook.get("url") and webhook.get("registration", "stsguard") == "stsguard"
    wanted = webhook.get("mutateOnlyWhenNeeded", True)
    return wanted and (not values.get("policy") or by_stsguard)


@pytest.mark.parametrize("mode", list(MODES))
def test_the_mutating_webhook_carries_the_generated_condition(chart, mode):
    rendered = render_mode(chart, mode)
    generated = yaml.safe_load(MUTATORS_CONDITION_FILE.read_text())
    assert [c["name"] for c in generated] == [MUTATORS_COULD_ACT]
    conditions = [c for c in rendered.mutating["matchConditions"] if c["name"] == MUTATORS_COULD_ACT]
    assert conditions == (generated if _has_mutators_condition(MODES[mode]) else []), mode
    assert all(c["name"] != MUTATORS_COULD_ACT for c in rendered.validating["matchConditions"])


def test_a_custom_policy_registered_by_helm_sends_every_create(chart):
    values = values_for("helm-registration") | {"policy": MODES["custom"]["policy"]}
    rendered = render(chart, values)
    names = [c["name"] for c in rendered.mutating["matchConditions"]]
    assert MUTATORS_COULD_ACT not in names, names
    assert _sent(rendered.mutating, _review("validate-StatefulSet-CREATE-cap-web-1"), mutators=True)


def test_mutate_only_when_needed_off_sends_every_create(chart):
    """For clusters where a mutating webhook ordered after stsguard changes StatefulSets: the
    API server never reinvokes a webhook it skipped in the first round."""
    values = values_for("default")
    values["webhook"] = {**values.get("webhook", {}), "mutateOnlyWhenNeeded": False}
    rendered = render(chart, values)
    names = [c["name"] for c in rendered.mutating["matchConditions"]]
    assert MUTATORS_COULD_ACT not in names, names
    assert _sent(rendered.mutating, _review("validate-StatefulSet-CREATE-cap-web-1"), mutators=True)


def _create(edit: Any = None) -> dict[str, Any]:
    review = _review("validate-StatefulSet-CREATE-cap-web-1")
    if edit:
        edit(review["request"]["object"])
    return review


def _pod(sts: dict[str, Any]) -> dict[str, Any]:
    return sts["spec"]["template"]["spec"]


MUTATOR_CASES = {
    "complete and resolved": (None, False),
    "a mount naming nothing": (
        lambda o: _pod(o)["containers"][0].setdefault("volumeMounts", []).append({"name": "wal", "mountPath": "/wal"}),
        True,
    ),
    "an init container's mount naming nothing": (
        lambda o: _pod(o).update({"initContainers": [{"name": "i", "image": "x", "volumeMounts": [{"name": "seed", "mountPath": "/s"}]}]}),
        True,
    ),
    "a mount naming a pod volume": (
        lambda o: (
            _pod(o).update({"volumes": [{"name": "cfg", "configMap": {"name": "c"}}]}),
            _pod(o)["containers"][0].setdefault("volumeMounts", []).append({"name": "cfg", "mountPath": "/c"}),
        ),
        False,
    ),
    "a template without accessModes": (lambda o: o["spec"]["volumeClaimTemplates"][0]["spec"].pop("accessModes"), True),
    "a template without a storage request": (
        lambda o: o["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"].pop("storage"),
        True,
    ),
    "a template without spec": (lambda o: o["spec"]["volumeClaimTemplates"][0].pop("spec"), True),
    "no spec at all": (lambda o: o.pop("spec"), False),
}


@pytest.mark.parametrize("case", list(MUTATOR_CASES))
def test_creates_reach_mutate_only_where_a_mutator_could_act(chart, case):
    edit, expected = MUTATOR_CASES[case]
    review = _create(edit)
    hook = render_mode(chart, "default").mutating
    assert _sent(hook, review, mutators=True) is expected, case
    # The validating webhook is called all the same.
    assert _sent(render_mode(chart, "default").validating, review, mutators=True)


@pytest.mark.parametrize("fixture", sorted(p.stem for p in FIXTURES.glob("*.json")))
def test_the_mutators_condition_evaluates_on_every_captured_review(chart, fixture):
    """No evaluation error (`_sent` asserts a bool) whatever the operation: object is null on
    DELETE. Only a StatefulSet CREATE with something to mutate, or another kind, is sent."""
    review = _review(fixture)
    request = review["request"]
    sent = _sent(render_mode(chart, "default").mutating, review, mutators=True)
    if request["operation"] != "CREATE" or request["resource"]["resource"] == "services":
        assert not sent, fixture
    if request["resource"]["resource"] not in ("statefulsets", "services"):
        assert sent, fixture


def test_mutating_rules(chart):
    hook = render_mode(chart, "default").mutating
    assert _rule_set(hook) == {("apps", "v1", "statefulsets", "CREATE")}
    assert hook["reinvocationPolicy"] == "IfNeeded"
    with_services = render_mode(chart, "custom").mutating
    assert _rule_set(with_services) == {
        ("apps", "v1", "statefulsets", "CREATE"),
        ("", "v1", "services", "CREATE"),
    }


@pytest.mark.parametrize("mode", list(MODES))
def test_webhook_settings(chart, mode):
    rendered = render_mode(chart, mode)
    webhook_values = MODES[mode].get("webhook", {})
    policies = webhook_values.get("failurePolicy", {})
    timeout = webhook_values.get("timeoutSeconds", 3)
    # The backstop needs the chart's Service: not in url mode.
    backstop = MODES[mode].get("backstop", {}).get("enabled", True) and not webhook_values.get("url")
    default_validating = "Ignore" if backstop else "Fail"
    assert rendered.validating["failurePolicy"] == policies.get("validating", default_validating)
    assert rendered.mutating["failurePolicy"] == policies.get("mutating", "Ignore")
    names = set()
    for hook in rendered.webhooks():
        assert hook["sideEffects"] == "None"
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["matchPolicy"] == "Equivalent"
        assert hook["timeoutSeconds"] == timeout
        assert hook["name"].count(".") >= 2  # a fully qualified webhook name
        names.add(hook["name"])
    assert len(names) == 2
    assert "reinvocationPolicy" not in rendered.validating


# ---------------------------------------------------------------------------------------------
# RBAC, Deployment, policy


def test_cluster_role_is_least_privilege(chart):
    rendered = render_mode(chart, "default")
    role = rendered.one("ClusterRole")
    granted = {
        (group, resource, verb, tuple(rule.get("resourceNames", [])))
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    reads = {
        (group, resource, verb, ())
        for group, resource in [("", "services"), ("apps", "statefulsets")]
        for verb in ("get", "list", "watch")
    } | {
        # The in-cluster reports (on by default): no get, update or watch.
        ("wgpolicyk8s.io", "policyreports", verb, ())
        for verb in ("list", "create", "patch", "delete")
    }
    # Registration: its own two configurations, by name only (apply authorizes a create with
    # the object's name; the pre-delete hook deletes).
    own = {
        ("admissionregistration.k8s.io", resource, verb, (FULLNAME,))
        for resource in ("validatingwebhookconfigurations", "mutatingwebhookconfigurations")
        for verb in ("get", "create", "patch", "delete")
    } | {("rbac.authorization.k8s.io", "clusterroles", "get", (FULLNAME,))}
    # The backstop: its admission policies and bindings, by name only.
    backstop_names = tuple(f"{FULLNAME}-backstop-{level}" for level in ("deny", "warn", "mutate"))
    backstop = {
        ("admissionregistration.k8s.io", resource, verb, backstop_names)
        for resource in (
            "validatingadmissionpolicies",
            "validatingadmissionpolicybindings",
            "mutatingadmissionpolicies",
            "mutatingadmissionpolicybindings",
        )
        for verb in ("get", "create", "patch", "delete")
    }
    # The backstop's paramKind: `get` on every EndpointSlice (tests/chart/test_rbac.py says why).
    params = {("discovery.k8s.io", "endpointslices", "get", ())}
    assert granted == reads | own | backstop | params
    # The owner of the registered configurations is this very ClusterRole.
    assert arg_value(rendered.args, "--webhook-owner-cluster-role") == role["metadata"]["name"]
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}  # no URLs
    # With Helm registering them, reads and the backstop (kept by the leader in every mode).
    helm = render_mode(chart, "helm-registration").one("ClusterRole")
    assert {
        (group, resource, verb, tuple(rule.get("resourceNames", [])))
        for rule in helm["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    } == reads | backstop | params | {("rbac.authorization.k8s.io", "clusterroles", "get", (FULLNAME,))}

    binding = rendered.one("ClusterRoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    sa = rendered.one("ServiceAccount")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    ]
    assert (
        rendered.deployment["spec"]["template"]["spec"]["serviceAccountName"]
        == sa["metadata"]["name"]
    )


def test_namespaced_grants_are_named(chart):
    rendered = render_mode(chart, "default")
    role = rendered.one("Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    container = rendered.deployment["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    lease = args[args.index("--leader-lease") + 1]
    granted = {
        (rule["apiGroups"][0], rule["resources"][0], verb, tuple(rule.get("resourceNames", [])))
        for rule in role["rules"]
        for verb in rule["verbs"]
    }
    secret = arg_value(args, "--cert-secret")
    configmap = arg_value(args, "--register-webhooks")
    assert (secret, configmap) == (f"{FULLNAME}-certs", f"{FULLNAME}-webhooks")
    # Only create is unnamed (RBAC cannot limit create by name); the rest only this Lease, the
    # self-managed certificates' Secret (no list: no other Secret is readable), the
    # registration and backstop ConfigMaps (deleted by the pre-delete hook), and the
    # EndpointSlices (registration waits for a ready one; a backstop binding selects them, which
    # the API server allows only to who may get them).
    backstop = arg_value(args, "--backstop")
    assert backstop == f"{FULLNAME}-backstop"
    assert granted == {
        ("coordination.k8s.io", "leases", "create", ()),
        *{("coordination.k8s.io", "leases", verb, (lease,)) for verb in ("get", "update", "patch")},
        ("", "secrets", "create", ()),
        ("", "secrets", "get", (secret,)),
        ("", "secrets", "update", (secret,)),
        ("", "configmaps", "get", (configmap,)),
        ("", "configmaps", "delete", (configmap,)),
        ("", "configmaps", "get", (backstop,)),
        ("", "configmaps", "delete", (backstop,)),
        ("discovery.k8s.io", "endpointslices", "get", ()),
        ("discovery.k8s.io", "endpointslices", "list", ()),
    }
    # Registration waits for a ready endpoint of the chart's Service.
    service = rendered.webhook_service["metadata"]["name"]
    assert arg_value(args, "--webhook-service") == service
    # Helm-generated certificates and Helm registration: the Lease and the backstop's needs.
    helm = render_mode(chart, "helm-registration").one("Role")
    assert {r["resources"][0] for r in helm["rules"]} == {"leases", "configmaps", "endpointslices"}
    binding = rendered.one("RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"][0]["name"] == rendered.one("ServiceAccount")["metadata"]["name"]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_deployment_security_and_availability(chart):
    rendered = render_mode(chart, "default")
    deploy = rendered.deployment
    pod = deploy["spec"]["template"]["spec"]
    container = rendered.container
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}

    assert container["image"] == "ghcr.io/stsguard/stsguard:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert set(container["resources"]["limits"]) == {"cpu", "memory"}

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"https": 8443, "probes": 8080}
    for probe, path in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")]:
        http = container[probe]["httpGet"]
        assert http["path"] == path
        assert ports[http["port"]] == 8080
        assert http["scheme"] == "HTTP"
        # Not before the process can have bound its probe listener.
        assert container[probe]["initialDelaySeconds"] >= 1

    selector = deploy["spec"]["selector"]["matchLabels"]
    assert deploy["spec"]["template"]["metadata"]["labels"] == selector
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert anti[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    spread = pod["topologySpreadConstraints"]
    assert spread[0]["topologyKey"] == "kubernetes.io/hostname"
    assert spread[0]["labelSelector"]["matchLabels"] == selector

    pdb = rendered.one("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable") == 1
    assert not {"maxUnavailable", "minAvailable"} <= set(pdb["spec"])

    mounts = {m["name"]: m for m in container["volumeMounts"]}
    # Self-managed certificates are read through the API: no Secret volume.
    assert "certs" not in mounts
    assert mounts["policy"]["mountPath"] == "/policy" and mounts["policy"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "certs" not in volumes
    generated = render_mode(chart, "generated")
    mounts = {m["name"]: m for m in generated.container["volumeMounts"]}
    assert mounts["certs"]["mountPath"] == "/certs" and mounts["certs"]["readOnly"] is True
    generated_volumes = {v["name"]: v for v in generated.deployment["spec"]["template"]["spec"]["volumes"]}
    assert {i["path"] for i in generated_volumes["certs"]["secret"]["items"]} == {"tls.crt", "tls.key"}
    assert volumes["policy"]["configMap"]["name"] == f"{FULLNAME}-policy"
    assert volumes["policy"]["configMap"]["items"] == [{"key": "policy.yaml", "path": "policy.yaml"}]


def test_default_args(chart):
    rendered = render_mode(chart, "default")
    args = rendered.args
    assert args[0] == "serve"
    assert arg_value(args, "--addr") == "0.0.0.0:8443"
    assert arg_value(args, "--probe-addr") == "0.0.0.0:8080"
    assert arg_value(args, "--tls-cert") is None and arg_value(args, "--tls-key") is None
    assert arg_value(args, "--cert-secret") == f"{FULLNAME}-certs"
    assert arg_value(args, "--cert-dns-name").split(",") == SERVICE_DNS_NAMES
    assert arg_value(args, "--ca-validity") == "8760h"
    assert arg_value(args, "--cert-validity") == "2160h"
    assert arg_value(args, "--ca-roll-overlap") == "1h"
    assert arg_value(args, "--register-webhooks") == REGISTRATION_CONFIGMAP
    generated = render_mode(chart, "generated").args
    assert arg_value(generated, "--tls-cert") == "/certs/tls.crt"
    assert arg_value(generated, "--tls-key") == "/certs/tls.key"
    assert arg_value(generated, "--cert-secret") is None
    assert arg_value(render_mode(chart, "helm-registration").args, "--register-webhooks") is None
    assert arg_value(args, "--policy") == "/policy/policy.yaml"
    assert arg_value(args, "--log-format") == "json"
    assert arg_value(args, "--shutdown-grace") == "20s"
    assert arg_value(args, "--mode") is None
    for optional in ("--max-body-bytes", "--request-timeout", "--header-read-timeout"):
        assert optional not in args
    # Only flags `stsguard serve` has.
    known = {
        "--addr",
        "--probe-addr",
        "--tls-cert",
        "--tls-key",
        "--policy",
        "--mode",
        "--log-format",
        "--max-body-bytes",
        "--request-timeout",
        "--header-read-timeout",
        "--shutdown-grace",
        "--drain-delay",
        "--max-connection-age",
        "--leader-lease",
        "--reports",
        "--reports-api",
        "--reports-interval",
        "--reports-debounce",
        "--reports-write-rate",
        "--cert-secret",
        "--cert-dns-name",
        "--ca-validity",
        "--cert-validity",
        "--ca-roll-overlap",
        "--register-webhooks",
        "--ca-bundle-file",
        "--webhook-owner-cluster-role",
        "--webhook-service",
        "--client-ca",
        "--backstop",
    }
    for mode in MODES:
        mode_args = render_mode(chart, mode).args
        assert {a for a in mode_args if a.startswith("-")} <= known, mode
    pod = rendered.deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 30
    assert rendered.container.get("command") is None  # the image's ENTRYPOINT runs stsguard


def test_audit_mode_passes_mode_audit(chart):
    args = render_mode(chart, "audit").args
    assert arg_value(args, "--mode") == "audit"
    assert arg_value(render(chart, {"mode": "enforce"}).args, "--mode") == "enforce"


def test_custom_values_reach_the_deployment(chart):
    rendered = render_mode(chart, "custom")
    args = rendered.args
    assert arg_value(args, "--log-format") == "text"
    assert arg_value(args, "--shutdown-grace") == "25s"
    assert arg_value(args, "--max-body-bytes") == "1048576"
    assert arg_value(args, "--request-timeout") == "8s"
    assert arg_value(args, "--header-read-timeout") == "3s"
    assert {"name": "RUST_LOG", "value": "stsguard=debug"} in rendered.container["env"]
    deploy = rendered.deployment
    pod = deploy["spec"]["template"]["spec"]
    assert deploy["spec"]["replicas"] == 3
    assert pod["terminationGracePeriodSeconds"] == 40
    assert pod["imagePullSecrets"] == [{"name": "registry-creds"}]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"] == MODES["custom"]["tolerations"]
    annotations = deploy["spec"]["template"]["metadata"]["annotations"]
    assert annotations["example.com/team"] == "platform"
    assert rendered.one("PodDisruptionBudget")["spec"]["minAvailable"] == 2
    assert "maxUnavailable" not in rendered.one("PodDisruptionBudget")["spec"]


def test_image_tag_and_affinity_overrides(chart):
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["infra"]}]}
                ]
            }
        }
    }
    rendered = render(
        chart,
        {
            "image": {"repository": "registry.local/stsguard", "tag": "dev", "pullPolicy": "Always"},
            "affinity": affinity,
            "podDisruptionBudget": {"enabled": False},
        },
    )
    assert rendered.container["image"] == "registry.local/stsguard:dev"
    assert rendered.container["imagePullPolicy"] == "Always"
    assert rendered.deployment["spec"]["template"]["spec"]["affinity"] == affinity
    assert rendered.all("PodDisruptionBudget") == []


def test_chart_policy_copy_is_current():
    copy = CHART_DIR / "files" / "default-policy.yaml"
    assert copy.read_bytes() == DEFAULT_POLICY.read_bytes(), (
        "charts/stsguard/files/default-policy.yaml differs from policies/default.yaml: "
        "cp policies/default.yaml charts/stsguard/files/default-policy.yaml"
    )


def test_policy_defaults_to_the_repository_default(chart):
    rendered = render_mode(chart, "default")
    (cm,) = [c for c in rendered.all("ConfigMap") if c["metadata"]["name"] == f"{FULLNAME}-policy"]
    assert set(cm["data"]) == {"policy.yaml"}
    assert cm["data"]["policy.yaml"] == DEFAULT_POLICY.read_text()


def test_policy_from_values(chart):
    (cm,) = [c for c in render_mode(chart, "custom").all("ConfigMap") if "policy.yaml" in c["data"]]
    assert cm["data"]["policy.yaml"] == CUSTOM_POLICY


def test_policy_checksum_rolls_the_pods(chart):
    def checksum(rendered: Rendered) -> str:
        return rendered.deployment["spec"]["template"]["metadata"]["annotations"][
            "checksum/policy"
        ]

    default = checksum(render_mode(chart, "default"))
    custom = checksum(render_mode(chart, "custom"))
    assert default == hashlib.sha256(DEFAULT_POLICY.read_bytes()).hexdigest()
    assert custom == hashlib.sha256(CUSTOM_POLICY.encode()).hexdigest()
    assert default != custom
    # Same policy, same checksum: an unrelated change does not roll the pods for the policy.
    assert checksum(render(chart, {"replicaCount": 4})) == default


def test_notes_tell_how_to_check(chart):
    notes = render_mode(chart, "default").notes
    assert f"kubectl -n {NAMESPACE} rollout status deploy/{FULLNAME}" in notes
    assert f"kubectl get validatingwebhookconfiguration {FULLNAME}" in notes
    assert "--dry-run=server" in notes
    assert "kind: StatefulSet" in notes and "serviceName" in notes
    cm_notes = render_mode(chart, "cert-manager").notes
    assert f"get certificate {FULLNAME}-serving" in cm_notes


# ---------------------------------------------------------------------------------------------
# Schema


@pytest.mark.parametrize(
    ("values", "where"),
    [
        ({"replicas": 3}, "replicas"),  # unknown top-level key (replicaCount is right)
        ({"mode": "loud"}, "/mode"),
        ({"webhook": {"timeoutSeconds": "5"}}, "/webhook/timeoutSeconds"),
        ({"webhook": {"timeoutSeconds": 31}}, "/webhook/timeoutSeconds"),
        ({"webhook": {"failurePolicy": {"validating": "Maybe"}}}, "/webhook/failurePolicy/validating"),
        ({"webhook": {"timeoutSecond": 5}}, "timeoutSecond"),  # typo one level down
        ({"logFormat": "yaml"}, "/logFormat"),
        ({"image": {"tag": 1}}, "/image/tag"),
        ({"webhook": {"url": "http://10.0.0.5:8443"}}, "/webhook/url"),
        ({"certManager": {"enable": True}}, "enable"),
        ({"shutdownGrace": "20"}, "/shutdownGrace"),
        ({"backstop": {"enable": False}}, "enable"),
        ({"backstop": {"enabled": "yes"}}, "/backstop/enabled"),
    ],
)
def test_schema_rejects_bad_values(chart, values, where):
    with pytest.raises(helm_python.HelmValuesError) as raised:
        render(chart, values)
    assert where in str(raised.value)
    report = helm_python.lint(CHART_DIR, values)
    assert report["errors"], report
    assert any(where in e for e in report["errors"])


def test_schema_accepts_every_mode(chart):
    for mode in MODES:
        chart.validate_schema(chart.merge_values(values_for(mode)))


def _walk_values(values: dict[str, Any], schema: dict[str, Any], definitions, path=""):
    if "$ref" in schema:
        schema = definitions[schema["$ref"].rsplit("/", 1)[1]]
    props = schema.get("properties", {})
    for key, value in values.items():
        assert key in props, f"{path}/{key} is not in values.schema.json"
        sub = props[key]
        if "$ref" in sub:
            sub = definitions[sub["$ref"].rsplit("/", 1)[1]]
        if isinstance(value, dict) and "properties" in sub:
            _walk_values(value, sub, definitions, f"{path}/{key}")


def _walk_schema(schema: Any, path: str = "#"):
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema:
            assert schema.get("additionalProperties") is False, f"{path} accepts unknown keys"
        for key, sub in schema.items():
            _walk_schema(sub, f"{path}/{key}")
    elif isinstance(schema, list):
        for i, sub in enumerate(schema):
            _walk_schema(sub, f"{path}/{i}")


def test_schema_covers_every_value():
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())
    values = yaml.safe_load((CHART_DIR / "values.yaml").read_text())
    _walk_values(values, schema, schema.get("definitions", {}))
    _walk_schema(schema)
    # Every documented value has a type.
    for key, sub in schema["properties"].items():
        assert "type" in sub or "$ref" in sub, key


def test_client_ca_is_mounted_and_passed_only_when_set(chart):
    for mode, expected in [("default", False), ("custom", True)]:
        rendered = render_mode(chart, mode)
        deployment = rendered.one("Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        args = container["args"]
        assert ("--client-ca" in args) == expected
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert ("client-ca" in mounts) == expected
        configmaps = [
            d for d in rendered.all("ConfigMap") if d["metadata"]["name"].endswith("-client-ca")
        ]
        assert len(configmaps) == int(expected)
        if expected:
            assert args[args.index("--client-ca") + 1] == mounts["client-ca"] + "/ca.crt"
            assert configmaps[0]["data"]["ca.crt"] == MODES["custom"]["clientCA"]


def test_schema_rejects_a_client_ca_that_is_not_pem(chart):
    with pytest.raises(helm_python.HelmValuesError, match="clientCA"):
        render(chart, values_for("default") | {"clientCA": "not a certificate"})


def test_book_example_configurations_agree_with_the_chart(chart):
    page = (CHART_DIR.parent.parent / "docs" / "src" / "webhook-configurations.md").read_text()
    block = page.split("```yaml\n", 1)[1].split("```", 1)[0]
    examples = {d["kind"]: d["webhooks"][0] for d in yaml.safe_load_all(block) if d}
    rendered = render_mode(chart, "default")
    for kind, hook in [
        ("ValidatingWebhookConfiguration", rendered.validating),
        ("MutatingWebhookConfiguration", rendered.mutating),
    ]:
        example = examples[kind]
        assert example["matchConditions"] == hook["matchConditions"], kind
        assert _rule_set(example) == _rule_set(hook), kind
        assert example["failurePolicy"] == hook["failurePolicy"], kind


# ---------------------------------------------------------------------------------------------
# Backstop: the in-object rules as ValidatingAdmissionPolicies


def _backstop_scope(rendered: Rendered) -> dict[str, Any]:
    configmap = next(c for c in rendered.all("ConfigMap") if c["metadata"]["name"] == f"{FULLNAME}-backstop")
    return yaml.safe_load(configmap["data"]["backstop.yaml"])


def test_the_leader_keeps_the_backstop_and_the_webhook_fails_open(chart):
    rendered = render_mode(chart, "default")
    # Helm renders no policy: the leader applies them from the policy in force.
    for kind in ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
                 "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"):
        assert rendered.all(kind) == []
    assert arg_value(rendered.args, "--backstop") == f"{FULLNAME}-backstop"
    scope = _backstop_scope(rendered)
    # It steps aside for the chart's Service, and sees what the webhooks see, never more.
    assert scope["webhookService"] == {
        "namespace": NAMESPACE, "name": rendered.webhook_service["metadata"]["name"]}
    assert scope["matchResources"] == {"namespaceSelector": rendered.validating["namespaceSelector"]}
    assert rendered.validating["failurePolicy"] == "Ignore"
    # The pre-delete hook removes it with the webhook configurations.
    hook = next(j for j in rendered.all("Job") if j["metadata"]["name"].endswith("-remove-webhooks"))
    hook_args = hook["spec"]["template"]["spec"]["containers"][0]["args"]
    assert arg_value(hook_args, "--backstop") == f"{FULLNAME}-backstop"


def test_backstop_off_renders_no_scope_and_the_webhook_fails_closed(chart):
    rendered = render(chart, {"backstop": {"enabled": False}})
    assert [c for c in rendered.all("ConfigMap") if c["metadata"]["name"].endswith("-backstop")] == []
    assert rendered.validating["failurePolicy"] == "Fail"
    # Still passed, so that the leader removes a backstop an earlier release applied.
    assert arg_value(rendered.args, "--backstop") == f"{FULLNAME}-backstop"


def test_fail_stays_one_value_away(chart):
    rendered = render(chart, {"webhook": {"failurePolicy": {"validating": "Fail"}}})
    assert rendered.validating["failurePolicy"] == "Fail"
    assert _backstop_scope(rendered)["webhookService"]["namespace"] == NAMESPACE


def test_backstop_follows_the_webhook_selectors(chart):
    rendered = render(chart, {"webhook": {
        "namespaceSelector": {"excludeNamespaces": ["legacy-db"]},
        "objectSelector": {"matchLabels": {"stsguard.io/checked": "yes"}},
    }})
    match = _backstop_scope(rendered)["matchResources"]
    assert match["namespaceSelector"] == rendered.validating["namespaceSelector"]
    assert match["objectSelector"] == {"matchLabels": {"stsguard.io/checked": "yes"}}


def test_a_custom_policy_gets_its_backstop_from_the_leader(chart):
    rendered = render(chart, {"policy": CUSTOM_POLICY})
    assert _backstop_scope(rendered)["webhookService"]["name"]
    with pytest.raises(helm_python.HelmRenderError, match="backstop.manifest is no longer used"):
        render(chart, {"backstop": {"manifest": "kind: ValidatingAdmissionPolicy"}})


def test_url_mode_has_no_backstop(chart):
    rendered = render(chart, {"webhook": {"url": "https://dev.example:8443"}, "caBundle": TEST_CA_B64})
    assert [c for c in rendered.all("ConfigMap") if c["metadata"]["name"].endswith("-backstop")] == []
    assert rendered.validating["failurePolicy"] == "Fail"


# ---------------------------------------------------------------------------------------------
# In-cluster reports


def _crd_file(name: str) -> dict[str, Any]:
    path = Path(__file__).resolve().parents[1] / "schemas" / name
    return yaml.safe_load(path.read_text())


def test_reports_are_on_by_default_with_their_crd_and_rbac(chart):
    rendered = render_mode(chart, "default")
    args = rendered.args
    assert "--reports" in args
    assert arg_value(args, "--reports-api") == "policy-report"
    assert arg_value(args, "--reports-interval") == "10m"
    assert arg_value(args, "--reports-debounce") == "2s"
    assert arg_value(args, "--reports-write-rate") == "5"
    crd = rendered.one("CustomResourceDefinition")
    upstream = _crd_file("wgpolicyk8s.io_policyreports.yaml")
    # The upstream CRD as it is, with the chart's labels and kept on uninstall.
    assert crd["spec"] == upstream["spec"]
    assert crd["metadata"]["name"] == "policyreports.wgpolicyk8s.io"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert "namespace" not in crd["metadata"]


def test_openreports_use_their_crd_and_rbac(chart):
    rendered = render(chart, {"reports": {"api": "openreports", "writeRate": 0.5}})
    assert arg_value(rendered.args, "--reports-api") == "openreports"
    assert arg_value(rendered.args, "--reports-write-rate") == "0.5"
    crd = rendered.one("CustomResourceDefinition")
    assert crd["spec"] == _crd_file("openreports.io_reports.yaml")["spec"]
    rules = rendered.one("ClusterRole")["rules"]
    assert {"apiGroups": ["openreports.io"], "resources": ["reports"],
            "verbs": ["list", "create", "patch", "delete"]} in rules
    assert not any("wgpolicyk8s.io" in r["apiGroups"] for r in rules)


def test_reports_crd_can_be_left_to_another_tool(chart):
    rendered = render(chart, {"reports": {"installCRD": False}})
    assert not rendered.all("CustomResourceDefinition")
    assert "--reports" in rendered.args


def test_reports_off_leaves_no_trace(chart):
    rendered = render(chart, {"reports": {"enabled": False}})
    assert not rendered.all("CustomResourceDefinition")
    assert not any(a.startswith("--reports") for a in rendered.args)
    rules = rendered.one("ClusterRole")["rules"]
    assert not any(
        g in r["apiGroups"] for r in rules for g in ("wgpolicyk8s.io", "openreports.io")
    )


@pytest.mark.parametrize(
    "values",
    [
        {"reports": {"api": "kyverno"}},
        {"reports": {"writeRate": 0}},
        {"reports": {"interval": "often"}},
        {"reports": {"unknown": 1}},
    ],
)
def test_bad_report_values_fail_the_render(chart, values):
    with pytest.raises(Exception):
        render(chart, values)


def test_the_binary_accepts_the_report_args(chart):
    """The chart's report flags, as the binary parses them (`serve --help` lists each)."""
    binary = Path(__file__).resolve().parents[2] / "target" / "debug" / "stsguard"
    assert binary.exists(), f"{binary} is missing: run `cargo build` first"
    help_text = subprocess.run(
        [str(binary), "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for flag in (a for a in render_mode(chart, "default").args if a.startswith("--reports")):
        assert f"{flag} " in help_text or f"{flag}\n" in help_text, flag


# ---------------------------------------------------------------------------------------------
# Registration after Ready and removal first (issue 15, item 2)


def test_stsguard_registers_the_configurations_and_helm_creates_none(chart):
    rendered = render_mode(chart, "default")
    kinds = {o["kind"] for o in rendered.objects}
    # Helm creates no webhook configuration: nothing calls the webhook before a pod is Ready.
    assert not kinds & {"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"}
    assert [o["kind"] for o in rendered.registered] == [
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    ]
    for obj in rendered.registered:
        assert obj["metadata"]["name"] == FULLNAME
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "stsguard"
        assert obj["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        # The leader fills the caBundle in from the self-managed certificates.
        for hook in obj["webhooks"]:
            assert "caBundle" not in hook["clientConfig"]
    # The generated mode's caBundle travels inside the ConfigMap; the leader keeps it.
    for hook in render_mode(chart, "generated").webhooks():
        assert load_cert(hook["clientConfig"]["caBundle"])
    # Helm registration: the objects themselves, managed by Helm, no ConfigMap; the hook removes
    # only the backstop.
    helm = render_mode(chart, "helm-registration")
    assert helm.registered == []
    (job,) = helm.all("Job")
    helm_hook_args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert arg_value(helm_hook_args, "--configmap") is None
    assert arg_value(helm_hook_args, "--backstop") == f"{FULLNAME}-backstop"
    assert {o["kind"] for o in helm.objects} >= {
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
    }


def test_uninstall_removes_the_configurations_first(chart):
    rendered = render_mode(chart, "default")
    job = rendered.one("Job")
    annotations = job["metadata"]["annotations"]
    # Before anything else is deleted (pods, RBAC, the ServiceAccount the Job runs as).
    assert annotations["helm.sh/hook"] == "pre-delete"
    assert set(annotations["helm.sh/hook-delete-policy"].split(",")) == {
        "before-hook-creation",
        "hook-succeeded",
    }
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == rendered.one("ServiceAccount")["metadata"]["name"]
    (container,) = pod["containers"]
    assert container["image"] == rendered.container["image"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    args = container["args"]
    assert args[:2] == ["webhooks", "remove"]
    assert arg_value(args, "--configmap") == REGISTRATION_CONFIGMAP
    assert arg_value(args, "--namespace") == NAMESPACE
    assert arg_value(args, "--validating") == arg_value(args, "--mutating") == FULLNAME
    assert arg_value(args, "--backstop") == f"{FULLNAME}-backstop"
    # Its ServiceAccount may delete exactly those.
    cluster_role = rendered.one("ClusterRole")
    role = rendered.one("Role")
    deletable = {
        (resource, name)
        for rule in cluster_role["rules"] + role["rules"]
        if "delete" in rule["verbs"]
        for resource in rule["resources"]
        for name in rule.get("resourceNames", [])
    }
    assert deletable == {
        ("validatingwebhookconfigurations", FULLNAME),
        ("mutatingwebhookconfigurations", FULLNAME),
        ("configmaps", REGISTRATION_CONFIGMAP),
        ("configmaps", f"{FULLNAME}-backstop"),
    } | {
        (resource, f"{FULLNAME}-backstop-{level}")
        for resource in (
            "validatingadmissionpolicies",
            "validatingadmissionpolicybindings",
            "mutatingadmissionpolicies",
            "mutatingadmissionpolicybindings",
        )
        for level in ("deny", "warn", "mutate")
    }


def test_self_managed_certificates_need_stsguard_registration(chart):
    with pytest.raises(helm_python.HelmRenderError, match="webhook.registration helm needs"):
        render(chart, {"webhook": {"registration": "helm"}})


def test_self_managed_lifetimes_reach_the_binary(chart):
    values = {"certificates": {"caValidity": "17520h", "certValidity": "720h", "caRollOverlap": "30m"}}
    args = render(chart, values).args
    assert arg_value(args, "--ca-validity") == "17520h"
    assert arg_value(args, "--cert-validity") == "720h"
    assert arg_value(args, "--ca-roll-overlap") == "30m"
